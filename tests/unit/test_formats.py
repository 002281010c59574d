"""Key naming, the result CSV, the error record and event parsing."""

import pytest

from facepipe import answers, keys
from facepipe.answers import Student, parse_csv, parse_error, render_csv, render_error
from facepipe.events import BadRequest, parse_function_request, parse_records


@pytest.mark.parametrize(
    ("key", "result", "error"),
    [
        ("test_0.mp4", "test_0.csv", "test_0.error.json"),
        ("class a/week 1/clip.final.mov", "class a/week 1/clip.final.csv", "class a/week 1/clip.final.error.json"),
        ("ünïcode ✓.webm", "ünïcode ✓.csv", "ünïcode ✓.error.json"),
        ("no_extension", "no_extension.csv", "no_extension.error.json"),
        (".hidden", ".hidden.csv", ".hidden.error.json"),
    ],
)
def test_result_and_error_keys(key: str, result: str, error: str) -> None:
    assert answers.result_key(key) == result
    assert answers.error_key(key) == error


@pytest.mark.parametrize("key", ["", "a/", "bad\nkey", "x" * 1025, None, 5])
def test_unusable_keys_are_rejected(key: object) -> None:
    with pytest.raises(ValueError):
        keys.validate_key(key)


def test_media_names() -> None:
    assert keys.is_media_name("A.MP4") and keys.is_media_name("x.jpeg") and keys.is_media_name("y.webm")
    assert not keys.is_media_name("notes.txt") and not keys.is_media_name("result.csv")


def test_csv_round_trip_keeps_order_and_quotes() -> None:
    students = [Student("b, the second", "math", "senior"), Student("a", "", "")]
    text = render_csv(students)
    assert text.splitlines()[0] == "name,major,year"
    assert parse_csv(text) == students


def test_header_only_csv_means_nobody() -> None:
    assert render_csv([]) == "name,major,year\n"
    assert parse_csv("name,major,year\n") == []


@pytest.mark.parametrize("text", ["", "who,what\n", "name,major,year\nonly,two\n"])
def test_malformed_csv_is_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_csv(text)


def test_error_record_round_trip() -> None:
    record = parse_error(render_error("x.mp4", "unreadable", "not a video"))
    assert record == {"key": "x.mp4", "error": "unreadable", "detail": "not a video"}


def _record(key: str, event: str = "ObjectCreated:Put", bucket: str = "input") -> dict:
    return {
        "eventName": event,
        "opaqueData": "tok",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 12, "eTag": '"abc"'}},
    }


def test_parse_records_decodes_keys_and_fields() -> None:
    events = parse_records({"Records": [_record("class+a/v%C3%BCdeo%2B1.mp4")]})
    assert len(events) == 1
    event = events[0]
    assert (event.bucket, event.key, event.etag, event.size, event.opaque_data) == (
        "input",
        "class a/vüdeo+1.mp4",
        "abc",
        12,
        "tok",
    )
    assert event.is_object_created


@pytest.mark.parametrize(
    ("event_name", "created"),
    [
        ("ObjectCreated:Put", True),
        ("s3:ObjectCreated:Put", True),
        ("ObjectCreated:CompleteMultipartUpload", True),
        ("ObjectCreated:Copy", True),
        ("ObjectCreated:Post", False),  # multipart upload started: the object is not there yet
        ("ObjectRemoved:Delete", False),
    ],
)
def test_object_created_events(event_name: str, created: bool) -> None:
    assert parse_records({"Records": [_record("a.mp4", event_name)]})[0].is_object_created is created


@pytest.mark.parametrize(
    "payload",
    [None, [], {"Records": "x"}, {"Records": [{"s3": {}}]}, {"Records": [{"s3": {"bucket": {"name": ""}}}]}],
)
def test_malformed_events_raise_bad_request(payload: object) -> None:
    with pytest.raises(BadRequest):
        parse_records(payload)


def test_function_request_forms() -> None:
    assert [(e.bucket, e.key) for e in parse_function_request({"bucket": "in", "key": "a b.mp4"})] == [
        ("in", "a b.mp4")
    ]
    raw = {"Records": [_record("x.mp4"), _record("y.mp4", "ObjectCreated:Post")]}
    assert [e.key for e in parse_function_request(raw)] == ["x.mp4"]
    with pytest.raises(BadRequest, match="missing field"):
        parse_function_request({"bucket": "in"})
    with pytest.raises(BadRequest, match="must be strings"):
        parse_function_request({"bucket": "in", "key": ["x"]})
