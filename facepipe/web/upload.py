"""The upload form, POST / (store the file in the input bucket, wait for its answer) and
GET /result/<key> (the answer for an input key, e.g. after a 202)."""

from __future__ import annotations

import mimetypes
import os
import posixpath
import secrets
import time
from dataclasses import dataclass
from typing import IO

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError
from flask import Blueprint, Response, jsonify, render_template, request, url_for

from facepipe import answers, keys, logs
from facepipe.answers import Version
from facepipe.clients import is_missing
from facepipe.web import services
from facepipe.web.media_types import SNIFF_BYTES, clean_name, display_stem, looks_like_text, sniff
from facepipe.web.responses import iso_time, picture_url, plain, reject, wants_json
from facepipe.web.services import Services
from facepipe.web.store import Answer, ResultStore

log = logs.get("facepipe.web")
bp = Blueprint("upload", __name__)

#: Web uploads go under this prefix of the input bucket: `web/<id>/<original file name>`.
WEB_PREFIX = "web/"
FORM_FIELD = "inputFile"
_TRANSFER = TransferConfig(use_threads=False)


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


def store_upload(svc: Services) -> Upload:
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
    limit = svc.max_upload_bytes
    if size == 0:
        raise UploadRejected(400, f"{name} is empty")
    if size > limit:
        raise UploadRejected(413, f"{name} is {size} bytes; the limit is {limit} bytes")
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
    svc.s3.upload_fileobj(
        stream, svc.settings.input_bucket, key, ExtraArgs={"ContentType": content_type}, Config=_TRANSFER
    )
    return Upload(name=name, key=key, size=size, content_type=content_type)


def wait_for_answer(store: ResultStore, key: str, timeout_s: float, poll_s: float) -> Answer | None:
    """Look at the output bucket until the answer exists (intervals growing from `poll_s` to
    four times that), or None after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    delay = poll_s
    while True:
        try:
            answer = store.lookup(key)
            if answer is not None:
                return answer
        except (BotoCoreError, ClientError) as exc:
            log.warning("answer lookup failed", key=key, output_bucket=store.bucket, outcome="retry", error=str(exc))
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(delay, left))
        delay = min(delay * 1.2, poll_s * 4)


def requested_timeout(limit_s: float) -> float:
    """`?timeout=<seconds>` may shorten the wait for an answer, never lengthen it."""
    try:
        return min(max(0.0, float(request.args["timeout"])), limit_s)
    except (KeyError, ValueError):
        return limit_s


def status_of(answer: Answer | None) -> int:
    """200 with the people, 422 with the error record, 202 while there is no answer yet."""
    return 202 if answer is None else 422 if answer.state == "error" else 200


def answer_json(svc: Services, answer: Answer | None, key: str, name: str, seconds: float | None = None) -> dict:
    body: dict = {
        "status": answer.state if answer else "pending",
        "file": name,
        "stem": display_stem(name or key),
        "bucket": svc.settings.input_bucket,
        "key": key,
        "result_url": url_for("upload.result", key=key),
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
            processed_at=iso_time(answer.modified),
        )
    if seconds is not None:
        body["seconds"] = round(seconds, 3)
    return body


def answer_text(answer: Answer | None, key: str, name: str) -> str:
    stem = display_stem(name or key)
    if answer is None:
        return (
            f"pending: {stem} is still being processed; look the answer up later with"
            f" GET {url_for('upload.result', key=key)}\nkey: {key}\n"
        )
    if answer.error is not None:
        return f"{stem}: error {answer.error['error']}: {answer.error.get('detail', '')}\n"
    return f"{stem}:" + ",".join(person.name for person in answer.people)  # the seeds' format


def respond(svc: Services, answer: Answer | None, key: str, name: str, seconds: float | None = None) -> Response:
    """The answer as text or JSON, with its status; a 202 says where to look it up later."""
    status = status_of(answer)
    headers = {"Location": url_for("upload.result", key=key)} if answer is None else {}
    if wants_json():
        response = jsonify(answer_json(svc, answer, key, name, seconds))
        response.status_code = status
        response.headers.update(headers)
        return response
    return plain(answer_text(answer, key, name), status, **headers)


@bp.get("/")
def form() -> str:
    svc = services.current()
    return render_template("index.html", max_upload=svc.max_upload_bytes, timeout_s=svc.web.result_timeout_s)


@bp.post("/")
def submit() -> Response:
    svc = services.current()
    started = time.monotonic()
    try:
        stored = store_upload(svc)
    except UploadRejected as exc:
        log.info("upload rejected", outcome="rejected", status=exc.status, detail=exc.message)
        return reject(exc.status, exc.message)
    except (BotoCoreError, ClientError) as exc:
        log.error(
            "upload not stored", bucket=svc.settings.input_bucket, outcome="unavailable", status=503, error=str(exc)
        )
        return reject(503, "the input bucket cannot be written right now; try again")
    answer = wait_for_answer(svc.store, stored.key, requested_timeout(svc.web.result_timeout_s), svc.web.poll_s)
    seconds = time.monotonic() - started
    log.info(
        "upload answered", key=stored.key, bucket=svc.settings.input_bucket, file=stored.name, bytes=stored.size,
        outcome=answer.state if answer else "pending", status=status_of(answer), seconds=round(seconds, 3),
    )  # fmt: skip
    return respond(svc, answer, stored.key, stored.name, seconds)


@bp.get("/result/<path:key>")
def result(key: str) -> Response:
    svc = services.current()
    try:
        keys.validate_key(key)
    except ValueError as exc:
        return reject(400, str(exc))
    uploaded: Version | None = None
    answer: Answer | None = None
    try:
        answer = svc.store.lookup(key)
        head = svc.s3.head_object(Bucket=svc.settings.input_bucket, Key=key)
        uploaded = Version(str(head.get("ETag", "")).strip('"'), head["LastModified"])
    except ClientError as exc:
        if not is_missing(exc):
            return reject(503, "the buckets cannot be read right now; try again")
        if answer is None:
            return reject(404, f"no upload with key {key!r}")
        # else: the input is gone; its answer is still worth showing
    except BotoCoreError:
        return reject(503, "the buckets cannot be read right now; try again")
    if answer is not None and uploaded is not None and not answers.is_current(answer.stored, uploaded):
        answer = None  # it answers an earlier upload under the same key: this one is pending
    return respond(svc, answer, key, posixpath.basename(key))
