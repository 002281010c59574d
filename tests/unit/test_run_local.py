"""The local function runner: it gives up, with a non-zero exit, when its workers cannot start;
it serves both functions and the OpenFaaS gateway's metrics for each; each worker serves its own
on a port of its own."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from facepipe_tools import metrics_client
from facepipe_tools.function_runner import (
    IMAGE_FUNCTION_DIR,
    Function,
    Gateway,
    Worker,
    WorkerPorts,
    create_app,
    worker_metrics_ports,
    worker_ports,
)
from facepipe_tools.stack import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPECTED = ("200", "502", "503", "504")


def test_runner_stops_when_workers_cannot_start(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text(f"KNOWN_FACES={tmp_path / 'missing.json'}\n")
    env = {**os.environ, "FACEPIPE_ENV_FILE": str(env_file), "SECRETS_DIR": str(tmp_path)}
    env.pop("KNOWN_FACES", None)
    done = subprocess.run(
        [sys.executable, "facepipe_tools/function_runner.py", "--port", str(free_port()), "--workers", "1",
         "--image-workers", "0", "--worker-base-port", str(free_port())],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "cannot read known faces" in output
    assert "cannot start" in output
    assert "Traceback" not in output


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
