"""Who may hand the function raw S3 / RGW records, and how many (#12 item 5)."""

from __future__ import annotations

import pytest

from facepipe import events
from facepipe.events import (
    BadRequest,
    Forbidden,
    TooManyRecords,
    Unauthorized,
    authorize_function_request,
)

TOKEN = "the-topic-token"


def record(key: str, token: object = TOKEN, event: str = "ObjectCreated:Put") -> dict:
    entry = {"eventName": event, "eventSource": "ceph:s3", "s3": {"bucket": {"name": "in"}, "object": {"key": key}}}
    if token is not None:
        entry["opaqueData"] = token
    return entry


def test_bucket_and_key_need_no_token() -> None:
    assert [(e.bucket, e.key) for e in authorize_function_request({"bucket": "in", "key": "a.mp4"}, None, 10)] == [
        ("in", "a.mp4")
    ]


def test_records_with_the_token_are_accepted_and_filtered() -> None:
    payload = {"Records": [record("a.mp4"), record("b.mp4", event="ObjectCreated:Post")]}
    assert [e.key for e in authorize_function_request(payload, TOKEN, 10)] == ["a.mp4"]


@pytest.mark.parametrize(
    ("tokens", "error", "status"),
    [
        ([None], Unauthorized, 401),
        ([""], Unauthorized, 401),
        ([TOKEN, None], Unauthorized, 401),
        (["wrong"], Forbidden, 403),
        ([TOKEN, TOKEN + "x"], Forbidden, 403),
        ([TOKEN[:-1]], Forbidden, 403),
        ([5], Forbidden, 403),
        ([{"token": TOKEN}], Forbidden, 403),
    ],
)
def test_every_record_must_carry_the_token(tokens: list, error: type[BadRequest], status: int) -> None:
    payload = {"Records": [record(f"{n}.mp4", token) for n, token in enumerate(tokens)]}
    with pytest.raises(error) as raised:
        authorize_function_request(payload, TOKEN, 10)
    assert raised.value.status == status


def test_without_a_configured_token_records_are_refused() -> None:
    for token in (None, ""):
        with pytest.raises(Forbidden, match="notifier"):
            authorize_function_request({"Records": [record("a.mp4")]}, token, 10)


def test_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared = []
    real = events.hmac.compare_digest
    monkeypatch.setattr(events.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    authorize_function_request({"Records": [record("a.mp4"), record("b.mp4")]}, TOKEN, 10)
    assert compared == [(TOKEN.encode(), TOKEN.encode())] * 2


def test_records_beyond_the_cap_are_refused_before_anything_else() -> None:
    at_cap = {"Records": [record(f"{n}.mp4") for n in range(3)]}
    assert len(authorize_function_request(at_cap, TOKEN, 3)) == 3
    # 9,000 tokenless records: refused for their number (413), not parsed one by one.
    flood = {"Records": [{"s3": {}}] * 9000}
    with pytest.raises(TooManyRecords, match="9000 records") as raised:
        authorize_function_request(flood, TOKEN, 10)
    assert raised.value.status == 413


def test_malformed_records_are_bad_requests() -> None:
    with pytest.raises(BadRequest) as raised:
        authorize_function_request({"Records": [{"s3": {}}]}, TOKEN, 10)
    assert raised.value.status == 400
    with pytest.raises(BadRequest):
        authorize_function_request({"Records": "x"}, TOKEN, 10)
