"""What the upload routes of both functions share: take the posted file, store it in the
function's input bucket under a fresh key, wait for its answer in the output bucket, and
answer as text or JSON; look an answer up again later by its input key.

A `Channel` says what differs: the buckets, the accepted files, the result's own fields.
`upload` (faces, POST /) and `classify` (images, POST /classify) each define one.
"""

from __future__ import annotations

import io
import mimetypes
import posixpath
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError
from flask import Response, jsonify, request, url_for

from facepipe import answers, keys, logs
from facepipe.answers import Version
from facepipe.clients import is_missing
from facepipe.web.formdata import Accepts, FileStream, UploadRejected, UploadScanner
from facepipe.web.media_types import display_stem
from facepipe.web.responses import iso_time, picture_url, plain, reject, wants_json
from facepipe.web.services import Services
from facepipe.web.store import Answer, ResultStore

log = logs.get("facepipe.web")

#: Web uploads go under this prefix of the input bucket: `web/<id>/<original file name>`.
WEB_PREFIX = "web/"
#: One part in memory at a time, 5 MiB (S3's smallest part): an upload is read from the request
#: body while it is sent, so what it holds in memory is one part (see WEB_CONCURRENT_SENDS).
_TRANSFER = TransferConfig(use_threads=False, multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)


@dataclass(frozen=True)
class Channel:
    """One function as the web tier sees it."""

    function: str  # its name, for the logs
    input_bucket: str
    store: ResultStore  # its output bucket
    accepts: Accepts  # the file's field names, the name it is stored under
    result_endpoint: str  # the view of GET .../result/<key>
    picture_endpoint: str  # the view serving `<stem>.jpg` of its output bucket
    details: Callable[[Answer | None], dict]  # the result's own JSON fields (people, labels)
    summary: Callable[[Answer], str]  # what follows `<stem>:` in the text answer


@dataclass(frozen=True)
class Upload:
    name: str  # the file name as the client sent it (cleaned)
    key: str  # where it is stored in the input bucket
    size: int
    content_type: str


def store_upload(svc: Services, channel: Channel) -> Upload:
    """Store the posted file in the channel's input bucket under a fresh key, streamed from
    the request body: its type is decided by its first bytes before the rest is read, its size
    is counted while it is read and sent on (UploadRejected). Never `request.files`: that
    would copy the file to a temporary file first."""
    url = request.url_root.rstrip("/") + request.path
    scanner = UploadScanner(request.content_type or "", channel.accepts, svc.max_upload_bytes, url)
    file = FileStream(request.stream, scanner)
    stored_name = file.start()
    assert scanner.name is not None
    key = keys.validate_key(f"{WEB_PREFIX}{secrets.token_hex(8)}/{stored_name}")
    content_type = mimetypes.guess_type(stored_name)[0] or "application/octet-stream"
    body = io.BufferedReader(file)  # read(n) gives n bytes: every part but the last is full-size
    with svc.sends:
        svc.s3.upload_fileobj(
            body, channel.input_bucket, key, ExtraArgs={"ContentType": content_type}, Config=_TRANSFER
        )
    return Upload(name=scanner.name, key=key, size=scanner.size, content_type=content_type)


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
    """200 with the result, 422 with the error record, 202 while there is no answer yet."""
    return 202 if answer is None else 422 if answer.state == "error" else 200


def answer_json(channel: Channel, answer: Answer | None, key: str, name: str, seconds: float | None = None) -> dict:
    body: dict = {
        "status": answer.state if answer else "pending",
        "file": name,
        "stem": display_stem(name or key),
        "bucket": channel.input_bucket,
        "key": key,
        "result_url": url_for(channel.result_endpoint, key=key),
        "output_key": None,
        "picture_key": None,
        "picture_url": None,
        **channel.details(None),
        "error": None,
    }
    if answer is not None:
        body.update(
            output_key=answer.output_key,
            picture_key=answer.picture.key if answer.picture else None,
            picture_url=picture_url(answer.picture, channel.picture_endpoint),
            **channel.details(answer),
            error=answer.error,
            processed_at=iso_time(answer.modified),
        )
    if seconds is not None:
        body["seconds"] = round(seconds, 3)
    return body


def answer_text(channel: Channel, answer: Answer | None, key: str, name: str) -> str:
    stem = display_stem(name or key)
    if answer is None:
        url = url_for(channel.result_endpoint, key=key)
        return f"pending: {stem} is still being processed; look the answer up later with GET {url}\nkey: {key}\n"
    if answer.error is not None:
        return f"{stem}: error {answer.error['error']}: {answer.error.get('detail', '')}\n"
    return f"{stem}:{channel.summary(answer)}"  # the seeds' format: no newline


def respond(channel: Channel, answer: Answer | None, key: str, name: str, seconds: float | None = None) -> Response:
    """The answer as text or JSON, with its status; a 202 says where to look it up later."""
    status = status_of(answer)
    headers = {"Location": url_for(channel.result_endpoint, key=key)} if answer is None else {}
    if wants_json():
        response = jsonify(answer_json(channel, answer, key, name, seconds))
        response.status_code = status
        response.headers.update(headers)
        return response
    return plain(answer_text(channel, answer, key, name), status, **headers)


def submit(svc: Services, channel: Channel) -> Response:
    """POST: store the file, wait for its answer (at most WEB_RESULT_TIMEOUT_S), answer."""
    started = time.monotonic()
    try:
        stored = store_upload(svc, channel)
    except UploadRejected as exc:
        log.info(
            "upload rejected", function=channel.function, outcome="rejected", status=exc.status, detail=exc.message
        )
        return reject(exc.status, exc.message)
    except (BotoCoreError, ClientError) as exc:
        log.error("upload not stored", bucket=channel.input_bucket, outcome="unavailable", status=503, error=str(exc))
        if isinstance(exc, ClientError) and is_missing(exc):
            missing = f"the input bucket {channel.input_bucket!r} does not exist ({channel.function} is not set up)"
            return reject(503, missing)
        return reject(503, "the input bucket cannot be written right now; try again")
    answer = wait_for_answer(channel.store, stored.key, requested_timeout(svc.web.result_timeout_s), svc.web.poll_s)
    seconds = time.monotonic() - started
    log.info(
        "upload answered", key=stored.key, bucket=channel.input_bucket, function=channel.function, file=stored.name,
        bytes=stored.size, outcome=answer.state if answer else "pending", status=status_of(answer),
        seconds=round(seconds, 3),
    )  # fmt: skip
    return respond(channel, answer, stored.key, stored.name, seconds)


def result(svc: Services, channel: Channel, key: str) -> Response:
    """GET: the answer for an input key; 202 while it is pending (also when the answer there is
    for an earlier upload under the same key), 404 for a key never uploaded."""
    try:
        keys.validate_key(key)
    except ValueError as exc:
        return reject(400, str(exc))
    uploaded: Version | None = None
    answer: Answer | None = None
    try:
        answer = channel.store.lookup(key)
        head = svc.s3.head_object(Bucket=channel.input_bucket, Key=key)
        uploaded = Version.of(head)
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
    return respond(channel, answer, key, posixpath.basename(key))
