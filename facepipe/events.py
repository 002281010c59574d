"""Parsing of S3 / Ceph RGW bucket-notification events and function requests."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote_plus


class BadRequest(ValueError):
    """A request or event that cannot be acted on; the message is safe to show."""


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


def parse_function_request(payload: object) -> list[ObjectEvent]:
    """The function accepts `{"bucket", "key"}` or a raw `{"Records": [...]}` event."""
    if isinstance(payload, dict) and "Records" in payload:
        return [event for event in parse_records(payload) if event.is_object_created or not event.event_name]
    if not isinstance(payload, dict):
        raise BadRequest('expected a JSON object {"bucket": "...", "key": "..."}')
    missing = [field for field in ("bucket", "key") if not payload.get(field)]
    if missing:
        raise BadRequest("missing field(s): " + ", ".join(missing))
    bucket, key = payload["bucket"], payload["key"]
    if not isinstance(bucket, str) or not isinstance(key, str):
        raise BadRequest("'bucket' and 'key' must be strings")
    return [ObjectEvent(bucket=bucket, key=key)]
