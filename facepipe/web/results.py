"""The results page: every processed video, newest first (`/results`), the table body the
page refreshes itself with (`/results/rows`) and the same as JSON (`/results.json`)."""

from __future__ import annotations

import hashlib
import json
import posixpath
from datetime import UTC

from botocore.exceptions import BotoCoreError, ClientError
from flask import Blueprint, Response, jsonify, render_template, request

from facepipe import logs
from facepipe.web import services
from facepipe.web.responses import iso_time, picture_url, reject
from facepipe.web.services import Services
from facepipe.web.store import Row

log = logs.get("facepipe.web")
bp = Blueprint("results", __name__)


def row_view(svc: Services, row: Row) -> dict:
    """One table row: the stem, its people or error record, its picture and when it was written."""
    try:
        body = svc.store.details(row)
        people, error = body.people, body.error
    except (BotoCoreError, ClientError) as exc:  # deleted or replaced meanwhile
        people, error = [], {"error": "unavailable", "detail": str(exc)}
    return {
        "stem": row.stem,
        "name": posixpath.basename(row.stem),
        "folder": posixpath.dirname(row.stem),
        "output_key": row.answer.key,
        "status": "error" if error else "done",
        "people": [vars(person) for person in people],
        "error": error,
        "picture_key": row.picture.key if row.picture else None,
        "picture_url": picture_url(row.picture),
        "processed_at": iso_time(row.answer.modified),
        "processed": row.answer.modified.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def page_view(svc: Services, page: int) -> dict:
    """What the results page shows for `page`: its rows with their details, the page count,
    counts by state, and a version that changes whenever any of it changes."""
    rows = svc.store.rows()
    size = svc.web.page_size
    pages = max(1, -(-len(rows) // size))
    page = min(max(1, page), pages)
    counts = {
        "total": len(rows),
        "done": sum(row.state == "done" for row in rows),
        "error": sum(row.state == "error" for row in rows),
    }
    items = [row_view(svc, row) for row in rows[(page - 1) * size : page * size]]
    view = {"page": page, "pages": pages, "counts": counts, "items": items}
    view["version"] = hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()[:16]
    return view


def requested_page() -> int:
    try:
        return int(request.args.get("page", "1"))
    except ValueError:
        return 1


@bp.errorhandler(BotoCoreError)
@bp.errorhandler(ClientError)
def storage_unavailable(exc: Exception) -> Response:
    """The output bucket cannot be listed or read: 503, for every view of this Blueprint."""
    bucket = services.current().settings.output_bucket
    log.warning("output bucket unreadable", output_bucket=bucket, outcome="unavailable", status=503, error=str(exc))
    return reject(503, f"the output bucket {bucket!r} cannot be read right now")


@bp.get("/results")
def page() -> str:
    svc = services.current()
    return render_template("results.html", bucket=svc.settings.output_bucket, **page_view(svc, requested_page()))


@bp.get("/results/rows")
def rows() -> str:
    return render_template("_rows.html", **page_view(services.current(), requested_page()))


@bp.get("/results.json")
def as_json() -> Response:
    return jsonify(page_view(services.current(), requested_page()))
