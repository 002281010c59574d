"""Run the functions locally the way OpenFaaS does.

Serves two functions: face-recognition (FUNCTION_NAME) with `--workers` processes of
`functions/face-recognition/index.py`, and image-classification (IMAGE_FUNCTION_NAME) with
`--image-workers` processes of `functions/image-classification/index.py` (0: not served),
whose INPUT_BUCKET and OUTPUT_BUCKET are IMAGE_INPUT_BUCKET and IMAGE_OUTPUT_BUCKET. Each
worker speaks the python3-http template contract on its own loopback port, like a replica
behind of-watchdog. A small gateway serves `POST /function/<name>` (and `/`, the face
function), handing each request to a worker of that function with a free slot: each worker
holds as many requests at once as stack.yml's `max_inflight` lets the function's replica hold
(`--inflight`, `--image-inflight`; FACE_INFLIGHT and IMAGE_INFLIGHT); a request that finds no
free slot within SLOT_WAIT_S gets 429, as of-watchdog answers past max_inflight.
Workers that die are started again; a request that was on a dying worker gets
502, like the OpenFaaS gateway answers, and the notifier retries it. A worker
that does not answer within INVOKE_TIMEOUT_S (less the wait for a slot and ANSWER_MARGIN_S, so
that the caller gets the 504 before its own timeout) is hung (for example in a decoder):
it is killed, the request gets 504, and the worker is started again. Each
worker has its own temporary folder, emptied whenever it starts: what a killed
worker could not remove goes then, as a container's files go with the container.

Metrics, named and labelled as the OpenFaaS gateway's (openfaas/faas gateway/metrics/):
the gateway's /metrics has `gateway_service_count{function_name}` (replicas),
`gateway_function_invocation_total{function_name,code}` and `gateway_functions_seconds`,
with function_name `<name>.openfaas-fn`, for each function.
Each worker serves the function's own metrics on its METRICS_PORT, as in the image. Ports by
default, from `--worker-base-port` on (`worker_ports`): the face workers, their metrics ports,
the classification workers, their metrics ports.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from flask import Flask, Response, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from waitress import serve

from facepipe import logs
from facepipe.settings import load_settings
from facepipe_tools.paths import REPO_ROOT

FUNCTION_DIR = REPO_ROOT / "functions" / "face-recognition"
IMAGE_FUNCTION_DIR = REPO_ROOT / "functions" / "image-classification"
log = logs.get("facepipe.runner")
MAX_FAILED_STARTS = 3
#: faas-netes' default namespace for functions; the gateway names a function `<name>.<namespace>`
#: in its metrics (gateway/handlers/notifiers.go).
FUNCTION_NAMESPACE = "openfaas-fn"
#: The function's answer, and the gateway's own when no worker answers (see Gateway._forward).
EXPECTED_CODES = ("200", "429", "502", "503", "504")
#: Requests one worker holds at once, as `max_inflight` in stack.yml for each function's replica:
#: a video is worked on while the other downloads or uploads; a photo is classified in about
#: 30 ms, as long as its download and the previous photo's answer take, so three more keep the
#: worker's one-at-a-time classification busy.
FACE_INFLIGHT = 2
IMAGE_INFLIGHT = 4
#: How long a request waits for a free slot before the gateway answers 429, as of-watchdog does
#: at once when a replica holds max_inflight requests (faas-middleware's concurrency limiter): a
#: caller never waits here long enough to give up on a request that then runs anyway.
SLOT_WAIT_S = 2.0
#: The worker's time limit ends this much before the caller's (INVOKE_TIMEOUT_S), so that the
#: caller gets the gateway's 504 rather than its own timeout.
ANSWER_MARGIN_S = 0.5
#: The Go client's default histogram buckets, which gateway_functions_seconds uses.
GO_DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def worker_metrics_ports(worker_base_port: int, workers: int) -> list[int]:
    """The workers' METRICS_PORTs when not chosen: the range right after their own ports."""
    return list(range(worker_base_port + workers, worker_base_port + 2 * workers))


@dataclass(frozen=True)
class WorkerPorts:
    """The loopback ports of one function's workers: their own and their METRICS_PORTs."""

    ports: list[int]
    metrics_ports: list[int]

    @property
    def all(self) -> list[int]:
        return [*self.ports, *self.metrics_ports]


def worker_ports(worker_base_port: int, workers: int, image_workers: int = 0) -> tuple[WorkerPorts, WorkerPorts]:
    """(face, classification) worker ports, consecutive from `worker_base_port`: the face
    workers, their metrics ports, the classification workers, their metrics ports."""

    def block(base: int, count: int) -> WorkerPorts:
        return WorkerPorts(list(range(base, base + count)), worker_metrics_ports(base, count))

    return block(worker_base_port, workers), block(worker_base_port + 2 * workers, image_workers)


class Worker:
    def __init__(
        self,
        number: int,
        port: int,
        tmp_root: Path | None = None,
        metrics_port: int = 0,
        function_dir: Path = FUNCTION_DIR,
        env: dict[str, str] | None = None,
    ):
        self.number = number
        self.port = port
        self.function_dir = function_dir
        #: Settings of this function that differ from the runner's own (its buckets).
        self.extra_env = dict(env or {})
        #: Where the worker serves its metrics (its METRICS_PORT); 0: on its main port only.
        self.metrics_port = metrics_port
        self.tmp_dir = (tmp_root or Path(tempfile.gettempdir())) / f"facepipe-worker-{port}"
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None
        self.session = requests.Session()
        self.ready = False
        #: Counts the starts. The idle queue holds (worker, generation) entries: an entry of an
        #: older generation belongs to a process that has died since, and is dropped.
        self.generation = 0

    def env(self) -> dict[str, str]:
        """The worker's environment: ours, with its own ports (a METRICS_PORT of ours would be
        one port for every worker) and temporary folder."""
        env = dict(os.environ, PORT=str(self.port), HOST="127.0.0.1", PYTHONUNBUFFERED="1", TMPDIR=str(self.tmp_dir))
        env.update(self.extra_env)
        env["METRICS_PORT"] = str(self.metrics_port)
        env.setdefault("MALLOC_ARENA_MAX", "2")  # as in the Dockerfile: about 50 MiB less RSS per worker
        return env

    def start(self) -> None:
        shutil.rmtree(self.tmp_dir, ignore_errors=True)  # what a killed predecessor left
        self.tmp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.ready = False
        self.generation += 1
        self.process = subprocess.Popen([sys.executable, "index.py"], cwd=self.function_dir, env=self.env())
        log.info(
            "worker started", function=self.function_dir.name, worker=self.number, pid=self.process.pid,
            port=self.port, metrics_port=self.metrics_port,
        )  # fmt: skip

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL (also ends a stopped or hung process); the supervisor starts it again."""
        self.ready = False
        if self.alive():
            self.process.kill()

    def check_ready(self) -> bool:
        """Ask the worker's /healthz. A worker that answers but is not configured (503 with
        the reason) cannot become ready by waiting: it is stopped, which counts as a failed
        start, and restarted (as Kubernetes would restart a pod that never gets ready)."""
        try:
            response = self.session.get(self.url + "/healthz", timeout=1)
        except requests.RequestException:
            self.ready = False
            return False
        self.ready = response.ok
        if response.status_code == 503 and response.text.startswith("not ready:"):
            log.error(
                "worker not ready", function=self.function_dir.name, worker=self.number, detail=response.text.strip()
            )
            self.kill()
        return self.ready


# ---- chaos hook (facepipe_tools/chaos/poison.py): tooling only, never read by facepipe/ ----
#: Comma-separated substrings: a worker handed a request whose body (the object's key) holds
#: one of them is killed (SIGKILL) before it answers, as a segfault in a decoder would.
POISON_KEYS_ENV = "FACEPIPE_RUNNER_POISON_KEYS"


def poisoned(body: bytes) -> bool:
    """Whether a function request names a poison key (FACEPIPE_RUNNER_POISON_KEYS)."""
    marks = [mark.strip() for mark in os.environ.get(POISON_KEYS_ENV, "").split(",") if mark.strip()]
    return any(mark.encode() in body for mark in marks)


def kill_poisoned(function: str, worker: Worker) -> None:
    """SIGKILL the worker and wait until it is gone: the request then fails as on a crash (502)."""
    log.warning("poison key: killing the worker", function=function, worker=worker.number)
    process = worker.process  # the supervisor may start a successor meanwhile
    worker.kill()
    if process is not None:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


# ---- end of the chaos hook ----


class GatewayMetrics:
    """The OpenFaaS gateway's function metrics (openfaas/faas gateway/metrics/metrics.go), in a
    registry of their own; /metrics serves it after the process's default registry."""

    def __init__(self, replicas: dict[str, Callable[[], int]]) -> None:
        """`replicas`: each function's name and how to read its replica count."""
        self.registry = CollectorRegistry()
        self.seconds = Histogram(
            "gateway_functions_seconds", "Function time taken", ["function_name", "code"],
            buckets=GO_DEFAULT_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.invocations = Counter(
            "gateway_function_invocation", "Function metrics", ["function_name", "code"], registry=self.registry
        )
        self.replicas = Gauge(
            "gateway_service_count", "Current count of replicas for function", ["function_name"], registry=self.registry
        )
        for function, count in replicas.items():
            label = self.label(function)
            # Replicas asked for (faas-netes reports the Deployment's spec.replicas), read at each scrape.
            self.replicas.labels(label).set_function(count)
            # At 0 from the start (upstream creates them with the first such answer): a rate over a
            # burst of answers that all came between two scrapes would otherwise be undefined.
            for code in EXPECTED_CODES:
                self.seconds.labels(label, code)
                self.invocations.labels(label, code)

    @staticmethod
    def label(function: str) -> str:
        return f"{function}.{FUNCTION_NAMESPACE}"

    def invocation_completed(self, function: str, status: int, seconds: float) -> None:
        self.seconds.labels(self.label(function), str(status)).observe(seconds)
        self.invocations.labels(self.label(function), str(status)).inc()

    def exposition(self) -> bytes:
        return generate_latest(REGISTRY) + generate_latest(self.registry)


class Function:
    """One function's workers, as the replicas of its Deployment: started, watched, restarted,
    and handed one request at a time per free slot."""

    def __init__(
        self, name: str, workers: list[Worker], timeout_s: float, inflight: int = FACE_INFLIGHT,
        slot_wait_s: float = SLOT_WAIT_S,
    ):  # fmt: skip
        self.name = name
        self.workers = workers
        self.timeout_s = timeout_s
        self.slot_wait_s = min(slot_wait_s, timeout_s / 4)
        #: Requests a worker holds at once: it works on one at a time, and the others' downloads
        #: and uploads overlap that work (as of-watchdog's max_inflight allows).
        self.inflight = max(1, inflight)
        self.idle: queue.Queue[tuple[Worker, int]] = queue.Queue()
        self.stopping = threading.Event()
        self.failed = False

    def supervise(self) -> None:
        """Start workers, put them in the idle queue once healthy, restart dead ones.

        A worker that exits MAX_FAILED_STARTS times in a row without ever becoming
        ready cannot start (bad settings, missing module): the runner gives up.
        """
        for worker in self.workers:
            worker.start()
        pending = set(self.workers)
        failed_starts = dict.fromkeys(self.workers, 0)
        while not self.stopping.is_set():
            for worker in self.workers:
                if not worker.alive() and not self.stopping.is_set():
                    if worker in pending:
                        failed_starts[worker] += 1
                    if failed_starts[worker] >= MAX_FAILED_STARTS:
                        log.error(
                            "worker cannot start; stopping", function=self.name, worker=worker.number,
                            attempts=failed_starts[worker], detail="see its output above",
                        )  # fmt: skip
                        self.failed = True
                        os.kill(os.getpid(), signal.SIGTERM)
                        return
                    log.warning(
                        "worker exited; starting it again", function=self.name, worker=worker.number,
                        exit_code=worker.process.returncode,
                    )  # fmt: skip
                    worker.start()
                    pending.add(worker)
            for worker in list(pending):
                if worker.check_ready():
                    pending.discard(worker)
                    failed_starts[worker] = 0
                    self.add_slots(worker)
                    log.info("worker ready", function=self.name, worker=worker.number)
            self.stopping.wait(0.2)

    def add_slots(self, worker: Worker) -> None:
        """A ready worker takes requests: `inflight` of them at once."""
        for _ in range(self.inflight):
            self.idle.put((worker, worker.generation))

    @property
    def ready(self) -> bool:
        return all(worker.ready for worker in self.workers)

    def _acquire(self) -> tuple[Worker, int] | None:
        """An idle worker (with its generation), waiting up to `slot_wait_s`; None if none became free."""
        deadline = time.monotonic() + self.slot_wait_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                worker, generation = self.idle.get(timeout=remaining)
            except queue.Empty:
                return None
            if worker.generation == generation and worker.alive():
                return worker, generation
            # Stale: that process died; its successor is queued by the supervisor once ready.

    def _release(self, worker: Worker, generation: int) -> None:
        if worker.generation == generation and worker.alive():
            self.idle.put((worker, generation))

    def forward(self, path: str) -> Response:
        """Hand the current request to a worker with a free slot."""
        started = time.monotonic()
        acquired = self._acquire()
        if acquired is None and not any(worker.ready for worker in self.workers):
            return Response("no function worker is ready\n", status=503)
        if acquired is None:
            limit = self.inflight * len(self.workers)
            return Response(
                f"Concurrent request limit exceeded. Max concurrent requests: {limit}\n",
                status=429, headers={"Retry-After": "1"},
            )  # fmt: skip
        time_limit = self.timeout_s - (time.monotonic() - started) - ANSWER_MARGIN_S
        worker, generation = acquired
        if poisoned(request.get_data()):  # the chaos hook above
            kill_poisoned(self.name, worker)
        try:
            upstream = worker.session.request(
                request.method,
                worker.url + "/" + path,
                params=request.args,
                data=request.get_data(),
                headers={k: v for k, v in request.headers if k.lower() not in ("host", "content-length")},
                timeout=time_limit,
            )
        except requests.Timeout:
            log.error(
                "worker did not answer in time; killing it", function=self.name, worker=worker.number,
                seconds=round(time_limit, 1),
            )  # fmt: skip
            worker.kill()
            return Response(f"function timed out after {time_limit:.1f} s\n", status=504)
        except requests.RequestException as exc:
            log.warning(
                "worker failed during a request", function=self.name, worker=worker.number,
                error=type(exc).__name__, detail=str(exc),
            )  # fmt: skip
            self._release(worker, generation)
            return Response(f"function worker failed: {type(exc).__name__}\n", status=502)
        self._release(worker, generation)
        headers = {k: v for k, v in upstream.headers.items() if k.lower() in ("content-type",)}
        return Response(upstream.content, status=upstream.status_code, headers=headers)

    def stop(self) -> None:
        self.stopping.set()
        for worker in self.workers:
            if worker.alive():
                worker.process.terminate()
        for worker in self.workers:
            if worker.process is not None:
                try:
                    worker.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    worker.process.kill()
                    worker.process.wait(timeout=10)
            shutil.rmtree(worker.tmp_dir, ignore_errors=True)


class Gateway:
    """The functions by name, behind one port, counted in the gateway's metrics. The first one
    also answers `POST /`."""

    def __init__(self, functions: list[Function]):
        self.functions = {function.name: function for function in functions}
        self.default = functions[0]
        self.metrics = GatewayMetrics(
            {function.name: (lambda function=function: len(function.workers)) for function in functions}
        )

    @property
    def ready(self) -> bool:
        return all(function.ready for function in self.functions.values())

    @property
    def failed(self) -> bool:
        return any(function.failed for function in self.functions.values())

    def supervise(self) -> None:
        """A supervisor thread per function."""
        for function in self.functions.values():
            threading.Thread(target=function.supervise, name=f"supervisor-{function.name}", daemon=True).start()

    def forward(self, function: Function, path: str) -> Response:
        """Hand the request to a worker of `function`; counted in the gateway's metrics, whatever the answer."""
        started = time.perf_counter()
        response = function.forward(path)
        self.metrics.invocation_completed(function.name, response.status_code, time.perf_counter() - started)
        return response

    def stop(self) -> None:
        for function in self.functions.values():
            function.stop()


def create_app(gateway: Gateway) -> Flask:
    app = Flask(__name__)

    @app.get("/healthz")
    def healthz() -> Response:
        lines = [
            f"{function.name}: {sum(w.ready for w in function.workers)}/{len(function.workers)} workers ready"
            for function in gateway.functions.values()
        ]
        status = 200 if gateway.ready else 503
        return Response("\n".join(lines) + "\n", status=status, mimetype="text/plain")

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(gateway.metrics.exposition(), mimetype=CONTENT_TYPE_LATEST)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]

    @app.route("/function/<name>", defaults={"path": ""}, methods=methods)
    @app.route("/function/<name>/<path:path>", methods=methods)
    def function(name: str, path: str) -> Response:
        if name not in gateway.functions:
            return Response(f"no function named {name!r}\n", status=404)
        return gateway.forward(gateway.functions[name], path)

    @app.route("/", methods=["POST"])
    def root() -> Response:
        return gateway.forward(gateway.default, "")

    return app


def _workers(ports: WorkerPorts, function_dir: Path, env: dict[str, str] | None = None) -> list[Worker]:
    return [
        Worker(n, port, metrics_port=metrics_port, function_dir=function_dir, env=env)
        for n, (port, metrics_port) in enumerate(zip(ports.ports, ports.metrics_ports, strict=True))
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="face-recognition workers")
    parser.add_argument(
        "--image-workers", type=int, default=1, help="image-classification workers (default 1; 0: not served)"
    )
    parser.add_argument("--worker-base-port", type=int, default=0, help="first worker port (default: --port + 1)")
    parser.add_argument(
        "--worker-metrics-base-port",
        type=int,
        default=0,
        help="first face worker METRICS_PORT (default: right after the face workers' ports)",
    )
    parser.add_argument(
        "--inflight", type=int, default=FACE_INFLIGHT,
        help=f"requests each face-recognition worker holds at once (default {FACE_INFLIGHT})",
    )  # fmt: skip
    parser.add_argument(
        "--image-inflight", type=int, default=IMAGE_INFLIGHT,
        help=f"requests each image-classification worker holds at once (default {IMAGE_INFLIGHT})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    logs.setup()
    settings = load_settings()
    base = args.worker_base_port or args.port + 1
    faces, images = worker_ports(base, max(1, args.workers), max(0, args.image_workers))
    if args.worker_metrics_base_port:
        first = args.worker_metrics_base_port
        faces = WorkerPorts(faces.ports, list(range(first, first + len(faces.ports))))
    if args.port in faces.all + images.all:
        log.error(
            "ports overlap", port=args.port, face_worker_ports=faces.all, image_worker_ports=images.all,
            hint="choose --worker-base-port outside the gateway's --port",
        )  # fmt: skip
        return 1
    functions = [
        Function(settings.function_name, _workers(faces, FUNCTION_DIR), settings.invoke_timeout_s, args.inflight)
    ]
    if images.ports:
        if not (IMAGE_FUNCTION_DIR / "index.py").is_file():
            log.error("function missing", function=settings.image_function_name, path=str(IMAGE_FUNCTION_DIR))
            return 1
        # The classification function reads its own buckets as INPUT_BUCKET/OUTPUT_BUCKET, as deployed.
        env = {"INPUT_BUCKET": settings.image_input_bucket, "OUTPUT_BUCKET": settings.image_output_bucket}
        workers = _workers(images, IMAGE_FUNCTION_DIR, env)
        functions.append(
            Function(settings.image_function_name, workers, settings.invoke_timeout_s, args.image_inflight)
        )
    gateway = Gateway(functions)
    gateway.supervise()

    def shutdown(signum, frame) -> None:
        gateway.stop()
        sys.exit(1 if gateway.failed else 0)

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    gateway_url = f"http://{args.host}:{args.port}"
    log.info(
        "gateway listening", url=gateway_url,
        functions={function.name: len(function.workers) for function in functions},
    )  # fmt: skip
    workers = sum(len(function.workers) for function in functions)
    try:
        serve(create_app(gateway), host=args.host, port=args.port, threads=max(8, 4 * workers), ident="gateway")
    except OSError as error:
        log.error("cannot listen", url=gateway_url, error=str(error))
        gateway.stop()
        return 1
    return 1 if gateway.failed else 0


if __name__ == "__main__":
    sys.exit(main())
