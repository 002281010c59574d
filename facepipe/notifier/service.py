"""The notifier assembled: metrics, job queue, invoker and reconciler, started and stopped together.

One notifier serves every route of the routing table (`Settings.routes`): an object of a
route's input bucket goes to that route's function. A job is handed to the function as it is:
the notifier asks S3 nothing about it. The function itself returns the answer it already has
for the object's ETag (`skipped`), and answers 404 for an object that no longer exists.
"""

from __future__ import annotations

import threading
import time

from facepipe import logs
from facepipe.clients import s3_client
from facepipe.notifier.invoker import SKIPPED, Backoff, Invoker
from facepipe.notifier.jobs import MAX_BACKLOG, Job, JobQueue
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
        self.token = (settings.notify_token or "").encode()
        self.metrics = NotifierMetrics(route.function for route in self.routes)
        self._stop = threading.Event()
        self.jobs = JobQueue(
            self.process, self.metrics, self._stop, max_backlog, function_of=self.function_of,
            functions=[route.function for route in self.routes],
        )  # fmt: skip
        self.invoker = invoker or Invoker(
            settings, backoff, stop=self._stop, on_retry=self._count_retry, routes=self.routes
        )
        s3 = s3 if s3 is not None else s3_client(settings, caller="reconciler")
        self.reconciler = Reconciler(settings, s3, self.jobs.submit, self.metrics, self.routes)
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

    def process(self, job: Job) -> None:
        """Invoke the function for `job` and record the outcome."""
        queued_s = time.monotonic() - job.queued_at
        function = self.function_of(job.bucket)
        result = self.invoker.invoke(job.bucket, job.key)
        self.metrics.invocations.labels(function, result.outcome).inc()
        self.metrics.invoke_seconds.labels(function).observe(result.seconds)
        if result.answer == SKIPPED:
            self.metrics.skipped.labels(function).inc()
        level = {OK: log.info, CLIENT_ERROR: log.warning}.get(result.outcome, log.error)
        fields = {
            "key": job.key, "bucket": job.bucket, "function": function, "outcome": result.outcome,
            "attempts": result.attempts, "seconds": round(result.seconds, 3), "queued_s": round(queued_s, 3),
            "status": result.status, "answer": result.answer, "source": job.source, "detail": result.detail,
        }  # fmt: skip
        level("invoked", **{name: value for name, value in fields.items() if value not in (None, "")})

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
