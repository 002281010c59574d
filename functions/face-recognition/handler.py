"""OpenFaaS python3-http handler: recognise the faces in one object of the input bucket.

Request: JSON ``{"bucket": "...", "key": "..."}`` or a raw S3 / Ceph RGW event
``{"Records": [...]}``. Answers 200 with the people found, 422 (with an error record written
to the output bucket) for media that cannot be read, 400 for a bad request, 404 for an object
that does not exist, 503 when storage or the database is unreachable or the object waited its
whole time limit (FUNCTION_TIMEOUT_S) behind others (worth a retry), 500 for a configuration
error (the function then also reports not ready) or a bug. Work past the time limit stops with
a `timeout` error record (422).
"""

from __future__ import annotations

import json
import threading

from botocore.exceptions import BotoCoreError, ClientError

from facepipe import logs
from facepipe.events import BadRequest, parse_function_request
from facepipe.faces.task import FaceRecognitionTask
from facepipe.function import Busy, NotFound, ObjectFunction
from facepipe.settings import ConfigurationError, load_settings

log = logs.get("facepipe.function")

_function: ObjectFunction | None = None
_configuration_error: ConfigurationError | None = None
_lock = threading.Lock()


def function() -> ObjectFunction:
    """The per-process function: models, known faces and clients load once. A configuration
    error is kept and raised again on every call: it does not go away until the operator
    fixes the configuration and the function is restarted."""
    global _function, _configuration_error
    with _lock:
        if _configuration_error is not None:
            raise _configuration_error
        if _function is None:
            try:
                settings = load_settings()
                _function = ObjectFunction(settings, FaceRecognitionTask(settings))
            except (ConfigurationError, OSError) as exc:
                _configuration_error = exc if isinstance(exc, ConfigurationError) else ConfigurationError(str(exc))
                raise _configuration_error from exc
        return _function


def warm_up() -> None:
    """Load everything before the first request; raises ConfigurationError."""
    function()


def not_ready_reason() -> str | None:
    """Why the function cannot serve, or None when it can (readiness)."""
    return str(_configuration_error) if _configuration_error is not None else None


def _response(status: int, body: dict) -> dict:
    return {
        "statusCode": status,
        "body": json.dumps(body, ensure_ascii=False),
        "headers": {"Content-Type": "application/json"},
    }


def _process_one(bucket: str, key: str) -> tuple[int, dict]:
    try:
        outcome = function().handle(bucket, key)
        return outcome.status, outcome.to_json()
    except BadRequest as exc:
        return 400, {"bucket": bucket, "key": key, "error": str(exc)}
    except NotFound as exc:
        return 404, {"bucket": bucket, "key": key, "error": str(exc)}
    except Busy as exc:
        return 503, {"bucket": bucket, "key": key, "error": f"busy, retry later: {exc}"}
    except ConfigurationError as exc:
        log.error("not configured", key=key, bucket=bucket, outcome="configuration_error", detail=str(exc))
        return 500, {"bucket": bucket, "key": key, "error": f"the function is not configured correctly: {exc}"}
    except (ClientError, BotoCoreError) as exc:
        log.warning("storage or database unavailable", key=key, bucket=bucket, outcome="unavailable", detail=str(exc))
        return 503, {"bucket": bucket, "key": key, "error": f"storage or database unavailable: {exc}"}
    except Exception:
        log.exception("internal error", key=key, bucket=bucket, outcome="internal_error")
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
