"""Structured logs: one line per event, the same keys in every component.

Every line has `ts` (UTC, ISO 8601), `level`, `logger` and `event` (a short phrase: what
happened), then the event's fields (those that are not None). Field names are shared: `key` and `bucket` (the input
object), `outcome`, `status` (HTTP), `seconds`, `attempts`, `error` and `detail`.

`LOG_FORMAT=json` (the default) writes one JSON object per line, for programs and log
collectors; `LOG_FORMAT=text` writes `ts level logger event key=value ...` for people.

    log = logs.get("facepipe.notifier")
    log.info("invoked", key=key, outcome="ok", seconds=1.2)
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import IO, Any

_PASSED_TO_LOGGING = frozenset({"exc_info", "stack_info", "stacklevel", "extra"})


class FieldLogger(logging.LoggerAdapter):
    """A logger whose keyword arguments are the event's fields."""

    def process(self, msg: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        fields = {name: kwargs.pop(name) for name in list(kwargs) if name not in _PASSED_TO_LOGGING}
        kwargs["extra"] = {**kwargs.get("extra", {}), "fields": fields}
        return msg, kwargs


def get(name: str) -> FieldLogger:
    return FieldLogger(logging.getLogger(name), {})


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    line: dict[str, Any] = {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": record.getMessage(),
    }
    line.update((name, value) for name, value in getattr(record, "fields", {}).items() if value is not None)
    if record.exc_info:
        line["exception"] = logging.Formatter().formatException(record.exc_info)
    return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_record_fields(record), ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = _record_fields(record)
        exception = line.pop("exception", None)
        head = " ".join(str(line.pop(name)) for name in ("ts", "level", "logger", "event"))
        pairs = (f"{name}={json.dumps(value, ensure_ascii=False, default=str)}" for name, value in line.items())
        text = " ".join([head, *pairs])
        return text + ("\n" + exception if exception else "")


def setup(level: str | None = None, fmt: str | None = None, stream: IO[str] | None = None) -> None:
    """Send every logger's records to `stream` (stdout) in LOG_FORMAT at LOG_LEVEL."""
    fmt = (fmt or os.environ.get("LOG_FORMAT") or "json").lower()
    if fmt not in ("json", "text"):
        raise ValueError(f"LOG_FORMAT must be json or text, not {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("LOG_LEVEL") or "INFO").upper())
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
