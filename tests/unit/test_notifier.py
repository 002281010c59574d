"""Notifier: HTTP front (Flask test client), queue, invoker (real local HTTP gateway), reconciler.

S3 is a moto server over real HTTP, so HEAD 404s, listings and URL encoding behave as on the wire.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote_plus

import boto3
import pytest
import requests
from botocore.config import Config
from moto.server import ThreadedMotoServer

from facepipe import answers
from facepipe.notifier import core as notifier_core
from facepipe.notifier.core import (
    MAX_BODY_BYTES,
    Backoff,
    Invoker,
    Job,
    Notifier,
    create_app,
    disable_notifications,
    setup_notifications,
)
from facepipe.settings import Settings, SettingsError

REPO = Path(__file__).resolve().parents[2]
TOKEN = "t0ken-for-tests"
FAST = Backoff(base_s=0.01, max_s=0.05)


@pytest.fixture(scope="module")
def moto_url():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


class Gateway:
    """A stand-in for the OpenFaaS gateway: scripted status codes per key, records every call."""

    def __init__(self, function: str = "face-recognition"):
        self.function = function
        self.script: dict[str, list[int]] = {}
        self.delay_s = 0.0
        self.calls: list[dict] = []
        self.on_ok = None
        self.active: dict[str, int] = {}
        self.max_active = 0
        self.max_active_per_key = 0
        self._lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = gateway._handle(self.path, json.loads(body))
                payload = json.dumps({"error": "scripted", "detail": f"HTTP {status}"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def _handle(self, path: str, body: dict) -> int:
        if path != f"/function/{self.function}":
            return 404
        key = body["key"]
        with self._lock:
            self.calls.append(body)
            self.active[key] = self.active.get(key, 0) + 1
            self.max_active = max(self.max_active, sum(self.active.values()))
            self.max_active_per_key = max(self.max_active_per_key, self.active[key])
            statuses = self.script.get(key, [200])
            status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        try:
            time.sleep(self.delay_s)
            if status == 200 and self.on_ok:
                self.on_ok(body)
        finally:
            with self._lock:
                self.active[key] -= 1
        return status

    def keys(self) -> list[str]:
        return [call["key"] for call in self.calls]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway():
    gw = Gateway()
    yield gw
    gw.close()


@pytest.fixture
def settings(moto_url, gateway) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    return Settings(
        s3_endpoint_url=moto_url,
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
        input_bucket=f"in-{suffix}",
        output_bucket=f"out-{suffix}",
        openfaas_gateway=gateway.url + "/",
        notify_token=TOKEN,
        notify_url="http://127.0.0.1:8090/",
        notifier_concurrency=2,
        invoke_attempts=3,
        invoke_timeout_s=2.0,
        reconcile_interval_s=0.0,
    )


@pytest.fixture
def s3(settings):
    client = boto3.client(
        "s3", endpoint_url=settings.s3_endpoint_url, aws_access_key_id="testing",
        aws_secret_access_key="testing", region_name="us-east-1",
    )
    client.create_bucket(Bucket=settings.input_bucket)
    client.create_bucket(Bucket=settings.output_bucket)
    return client


@pytest.fixture
def notifier(settings, s3):
    instance = Notifier(settings, s3=s3, backoff=FAST)
    yield instance
    instance.stop(grace_s=2)


@pytest.fixture
def client(notifier):
    return create_app(notifier).test_client()


def record(
    bucket: str, key: str, *, token: str | None = TOKEN, event: str = "ObjectCreated:Put", etag="abc", source="ceph:s3"
):
    """A record as Ceph RGW sends it (key verbatim); with source="aws:s3", as AWS does (key URL-encoded)."""
    sent_key = key if source == "ceph:s3" else quote_plus(key, safe="/")
    entry = {
        "eventVersion": "2.2",
        "eventSource": source,
        "eventName": event,
        "s3": {"bucket": {"name": bucket}, "object": {"key": sent_key, "size": 3, "eTag": etag}},
    }
    if token is not None:
        entry["opaqueData"] = token
    return entry


def metric(client, name: str, labels: str = "") -> float:
    text = client.get("/metrics").get_data(as_text=True)
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{wanted} not in /metrics:\n{text}")


def eventually(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# Authentication and malformed requests ---------------------------------------------------------


def test_record_without_token_is_401_and_nothing_is_queued(client, notifier, settings, s3, gateway):
    s3.put_object(Bucket=settings.input_bucket, Key="a.mp4", Body=b"abc")
    body = {"Records": [record(settings.input_bucket, "a.mp4"), record(settings.input_bucket, "a.mp4", token=None)]}
    response = client.post("/", json=body)
    assert response.status_code == 401
    assert "opaqueData" in response.get_json()["error"]
    assert notifier.pending() == 0
    assert metric(client, "facerec_notifier_events_total", 'outcome="rejected"') == 1
    assert metric(client, "facerec_notifier_events_total", 'outcome="accepted"') == 0


@pytest.mark.parametrize("token", ["wrong", "t0ken-for-test", TOKEN + "x", "é-unicode", 12345])
def test_wrong_token_is_403(client, notifier, settings, s3, token):
    s3.put_object(Bucket=settings.input_bucket, Key="a.mp4", Body=b"abc")
    response = client.post("/", json={"Records": [record(settings.input_bucket, "a.mp4", token=token)]})
    assert response.status_code == 403
    assert notifier.pending() == 0


def test_token_is_compared_in_constant_time(client, settings, s3, monkeypatch):
    compared = []
    real = notifier_core.hmac.compare_digest
    monkeypatch.setattr(notifier_core.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    client.post("/", json={"Records": [record(settings.input_bucket, "a.mp4", token="nope")]})
    assert compared == [(b"nope", TOKEN.encode())]


def test_unset_token_rejects_everything(moto_url, settings, s3):
    open_notifier = Notifier(replace(settings, notify_token=None), s3=s3)
    response = create_app(open_notifier).test_client().post(
        "/", json={"Records": [record(settings.input_bucket, "a.mp4", token="")]}
    )
    assert response.status_code == 401
    response = create_app(open_notifier).test_client().post(
        "/", json={"Records": [record(settings.input_bucket, "a.mp4", token="anything")]}
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe\x00garbage",
        b"[" * 100_000,
        b'{"Records": "nope"}',
        b'{"Records": [{"s3": {}}]}',
        b"[]",
        b"",
    ],
)
def test_malformed_body_is_400_with_json_error(client, notifier, body):
    response = client.post("/", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.is_json and response.get_json()["error"]
    assert b"Traceback" not in response.data
    assert notifier.pending() == 0


def test_oversized_body_is_413(client, notifier, settings):
    huge = {"Records": [record(settings.input_bucket, "a.mp4")], "pad": "x" * MAX_BODY_BYTES}
    response = client.post("/", data=json.dumps(huge), content_type="application/json")
    assert response.status_code == 413
    assert response.is_json
    assert notifier.pending() == 0


def test_other_methods_and_paths_answer_json(client):
    assert client.get("/").status_code == 405
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.is_json


def test_unexpected_error_is_500_without_traceback(client, notifier, settings, monkeypatch):
    def boom(events):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(notifier, "handle_events", boom)
    response = client.post("/", json={"Records": [record(settings.input_bucket, "a.mp4")]})
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal error"}
    assert b"secret internals" not in response.data


# Filtering ---------------------------------------------------------------------------------------


def test_filters_other_buckets_non_create_events_and_missing_objects(client, notifier, settings, s3, gateway):
    s3.put_object(Bucket=settings.input_bucket, Key="ok.mp4", Body=b"abc")
    records = [
        record("someone-elses-bucket", "ok.mp4"),
        record(settings.input_bucket, "ok.mp4", event="ObjectCreated:Post"),
        record(settings.input_bucket, "ok.mp4", event="s3:ObjectCreated:Post"),
        record(settings.input_bucket, "ok.mp4", event="ObjectRemoved:Delete"),
        record(settings.input_bucket, "gone.mp4"),
        record(settings.input_bucket, "folder/"),
        record(settings.input_bucket, "ok.mp4"),
    ]
    response = client.post("/", json={"Records": records})
    assert response.status_code == 200
    assert response.get_json() == {"accepted": 1, "ignored": 6, "duplicate": 0, "rejected": 0}
    assert metric(client, "facerec_notifier_events_total", 'outcome="ignored"') == 6
    notifier.start(reconcile=False)
    assert notifier.wait_idle(5)
    assert gateway.keys() == ["ok.mp4"]


@pytest.mark.parametrize(
    ("key", "event", "source"),
    [
        ("plain.mp4", "ObjectCreated:Put", "ceph:s3"),
        ("with space.mp4", "s3:ObjectCreated:Put", "ceph:s3"),
        ("ünïcødé 名前.mov", "ObjectCreated:CompleteMultipartUpload", "ceph:s3"),
        ("a+b%20c &=?.mp4", "ObjectCreated:Put", "ceph:s3"),
        ("a+b%20c &=?.mp4", "ObjectCreated:Put", "aws:s3"),
        ("dir/ü x+y.mp4", "ObjectCreated:CompleteMultipartUpload", "aws:s3"),
        ("../up/x.mp4", "ObjectCreated:Copy", "ceph:s3"),
    ],
)
def test_odd_keys_reach_the_function_unchanged(client, notifier, settings, s3, gateway, key, event, source):
    s3.put_object(Bucket=settings.input_bucket, Key=key, Body=b"abc")
    body = {"Records": [record(settings.input_bucket, key, event=event, source=source)]}
    response = client.post("/", json=body)
    assert response.get_json()["accepted"] == 1
    notifier.start(reconcile=False)
    assert notifier.wait_idle(5)
    assert gateway.calls == [{"bucket": settings.input_bucket, "key": key}]


# Dedupe, concurrency, re-runs ------------------------------------------------------------------


def test_duplicate_deliveries_invoke_once(client, notifier, settings, s3, gateway):
    s3.put_object(Bucket=settings.input_bucket, Key="a.mp4", Body=b"abc")
    gateway.delay_s = 0.3
    body = {"Records": [record(settings.input_bucket, "a.mp4")]}
    assert client.post("/", json=body).get_json()["accepted"] == 1
    notifier.start(reconcile=False)
    for _ in range(4):
        assert client.post("/", json=body).get_json()["duplicate"] == 1
    assert notifier.wait_idle(5)
    assert gateway.keys() == ["a.mp4"]
    assert metric(client, "facerec_notifier_events_total", 'outcome="duplicate"') == 4


def test_redelivery_after_success_is_skipped_when_the_result_is_there(client, notifier, settings, s3, gateway):
    s3.put_object(Bucket=settings.input_bucket, Key="a.mp4", Body=b"abc")
    gateway.on_ok = lambda body: s3.put_object(Bucket=settings.output_bucket, Key="a.csv", Body=b"name,major,year\n")
    notifier.start(reconcile=False)
    body = {"Records": [record(settings.input_bucket, "a.mp4")]}
    for _ in range(3):
        assert client.post("/", json=body).status_code == 200
        assert notifier.wait_idle(5)
    assert gateway.keys() == ["a.mp4"]
    assert metric(client, "facerec_notifier_skipped_total") == 2


def test_answer_to_another_version_is_not_taken_even_within_the_same_second(client, notifier, settings, s3, gateway):
    etag = s3.put_object(Bucket=settings.input_bucket, Key="a.mp4", Body=b"new version")["ETag"].strip('"')
    s3.put_object(Bucket=settings.output_bucket, Key="a.error.json", Body=b'{"error": "empty"}',
                  Metadata={"source-etag": "etag-of-the-old-version"})  # fmt: skip
    gateway.on_ok = lambda body: s3.put_object(
        Bucket=settings.output_bucket, Key="a.csv", Body=b"name,major,year\n", Metadata={"source-etag": etag}
    )
    notifier.start(reconcile=False)
    body = {"Records": [record(settings.input_bucket, "a.mp4")]}
    for _ in range(2):
        assert client.post("/", json=body).status_code == 200
        assert notifier.wait_idle(5)
    assert gateway.keys() == ["a.mp4"]  # invoked for the new version once, then its own answer is found
    assert metric(client, "facerec_notifier_skipped_total") == 1


def test_new_version_while_running_is_processed_after_not_alongside(notifier, settings, s3, gateway):
    gateway.delay_s = 0.3
    # The first run's result is written after the new version was uploaded: newer, yet stale.
    gateway.on_ok = lambda body: s3.put_object(Bucket=settings.output_bucket, Key="a.csv", Body=b"name,major,year\n")
    uploaded = datetime.now(UTC) - timedelta(seconds=10)
    s3.put_object(Bucket=settings.input_bucket, Key="a.mp4", Body=b"v1")
    notifier.start(reconcile=False)
    assert notifier.submit(Job(settings.input_bucket, "a.mp4", "etag-1", uploaded)) == "accepted"
    assert eventually(lambda: gateway.calls)
    assert notifier.submit(Job(settings.input_bucket, "a.mp4", "etag-1", uploaded)) == "duplicate"
    assert notifier.submit(Job(settings.input_bucket, "a.mp4", "etag-2", uploaded)) == "accepted"
    assert notifier.submit(Job(settings.input_bucket, "a.mp4", "etag-2", uploaded)) == "duplicate"
    assert notifier.wait_idle(5)
    assert gateway.keys() == ["a.mp4", "a.mp4"]
    assert gateway.max_active_per_key == 1


def test_concurrency_is_bounded(notifier, settings, s3, gateway):
    gateway.delay_s = 0.15
    for index in range(6):
        notifier.submit(Job(settings.input_bucket, f"v{index}.mp4"))
    notifier.start(reconcile=False)
    assert notifier.wait_idle(5)
    assert sorted(gateway.keys()) == [f"v{index}.mp4" for index in range(6)]
    assert gateway.max_active == settings.notifier_concurrency


def test_backlog_and_inflight_gauges(client, notifier, settings, gateway):
    gateway.delay_s = 0.3
    for index in range(3):
        notifier.submit(Job(settings.input_bucket, f"v{index}.mp4"))
    assert metric(client, "facerec_notifier_backlog") == 3
    notifier.start(reconcile=False)
    assert eventually(lambda: metric(client, "facerec_notifier_inflight") == 2)
    assert notifier.wait_idle(5)
    assert metric(client, "facerec_notifier_backlog") == 0
    assert metric(client, "facerec_notifier_inflight") == 0


def test_full_backlog_answers_503(settings, s3):
    small = Notifier(settings, s3=s3, max_backlog=1)
    s3.put_object(Bucket=settings.input_bucket, Key="a.mp4", Body=b"a")
    s3.put_object(Bucket=settings.input_bucket, Key="b.mp4", Body=b"b")
    app = create_app(small).test_client()
    assert app.post("/", json={"Records": [record(settings.input_bucket, "a.mp4")]}).status_code == 200
    response = app.post("/", json={"Records": [record(settings.input_bucket, "b.mp4")]})
    assert response.status_code == 503
    assert response.get_json()["rejected"] == 1


# Invoker: outcomes, retries, backoff -------------------------------------------------------------


def invoker_for(settings, **changes) -> Invoker:
    return Invoker(replace(settings, **changes), FAST)


@pytest.mark.parametrize("statuses", [[503, 502, 200], [429, 200], [408, 500, 200]])
def test_transient_failures_are_retried(settings, gateway, statuses):
    gateway.script["a.mp4"] = list(statuses)
    result = invoker_for(settings, invoke_attempts=5).invoke(settings.input_bucket, "a.mp4")
    assert (result.outcome, result.attempts, result.status) == ("ok", len(statuses), 200)
    assert len(gateway.calls) == len(statuses)


@pytest.mark.parametrize("status", [400, 404, 413, 415, 422])
def test_client_errors_are_final(settings, gateway, status):
    gateway.script["bad.mp4"] = [status]
    result = invoker_for(settings).invoke(settings.input_bucket, "bad.mp4")
    assert (result.outcome, result.attempts, result.status) == ("client_error", 1, status)
    assert "scripted" in result.detail
    assert len(gateway.calls) == 1


def test_client_error_detail_is_the_functions_message(settings):
    def body_for(payload: dict) -> str:
        response = requests.Response()
        response._content = json.dumps(payload).encode()
        return notifier_core._excerpt(response)

    record = {"key": "a.mp4", "error": "unreadable", "detail": "moov atom\nnot found"}
    assert body_for({"error": record, "output_key": "a.error.json"}) == "unreadable: moov atom not found"
    assert body_for({"error": "missing field(s): key"}) == "missing field(s): key"
    response = requests.Response()
    response._content = b"<html>" + b"x" * 1000
    assert notifier_core._excerpt(response).endswith("...") and len(notifier_core._excerpt(response)) == 303


def test_gives_up_after_the_configured_attempts(settings, gateway):
    gateway.script["a.mp4"] = [500]
    result = invoker_for(settings, invoke_attempts=4).invoke(settings.input_bucket, "a.mp4")
    assert (result.outcome, result.attempts, result.status) == ("failed", 4, 500)
    assert len(gateway.calls) == 4


def test_timeout_is_retried(settings, gateway):
    gateway.delay_s = 0.5
    result = invoker_for(settings, invoke_attempts=2, invoke_timeout_s=0.1).invoke(settings.input_bucket, "a.mp4")
    assert result.outcome == "failed"
    assert result.attempts == 2
    assert "no answer within" in result.detail


def test_connection_refused_is_retried(settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    invoker = invoker_for(settings, openfaas_gateway=f"http://127.0.0.1:{port}", invoke_attempts=3)
    result = invoker.invoke(settings.input_bucket, "a.mp4")
    assert (result.outcome, result.attempts, result.status) == ("failed", 3, None)
    assert "ConnectionError" in result.detail


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
    import random

    backoff = Backoff(base_s=1.0, max_s=8.0)
    rng = random.Random(1)
    for retry, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 8), (10, 8)]:
        delays = {backoff.delay(retry, rng) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1


def test_retry_after_header_is_honoured(settings):
    waits = []

    class Stop(threading.Event):
        def wait(self, timeout=None):
            waits.append(timeout)
            return False

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(429 if not waits else 200)
            self.send_header("Retry-After", "3")
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        invoker = Invoker(
            replace(settings, openfaas_gateway=f"http://127.0.0.1:{server.server_address[1]}"),
            Backoff(0.01, 10.0), stop=Stop(),
        )
        assert invoker.invoke("in", "a.mp4").outcome == "ok"
    finally:
        server.shutdown()
        server.server_close()
    assert waits == [3.0]


def test_worker_metrics_and_log_line(client, notifier, settings, gateway, caplog):
    gateway.script.update({"ok.mp4": [503, 200], "bad.mp4": [400], "down.mp4": [500]})
    for key in ("ok.mp4", "bad.mp4", "down.mp4"):
        notifier.submit(Job(settings.input_bucket, key))
    with caplog.at_level("INFO", logger="facepipe.notifier"):
        notifier.start(reconcile=False)
        assert notifier.wait_idle(5)
    assert metric(client, "facerec_notifier_invocations_total", 'outcome="ok"') == 1
    assert metric(client, "facerec_notifier_invocations_total", 'outcome="client_error"') == 1
    assert metric(client, "facerec_notifier_invocations_total", 'outcome="failed"') == 1
    assert metric(client, "facerec_notifier_retries_total") == 1 + (settings.invoke_attempts - 1)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("invoked ")]
    assert len(lines) == 3
    ok_line = next(line for line in lines if "'ok.mp4'" in line)
    assert "outcome=ok attempts=2" in ok_line and "seconds=" in ok_line
    failed = next(r for r in caplog.records if "'down.mp4'" in r.getMessage() and "invoked" in r.getMessage())
    assert failed.levelname == "ERROR" and "attempts=3" in failed.getMessage()


def test_stop_interrupts_backoff(settings, s3, gateway):
    gateway.script["a.mp4"] = [503]
    slow = Notifier(replace(settings, invoke_attempts=10), s3=s3, backoff=Backoff(5.0, 5.0))
    slow.submit(Job(settings.input_bucket, "a.mp4"))
    slow.start(reconcile=False)
    assert eventually(lambda: len(gateway.calls) == 1)
    started = time.monotonic()
    slow.stop(grace_s=3)
    assert time.monotonic() - started < 1.0
    assert len(gateway.calls) == 1


# Reconciler --------------------------------------------------------------------------------------


def test_reconciler_queues_every_unanswered_object(notifier, settings, s3, gateway):
    for key in ("a.mp4", "b.mp4", "c.mp4", "notes.txt", "dir/d.mp4"):
        s3.put_object(Bucket=settings.input_bucket, Key=key, Body=b"x")
    s3.put_object(Bucket=settings.input_bucket, Key="folder/", Body=b"")
    s3.put_object(Bucket=settings.output_bucket, Key="b.csv", Body=b"name,major,year\n")
    s3.put_object(Bucket=settings.output_bucket, Key="c.error.json", Body=b'{"error": "x"}')
    gateway.on_ok = lambda body: s3.put_object(
        Bucket=settings.output_bucket, Key=answers.result_key(body["key"]), Body=b"name,major,year\n"
    )
    assert notifier.reconcile_once() == 3
    notifier.start(reconcile=False)
    assert notifier.wait_idle(5)
    assert sorted(gateway.keys()) == ["a.mp4", "dir/d.mp4", "notes.txt"]
    assert notifier.reconcile_once() == 0
    assert sorted(gateway.keys()) == ["a.mp4", "dir/d.mp4", "notes.txt"]


def test_reconciler_paginates(notifier, settings, s3, monkeypatch):
    monkeypatch.setattr(notifier_core, "LIST_PAGE_SIZE", 2)
    for index in range(7):
        s3.put_object(Bucket=settings.input_bucket, Key=f"v{index}.mp4", Body=b"")
        s3.put_object(Bucket=settings.output_bucket, Key=f"v{index}.csv" if index < 3 else "x", Body=b"")
    calls = []
    real = s3.list_objects_v2
    monkeypatch.setattr(s3, "list_objects_v2", lambda **kw: calls.append(kw) or real(**kw), raising=False)
    assert notifier.reconcile_once() == 4
    assert len(calls) >= 4 + 2


class FakeListing:
    """Just enough S3 for the reconciler: listings with chosen LastModified times."""

    def __init__(self, buckets: dict[str, dict[str, datetime]]):
        self.buckets = buckets

    def get_paginator(self, name):
        assert name == "list_objects_v2"
        return self

    def paginate(self, Bucket, PaginationConfig=None):
        yield {"Contents": [{"Key": k, "LastModified": t, "ETag": '"e"'} for k, t in self.buckets[Bucket].items()]}


def test_reconciler_requeues_results_older_than_their_input(settings):
    now = datetime(2026, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC)
    fake = FakeListing(
        {
            settings.input_bucket: {"stale.mp4": now, "fresh.mp4": now, "same.mp4": now, "err.mp4": now},
            settings.output_bucket: {
                "stale.csv": now - timedelta(seconds=5),
                "fresh.csv": now + timedelta(seconds=1),
                "same.csv": now,
                "err.error.json": now - timedelta(seconds=1),
                "err.csv": now + timedelta(seconds=2),
            },
        }
    )
    notifier = Notifier(settings, s3=fake)
    assert notifier.reconcile_once() == 1
    assert list(notifier._jobs) == [(settings.input_bucket, "stale.mp4")]


def test_reconciler_loop_survives_an_unreachable_endpoint(settings, caplog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id="x", aws_secret_access_key="x",
        region_name="us-east-1", config=Config(retries={"max_attempts": 1}),
    )
    notifier = Notifier(replace(settings, reconcile_interval_s=0.05), s3=unreachable)
    with caplog.at_level("WARNING", logger="facepipe.notifier"):
        notifier.start()
        assert eventually(
            lambda: any("reconcile failed (EndpointConnectionError" in r.getMessage() for r in caplog.records)
        )
        notifier.stop(grace_s=1)


# Health, metrics ---------------------------------------------------------------------------------


def test_healthz_and_metric_names(client):
    assert client.get("/healthz").get_json()["status"] == "ok"
    text = client.get("/metrics").get_data(as_text=True)
    for name in (
        'facerec_notifier_events_total{outcome="accepted"}',
        'facerec_notifier_events_total{outcome="rejected"}',
        'facerec_notifier_events_total{outcome="ignored"}',
        'facerec_notifier_events_total{outcome="duplicate"}',
        "facerec_notifier_backlog ",
        "facerec_notifier_inflight ",
        'facerec_notifier_invocations_total{outcome="ok"}',
        'facerec_notifier_invocations_total{outcome="client_error"}',
        'facerec_notifier_invocations_total{outcome="failed"}',
        "facerec_notifier_retries_total ",
        "facerec_notifier_reconciled_total ",
    ):
        assert name in text


# Set-up ------------------------------------------------------------------------------------------


class RecordingSNS:
    def __init__(self):
        self.calls = []

    def create_topic(self, **kwargs):
        self.calls.append(kwargs)
        return {"TopicArn": f"arn:aws:sns:us-east-1:123456789012:{kwargs['Name']}"}


def test_setup_is_idempotent(settings, moto_url):
    s3 = boto3.client(
        "s3", endpoint_url=moto_url, aws_access_key_id="testing", aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    sns = RecordingSNS()
    persistent = replace(settings, persistent_notifications=True)
    first = setup_notifications(persistent, s3=s3, sns=sns)
    second = setup_notifications(persistent, s3=s3, sns=sns)
    assert sorted(first["created_buckets"]) == sorted([settings.input_bucket, settings.output_bucket])
    assert second["created_buckets"] == []
    assert sns.calls[0] == {
        "Name": settings.topic_name,
        "Attributes": {"push-endpoint": settings.notify_url, "OpaqueData": TOKEN, "persistent": "true"},
    }
    config = s3.get_bucket_notification_configuration(Bucket=settings.input_bucket)
    assert config["TopicConfigurations"] == [
        {"Id": settings.topic_name, "TopicArn": first["topic_arn"], "Events": ["s3:ObjectCreated:*"]}
    ]
    disable_notifications(settings, s3=s3)
    assert "TopicConfigurations" not in s3.get_bucket_notification_configuration(Bucket=settings.input_bucket)


def test_setup_refuses_missing_token_and_same_buckets(settings):
    with pytest.raises(SettingsError, match="NOTIFY_TOKEN"):
        setup_notifications(replace(settings, notify_token=None), s3=object(), sns=object())
    with pytest.raises(SettingsError, match="must differ"):
        setup_notifications(replace(settings, output_bucket=settings.input_bucket), s3=object(), sns=object())


# The real entry point: waitress, SIGTERM ---------------------------------------------------------


def test_serve_entry_point_end_to_end_and_sigterm(settings, s3, gateway, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "FACEPIPE_ENV_FILE": str(tmp_path / "none.env"),
        "SECRETS_DIR": str(tmp_path),
        "S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "S3_ACCESS_KEY_ID": "testing",
        "S3_SECRET_ACCESS_KEY": "testing",
        "INPUT_BUCKET": settings.input_bucket,
        "OUTPUT_BUCKET": settings.output_bucket,
        "OPENFAAS_GATEWAY": gateway.url,
        "NOTIFY_TOKEN": TOKEN,
        "RECONCILE_INTERVAL_S": "60",
    }
    s3.put_object(Bucket=settings.input_bucket, Key="before start.mp4", Body=b"x")
    s3.put_object(Bucket=settings.input_bucket, Key="by event.mp4", Body=b"y")
    gateway.on_ok = lambda body: s3.put_object(
        Bucket=settings.output_bucket, Key=answers.result_key(body["key"]), Body=b"name,major,year\n"
    )
    log_path = tmp_path / "notifier.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "notifier" / "notification.py"), "serve", "--port", str(port)],
            env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )

    def output() -> str:
        return log_path.read_text()

    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, output()
            time.sleep(0.1)
        body = {"Records": [record(settings.input_bucket, "by event.mp4")]}
        response = requests.post(url + "/", json=body, timeout=10)
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 10
        while sorted(gateway.keys()) != ["before start.mp4", "by event.mp4"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(gateway.keys()) == ["before start.mp4", "by event.mp4"], output()
        big = requests.post(url + "/", data=b"x" * (MAX_BODY_BYTES + 10), timeout=10)
        assert big.status_code == 413 and b"Traceback" not in big.content
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0, output()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "invoked key='by event.mp4' outcome=ok attempts=1" in output()
    assert "invoked key='before start.mp4' outcome=ok attempts=1 " in output()
    assert "source=reconcile" in output()
    assert "stopped cleanly" in output()
