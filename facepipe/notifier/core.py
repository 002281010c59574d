"""The notifier: bucket-notification listener, function invoker and reconciler.

RGW pushes `{"Records": [...]}` to `POST /`. Records that carry the shared token,
name the input bucket, are object-created events and whose object exists are
queued; worker threads invoke the function through the gateway with retries.
The reconciler lists the input and output buckets at start and periodically and
queues every object without a fresh result or error record, so a lost
notification, a crashed function or a restarted notifier only delays an answer.

The queue holds one entry per object key: an event for a key that is already
queued is a duplicate (the queued run reads the object as it is then); an event
with a new ETag for a key being processed is run again after the current run,
never alongside it, so an old run cannot overwrite a newer result.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import queue
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

import requests
from botocore.exceptions import BotoCoreError, ClientError
from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from werkzeug.exceptions import HTTPException

from facepipe import answers
from facepipe.clients import s3_client, sns_client
from facepipe.events import BadRequest, ObjectEvent, parse_records
from facepipe.keys import validate_key
from facepipe.settings import Settings, SettingsError, load_settings

log = logging.getLogger("facepipe.notifier")

MAX_BODY_BYTES = 1024 * 1024
MAX_BACKLOG = 100_000
RECONCILE_RETRY_S = 10.0
LIST_PAGE_SIZE = 1000
CONNECT_TIMEOUT_S = 5.0

ACCEPTED = "accepted"
REJECTED = "rejected"
IGNORED = "ignored"
DUPLICATE = "duplicate"
EVENT_OUTCOMES = (ACCEPTED, REJECTED, IGNORED, DUPLICATE)

OK = "ok"
CLIENT_ERROR = "client_error"
FAILED = "failed"
INVOKE_OUTCOMES = (OK, CLIENT_ERROR, FAILED)
RETRYABLE_4XX = frozenset({408, 429})


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: retry n waits between half and all of min(max_s, base_s * 2**(n-1))."""

    base_s: float = 1.0
    max_s: float = 30.0

    def delay(self, retry: int, rng: random.Random) -> float:
        ceiling = min(self.max_s, self.base_s * 2 ** (retry - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass(frozen=True)
class InvokeResult:
    outcome: str
    attempts: int
    seconds: float
    status: int | None = None
    detail: str = ""


def _excerpt(response: requests.Response, limit: int = 300) -> str:
    """The function's error message (JSON `error`/`detail`, also nested in `error`), on one line."""
    text = response.text or ""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if isinstance(body, dict) and (body.get("error") or body.get("detail")):
        text = ": ".join(str(body[k]) for k in ("error", "detail") if body.get(k))
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _retry_after(response: requests.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


class Invoker:
    """Calls the function through the gateway: 2xx done, 4xx final, anything else retried."""

    def __init__(
        self,
        settings: Settings,
        backoff: Backoff = Backoff(),
        stop: threading.Event | None = None,
        on_retry=None,
    ):
        self.url = f"{settings.openfaas_gateway.rstrip('/')}/function/{settings.function_name}"
        self.attempts = max(1, settings.invoke_attempts)
        self.timeout_s = settings.invoke_timeout_s
        self.backoff = backoff
        self._stop = stop or threading.Event()
        self._on_retry = on_retry
        self._local = threading.local()
        self._rng = random.Random()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _post(self, bucket: str, key: str) -> tuple[int | None, str, float | None]:
        try:
            response = self._session().post(
                self.url,
                json={"bucket": bucket, "key": key},
                timeout=(CONNECT_TIMEOUT_S, self.timeout_s),
            )
        except requests.Timeout:
            return None, f"no answer within {self.timeout_s:g} s", None
        except requests.RequestException as exc:
            return None, f"{type(exc).__name__}: {exc}", None
        return response.status_code, _excerpt(response), _retry_after(response)

    def invoke(self, bucket: str, key: str) -> InvokeResult:
        started = time.monotonic()
        status, detail = None, ""
        for attempt in range(1, self.attempts + 1):
            status, detail, retry_after = self._post(bucket, key)
            if status is not None and 200 <= status < 300:
                return InvokeResult(OK, attempt, time.monotonic() - started, status)
            if status is not None and 400 <= status < 500 and status not in RETRYABLE_4XX:
                return InvokeResult(CLIENT_ERROR, attempt, time.monotonic() - started, status, detail)
            if attempt == self.attempts:
                break
            delay = self.backoff.delay(attempt, self._rng)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.backoff.max_s))
            reason = f"HTTP {status}" if status is not None else "no response"
            log.warning(
                "retry key=%r attempt=%d/%d in %.2fs: %s %s",
                key, attempt + 1, self.attempts, delay, reason, detail,
            )
            if self._on_retry:
                self._on_retry()
            if self._stop.wait(delay):
                detail = f"abandoned at shutdown after: {detail}"
                return InvokeResult(FAILED, attempt, time.monotonic() - started, status, detail)
        return InvokeResult(FAILED, self.attempts, time.monotonic() - started, status, detail)


@dataclass
class Job:
    bucket: str
    key: str
    etag: str = ""
    last_modified: datetime | None = None
    source: str = "event"
    queued_at: float = field(default_factory=time.monotonic)
    #: Invoke even if a fresh answer exists: set for a re-run, whose object changed while the
    #: previous run was reading it (that run's result is newer than the object, yet stale).
    force: bool = False


def _is_not_found(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status == 404 or error.get("Code") in ("404", "NoSuchKey", "NotFound")


class Notifier:
    """Queue, workers and reconciler; `create_app` puts the HTTP front on it."""

    def __init__(
        self,
        settings: Settings,
        *,
        s3=None,
        invoker: Invoker | None = None,
        backoff: Backoff = Backoff(),
        max_backlog: int = MAX_BACKLOG,
    ):
        self.settings = settings
        self.token = (settings.notify_token or "").encode()
        self.s3 = s3 if s3 is not None else s3_client(settings)
        self.max_backlog = max_backlog
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[tuple[str, str], Job] = {}
        self._running: dict[tuple[str, str], Job] = {}
        self._rerun: dict[tuple[str, str], Job] = {}
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []

        self.registry = CollectorRegistry()
        self.events = Counter(
            "facerec_notifier_events", "Notification records, by outcome", ["outcome"], registry=self.registry
        )
        self.backlog = Gauge(
            "facerec_notifier_backlog", "Objects queued or being processed", registry=self.registry
        )
        self.inflight = Gauge("facerec_notifier_inflight", "Function invocations running", registry=self.registry)
        self.invocations = Counter(
            "facerec_notifier_invocations", "Objects invoked, by final outcome", ["outcome"],
            registry=self.registry,
        )
        self.retries = Counter("facerec_notifier_retries", "Invocation retries", registry=self.registry)
        self.reconciled = Counter(
            "facerec_notifier_reconciled", "Objects queued by the reconciler", registry=self.registry
        )
        self.skipped = Counter(
            "facerec_notifier_skipped",
            "Queued objects not invoked because a fresh result or error record was already there",
            registry=self.registry,
        )
        self.invoke_seconds = Histogram(
            "facerec_notifier_invocation_seconds",
            "Time from the first attempt to the final outcome of one object",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        for outcome in EVENT_OUTCOMES:
            self.events.labels(outcome)
        for outcome in INVOKE_OUTCOMES:
            self.invocations.labels(outcome)

        self.invoker = invoker or Invoker(settings, backoff, stop=self._stop, on_retry=self.retries.inc)

    # Queue -------------------------------------------------------------------------------

    def _update_gauges(self) -> None:
        self.backlog.set(len(self._jobs) + len(self._rerun))
        self.inflight.set(len(self._running))

    def submit(self, job: Job) -> str:
        """Queue `job` unless the same object is already queued or running: ACCEPTED, DUPLICATE or REJECTED."""
        ident = (job.bucket, job.key)
        with self._lock:
            if self._stop.is_set():
                return REJECTED
            current = self._jobs.get(ident)
            if current is None:
                if len(self._jobs) + len(self._rerun) >= self.max_backlog:
                    return REJECTED
                self._jobs[ident] = job
                self._queue.put(ident)
                self._update_gauges()
                return ACCEPTED
            if ident not in self._running:
                if job.etag:
                    current.etag, current.last_modified = job.etag, job.last_modified or current.last_modified
                return DUPLICATE
            if job.etag and job.etag == current.etag:
                return DUPLICATE
            rerun = self._rerun.get(ident)
            if rerun is not None and job.etag and job.etag == rerun.etag:
                return DUPLICATE
            job.force = True
            self._rerun[ident] = job
            self._update_gauges()
            return ACCEPTED

    def pending(self) -> int:
        with self._lock:
            return len(self._jobs) + len(self._rerun)

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is queued or running (for tests and tools)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._jobs or self._rerun:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def _worker(self) -> None:
        while True:
            ident = self._queue.get()
            if ident is None or self._stop.is_set():
                return
            with self._lock:
                job = self._jobs[ident]
                self._running[ident] = job
                self._update_gauges()
            try:
                self._process(job)
            except Exception:
                log.exception("unexpected error processing key=%r", job.key)
            finally:
                with self._changed:
                    del self._running[ident]
                    rerun = self._rerun.pop(ident, None)
                    if rerun is not None and not self._stop.is_set():
                        self._jobs[ident] = rerun
                        self._queue.put(ident)
                    else:
                        del self._jobs[ident]
                    self._update_gauges()
                    self._changed.notify_all()

    def _answered(self, job: Job) -> bool:
        """True when the output already holds the answer to this version of the object.

        The function records the input's ETag on every answer, so this is exact; answers
        without it (written by something else) count when they are at least as new.
        """
        try:
            found = answers.find(self.s3, self.settings.output_bucket, job.key)
        except (BotoCoreError, ClientError):
            return False
        version = answers.Version(job.etag, job.last_modified)
        for answer in (found.result, found.error):
            if answer is None:
                continue
            try:
                head = self.s3.head_object(Bucket=self.settings.output_bucket, Key=answer.key)
            except (BotoCoreError, ClientError):
                continue
            source_etag = head.get("Metadata", {}).get(answers.SOURCE_ETAG_METADATA)
            if answers.is_current(answers.StoredAnswer(answer.key, answer.modified, answer.etag, source_etag), version):
                return True
        return False

    def _process(self, job: Job) -> None:
        waited = time.monotonic() - job.queued_at
        if not job.force and self._answered(job):
            self.skipped.inc()
            log.info("skip key=%r: already answered (source=%s)", job.key, job.source)
            return
        result = self.invoker.invoke(job.bucket, job.key)
        self.invocations.labels(result.outcome).inc()
        self.invoke_seconds.observe(result.seconds)
        level = {OK: logging.INFO, CLIENT_ERROR: logging.WARNING}.get(result.outcome, logging.ERROR)
        log.log(
            level,
            "invoked key=%r outcome=%s attempts=%d seconds=%.2f queued=%.2f status=%s source=%s%s",
            job.key, result.outcome, result.attempts, result.seconds, waited, result.status, job.source,
            f" detail={result.detail!r}" if result.detail else "",
        )

    # Notifications -------------------------------------------------------------------------

    def check_token(self, events: list[ObjectEvent]) -> tuple[int, str] | None:
        """None when every record carries the token, else (401 or 403, reason). Constant-time compare."""
        if any(not event.opaque_data for event in events):
            return 401, "record without opaqueData"
        for event in events:
            supplied = event.opaque_data if isinstance(event.opaque_data, str) else ""
            if not self.token or not hmac.compare_digest(supplied.encode(), self.token):
                return 403, "wrong opaqueData"
        return None

    def _head(self, bucket: str, key: str) -> tuple[bool | None, str, datetime | None]:
        """(exists, etag, last modified); exists is None when RGW could not tell."""
        try:
            head = self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _is_not_found(exc):
                return False, "", None
            log.warning("HEAD %s/%r failed: %s; queueing anyway", bucket, key, exc)
            return None, "", None
        except BotoCoreError as exc:
            log.warning("HEAD %s/%r failed: %s; queueing anyway", bucket, key, exc)
            return None, "", None
        return True, str(head.get("ETag", "")).strip('"'), head.get("LastModified")

    def _handle_event(self, event: ObjectEvent) -> str:
        if event.bucket != self.settings.input_bucket:
            log.info("ignored key=%r: bucket %r is not the input bucket", event.key, event.bucket)
            return IGNORED
        if not event.is_object_created:
            log.info("ignored key=%r: event %r does not create an object", event.key, event.event_name)
            return IGNORED
        try:
            validate_key(event.key)
        except ValueError as exc:
            log.info("ignored key=%r: %s", event.key, exc)
            return IGNORED
        exists, etag, last_modified = self._head(event.bucket, event.key)
        if exists is False:
            log.info("ignored key=%r: no such object (deleted, or an upload not finished)", event.key)
            return IGNORED
        job = Job(event.bucket, event.key, etag or event.etag, last_modified, source="event")
        outcome = self.submit(job)
        if outcome == REJECTED:
            log.warning("backlog full or shutting down: key=%r left to the reconciler", event.key)
        else:
            log.info("%s key=%r etag=%s event=%s", outcome, event.key, job.etag, event.event_name)
        return outcome

    def handle_events(self, events: list[ObjectEvent]) -> dict[str, int]:
        """Filter and queue authenticated records; returns the count per outcome."""
        counts = dict.fromkeys(EVENT_OUTCOMES, 0)
        for event in events:
            outcome = self._handle_event(event)
            counts[outcome] += 1
            self.events.labels(outcome).inc()
        return counts

    # Reconciler ----------------------------------------------------------------------------

    def _list(self, bucket: str) -> dict[str, dict]:
        objects = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, PaginationConfig={"PageSize": LIST_PAGE_SIZE}
        ):
            for obj in page.get("Contents", []):
                objects[obj["Key"]] = obj
        return objects

    def reconcile_once(self) -> int:
        """Queue every input object without a fresh result or error record; returns how many were queued."""
        started = time.monotonic()
        inputs = self._list(self.settings.input_bucket)
        found = answers.index(self._list(self.settings.output_bucket).values())
        queued = unanswered = 0
        for key, obj in sorted(inputs.items(), key=lambda item: item[1]["LastModified"]):
            try:
                validate_key(key)
            except ValueError:
                continue
            version = answers.Version(str(obj.get("ETag", "")).strip('"'), obj["LastModified"])
            if found.get(answers.stem(key), answers.Answers()).current(version) is not None:
                continue
            unanswered += 1
            job = Job(
                self.settings.input_bucket, key, str(obj.get("ETag", "")).strip('"'), obj["LastModified"],
                source="reconcile",
            )
            if self.submit(job) == ACCEPTED:
                queued += 1
        self.reconciled.inc(queued)
        log.info(
            "reconcile: %d input objects, %d without a fresh answer, %d queued, %.2fs",
            len(inputs), unanswered, queued, time.monotonic() - started,
        )
        return queued

    def _reconcile_loop(self) -> None:
        interval = self.settings.reconcile_interval_s
        while not self._stop.is_set():
            try:
                self.reconcile_once()
                wait = interval
            except (BotoCoreError, ClientError) as exc:
                log.warning("reconcile failed (%s: %s); trying again", type(exc).__name__, exc)
                wait = min(interval, RECONCILE_RETRY_S) if interval > 0 else RECONCILE_RETRY_S
            except Exception:
                log.exception("reconcile failed; trying again")
                wait = RECONCILE_RETRY_S
            else:
                if interval <= 0:
                    return
            if self._stop.wait(wait):
                return

    # Life cycle ----------------------------------------------------------------------------

    def start(self, reconcile: bool = True) -> None:
        workers = max(1, self.settings.notifier_concurrency)
        targets = [self._worker] * workers + ([self._reconcile_loop] if reconcile else [])
        for index, target in enumerate(targets):
            name = f"invoker-{index}" if target == self._worker else "reconciler"
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, grace_s: float = 20.0) -> None:
        """Stop taking work, let running invocations finish for up to `grace_s`, drop the queue."""
        self._stop.set()
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + grace_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            running, queued = len(self._running), len(self._jobs) - len(self._running) + len(self._rerun)
        if running or queued:
            log.warning(
                "stopped with %d invocation(s) still running and %d object(s) queued;"
                " the reconciler picks them up at the next start",
                running, queued,
            )
        else:
            log.info("stopped cleanly")


# HTTP ------------------------------------------------------------------------------------------


def create_app(notifier: Notifier) -> Flask:
    app = Flask("facepipe.notifier")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    def reject(status: int, reason: str) -> tuple[Response, int]:
        notifier.events.labels(REJECTED).inc()
        log.warning("rejected notification from %s: %d %s", request.remote_addr, status, reason)
        return jsonify(error=reason), status

    @app.post("/")
    def notify():
        raw = request.get_data(cache=False)
        try:
            payload = json.loads(raw)
        except (ValueError, RecursionError):
            return reject(400, "body is not valid JSON")
        try:
            events = parse_records(payload)
        except BadRequest as exc:
            return reject(400, str(exc))
        failure = notifier.check_token(events)
        if failure is not None:
            return reject(*failure)
        counts = notifier.handle_events(events)
        return jsonify(counts), 503 if counts[REJECTED] else 200

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", backlog=notifier.pending())

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(notifier.registry), mimetype=CONTENT_TYPE_LATEST)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code == 413:
            return reject(413, f"body larger than {MAX_BODY_BYTES} bytes")
        return jsonify(error=exc.description or exc.name), exc.code

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        log.exception("error handling %s %s", request.method, request.path)
        return jsonify(error="internal error"), 500

    return app


# Set-up ----------------------------------------------------------------------------------------


def ensure_bucket(s3, bucket: str, region: str | None = None) -> bool:
    """Create `bucket` if it does not exist; True when it was created."""
    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        if not _is_not_found(exc):
            raise
    kwargs: dict = {"Bucket": bucket}
    if region and region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise
        return False
    return True


def check_buckets(settings: Settings) -> None:
    if settings.input_bucket == settings.output_bucket:
        raise SettingsError("INPUT_BUCKET and OUTPUT_BUCKET must differ: results would be processed as input")


def setup_notifications(settings: Settings, s3=None, sns=None) -> dict:
    """Create the buckets, the topic and the input bucket's notification. Safe to run again."""
    settings.require("notify_token", "notify_url", "input_bucket", "output_bucket", "topic_name")
    check_buckets(settings)
    s3 = s3 if s3 is not None else s3_client(settings)
    sns = sns if sns is not None else sns_client(settings)
    created = [b for b in (settings.input_bucket, settings.output_bucket) if ensure_bucket(s3, b, settings.s3_region)]
    topic_arn = sns.create_topic(
        Name=settings.topic_name,
        Attributes={
            "push-endpoint": settings.notify_url,
            "OpaqueData": settings.notify_token,
            "persistent": "true" if settings.persistent_notifications else "false",
        },
    )["TopicArn"]
    s3.put_bucket_notification_configuration(
        Bucket=settings.input_bucket,
        NotificationConfiguration={
            "TopicConfigurations": [
                {"Id": settings.topic_name, "TopicArn": topic_arn, "Events": ["s3:ObjectCreated:*"]}
            ]
        },
    )
    return {"created_buckets": created, "topic_arn": topic_arn}


def _rgw_delete_notifications(settings: Settings) -> None:
    """RGW's extension `DELETE /<bucket>?notification` (boto3 has no call for it), signed with SigV4."""
    from urllib.parse import quote

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"{settings.s3_endpoint_url.rstrip('/')}/{quote(settings.input_bucket)}?notification"
    signed = AWSRequest(method="DELETE", url=url)
    credentials = Credentials(settings.s3_access_key_id, settings.s3_secret_access_key)
    S3SigV4Auth(credentials, "s3", settings.s3_region).add_auth(signed)
    response = requests.delete(url, headers=dict(signed.headers), timeout=30)
    if response.status_code >= 300:
        raise RuntimeError(f"DELETE ?notification answered HTTP {response.status_code}: {response.text[:200]}")


def disable_notifications(settings: Settings, s3=None) -> None:
    """Remove the input bucket's notifications (the reconciler alone then finds new objects).

    S3 removes them when an empty configuration is put; RGW (Pacific answers
    MalformedXML to that) gets its `DELETE ?notification` extension instead.
    """
    s3 = s3 if s3 is not None else s3_client(settings)
    try:
        s3.put_bucket_notification_configuration(Bucket=settings.input_bucket, NotificationConfiguration={})
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "MalformedXML" or not settings.s3_endpoint_url:
            raise
    remaining = s3.get_bucket_notification_configuration(Bucket=settings.input_bucket)
    if remaining.get("TopicConfigurations") and settings.s3_endpoint_url:
        _rgw_delete_notifications(settings)
        remaining = s3.get_bucket_notification_configuration(Bucket=settings.input_bucket)
    if remaining.get("TopicConfigurations"):
        raise RuntimeError(f"bucket {settings.input_bucket!r} still has notifications after removing them")


# Command line ----------------------------------------------------------------------------------


def serve(settings: Settings, host: str, port: int, backoff: Backoff, grace_s: float) -> None:
    import waitress

    settings.require("notify_token", "openfaas_gateway", "function_name", "input_bucket", "output_bucket")
    check_buckets(settings)
    notifier = Notifier(settings, backoff=backoff)
    server = waitress.create_server(
        create_app(notifier), host=host, port=port, threads=8, max_request_body_size=MAX_BODY_BYTES,
        ident="facepipe-notifier",
    )

    def terminate(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    notifier.start()
    log.info(
        "notifier on http://%s:%d/ -> %s (concurrency %d, %d attempts, reconcile every %gs)",
        host, port, notifier.invoker.url, settings.notifier_concurrency, settings.invoke_attempts,
        settings.reconcile_interval_s,
    )
    try:
        server.run()
    finally:
        log.info("shutting down")
        notifier.stop(grace_s)


def _default_port(settings: Settings) -> int:
    try:
        return urlsplit(settings.notify_url).port or 8090
    except ValueError:
        return 8090


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="notification.py", description="Ceph RGW bucket notifications -> face-recognition function."
    )
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("setup", help="create the buckets, the topic and the bucket notification (idempotent)")
    commands.add_parser("disable", help="remove the input bucket's notification (the reconciler still works)")
    serve_parser = commands.add_parser("serve", help="receive notifications, invoke the function, reconcile")
    serve_parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="port (default: the port of NOTIFY_URL, else 8090)")
    serve_parser.add_argument("--backoff-base", type=float, default=1.0, help="first retry delay, seconds")
    serve_parser.add_argument("--backoff-max", type=float, default=30.0, help="longest retry delay, seconds")
    serve_parser.add_argument("--grace", type=float, default=20.0, help="seconds to let invocations finish on exit")
    args = parser.parse_args(argv)

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load_settings()
        if args.command == "setup":
            outcome = setup_notifications(settings)
            print(
                f"buckets {settings.input_bucket!r}, {settings.output_bucket!r} ready"
                f" (created: {', '.join(outcome['created_buckets']) or 'none'});"
                f" topic {outcome['topic_arn']} -> {settings.notify_url}"
                f" (persistent={str(settings.persistent_notifications).lower()});"
                f" notification on {settings.input_bucket!r} for s3:ObjectCreated:*"
            )
        elif args.command == "disable":
            disable_notifications(settings)
            print(f"notification removed from bucket {settings.input_bucket!r}")
        else:
            port = args.port if args.port is not None else _default_port(settings)
            serve(settings, args.host, port, Backoff(args.backoff_base, args.backoff_max), args.grace)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as exc:
        print(f"error: S3/SNS request to {settings.s3_endpoint_url or 'AWS'} failed: {exc}", file=sys.stderr)
        return 1
    except (OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
