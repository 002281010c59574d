"""The local stack: single-node Ceph (mon, osd, RGW), a DynamoDB-compatible server, the
function runner, the notifier and the web tier, all on 127.0.0.1, all state in one folder.

    python -m facepipe_tools.stack up [--known-faces FILE] [--student-data JSON] [...]
    python -m facepipe_tools.stack status
    python -m facepipe_tools.stack down

`up` is safe to run again: Ceph and the DynamoDB server are kept when they are healthy
(started again when dead); the function runner, the notifier and the web tier are always
restarted so a new dataset takes effect; the notifier's `setup` and `upload_data.py` are
rerun (both are idempotent). The stack's settings are written to an env file (default
`<repo>/.env`) that every entry point reads, and passed to every child process through its
environment.

Every daemon runs detached in its own session (so its process group can be stopped as a
whole), logs to `<state>/log/<component>.log` and has its pid recorded in
`<state>/run/<component>.json` together with its command line, so a recycled pid is never
mistaken for ours. `down` stops what the stack started, by pid, and removes the state.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from facepipe.settings import Settings
from facepipe_tools.paths import REPO_ROOT

COMPONENTS = ("mon", "osd", "rgw", "dynamodb", "function", "notifier", "web")
CEPH_COMPONENTS = ("mon", "osd", "rgw")
CEPH_BINARIES = ("ceph", "ceph-authtool", "monmaptool", "ceph-mon", "ceph-osd", "radosgw", "radosgw-admin")

DEFAULT_STATE_DIR = REPO_ROOT / ".stack"
DEFAULT_ENV_FILE = REPO_ROOT / ".env"
DEFAULT_KNOWN_FACES = REPO_ROOT / "data" / "known_faces.json"
DEFAULT_STUDENT_DATA = REPO_ROOT / "data" / "student_data.json"
FUNCTION_RUNNER = REPO_ROOT / "facepipe_tools" / "function_runner.py"
NOTIFIER = REPO_ROOT / "notifier" / "notification.py"
UPLOAD_DATA = REPO_ROOT / "data" / "upload_data.py"
WEB_APP = REPO_ROOT / "web" / "app.py"

DEFAULT_PORTS = {
    "mon": 6789, "rgw": 7480, "dynamodb": 8001, "gateway": 8080, "notifier": 8090, "worker_base": 8100, "web": 8000,
}  # fmt: skip
HOST = "127.0.0.1"
RGW_NAME = "client.rgw.local"
RGW_UID = "facepipe"
ENV_MARKER = "# Written by `python -m facepipe_tools.stack up`"

#: How long to wait for each component to become healthy (seconds).
TIMEOUTS = {"mon": 30, "osd": 60, "rgw": 120, "dynamodb": 30, "function": 180, "notifier": 60, "web": 60}


class StackError(RuntimeError):
    """A step of the stack failed; `log` names the file whose tail explains why."""

    def __init__(self, message: str, log: Path | None = None, output: str = "") -> None:
        super().__init__(message)
        self.log = log
        self.output = output


@dataclass
class StackConfig:
    """Everything chosen at the first `up` and kept in `<state>/stack.json`."""

    mon_port: int
    rgw_port: int
    dynamodb_port: int
    gateway_port: int
    notifier_port: int
    workers: int
    known_faces: str
    student_data: str
    env_file: str
    fsid: str = field(default_factory=lambda: str(uuid.uuid4()))
    s3_access_key_id: str = field(default_factory=lambda: "FP" + secrets.token_hex(9).upper())
    s3_secret_access_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    aws_access_key_id: str = field(default_factory=lambda: "LOCAL" + secrets.token_hex(8).upper())
    aws_secret_access_key: str = field(default_factory=lambda: secrets.token_urlsafe(30))
    notify_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    #: The function runner's workers listen on worker_base_port .. worker_base_port + workers - 1.
    worker_base_port: int = DEFAULT_PORTS["worker_base"]
    #: The web tier (POST a file, results page); a default so that older stack.json files load.
    web_port: int = DEFAULT_PORTS["web"]


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pids: list[int]
    healthy: bool
    detail: str


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (from the kernel's ephemeral range)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def free_port_range(count: int, low: int = 20000, high: int = 32000) -> int:
    """First port of `count` consecutive free ports in [low, high) (below the ephemeral range,
    so the kernel does not hand them out to outgoing connections meanwhile)."""
    rng = secrets.SystemRandom()
    for _ in range(200):
        base = rng.randrange(low, high - count)
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind((HOST, port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports in [{low}, {high})")


def port_in_use(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((HOST, port)) == 0


def missing_ceph_binaries() -> list[str]:
    return [name for name in CEPH_BINARIES if shutil.which(name) is None]


def _tail(path: Path | None, lines: int = 25) -> str:
    if path is None or not path.is_file():
        return ""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 64 * 1024))
        text = handle.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) of a live process, None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    rest = stat[stat.rindex(")") + 2 :].split()
    return rest[0], int(rest[2])


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, the leader first."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            state = _proc_state(int(entry.name))
            if state and state[1] == pgid and state[0] != "Z":
                found.append(int(entry.name))
    return sorted(found, key=lambda pid: (pid != pgid, pid))


def _http_status(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of a GET, None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback URL we built
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (OSError, ValueError):
        return None


def _admin_socket(path: Path, prefix: str, timeout: float = 3.0) -> dict:
    """One command on a Ceph daemon's admin socket: JSON request + NUL, reply = be32 length + JSON."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(json.dumps({"prefix": prefix, "format": "json"}).encode() + b"\0")
        data = b""
        while len(data) < 4:
            chunk = sock.recv(4 - len(data))
            if not chunk:
                raise OSError("admin socket closed")
            data += chunk
        (length,) = struct.unpack(">I", data)
        body = b""
        while len(body) < length:
            chunk = sock.recv(length - len(body))
            if not chunk:
                raise OSError("admin socket closed")
            body += chunk
    return json.loads(body)


class LocalStack:
    """A single-node Ceph + RGW, a DynamoDB-compatible server, the function runner and the
    notifier, under one state folder. Constructor arguments left as None keep what an
    existing stack in `state_dir` uses (or the defaults for a new one)."""

    def __init__(
        self,
        state_dir: str | os.PathLike | None = None,
        *,
        env_file: str | os.PathLike | None = None,
        mon_port: int | None = None,
        rgw_port: int | None = None,
        dynamodb_port: int | None = None,
        gateway_port: int | None = None,
        notifier_port: int | None = None,
        worker_base_port: int | None = None,
        web_port: int | None = None,
        workers: int | None = None,
        known_faces: str | os.PathLike | None = None,
        student_data: str | os.PathLike | None = None,
        components: tuple[str, ...] = COMPONENTS,
        log: Callable[[str], None] | None = functools.partial(print, flush=True),
    ) -> None:
        self.state_dir = Path(state_dir or DEFAULT_STATE_DIR).absolute()
        self._requested = {
            "env_file": str(Path(env_file).absolute()) if env_file else None,
            "mon_port": mon_port,
            "rgw_port": rgw_port,
            "dynamodb_port": dynamodb_port,
            "gateway_port": gateway_port,
            "notifier_port": notifier_port,
            "worker_base_port": worker_base_port,
            "web_port": web_port,
            "workers": workers,
            "known_faces": str(Path(known_faces).resolve()) if known_faces else None,
            "student_data": str(Path(student_data).resolve()) if student_data else None,
        }
        unknown = set(components) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown components: {sorted(unknown)}")
        self.components = tuple(c for c in COMPONENTS if c in components)
        self._log = log
        self._t0 = time.monotonic()
        self._config: StackConfig | None = None
        self._children: dict[int, subprocess.Popen] = {}

    # ----------------------------------------------------------------- paths & config

    @property
    def ceph_dir(self) -> Path:
        return self.state_dir / "ceph"

    @property
    def conf_path(self) -> Path:
        return self.state_dir / "ceph.conf"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    @property
    def config_path(self) -> Path:
        return self.state_dir / "stack.json"

    @property
    def config(self) -> StackConfig:
        if self._config is None:
            self._config = self._load_config()
            if self._config is None:
                raise StackError(f"no stack in {self.state_dir} (run `up` first)")
        return self._config

    @property
    def env_file(self) -> Path:
        return Path(self.config.env_file)

    def log_path(self, component: str) -> Path:
        return self.log_dir / f"{component}.log"

    def _load_config(self) -> StackConfig | None:
        try:
            data = json.loads(self.config_path.read_text())
        except FileNotFoundError:
            return None
        names = {f.name for f in fields(StackConfig)}
        return StackConfig(**{k: v for k, v in data.items() if k in names})

    def _resolve_config(self) -> StackConfig:
        """The stored config with this call's explicit choices applied (or a new one)."""
        req = self._requested
        old = self._load_config()
        if old is None:
            return StackConfig(
                mon_port=req["mon_port"] or DEFAULT_PORTS["mon"],
                rgw_port=req["rgw_port"] or DEFAULT_PORTS["rgw"],
                dynamodb_port=req["dynamodb_port"] or DEFAULT_PORTS["dynamodb"],
                gateway_port=req["gateway_port"] or DEFAULT_PORTS["gateway"],
                notifier_port=req["notifier_port"] or DEFAULT_PORTS["notifier"],
                worker_base_port=req["worker_base_port"] or DEFAULT_PORTS["worker_base"],
                web_port=req["web_port"] or DEFAULT_PORTS["web"],
                workers=req["workers"] or os.cpu_count() or 1,
                known_faces=req["known_faces"] or str(DEFAULT_KNOWN_FACES),
                student_data=req["student_data"] or str(DEFAULT_STUDENT_DATA),
                env_file=req["env_file"] or str(DEFAULT_ENV_FILE),
            )
        for name in ("mon_port", "rgw_port", "dynamodb_port", "env_file"):
            if req[name] is not None and req[name] != getattr(old, name):
                raise StackError(
                    f"the stack in {self.state_dir} uses {name} {getattr(old, name)}; "
                    f"run `down` first to change it to {req[name]}"
                )
        for name in (
            "gateway_port", "notifier_port", "worker_base_port", "web_port", "workers", "known_faces", "student_data",
        ):  # fmt: skip
            if req[name] is not None:
                setattr(old, name, req[name])
        return old

    def _save_config(self, config: StackConfig) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(config), indent=2) + "\n")
        tmp.chmod(0o600)
        tmp.replace(self.config_path)

    # ----------------------------------------------------------------- settings

    def settings_env(self) -> dict[str, str]:
        """The stack's settings as environment variables (names as in facepipe.settings)."""
        c = self.config
        defaults = Settings()
        return {
            "S3_ENDPOINT_URL": f"http://{HOST}:{c.rgw_port}",
            "S3_ACCESS_KEY_ID": c.s3_access_key_id,
            "S3_SECRET_ACCESS_KEY": c.s3_secret_access_key,
            "S3_REGION": defaults.s3_region,
            "INPUT_BUCKET": defaults.input_bucket,
            "OUTPUT_BUCKET": defaults.output_bucket,
            "DYNAMODB_ENDPOINT_URL": f"http://{HOST}:{c.dynamodb_port}",
            "AWS_REGION": defaults.aws_region,
            "AWS_ACCESS_KEY_ID": c.aws_access_key_id,
            "AWS_SECRET_ACCESS_KEY": c.aws_secret_access_key,
            "STUDENTS_TABLE": defaults.students_table,
            "OPENFAAS_GATEWAY": f"http://{HOST}:{c.gateway_port}",
            "FUNCTION_NAME": defaults.function_name,
            "NOTIFY_TOKEN": c.notify_token,
            "NOTIFY_URL": f"http://{HOST}:{c.notifier_port}/",
            "KNOWN_FACES": c.known_faces,
            "WEB_URL": f"http://{HOST}:{c.web_port}/",
        }

    def settings(self) -> Settings:
        """Settings for this stack, built from `settings_env()` alone (no `.env`, no secrets)."""
        env = self.settings_env()
        values = {}
        for f in fields(Settings):
            if f.name.upper() in env:
                values[f.name] = env[f.name.upper()]
        return Settings(**values)

    def child_env(self) -> dict[str, str]:
        """Environment of every child: ours, the stack's settings, and FACEPIPE_ENV_FILE."""
        env = dict(os.environ)
        env.pop("CEPH_ARGS", None)
        env.update(self.settings_env())
        env["FACEPIPE_ENV_FILE"] = str(self.env_file)
        env["CEPH_CONF"] = str(self.conf_path)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _env_file_is_ours(self, path: Path) -> bool:
        try:
            head = path.read_text().splitlines()[:2]
        except (FileNotFoundError, UnicodeDecodeError):
            return False
        return bool(head) and head[0] == ENV_MARKER and f"# state dir: {self.state_dir}" in head

    def _write_env_file(self) -> None:
        path = self.env_file
        if path.exists() and not self._env_file_is_ours(path):
            raise StackError(
                f"{path} exists and was not written by this stack; move it away "
                "or pass --env-file to write the stack's settings elsewhere"
            )
        lines = [ENV_MARKER, f"# state dir: {self.state_dir}"]
        lines += [f"{name}={value}" for name, value in self.settings_env().items()]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        os.chmod(tmp, 0o600)
        tmp.replace(path)

    # ----------------------------------------------------------------- output

    def _say(self, message: str) -> None:
        if self._log is not None:
            self._log(f"[{time.monotonic() - self._t0:5.1f}s] {message}")

    # ----------------------------------------------------------------- processes

    def _pid_file(self, component: str) -> Path:
        return self.run_dir / f"{component}.json"

    def _recorded(self, component: str) -> tuple[int, list[str]] | None:
        try:
            data = json.loads(self._pid_file(component).read_text())
            return int(data["pid"]), list(data["cmd"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def _live_pid(self, component: str) -> int | None:
        """The recorded pid if that process is alive and still runs the recorded command."""
        recorded = self._recorded(component)
        if recorded is None:
            return None
        pid, cmd = recorded
        child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            return None
        state = _proc_state(pid)
        if state is None or state[0] == "Z" or _cmdline(pid) != cmd:
            return None
        return pid

    def pids(self, component: str) -> list[int]:
        """Pids of a component: its main process first, then the rest of its process group
        (for example the function runner's workers)."""
        self._check_component(component)
        pid = self._live_pid(component)
        if pid is None:
            return []
        return _group_pids(pid) or [pid]

    def _spawn(self, component: str, cmd: list[str]) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path(component)
        with log.open("ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start: {' '.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=self.child_env(),
                start_new_session=True,
                close_fds=True,
            )
        self._children[proc.pid] = proc
        # Later checks compare /proc/<pid>/cmdline with the recorded command, so that a recycled
        # pid is never taken for ours. Popen returns once exec has begun, but the kernel sets up
        # the new argv a moment later: until then cmdline reads empty. Wait for it.
        current: list[str] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.poll() is None:
            current = _cmdline(proc.pid)
            if current == cmd:
                break
            time.sleep(0.005)
        recorded = current or cmd
        tmp = self._pid_file(component).with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": proc.pid, "cmd": recorded}) + "\n")
        tmp.replace(self._pid_file(component))
        return proc.pid

    def _terminate(self, pid: int, timeout: float) -> bool:
        """TERM the process group led by `pid`, wait, then KILL what is left. True when TERM
        was enough. `timeout <= 0` sends KILL alone, like a crash (no handler runs)."""
        clean = True
        steps = ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)) if timeout > 0 else ((signal.SIGKILL, 5.0),)
        for sig, wait in steps:
            members = _group_pids(pid)
            if not members:
                break
            clean = sig == signal.SIGTERM
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                child = self._children.get(pid)
                if child is not None:
                    child.poll()
                if not _group_pids(pid):
                    break
                time.sleep(0.05)
        child = self._children.pop(pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
        return clean

    def stop(self, component: str, grace: float | None = None) -> None:
        """Stop a component: TERM, then KILL after `grace` seconds (default 15, 60 for the OSD,
        which writes its memstore data out on a clean stop); a no-op when it is down.
        `grace=0` kills at once, like a crash (for the OSD that loses every object)."""
        self._check_component(component)
        if grace is None:
            grace = 60.0 if component == "osd" else 15.0
        pid = self._live_pid(component)
        if pid is not None:
            clean = self._terminate(pid, timeout=grace)
            if component == "osd" and clean:
                self._osd_in_use.unlink(missing_ok=True)
            self._say(f"{component}: stopped (pid {pid}){'' if clean else ', killed'}")
        self._pid_file(component).unlink(missing_ok=True)

    def start(self, component: str) -> None:
        """Start a stopped component and wait until it is healthy (no-op if it runs)."""
        self._check_component(component)
        if self._live_pid(component) is not None:
            return
        if component in CEPH_COMPONENTS:
            self._write_ceph_conf()
        self._start(component)
        if component == "dynamodb":
            # The local DynamoDB server keeps its tables in memory: load the data again.
            self._upload_data()

    @property
    def _osd_in_use(self) -> Path:
        """Exists from the OSD's start until its clean stop (see `osd_data_lost`)."""
        return self.ceph_dir / "osd-0" / "in-use"

    def osd_data_lost(self) -> bool:
        """True when the OSD ended without a clean stop (killed, crashed, machine rebooted):
        memstore then lost every object and the cluster must be created again (`up` does)."""
        return self._osd_in_use.exists() and self._live_pid("osd") is None

    def restart(self, component: str) -> None:
        self.stop(component)
        self.start(component)

    def _check_component(self, component: str) -> None:
        if component not in COMPONENTS:
            raise ValueError(f"unknown component {component!r}; one of {', '.join(COMPONENTS)}")

    def _command(self, component: str) -> list[str]:
        c = self.config
        conf = str(self.conf_path)
        py = sys.executable
        if component == "mon":
            return ["ceph-mon", "-c", conf, "-i", "a", "-f"]
        if component == "osd":
            return ["ceph-osd", "-c", conf, "-i", "0", "-f"]
        if component == "rgw":
            return ["radosgw", "-c", conf, "-n", RGW_NAME, "-f"]
        if component == "dynamodb":
            return [py, "-m", "moto.server", "-H", HOST, "-p", str(c.dynamodb_port)]
        if component == "function":
            return [
                py, str(FUNCTION_RUNNER), "--host", HOST, "--port", str(c.gateway_port),
                "--workers", str(c.workers), "--worker-base-port", str(c.worker_base_port),
            ]  # fmt: skip
        if component == "notifier":
            return [py, str(NOTIFIER), "serve", "--host", HOST, "--port", str(c.notifier_port)]
        if component == "web":
            return [py, str(WEB_APP), "--host", HOST, "--port", str(c.web_port)]
        raise ValueError(component)

    def _start(self, component: str) -> None:
        for path, what in ((FUNCTION_RUNNER, "function"), (NOTIFIER, "notifier"), (WEB_APP, "web")):
            if component == what and not path.is_file():
                raise StackError(f"{path.relative_to(REPO_ROOT)} is missing")
        if component == "function" and not Path(self.config.known_faces).is_file():
            raise StackError(f"known faces file not found: {self.config.known_faces}")
        self._check_ports_free(component)
        if component == "osd":
            if self.osd_data_lost():
                raise StackError("the OSD ended without a clean stop, so memstore lost its objects; run `up`")
            self._osd_in_use.touch()
        pid = self._spawn(component, self._command(component))
        self._wait_healthy(component, pid)
        self._say(f"{component}: started (pid {pid})")

    def _ports(self, component: str) -> list[int]:
        c = self.config
        return {
            "mon": [c.mon_port],
            "rgw": [c.rgw_port],
            "dynamodb": [c.dynamodb_port],
            "function": [c.gateway_port, *range(c.worker_base_port, c.worker_base_port + c.workers)],
            "notifier": [c.notifier_port],
            "web": [c.web_port],
        }.get(component, [])

    def _check_ports_free(self, component: str) -> None:
        """Fail before starting when another program holds a port (its health check would
        otherwise be answered by that program)."""
        busy = [port for port in self._ports(component) if port_in_use(port)]
        if busy:
            raise StackError(
                f"{component}: port {', '.join(map(str, busy))} on {HOST} is in use by another program "
                "(stop it, or choose other ports with the --*-port options)"
            )

    def _wait_healthy(self, component: str, pid: int) -> None:
        deadline = time.monotonic() + TIMEOUTS[component]
        while True:
            if self._live_pid(component) != pid:
                child = self._children.get(pid)
                code = child.poll() if child is not None else None
                raise StackError(
                    f"{component} exited during start-up (pid {pid}, exit status {code}, "
                    f"proc {_proc_state(pid)}, cmdline {_cmdline(pid)})",
                    log=self.log_path(component),
                )
            healthy, detail = self._health(component)
            if healthy:
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"{component} not healthy after {TIMEOUTS[component]} s ({detail})",
                    log=self.log_path(component),
                )
            time.sleep(0.1)

    # ----------------------------------------------------------------- health

    def _asok(self, name: str) -> Path:
        return self.run_dir / f"ceph-{name}.asok"

    def _health(self, component: str) -> tuple[bool, str]:
        """(healthy, short detail) from the component's own interface, not just its pid."""
        c = self.config
        try:
            if component == "mon":
                state = _admin_socket(self._asok("mon.a"), "mon_status").get("state", "?")
                return state == "leader", f"state {state}"
            if component == "osd":
                state = _admin_socket(self._asok("osd.0"), "status").get("state", "?")
                return state == "active", f"state {state}"
        except (OSError, ValueError) as err:
            return False, f"admin socket: {err}"
        url = {
            "rgw": f"http://{HOST}:{c.rgw_port}/",
            "dynamodb": f"http://{HOST}:{c.dynamodb_port}/moto-api/",
            "function": f"http://{HOST}:{c.gateway_port}/healthz",
            "notifier": f"http://{HOST}:{c.notifier_port}/healthz",
            "web": f"http://{HOST}:{c.web_port}/healthz",
        }[component]
        code = _http_status(url)
        if component in ("rgw", "dynamodb"):
            return code is not None and code < 500, f"{url} -> {code or 'no answer'}"
        return code == 200, f"{url} -> {code or 'no answer'}"

    def status(self) -> list[ComponentStatus]:
        """Each component with its pids and health (a dead component is reported, not raised)."""
        result = []
        for component in COMPONENTS:
            pids = self.pids(component)
            if not pids:
                result.append(ComponentStatus(component, [], False, "not running"))
                continue
            healthy, detail = self._health(component)
            result.append(ComponentStatus(component, pids, healthy, detail))
        return result

    # ----------------------------------------------------------------- ceph

    def _write_ceph_conf(self) -> None:
        c = self.config
        s, ceph, log = self.state_dir, self.ceph_dir, self.log_dir
        text = f"""\
# Single-node Ceph for the facepipe local stack (written by facepipe_tools.stack).
[global]
fsid = {c.fsid}
mon host = v2:{HOST}:{c.mon_port}
mon initial members = a
public network = 127.0.0.0/8
ms bind msgr1 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = {ceph}/$name.keyring
run dir = {s}/run
crash dir = {s}/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
# Each map change (pool create, osd boot, ...) waits for the next Paxos proposal, 1 s by
# default; with one mon there is nothing to batch, and RGW's first start makes ~10 changes.
paxos propose interval = 0.05
# The defaults warn below 30 % free disk and stop the mon below 5 %: a developer's disk
# being fairly full must not take the local stack down.
mon data avail warn = 2
mon data avail crit = 1
auth allow insecure global id reclaim = false

[mon]
mon data = {ceph}/mon-$id
keyring = {ceph}/mon-$id/keyring
log file = {log}/ceph-$name.log
mon cluster log file = {log}/ceph-cluster.log

[osd]
osd data = {ceph}/osd-$id
keyring = {ceph}/osd-$id/keyring
osd objectstore = memstore
# memstore keeps objects in RAM and writes them to osd data only on a clean umount, which
# the default fast shutdown skips: without this a restarted OSD comes back empty.
osd fast shutdown = false
# RGW keeps watches on its control objects and every metadata change (bucket, topic, user)
# notifies them; after a RGW crash that notify waits until the dead watch times out, 30 s by
# default. Clients ping their watches every 5 s (objecter tick), so 10 s is still safe.
osd client watch timeout = 10
memstore device bytes = {8 << 30}
log file = {log}/ceph-$name.log

[{RGW_NAME}]
rgw frontends = beast endpoint={HOST}:{c.rgw_port}
rgw data = {ceph}/rgw
admin socket = {s}/run/ceph-$name.asok
log file = {log}/ceph-$name.log
rgw enable usage log = false
rgw enable ops log = false
rgw run sync thread = false
rgw dynamic resharding = false
"""
        self.conf_path.write_text(text)

    def _ceph(self, *args: str, stdin: str | None = None, timeout: float = 60.0, log: str = "mon") -> str:
        """Run a Ceph tool with our ceph.conf; StackError with its output when it fails."""
        tool, rest = args[0], list(args[1:])
        cmd = [tool, "-c", str(self.conf_path), *rest]
        if tool == "ceph":
            cmd[3:3] = ["--connect-timeout", str(int(timeout))]
        try:
            done = subprocess.run(
                cmd,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout + 5,
                env=self.child_env(),
                cwd=self.state_dir,
            )
        except subprocess.TimeoutExpired:
            raise StackError(f"timed out: {' '.join(cmd)}", log=self.log_path(log)) from None
        if done.returncode != 0:
            raise StackError(
                f"failed ({done.returncode}): {' '.join(cmd)}",
                log=self.log_path(log),
                output=(done.stdout + done.stderr).strip(),
            )
        return done.stdout

    def _bootstrap_ceph(self) -> None:
        """mkfs a one-mon, one-osd cluster and its RGW key (mon and osd are started on the way)."""
        ceph = self.ceph_dir
        if ceph.exists():
            shutil.rmtree(ceph)
        (ceph / "mon-a").mkdir(parents=True)
        (ceph / "osd-0").mkdir()
        (ceph / "rgw").mkdir()
        self._write_ceph_conf()
        mon_keyring = ceph / "mon-bootstrap.keyring"
        admin_keyring = ceph / "client.admin.keyring"
        monmap = ceph / "monmap"
        self._run_tool(
            ["ceph-authtool", "--create-keyring", str(mon_keyring), "--gen-key", "-n", "mon.",
             "--cap", "mon", "allow *"]
        )  # fmt: skip
        self._run_tool(
            ["ceph-authtool", "--create-keyring", str(admin_keyring), "--gen-key", "-n", "client.admin",
             "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mds", "allow *",
             "--cap", "mgr", "allow *"]
        )  # fmt: skip
        self._run_tool(["ceph-authtool", str(mon_keyring), "--import-keyring", str(admin_keyring)])
        self._run_tool(
            ["monmaptool", "--create", "--fsid", self.config.fsid, "--addv", "a",
             f"[v2:{HOST}:{self.config.mon_port}]", str(monmap)]
        )  # fmt: skip
        self._run_tool(
            ["ceph-mon", "-c", str(self.conf_path), "--mkfs", "-i", "a", "--monmap", str(monmap),
             "--keyring", str(mon_keyring)]
        )  # fmt: skip
        for path in (mon_keyring, monmap):
            path.unlink()
        self._start("mon")

        osd_uuid = str(uuid.uuid4())
        key = self._run_tool(["ceph-authtool", "--gen-print-key"]).strip()
        osd_id = self._ceph("ceph", "osd", "new", osd_uuid, "-i", "-", stdin=json.dumps({"cephx_secret": key}))
        if osd_id.strip() != "0":
            raise StackError(f"expected osd id 0, got {osd_id.strip()!r}")
        keyring = ceph / "osd-0" / "keyring"
        keyring.write_text(f"[osd.0]\n\tkey = {key}\n")
        keyring.chmod(0o600)
        self._run_tool(["ceph-osd", "-c", str(self.conf_path), "-i", "0", "--mkfs", "--osd-uuid", osd_uuid])
        self._start("osd")

        self._ceph(
            "ceph", "auth", "get-or-create", RGW_NAME, "mon", "allow rw", "osd", "allow rwx",
            "-o", str(ceph / f"{RGW_NAME}.keyring"),
        )  # fmt: skip
        (ceph / "bootstrapped").write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
        self._say("ceph: cluster created")

    def _run_tool(self, cmd: list[str]) -> str:
        """Run an offline Ceph tool (ceph-authtool, monmaptool, mkfs), which needs no CEPH_CONF."""
        env = self.child_env()
        env.pop("CEPH_CONF")
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
        except subprocess.TimeoutExpired:
            raise StackError(f"timed out: {' '.join(cmd)}") from None
        if done.returncode != 0:
            raise StackError(
                f"failed ({done.returncode}): {' '.join(cmd)}", output=(done.stdout + done.stderr).strip()
            )
        return done.stdout

    def _ensure_running(self, component: str) -> None:
        """Keep a healthy component, restart an unhealthy one, start a dead one."""
        pid = self._live_pid(component)
        if pid is not None:
            healthy, detail = self._health(component)
            if healthy:
                self._say(f"{component}: running (pid {pid})")
                return
            self._say(f"{component}: unhealthy ({detail}), restarting")
            self.stop(component)
        self._start(component)

    def _ensure_rgw_user(self) -> None:
        c = self.config
        try:
            info = json.loads(self._ceph("radosgw-admin", "user", "info", "--uid", RGW_UID, log="rgw"))
        except StackError:
            info = None
        if info is not None:
            keys = {(k["access_key"], k["secret_key"]) for k in info.get("keys", [])}
            if (c.s3_access_key_id, c.s3_secret_access_key) in keys:
                return
            self._ceph(
                "radosgw-admin", "key", "create", "--uid", RGW_UID, "--key-type", "s3",
                "--access-key", c.s3_access_key_id, "--secret-key", c.s3_secret_access_key, log="rgw",
            )  # fmt: skip
        else:
            self._ceph(
                "radosgw-admin", "user", "create", "--uid", RGW_UID, "--display-name", "facepipe local stack",
                "--access-key", c.s3_access_key_id, "--secret-key", c.s3_secret_access_key, log="rgw",
            )  # fmt: skip
        self._say(f"rgw: user {RGW_UID} ready")

    # ----------------------------------------------------------------- one-shot steps

    def _run_step(self, name: str, cmd: list[str], timeout: float = 300.0) -> None:
        """Run a one-shot script (notifier setup, upload_data) with the stack's env; its output
        goes to `<state>/log/<name>.log`."""
        log = self.log_path(name)
        with log.open("ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} run: {' '.join(cmd)}\n".encode())
            out.flush()
            try:
                done = subprocess.run(
                    cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    cwd=REPO_ROOT, env=self.child_env(), timeout=timeout,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                raise StackError(f"{name} timed out after {timeout:.0f} s", log=log) from None
        if done.returncode != 0:
            raise StackError(f"{name} failed (exit {done.returncode})", log=log)
        self._say(f"{name}: done")

    def _upload_data(self) -> None:
        if not UPLOAD_DATA.is_file():
            self._say(f"upload_data: skipped, {UPLOAD_DATA.relative_to(REPO_ROOT)} is missing")
            return
        self._run_step("upload_data", [sys.executable, str(UPLOAD_DATA), "--file", self.config.student_data])

    # ----------------------------------------------------------------- up / down

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One `up`/`down` at a time per state dir."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StackError(f"another `up` or `down` is running on {self.state_dir}") from None
            yield

    def up(self) -> None:
        """Bring the stack up (or repair it); see the module docstring for what is kept."""
        self._t0 = time.monotonic()
        wanted = set(self.components)
        if wanted & set(CEPH_COMPONENTS):
            missing = missing_ceph_binaries()
            if missing:
                raise StackError(f"Ceph programs not found: {', '.join(missing)} (run `make install`)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        with self._locked():
            self._config = self._resolve_config()
            c = self._config
            if "function" in wanted and not Path(c.known_faces).is_file():
                raise StackError(f"known faces file not found: {c.known_faces}")
            if "dynamodb" in wanted and UPLOAD_DATA.is_file() and not Path(c.student_data).is_file():
                raise StackError(f"student data file not found: {c.student_data}")
            self._save_config(c)
            for path in (self.run_dir, self.log_dir, self.state_dir / "crash"):
                path.mkdir(exist_ok=True)
            self._write_env_file()

            if wanted & set(CEPH_COMPONENTS):
                rebuild = not (self.ceph_dir / "bootstrapped").is_file()
                if not rebuild and self.osd_data_lost():
                    self._say("osd: ended without a clean stop; memstore lost the objects: recreating Ceph")
                    rebuild = True
                if rebuild:
                    for component in reversed(CEPH_COMPONENTS):
                        self.stop(component, grace=0)  # their data is thrown away
                    self._bootstrap_ceph()
                else:
                    self._write_ceph_conf()
                for component in CEPH_COMPONENTS:
                    self._ensure_running(component)
                self._ensure_rgw_user()

            if "dynamodb" in wanted:
                self._ensure_running("dynamodb")

            # The notifier reconciles at start, so the function must be up before it, and
            # neither may run while the other is swapped: stop both, then start in order.
            for component in ("notifier", "function"):
                if component in wanted:
                    self.stop(component)
            if "rgw" in wanted:
                if not NOTIFIER.is_file():
                    raise StackError(f"{NOTIFIER.relative_to(REPO_ROOT)} is missing")
                self._run_step("setup", [sys.executable, str(NOTIFIER), "setup"])
            if "dynamodb" in wanted:
                self._upload_data()
            for component in ("function", "notifier"):
                if component in wanted:
                    self._start(component)
            if "web" in wanted:  # restarted too, so that new code and settings take effect
                self.stop("web")
                self._start("web")
        env = self.settings_env()
        self._say(
            f"stack up: S3 {env['S3_ENDPOINT_URL']}, DynamoDB {env['DYNAMODB_ENDPOINT_URL']}, "
            f"gateway {env['OPENFAAS_GATEWAY']}, notifier {env['NOTIFY_URL']}"
            + (f", web {env['WEB_URL']} (results: {env['WEB_URL']}results)" if "web" in wanted else "")
        )
        self._say(f"settings written to {self.env_file}; known faces {c.known_faces}")
        if self.state_dir == DEFAULT_STATE_DIR and self.env_file == DEFAULT_ENV_FILE:
            self._say("stop it with `make down`")
        else:
            self._say(f"stop it with `python -m facepipe_tools.stack down --state-dir {self.state_dir}`")

    def _stray_pids(self) -> list[int]:
        """Ceph daemons started with our ceph.conf that no pid file accounts for (a pid file
        lost, an interrupted `up`): `down` must not leave them running."""
        conf = str(self.conf_path)
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                cmd = _cmdline(int(entry.name))
                if cmd[:3] in (["ceph-mon", "-c", conf], ["ceph-osd", "-c", conf], ["radosgw", "-c", conf]):
                    state = _proc_state(int(entry.name))
                    if state and state[0] != "Z":
                        found.append(int(entry.name))
        return found

    def down(self) -> None:
        """Stop every component (by recorded pid), remove the state dir and our env file."""
        self._t0 = time.monotonic()
        if not self.state_dir.exists():
            self._say(f"nothing to stop: {self.state_dir} does not exist")
            return
        with self._locked():
            self._config = self._load_config()
            # Without its OSD, RGW would hang in a graceful shutdown: no point waiting.
            osd_lost = self.ceph_dir.is_dir() and self.osd_data_lost()
            for component in reversed(COMPONENTS):
                self.stop(component, grace=0.0 if osd_lost and component == "rgw" else None)
            for pid in self._stray_pids():
                self._say(f"stopping leftover process {pid}: {' '.join(_cmdline(pid))[:100]}")
                self._terminate(pid, timeout=10.0)
            if self._config is not None and self._env_file_is_ours(self.env_file):
                self.env_file.unlink()
            shutil.rmtree(self.state_dir)
        self._say(f"stack down: removed {self.state_dir}")


# --------------------------------------------------------------------------------- CLI


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m facepipe_tools.stack",
        description="Local stack: single-node Ceph RGW, DynamoDB-compatible server, function runner, notifier, "
        "web tier.",
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument(
        "--state-dir", default=os.environ.get("FACEPIPE_STACK_DIR"), help="default: <repo>/.stack"
    )
    parser.add_argument(
        "--env-file",
        default=os.environ.get("FACEPIPE_ENV_FILE"),
        help="where `up` writes the settings (default: <repo>/.env)",
    )
    parser.add_argument("--known-faces", default=os.environ.get("KNOWN_FACES") or None)
    parser.add_argument("--student-data", default=os.environ.get("STUDENT_DATA") or None)
    parser.add_argument("--workers", type=int, default=_env_int("FACEPIPE_WORKERS"), help="default: cores")
    for name in DEFAULT_PORTS:
        var = f"FACEPIPE_{name.upper()}_PORT"
        parser.add_argument(
            f"--{name.replace('_', '-')}-port",
            type=int,
            default=_env_int(var),
            help=f"default {DEFAULT_PORTS[name]} (${var})",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stack = LocalStack(
        args.state_dir,
        env_file=args.env_file,
        mon_port=args.mon_port,
        rgw_port=args.rgw_port,
        dynamodb_port=args.dynamodb_port,
        gateway_port=args.gateway_port,
        notifier_port=args.notifier_port,
        worker_base_port=args.worker_base_port,
        web_port=args.web_port,
        workers=args.workers,
        known_faces=args.known_faces,
        student_data=args.student_data,
    )
    try:
        if args.command == "up":
            stack.up()
        elif args.command == "down":
            stack.down()
        else:
            if not stack.config_path.is_file():
                print(f"no stack in {stack.state_dir}")
                return 1
            rows = stack.status()
            for row in rows:
                pids = ",".join(map(str, row.pids)) or "-"
                print(f"{row.name:<9} {'ok' if row.healthy else 'DOWN':<5} pid {pids:<16} {row.detail}")
            return 0 if all(row.healthy for row in rows) else 1
    except StackError as err:
        print(f"error: {err}", file=sys.stderr)
        if err.output:
            print(err.output[-3000:], file=sys.stderr)
        tail = _tail(err.log)
        if tail:
            print(f"--- last lines of {err.log}:\n{tail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; `python -m facepipe_tools.stack down` stops what was started", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
