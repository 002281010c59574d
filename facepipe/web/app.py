"""The application factory: `create_app` builds the web tier for given settings and registers
its Blueprints (upload, classify, results, pictures, metrics); the access check (token,
origin, and the server's early refusals), the security headers and error answers are the app's."""

from __future__ import annotations

import threading

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from facepipe import logs
from facepipe.clients import s3_client
from facepipe.settings import Settings
from facepipe.web import access, classify, metrics, pictures, results, services, upload
from facepipe.web.access import Refusal
from facepipe.web.formdata import SNIFF_WINDOW
from facepipe.web.responses import reject
from facepipe.web.server import UPLOADS
from facepipe.web.services import Services
from facepipe.web.settings import WebSettings
from facepipe.web.store import ResultStore

log = logs.get("facepipe.web")

#: Allowance for the multipart framing around the file itself.
MULTIPART_OVERHEAD = SNIFF_WINDOW
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def create_app(settings: Settings, web: WebSettings | None = None, s3=None) -> Flask:
    """The web tier for `settings` (buckets of both functions, S3 endpoint); `s3` replaces the
    client in tests."""
    web = web or WebSettings()
    s3 = s3 if s3 is not None else s3_client(settings, caller="web")
    shared = Services(
        settings=settings,
        web=web,
        s3=s3,
        store=ResultStore(s3, settings.output_bucket),
        image_store=ResultStore(s3, settings.image_output_bucket),
        sends=threading.BoundedSemaphore(web.concurrent_sends),
    )

    app = Flask(__name__)  # templates/ and static/ beside this module
    app.config["MAX_CONTENT_LENGTH"] = shared.max_upload_bytes + MULTIPART_OVERHEAD
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[services.EXTENSION] = shared
    app.extensions[UPLOADS] = {"/": upload.ACCEPTS, "/classify": classify.ACCEPTS}

    app.before_request(check_access)
    app.after_request(security_headers)
    app.register_error_handler(RequestEntityTooLarge, too_large)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, internal_error)
    app.register_blueprint(upload.bp)
    app.register_blueprint(classify.bp)
    app.register_blueprint(results.bp)
    app.register_blueprint(pictures.bp)
    app.register_blueprint(metrics.bp)
    return app


def check_access() -> Response | None:
    """Answer a request the server refused before reading its body, or one without the token
    (WEB_TOKEN) or from a foreign origin; None lets it through."""
    refusal: Refusal | None = request.environ.get(access.ENVIRON_KEY)
    early = refusal is not None
    if refusal is None:
        refusal = access.check(services.current().web, request.method, request.path, request.headers.get)
    if refusal is None:
        return None
    log.info(
        "request refused", method=request.method, path=request.path, outcome="rejected", status=refusal.status,
        detail=refusal.message, before_body=early,
    )  # fmt: skip
    response = reject(refusal.status, refusal.message)
    for name, value in refusal.headers:
        response.headers.add(name, value)
    return response


def security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    # Never a referrer to other sites; `same-origin`, not `no-referrer`, so that the upload
    # form's POST carries its real Origin (under `no-referrer` browsers send `Origin: null`,
    # which the origin check refuses).
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def too_large(exc: RequestEntityTooLarge) -> Response:
    """A body over MAX_CONTENT_LENGTH, refused before the form is parsed."""
    return reject(413, f"the upload is larger than the limit of {services.current().max_upload_bytes} bytes")


def http_error(exc: HTTPException) -> Response:
    return reject(exc.code or 500, exc.description or exc.name)


def internal_error(exc: Exception) -> Response:
    log.exception("unhandled error", method=request.method, path=request.path, outcome="internal_error", status=500)
    return reject(500, "internal error (see the web tier's log)")
