"""The function's entry point refuses raw records without its token, or too many of them,
before it touches any object (#12 item 5)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from facepipe.handlers import ObjectHandler
from facepipe.notifier.invoker import Reply
from facepipe.settings import ConfigurationError

TOKEN = "function-token"


class StubTask:
    def compute(self, path, deadline=None):  # pragma: no cover - never reached: process_one is stubbed
        raise AssertionError("no object is computed in these tests")


@pytest.fixture
def make_handler(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """An ObjectHandler whose settings come from the given environment; it records the objects
    it would process instead of processing them."""

    def make(**env: str) -> tuple[ObjectHandler, list[tuple[str, str]]]:
        monkeypatch.setenv("FACEPIPE_ENV_FILE", str(tmp_path / "none.env"))
        monkeypatch.setenv("SECRETS_DIR", str(tmp_path / "no-secrets"))
        for name in ("NOTIFY_TOKEN", "MAX_RECORDS_PER_REQUEST", "S3_ENDPOINT_URL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("INPUT_BUCKET", "in")
        monkeypatch.setenv("OUTPUT_BUCKET", "out")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        handler = ObjectHandler(lambda settings: StubTask())
        processed: list[tuple[str, str]] = []

        def process_one(bucket: str, key: str):
            processed.append((bucket, key))
            return 200, {"bucket": bucket, "key": key}

        monkeypatch.setattr(handler, "process_one", process_one)
        return handler, processed

    return make


def call(handler: ObjectHandler, payload: object) -> tuple[int, dict]:
    response = handler.handle(SimpleNamespace(method="POST", body=json.dumps(payload).encode()), None)
    return response["statusCode"], json.loads(response["body"])


def records(count: int, token: str | None = TOKEN) -> dict:
    entries = []
    for n in range(count):
        entry = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "in"}, "object": {"key": f"{n}.mp4"}}}
        if token is not None:
            entry["opaqueData"] = token
        entries.append(entry)
    return {"Records": entries}


def test_bucket_and_key_are_processed(make_handler) -> None:
    handler, processed = make_handler()
    assert call(handler, {"bucket": "in", "key": "a.mp4"})[0] == 200
    assert processed == [("in", "a.mp4")]


def test_records_with_the_token_are_processed(make_handler) -> None:
    handler, processed = make_handler(NOTIFY_TOKEN=TOKEN)
    status, body = call(handler, records(2))
    assert status == 200 and len(body["results"]) == 2
    assert processed == [("in", "0.mp4"), ("in", "1.mp4")]


@pytest.mark.parametrize(
    ("env", "payload", "status", "message"),
    [
        ({"NOTIFY_TOKEN": TOKEN}, records(1, token=None), 401, "token"),
        ({"NOTIFY_TOKEN": TOKEN}, records(1, token="guess"), 403, "wrong token"),
        ({}, records(1), 403, "go through the notifier"),
        ({}, records(1, token=None), 403, "go through the notifier"),
        ({"NOTIFY_TOKEN": TOKEN}, records(9000, token=None), 413, "at most 10"),
        ({"NOTIFY_TOKEN": TOKEN, "MAX_RECORDS_PER_REQUEST": "2"}, records(3), 413, "at most 2"),
    ],
)
def test_refused_records_touch_no_object(make_handler, env: dict, payload: dict, status: int, message: str) -> None:
    handler, processed = make_handler(**env)
    got, body = call(handler, payload)
    assert (got, processed) == (status, [])
    assert message in body["error"]


def test_a_configuration_error_is_503_and_not_the_objects_fault(make_handler) -> None:
    """The function cannot serve until the operator fixes it: 503 for every request, which the
    notifier retries without counting it toward the object's dead letter."""
    make_handler(NOTIFY_TOKEN=TOKEN)  # the environment only

    def broken(settings):
        raise ConfigurationError("KNOWN_FACES: no such file")

    handler = ObjectHandler(broken)
    for payload in ({"bucket": "in", "key": "a.mp4"}, records(1), {"bucket": "in", "key": "b.mp4"}):
        status, body = call(handler, payload)
        assert status == 503 and "not configured correctly: KNOWN_FACES" in body["error"], body
    assert handler.not_ready_reason() == "KNOWN_FACES: no such file"
    assert Reply(status).counts is False
