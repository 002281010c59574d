"""The web tier: POST a picture or video, get back who is in it; browse every result.

    POST /                 multipart field `inputFile`: stores the file in the input bucket under
                           `web/<random id>/<file name>`, waits until the pipeline (bucket
                           notification -> notifier -> function) has written the result or the
                           error record, and answers `<file stem>:<name>[,<name>...]` as plain
                           text, or the whole result as JSON (`Accept: application/json`).
    GET  /result/<key>     the same answer for an input key (e.g. after a 202 timeout answer)
    GET  /results          every processed video, newest first, with its picture, refreshing
    GET  /results.json     the same as JSON; /results/rows the table body the page refreshes with
    GET  /picture/<key>    a `<stem>.jpg` picture from the output bucket
    GET  /healthz          liveness

The web tier never calls the function: it only writes to the input bucket and reads the
output bucket, so a web upload goes through exactly the path every other upload takes.
Every upload gets its own key, so concurrent users sending files with the same name never
see each other's answers, and a stale result of an older upload is never taken for a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import os
import posixpath
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from urllib.parse import quote

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError
from flask import Flask, Response, jsonify, render_template, request, url_for
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from facepipe import answers, keys
from facepipe.answers import AnswerBody, StoredAnswer, Student, Version
from facepipe.clients import s3_client
from facepipe.settings import Settings

log = logging.getLogger("facepipe.web")

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

#: Web uploads go under this prefix of the input bucket: `web/<id>/<original file name>`.
WEB_PREFIX = "web/"
FORM_FIELD = "inputFile"
#: Allowance for the multipart framing around the file itself.
MULTIPART_OVERHEAD = 64 * 1024
SNIFF_BYTES = 512
MAX_NAME_CHARS = 200
_TRANSFER = TransferConfig(use_threads=False)

#: Magic numbers of the formats the function reads, and the extension a file without a known
#: extension is stored with (the function picks its decoder from the content, not the name).
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", ".jpg"),
    (0, b"\x89PNG\r\n\x1a\n", ".png"),
    (0, b"GIF87a", ".gif"),
    (0, b"GIF89a", ".gif"),
    (0, b"BM", ".bmp"),
    (0, b"II*\x00", ".tif"),
    (0, b"MM\x00*", ".tif"),
    (4, b"ftyp", ".mp4"),  # MP4, QuickTime, 3GP
    (4, b"moov", ".mov"),
    (4, b"mdat", ".mov"),
    (0, b"\x1aE\xdf\xa3", ".mkv"),  # Matroska, WebM
    (0, b"\x00\x00\x01\xba", ".mpg"),
    (0, b"\x00\x00\x01\xb3", ".mpg"),
    (0, b"FLV\x01", ".flv"),
    (0, b"0&\xb2u\x8ef\xcf\x11", ".wmv"),  # ASF
    (0, b"OggS", ".ogv"),
)


def sniff(head: bytes) -> str | None:
    """The extension for a recognised image or video signature, else None."""
    for offset, magic, suffix in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return suffix
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"WEBP"):
        return ".avi" if head[8:12] == b"AVI " else ".webp"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:  # MPEG transport stream
        return ".ts"
    return None


def looks_like_text(head: bytes) -> bool:
    """True when the first bytes are plain text (a page, a script, a CSV): never an image or video."""
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the end of the sample is still text.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return all(ch.isprintable() or ch in "\t\r\n\f" for ch in text)


def clean_name(filename: str) -> str:
    """The file name a client sent, without folders or control characters, at most 200 characters."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    if name in ("", ".", ".."):
        return ""
    if len(name) > MAX_NAME_CHARS:
        base, ext = posixpath.splitext(name)
        ext = ext if len(ext) <= 16 else ""
        name = base[: MAX_NAME_CHARS - len(ext)] + ext
    return name


def display_stem(key: str) -> str:
    """The stem a user knows: `web/<id>/test_0.mp4` -> `test_0`, `a/b/clip.mp4` -> `clip`."""
    return posixpath.basename(answers.stem(key))


# ------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class WebSettings:
    """The web tier's own settings (environment or `.env`, read after `load_settings`)."""

    result_timeout_s: float = 120.0  # WEB_RESULT_TIMEOUT_S: longest a POST waits for its result
    poll_s: float = 0.15  # WEB_POLL_S: first interval between looks at the output bucket
    max_upload_bytes: int = 0  # WEB_MAX_UPLOAD_BYTES: 0 = MAX_OBJECT_BYTES
    page_size: int = 50  # WEB_PAGE_SIZE: rows per results page
    threads: int = 64  # WEB_THREADS: waitress worker threads = requests served at once


def load_web_settings(environ: dict[str, str] | None = None) -> WebSettings:
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, float | int] = {}
    for name, default in vars(WebSettings()).items():
        raw = environ.get("WEB_" + name.upper(), "").strip()
        if not raw:
            continue
        try:
            value = type(default)(raw)
        except ValueError:
            raise ValueError(f"WEB_{name.upper()} must be a number, not {raw!r}") from None
        if value < 0 or (name in ("page_size", "threads") and value < 1):
            raise ValueError(f"WEB_{name.upper()} is out of range: {raw!r}")
        values[name] = value
    return WebSettings(**values)


# ------------------------------------------------------------------------------ answers


@dataclass
class Answer:
    """What the output bucket says about one input key."""

    key: str
    state: str  # done | error
    stored: StoredAnswer
    people: list[Student] = field(default_factory=list)
    error: dict | None = None
    picture: StoredAnswer | None = None

    @property
    def output_key(self) -> str:
        return self.stored.key

    @property
    def modified(self) -> datetime:
        return self.stored.modified


@dataclass(frozen=True)
class Row:
    """One line of the results page: the newest answer for a stem of the output bucket."""

    stem: str
    answer: StoredAnswer
    picture: StoredAnswer | None

    @property
    def state(self) -> str:
        return "error" if self.answer.is_error else "done"


class ResultStore:
    """Reads results, error records and pictures from the output bucket (parsed bodies cached
    per key and ETag; the bucket listing shared for a second between page refreshes)."""

    CACHE_LIMIT = 5000
    LISTING_TTL_S = 1.0

    def __init__(self, s3, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket
        self._lock = threading.Lock()
        self._bodies: dict[tuple[str, str], AnswerBody] = {}
        self._listing: tuple[float, list[Row]] | None = None

    def read(self, answer: StoredAnswer) -> AnswerBody:
        """The parsed answer (people, or the error record), cached per key and ETag."""
        ident = (answer.key, answer.etag)
        with self._lock:
            cached = self._bodies.get(ident)
        if cached is not None:
            return cached
        body = answers.read(self.s3, self.bucket, answer)
        with self._lock:
            if len(self._bodies) >= self.CACHE_LIMIT:
                self._bodies.clear()
            self._bodies[ident] = body
        return body

    def lookup(self, key: str) -> Answer | None:
        """The answer for input `key`, or None while there is none (one LIST, one GET)."""
        found = answers.find(self.s3, self.bucket, key)
        newest = found.newest()
        if newest is None:
            return None
        body = self.read(newest)
        return Answer(
            key=key,
            state="error" if body.error else "done",
            stored=body.answer,
            people=body.people,
            error=body.error,
            picture=found.picture if body.error is None else None,
        )

    def rows(self) -> list[Row]:
        """Every answer in the output bucket, newest first (listing cached for LISTING_TTL_S)."""
        now = time.monotonic()
        with self._lock:
            if self._listing is not None and now - self._listing[0] < self.LISTING_TTL_S:
                return self._listing[1]
        rows = []
        for base, found in answers.index(answers.list_objects(self.s3, self.bucket)).items():
            newest = found.newest()
            if newest is not None:
                rows.append(Row(base, newest, None if newest.is_error else found.picture))
        rows.sort(key=lambda row: (row.answer.modified, row.stem), reverse=True)
        with self._lock:
            self._listing = (time.monotonic(), rows)
        return rows

    def details(self, row: Row) -> AnswerBody:
        return self.read(row.answer)


# ------------------------------------------------------------------------------ the app


class UploadRejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Upload:
    name: str  # the file name as the client sent it (cleaned)
    key: str  # where it is stored in the input bucket
    size: int
    content_type: str


def _size_of(stream: IO[bytes]) -> int:
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(0)
    return size


def _wants_json() -> bool:
    if request.args.get("format") == "json":
        return True
    best = request.accept_mimetypes.best_match(["text/plain", "application/json"])
    return best == "application/json"


def _plain(text: str, status: int, **headers: str) -> Response:
    return Response(text, status=status, mimetype="text/plain", headers=headers)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def create_app(settings: Settings, web: WebSettings | None = None, s3=None) -> Flask:
    """The web tier for `settings` (buckets, S3 endpoint); `s3` replaces the client in tests."""
    web = web or WebSettings()
    s3 = s3 if s3 is not None else s3_client(settings)
    store = ResultStore(s3, settings.output_bucket)
    max_upload = web.max_upload_bytes or settings.max_object_bytes

    app = Flask(__name__, template_folder=str(TEMPLATES), static_folder=str(STATIC), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = max_upload + MULTIPART_OVERHEAD
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["facepipe.web"] = {"settings": settings, "web": web, "store": store, "s3": s3}

    def picture_url(picture: StoredAnswer | None) -> str | None:
        if picture is None:
            return None
        url = url_for("picture", key=picture.key)
        return f"{url}?v={quote(picture.etag[:16])}" if picture.etag else url

    def answer_json(answer: Answer | None, key: str, name: str, seconds: float | None = None) -> dict:
        body: dict = {
            "status": answer.state if answer else "pending",
            "file": name,
            "stem": display_stem(name or key),
            "bucket": settings.input_bucket,
            "key": key,
            "result_url": url_for("result", key=key),
            "output_key": None,
            "picture_key": None,
            "picture_url": None,
            "people": [],
            "error": None,
        }
        if answer is not None:
            body.update(
                output_key=answer.output_key,
                picture_key=answer.picture.key if answer.picture else None,
                picture_url=picture_url(answer.picture),
                people=[vars(person) for person in answer.people],
                error=answer.error,
                processed_at=_iso(answer.modified),
            )
        if seconds is not None:
            body["seconds"] = round(seconds, 3)
        return body

    def respond(answer: Answer | None, key: str, name: str, seconds: float | None = None) -> Response:
        """200 with the people, 422 with the error record, 202 while there is no answer yet."""
        stem = display_stem(name or key)
        status = 202 if answer is None else 422 if answer.state == "error" else 200
        headers = {"Location": url_for("result", key=key)} if answer is None else {}
        if _wants_json():
            response = jsonify(answer_json(answer, key, name, seconds))
            response.status_code = status
            response.headers.update(headers)
            return response
        if answer is None:
            text = (
                f"pending: {stem} is still being processed; look the answer up later with"
                f" GET {url_for('result', key=key)}\nkey: {key}\n"
            )
        elif answer.error is not None:
            text = f"{stem}: error {answer.error['error']}: {answer.error.get('detail', '')}\n"
        else:
            text = f"{stem}:" + ",".join(person.name for person in answer.people)  # the seeds' format
        return _plain(text, status, **headers)

    def reject(status: int, message: str) -> Response:
        if _wants_json():
            response = jsonify({"status": "rejected", "error": message})
            response.status_code = status
            return response
        return _plain(f"error: {message}\n", status)

    def accept_upload() -> Upload:
        """Check the posted file and store it in the input bucket under a fresh key."""
        file = request.files.get(FORM_FIELD)
        if file is None or not file.filename:
            raise UploadRejected(
                400, f"no file: send it as multipart form field {FORM_FIELD!r} (curl -F {FORM_FIELD}=@clip.mp4 URL)"
            )
        name = clean_name(file.filename)
        if not name:
            raise UploadRejected(400, f"unusable file name {file.filename!r}")
        stream = file.stream
        size = _size_of(stream)
        if size == 0:
            raise UploadRejected(400, f"{name} is empty")
        if size > max_upload:
            raise UploadRejected(413, f"{name} is {size} bytes; the limit is {max_upload} bytes")
        head = stream.read(SNIFF_BYTES)
        stream.seek(0)
        stored_name = name
        if not keys.is_media_name(name):
            suffix = sniff(head)
            if suffix is None:
                raise UploadRejected(
                    415, f"{name} is not an image or video this service reads (by its name and its content)"
                )
            stored_name = name + suffix
        elif looks_like_text(head):
            raise UploadRejected(415, f"{name} is named like an image or video but holds text")
        key = keys.validate_key(f"{WEB_PREFIX}{secrets.token_hex(8)}/{stored_name}")
        content_type = mimetypes.guess_type(stored_name)[0] or "application/octet-stream"
        s3.upload_fileobj(stream, settings.input_bucket, key, ExtraArgs={"ContentType": content_type}, Config=_TRANSFER)
        return Upload(name=name, key=key, size=size, content_type=content_type)

    def wait_for_answer(key: str, timeout_s: float) -> Answer | None:
        """Look at the output bucket until the answer exists (intervals growing from poll_s to
        four times that), or None after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        delay = web.poll_s
        while True:
            try:
                answer = store.lookup(key)
                if answer is not None:
                    return answer
            except (BotoCoreError, ClientError) as exc:
                log.warning("looking up %r failed: %s; trying again", key, exc)
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(delay, left))
            delay = min(delay * 1.2, web.poll_s * 4)

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    @app.get("/")
    def index() -> str:
        return render_template("index.html", max_upload=max_upload, timeout_s=web.result_timeout_s)

    @app.post("/")
    def upload() -> Response:
        started = time.monotonic()
        try:
            stored = accept_upload()
        except UploadRejected as exc:
            log.info("rejected upload: %s %s", exc.status, exc.message)
            return reject(exc.status, exc.message)
        except (BotoCoreError, ClientError) as exc:
            log.error("storing an upload failed: %s", exc)
            return reject(503, "the input bucket cannot be written right now; try again")
        timeout_s = web.result_timeout_s
        if "timeout" in request.args:
            try:
                timeout_s = min(max(0.0, float(request.args["timeout"])), web.result_timeout_s)
            except ValueError:
                pass
        answer = wait_for_answer(stored.key, timeout_s)
        seconds = time.monotonic() - started
        log.info(
            "upload name=%r key=%r bytes=%d state=%s seconds=%.2f",
            stored.name, stored.key, stored.size, answer.state if answer else "pending", seconds,
        )  # fmt: skip
        return respond(answer, stored.key, stored.name, seconds)

    @app.get("/result/<path:key>")
    def result(key: str) -> Response:
        try:
            keys.validate_key(key)
        except ValueError as exc:
            return reject(400, str(exc))
        uploaded: Version | None = None
        answer: Answer | None = None
        try:
            answer = store.lookup(key)
            head = s3.head_object(Bucket=settings.input_bucket, Key=key)
            uploaded = Version(str(head.get("ETag", "")).strip('"'), head["LastModified"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
                return reject(503, "the buckets cannot be read right now; try again")
            if answer is None:
                return reject(404, f"no upload with key {key!r}")
            # else: the input is gone; its answer is still worth showing
        except BotoCoreError:
            return reject(503, "the buckets cannot be read right now; try again")
        if answer is not None and uploaded is not None and not answers.is_current(answer.stored, uploaded):
            answer = None  # it answers an earlier upload under the same key: this one is pending
        return respond(answer, key, posixpath.basename(key))

    def page_view(page: int) -> dict:
        """What the results page shows for `page`: its rows with their details, the page count,
        counts by state, and a version that changes whenever any of it changes."""
        rows = store.rows()
        pages = max(1, -(-len(rows) // web.page_size))
        page = min(max(1, page), pages)
        items = []
        for row in rows[(page - 1) * web.page_size : page * web.page_size]:
            try:
                body = store.details(row)
                people, error = body.people, body.error
            except (BotoCoreError, ClientError) as exc:  # deleted or replaced meanwhile
                people, error = [], {"error": "unavailable", "detail": str(exc)}
            items.append(
                {
                    "stem": row.stem,
                    "name": posixpath.basename(row.stem),
                    "folder": posixpath.dirname(row.stem),
                    "output_key": row.answer.key,
                    "status": "error" if error else "done",
                    "people": [vars(person) for person in people],
                    "error": error,
                    "picture_key": row.picture.key if row.picture else None,
                    "picture_url": picture_url(row.picture),
                    "processed_at": _iso(row.answer.modified),
                    "processed": row.answer.modified.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
                }
            )
        counts = {
            "total": len(rows),
            "done": sum(row.state == "done" for row in rows),
            "error": sum(row.state == "error" for row in rows),
        }
        view = {"page": page, "pages": pages, "counts": counts, "items": items}
        view["version"] = hashlib.sha256(json.dumps(view, sort_keys=True).encode()).hexdigest()[:16]
        return view

    def page_number() -> int:
        try:
            return int(request.args.get("page", "1"))
        except ValueError:
            return 1

    def storage_unavailable() -> Response:
        return reject(503, f"the output bucket {settings.output_bucket!r} cannot be read right now")

    @app.get("/results")
    def results_page() -> Response | str:
        try:
            view = page_view(page_number())
        except (BotoCoreError, ClientError):
            return storage_unavailable()
        return render_template("results.html", bucket=settings.output_bucket, **view)

    @app.get("/results/rows")
    def results_rows() -> Response | str:
        try:
            view = page_view(page_number())
        except (BotoCoreError, ClientError):
            return storage_unavailable()
        return render_template("_rows.html", **view)

    @app.get("/results.json")
    def results_json() -> Response:
        try:
            view = page_view(page_number())
        except (BotoCoreError, ClientError):
            return storage_unavailable()
        return jsonify(view)

    @app.get("/picture/<path:key>")
    def picture(key: str) -> Response:
        if not key.endswith(answers.PICTURE_SUFFIX):
            return reject(404, "not a picture")
        try:
            obj = s3.get_object(Bucket=settings.output_bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return reject(404, f"no picture {key!r}")
            return reject(503, "the output bucket cannot be read right now")
        except BotoCoreError:
            return reject(503, "the output bucket cannot be read right now")
        etag = str(obj.get("ETag", "")).strip('"')
        body = obj["Body"]
        cache = "public, max-age=86400, immutable" if request.args.get("v") else "no-cache"
        if etag and etag in request.if_none_match:
            body.close()
            return Response(status=304, headers={"ETag": f'"{etag}"', "Cache-Control": cache})

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(64 * 1024)
            finally:
                body.close()

        return Response(
            chunks(),
            mimetype="image/jpeg",
            headers={"Content-Length": str(obj["ContentLength"]), "ETag": f'"{etag}"', "Cache-Control": cache},
        )

    @app.get("/healthz")
    def healthz() -> Response:
        return _plain("ok\n", 200)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge) -> Response:
        return reject(413, f"the upload is larger than the limit of {max_upload} bytes")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return reject(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return reject(500, "internal error (see the web tier's log)")

    return app


# ------------------------------------------------------------------------------ serving


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from waitress import serve

    from facepipe.settings import SettingsError, load_settings

    parser = argparse.ArgumentParser(prog="web/app.py", description="The facepipe web tier (Flask under waitress).")
    parser.add_argument("--host", default=os.environ.get("WEB_HOST", "127.0.0.1"), help="default 127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("WEB_PORT") or 8000), help="default 8000")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stdout,
    )
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    try:
        settings = load_settings()
        settings.require("s3_endpoint_url", "input_bucket", "output_bucket")
        web = load_web_settings()
    except (SettingsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app = create_app(settings, web, s3=s3_client(settings, max_pool_connections=web.threads + 4))
    log.info(
        "web tier on http://%s:%d/ (input bucket %r, output bucket %r, %d threads, result timeout %.0f s)",
        args.host, args.port, settings.input_bucket, settings.output_bucket, web.threads, web.result_timeout_s,
    )  # fmt: skip
    serve(
        app,
        host=args.host,
        port=args.port,
        threads=web.threads,
        connection_limit=max(1000, web.threads * 4),
        max_request_body_size=app.config["MAX_CONTENT_LENGTH"] + 1024 * 1024,
        ident="facepipe-web",
    )
    return 0
