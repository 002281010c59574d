"""OpenFaaS python3-http handler: recognise the faces in one object of the input bucket.

Request: JSON ``{"bucket": "...", "key": "..."}`` or a raw S3 / Ceph RGW event
``{"Records": [...]}``. Answers 200 with the people found, 422 (with an error
record written to the output bucket) for media that cannot be read, 400/404 for
bad requests, 503 when storage or the database is unreachable (worth a retry).
"""

from __future__ import annotations

import json
import logging
import threading

from botocore.exceptions import BotoCoreError, ClientError

from facepipe.events import BadRequest, parse_function_request
from facepipe.pipeline import FaceRecognitionService, NotFound
from facepipe.settings import load_settings

log = logging.getLogger("facepipe.function")

_service: FaceRecognitionService | None = None
_service_lock = threading.Lock()


def service() -> FaceRecognitionService:
    """The per-process service: models, known faces and clients load once."""
    global _service
    with _service_lock:
        if _service is None:
            _service = FaceRecognitionService(load_settings())
        return _service


def warm_up() -> None:
    service()


def _response(status: int, body: dict) -> dict:
    return {
        "statusCode": status,
        "body": json.dumps(body, ensure_ascii=False),
        "headers": {"Content-Type": "application/json"},
    }


def _process_one(bucket: str, key: str) -> tuple[int, dict]:
    try:
        outcome = service().handle(bucket, key)
        return outcome.status, outcome.to_json()
    except BadRequest as exc:
        return 400, {"bucket": bucket, "key": key, "error": str(exc)}
    except ValueError as exc:  # an invalid key
        return 400, {"bucket": bucket, "key": key, "error": str(exc)}
    except NotFound as exc:
        return 404, {"bucket": bucket, "key": key, "error": str(exc)}
    except (ClientError, BotoCoreError) as exc:
        log.warning("key=%s outcome=unavailable detail=%s", key, exc)
        return 503, {"bucket": bucket, "key": key, "error": f"storage or database unavailable: {exc}"}
    except Exception:
        log.exception("key=%s outcome=internal_error", key)
        return 500, {"bucket": bucket, "key": key, "error": "internal error; see the function's log"}


def handle(event, context) -> dict:
    if event.method != "POST":
        return _response(405, {"error": 'use POST with a JSON body {"bucket": "...", "key": "..."}'})
    try:
        payload = json.loads(event.body or b"")
    except (ValueError, UnicodeDecodeError):
        return _response(400, {"error": "the request body is not valid JSON"})
    try:
        requests = parse_function_request(payload)
    except BadRequest as exc:
        return _response(400, {"error": str(exc)})
    if not requests:
        return _response(200, {"results": [], "detail": "no object-created records in the event"})
    if len(requests) == 1 and "Records" not in payload:
        status, body = _process_one(requests[0].bucket, requests[0].key)
        return _response(status, body)
    answers = [_process_one(r.bucket, r.key) for r in requests]
    return _response(max(status for status, _ in answers), {"results": [body for _, body in answers]})
