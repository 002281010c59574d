"""Dead letters: an object version the function keeps failing on is given up on.

Every failed invocation attempt that counts against the object (`invoker.Reply.counts`: the
function crashed or hung on it, or answered 5xx other than 503) is counted per object version
(bucket, key, ETag), over the invoker's retries within one job and across jobs (events and the
reconciler queue the same version again). At `Settings.dead_letter_attempts` the notifier stops
retrying and writes the error record `<stem>.error.json` (`answers.render_failed`: error
`failed`, the attempts and the last error) with metadata `source-etag` = that ETag. The record
is then the version's current answer: the reconciler skips it, the function returns it, and
duplicate events are not invoked (`is_dead`). A new upload (new ETag) is invoked as usual;
deleting the record lets the notifier try that version again.

Before writing, the object is looked at (HEAD: its ETag, when the job did not know it, and
whether it is still that version) and so are its answers: an answer current for the version,
written meanwhile by a run that outlived the notifier's time limit, is never overwritten, and a
result that appears while the record is written wins (the record is taken back).

The counts live in memory, bounded (MAX_TRACKED, least recently failed forgotten first): a
restarted notifier counts afresh, so an object gets at most N more attempts per restart.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from facepipe import answers, logs
from facepipe.clients import is_missing
from facepipe.notifier.metrics import NotifierMetrics
from facepipe.settings import Route

log = logs.get("facepipe.notifier")

#: Objects whose failures are remembered (and as many dead-lettered ones).
MAX_TRACKED = 10_000

# What `write` did.
WRITTEN = "written"
ANSWERED = "answered"  # an answer current for the version exists: nothing written
GONE = "gone"  # the object no longer exists
REPLACED = "replaced"  # a newer version was uploaded meanwhile
UNAVAILABLE = "unavailable"  # S3 could not be asked or written: tried again by the next job

Object = tuple[str, str]  # bucket, key


@dataclass(frozen=True)
class Failures:
    """The failed attempts of one version of an object so far."""

    etag: str = ""
    attempts: int = 0
    last_error: str = ""


class DeadLetters:
    """Failure counts per object version and the dead-lettered versions, and the writing of
    their records through `s3` (HEAD of input objects; LIST, HEAD, PUT and DELETE in the output
    buckets). Only the latest failing version of an object is counted: a newer one starts at 0."""

    def __init__(self, s3, routes: list[Route], limit: int, metrics: NotifierMetrics, capacity: int = MAX_TRACKED):
        self.s3 = s3
        self.limit = max(1, limit)
        self.capacity = capacity
        self._routes = {route.input_bucket: route for route in routes}
        self._metrics = metrics
        self._lock = threading.Lock()
        self._failures: OrderedDict[Object, Failures] = OrderedDict()
        #: The dead-lettered ETag of each object that has one.
        self._dead: OrderedDict[Object, str] = OrderedDict()

    # --------------------------------------------------------------------------- state

    def tracked(self, bucket: str, key: str) -> bool:
        """Whether a version of the object has failed or been dead-lettered."""
        with self._lock:
            return (bucket, key) in self._failures or (bucket, key) in self._dead

    def fail(self, bucket: str, key: str, etag: str, error: str) -> Failures:
        """Count one failed attempt of the version; returns its failures so far."""
        with self._lock:
            before = self._failures.pop((bucket, key), None)
            attempts = before.attempts if before is not None and before.etag == etag else 0
            failures = self._failures[(bucket, key)] = Failures(etag, attempts + 1, error)
            while len(self._failures) > self.capacity:
                self._failures.popitem(last=False)
            return failures

    def failures(self, bucket: str, key: str, etag: str) -> Failures:
        with self._lock:
            found = self._failures.get((bucket, key))
        return found if found is not None and found.etag == etag else Failures(etag)

    def exhausted(self, failures: Failures) -> bool:
        return failures.attempts >= self.limit

    def forget(self, bucket: str, key: str) -> None:
        """The function answered for the object (or its record was removed): start afresh."""
        with self._lock:
            self._failures.pop((bucket, key), None)
            self._dead.pop((bucket, key), None)

    def dead_etag(self, bucket: str, key: str) -> str | None:
        with self._lock:
            return self._dead.get((bucket, key))

    def _mark_dead(self, bucket: str, key: str, etag: str) -> None:
        with self._lock:
            self._failures.pop((bucket, key), None)
            self._dead.pop((bucket, key), None)
            self._dead[(bucket, key)] = etag
            while len(self._dead) > self.capacity:
                self._dead.popitem(last=False)

    # ------------------------------------------------------------------------------ S3

    def head(self, bucket: str, key: str) -> dict | None:
        """The input object's HEAD; None when it is gone. Raises BotoCoreError/ClientError."""
        try:
            return self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise

    def current_etag(self, bucket: str, key: str) -> str | None:
        """The object's ETag now (one HEAD); None when it is gone or S3 cannot be asked."""
        try:
            head = self.head(bucket, key)
        except (BotoCoreError, ClientError) as exc:
            log.warning("object unreadable", key=key, bucket=bucket, outcome="unavailable", detail=str(exc))
            return None
        return str(head.get("ETag", "")).strip('"') if head is not None else None

    def is_dead(self, bucket: str, key: str, etag: str) -> bool:
        """Whether this version was dead-lettered and its record (or another current answer)
        still stands: then it is not invoked. A version whose record was removed is forgotten
        and may be invoked again. S3 unreachable: taken as still standing."""
        if not etag or self.dead_etag(bucket, key) != etag:
            return False
        route = self._routes[bucket]
        try:
            head = self.head(bucket, key)
            if head is None:
                return True  # gone: the function would answer 404
            version = answers.Version(etag, head.get("LastModified"))
            if answers.find_current(self.s3, route.output_bucket, key, version) is not None:
                return True
        except (BotoCoreError, ClientError) as exc:
            log.warning("dead letter unchecked", key=key, bucket=bucket, etag=etag, detail=str(exc))
            return True
        log.info("dead letter removed", key=key, bucket=bucket, etag=etag, detail="its record is gone; invoked again")
        self.forget(bucket, key)
        return False

    def write(self, bucket: str, key: str, etag: str, function: str) -> str:
        """Write the `failed` record of a version whose failures reached the limit, unless the
        object is gone, replaced or answered after all; returns what was done (WRITTEN, ...)."""
        failures = self.failures(bucket, key, etag)
        route = self._routes[bucket]
        output_key = answers.error_key(key)
        fields = {"key": key, "bucket": bucket, "function": function, "etag": etag}
        try:
            head = self.head(bucket, key)
            current = str(head.get("ETag", "")).strip('"') if head is not None else None
            if current != etag:
                outcome = GONE if head is None else REPLACED
                log.info("dead letter not written", **fields, outcome=outcome, attempts=failures.attempts)
                self.forget(bucket, key)
                return outcome
            version = answers.Version(etag, head.get("LastModified"))
            answered = answers.find_current(self.s3, route.output_bucket, key, version)
            if answered is not None:
                log.info(
                    "dead letter not written", **fields, outcome=ANSWERED, attempts=failures.attempts,
                    answer=answered.key,
                )  # fmt: skip
                self.forget(bucket, key)
                return ANSWERED
            record = answers.render_failed(key, failures.attempts, failures.last_error)
            self.s3.put_object(
                Bucket=route.output_bucket, Key=output_key, Body=record.encode(), ContentType="application/json",
                Metadata={answers.SOURCE_ETAG_METADATA: etag},
            )  # fmt: skip
            # A run that outlived the notifier's time limit may have written its result meanwhile.
            result = answers.find_current(self.s3, route.output_bucket, key, version, results_only=True)
            if result is not None:
                self.s3.delete_object(Bucket=route.output_bucket, Key=output_key)
                log.info("dead letter withdrawn", **fields, outcome=ANSWERED, answer=result.key)
                self.forget(bucket, key)
                return ANSWERED
        except (BotoCoreError, ClientError) as exc:
            log.error(
                "dead letter unwritten", **fields, outcome=UNAVAILABLE, output_key=output_key, detail=str(exc),
            )  # fmt: skip
            return UNAVAILABLE
        self._mark_dead(bucket, key, etag)
        self._metrics.dead_lettered.labels(function).inc()
        log.error(
            "dead-lettered", **fields, attempts=failures.attempts, last_error=failures.last_error,
            output_bucket=route.output_bucket, output_key=output_key,
        )  # fmt: skip
        return WRITTEN
