"""A function's `handle(event, context)`: one request -> the objects it names -> `ObjectFunction`.

The same for every function; only the `Task` differs. Request: JSON ``{"bucket": "...",
"key": "..."}`` or a raw S3 / Ceph RGW event ``{"Records": [...]}``, the latter only when every
record carries the function's NOTIFY_TOKEN (401 without, 403 with a wrong one or when the
function has none: events normally reach it through the notifier) and names at most
MAX_RECORDS_PER_REQUEST objects (413 beyond; nothing is processed). Answers 200 with the task's
answer, 422 (with an error record written to the output bucket) for media that cannot be used,
400 for a bad request, 404 for an object that does not exist, 503 when storage or the database
is unreachable, the object waited its whole time limit (FUNCTION_TIMEOUT_S) behind others, or
the function is not configured correctly (it then also reports not ready): none of these is the
object's fault, so the notifier retries without counting them toward the object's dead letter;
500 for a bug. Work past the time limit stops with a `timeout` error record (422).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from facepipe import logs
from facepipe.events import BadRequest, ObjectEvent, authorize_function_request, parse_function_request
from facepipe.function import Busy, NotFound, ObjectFunction, Task
from facepipe.settings import ConfigurationError, Settings, load_settings

log = logs.get("facepipe.function")


def _response(status: int, body: dict) -> dict:
    return {
        "statusCode": status,
        "body": json.dumps(body, ensure_ascii=False),
        "headers": {"Content-Type": "application/json"},
    }


class ObjectHandler:
    """The per-process function of one task: its models and clients load once, on first use.

    A configuration error is kept and raised again on every call: it does not go away until
    the operator fixes the configuration and the function is restarted.
    """

    def __init__(self, build_task: Callable[[Settings], Task]) -> None:
        self.build_task = build_task
        self._function: ObjectFunction | None = None
        self._configuration_error: ConfigurationError | None = None
        self._lock = threading.Lock()

    def function(self) -> ObjectFunction:
        with self._lock:
            if self._configuration_error is not None:
                raise self._configuration_error
            if self._function is None:
                try:
                    settings = load_settings()
                    self._function = ObjectFunction(settings, self.build_task(settings))
                except (ConfigurationError, OSError) as exc:
                    error = exc if isinstance(exc, ConfigurationError) else ConfigurationError(str(exc))
                    self._configuration_error = error
                    raise error from exc
            return self._function

    def warm_up(self) -> None:
        """Load everything before the first request; raises ConfigurationError."""
        self.function()

    def not_ready_reason(self) -> str | None:
        """Why the function cannot serve, or None when it can (readiness)."""
        return str(self._configuration_error) if self._configuration_error is not None else None

    def reset(self) -> None:
        """Forget the function and any configuration error: the next call loads it again."""
        with self._lock:
            self._function = None
            self._configuration_error = None

    def process_one(self, bucket: str, key: str) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON answer for one object."""
        try:
            outcome = self.function().handle(bucket, key)
            return outcome.status, outcome.to_json()
        except BadRequest as exc:
            return 400, {"bucket": bucket, "key": key, "error": str(exc)}
        except NotFound as exc:
            return 404, {"bucket": bucket, "key": key, "error": str(exc)}
        except Busy as exc:
            return 503, {"bucket": bucket, "key": key, "error": f"busy, retry later: {exc}"}
        except ConfigurationError as exc:
            log.error("not configured", key=key, bucket=bucket, outcome="configuration_error", detail=str(exc))
            return 503, {"bucket": bucket, "key": key, "error": f"the function is not configured correctly: {exc}"}
        except (ClientError, BotoCoreError) as exc:
            log.warning(
                "storage or database unavailable", key=key, bucket=bucket, outcome="unavailable", detail=str(exc)
            )
            return 503, {"bucket": bucket, "key": key, "error": f"storage or database unavailable: {exc}"}
        except Exception:
            log.exception("internal error", key=key, bucket=bucket, outcome="internal_error")
            return 500, {"bucket": bucket, "key": key, "error": "internal error; see the function's log"}

    def _requests(self, payload: object) -> list[ObjectEvent]:
        """The objects a request names; raw records only with this function's token, and not
        more of them than it takes (BadRequest with the status to answer)."""
        if isinstance(payload, dict) and "Records" in payload:
            settings = self.function().settings
            return authorize_function_request(payload, settings.notify_token, settings.max_records_per_request)
        return parse_function_request(payload)

    def handle(self, event, context) -> dict:
        """The python3-http template's entry point."""
        if event.method != "POST":
            return _response(405, {"error": 'use POST with a JSON body {"bucket": "...", "key": "..."}'})
        try:
            payload = json.loads(event.body or b"")
        except (ValueError, UnicodeDecodeError):
            return _response(400, {"error": "the request body is not valid JSON"})
        try:
            requests = self._requests(payload)
        except BadRequest as exc:
            if exc.status != 400:
                log.warning("request refused", status=exc.status, detail=str(exc))
            return _response(exc.status, {"error": str(exc)})
        except ConfigurationError as exc:
            return _response(503, {"error": f"the function is not configured correctly: {exc}"})
        if not requests:
            return _response(200, {"results": [], "detail": "no object-created records in the event"})
        if len(requests) == 1 and "Records" not in payload:
            status, body = self.process_one(requests[0].bucket, requests[0].key)
            return _response(status, body)
        answers = [self.process_one(r.bucket, r.key) for r in requests]
        return _response(max(status for status, _ in answers), {"results": [body for _, body in answers]})
