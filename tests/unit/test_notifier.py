"""Notifier: the HTTP front (Flask test client), the queue and its workers, on moto S3 in-process
with a stand-in gateway over real HTTP (tests/unit/notifierfake.py)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace

import pytest
from prometheus_client import REGISTRY

from facepipe import events
from facepipe.notifier.invoker import Backoff
from facepipe.notifier.jobs import SUSPECT, Job, JobQueue
from facepipe.notifier.listener import MAX_BODY_BYTES, create_app
from facepipe.notifier.metrics import NotifierMetrics
from facepipe.notifier.service import Notifier
from facepipe_tools.polling import wait_for
from tests.unit.notifierfake import FACES, FAST, IMAGES, TOKEN, TWO_ROUTES, metric, record


@pytest.fixture
def client(notifier):
    return create_app(notifier).test_client()


def post(client, *records: dict):
    return client.post("/", json={"Records": list(records)})


def s3_requests() -> float:
    """All requests counted by the clients `s3_client` made in this process."""
    return sum(
        sample.value for family in REGISTRY.collect() if family.name == "facepipe_s3_requests"
        for sample in family.samples if sample.name == "facepipe_s3_requests_total"
    )  # fmt: skip


# Authentication and malformed requests ---------------------------------------------------------


def test_record_without_token_is_401_and_nothing_is_queued(client, notifier):
    response = post(client, record("input", "a.mp4"), record("input", "a.mp4", token=None))
    assert response.status_code == 401
    assert "opaqueData" in response.get_json()["error"]
    assert notifier.pending() == 0
    assert metric(client, "facerec_notifier_events_total", outcome="rejected") == 1
    assert metric(client, "facerec_notifier_events_total", outcome="accepted") == 0


@pytest.mark.parametrize("token", ["wrong", "t0ken-for-test", TOKEN + "x", "é-unicode", 12345])
def test_wrong_token_is_403(client, notifier, token):
    response = post(client, record("input", "a.mp4", token=token))
    assert response.status_code == 403
    assert notifier.pending() == 0


def test_token_is_compared_in_constant_time(client, monkeypatch):
    compared = []
    real = events.hmac.compare_digest
    monkeypatch.setattr(events.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    post(client, record("input", "a.mp4", token="nope"))
    assert compared == [(b"nope", TOKEN.encode())]


def test_unset_token_rejects_everything(settings, s3):
    app = create_app(Notifier(replace(settings, notify_token=None), s3=s3))
    assert post(app.test_client(), record("input", "a.mp4", token="")).status_code == 401
    assert post(app.test_client(), record("input", "a.mp4", token="anything")).status_code == 403


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe\x00garbage", b"[" * 100_000, b'{"Records": "nope"}', b'{"Records": [{"s3": {}}]}',
     b"[]", b""],
)  # fmt: skip
def test_malformed_body_is_400_with_json_error(client, notifier, body):
    response = client.post("/", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.is_json and response.get_json()["error"]
    assert b"Traceback" not in response.data
    assert notifier.pending() == 0


def test_oversized_body_is_413(client, notifier):
    huge = {"Records": [record("input", "a.mp4")], "pad": "x" * MAX_BODY_BYTES}
    response = client.post("/", data=json.dumps(huge), content_type="application/json")
    assert response.status_code == 413
    assert response.is_json
    assert notifier.pending() == 0
    assert metric(client, "facerec_notifier_events_total", outcome="rejected") == 1


def test_other_methods_and_paths_answer_json(client):
    assert client.get("/").status_code == 405
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.is_json


def test_unexpected_error_is_500_without_traceback(client, notifier, monkeypatch):
    def boom(job):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(notifier, "submit", boom)
    response = post(client, record("input", "a.mp4"))
    assert response.status_code == 500
    assert response.get_json() == {"error": "internal error"}
    assert b"secret internals" not in response.data


# Filtering: from the record alone ----------------------------------------------------------------


def test_filters_other_buckets_non_create_events_and_unusable_keys(client, notifier, gateway):
    records = [
        record("someone-elses-bucket", "ok.mp4"),
        record("input", "ok.mp4", event="ObjectCreated:Post"),
        record("input", "ok.mp4", event="s3:ObjectCreated:Post"),
        record("input", "ok.mp4", event="ObjectRemoved:Delete"),
        record("input", "folder/"),
        record("input", "ok.mp4"),
    ]
    response = post(client, *records)
    assert response.status_code == 200
    assert response.get_json() == {"accepted": 1, "ignored": 5, "duplicate": 0, "rejected": 0}
    assert metric(client, "facerec_notifier_events_total", outcome="ignored") == 5
    notifier.start(reconcile=False)
    assert notifier.wait_idle(5)
    assert gateway.keys() == ["ok.mp4"]


def test_each_bucket_goes_to_the_function_of_its_route(settings, s3, gateway):
    """Two routes: a record is queued for its bucket's function (the same key in two buckets is
    two objects), records of the output buckets are ignored; gauges and counters by function."""
    notifier = Notifier(replace(settings, routes_table=TWO_ROUTES), s3=s3, backoff=FAST)
    client = create_app(notifier).test_client()
    release = threading.Event()
    gateway.on_ok = lambda body: release.wait(5)
    records = [
        record("input", "same.jpg"), record("images", "same.jpg"), record("images", "dog.jpg"),
        record("images-out", "dog.csv"), record("output", "same.csv"),
    ]  # fmt: skip
    try:
        assert post(client, *records).get_json() == {"accepted": 3, "ignored": 2, "duplicate": 0, "rejected": 0}
        assert metric(client, "facerec_notifier_backlog", function=FACES) == 1
        assert metric(client, "facerec_notifier_backlog", function=IMAGES) == 2
        notifier.start(reconcile=False)
        # Two workers for each function: all three run at once.
        assert wait_for(lambda: metric(client, "facerec_notifier_inflight", function=IMAGES) == 2, 5)
        assert metric(client, "facerec_notifier_inflight", function=FACES) == 1
        release.set()
        assert notifier.wait_idle(5)
    finally:
        release.set()
        notifier.stop(grace_s=2)
    assert sorted(gateway.invoked) == [(FACES, "same.jpg"), (IMAGES, "dog.jpg"), (IMAGES, "same.jpg")]
    assert metric(client, "facerec_notifier_invocations_total", function=IMAGES, outcome="ok") == 2
    assert metric(client, "facerec_notifier_invocations_total", function=FACES, outcome="ok") == 1
    assert metric(client, "facerec_notifier_backlog", function=IMAGES) == 0


def test_a_backlog_of_one_function_does_not_hold_up_the_other(settings, s3, gateway):
    """Each function has its own queue and NOTIFIER_CONCURRENCY workers: photos uploaded behind
    a backlog of videos are invoked while the videos still wait."""
    release = threading.Event()
    gateway.on_ok = lambda body: body["bucket"] != "input" or release.wait(5)
    notifier = Notifier(replace(settings, routes_table=TWO_ROUTES), s3=s3, backoff=FAST)
    try:
        for index in range(5):
            notifier.submit(Job("input", f"v{index}.mp4"))
        notifier.submit(Job("images", "cat.jpg"))
        notifier.start(reconcile=False)

        def videos() -> int:
            return len([call for call in gateway.invoked if call[0] == FACES])

        def both_started() -> bool:
            return (IMAGES, "cat.jpg") in gateway.invoked and videos() == settings.notifier_concurrency

        assert wait_for(both_started, 5), gateway.invoked
        assert videos() == settings.notifier_concurrency  # the other videos still wait
        release.set()
        assert notifier.wait_idle(5)
    finally:
        release.set()
        notifier.stop(grace_s=2)
    assert len(gateway.invoked) == 6


def test_a_function_failing_does_not_touch_the_other_routes_counts(settings, s3, gateway):
    """Retries and final outcomes are counted for the function that failed."""
    gateway.script["bad.jpg"] = [500]
    notifier = Notifier(replace(settings, routes_table=TWO_ROUTES), s3=s3, backoff=FAST)
    client = create_app(notifier).test_client()
    try:
        post(client, record("images", "bad.jpg"), record("input", "ok.mp4"))
        notifier.start(reconcile=False)
        assert notifier.wait_idle(5)
    finally:
        notifier.stop(grace_s=2)
    assert metric(client, "facerec_notifier_invocations_total", function=IMAGES, outcome="failed") == 1
    assert metric(client, "facerec_notifier_retries_total", function=IMAGES) == settings.invoke_attempts - 1
    assert metric(client, "facerec_notifier_retries_total", function=FACES) == 0
    assert metric(client, "facerec_notifier_invocations_total", function=FACES, outcome="ok") == 1


def test_an_event_causes_no_s3_request(settings, s3, gateway):
    """The record carries key and ETag: the notifier queues and invokes without asking S3. The
    notifier's own S3 client (made by `s3_client`, counted in facepipe_s3_requests_total) and its
    event hook both see no request."""
    notifier = Notifier(settings, backoff=FAST)
    calls = []
    notifier.reconciler.s3.meta.events.register("before-call.s3", lambda **kwargs: calls.append(kwargs["model"].name))
    counted_before = s3_requests()
    client = create_app(notifier).test_client()
    try:
        notifier.start(reconcile=False)
        twice = post(client, record("input", "new.mp4", etag="e1"), record("input", "new.mp4", etag="e1"))
        assert twice.get_json() == {"accepted": 1, "duplicate": 1, "ignored": 0, "rejected": 0}
        assert post(client, record("input", "second.mp4", etag="e2")).status_code == 200
        assert wait_for(lambda: metric(client, "facerec_notifier_invocations_total", outcome="ok") == 2, 5)
        assert notifier.wait_idle(5)
    finally:
        notifier.stop(grace_s=2)
    assert sorted(gateway.keys()) == ["new.mp4", "second.mp4"]
    assert calls == []
    assert s3_requests() == counted_before
    # The hook does see the client's requests: the reconciler lists both buckets.
    notifier.reconciler.run_once()
    assert calls == ["ListObjectsV2", "ListObjectsV2"]


def test_event_for_an_object_that_is_gone_reaches_the_function_which_answers_404(client, notifier, gateway):
    gateway.script["gone.mp4"] = [404]
    assert post(client, record("input", "gone.mp4")).get_json()["accepted"] == 1
    notifier.start(reconcile=False)
    assert notifier.wait_idle(5)
    assert gateway.keys() == ["gone.mp4"]
    assert metric(client, "facerec_notifier_invocations_total", outcome="client_error") == 1
    assert metric(client, "facerec_notifier_retries_total") == 0


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
def test_odd_keys_reach_the_function_unchanged(client, notifier, gateway, key, event, source):
    assert post(client, record("input", key, event=event, source=source)).get_json()["accepted"] == 1
    notifier.start(reconcile=False)
    assert notifier.wait_idle(5)
    assert gateway.calls == [{"bucket": "input", "key": key}]


# Dedupe, re-runs, skipped answers ------------------------------------------------------------------


def test_duplicate_deliveries_invoke_once(client, notifier, gateway):
    gateway.delay_s = 0.3
    assert post(client, record("input", "a.mp4")).get_json()["accepted"] == 1
    notifier.start(reconcile=False)
    for _ in range(4):
        assert post(client, record("input", "a.mp4")).get_json()["duplicate"] == 1
    assert notifier.wait_idle(5)
    assert gateway.keys() == ["a.mp4"]
    assert metric(client, "facerec_notifier_events_total", outcome="duplicate") == 4


def test_redelivery_after_an_answer_is_invoked_and_the_stored_answer_counted_as_skipped(client, notifier, gateway):
    """No answered-check before invoking: the function returns the answer it has (`skipped`)."""
    notifier.start(reconcile=False)
    assert post(client, record("input", "a.mp4")).status_code == 200
    assert notifier.wait_idle(5)
    assert metric(client, "facerec_notifier_skipped_total") == 0
    gateway.skip.add("a.mp4")
    for _ in range(2):
        assert post(client, record("input", "a.mp4")).get_json()["accepted"] == 1
        assert notifier.wait_idle(5)
    assert gateway.keys() == ["a.mp4"] * 3
    assert metric(client, "facerec_notifier_skipped_total") == 2
    assert metric(client, "facerec_notifier_invocations_total", outcome="ok") == 3


def test_new_version_while_running_is_processed_after_not_alongside(notifier, gateway):
    gateway.delay_s = 0.3
    notifier.start(reconcile=False)
    assert notifier.submit(Job("input", "a.mp4", "etag-1")) == "accepted"
    assert wait_for(lambda: gateway.calls, 5)
    assert notifier.submit(Job("input", "a.mp4", "etag-1")) == "duplicate"
    assert notifier.submit(Job("input", "a.mp4", "etag-2")) == "accepted"
    assert notifier.submit(Job("input", "a.mp4", "etag-2")) == "duplicate"
    assert notifier.wait_idle(5)
    assert gateway.keys() == ["a.mp4", "a.mp4"]
    assert gateway.max_active_per_key == 1


def test_queued_job_takes_the_etag_of_a_later_event(notifier):
    first = Job("input", "a.mp4", "etag-1")
    assert notifier.submit(first) == "accepted"
    assert notifier.submit(Job("input", "a.mp4", "etag-2")) == "duplicate"
    assert first.etag == "etag-2"
    assert notifier.pending() == 1


# The suspect lane --------------------------------------------------------------------------------


def test_suspects_run_one_at_a_time_in_their_lane_while_innocents_flow():
    """Jobs that `process` calls suspects wait in the lane without holding a worker thread; the
    lane runs one of them at a time, in order, and the other thread takes innocent jobs meanwhile."""
    stop, release, lock = threading.Event(), threading.Event(), threading.Lock()
    done: list[str] = []
    active = {"now": 0, "most": 0}

    def process(job: Job) -> str | None:
        if job.key.startswith("suspect") and not job.suspect:
            return SUSPECT
        if job.suspect:
            with lock:
                active["now"] += 1
                active["most"] = max(active["most"], active["now"])
            if job.key == "suspect-0":
                release.wait(5)
            with lock:
                active["now"] -= 1
        with lock:
            done.append(job.key)
        return None

    jobs = JobQueue(process, NotifierMetrics([""]), stop)
    suspects, innocents = [f"suspect-{n}" for n in range(3)], [f"innocent-{n}" for n in range(6)]
    for key in suspects + innocents:
        assert jobs.submit(Job("input", key)) == "accepted"
    jobs.start(2)
    try:
        assert wait_for(lambda: set(innocents) <= set(done), 5), done
        assert not set(suspects) & set(done)  # behind suspect-0, which the lane still runs
        assert jobs.pending() == 3
        release.set()
        assert jobs.wait_idle(5)
    finally:
        release.set()
        stop.set()
        jobs.stop(time.monotonic() + 2)
    assert [key for key in done if key.startswith("suspect")] == suspects
    assert active["most"] == 1


# Workers: concurrency, gauges, backlog, metrics, stop ---------------------------------------------


def test_concurrency_is_bounded(notifier, settings, gateway):
    gateway.delay_s = 0.15
    for index in range(6):
        notifier.submit(Job("input", f"v{index}.mp4"))
    notifier.start(reconcile=False)
    assert notifier.wait_idle(5)
    assert sorted(gateway.keys()) == [f"v{index}.mp4" for index in range(6)]
    assert gateway.max_active == settings.notifier_concurrency


def test_backlog_and_inflight_gauges(client, notifier, gateway):
    release = threading.Event()
    gateway.on_ok = lambda body: release.wait(5)
    for index in range(3):
        notifier.submit(Job("input", f"v{index}.mp4"))
    assert metric(client, "facerec_notifier_backlog") == 3
    notifier.start(reconcile=False)
    assert wait_for(lambda: metric(client, "facerec_notifier_inflight") == 2, 5)
    release.set()
    assert notifier.wait_idle(5)
    assert metric(client, "facerec_notifier_backlog") == 0
    assert metric(client, "facerec_notifier_inflight") == 0


def test_full_backlog_answers_503(settings, s3):
    app = create_app(Notifier(settings, s3=s3, max_backlog=1)).test_client()
    assert post(app, record("input", "a.mp4")).status_code == 200
    response = post(app, record("input", "b.mp4"))
    assert response.status_code == 503
    assert response.get_json()["rejected"] == 1


def test_worker_metrics_and_log_records(client, notifier, settings, gateway, caplog):
    gateway.script.update({"ok.mp4": [503, 200], "bad.mp4": [400], "down.mp4": [500]})
    for key in ("ok.mp4", "bad.mp4", "down.mp4"):
        notifier.submit(Job("input", key))
    with caplog.at_level("INFO", logger="facepipe.notifier"):
        notifier.start(reconcile=False)
        assert notifier.wait_idle(5)
    assert metric(client, "facerec_notifier_invocations_total", outcome="ok") == 1
    assert metric(client, "facerec_notifier_invocations_total", outcome="client_error") == 1
    assert metric(client, "facerec_notifier_invocations_total", outcome="failed") == 1
    assert metric(client, "facerec_notifier_retries_total") == 1 + (settings.invoke_attempts - 1)
    invoked = {r.fields["key"]: r for r in caplog.records if r.getMessage() == "invoked"}
    assert sorted(invoked) == ["bad.mp4", "down.mp4", "ok.mp4"]
    ok = invoked["ok.mp4"].fields
    assert (ok["outcome"], ok["attempts"], ok["status"], ok["source"], ok["answer"]) == ("ok", 2, 200, "event", "ok")
    assert ok["seconds"] >= 0 and ok["queued_s"] >= 0 and "detail" not in ok
    assert invoked["bad.mp4"].levelname == "WARNING" and invoked["bad.mp4"].fields["detail"] == "scripted: HTTP 400"
    down = invoked["down.mp4"]
    assert down.levelname == "ERROR" and down.fields["attempts"] == 3 and down.fields["outcome"] == "failed"
    retries = [r.fields for r in caplog.records if r.getMessage() == "invoke retry"]
    assert {"key": "ok.mp4", "bucket": "input", "attempts": 1, "status": 503} in [
        {name: fields[name] for name in ("key", "bucket", "attempts", "status")} for fields in retries
    ]


def test_stop_interrupts_backoff(settings, s3, gateway):
    gateway.script["a.mp4"] = [503]
    slow = Notifier(replace(settings, invoke_attempts=10), s3=s3, backoff=Backoff(5.0, 5.0))
    slow.submit(Job("input", "a.mp4"))
    slow.start(reconcile=False)
    assert wait_for(lambda: len(gateway.calls) == 1, 5)
    started = time.monotonic()
    slow.stop(grace_s=3)
    assert time.monotonic() - started < 1.0
    assert len(gateway.calls) == 1
    assert slow.submit(Job("input", "b.mp4")) == "rejected"


# Health, metrics ---------------------------------------------------------------------------------


def test_healthz_and_metric_names(client, notifier):
    notifier.submit(Job("input", "a.mp4"))
    assert client.get("/healthz").get_json() == {"status": "ok", "backlog": 1}
    text = client.get("/metrics").get_data(as_text=True)
    function = 'function="face-recognition"'
    for name in (
        'facerec_notifier_events_total{outcome="accepted"}',
        'facerec_notifier_events_total{outcome="rejected"}',
        'facerec_notifier_events_total{outcome="ignored"}',
        'facerec_notifier_events_total{outcome="duplicate"}',
        f"facerec_notifier_backlog{{{function}}} 1.0",
        f"facerec_notifier_inflight{{{function}}} 0.0",
        f'facerec_notifier_invocations_total{{{function},outcome="ok"}}',
        f'facerec_notifier_invocations_total{{{function},outcome="client_error"}}',
        f'facerec_notifier_invocations_total{{{function},outcome="failed"}}',
        f"facerec_notifier_retries_total{{{function}}}",
        f"facerec_notifier_reconciled_total{{{function}}}",
        f"facerec_notifier_skipped_total{{{function}}}",
        f"facerec_notifier_invocation_seconds_bucket{{{function},",
    ):
        assert name in text


def test_metrics_include_the_s3_request_counter(settings, s3):
    """/metrics serves the default registry too: the requests of every client made by `s3_client`."""
    notifier = Notifier(settings)
    client = create_app(notifier).test_client()
    labels = {"caller": "reconciler", "operation": "ListObjectsV2"}
    before = metric(client, "facepipe_s3_requests_total", **labels)
    notifier.reconciler.run_once()
    assert metric(client, "facepipe_s3_requests_total", **labels) == before + 2
