"""`LocalStack`: brings the components up in order, keeps its config and env file, stops
and reports them. What each component is lives in its own module (ceph, dynamodb,
function, notifier, web, prometheus); how processes are spawned and stopped in `processes`."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path

from facepipe.settings import Route, Settings, env_name
from facepipe_tools.stack import processes
from facepipe_tools.stack.ceph import (
    CEPH_DAEMONS,
    RGW_UID,
    CephTools,
    Osd,
    bootstrapped_marker,
    daemon_prefixes,
    missing_ceph_binaries,
    write_ceph_conf,
)
from facepipe_tools.stack.component import (
    Component,
    ComponentStatus,
    StackError,
    StackPaths,
    port_in_use,
)
from facepipe_tools.stack.config import (
    DEFAULT_ENV_FILE,
    DEFAULT_KNOWN_FACES,
    DEFAULT_PORTS,
    DEFAULT_STATE_DIR,
    DEFAULT_STUDENT_DATA,
    HOST,
    StackConfig,
    load_config,
    save_config,
)
from facepipe_tools.stack.dynamodb import UPLOAD_DATA, DynamoDB, upload_data_command
from facepipe_tools.stack.function import FunctionRunner, classifier_model, worker_known_faces
from facepipe_tools.stack.notifier import Notifier, notifier_concurrency, setup_command
from facepipe_tools.stack.processes import Daemons
from facepipe_tools.stack.prometheus import Prometheus, prometheus_binary
from facepipe_tools.stack.web import Web

#: Every component, in start order.
COMPONENT_TYPES: dict[str, type[Component]] = {
    kind.name: kind for kind in (*CEPH_DAEMONS, DynamoDB, FunctionRunner, Notifier, Web, Prometheus)
}
COMPONENTS = tuple(COMPONENT_TYPES)
CEPH_COMPONENTS = tuple(kind.name for kind in CEPH_DAEMONS)
#: Components a stack may run or not, by the boolean field of the same name in its StackConfig.
OPTIONAL_COMPONENTS = ("prometheus",)
#: Classification workers of a new stack that runs every component (`make up`, the tests'
#: session stack). A stack of a few components (bench, chaos: they measure, kill and count the
#: face workers) serves the face function alone unless it asks for `image_workers`.
DEFAULT_IMAGE_WORKERS = 1
ENV_MARKER = "# Written by `python -m facepipe_tools.stack up`"


class LocalStack:
    """A single-node Ceph + RGW, a DynamoDB-compatible server, the function runner, the
    notifier, the web tier and, optionally, Prometheus, under one state folder. The function
    runner serves face-recognition (`workers`) and image-classification (`image_workers`).
    Constructor arguments left as None keep what an existing stack in `state_dir` uses (or the
    defaults for a new one; a new stack runs Prometheus when it is installed, and
    DEFAULT_IMAGE_WORKERS when it runs every component)."""

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
        prometheus_port: int | None = None,
        prometheus: bool | None = None,
        workers: int | None = None,
        image_workers: int | None = None,
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
            "prometheus_port": prometheus_port,
            "prometheus": prometheus,
            "workers": workers,
            "image_workers": image_workers,
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
        self._paths = StackPaths(self.state_dir)
        self._daemons = Daemons(self._paths)
        self._parts = {name: kind(self._paths) for name, kind in COMPONENT_TYPES.items()}

    # ----------------------------------------------------------------- paths & config

    @property
    def ceph_dir(self) -> Path:
        return self._paths.ceph_dir

    @property
    def conf_path(self) -> Path:
        return self._paths.conf_path

    @property
    def run_dir(self) -> Path:
        return self._paths.run_dir

    @property
    def log_dir(self) -> Path:
        return self._paths.log_dir

    @property
    def config_path(self) -> Path:
        return self._paths.config_path

    @property
    def config(self) -> StackConfig:
        if self._config is None:
            self._config = load_config(self.config_path)
            if self._config is None:
                raise StackError(f"no stack in {self.state_dir} (run `up` first)")
        return self._config

    @property
    def env_file(self) -> Path:
        return Path(self.config.env_file)

    def log_path(self, component: str) -> Path:
        return self._paths.log_path(component)

    def _resolve_config(self) -> StackConfig:
        """The stored config with this call's explicit choices applied (or a new one)."""
        req = self._requested
        old = load_config(self.config_path)
        if old is None:
            new = StackConfig(
                mon_port=req["mon_port"] or DEFAULT_PORTS["mon"],
                rgw_port=req["rgw_port"] or DEFAULT_PORTS["rgw"],
                dynamodb_port=req["dynamodb_port"] or DEFAULT_PORTS["dynamodb"],
                gateway_port=req["gateway_port"] or DEFAULT_PORTS["gateway"],
                notifier_port=req["notifier_port"] or DEFAULT_PORTS["notifier"],
                worker_base_port=req["worker_base_port"] or DEFAULT_PORTS["worker_base"],
                web_port=req["web_port"] or DEFAULT_PORTS["web"],
                prometheus_port=req["prometheus_port"] or DEFAULT_PORTS["prometheus"],
                prometheus=prometheus_binary() is not None if req["prometheus"] is None else req["prometheus"],
                workers=req["workers"] or os.cpu_count() or 1,
                image_workers=req["image_workers"],
                known_faces=req["known_faces"] or str(DEFAULT_KNOWN_FACES),
                student_data=req["student_data"] or str(DEFAULT_STUDENT_DATA),
                env_file=req["env_file"] or str(DEFAULT_ENV_FILE),
            )
            return self._choose_image_workers(new)
        for name in ("mon_port", "rgw_port", "dynamodb_port", "env_file"):
            if req[name] is not None and req[name] != getattr(old, name):
                raise StackError(
                    f"the stack in {self.state_dir} uses {name} {getattr(old, name)}; "
                    f"run `down` first to change it to {req[name]}"
                )
        for name in (
            "gateway_port", "notifier_port", "worker_base_port", "web_port", "prometheus_port", "prometheus", "workers",
            "image_workers", "known_faces", "student_data",
        ):  # fmt: skip
            if req[name] is not None:
                setattr(old, name, req[name])
        return self._choose_image_workers(old)

    def _choose_image_workers(self, config: StackConfig) -> StackConfig:
        """Settle `image_workers` when neither this call nor the stored config chose it."""
        if config.image_workers is None:
            whole = set(COMPONENTS) - set(OPTIONAL_COMPONENTS) <= set(self.components)
            config.image_workers = DEFAULT_IMAGE_WORKERS if whole else 0
        if config.image_workers < 0 or config.workers < 1:
            raise StackError("workers must be at least 1 and image workers at least 0")
        return config

    # ----------------------------------------------------------------- settings

    def routes(self) -> list[Route]:
        """The stack's routing table: the face route, and the image route when it serves images."""
        defaults = Settings()
        routes = [Route(defaults.input_bucket, defaults.function_name, defaults.output_bucket)]
        if self.config.image_workers:
            routes.append(
                Route(defaults.image_input_bucket, defaults.image_function_name, defaults.image_output_bucket)
            )
        return routes

    def settings_env(self) -> dict[str, str]:
        """The stack's settings as environment variables (names as in facepipe.settings)."""
        c = self.config
        defaults = Settings()
        images = {"CLASSIFIER_MODEL": str(classifier_model(self._paths))} if c.image_workers else {}
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
            "IMAGE_INPUT_BUCKET": defaults.image_input_bucket,
            "IMAGE_OUTPUT_BUCKET": defaults.image_output_bucket,
            "IMAGE_FUNCTION_NAME": defaults.image_function_name,
            **images,
            env_name("routes_table"): ",".join(map(str, self.routes())),
            "NOTIFY_TOKEN": c.notify_token,
            "NOTIFY_URL": f"http://{HOST}:{c.notifier_port}/",
            env_name("notifier_concurrency"): str(notifier_concurrency(c)),
            "KNOWN_FACES": worker_known_faces(self._paths, c),
            "WEB_URL": f"http://{HOST}:{c.web_port}/",
            **({"PROMETHEUS_URL": f"http://{HOST}:{c.prometheus_port}/"} if c.prometheus else {}),
        }

    def settings(self) -> Settings:
        """Settings for this stack, built from `settings_env()` alone (no `.env`, no secrets)."""
        env = self.settings_env()
        values: dict[str, object] = {}
        for setting in fields(Settings):
            raw = env.get(env_name(setting.name))
            if raw is not None:
                number = isinstance(setting.default, int | float) and not isinstance(setting.default, bool)
                values[setting.name] = type(setting.default)(raw) if number else raw
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

    def _ceph_tools(self) -> CephTools:
        return CephTools(self._paths, self.config, self.child_env())

    # ----------------------------------------------------------------- output

    def _say(self, message: str) -> None:
        """A progress line for the person running `up`/`down` (not a service log)."""
        if self._log is not None:
            self._log(f"[{time.monotonic() - self._t0:5.1f}s] {message}")

    # ----------------------------------------------------------------- one component

    def _component(self, name: str) -> Component:
        if name not in self._parts:
            raise ValueError(f"unknown component {name!r}; one of {', '.join(COMPONENTS)}")
        return self._parts[name]

    def pids(self, component: str) -> list[int]:
        """Pids of a component: its main process first, then the rest of its process group
        (for example the function runner's workers)."""
        self._component(component)  # ValueError for an unknown name
        pid = self._daemons.live_pid(component)
        if pid is None:
            return []
        return processes.group_pids(pid) or [pid]

    def stop(self, component: str, grace: float | None = None) -> None:
        """Stop a component: TERM, then KILL after `grace` seconds (default: the component's
        stop_grace_s, 60 for the OSD, which writes its memstore data out on a clean stop); a
        no-op when it is down. `grace=0` kills at once, like a crash (for the OSD that loses
        every object)."""
        part = self._component(component)
        pid = self._daemons.live_pid(component)
        if pid is not None:
            clean = self._daemons.terminate(pid, grace=part.stop_grace_s if grace is None else grace)
            part.after_stop(clean)
            self._say(f"{component}: stopped (pid {pid}){'' if clean else ', killed'}")
        self._daemons.forget(component)

    def start(self, component: str) -> None:
        """Start a stopped component and wait until it is healthy (no-op if it runs)."""
        self._component(component)  # ValueError for an unknown name
        if self._daemons.live_pid(component) is not None:
            return
        self._start(component)
        if component == "dynamodb":
            self._upload_data()  # the server keeps its tables in memory: load the data again

    def restart(self, component: str) -> None:
        self.stop(component)
        self.start(component)

    def osd_data_lost(self) -> bool:
        """True when the OSD ended without a clean stop (killed, crashed, machine rebooted):
        memstore then lost every object and the cluster must be created again (`up` does)."""
        return Osd(self._paths).in_use.exists() and self._daemons.live_pid("osd") is None

    def _start(self, name: str) -> None:
        """Spawn a component that is not running and wait until it is healthy."""
        part, config = self._component(name), self.config
        busy = [port for port in part.ports(config) if port_in_use(port)]
        if busy:  # its health check would otherwise be answered by that other program
            raise StackError(
                f"{name}: port {', '.join(map(str, busy))} on {HOST} is in use by another program "
                "(stop it, or choose other ports with the --*-port options)"
            )
        part.before_start(config)
        pid = self._daemons.spawn(name, part.command(config), self.child_env())
        self._wait_healthy(part, pid)
        self._say(f"{name}: started (pid {pid})")

    def _wait_healthy(self, part: Component, pid: int) -> None:
        deadline = time.monotonic() + part.start_timeout_s
        while True:
            if self._daemons.live_pid(part.name) != pid:
                raise StackError(
                    f"{part.name} exited during start-up (pid {pid}, exit status "
                    f"{self._daemons.exit_status(pid)}, {processes.describe(pid)})",
                    log=self.log_path(part.name),
                )
            healthy, detail = part.health(self.config)
            if healthy:
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"{part.name} not healthy after {part.start_timeout_s:.0f} s ({detail})",
                    log=self.log_path(part.name),
                )
            time.sleep(0.1)

    def _ensure_running(self, name: str) -> None:
        """Keep a healthy component, restart an unhealthy one, start a dead one."""
        pid = self._daemons.live_pid(name)
        if pid is not None:
            healthy, detail = self._component(name).health(self.config)
            if healthy:
                self._say(f"{name}: running (pid {pid})")
                return
            self._say(f"{name}: unhealthy ({detail}), restarting")
            self.stop(name)
        self._start(name)

    def enabled(self, component: str) -> bool:
        """Whether the stack's config runs `component` (False for an optional one turned off)."""
        return component not in OPTIONAL_COMPONENTS or bool(getattr(self.config, component))

    def status(self) -> list[ComponentStatus]:
        """Each component the stack runs, with its pids and health (a dead component is
        reported, not raised; an optional component turned off is left out)."""
        result = []
        for name in filter(self.enabled, COMPONENTS):
            pids = self.pids(name)
            if not pids:
                result.append(ComponentStatus(name, [], False, "not running"))
                continue
            healthy, detail = self._component(name).health(self.config)
            result.append(ComponentStatus(name, pids, healthy, detail))
        return result

    # ----------------------------------------------------------------- one-shot steps

    def _run_step(self, name: str, cmd: list[str], timeout: float = 300.0) -> None:
        """Run a one-shot script with the stack's env; its output goes to `<state>/log/<name>.log`."""
        processes.run_logged(cmd, self.log_path(name), self.child_env(), timeout)
        self._say(f"{name}: done")

    def _upload_data(self) -> None:
        if not UPLOAD_DATA.is_file():
            self._say(f"upload_data: skipped, {UPLOAD_DATA.name} is missing")
            return
        self._run_step("upload_data", upload_data_command(self.config))

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

    def _up_ceph(self) -> None:
        """Keep a healthy cluster; create it when it was never completed or the OSD lost its data."""
        rebuild = not bootstrapped_marker(self._paths).is_file()
        if not rebuild and self.osd_data_lost():
            self._say("osd: ended without a clean stop; memstore lost the objects: recreating Ceph")
            rebuild = True
        tools = self._ceph_tools()
        if rebuild:
            for name in reversed(CEPH_COMPONENTS):
                self.stop(name, grace=0)  # their data is thrown away
            tools.bootstrap(start=self._start)
            self._say("ceph: cluster created")
        else:
            write_ceph_conf(self._paths, self.config)
        for name in CEPH_COMPONENTS:
            self._ensure_running(name)
        if tools.ensure_rgw_user():
            self._say(f"rgw: user {RGW_UID} ready")

    def up(self) -> None:
        """Bring the stack up, or repair it. Ceph and the DynamoDB server are kept when they
        are healthy (started again when dead); the function runner, the notifier and the web
        tier are always restarted so that new code and a new dataset take effect; the
        notifier's `setup` and the student upload are rerun (both are idempotent)."""
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
            for name in OPTIONAL_COMPONENTS:
                if not self.enabled(name):
                    wanted.discard(name)
            if "prometheus" in wanted and prometheus_binary() is None:
                raise StackError("prometheus not found (run `make install`, or `up --no-prometheus`)")
            if "function" in wanted and not Path(c.known_faces).is_file():
                raise StackError(f"known faces file not found: {c.known_faces}")
            if "dynamodb" in wanted and UPLOAD_DATA.is_file() and not Path(c.student_data).is_file():
                raise StackError(f"student data file not found: {c.student_data}")
            save_config(c, self.config_path)
            for path in (self.run_dir, self.log_dir, self._paths.crash_dir):
                path.mkdir(exist_ok=True)
            self._write_env_file()

            if wanted & set(CEPH_COMPONENTS):
                self._up_ceph()
            if "dynamodb" in wanted:
                self._ensure_running("dynamodb")

            # The notifier reconciles at start, so the function must be up before it, and
            # neither may run while the other is swapped: stop both, then start in order.
            for name in ("notifier", "function"):
                if name in wanted:
                    self.stop(name)
            if "rgw" in wanted:
                self._run_step("setup", setup_command())
            if "dynamodb" in wanted:
                self._upload_data()
            for name in ("function", "notifier"):
                if name in wanted:
                    self._start(name)
            if "web" in wanted:
                self.stop("web")
                self._start("web")
            # Last, so that its first scrapes find every target up; restarted for the current
            # ports; stopped when turned off.
            if "prometheus" in self.components:
                self.stop("prometheus")
            if "prometheus" in wanted:
                self._start("prometheus")
        self._say_where(wanted)

    def _say_where(self, wanted: set[str]) -> None:
        env = self.settings_env()
        self._say(
            f"stack up: S3 {env['S3_ENDPOINT_URL']}, DynamoDB {env['DYNAMODB_ENDPOINT_URL']}, "
            f"gateway {env['OPENFAAS_GATEWAY']}, notifier {env['NOTIFY_URL']}"
            + (f", web {env['WEB_URL']} (results: {env['WEB_URL']}results)" if "web" in wanted else "")
            + (f", Prometheus {env['PROMETHEUS_URL']}" if "prometheus" in wanted else "")
        )
        self._say(f"routes: {', '.join(map(str, self.routes()))}")
        self._say(f"settings written to {self.env_file}; known faces {self.config.known_faces}")
        if self.state_dir == DEFAULT_STATE_DIR and self.env_file == DEFAULT_ENV_FILE:
            self._say("stop it with `make down`")
        else:
            self._say(f"stop it with `python -m facepipe_tools.stack down --state-dir {self.state_dir}`")

    def down(self) -> None:
        """Stop every component (by recorded pid), remove the state dir and our env file."""
        self._t0 = time.monotonic()
        if not self.state_dir.exists():
            self._say(f"nothing to stop: {self.state_dir} does not exist")
            return
        with self._locked():
            self._config = load_config(self.config_path)
            # Without its OSD, RGW would hang in a graceful shutdown: no point waiting.
            osd_lost = self.ceph_dir.is_dir() and self.osd_data_lost()
            for name in reversed(COMPONENTS):
                self.stop(name, grace=0.0 if osd_lost and name == "rgw" else None)
            # Ceph daemons no pid file accounts for (a pid file lost, an interrupted `up`).
            for pid, cmd in processes.find_processes(daemon_prefixes(self._paths)).items():
                self._say(f"stopping leftover process {pid}: {' '.join(cmd)[:100]}")
                self._daemons.terminate(pid, grace=10.0)
            if self._config is not None and self._env_file_is_ours(self.env_file):
                self.env_file.unlink()
            shutil.rmtree(self.state_dir)
        self._say(f"stack down: removed {self.state_dir}")
