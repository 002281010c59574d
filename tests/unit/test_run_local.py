"""The local function runner: it gives up, with a non-zero exit, when its workers cannot start;
it serves both functions and the OpenFaaS gateway's metrics for each; each worker serves its own
on a port of its own and holds as many requests at once as stack.yml lets its replica hold; the
local notifier invokes enough at once to fill them."""

import dataclasses
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from facepipe.settings import Settings
from facepipe_tools import metrics_client
from facepipe_tools.function_runner import (
    FACE_INFLIGHT,
    IMAGE_FUNCTION_DIR,
    IMAGE_INFLIGHT,
    Function,
    Gateway,
    Worker,
    WorkerPorts,
    create_app,
    worker_metrics_ports,
    worker_ports,
)
from facepipe_tools.polling import wait_for
from facepipe_tools.stack import LocalStack, free_port, free_port_range
from facepipe_tools.stack.config import StackConfig, save_config

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPECTED = ("200", "502", "503", "504")


def test_runner_stops_when_workers_cannot_start(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text(f"KNOWN_FACES={tmp_path / 'missing.json'}\n")
    env = {**os.environ, "FACEPIPE_ENV_FILE": str(env_file), "SECRETS_DIR": str(tmp_path)}
    env.pop("KNOWN_FACES", None)
    port = free_port_range(3)  # the gateway, the worker and its metrics port
    done = subprocess.run(
        [sys.executable, "facepipe_tools/function_runner.py", "--port", str(port), "--workers", "1",
         "--image-workers", "0", "--worker-base-port", str(port + 1)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "cannot read known faces" in output
    assert "cannot start" in output
    assert "Traceback" not in output


def test_runner_refuses_a_gateway_port_among_its_workers_ports(tmp_path: Path) -> None:
    port = free_port_range(4)
    env = {**os.environ, "FACEPIPE_ENV_FILE": str(tmp_path / "none.env"), "SECRETS_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "facepipe_tools/function_runner.py", "--port", str(port + 1), "--workers", "1",
         "--image-workers", "0", "--worker-base-port", str(port)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert '"event": "ports overlap"' in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_gateway_serves_the_openfaas_gateway_metrics() -> None:
    """Named and labelled as upstream's (openfaas/faas gateway/metrics/metrics.go): the replicas,
    and every invocation by status, including the answers the gateway makes itself; per function."""
    faces = Function("face-recognition", [Worker(0, free_port()), Worker(1, free_port())], timeout_s=0.1)
    images = Function("image-classification", [Worker(0, free_port(), function_dir=IMAGE_FUNCTION_DIR)], timeout_s=0.1)
    client = create_app(Gateway([faces, images])).test_client()
    assert client.post("/function/face-recognition", json={"bucket": "b", "key": "k"}).status_code == 503
    assert client.post("/function/image-classification", json={"bucket": "b", "key": "k"}).status_code == 503
    assert client.post("/", json={"bucket": "b", "key": "k"}).status_code == 503  # the first function
    assert client.post("/function/other").status_code == 404
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.get_data(as_text=True).splitlines() == [
        "face-recognition: 0/2 workers ready",
        "image-classification: 0/1 workers ready",
    ]
    samples = metrics_client.parse(client.get("/metrics").get_data(as_text=True))
    name = {"function_name": "face-recognition.openfaas-fn"}
    image = {"function_name": "image-classification.openfaas-fn"}
    assert samples.value("gateway_service_count", **name) == 2
    assert samples.value("gateway_service_count", **image) == 1
    for labels, answered in ((name, 2), (image, 1)):
        counts = {code: samples.value("gateway_function_invocation_total", code=code, **labels) for code in EXPECTED}
        assert counts == {"200": 0.0, "502": 0.0, "503": answered, "504": 0.0}, labels
    assert samples.value("gateway_functions_seconds_count", code="503", **name) == 2
    assert samples.value("gateway_functions_seconds_bucket", code="503", le="+Inf", **image) == 1


def test_each_worker_serves_its_metrics_on_a_port_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_PORT", "8082")  # one port for every worker would fail all but one
    ports = worker_metrics_ports(21000, 3)
    assert ports == [21003, 21004, 21005]
    workers = [Worker(n, 21000 + n, metrics_port=port) for n, port in enumerate(ports)]
    assert [worker.env()["METRICS_PORT"] for worker in workers] == ["21003", "21004", "21005"]
    assert [worker.env()["PORT"] for worker in workers] == ["21000", "21001", "21002"]


def test_worker_ports_follow_one_another() -> None:
    """Face workers, their metrics ports, then the classification workers and theirs."""
    faces, images = worker_ports(21000, 2, 1)
    assert faces == WorkerPorts([21000, 21001], [21002, 21003])
    assert images == WorkerPorts([21004], [21005])
    assert worker_ports(21000, 3)[1].all == []


def test_a_classification_worker_gets_its_own_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INPUT_BUCKET", "input")
    worker = Worker(0, 21000, function_dir=IMAGE_FUNCTION_DIR, env={"INPUT_BUCKET": "images-input"})
    assert worker.env()["INPUT_BUCKET"] == "images-input"
    assert Worker(0, 21001).env()["INPUT_BUCKET"] == "input"


class _SlowWorker(BaseHTTPRequestHandler):
    """A function worker that holds every request until the test lets them go."""

    lock = threading.Lock()
    in_flight = 0
    most = 0
    release = threading.Event()

    def do_POST(self) -> None:
        with self.lock:
            type(self).in_flight += 1
            type(self).most = max(self.most, self.in_flight)
        self.release.wait(30)
        with self.lock:
            type(self).in_flight -= 1
        body = b'{"outcome": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_classification_worker_holds_as_many_requests_as_its_replica_would() -> None:
    """IMAGE_INFLIGHT requests at once (max_inflight in stack.yml), so photos download and answer
    while another is classified; more wait in the gateway for a free slot (up to its slot wait)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowWorker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    worker = Worker(0, server.server_address[1], function_dir=IMAGE_FUNCTION_DIR)
    worker.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # alive, like a worker
    function = Function("image-classification", [worker], timeout_s=60, inflight=IMAGE_INFLIGHT, slot_wait_s=15)
    function.add_slots(worker)
    app = create_app(Gateway([function]))
    statuses: list[int] = []

    def invoke() -> None:
        response = app.test_client().post("/function/image-classification", json={"bucket": "b", "key": "k"})
        statuses.append(response.status_code)

    callers = [threading.Thread(target=invoke) for _ in range(IMAGE_INFLIGHT + 2)]
    try:
        for caller in callers:
            caller.start()
        assert wait_for(lambda: _SlowWorker.in_flight == IMAGE_INFLIGHT, 10)
    finally:
        _SlowWorker.release.set()
        for caller in callers:
            caller.join(30)
        server.shutdown()
        worker.process.kill()
        worker.process.wait()
    assert statuses == [200] * (IMAGE_INFLIGHT + 2)
    assert _SlowWorker.most == IMAGE_INFLIGHT


def test_no_free_slot_within_the_wait_is_429_as_of_watchdog_answers() -> None:
    """Past max_inflight of-watchdog answers 429 at once; the runner waits a moment for a slot,
    then answers the same, so the caller retries instead of timing out on a queued request."""
    _SlowWorker.release.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowWorker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    worker = Worker(0, server.server_address[1])
    worker.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    worker.ready = True
    function = Function("face-recognition", [worker], timeout_s=60, inflight=1, slot_wait_s=0.2)
    function.add_slots(worker)
    client = create_app(Gateway([function])).test_client()
    first: list[int] = []

    def hold_the_slot() -> None:
        first.append(client.post("/function/face-recognition", json={"bucket": "b", "key": "a"}).status_code)

    holder = threading.Thread(target=hold_the_slot)
    try:
        holder.start()
        assert wait_for(lambda: _SlowWorker.in_flight == 1, 10)
        refused = client.post("/function/face-recognition", json={"bucket": "b", "key": "b"})
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "1"
        assert refused.get_data(as_text=True) == "Concurrent request limit exceeded. Max concurrent requests: 1\n"
    finally:
        _SlowWorker.release.set()
        holder.join(30)
        server.shutdown()
        worker.process.kill()
        worker.process.wait()
    assert first == [200]


def test_the_runner_holds_what_stack_yml_lets_each_replica_hold() -> None:
    stack = yaml.safe_load((REPO_ROOT / "stack.yml").read_text())["functions"]
    assert int(stack["face-recognition"]["environment"]["max_inflight"]) == FACE_INFLIGHT
    assert int(stack["image-classification"]["environment"]["max_inflight"]) == IMAGE_INFLIGHT


def test_the_local_notifier_fills_every_slot_of_the_workers(tmp_path: Path) -> None:
    """NOTIFIER_CONCURRENCY of the local stack: each function's workers x their slots, at least
    the setting's default; the stack's settings are typed as loaded ones are."""
    stack = LocalStack(tmp_path, log=None)
    config = StackConfig(1, 2, 3, 4, 5, workers=1, known_faces="f", student_data="s", env_file="e", image_workers=2)
    save_config(config, stack.config_path)
    assert stack.settings_env()["NOTIFIER_CONCURRENCY"] == str(2 * IMAGE_INFLIGHT)
    assert stack.settings().notifier_concurrency == 2 * IMAGE_INFLIGHT
    save_config(dataclasses.replace(config, workers=2, image_workers=0), stack.config_path)
    stack = LocalStack(tmp_path, log=None)
    assert stack.settings().notifier_concurrency == max(Settings().notifier_concurrency, 2 * FACE_INFLIGHT)
