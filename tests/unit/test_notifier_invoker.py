"""Notifier invoker: outcomes, retries and backoff against a stand-in gateway over real HTTP."""

from __future__ import annotations

import json
import random
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from facepipe.notifier.invoker import Backoff, Invoker, error_detail
from facepipe_tools.stack import free_port
from tests.unit.notifierfake import FACES, FAST, IMAGES, TWO_ROUTES


def invoker_for(settings, **changes) -> Invoker:
    return Invoker(replace(settings, **changes), FAST)


@pytest.mark.parametrize("statuses", [[503, 502, 200], [429, 200], [408, 500, 200]])
def test_transient_failures_are_retried(settings, gateway, statuses):
    gateway.script["a.mp4"] = list(statuses)
    result = invoker_for(settings, invoke_attempts=5).invoke("input", "a.mp4")
    assert (result.outcome, result.attempts, result.status, result.answer) == ("ok", len(statuses), 200, "ok")
    assert len(gateway.calls) == len(statuses)


def test_the_function_is_the_one_of_the_buckets_route(settings, gateway):
    invoker = invoker_for(settings, routes_table=TWO_ROUTES)
    assert invoker.urls == {
        "input": f"{gateway.url}/function/{FACES}",
        "images": f"{gateway.url}/function/{IMAGES}",
    }
    assert invoker.invoke("images", "cat.jpg").outcome == "ok"
    assert invoker.invoke("input", "a.mp4").outcome == "ok"
    assert gateway.invoked == [(IMAGES, "cat.jpg"), (FACES, "a.mp4")]
    nowhere = invoker.invoke("images-out", "cat.csv")
    assert (nowhere.outcome, nowhere.attempts, nowhere.detail) == (
        "client_error",
        0,
        "no route for bucket 'images-out'",
    )
    assert len(gateway.calls) == 2


def test_the_functions_outcome_is_read_from_its_answer(settings, gateway):
    gateway.skip.add("a.mp4")
    result = invoker_for(settings).invoke("input", "a.mp4")
    assert (result.outcome, result.answer) == ("ok", "skipped")
    assert gateway.calls == [{"bucket": "input", "key": "a.mp4"}]


def test_stopped_attempts_resume_with_the_retries_left(settings, gateway):
    """`on_failure` stops the attempts at the first counted failure (the object goes to the
    suspect lane); `resume` goes on from there: the retries left, each counted as a retry."""
    gateway.script["a.mp4"] = [502, 500, 200]
    retries: list[str] = []
    invoker = Invoker(replace(settings, invoke_attempts=3), FAST, on_retry=retries.append)
    first = invoker.invoke("input", "a.mp4", lambda reply: True)
    assert (first.outcome, first.attempts, first.gave_up, first.status) == ("failed", 1, True, 502)
    assert first.resume is not None and first.resume.attempts == 1 and first.resume.last.status == 502
    rest = invoker.invoke("input", "a.mp4", lambda reply: False, resume=first.resume)
    assert (rest.outcome, rest.attempts, rest.status) == ("ok", 3, 200)
    assert rest.seconds >= first.seconds
    assert len(gateway.calls) == 3 and retries == [FACES, FACES]
    gateway.script["b.mp4"] = [500]
    stopped = invoker.invoke("input", "b.mp4", lambda reply: True)
    last = invoker.invoke("input", "b.mp4", lambda reply: False, resume=stopped.resume)
    assert (last.outcome, last.attempts, last.gave_up) == ("failed", 3, False)


@pytest.mark.parametrize("status", [400, 404, 413, 415, 422])
def test_client_errors_are_final(settings, gateway, status):
    gateway.script["bad.mp4"] = [status]
    result = invoker_for(settings).invoke("input", "bad.mp4")
    assert (result.outcome, result.attempts, result.status) == ("client_error", 1, status)
    assert result.detail == f"scripted: HTTP {status}"
    assert len(gateway.calls) == 1


def test_error_detail_is_the_functions_message():
    record = {"key": "a.mp4", "error": "unreadable", "detail": "moov atom\nnot found"}
    answer = {"error": record, "output_key": "a.error.json", "outcome": "skipped"}
    assert error_detail(answer, json.dumps(answer)) == "unreadable: moov atom not found"
    assert error_detail({"error": "missing field(s): key"}, "") == "missing field(s): key"
    html = "<html>" + "x" * 1000
    assert error_detail(None, html).endswith("...") and len(error_detail(None, html)) == 303


def test_gives_up_after_the_configured_attempts(settings, gateway):
    gateway.script["a.mp4"] = [500]
    result = invoker_for(settings, invoke_attempts=4).invoke("input", "a.mp4")
    assert (result.outcome, result.attempts, result.status) == ("failed", 4, 500)
    assert len(gateway.calls) == 4


def test_timeout_is_retried(settings, gateway):
    gateway.delay_s = 0.5
    result = invoker_for(settings, invoke_attempts=2, invoke_timeout_s=0.1).invoke("input", "a.mp4")
    assert (result.outcome, result.attempts) == ("failed", 2)
    assert "no answer within" in result.detail


def test_connection_refused_is_retried(settings):
    invoker = invoker_for(settings, openfaas_gateway=f"http://127.0.0.1:{free_port()}", invoke_attempts=3)
    result = invoker.invoke("input", "a.mp4")
    assert (result.outcome, result.attempts, result.status) == ("failed", 3, None)
    assert "ConnectionError" in result.detail


def test_backoff_grows_exponentially_with_jitter_and_a_cap():
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
        gateway = f"http://127.0.0.1:{server.server_address[1]}"
        invoker = Invoker(replace(settings, openfaas_gateway=gateway), Backoff(0.01, 10.0), stop=Stop())
        assert invoker.invoke("input", "a.mp4").outcome == "ok"
    finally:
        server.shutdown()
        server.server_close()
    assert waits == [3.0]
