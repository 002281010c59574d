"""Parsing of S3 / Ceph RGW bucket-notification events and function requests."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import unquote_plus


class BadRequest(ValueError):
    """A request or event that cannot be acted on; the message is safe to show.

    `status` is the HTTP status to answer with (subclasses: 401, 403, 413)."""

    status = 400


class Unauthorized(BadRequest):
    """A record without a token."""

    status = 401


class Forbidden(BadRequest):
    """A record with a wrong token, or records where none are accepted."""

    status = 403


class TooManyRecords(BadRequest):
    """More records in one request than it may name."""

    status = 413


@dataclass(frozen=True)
class ObjectEvent:
    bucket: str
    key: str
    event_name: str = ""
    etag: str = ""
    size: int | None = None
    opaque_data: str | None = None

    @property
    def is_object_created(self) -> bool:
        """True for events after which the object exists (not the multipart-upload start)."""
        name = self.event_name.removeprefix("s3:")
        return name.startswith("ObjectCreated:") and name != "ObjectCreated:Post"


#: Event sources that send object keys verbatim. AWS S3 URL-encodes them ("a b+c" -> "a+b%2Bc");
#: Ceph RGW does not (checked on Pacific 16.2.15), so decoding would change keys with '+' or '%'.
VERBATIM_KEY_SOURCES = frozenset({"ceph:s3"})


def parse_records(payload: object) -> list[ObjectEvent]:
    """Parse `{"Records": [...]}` as Ceph RGW and AWS S3 send it.

    Keys are URL-decoded, except from sources that send them verbatim (Ceph RGW).
    """
    if not isinstance(payload, dict) or not isinstance(payload.get("Records"), list):
        raise BadRequest("expected a JSON object with a 'Records' list")
    events = []
    for index, record in enumerate(payload["Records"]):
        try:
            s3 = record["s3"]
            bucket = s3["bucket"]["name"]
            obj = s3["object"]
            key = obj["key"]
            if not isinstance(key, str):
                raise TypeError("key is not a string")
            if record.get("eventSource") not in VERBATIM_KEY_SOURCES:
                key = unquote_plus(key)
        except (KeyError, TypeError):
            raise BadRequest(f"record {index} has no s3.bucket.name / s3.object.key") from None
        if not isinstance(bucket, str) or not bucket or not key:
            raise BadRequest(f"record {index} has an empty bucket or key")
        size = obj.get("size")
        events.append(
            ObjectEvent(
                bucket=bucket,
                key=key,
                event_name=str(record.get("eventName", "")),
                etag=str(obj.get("eTag") or obj.get("etag") or "").strip('"'),
                size=size if isinstance(size, int) else None,
                opaque_data=record.get("opaqueData"),
            )
        )
    return events


def _to_process(events: list[ObjectEvent]) -> list[ObjectEvent]:
    """The records after which an object exists (or that name no event at all)."""
    return [event for event in events if event.is_object_created or not event.event_name]


def check_record_tokens(events: list[ObjectEvent], token: str | None) -> None:
    """Unauthorized unless every record carries a token, Forbidden unless each equals `token`
    (compared in constant time; no `token` configured: every record is refused)."""
    if any(not event.opaque_data for event in events):
        raise Unauthorized("every record must carry the topic's token (opaqueData)")
    expected = (token or "").encode()
    for event in events:
        supplied = event.opaque_data if isinstance(event.opaque_data, str) else ""
        if not expected or not hmac.compare_digest(supplied.encode(), expected):
            raise Forbidden("a record carries a wrong token (opaqueData)")


def parse_function_request(payload: object) -> list[ObjectEvent]:
    """The objects a request names: `{"bucket", "key"}`, or a raw `{"Records": [...]}` event
    (only the object-created records).

    Parsing only: records are not authenticated here; requests from the network go through
    `authorize_function_request`."""
    if isinstance(payload, dict) and "Records" in payload:
        return _to_process(parse_records(payload))
    if not isinstance(payload, dict):
        raise BadRequest('expected a JSON object {"bucket": "...", "key": "..."}')
    missing = [field for field in ("bucket", "key") if not payload.get(field)]
    if missing:
        raise BadRequest("missing field(s): " + ", ".join(missing))
    bucket, key = payload["bucket"], payload["key"]
    if not isinstance(bucket, str) or not isinstance(key, str):
        raise BadRequest("'bucket' and 'key' must be strings")
    return [ObjectEvent(bucket=bucket, key=key)]


def authorize_function_request(payload: object, token: str | None, max_records: int) -> list[ObjectEvent]:
    """`parse_function_request` for a request from the network.

    `{"bucket", "key"}` is accepted as it is (the gateway in front of the function decides who
    may call it). A raw `{"Records": [...]}` event is accepted only when the function has a
    token and every record carries it (Unauthorized without, Forbidden with a wrong one), and
    only with at most `max_records` records (TooManyRecords): each is worked off in turn
    within the one request. All of that is checked before any object is touched.
    """
    if not (isinstance(payload, dict) and "Records" in payload):
        return parse_function_request(payload)
    if not token:
        raise Forbidden(
            "raw S3 event records are not accepted here: bucket events go through the notifier; "
            'send {"bucket": "...", "key": "..."}'
        )
    records = payload["Records"]
    if isinstance(records, list) and len(records) > max_records:
        raise TooManyRecords(f"{len(records)} records in one request; at most {max_records} are accepted")
    events = parse_records(payload)
    check_record_tokens(events, token)
    return _to_process(events)
