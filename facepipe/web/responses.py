"""Answers in the form the client asked for: plain text, or JSON (`Accept: application/json`
or `?format=json`)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

from flask import Response, jsonify, request, url_for

from facepipe.answers import StoredAnswer


def wants_json() -> bool:
    if request.args.get("format") == "json":
        return True
    best = request.accept_mimetypes.best_match(["text/plain", "application/json"])
    return best == "application/json"


def plain(text: str, status: int, **headers: str) -> Response:
    return Response(text, status=status, mimetype="text/plain", headers=headers)


def reject(status: int, message: str) -> Response:
    """An error answer: `error: <message>` as text, or `{"status": "rejected", "error": ...}`."""
    if wants_json():
        response = jsonify({"status": "rejected", "error": message})
        response.status_code = status
        return response
    return plain(f"error: {message}\n", status)


def picture_url(picture: StoredAnswer | None, endpoint: str = "pictures.picture") -> str | None:
    """The picture's URL (`endpoint` serves the output bucket it is in), versioned by its ETag
    so that browsers may cache it for good."""
    if picture is None:
        return None
    url = url_for(endpoint, key=picture.key)
    return f"{url}?v={quote(picture.etag[:16])}" if picture.etag else url


def iso_time(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None
