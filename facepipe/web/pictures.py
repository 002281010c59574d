"""The annotated pictures of the output buckets (`/picture/<key>` of the face function's,
`/classify/picture/<key>` of the classification function's; streamed, cached by ETag) and the
liveness probe (`/healthz`). The page's own CSS and JavaScript are Flask's static files."""

from __future__ import annotations

from collections.abc import Iterator

from botocore.exceptions import BotoCoreError, ClientError
from flask import Blueprint, Response, request

from facepipe import answers, logs
from facepipe.clients import is_missing
from facepipe.web import services
from facepipe.web.responses import plain, reject
from facepipe.web.services import Services

log = logs.get("facepipe.web")
bp = Blueprint("pictures", __name__)

CHUNK_BYTES = 64 * 1024


@bp.get("/picture/<path:key>")
def picture(key: str) -> Response:
    """A face result's picture; `?v=<etag>` URLs (see responses.picture_url) may be cached for good."""
    svc = services.current()
    return _serve(svc, svc.settings.output_bucket, key)


@bp.get("/classify/picture/<path:key>")
def classified(key: str) -> Response:
    """A classified photo's picture (its top label written on it), from IMAGE_OUTPUT_BUCKET."""
    svc = services.current()
    return _serve(svc, svc.settings.image_output_bucket, key)


def _serve(svc: Services, bucket: str, key: str) -> Response:
    if not key.endswith(answers.PICTURE_SUFFIX):
        return reject(404, "not a picture")
    try:
        obj = svc.s3.get_object(Bucket=bucket, Key=key)
    except (BotoCoreError, ClientError) as exc:
        if isinstance(exc, ClientError) and is_missing(exc):
            return reject(404, f"no picture {key!r}")
        log.warning(
            "picture unreadable", output_bucket=bucket, output_key=key, outcome="unavailable", status=503,
            error=str(exc),
        )  # fmt: skip
        return reject(503, "the output bucket cannot be read right now")
    etag = str(obj.get("ETag", "")).strip('"')
    body = obj["Body"]
    cache = "public, max-age=86400, immutable" if request.args.get("v") else "no-cache"
    if etag and etag in request.if_none_match:
        body.close()
        return Response(status=304, headers={"ETag": f'"{etag}"', "Cache-Control": cache})
    return Response(
        _chunks(body),
        mimetype="image/jpeg",
        headers={"Content-Length": str(obj["ContentLength"]), "ETag": f'"{etag}"', "Cache-Control": cache},
    )


def _chunks(body) -> Iterator[bytes]:
    """An S3 object body in chunks, closed when the response is done (or abandoned)."""
    try:
        yield from body.iter_chunks(CHUNK_BYTES)
    finally:
        body.close()


@bp.get("/healthz")
def healthz() -> Response:
    return plain("ok\n", 200)
