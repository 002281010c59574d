"""One shape for every function: fetch the object, compute its answer, write the answer.

A `Task` (face recognition; image classification is the next) says how to turn a local file
into an answer; `ObjectFunction` does the rest, the same for every task:

1. LIST the key's answers (`answers.find`) and GET the object, body not read yet;
2. a current answer for this ETag is returned as it is (`skipped`), without reading the body;
3. the body goes to a temporary file (size limit from Content-Length, checked first), the
   task computes on it, one computation at a time per process while other requests'
   transfers go on;
4. the answer is written: the picture, then the CSV (its presence means the answer is
   complete), or the error record for media that cannot be used (`MediaError`); answers
   of the other kind are deleted. Every answer records the input's ETag.

That is four S3 requests for a new object: LIST, GET, PUT picture, PUT CSV.

Steps 1-3 fit in `FUNCTION_TIMEOUT_S` (below of-watchdog's exec_timeout, whose 504 would
leave the work running and the caller retrying beside it): past it the download or the
computation stops and a `timeout` error record is written (422, final), or, when the object
only waited for other objects' computations, the answer is 503 (retry).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from botocore.exceptions import ClientError

from facepipe import answers, logs, metrics
from facepipe.answers import AnswerBody, Answers, Version
from facepipe.clients import is_missing, s3_client
from facepipe.events import BadRequest
from facepipe.keys import validate_key
from facepipe.media import MediaError
from facepipe.settings import Settings

log = logs.get("facepipe.function")

DOWNLOAD_CHUNK_BYTES = 1 << 20


class NotFound(Exception):
    """The object does not exist (any more)."""


class Busy(Exception):
    """The object waited for the computation its whole time limit: not its fault, worth a retry."""


def timed_out(deadline: float | None) -> bool:
    """Whether the monotonic `deadline` (None: no limit) has passed."""
    return deadline is not None and time.monotonic() > deadline


@dataclass
class Computed:
    """A task's answer: the CSV, the picture beside it, and the fields of the JSON answer."""

    csv_text: str
    picture: bytes | None = None
    details: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class Task(Protocol):
    def compute(self, path: Path, deadline: float | None = None) -> Any:
        """The CPU-bound part (run one at a time per process); raises MediaError, with kind
        `timeout` once the monotonic `deadline` has passed."""

    def answer(self, computed: Any) -> Computed:
        """Lookups and rendering after `compute`, outside the one-at-a-time section."""

    def stored_details(self, body: AnswerBody) -> dict[str, Any]:
        """The JSON answer's fields for a stored result."""


@dataclass
class Outcome:
    """What happened to one object; `status` is the HTTP status the function answers with."""

    bucket: str
    key: str
    status: int
    outcome: str  # ok | error | skipped
    output_key: str | None = None
    picture_key: str | None = None
    error: dict | None = None
    details: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        body = {
            "bucket": self.bucket,
            "key": self.key,
            "outcome": self.outcome,
            "output_key": self.output_key,
            "picture_key": self.picture_key,
            **self.details,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }
        if self.error:
            body["error"] = self.error
        return body


class ObjectFunction:
    """Fetch -> compute -> write for one input bucket; create once per process."""

    def __init__(self, settings: Settings, task: Task, s3=None):
        settings.require("input_bucket", "output_bucket")
        self.settings = settings
        self.task = task
        self.s3 = s3 or s3_client(settings, caller="function")
        # The task is CPU-bound: one at a time per process, while other requests' downloads,
        # lookups and uploads proceed (replicas or worker processes give parallelism).
        self._compute_lock = threading.Lock()

    # ------------------------------------------------------------------------------ S3

    def _open(self, bucket: str, key: str) -> dict:
        """GET the object, body not read yet: its ETag and size decide whether to read it."""
        try:
            return self.s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if is_missing(exc):
                raise NotFound(f"object {key!r} does not exist in bucket {bucket!r}") from None
            raise

    def _stored(self, bucket: str, key: str, etag: str, found: Answers) -> Outcome | None:
        """The stored answer for this exact object version, if there is one."""
        for answer in (found.result, found.error):
            if answer is None:
                continue
            try:
                body = answers.read(self.s3, self.settings.output_bucket, answer)
            except ClientError as exc:
                if is_missing(exc):
                    continue
                raise
            if not answers.is_current(body.answer, Version(etag)) or body.unreadable:
                continue
            if body.error is not None:
                return Outcome(bucket, key, 422, "skipped", answer.key, error=body.error)
            picture = found.picture.key if found.picture else None
            return Outcome(bucket, key, 200, "skipped", answer.key, picture, details=self.task.stored_details(body))
        return None

    def _put(self, output_key: str, body: bytes, content_type: str, etag: str) -> None:
        self.s3.put_object(
            Bucket=self.settings.output_bucket,
            Key=output_key,
            Body=body,
            ContentType=content_type,
            Metadata={answers.SOURCE_ETAG_METADATA: etag},
        )

    def _delete(self, output_keys: set[str]) -> None:
        for output_key in sorted(output_keys):
            self.s3.delete_object(Bucket=self.settings.output_bucket, Key=output_key)

    def _write_result(self, key: str, etag: str, computed: Computed, found: Answers) -> None:
        """The picture first, then the CSV (its presence means the answer is complete), then no error record."""
        if computed.picture is not None:
            self._put(answers.picture_key(key), computed.picture, "image/jpeg", etag)
        self._put(answers.result_key(key), computed.csv_text.encode(), "text/csv", etag)
        self._delete(found.names & {answers.error_key(key)})

    def _write_error(self, key: str, etag: str, record: str, found: Answers) -> None:
        self._put(answers.error_key(key), record.encode(), "application/json", etag)
        self._delete(found.names & {answers.result_key(key), answers.picture_key(key)})

    # ------------------------------------------------------------------------- the work

    def process(self, bucket: str, key: str) -> Outcome:
        validate_key(key)
        if bucket != self.settings.input_bucket:
            raise BadRequest(f"bucket {bucket!r} is not the input bucket of this function")
        started = time.perf_counter()
        time_limit = self.settings.function_timeout_s
        deadline = time.monotonic() + time_limit if time_limit > 0 else None
        timings: dict[str, float] = {}
        found = answers.find(self.s3, self.settings.output_bucket, key)
        response = self._open(bucket, key)
        try:
            etag = response.get("ETag", "").strip('"')
            stored = self._stored(bucket, key, etag, found)
            if stored is not None:
                stored.timings = {"total": time.perf_counter() - started}
                return stored
            try:
                size = response.get("ContentLength", 0)
                if size > self.settings.max_object_bytes:
                    raise MediaError(
                        "too_large", f"object is {size} bytes, the limit is {self.settings.max_object_bytes} bytes"
                    )
                computed = self.task.answer(self._compute(response["Body"], timings, deadline))
            except MediaError as exc:
                record = answers.render_error(key, exc.kind, exc.detail)
                t = time.perf_counter()
                self._write_error(key, etag, record, found)
                timings["upload"] = time.perf_counter() - t
                timings["total"] = time.perf_counter() - started
                error = {"error": exc.kind, "detail": exc.detail}
                return Outcome(bucket, key, 422, "error", answers.error_key(key), error=error, timings=timings)
        finally:
            response["Body"].close()  # unread (too large, already answered): the connection is dropped
        timings.update(computed.timings)
        t = time.perf_counter()
        self._write_result(key, etag, computed, found)
        timings["upload"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - started
        picture = answers.picture_key(key) if computed.picture is not None else None
        return Outcome(
            bucket, key, 200, "ok", answers.result_key(key), picture, details=computed.details, timings=timings
        )

    def _compute(self, body: BinaryIO, timings: dict[str, float], deadline: float | None = None) -> Any:
        """Download to a temporary file (its name never comes from the key) and compute, all
        before `deadline`: past it a download or computation stops with a `timeout` MediaError,
        a wait for the computation with Busy (the object was not looked at)."""
        fd, name = tempfile.mkstemp(prefix="facepipe-")
        path = Path(name)
        time_limit = self.settings.function_timeout_s
        try:
            t = time.perf_counter()
            with os.fdopen(fd, "wb") as file:
                while chunk := body.read(DOWNLOAD_CHUNK_BYTES):
                    file.write(chunk)
                    if timed_out(deadline):
                        raise MediaError("timeout", f"the download took longer than {time_limit:g} s")
            timings["download"] = time.perf_counter() - t
            t = time.perf_counter()
            wait = -1 if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._compute_lock.acquire(timeout=wait):
                raise Busy(f"waited {time_limit:g} s for the computations of other objects")
            try:
                timings["queue"] = time.perf_counter() - t
                try:
                    return self.task.compute(path, deadline)
                except MediaError as exc:
                    # Raised afresh below, outside this handler: the original's traceback holds the
                    # computation's frames and their images (hundreds of MiB for a decoding bomb),
                    # which must go with the lock, not live on beside the next object's decoding
                    # while the error record is written.
                    failure = (exc.kind, exc.detail)
            finally:
                self._compute_lock.release()
        finally:
            path.unlink(missing_ok=True)
        raise MediaError(*failure)

    def handle(self, bucket: str, key: str) -> Outcome:
        """Process, count in the metrics and log one line; errors propagate."""
        try:
            outcome = self.process(bucket, key)
        except NotFound as exc:
            log.info("object not found", key=key, bucket=bucket, outcome="not_found", detail=str(exc))
            metrics.VIDEOS.labels("not_found").inc()
            raise
        except Busy as exc:
            log.warning("object not started in time", key=key, bucket=bucket, outcome="busy", detail=str(exc))
            metrics.VIDEOS.labels("busy").inc()
            raise
        metrics.VIDEOS.labels(outcome.outcome).inc()
        for stage in metrics.STAGES:
            if stage in outcome.timings:
                metrics.STAGE_SECONDS.labels(stage).observe(outcome.timings[stage])
        if outcome.outcome != "skipped":
            metrics.VIDEO_SECONDS.observe(outcome.timings.get("total", 0.0))
        fields = {name: value for name, value in outcome.details.items() if not isinstance(value, list)}
        log.info(
            "object answered", key=key, bucket=bucket, outcome=outcome.outcome, output_key=outcome.output_key,
            error=(outcome.error or {}).get("error"), seconds=round(outcome.timings.get("total", 0.0), 4),
            timings={k: round(v, 4) for k, v in outcome.timings.items()}, **fields,
        )  # fmt: skip
        return outcome
