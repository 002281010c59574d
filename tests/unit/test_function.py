"""The function through the python3-http template contract (index.py -> handler.handle), on moto S3/DynamoDB."""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import boto3
import cv2
import numpy as np
import pytest
from moto import mock_aws

from facepipe.answers import Student, parse_csv
from facepipe.upload_students import ensure_table, load_students, write_students

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
        index.handler._function = None
        index.handler._configuration_error = None
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
                "s3": {"bucket": {"name": "input"}, "object": {"key": "dir/raw+event.jpg"}},
            },
            {"eventName": "ObjectCreated:Post", "s3": {"bucket": {"name": "input"}, "object": {"key": "ignored.mp4"}}},
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

    def counting(path):
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return real(path)
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


def test_configuration_error_is_500_and_not_ready(env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A broken known-faces file is the operator's to fix, not the request's fault: 500 (the
    notifier retries), /healthz 503 with the reason, and the same on every request."""
    handler = env["index"].handler
    broken = tmp_path / "known.json"
    broken.write_text('{"not": "known faces"}')
    monkeypatch.setenv("KNOWN_FACES", str(broken))
    monkeypatch.setattr(handler, "_function", None)
    monkeypatch.setattr(handler, "_configuration_error", None)
    upload(env, "config.mp4", b"whatever")
    for _ in range(2):
        status, body = invoke(env, {"bucket": "input", "key": "config.mp4"})
        assert status == 500 and "not configured correctly" in body["error"]
    health = env["client"].get("/healthz")
    assert health.status_code == 503 and health.get_data(as_text=True).startswith("not ready:")
    assert not {k for k in output_keys(env) if k.startswith("config")}
