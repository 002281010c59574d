"""The results page: every processed video and every classified image, newest first
(`/results`), the tables the page refreshes itself with (`/results/rows`) and the same as JSON
(`/results.json`: the videos at the top level, the images under "images").

An error record is a row with status "error"; a dead letter (error `failed`: the notifier gave
up after the function crashed or timed out on the object again and again) also carries the
number of `attempts` and is shown as "failed after N attempts" with the last error."""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Callable
from datetime import UTC

from botocore.exceptions import BotoCoreError, ClientError
from flask import Blueprint, Response, jsonify, render_template, request

from facepipe import logs
from facepipe.answers import FAILED, AnswerBody
from facepipe.web import services
from facepipe.web.responses import iso_time, picture_url, reject
from facepipe.web.services import Services
from facepipe.web.store import ResultStore, Row

log = logs.get("facepipe.web")
bp = Blueprint("results", __name__)


def _row_base(store: ResultStore, row: Row, picture_endpoint: str) -> tuple[dict, AnswerBody | None]:
    """The fields every row has, and the parsed answer (None when it cannot be read)."""
    body: AnswerBody | None = None
    try:
        body = store.details(row)
        error = body.error
    except (BotoCoreError, ClientError) as exc:  # deleted or replaced meanwhile
        error = {"error": "unavailable", "detail": str(exc)}
    view = {
        "stem": row.stem,
        "name": posixpath.basename(row.stem),
        "folder": posixpath.dirname(row.stem),
        "output_key": row.answer.key,
        "status": "error" if error else "done",
        "error": error,
        # A dead letter's failed invocations (None for every other row).
        "attempts": error.get("attempts") if error and error["error"] == FAILED else None,
        "picture_key": row.picture.key if row.picture else None,
        "picture_url": picture_url(row.picture, picture_endpoint),
        "processed_at": iso_time(row.answer.modified),
        "processed": row.answer.modified.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    return view, body


def row_view(svc: Services, row: Row) -> dict:
    """One row of the videos: the stem, its people or error record, its picture and when it was written."""
    view, body = _row_base(svc.store, row, "pictures.picture")
    view["people"] = [vars(person) for person in body.people] if body else []
    return view


def image_row_view(svc: Services, row: Row) -> dict:
    """One row of the classified images: the top label and its score, all five labels, or the
    error record; the picture with the top label written on it."""
    view, body = _row_base(svc.image_store, row, "pictures.classified")
    labels = sorted(body.labels, key=lambda label: label.rank) if body else []
    view["labels"] = [vars(label) for label in labels]
    view["label"] = labels[0].label if labels else None
    view["score"] = labels[0].score if labels else None
    return view


def _section(rows: list[Row], page: int, size: int, view: Callable[[Row], dict]) -> dict:
    """One page of `rows`, with the page count and counts by state."""
    pages = max(1, -(-len(rows) // size))
    page = min(max(1, page), pages)
    counts = {
        "total": len(rows),
        "done": sum(row.state == "done" for row in rows),
        "error": sum(row.state == "error" for row in rows),
    }
    items = [view(row) for row in rows[(page - 1) * size : page * size]]
    return {"page": page, "pages": pages, "counts": counts, "items": items}


def image_section(svc: Services, page: int) -> dict:
    """The classified images' part of the page. Without the image output bucket (a stack that
    does not classify images) it is empty and says why; the videos are still shown."""
    try:
        rows = svc.image_store.rows()
    except (BotoCoreError, ClientError) as exc:
        bucket = svc.settings.image_output_bucket
        log.warning("output bucket unreadable", output_bucket=bucket, outcome="unavailable", error=str(exc))
        section = _section([], 1, svc.web.page_size, lambda row: {})
        section["unavailable"] = f"the image output bucket {bucket!r} cannot be read"
        return section
    return _section(rows, page, svc.web.page_size, lambda row: image_row_view(svc, row))


def page_view(svc: Services, page: int, images_page: int = 1) -> dict:
    """What the results page shows: a page of videos (`page`), a page of classified images
    (`images_page`; under "images"), and a version that changes whenever any of it changes."""
    view = _section(svc.store.rows(), page, svc.web.page_size, lambda row: row_view(svc, row))
    view["images"] = image_section(svc, images_page)
    view["version"] = hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()[:16]
    return view


def requested_page(name: str = "page") -> int:
    try:
        return int(request.args.get(name, "1"))
    except ValueError:
        return 1


def requested_view(svc: Services) -> dict:
    return page_view(svc, requested_page(), requested_page("images_page"))


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
    return render_template(
        "results.html",
        bucket=svc.settings.output_bucket,
        image_bucket=svc.settings.image_output_bucket,
        **requested_view(svc),
    )


@bp.get("/results/rows")
def rows() -> str:
    return render_template("_rows.html", **requested_view(services.current()))


@bp.get("/results.json")
def as_json() -> Response:
    return jsonify(requested_view(services.current()))
