"""The HTTP front: `POST /` for RGW's bucket notifications, `/healthz` and `/metrics`.

`POST /` takes `{"Records": [...]}` (at most MAX_BODY_BYTES). Every record must carry the
shared token as `opaqueData` (401 when one has none, 403 when one is wrong; nothing is queued
then). Each record is then ignored (a bucket without a route, not an object-created event, an
unusable key), a duplicate of a queued one, accepted, or rejected (backlog full or stopping: the
answer is 503 so that a persistent topic delivers it again). The record says all that is
needed: the listener asks S3 nothing. The answer is the count per outcome.
"""

from __future__ import annotations

import json

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.exceptions import HTTPException

from facepipe import logs
from facepipe.events import BadRequest, ObjectEvent, check_record_tokens, parse_records
from facepipe.keys import validate_key
from facepipe.notifier.jobs import Job
from facepipe.notifier.metrics import EVENT_OUTCOMES, IGNORED, REJECTED
from facepipe.notifier.service import Notifier

log = logs.get("facepipe.notifier")

MAX_BODY_BYTES = 1024 * 1024


def _ignore_reason(notifier: Notifier, event: ObjectEvent) -> str | None:
    if notifier.route_for(event.bucket) is None:
        return "no route for this bucket"
    if not event.is_object_created:
        return f"{event.event_name or 'an event without a name'} creates no object"
    try:
        validate_key(event.key)
    except ValueError as exc:
        return str(exc)
    return None


def handle_event(notifier: Notifier, event: ObjectEvent) -> str:
    """Queue one authenticated record unless it is to be ignored; returns its outcome."""
    reason = _ignore_reason(notifier, event)
    if reason is not None:
        log.info("event ignored", key=event.key, bucket=event.bucket, detail=reason)
        return IGNORED
    outcome = notifier.submit(Job(event.bucket, event.key, event.etag, source="event"))
    if outcome == REJECTED:
        log.warning(
            "event rejected", key=event.key, bucket=event.bucket, outcome=outcome,
            detail="backlog full or stopping; left to the reconciler",
        )  # fmt: skip
    else:
        log.info(
            "event queued", key=event.key, bucket=event.bucket, function=notifier.function_of(event.bucket),
            outcome=outcome, etag=event.etag, event_name=event.event_name,
        )  # fmt: skip
    return outcome


def handle_events(notifier: Notifier, events: list[ObjectEvent]) -> dict[str, int]:
    """Filter and queue authenticated records; returns the count per outcome."""
    counts = dict.fromkeys(EVENT_OUTCOMES, 0)
    for event in events:
        outcome = handle_event(notifier, event)
        counts[outcome] += 1
        notifier.metrics.events.labels(outcome).inc()
    return counts


def create_app(notifier: Notifier) -> Flask:
    app = Flask("facepipe.notifier")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    def reject(status: int, reason: str) -> tuple[Response, int]:
        notifier.metrics.events.labels(REJECTED).inc()
        log.warning("notification rejected", status=status, detail=reason, remote=request.remote_addr)
        return jsonify(error=reason), status

    @app.post("/")
    def notify():
        raw = request.get_data(cache=False)
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError):
            return reject(400, "body is not valid JSON")
        try:
            events = parse_records(payload)
            check_record_tokens(events, notifier.settings.notify_token)
        except BadRequest as exc:
            return reject(exc.status, str(exc))
        counts = handle_events(notifier, events)
        return jsonify(counts), 503 if counts[REJECTED] else 200

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", backlog=notifier.pending())

    @app.get("/metrics")
    def metrics():
        return Response(notifier.metrics.exposition(), mimetype=CONTENT_TYPE_LATEST)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code == 413:
            return reject(413, f"body larger than {MAX_BODY_BYTES} bytes")
        return jsonify(error=exc.description or exc.name), exc.code

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        log.exception("internal error", method=request.method, path=request.path)
        return jsonify(error="internal error"), 500

    return app
