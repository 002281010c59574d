"""The function through the python3-http template contract (index.py -> handler.handle), on moto S3/DynamoDB."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import boto3
import cv2
import numpy as np
import pytest
from moto import mock_aws
from prometheus_client import REGISTRY

from facepipe.answers import Student, parse_csv
from facepipe.faces.recognition import Recognizer
from facepipe.media import MediaError, sample_frames
from facepipe.upload_students import ensure_table, load_students, write_students
from facepipe_tools.polling import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
FUNCTION_DIR = REPO_ROOT / "functions" / "face-recognition"

ENV = {
    "INPUT_BUCKET": "input",
    "OUTPUT_BUCKET": "output",
    "STUDENTS_TABLE": "students",
    "KNOWN_FACES": str(REPO_ROOT / "data" / "known_faces.json"),
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "S3_ACCESS_KEY_ID": "test",
    "S3_SECRET_ACCESS_KEY": "test",
    "MAX_OBJECT_BYTES": "3000000",
    "SECRETS_DIR": "/nonexistent",
    "NOTIFY_TOKEN": "tok",
}


def _load_index():
    sys.path.insert(0, str(FUNCTION_DIR))
    spec = importlib.util.spec_from_file_location("function_index", FUNCTION_DIR / "index.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def env():
    patch = pytest.MonkeyPatch()
    for name, value in ENV.items():
        patch.setenv(name, value)
    for name in ("S3_ENDPOINT_URL", "DYNAMODB_ENDPOINT_URL"):
        patch.delenv(name, raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="input")
        s3.create_bucket(Bucket="output")
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        ensure_table(dynamodb, "students")
        write_students(dynamodb, "students", load_students(REPO_ROOT / "data" / "student_data.json"))
        index = _load_index()
        index.handler.object_handler.reset()
        yield {"s3": s3, "client": index.app.test_client(), "index": index}
    patch.undo()


def invoke(env, payload: object, method: str = "POST"):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response = env["client"].open("/", method=method, data=body, content_type="application/json")
    return response.status_code, (response.get_json(silent=True) or {})


def output_keys(env) -> set[str]:
    return {o["Key"] for o in env["s3"].list_objects_v2(Bucket="output").get("Contents", [])}


def read_output(env, key: str) -> str:
    return env["s3"].get_object(Bucket="output", Key=key)["Body"].read().decode()


def upload(env, key: str, data: bytes) -> None:
    env["s3"].put_object(Bucket="input", Key=key, Body=data)


def test_recognises_and_writes_the_csv(env, sample_dir: Path) -> None:
    upload(env, "sample_both.mp4", (sample_dir / "sample_both.mp4").read_bytes())
    status, body = invoke(env, {"bucket": "input", "key": "sample_both.mp4"})
    assert status == 200, body
    assert body["outcome"] == "ok" and body["output_key"] == "sample_both.csv"
    assert [p["name"] for p in body["people"]] == ["grace_hopper", "eileen_collins"]
    assert set(body["timings"]) >= {"download", "decode", "detect", "lookup", "upload", "total"}
    assert body["picture_key"] == "sample_both.jpg"
    picture = cv2.imdecode(np.frombuffer(env["s3"].get_object(Bucket="output", Key="sample_both.jpg")["Body"].read(),
                                         np.uint8), cv2.IMREAD_COLOR)  # fmt: skip
    assert picture.shape[0] == 360 and picture.shape[1] > 360
    assert parse_csv(read_output(env, "sample_both.csv")) == [
        Student("grace_hopper", "computer_science", "senior"),
        Student("eileen_collins", "aerospace_engineering", "junior"),
    ]


def test_same_object_twice_gives_one_result(env, sample_dir: Path) -> None:
    upload(env, "twice.mp4", (sample_dir / "sample_hopper.mp4").read_bytes())
    first = invoke(env, {"bucket": "input", "key": "twice.mp4"})
    second = invoke(env, {"bucket": "input", "key": "twice.mp4"})
    assert first[0] == second[0] == 200
    assert first[1]["outcome"] == "ok" and second[1]["outcome"] == "skipped"
    assert second[1]["people"] == first[1]["people"]
    assert {k for k in output_keys(env) if k.startswith("twice")} == {"twice.csv", "twice.jpg"}


def test_s3_requests_per_object(env, sample_dir: Path) -> None:
    """The pipeline must add almost nothing: a new object costs four requests, a repeat three."""
    upload(env, "counted.mp4", (sample_dir / "sample_hopper.mp4").read_bytes())
    calls: list[str] = []

    def count(model, **kwargs) -> None:
        calls.append(model.name)

    events = env["index"].handler.function().s3.meta.events
    events.register("before-call.s3", count)
    try:
        assert invoke(env, {"bucket": "input", "key": "counted.mp4"})[1]["outcome"] == "ok"
        assert calls == ["ListObjectsV2", "GetObject", "PutObject", "PutObject"]
        calls.clear()
        assert invoke(env, {"bucket": "input", "key": "counted.mp4"})[1]["outcome"] == "skipped"
        assert calls == ["ListObjectsV2", "GetObject", "GetObject"]
    finally:
        events.unregister("before-call.s3", count)


def test_nobody_gives_header_only(env, sample_dir: Path) -> None:
    upload(env, "nobody.mov", (sample_dir / "sample_nobody.mov").read_bytes())
    status, body = invoke(env, {"bucket": "input", "key": "nobody.mov"})
    assert status == 200 and body["people"] == []
    assert read_output(env, "nobody.csv") == "name,major,year\n"


def test_unreadable_media_gives_an_error_record_and_422(env) -> None:
    upload(env, "notes.mp4", b"these are my lecture notes, not a video\n")
    status, body = invoke(env, {"bucket": "input", "key": "notes.mp4"})
    assert status == 422 and body["outcome"] == "error"
    record = json.loads(read_output(env, "notes.error.json"))
    assert record["key"] == "notes.mp4" and record["error"] == "unreadable" and record["detail"]
    assert not {"notes.csv", "notes.jpg"} & output_keys(env)


def test_a_fixed_upload_replaces_its_error_record(env, sample_dir: Path) -> None:
    upload(env, "fixed.mp4", b"")
    assert invoke(env, {"bucket": "input", "key": "fixed.mp4"})[0] == 422
    assert "fixed.error.json" in output_keys(env)
    upload(env, "fixed.mp4", (sample_dir / "sample_collins.mp4").read_bytes())
    status, body = invoke(env, {"bucket": "input", "key": "fixed.mp4"})
    assert status == 200 and [p["name"] for p in body["people"]] == ["eileen_collins"]
    assert {k for k in output_keys(env) if k.startswith("fixed")} == {"fixed.csv", "fixed.jpg"}
    upload(env, "fixed.mp4", b"broken again")
    assert invoke(env, {"bucket": "input", "key": "fixed.mp4"})[0] == 422
    assert {k for k in output_keys(env) if k.startswith("fixed")} == {"fixed.error.json"}


def test_too_large_object_is_refused_without_download(env, monkeypatch: pytest.MonkeyPatch) -> None:
    upload(env, "huge.mp4", b"\0" * 3_000_001)
    service = env["index"].handler.function()
    get_object = service.s3.get_object

    def unread_get(**kwargs):
        response = get_object(**kwargs)
        if kwargs["Key"] == "huge.mp4":
            response["Body"].read = lambda *args: pytest.fail("an object over the limit must not be downloaded")
        return response

    monkeypatch.setattr(service.s3, "get_object", unread_get)
    status, body = invoke(env, {"bucket": "input", "key": "huge.mp4"})
    assert status == 422 and body["error"]["error"] == "too_large"
    assert json.loads(read_output(env, "huge.error.json"))["error"] == "too_large"


def test_raw_s3_event_is_accepted(env, sample_dir: Path) -> None:
    upload(env, "dir/raw event.jpg", (sample_dir / "sample_hopper_photo.jpg").read_bytes())
    event = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "opaqueData": "tok",
                "s3": {"bucket": {"name": "input"}, "object": {"key": "dir/raw+event.jpg"}},
            },
            {
                "eventName": "ObjectCreated:Post",
                "opaqueData": "tok",
                "s3": {"bucket": {"name": "input"}, "object": {"key": "ignored.mp4"}},
            },
        ]
    }
    status, body = invoke(env, event)
    assert status == 200
    assert [(r["key"], [p["name"] for p in r["people"]]) for r in body["results"]] == [
        ("dir/raw event.jpg", ["grace_hopper"])
    ]
    assert "dir/raw event.csv" in output_keys(env)


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        ({"bucket": "input"}, 400, "missing field"),
        ({"key": "x.mp4"}, 400, "missing field"),
        ([1, 2], 400, "expected a JSON object"),
        ({"bucket": "other", "key": "x.mp4"}, 400, "not the input bucket"),
        ({"bucket": "input", "key": "gone.mp4"}, 404, "does not exist"),
        ({"bucket": "input", "key": "bad\nkey.mp4"}, 400, "control characters"),
        ({"Records": [{"s3": {}}]}, 400, "record 0"),
    ],
)
def test_bad_requests_get_clear_errors(env, payload: object, status: int, message: str) -> None:
    got_status, body = invoke(env, payload)
    assert got_status == status
    assert message in body["error"]


def test_wrong_method_and_oversized_body(env) -> None:
    assert invoke(env, {}, method="GET")[0] == 405
    response = env["client"].post("/", data=b"x" * (2 * 1024 * 1024), content_type="application/json")
    assert response.status_code == 413


def test_database_outage_is_retryable_503(env, sample_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.exceptions import EndpointConnectionError

    upload(env, "dbdown.mp4", (sample_dir / "sample_hopper.mp4").read_bytes())
    students = env["index"].handler.function().task.students

    def unreachable(**kwargs):
        raise EndpointConnectionError(endpoint_url="http://dynamodb.invalid")

    monkeypatch.setattr(students, "_cache", {})
    monkeypatch.setattr(students._client, "get_item", unreachable)
    status, body = invoke(env, {"bucket": "input", "key": "dbdown.mp4"})
    assert status == 503 and "unavailable" in body["error"]
    assert not {k for k in output_keys(env) if k.startswith("dbdown")}


def test_metrics_and_health(env) -> None:
    assert env["client"].get("/healthz").status_code == 200
    text = env["client"].get("/metrics").get_data(as_text=True)
    assert 'facerec_videos_total{outcome="ok"}' in text
    assert 'facerec_stage_seconds_bucket{le="0.005",stage="detect"}' in text


def test_no_temp_files_left(env, sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    upload(env, "tmpcheck.mp4", (sample_dir / "sample_hopper.mp4").read_bytes())
    upload(env, "tmpbad.mp4", b"garbage" * 100)
    assert invoke(env, {"bucket": "input", "key": "tmpcheck.mp4"})[0] == 200
    assert invoke(env, {"bucket": "input", "key": "tmpbad.mp4"})[0] == 422
    assert list(tmp_path.iterdir()) == []


def test_concurrent_requests_share_io_but_not_compute(env, sample_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    task = env["index"].handler.function().task
    running, most = [0], [0]
    guard = threading.Lock()
    real = task.compute

    def counting(path, deadline=None):
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return real(path, deadline)
        finally:
            with guard:
                running[0] -= 1

    monkeypatch.setattr(task, "compute", counting)
    for n in range(4):
        upload(env, f"parallel{n}.mp4", (sample_dir / "sample_hopper.mp4").read_bytes())
    answers = [None] * 4

    def call(n: int) -> None:
        answers[n] = invoke(env, {"bucket": "input", "key": f"parallel{n}.mp4"})

    threads = [threading.Thread(target=call, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [status for status, _ in answers] == [200] * 4
    assert all([p["name"] for p in body["people"]] == ["grace_hopper"] for _, body in answers)
    assert most[0] == 1


def test_configuration_error_is_503_and_not_ready(env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A broken known-faces file is the operator's to fix, not the object's fault: 503 (the
    notifier retries without counting it toward a dead letter), /healthz 503 with the reason,
    and the same on every request."""
    handler = env["index"].handler
    broken = tmp_path / "known.json"
    broken.write_text('{"not": "known faces"}')
    monkeypatch.setenv("KNOWN_FACES", str(broken))
    monkeypatch.setattr(handler.object_handler, "_function", None)
    monkeypatch.setattr(handler.object_handler, "_configuration_error", None)
    upload(env, "config.mp4", b"whatever")
    for _ in range(2):
        status, body = invoke(env, {"bucket": "input", "key": "config.mp4"})
        assert status == 503 and "not configured correctly" in body["error"]
    health = env["client"].get("/healthz")
    assert health.status_code == 503 and health.get_data(as_text=True).startswith("not ready:")
    assert not {k for k in output_keys(env) if k.startswith("config")}


# ------------------------------------------------------------------ the function's own deadline


def _time_limit(env, monkeypatch: pytest.MonkeyPatch, seconds: float):
    service = env["index"].handler.function()
    monkeypatch.setattr(service, "settings", dataclasses.replace(service.settings, function_timeout_s=seconds))
    return service


def test_recognition_stops_at_the_deadline(env, sample_dir: Path) -> None:
    recognizer: Recognizer = env["index"].handler.function().task.recognizer
    with pytest.raises(MediaError) as raised:
        recognizer.recognize(sample_frames(sample_dir / "sample_both.mp4"), deadline=time.monotonic() - 1)
    assert raised.value.kind == "timeout"
    ahead = recognizer.recognize(sample_frames(sample_dir / "sample_both.mp4"), deadline=time.monotonic() + 600)
    assert ahead.people == ["grace_hopper", "eileen_collins"]


def test_work_past_the_time_limit_stops_with_a_timeout_record(env, sample_dir: Path, monkeypatch) -> None:
    """FUNCTION_TIMEOUT_S bounds download, decode and detection: the first frame's detection
    outlasts it, the work stops there and a `timeout` error record is written (422)."""
    service = _time_limit(env, monkeypatch, 2.0)
    recognizer = service.task.recognizer
    real = recognizer._recognize_frame
    frames_seen = []

    def slow_first_frame(frame):
        if not frames_seen:
            started = time.monotonic()
            wait_for(lambda: time.monotonic() - started > 2.5, timeout_s=10)
        frames_seen.append(frame.index)
        return real(frame)

    monkeypatch.setattr(recognizer, "_recognize_frame", slow_first_frame)
    upload(env, "slow.webm", (sample_dir / "sample_collins_late.webm").read_bytes())
    status, body = invoke(env, {"bucket": "input", "key": "slow.webm"})
    assert status == 422 and body["error"]["error"] == "timeout", body
    assert json.loads(read_output(env, "slow.error.json"))["error"] == "timeout"
    assert frames_seen == [0] and not {"slow.csv", "slow.jpg"} & output_keys(env)


def test_a_download_past_the_time_limit_stops(env, sample_dir: Path, monkeypatch) -> None:
    _time_limit(env, monkeypatch, 1e-9)
    upload(env, "slowdl.mp4", (sample_dir / "sample_hopper.mp4").read_bytes())
    status, body = invoke(env, {"bucket": "input", "key": "slowdl.mp4"})
    assert status == 422 and body["error"] == {"error": "timeout", "detail": body["error"]["detail"]}
    assert "download" in body["error"]["detail"]


def test_waiting_behind_others_past_the_time_limit_is_a_retryable_503(env, sample_dir: Path, monkeypatch) -> None:
    """An object that never got to the computation is not at fault: 503, nothing written."""
    service = _time_limit(env, monkeypatch, 0.5)
    upload(env, "queued.mp4", (sample_dir / "sample_hopper.mp4").read_bytes())
    with service._compute_lock:  # another object's computation, for longer than the limit
        status, body = invoke(env, {"bucket": "input", "key": "queued.mp4"})
    assert status == 503 and "busy" in body["error"]
    assert not {k for k in output_keys(env) if k.startswith("queued")}


# ------------------------------------------------------------------ answers counted by status


def _answers(status: int) -> float:
    return REGISTRY.get_sample_value("facerec_requests_total", {"status": str(status)}) or 0.0


def test_every_answer_is_counted_by_status(env, sample_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = env["index"]
    before = {status: _answers(status) for status in (200, 400, 404, 405, 422, 500, 503)}
    upload(env, "counted-ok.jpg", (sample_dir / "sample_hopper_photo.jpg").read_bytes())
    upload(env, "counted-bad.mp4", b"not a video")
    assert invoke(env, {"bucket": "input", "key": "counted-ok.jpg"})[0] == 200
    assert invoke(env, b"{not json")[0] == 400
    assert invoke(env, {"bucket": "input", "key": "counted-missing.mp4"})[0] == 404
    assert invoke(env, {}, method="GET")[0] == 405
    assert invoke(env, {"bucket": "input", "key": "counted-bad.mp4"})[0] == 422

    def bug(event, context):
        raise RuntimeError("a bug")

    with monkeypatch.context() as patch:
        patch.setattr(index.handler, "handle", bug)
        assert invoke(env, {"bucket": "input", "key": "counted-ok.jpg"})[0] == 500
    index.drain.start()  # as on SIGTERM
    try:
        refused = env["client"].post("/", json={"bucket": "input", "key": "counted-ok.jpg"})
        health = env["client"].get("/healthz")
        scrape = env["client"].get("/metrics")
    finally:
        index.drain.draining = False
    assert refused.status_code == 503 and refused.headers["Retry-After"] and "retry" in refused.get_json()["error"]
    assert health.status_code == 503 and scrape.status_code == 200
    counted = {status: _answers(status) - before[status] for status in before}
    assert counted == {200: 1, 400: 1, 404: 1, 405: 1, 422: 1, 500: 1, 503: 1}
    text = scrape.get_data(as_text=True)
    assert 'facerec_requests_total{status="503"}' in text
