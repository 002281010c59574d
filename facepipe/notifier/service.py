"""The notifier assembled: metrics, job queue, invoker and reconciler, started and stopped together.

One notifier serves every route of the routing table (`Settings.routes`): an object of a
route's input bucket goes to that route's function. A job is handed to the function as it is:
the notifier asks S3 nothing about it. The function itself returns the answer it already has
for the object's ETag (`skipped`), and answers 404 for an object that no longer exists.
Only an object the function keeps failing on is looked at: after DEAD_LETTER_ATTEMPTS failed
attempts the notifier writes its `failed` record and invokes that version no more
(`deadletter`).

An object version with a counted failure is a *suspect*: it may be poison, and a worker that
dies on it also fails the other requests it held. From its first counted failure on, its
attempts go on in its function's suspect lane (`jobs`), where suspects run one at a time. An
innocent object that failed beside a poison one is then a suspect too and never runs beside it
again: one poison object costs it at most one of its DEAD_LETTER_ATTEMPTS.
"""

from __future__ import annotations

import threading
import time

from facepipe import logs
from facepipe.clients import s3_client
from facepipe.notifier.deadletter import DeadLetters
from facepipe.notifier.invoker import SKIPPED, Backoff, Invoker, Progress, Reply
from facepipe.notifier.jobs import MAX_BACKLOG, SUSPECT, Job, JobQueue
from facepipe.notifier.metrics import CLIENT_ERROR, OK, NotifierMetrics
from facepipe.notifier.reconciler import Reconciler
from facepipe.settings import Route, Settings

log = logs.get("facepipe.notifier")


class Notifier:
    """Queue, workers and reconciler; `listener.create_app` puts the HTTP front on it. Raises
    SettingsError for a bad routing table."""

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
        self.routes = settings.routes()
        self._route_of = {route.input_bucket: route for route in self.routes}
        self.metrics = NotifierMetrics(route.function for route in self.routes)
        self._stop = threading.Event()
        self.jobs = JobQueue(
            self.process, self.metrics, self._stop, max_backlog, function_of=self.function_of,
            functions=[route.function for route in self.routes],
        )  # fmt: skip
        self.invoker = invoker or Invoker(
            settings, backoff, stop=self._stop, on_retry=self._count_retry, routes=self.routes
        )
        listing = s3 if s3 is not None else s3_client(settings, caller="reconciler")
        self.reconciler = Reconciler(settings, listing, self.jobs.submit, self.metrics, self.routes)
        writing = s3 if s3 is not None else s3_client(settings, caller="dead-letter")
        self.dead_letters = DeadLetters(writing, self.routes, settings.dead_letter_attempts, self.metrics)
        self._reconciler_thread: threading.Thread | None = None

    def route_for(self, bucket: str) -> Route | None:
        """The route of an input bucket; None when its objects go to no function."""
        return self._route_of.get(bucket)

    def function_of(self, bucket: str) -> str:
        """The function a bucket's objects go to ("" for a bucket without a route)."""
        route = self._route_of.get(bucket)
        return route.function if route is not None else ""

    def _count_retry(self, function: str) -> None:
        self.metrics.retries.labels(function).inc()

    def submit(self, job: Job) -> str:
        return self.jobs.submit(job)

    def pending(self) -> int:
        return self.jobs.pending()

    def wait_idle(self, timeout: float) -> bool:
        return self.jobs.wait_idle(timeout)

    def _dead_lettered(self, job: Job, etag: str, function: str) -> bool:
        """True when `job`'s version is not to be invoked: it was dead-lettered (the record
        stands), or its failures reached the limit and the record is only now written."""
        dead = self.dead_letters
        if dead.is_dead(job.bucket, job.key, etag):
            log.info(
                "dead letter skipped", key=job.key, bucket=job.bucket, function=function, etag=etag,
                source=job.source, detail="this version was dead-lettered; a new upload is invoked",
            )  # fmt: skip
            return True
        if not dead.exhausted(dead.failures(job.bucket, job.key, etag)):
            return False
        dead.write(job.bucket, job.key, etag, function)
        return True

    def process(self, job: Job) -> str | None:
        """Invoke the function for `job` and record the outcome; dead-letter the object version
        once its failed attempts reach DEAD_LETTER_ATTEMPTS. SUSPECT (to the suspect lane, see
        the module docstring) for a job outside the lane whose version failed before, without
        invoking, or as soon as it fails, with its attempts so far (`job.handover`)."""
        queued_s = time.monotonic() - job.queued_at
        function = self.function_of(job.bucket)
        dead = self.dead_letters
        etag = job.etag
        if not etag and dead.tracked(job.bucket, job.key):
            etag = dead.current_etag(job.bucket, job.key) or ""
        if etag and self._dead_lettered(job, etag, function):
            return None
        if not job.suspect and etag and dead.failures(job.bucket, job.key, etag).attempts:
            return SUSPECT
        to_lane = exhausted = False

        def on_failure(reply: Reply) -> bool:
            """Count a failed attempt against the version (its ETag found by a HEAD when the job
            did not carry one); True when the retries stop here: the version is to be
            dead-lettered, or it just became a suspect and its retries go to the lane."""
            nonlocal etag, to_lane, exhausted
            if not etag:
                etag = dead.current_etag(job.bucket, job.key) or ""
                if not etag:
                    return False
            failures = dead.fail(job.bucket, job.key, etag, reply.error)
            log.info(
                "failure counted", key=job.key, bucket=job.bucket, function=function, etag=etag,
                failures=failures.attempts, limit=dead.limit, last_error=failures.last_error,
            )  # fmt: skip
            exhausted = dead.exhausted(failures)
            to_lane = not exhausted and not job.suspect
            return exhausted or to_lane

        resume = job.handover if isinstance(job.handover, Progress) else None
        result = self.invoker.invoke(job.bucket, job.key, on_failure, resume=resume)
        if to_lane and result.resume is not None and result.attempts < self.invoker.attempts:
            job.etag, job.handover = job.etag or etag, result.resume
            return SUSPECT
        if result.outcome in (OK, CLIENT_ERROR):
            dead.forget(job.bucket, job.key)
        self.metrics.invocations.labels(function, result.outcome).inc()
        self.metrics.invoke_seconds.labels(function).observe(result.seconds)
        if result.answer == SKIPPED:
            self.metrics.skipped.labels(function).inc()
        level = {OK: log.info, CLIENT_ERROR: log.warning}.get(result.outcome, log.error)
        fields = {
            "key": job.key, "bucket": job.bucket, "function": function, "outcome": result.outcome,
            "attempts": result.attempts, "seconds": round(result.seconds, 3), "queued_s": round(queued_s, 3),
            "status": result.status, "answer": result.answer, "source": job.source, "detail": result.detail,
            "suspect": job.suspect or None,
        }  # fmt: skip
        level("invoked", **{name: value for name, value in fields.items() if value not in (None, "")})
        if exhausted and etag:
            dead.write(job.bucket, job.key, etag, function)
        return None

    def start(self, reconcile: bool = True) -> None:
        self.jobs.start(self.settings.notifier_concurrency)
        if reconcile:
            self._reconciler_thread = threading.Thread(
                target=self.reconciler.loop, args=(self._stop,), name="reconciler", daemon=True
            )
            self._reconciler_thread.start()

    def stop(self, grace_s: float = 20.0) -> None:
        """Stop taking work, let running invocations finish for up to `grace_s`, drop the queue."""
        self._stop.set()
        deadline = time.monotonic() + grace_s
        running, queued = self.jobs.stop(deadline)
        if self._reconciler_thread is not None:
            self._reconciler_thread.join(max(0.0, deadline - time.monotonic()))
        if running or queued:
            log.warning(
                "stopped", outcome="unfinished", running=running, queued=queued,
                detail="the reconciler picks them up at the next start",
            )  # fmt: skip
        else:
            log.info("stopped", outcome="clean")
