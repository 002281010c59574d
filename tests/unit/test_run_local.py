"""The local function runner: it gives up, with a non-zero exit, when its workers cannot start;
it serves the OpenFaaS gateway's metrics; each worker serves its own on a port of its own."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from facepipe_tools import metrics_client
from facepipe_tools.function_runner import Gateway, Worker, create_app, worker_metrics_ports
from facepipe_tools.stack import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_runner_stops_when_workers_cannot_start(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text(f"KNOWN_FACES={tmp_path / 'missing.json'}\n")
    env = {**os.environ, "FACEPIPE_ENV_FILE": str(env_file), "SECRETS_DIR": str(tmp_path)}
    env.pop("KNOWN_FACES", None)
    done = subprocess.run(
        [sys.executable, "facepipe_tools/function_runner.py", "--port", str(free_port()), "--workers", "1",
         "--worker-base-port", str(free_port())],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "cannot read known faces" in output
    assert "cannot start" in output
    assert "Traceback" not in output


def test_gateway_serves_the_openfaas_gateway_metrics() -> None:
    """Named and labelled as upstream's (openfaas/faas gateway/metrics/metrics.go): the replicas,
    and every invocation by status, including the answers the gateway makes itself."""
    gateway = Gateway([Worker(0, free_port()), Worker(1, free_port())], "face-recognition", timeout_s=0.1)
    client = create_app(gateway).test_client()
    assert client.post("/function/face-recognition", json={"bucket": "b", "key": "k"}).status_code == 503
    assert client.post("/function/other").status_code == 404
    samples = metrics_client.parse(client.get("/metrics").get_data(as_text=True))
    name = {"function_name": "face-recognition.openfaas-fn"}
    assert samples.value("gateway_service_count", **name) == 2
    counts = samples.by_label("gateway_function_invocation_total", "code")
    assert counts == {"200": 0.0, "502": 0.0, "503": 1.0, "504": 0.0}
    assert samples.value("gateway_functions_seconds_count", code="503", **name) == 1
    assert samples.value("gateway_functions_seconds_bucket", code="503", le="+Inf", **name) == 1


def test_each_worker_serves_its_metrics_on_a_port_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_PORT", "8082")  # one port for every worker would fail all but one
    ports = worker_metrics_ports(21000, 3)
    assert ports == [21003, 21004, 21005]
    workers = [Worker(n, 21000 + n, metrics_port=port) for n, port in enumerate(ports)]
    assert [worker.env()["METRICS_PORT"] for worker in workers] == ["21003", "21004", "21005"]
    assert [worker.env()["PORT"] for worker in workers] == ["21000", "21001", "21002"]
