"""The function's work for one object: fetch, recognise, look up, write the result.

Idempotent: the result carries the source object's ETag in its metadata, and a
request for an object whose result (or error record) already has that ETag
returns the stored answer without doing the work again. Exactly one of
`<stem>.csv` and `<stem>.error.json` exists after a run; a result also has its
annotated picture `<stem>.jpg`, written before the CSV.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from botocore.exceptions import ClientError

from facepipe import keys, metrics
from facepipe.annotate import annotated_jpeg
from facepipe.clients import s3_client
from facepipe.events import BadRequest
from facepipe.face_encoder import ENCODERS
from facepipe.known_faces import load_known_faces
from facepipe.media import MediaError, sample_frames
from facepipe.recognition import Recognition, Recognizer
from facepipe.results import Student, parse_csv, parse_error, render_csv, render_error
from facepipe.settings import Settings, SettingsError
from facepipe.students import StudentDirectory

log = logging.getLogger("facepipe.function")

DOWNLOAD_CHUNK_BYTES = 1 << 20


class NotFound(Exception):
    """The object does not exist (any more)."""


@dataclass
class Outcome:
    """What happened to one object; `status` is the HTTP status the function answers with."""

    bucket: str
    key: str
    status: int
    outcome: str  # ok | error | skipped | not_found
    output_key: str | None = None
    picture_key: str | None = None
    people: list[Student] = field(default_factory=list)
    error: dict | None = None
    faces: int = 0
    unknown_faces: int = 0
    frames: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        body = {
            "bucket": self.bucket,
            "key": self.key,
            "outcome": self.outcome,
            "output_key": self.output_key,
            "picture_key": self.picture_key,
            "people": [vars(p) for p in self.people],
            "faces": self.faces,
            "unknown_faces": self.unknown_faces,
            "frames": self.frames,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }
        if self.error:
            body["error"] = self.error
        return body


def _is_missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


class FaceRecognitionService:
    """Everything that is loaded once per process: clients, models, known faces."""

    def __init__(self, settings: Settings, s3=None, students: StudentDirectory | None = None):
        settings.require("known_faces", "input_bucket", "output_bucket", "students_table")
        if settings.frame_sampling not in ("keyframes", "interval"):
            raise SettingsError(f"FRAME_SAMPLING must be 'keyframes' or 'interval', not {settings.frame_sampling!r}")
        if settings.face_encoder not in ENCODERS:
            raise SettingsError(f"FACE_ENCODER must be one of {', '.join(ENCODERS)}, not {settings.face_encoder!r}")
        self.settings = settings
        self.s3 = s3 or s3_client(settings)
        self.students = students or StudentDirectory(settings)
        # Recognition is CPU-bound: one at a time per process, while other requests'
        # downloads, lookups and uploads proceed (replicas or worker processes give parallelism).
        self._compute_lock = threading.Lock()
        self.recognizer = Recognizer(
            load_known_faces(settings.known_faces),
            tolerance=settings.match_tolerance,
            detect_width=settings.detect_width,
            encoder=settings.face_encoder,
        )

    def _open(self, bucket: str, key: str) -> dict:
        """GET the object, body not read yet: its ETag and size decide whether to read it."""
        try:
            return self.s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                raise NotFound(f"object {key!r} does not exist in bucket {bucket!r}") from None
            raise

    def _stored(self, bucket: str, key: str, etag: str, existing: set[str]) -> Outcome | None:
        """The stored answer for this exact object version, if there is one."""
        output = self.settings.output_bucket
        for output_key, is_error in ((keys.result_key(key), False), (keys.error_key(key), True)):
            if output_key not in existing:
                continue
            try:
                answer = self.s3.get_object(Bucket=output, Key=output_key)
            except ClientError as exc:
                if _is_missing(exc):
                    continue
                raise
            if answer.get("Metadata", {}).get(keys.SOURCE_ETAG_METADATA) != etag:
                answer["Body"].close()
                continue
            body = answer["Body"].read().decode()
            try:
                if is_error:
                    return Outcome(bucket, key, 422, "skipped", output_key, error=parse_error(body))
                return Outcome(bucket, key, 200, "skipped", output_key, people=parse_csv(body))
            except ValueError:
                return None  # unreadable stored answer: do the work again
        return None

    def _put(self, output_key: str, body: bytes, content_type: str, etag: str) -> None:
        self.s3.put_object(
            Bucket=self.settings.output_bucket,
            Key=output_key,
            Body=body,
            ContentType=content_type,
            Metadata={keys.SOURCE_ETAG_METADATA: etag},
        )

    def _delete(self, output_keys: set[str]) -> None:
        for output_key in sorted(output_keys):
            self.s3.delete_object(Bucket=self.settings.output_bucket, Key=output_key)

    def _write_result(self, key: str, etag: str, csv_text: str, picture: bytes | None, existing: set[str]) -> str:
        """The picture first, then the CSV (its presence means the answer is complete), then no error record."""
        if picture is not None:
            self._put(keys.picture_key(key), picture, "image/jpeg", etag)
        self._put(keys.result_key(key), csv_text.encode(), "text/csv", etag)
        self._delete(existing & {keys.error_key(key)})
        return keys.result_key(key)

    def _write_error(self, key: str, etag: str, record: str, existing: set[str]) -> str:
        self._put(keys.error_key(key), record.encode(), "application/json", etag)
        self._delete(existing & {keys.result_key(key), keys.picture_key(key)})
        return keys.error_key(key)

    def process(self, bucket: str, key: str) -> Outcome:
        """Four S3 requests for a new object: LIST its answers, GET it, PUT the picture and the CSV."""
        keys.validate_key(key)
        if bucket != self.settings.input_bucket:
            raise BadRequest(f"bucket {bucket!r} is not the input bucket of this function")
        started = time.perf_counter()
        timings: dict[str, float] = {}
        existing = keys.existing_answers(self.s3, self.settings.output_bucket, key)
        response = self._open(bucket, key)
        try:
            etag = response.get("ETag", "").strip('"')
            stored = self._stored(bucket, key, etag, existing)
            if stored is not None:
                stored.timings = {"total": time.perf_counter() - started}
                return stored
            try:
                size = response.get("ContentLength", 0)
                if size > self.settings.max_object_bytes:
                    limit = self.settings.max_object_bytes
                    raise MediaError("too_large", f"object is {size} bytes, the limit is {limit} bytes")
                recognition = self._recognize(key, response["Body"], timings)
            except MediaError as exc:
                record = render_error(key, exc.kind, exc.detail)
                t = time.perf_counter()
                output_key = self._write_error(key, etag, record, existing)
                timings["upload"] = time.perf_counter() - t
                timings["total"] = time.perf_counter() - started
                return Outcome(bucket, key, 422, "error", output_key, error=json.loads(record), timings=timings)
        finally:
            response["Body"].close()  # unread (too large, already answered): the connection is dropped
        t = time.perf_counter()
        people = self.students.lookup(recognition.people)
        timings["lookup"] = time.perf_counter() - t
        t = time.perf_counter()
        picture = annotated_jpeg(recognition)
        output_key = self._write_result(key, etag, render_csv(people), picture, existing)
        timings["upload"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - started
        return Outcome(
            bucket,
            key,
            200,
            "ok",
            output_key,
            picture_key=keys.picture_key(key) if picture is not None else None,
            people=people,
            faces=len(recognition.hits),
            unknown_faces=recognition.unknown_faces,
            frames=recognition.frames,
            timings=timings,
        )

    def recognize_file(self, path: Path) -> Recognition:
        """The compute part of a request: frames of a local file, faces, matches (no S3, no DynamoDB)."""
        frames = sample_frames(
            path,
            interval_s=self.settings.frame_interval_s,
            max_frames=self.settings.max_frames,
            timeout_s=self.settings.ffmpeg_timeout_s,
            keyframes_only=self.settings.frame_sampling == "keyframes",
        )
        return self.recognizer.recognize(frames)

    def _recognize(self, key: str, body: BinaryIO, timings: dict[str, float]) -> Recognition:
        suffix = Path(key).suffix if len(Path(key).suffix) <= 16 else ""
        fd, name = tempfile.mkstemp(prefix="facerec-", suffix=suffix)
        path = Path(name)
        try:
            t = time.perf_counter()
            with os.fdopen(fd, "wb") as file:
                shutil.copyfileobj(body, file, DOWNLOAD_CHUNK_BYTES)
            timings["download"] = time.perf_counter() - t
            t = time.perf_counter()
            with self._compute_lock:
                timings["queue"] = time.perf_counter() - t
                recognition = self.recognize_file(path)
            timings["decode"] = recognition.decode_s
            timings["detect"] = recognition.detect_s
            return recognition
        finally:
            path.unlink(missing_ok=True)

    def handle(self, bucket: str, key: str) -> Outcome:
        """Process and record metrics and the operator's log line; errors propagate."""
        try:
            outcome = self.process(bucket, key)
        except NotFound as exc:
            log.info("key=%s outcome=not_found detail=%s", key, exc)
            metrics.VIDEOS.labels("not_found").inc()
            raise
        metrics.VIDEOS.labels(outcome.outcome).inc()
        for stage in metrics.STAGES:
            if stage in outcome.timings:
                metrics.STAGE_SECONDS.labels(stage).observe(outcome.timings[stage])
        if outcome.outcome != "skipped":
            metrics.VIDEO_SECONDS.observe(outcome.timings.get("total", 0.0))
            metrics.FACES.labels("known").inc(outcome.faces - outcome.unknown_faces)
            metrics.FACES.labels("unknown").inc(outcome.unknown_faces)
        stage_text = " ".join(f"{k}={v:.3f}" for k, v in outcome.timings.items())
        people = ",".join(p.name for p in outcome.people) or "-"
        detail = f" error={outcome.error['error']}" if outcome.error else ""
        log.info(
            "key=%s outcome=%s people=%s faces=%d frames=%d%s %s",
            key, outcome.outcome, people, outcome.faces, outcome.frames, detail, stage_text,
        )  # fmt: skip
        return outcome
