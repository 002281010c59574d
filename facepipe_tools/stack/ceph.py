"""Single-node Ceph: its ceph.conf, the bootstrap (mkfs of one mon and one memstore OSD),
the three daemons (mon, osd, RGW) and the RGW user whose keys the stack hands out.

Keys never go on a command line (anyone on the host can read it in `ps`): `radosgw-admin` gets
the S3 keys through CEPH_ARGS in its environment, which Ceph reads as more arguments, and the
OSD's cephx key goes to `ceph osd new` on stdin. Nor does a key reach an error text: a failing
tool's command line and output are redacted (`redact`) before they go into a StackError."""

from __future__ import annotations

import json
import re
import shutil
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from facepipe_tools.stack.component import Component, HttpComponent, StackError, StackPaths
from facepipe_tools.stack.config import HOST, StackConfig

CEPH_BINARIES = ("ceph", "ceph-authtool", "monmaptool", "ceph-mon", "ceph-osd", "radosgw", "radosgw-admin")
RGW_NAME = "client.rgw.local"
RGW_UID = "facepipe"


#: Options whose value is a credential, shown as `***` in a command line.
SECRET_OPTIONS = frozenset({"--access-key", "--secret-key", "--secret", "--key"})
#: A credential in a tool's output: JSON members (`"secret_key": "..."`) and keyring lines
#: (`key = ...`).
_SECRET_JSON = re.compile(r'("(?:access_key|secret_key|secret|key)"\s*:\s*")((?:[^"\\]|\\.)*)"', re.IGNORECASE)
_SECRET_LINE = re.compile(r"(?m)^(\s*key\s*=\s*)(\S+)")
REDACTED = "***"


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` without credentials: the values of the JSON members and keyring lines that hold
    one, wherever else they appear too, and any of `secrets` (the values the caller knows)."""
    found = [m.group(2) for pattern in (_SECRET_JSON, _SECRET_LINE) for m in pattern.finditer(text)]
    for value in sorted({v for v in (*secrets, *found) if v}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    text = _SECRET_JSON.sub(lambda m: f'{m.group(1)}{REDACTED}"', text)
    return _SECRET_LINE.sub(lambda m: m.group(1) + REDACTED, text)


def shown_command(cmd: list[str]) -> str:
    """A command line for an error text, with the values of SECRET_OPTIONS replaced."""
    shown = []
    for index, arg in enumerate(cmd):
        secret_value = index > 0 and cmd[index - 1] in SECRET_OPTIONS
        shown.append(REDACTED if secret_value else arg)
    return " ".join(shown)


def ceph_args(options: dict[str, str]) -> str:
    """CEPH_ARGS for `options` (Ceph splits it on whitespace, so no value may contain any)."""
    for option, value in options.items():
        if not value or any(char.isspace() for char in value):
            raise StackError(f"{option} must be a non-empty value without whitespace")
    return " ".join(f"{option} {value}" for option, value in options.items())


def missing_ceph_binaries() -> list[str]:
    return [name for name in CEPH_BINARIES if shutil.which(name) is None]


def bootstrapped_marker(paths: StackPaths) -> Path:
    """Written when the cluster is complete; without it `up` creates the cluster anew."""
    return paths.ceph_dir / "bootstrapped"


def daemon_prefixes(paths: StackPaths) -> list[list[str]]:
    """How the command lines of this stack's Ceph daemons begin (they all read its ceph.conf)."""
    return [[program, "-c", str(paths.conf_path)] for program in ("ceph-mon", "ceph-osd", "radosgw")]


def write_ceph_conf(paths: StackPaths, config: StackConfig) -> None:
    s, ceph, log = paths.state_dir, paths.ceph_dir, paths.log_dir
    text = f"""\
# Single-node Ceph for the facepipe local stack (written by facepipe_tools.stack).
[global]
fsid = {config.fsid}
mon host = v2:{HOST}:{config.mon_port}
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
rgw frontends = beast tcp_nodelay=1 endpoint={HOST}:{config.rgw_port}
rgw data = {ceph}/rgw
admin socket = {s}/run/ceph-$name.asok
log file = {log}/ceph-$name.log
rgw enable usage log = false
rgw enable ops log = false
rgw run sync thread = false
rgw dynamic resharding = false
"""
    paths.conf_path.write_text(text)


def admin_socket(path: str, prefix: str, timeout: float = 3.0) -> dict:
    """One command on a Ceph daemon's admin socket: JSON request + NUL, reply = be32 length + JSON."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps({"prefix": prefix, "format": "json"}).encode() + b"\0")
        (length,) = struct.unpack(">I", _receive(sock, 4))
        return json.loads(_receive(sock, length))


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("admin socket closed")
        data += chunk
    return data


class CephDaemon(Component):
    """A Ceph daemon started in the foreground with the stack's ceph.conf."""

    def before_start(self, config: StackConfig) -> None:
        write_ceph_conf(self.paths, config)

    def _socket_state(self, socket_name: str, command: str, healthy: str) -> tuple[bool, str]:
        """Health from the daemon's admin socket: the `state` its `command` reports."""
        try:
            state = admin_socket(str(self.paths.run_dir / socket_name), command).get("state", "?")
        except (OSError, ValueError) as err:
            return False, f"admin socket: {err}"
        return state == healthy, f"state {state}"


class Mon(CephDaemon):
    name = "mon"
    start_timeout_s = 30.0

    def command(self, config: StackConfig) -> list[str]:
        return ["ceph-mon", "-c", str(self.paths.conf_path), "-i", "a", "-f"]

    def ports(self, config: StackConfig) -> list[int]:
        return [config.mon_port]

    def health(self, config: StackConfig) -> tuple[bool, str]:
        return self._socket_state("ceph-mon.a.asok", "mon_status", healthy="leader")


class Osd(CephDaemon):
    """The one OSD, on memstore: objects live in RAM and are written out on a clean stop only."""

    name = "osd"
    #: A clean stop writes the memstore data out, which takes a while.
    stop_grace_s = 60.0

    @property
    def in_use(self) -> Path:
        """Exists from the OSD's start until its clean stop: found while the OSD is down, it
        means the OSD ended without writing its objects out (they are lost)."""
        return self.paths.ceph_dir / "osd-0" / "in-use"

    def command(self, config: StackConfig) -> list[str]:
        return ["ceph-osd", "-c", str(self.paths.conf_path), "-i", "0", "-f"]

    def health(self, config: StackConfig) -> tuple[bool, str]:
        return self._socket_state("ceph-osd.0.asok", "status", healthy="active")

    def before_start(self, config: StackConfig) -> None:
        if self.in_use.exists():
            raise StackError("the OSD ended without a clean stop, so memstore lost its objects; run `up`")
        super().before_start(config)
        self.in_use.touch()

    def after_stop(self, clean: bool) -> None:
        if clean:
            self.in_use.unlink(missing_ok=True)


class Rgw(CephDaemon, HttpComponent):
    name = "rgw"
    start_timeout_s = 120.0
    health_path = "/"

    def command(self, config: StackConfig) -> list[str]:
        return ["radosgw", "-c", str(self.paths.conf_path), "-n", RGW_NAME, "-f"]

    def ports(self, config: StackConfig) -> list[int]:
        return [config.rgw_port]

    def healthy_status(self, status: int | None) -> bool:
        return status is not None and status < 500  # anonymous requests are answered, not served


CEPH_DAEMONS: tuple[type[CephDaemon], ...] = (Mon, Osd, Rgw)


class CephTools:
    """The Ceph command-line tools, run against the stack's cluster."""

    def __init__(self, paths: StackPaths, config: StackConfig, env: dict[str, str]) -> None:
        self.paths = paths
        self.config = config
        self.env = {name: value for name, value in env.items() if name != "CEPH_ARGS"}

    def _known_secrets(self, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
        c = self.config
        return (c.s3_access_key_id, c.s3_secret_access_key, c.aws_secret_access_key, c.notify_token, *extra)

    def _failure(
        self, what: str, cmd: list[str], output: str = "", log: Path | None = None, secrets: tuple[str, ...] = ()
    ) -> StackError:
        """A StackError for a failed or timed-out tool, with no credential in its text."""
        known = self._known_secrets(tuple(secrets))
        return StackError(redact(f"{what}: {shown_command(cmd)}", known), log=log, output=redact(output.strip(), known))

    def offline(self, cmd: list[str]) -> str:
        """Run an offline tool (ceph-authtool, monmaptool, mkfs), which needs no CEPH_CONF."""
        env = {name: value for name, value in self.env.items() if name != "CEPH_CONF"}
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
        except subprocess.TimeoutExpired:
            raise self._failure("timed out", cmd) from None
        if done.returncode != 0:
            raise self._failure(f"failed ({done.returncode})", cmd, done.stdout + done.stderr)
        return done.stdout

    def run(
        self,
        *args: str,
        stdin: str | None = None,
        timeout: float = 60.0,
        log: str = "mon",
        secret_options: dict[str, str] | None = None,
    ) -> str:
        """Run a tool against the cluster; StackError with its output (and the daemon log
        named by `log`) when it fails, credentials redacted. `secret_options` (option ->
        value, e.g. `--secret-key`) reach the tool through CEPH_ARGS, never its argv."""
        tool, rest = args[0], list(args[1:])
        cmd = [tool, "-c", str(self.paths.conf_path), *rest]
        if tool == "ceph":
            cmd[3:3] = ["--connect-timeout", str(int(timeout))]
        env = self.env
        secrets = tuple((secret_options or {}).values())
        if secret_options:
            env = {**self.env, "CEPH_ARGS": ceph_args(secret_options)}
        try:
            done = subprocess.run(
                cmd, input=stdin, capture_output=True, text=True, timeout=timeout + 5, env=env,
                cwd=self.paths.state_dir,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise self._failure("timed out", cmd, log=self.paths.log_path(log), secrets=secrets) from None
        if done.returncode != 0:
            raise self._failure(
                f"failed ({done.returncode})", cmd, done.stdout + done.stderr, self.paths.log_path(log), secrets
            )
        return done.stdout

    def bootstrap(self, start: Callable[[str], None]) -> None:
        """mkfs a one-mon, one-osd cluster and its RGW key; `start(name)` starts the mon and the
        OSD on the way (the OSD is created through the running mon)."""
        ceph, conf = self.paths.ceph_dir, str(self.paths.conf_path)
        if ceph.exists():
            shutil.rmtree(ceph)
        (ceph / "mon-a").mkdir(parents=True)
        (ceph / "osd-0").mkdir()
        (ceph / "rgw").mkdir()
        write_ceph_conf(self.paths, self.config)
        mon_keyring = ceph / "mon-bootstrap.keyring"
        admin_keyring = ceph / "client.admin.keyring"
        monmap = ceph / "monmap"
        self.offline(
            ["ceph-authtool", "--create-keyring", str(mon_keyring), "--gen-key", "-n", "mon.",
             "--cap", "mon", "allow *"]
        )  # fmt: skip
        self.offline(
            ["ceph-authtool", "--create-keyring", str(admin_keyring), "--gen-key", "-n", "client.admin",
             "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mds", "allow *",
             "--cap", "mgr", "allow *"]
        )  # fmt: skip
        self.offline(["ceph-authtool", str(mon_keyring), "--import-keyring", str(admin_keyring)])
        self.offline(
            ["monmaptool", "--create", "--fsid", self.config.fsid, "--addv", "a",
             f"[v2:{HOST}:{self.config.mon_port}]", str(monmap)]
        )  # fmt: skip
        self.offline(
            ["ceph-mon", "-c", conf, "--mkfs", "-i", "a", "--monmap", str(monmap), "--keyring", str(mon_keyring)]
        )
        for path in (mon_keyring, monmap):
            path.unlink()
        start("mon")

        osd_uuid = str(uuid.uuid4())
        key = self.offline(["ceph-authtool", "--gen-print-key"]).strip()
        osd_id = self.run("ceph", "osd", "new", osd_uuid, "-i", "-", stdin=json.dumps({"cephx_secret": key}))
        if osd_id.strip() != "0":
            raise StackError(f"expected osd id 0, got {osd_id.strip()!r}")
        keyring = ceph / "osd-0" / "keyring"
        keyring.write_text(f"[osd.0]\n\tkey = {key}\n")
        keyring.chmod(0o600)
        self.offline(["ceph-osd", "-c", conf, "-i", "0", "--mkfs", "--osd-uuid", osd_uuid])
        start("osd")

        self.run(
            "ceph", "auth", "get-or-create", RGW_NAME, "mon", "allow rw", "osd", "allow rwx",
            "-o", str(ceph / f"{RGW_NAME}.keyring"),
        )  # fmt: skip
        bootstrapped_marker(self.paths).write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))

    def ensure_rgw_user(self) -> bool:
        """Create the RGW user with the stack's S3 keys, or add the keys; False when both
        were there already."""
        c = self.config
        try:
            info = json.loads(self.run("radosgw-admin", "user", "info", "--uid", RGW_UID, log="rgw"))
        except StackError:
            info = None
        keys = {"--access-key": c.s3_access_key_id, "--secret-key": c.s3_secret_access_key}
        if info is not None:
            existing = {(k["access_key"], k["secret_key"]) for k in info.get("keys", [])}
            if (c.s3_access_key_id, c.s3_secret_access_key) in existing:
                return False
            self.run(
                "radosgw-admin", "key", "create", "--uid", RGW_UID, "--key-type", "s3", log="rgw", secret_options=keys
            )
        else:
            self.run(
                "radosgw-admin", "user", "create", "--uid", RGW_UID, "--display-name", "facepipe local stack",
                log="rgw", secret_options=keys,
            )  # fmt: skip
        return True
