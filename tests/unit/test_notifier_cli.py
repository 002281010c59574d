"""The notifier's real entry point (notifier/notification.py) as a process: waitress, the
reconciler at start, JSON logs, SIGTERM; S3 is a moto server over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import requests

from facepipe import answers
from facepipe.notifier.listener import MAX_BODY_BYTES
from facepipe_tools.polling import wait_for
from facepipe_tools.stack import free_port
from tests.unit.notifierfake import FACES, IMAGES, TOKEN, record

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(REPO / "notifier" / "notification.py")


def base_env(tmp_path: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in ("LOG_FORMAT", "LOG_LEVEL")}
    return {**env, "FACEPIPE_ENV_FILE": str(tmp_path / "none.env"), "SECRETS_DIR": str(tmp_path)}


def log_records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=1).status_code == 200
    except requests.ConnectionError:
        return False


def test_serve_end_to_end_and_sigterm(moto_endpoint, gateway, tmp_path):
    """Both routes, derived from the bucket settings: videos to the face function, images to
    the classification function, by event and by the reconciler at start."""
    suffix = uuid.uuid4().hex[:10]
    inputs, outputs = f"in-{suffix}", f"out-{suffix}"
    images, labels = f"img-in-{suffix}", f"img-out-{suffix}"
    s3 = boto3.client(
        "s3", endpoint_url=moto_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
        region_name="us-east-1",
    )  # fmt: skip
    for bucket in (inputs, outputs, images, labels):
        s3.create_bucket(Bucket=bucket)
    port = free_port()
    env = {
        **base_env(tmp_path),
        "S3_ENDPOINT_URL": moto_endpoint,
        "S3_ACCESS_KEY_ID": "testing",
        "S3_SECRET_ACCESS_KEY": "testing",
        "INPUT_BUCKET": inputs,
        "OUTPUT_BUCKET": outputs,
        "IMAGE_INPUT_BUCKET": images,
        "IMAGE_OUTPUT_BUCKET": labels,
        "OPENFAAS_GATEWAY": gateway.url,
        "NOTIFY_TOKEN": TOKEN,
        "RECONCILE_INTERVAL_S": "60",
    }
    s3.put_object(Bucket=inputs, Key="before start.mp4", Body=b"x")
    s3.put_object(Bucket=images, Key="before start.jpg", Body=b"x")
    answered_in = {inputs: outputs, images: labels}
    gateway.on_ok = lambda body: s3.put_object(
        Bucket=answered_in[body["bucket"]], Key=answers.result_key(body["key"]), Body=b"answer\n"
    )
    log_path = tmp_path / "notifier.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, SCRIPT, "serve", "--port", str(port)], env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _healthy(url) or process.poll() is not None, 20) and process.poll() is None, (
            log_path.read_text()
        )
        events = [record(inputs, "by event.mp4"), record(images, "by event.jpg"), record(outputs, "x.csv")]
        response = requests.post(url + "/", json={"Records": events}, timeout=10)
        assert response.status_code == 200, response.text
        assert response.json() == {"accepted": 2, "ignored": 1, "duplicate": 0, "rejected": 0}
        expected = sorted(
            [
                (FACES, "before start.mp4"),
                (FACES, "by event.mp4"),
                (IMAGES, "before start.jpg"),
                (IMAGES, "by event.jpg"),
            ]
        )
        assert wait_for(lambda: sorted(gateway.invoked) == expected, 10), gateway.invoked
        big = requests.post(url + "/", data=b"x" * (MAX_BODY_BYTES + 10), timeout=10)
        assert big.status_code == 413 and b"Traceback" not in big.content
        metrics = requests.get(url + "/metrics", timeout=5).text
        # The reconciler's two listings per route at start; the events added no request (no HEAD, no LIST).
        assert 'facepipe_s3_requests_total{caller="reconciler",operation="ListObjectsV2"} 4.0' in metrics
        assert f'facerec_notifier_invocations_total{{function="{IMAGES}",outcome="ok"}} 2.0' in metrics
        assert "HeadObject" not in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    records = log_records(log_path.read_text())
    invoked = {r["key"]: r for r in records if r["event"] == "invoked"}
    assert invoked["by event.mp4"]["outcome"] == "ok" and invoked["by event.mp4"]["source"] == "event"
    assert invoked["before start.mp4"]["outcome"] == "ok" and invoked["before start.mp4"]["source"] == "reconcile"
    assert invoked["by event.jpg"]["function"] == IMAGES and invoked["by event.mp4"]["function"] == FACES
    assert invoked["by event.mp4"]["attempts"] == 1 and invoked["by event.mp4"]["logger"] == "facepipe.notifier"
    assert {"event": "stopped", "outcome": "clean"}.items() <= records[-1].items()


def test_bad_settings_exit_2_with_a_log_record(tmp_path):
    env = {name: value for name, value in base_env(tmp_path).items() if name != "NOTIFY_TOKEN"}
    done = subprocess.run(
        [sys.executable, SCRIPT, "--log-level", "WARNING", "serve"], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = log_records(done.stdout)
    assert (line["event"], line["level"], line["outcome"]) == ("bad settings", "error", "failed")
    assert "NOTIFY_TOKEN" in line["detail"]
