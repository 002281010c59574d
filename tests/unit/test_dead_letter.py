"""Dead letters (issue #12, item 3): an object version the function keeps failing on gets a
`failed` error record after DEAD_LETTER_ATTEMPTS failed attempts and is invoked no more.
Notifier on moto S3 with the stand-in gateway of notifierfake.py; the record's format; the
results page."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from dataclasses import replace

import pytest
from botocore.exceptions import ClientError

from facepipe import answers
from facepipe.notifier.deadletter import DeadLetters
from facepipe.notifier.invoker import Invoker, Reply
from facepipe.notifier.jobs import Job
from facepipe.notifier.listener import create_app
from facepipe.notifier.metrics import NotifierMetrics
from facepipe.notifier.service import Notifier
from facepipe.settings import Route, Settings
from facepipe.web import app as web_app
from facepipe.web.settings import WebSettings
from facepipe_tools.polling import wait_for
from facepipe_tools.stack import free_port
from tests.unit.notifierfake import FACES, FAST, Gateway, metric, notifier_settings, record


@pytest.fixture
def client(notifier):
    return create_app(notifier).test_client()


def upload(s3, key: str, body: bytes = b"poison") -> str:
    """Put an input object; returns its ETag."""
    return s3.put_object(Bucket="input", Key=key, Body=body)["ETag"].strip('"')


def error_record(s3, key: str) -> tuple[dict, dict]:
    """The error record of input `key`: its JSON and its metadata."""
    obj = s3.get_object(Bucket="output", Key=answers.error_key(key))
    return json.loads(obj["Body"].read()), obj["Metadata"]


def output_keys(s3) -> list[str]:
    return sorted(obj["Key"] for obj in s3.list_objects_v2(Bucket="output").get("Contents", []))


def run(notifier: Notifier, *jobs: Job) -> None:
    notifier.start(reconcile=False)
    for job in jobs:
        notifier.submit(job)
        assert notifier.wait_idle(10)


def fields(caplog, event: str) -> list[dict]:
    return [r.fields for r in caplog.records if r.getMessage() == event]


# The record -------------------------------------------------------------------------------------


def test_failed_record_is_an_error_record_with_attempts_and_last_error():
    text = answers.render_failed("a/clip.mp4", 3, "HTTP 502: function worker failed: ConnectionError")
    record = json.loads(text)
    assert list(record) == ["key", "error", "detail", "attempts", "last_error"]
    assert record == {
        "key": "a/clip.mp4",
        "error": "failed",
        "detail": "failed after 3 attempts; last error: HTTP 502: function worker failed: ConnectionError",
        "attempts": 3,
        "last_error": "HTTP 502: function worker failed: ConnectionError",
    }
    assert answers.parse_error(text)["error"] == answers.FAILED
    stored = answers.StoredAnswer("a/clip.error.json", None)
    body = answers.parse(stored, text)
    assert body.failed and not body.unreadable
    assert body.error == {k: record[k] for k in ("error", "detail", "attempts", "last_error")}


def test_other_error_records_keep_their_two_fields():
    stored = answers.StoredAnswer("a.error.json", None)
    assert answers.parse(stored, answers.render_error("a.mp4", "unreadable", "moov")).error == {
        "error": "unreadable",
        "detail": "moov",
    }
    odd = answers.parse(stored, json.dumps({"error": "failed", "attempts": "many"}))
    assert odd.error == {"error": "failed", "detail": "", "attempts": None, "last_error": ""}


# What counts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "counts"),
    [
        (Reply(500), True),
        (Reply(502), True),
        (Reply(504), True),
        (Reply(507), True),
        (Reply(None, detail="no answer within 2 s"), True),
        (Reply(None, detail="ConnectionError: Connection aborted", sent=True), True),
        (Reply(503), False),
        (Reply(429), False),
        (Reply(408), False),
        (Reply(422), False),
        (Reply(None, detail="ConnectionError: refused", sent=False), False),
    ],
)
def test_which_failed_attempts_count_against_the_object(reply, counts):
    assert reply.counts is counts


def test_connection_refused_does_not_count_but_a_dropped_connection_does(settings):
    """No connection at all: the gateway is down, not the object's fault. A connection closed
    after the request was sent: the function died on it."""
    seen: list[Reply] = []
    refused = Invoker(replace(settings, openfaas_gateway=f"http://127.0.0.1:{free_port()}", invoke_attempts=2), FAST)
    assert refused.invoke("input", "a.mp4", lambda reply: seen.append(reply) or False).outcome == "failed"
    assert seen == []

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def drop_connections() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.recv(65536)
            connection.close()

    thread = threading.Thread(target=drop_connections, daemon=True)
    thread.start()
    try:
        gateway = f"http://127.0.0.1:{listener.getsockname()[1]}"
        dropped = Invoker(replace(settings, openfaas_gateway=gateway, invoke_attempts=5), FAST)
        result = dropped.invoke("input", "a.mp4", lambda reply: seen.append(reply) or len(seen) == 2)
    finally:
        stop.set()
        thread.join(5)
        listener.close()
    assert (result.outcome, result.attempts, result.gave_up) == ("failed", 2, True)
    assert all(reply.status is None and reply.sent for reply in seen)
    assert "ConnectionError" in seen[-1].error


# The notifier -----------------------------------------------------------------------------------


def test_poison_object_is_dead_lettered_after_n_failed_attempts(client, notifier, settings, gateway, s3, caplog):
    etag = upload(s3, "poison.mp4")
    gateway.script["poison.mp4"] = [502]
    assert settings.invoke_attempts == settings.dead_letter_attempts == 3
    with caplog.at_level("INFO", logger="facepipe.notifier"):
        run(notifier, Job("input", "poison.mp4", etag))
    assert gateway.keys() == ["poison.mp4"] * 3
    record, metadata = error_record(s3, "poison.mp4")
    assert (record["error"], record["attempts"], record["key"]) == ("failed", 3, "poison.mp4")
    assert record["last_error"] == "HTTP 502: scripted: HTTP 502"
    assert metadata == {answers.SOURCE_ETAG_METADATA: etag}
    assert output_keys(s3) == ["poison.error.json"]
    assert metric(client, "facerec_notifier_dead_lettered_total", function=FACES) == 1
    assert metric(client, "facerec_notifier_invocations_total", outcome="failed") == 1
    [dead] = fields(caplog, "dead-lettered")
    assert (dead["key"], dead["attempts"], dead["etag"], dead["function"]) == ("poison.mp4", 3, etag, FACES)
    assert dead["last_error"] == record["last_error"] and dead["output_key"] == "poison.error.json"
    assert [f["failures"] for f in fields(caplog, "failure counted")] == [1, 2, 3]


def test_a_dead_letter_is_invoked_by_neither_events_nor_the_reconciler(client, notifier, gateway, s3, caplog):
    etag = upload(s3, "poison.mp4")
    gateway.script["poison.mp4"] = [500]
    run(notifier, Job("input", "poison.mp4", etag))
    assert len(gateway.calls) == 3
    with caplog.at_level("INFO", logger="facepipe.notifier"):
        for _ in range(2):
            assert client.post("/", json={"Records": [record("input", "poison.mp4", etag=etag)]}).status_code == 200
            assert notifier.wait_idle(10)
        assert notifier.reconciler.run_once() == 0
    assert len(gateway.calls) == 3
    skipped = fields(caplog, "dead letter skipped")
    assert [(f["key"], f["etag"], f["source"]) for f in skipped] == [("poison.mp4", etag, "event")] * 2
    assert metric(client, "facerec_notifier_dead_lettered_total", function=FACES) == 1


def test_a_new_upload_of_a_dead_letter_is_invoked(notifier, gateway, s3):
    etag = upload(s3, "clip.mp4", b"poison")
    gateway.script["clip.mp4"] = [500]
    run(notifier, Job("input", "clip.mp4", etag))
    assert len(gateway.calls) == 3
    fixed = upload(s3, "clip.mp4", b"a good video")
    gateway.script["clip.mp4"] = [200]
    notifier.submit(Job("input", "clip.mp4", fixed))
    assert notifier.wait_idle(10)
    assert len(gateway.calls) == 4


def test_failures_are_counted_across_jobs(settings, gateway, s3):
    """Two attempts per job, three failures to a dead letter: the second job gives up after one."""
    notifier = Notifier(replace(settings, invoke_attempts=2), s3=s3, backoff=FAST)
    client = create_app(notifier).test_client()
    try:
        etag = upload(s3, "poison.mp4")
        gateway.script["poison.mp4"] = [504]
        run(notifier, Job("input", "poison.mp4", etag))
        assert len(gateway.calls) == 2 and output_keys(s3) == []
        notifier.submit(Job("input", "poison.mp4", etag, source="reconcile"))
        assert notifier.wait_idle(10)
    finally:
        notifier.stop(grace_s=2)
    assert len(gateway.calls) == 3
    assert error_record(s3, "poison.mp4")[0]["attempts"] == 3
    assert metric(client, "facerec_notifier_invocations_total", outcome="failed") == 2


def test_a_job_without_etag_is_dead_lettered_with_the_objects_etag(notifier, gateway, s3):
    etag = upload(s3, "poison.mp4")
    gateway.script["poison.mp4"] = [500]
    run(notifier, Job("input", "poison.mp4"))
    assert error_record(s3, "poison.mp4")[1] == {answers.SOURCE_ETAG_METADATA: etag}
    notifier.submit(Job("input", "poison.mp4"))
    assert notifier.wait_idle(10)
    assert len(gateway.calls) == 3


@pytest.mark.parametrize("status", [503, 429, 422, 404])
def test_busy_and_final_answers_are_not_counted(client, notifier, gateway, s3, status):
    etag = upload(s3, "busy.mp4")
    gateway.script["busy.mp4"] = [status]
    run(notifier, *[Job("input", "busy.mp4", etag) for _ in range(3)])
    assert len(gateway.calls) >= 3
    assert output_keys(s3) == []
    assert metric(client, "facerec_notifier_dead_lettered_total", function=FACES) == 0


def test_an_answer_forgets_the_failures(notifier, gateway, s3):
    etag = upload(s3, "flaky.mp4")
    gateway.script["flaky.mp4"] = [500, 500, 200]
    run(notifier, Job("input", "flaky.mp4", etag))
    gateway.script["flaky.mp4"] = [500, 500, 200]
    notifier.submit(Job("input", "flaky.mp4", etag))
    assert notifier.wait_idle(10)
    assert len(gateway.calls) == 6 and output_keys(s3) == []


def test_a_current_answer_is_never_overwritten(client, notifier, gateway, s3, caplog):
    """The function's run outlived the notifier's time limit and wrote its result meanwhile."""
    etag = upload(s3, "slow.mp4")
    gateway.script["slow.mp4"] = [504]
    csv = "name,major,year\ngrace_hopper,cs,senior\n"
    s3.put_object(Bucket="output", Key="slow.csv", Body=csv.encode(), Metadata={"source-etag": etag})
    with caplog.at_level("INFO", logger="facepipe.notifier"):
        run(notifier, Job("input", "slow.mp4", etag))
    assert output_keys(s3) == ["slow.csv"]
    assert s3.get_object(Bucket="output", Key="slow.csv")["Body"].read().decode() == csv
    [skipped] = fields(caplog, "dead letter not written")
    assert (skipped["outcome"], skipped["answer"]) == ("answered", "slow.csv")
    assert metric(client, "facerec_notifier_dead_lettered_total", function=FACES) == 0


def test_an_answer_of_an_older_version_does_not_stop_the_dead_letter(notifier, gateway, s3):
    s3.put_object(Bucket="output", Key="clip.csv", Body=b"name,major,year\n", Metadata={"source-etag": "older"})
    etag = upload(s3, "clip.mp4")
    gateway.script["clip.mp4"] = [500]
    run(notifier, Job("input", "clip.mp4", etag))
    assert error_record(s3, "clip.mp4")[0]["error"] == "failed"
    # The record is the newest answer: current for the version, the older result is not.
    version = answers.Version(etag, s3.head_object(Bucket="input", Key="clip.mp4")["LastModified"])
    assert answers.find_current(s3, "output", "clip.mp4", version).key == "clip.error.json"


def test_a_result_written_while_the_record_is_written_wins(client, notifier, gateway, s3, monkeypatch):
    etag = upload(s3, "race.mp4")
    gateway.script["race.mp4"] = [500]
    real_put = s3.put_object

    def put_result_first(**kwargs):
        if kwargs["Key"] == "race.error.json":
            real_put(Bucket="output", Key="race.csv", Body=b"name,major,year\n", Metadata={"source-etag": etag})
        return real_put(**kwargs)

    monkeypatch.setattr(notifier.dead_letters.s3, "put_object", put_result_first)
    run(notifier, Job("input", "race.mp4", etag))
    assert output_keys(s3) == ["race.csv"]
    assert metric(client, "facerec_notifier_dead_lettered_total", function=FACES) == 0


@pytest.mark.parametrize("change", ["replaced", "gone"])
def test_no_record_for_an_object_replaced_or_deleted_meanwhile(notifier, gateway, s3, change, caplog):
    etag = upload(s3, "moving.mp4")
    gateway.script["moving.mp4"] = [500]
    if change == "replaced":
        upload(s3, "moving.mp4", b"another version")
    else:
        s3.delete_object(Bucket="input", Key="moving.mp4")
    with caplog.at_level("INFO", logger="facepipe.notifier"):
        run(notifier, Job("input", "moving.mp4", etag))
    assert output_keys(s3) == []
    assert [f["outcome"] for f in fields(caplog, "dead letter not written")] == [change]


def test_an_unwritten_record_is_written_by_the_next_job_without_invoking(client, notifier, gateway, s3, monkeypatch):
    etag = upload(s3, "poison.mp4")
    gateway.script["poison.mp4"] = [500]
    real_put = s3.put_object
    failures = iter([ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutObject")])

    def put_once_denied(**kwargs):
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real_put(**kwargs)

    monkeypatch.setattr(notifier.dead_letters.s3, "put_object", put_once_denied)
    run(notifier, Job("input", "poison.mp4", etag))
    assert output_keys(s3) == [] and len(gateway.calls) == 3
    notifier.submit(Job("input", "poison.mp4", etag, source="reconcile"))
    assert notifier.wait_idle(10)
    assert len(gateway.calls) == 3
    assert error_record(s3, "poison.mp4")[0]["attempts"] == 3
    assert metric(client, "facerec_notifier_dead_lettered_total", function=FACES) == 1


def test_deleting_the_record_lets_the_version_be_tried_again(notifier, gateway, s3, caplog):
    etag = upload(s3, "poison.mp4")
    gateway.script["poison.mp4"] = [500]
    run(notifier, Job("input", "poison.mp4", etag))
    s3.delete_object(Bucket="output", Key="poison.error.json")
    gateway.script["poison.mp4"] = [200]
    with caplog.at_level("INFO", logger="facepipe.notifier"):
        notifier.submit(Job("input", "poison.mp4", etag, source="reconcile"))
        assert notifier.wait_idle(10)
    assert len(gateway.calls) == 4
    assert [f["etag"] for f in fields(caplog, "dead letter removed")] == [etag]


def test_memory_is_bounded():
    routes = [Route("input", FACES, "output")]
    dead = DeadLetters(None, routes, limit=3, metrics=NotifierMetrics(), capacity=100)
    for index in range(1000):
        dead.fail("input", f"v{index}.mp4", "e", "HTTP 500")
    assert len(dead._failures) == 100
    assert dead.failures("input", "v999.mp4", "e").attempts == 1
    assert dead.failures("input", "v0.mp4", "e").attempts == 0
    # Only the latest failing version of an object is counted.
    dead.fail("input", "v999.mp4", "e", "HTTP 500")
    assert dead.fail("input", "v999.mp4", "new", "HTTP 502").attempts == 1
    assert dead.failures("input", "v999.mp4", "e").attempts == 0


def test_metric_series_exist_from_the_start(client):
    text = client.get("/metrics").get_data(as_text=True)
    assert f'facerec_notifier_dead_lettered_total{{function="{FACES}"}} 0.0' in text


# Suspects: innocents beside a poison object ----------------------------------------------------


class CrashingGateway(Gateway):
    """One function worker that holds every request in flight and dies on `poison`: the poison's
    request waits (up to `hold_s`) for another request to be in flight, then it and every request
    beside it get 502, as the runner answers for a dead worker. Other requests are answered 200
    after `hold_s`. A key that got a 502 is a suspect from then on; `overlaps` notes each
    request of a suspect that arrived while another suspect's was in flight."""

    def __init__(self, poison: str, hold_s: float = 0.4):
        super().__init__()
        self.poison, self.hold_s = poison, hold_s
        self.in_flight: dict[int, tuple[str, threading.Event]] = {}
        self.crashed: Counter[str] = Counter()
        self.answered: set[str] = set()
        self.overlaps: list[tuple[str, list[str]]] = []

    def _handle(self, path: str, body: dict) -> int:
        key, dies = body["key"], threading.Event()
        with self._lock:
            self.calls.append(body)
            beside = [other for other, _ in self.in_flight.values() if other in self.crashed]
            if key in self.crashed and beside:
                self.overlaps.append((key, beside))
            self.in_flight[id(dies)] = (key, dies)
        if key == self.poison:
            wait_for(lambda: len(self.in_flight) > 1, self.hold_s, 0.01)
            with self._lock:
                for _other, event in self.in_flight.values():
                    event.set()
        dies.wait(self.hold_s)
        with self._lock:
            del self.in_flight[id(dies)]
            if dies.is_set():
                self.crashed[key] += 1
                return 502
            self.answered.add(key)
        return 200


def test_innocents_beside_a_poison_object_are_charged_once_and_answered(s3, caplog):
    """A poison object kills the worker, and with it the requests it held beside it. Those
    innocents become suspects, and suspects run one at a time: none runs beside the poison
    again, so each is charged at most once and answered; only the poison is dead-lettered."""
    gateway = CrashingGateway("poison.mp4")
    settings = notifier_settings(gateway, notifier_concurrency=3, invoke_attempts=5)
    notifier = Notifier(settings, s3=s3, backoff=FAST)
    client = create_app(notifier).test_client()
    innocents = [f"v{n}.mp4" for n in range(8)]
    keys = innocents[:2] + ["poison.mp4"] + innocents[2:]
    try:
        for key in keys:
            notifier.submit(Job("input", key, upload(s3, key, key.encode())))
        with caplog.at_level("INFO", logger="facepipe.notifier"):
            notifier.start(reconcile=False)
            assert notifier.wait_idle(30)
    finally:
        notifier.stop(grace_s=2)
        gateway.close()
    assert gateway.answered == set(innocents)
    assert gateway.crashed["poison.mp4"] == settings.dead_letter_attempts
    charged = {key: count for key, count in gateway.crashed.items() if key != "poison.mp4"}
    assert charged, "no innocent was in flight beside the poison: the test proves nothing"
    assert set(charged.values()) == {1}
    assert gateway.overlaps == []
    assert output_keys(s3) == ["poison.error.json"]
    assert error_record(s3, "poison.mp4")[0]["attempts"] == settings.dead_letter_attempts
    assert metric(client, "facerec_notifier_dead_lettered_total", function=FACES) == 1
    assert metric(client, "facerec_notifier_invocations_total", function=FACES, outcome="ok") == len(innocents)
    assert metric(client, "facerec_notifier_invocations_total", function=FACES, outcome="failed") == 1
    queued = sorted(f["key"] for f in fields(caplog, "suspect queued"))
    assert queued == sorted(["poison.mp4", *charged])


# The results page -------------------------------------------------------------------------------


def test_results_page_shows_failed_after_n_attempts(s3):
    app = web_app.create_app(
        Settings(input_bucket="input", output_bucket="output"), WebSettings(result_timeout_s=1.0, poll_s=0.01), s3=s3
    )
    record = answers.render_failed("poison.mp4", 3, "HTTP 502: function worker failed: <ConnectionError>")
    s3.put_object(Bucket="output", Key="poison.error.json", Body=record.encode(), Metadata={"source-etag": "e"})
    s3.put_object(
        Bucket="output", Key="broken.error.json", Body=answers.render_error("broken.mp4", "empty", "0 B").encode()
    )
    web = app.test_client()
    data = web.get("/results.json").get_json()
    by_stem = {item["stem"]: item for item in data["items"]}
    poison = by_stem["poison"]
    assert (poison["status"], poison["attempts"], poison["error"]["error"]) == ("error", 3, "failed")
    assert poison["error"]["last_error"] == "HTTP 502: function worker failed: <ConnectionError>"
    assert by_stem["broken"]["attempts"] is None
    assert data["counts"] == {"total": 2, "done": 0, "error": 2}
    for url in ("/results", "/results/rows"):
        html = web.get(url).get_data(as_text=True)
        assert 'class="error-code failed">failed after 3 attempts<' in html
        assert "last error: HTTP 502: function worker failed: &lt;ConnectionError&gt;" in html
        assert 'class="error-code">empty<' in html
        assert 'class="legend"' in html


def test_results_page_without_dead_letters_has_no_legend(s3):
    app = web_app.create_app(
        Settings(input_bucket="input", output_bucket="output"), WebSettings(result_timeout_s=1.0, poll_s=0.01), s3=s3
    )
    s3.put_object(
        Bucket="output", Key="broken.error.json", Body=answers.render_error("broken.mp4", "empty", "0 B").encode()
    )
    html = app.test_client().get("/results").get_data(as_text=True)
    assert "failed after" not in html and 'class="legend"' not in html
