"""The work queue: one entry per object key, worked off by a fixed number of threads.

An event for a key that is already queued is a duplicate (the queued run reads the object
as it is by then). An event with another ETag for a key being processed is run again after
the current run, never alongside it, so that an old run cannot overwrite a newer answer.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from facepipe import logs
from facepipe.notifier.metrics import ACCEPTED, DUPLICATE, REJECTED, NotifierMetrics

log = logs.get("facepipe.notifier")

MAX_BACKLOG = 100_000


@dataclass
class Job:
    """One object to invoke the function for; `etag` and `last_modified` as far as known."""

    bucket: str
    key: str
    etag: str = ""
    last_modified: datetime | None = None
    source: str = "event"
    queued_at: float = field(default_factory=time.monotonic)


class JobQueue:
    """Queued and running jobs by (bucket, key); `process` is called for each in a worker thread."""

    def __init__(
        self,
        process: Callable[[Job], None],
        metrics: NotifierMetrics,
        stop: threading.Event,
        max_backlog: int = MAX_BACKLOG,
    ):
        self._process = process
        self._metrics = metrics
        self._stop = stop
        self.max_backlog = max_backlog
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[tuple[str, str], Job] = {}
        self._running: dict[tuple[str, str], Job] = {}
        self._rerun: dict[tuple[str, str], Job] = {}
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._threads: list[threading.Thread] = []

    def _update_gauges(self) -> None:
        self._metrics.backlog.set(len(self._jobs) + len(self._rerun))
        self._metrics.inflight.set(len(self._running))

    def submit(self, job: Job) -> str:
        """Queue `job` unless the same object version is already queued or running: ACCEPTED, DUPLICATE or
        REJECTED (backlog full, or stopping)."""
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
            self._rerun[ident] = job
            self._update_gauges()
            return ACCEPTED

    def queued(self) -> list[Job]:
        """Every queued or running job (re-runs not included)."""
        with self._lock:
            return list(self._jobs.values())

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
                log.exception("unexpected error", key=job.key, bucket=job.bucket, source=job.source)
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

    def start(self, workers: int) -> None:
        for index in range(max(1, workers)):
            thread = threading.Thread(target=self._worker, name=f"invoker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, deadline: float) -> tuple[int, int]:
        """Wake the workers and wait for them until `deadline` (monotonic); the caller sets the stop
        event first. Returns (running, queued) left behind."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            running = len(self._running)
            return running, len(self._jobs) - running + len(self._rerun)
