"""The work queue: one entry per object (bucket, key), worked off by a fixed number of threads
per function.

An event for a key that is already queued is a duplicate (the queued run reads the object
as it is by then). An event with another ETag for a key being processed is run again after
the current run, never alongside it, so that an old run cannot overwrite a newer answer.

Each function (the one `function_of` names for a bucket) has a FIFO and `workers` threads of
its own: a backlog of slow videos does not hold up photos, and each function gets at most
`workers` invocations at once. The backlog and in-flight gauges are kept per function too.

Each function also has a *suspect lane*: `process` returns SUSPECT for a job whose object the
function failed on before (it may be poison: a worker that dies on it also fails the requests
it held beside it). The job then waits in the lane, a FIFO of its own, and the lane runs one
job at a time: a worker thread that is free takes the lane's next job before anything from
the FIFO, unless another thread runs a suspect of that function already. So suspects never
run beside each other, nobody waits for them busily, and the other threads keep taking
innocent objects meanwhile. A job runs in the lane to its end (`Job.suspect` is set).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from facepipe import logs
from facepipe.notifier.metrics import ACCEPTED, DUPLICATE, REJECTED, NotifierMetrics

log = logs.get("facepipe.notifier")

MAX_BACKLOG = 100_000
#: What `process` returns for a job that is to wait in its function's suspect lane.
SUSPECT = "suspect"

Ident = tuple[str, str]  # bucket, key


@dataclass
class Job:
    """One object to invoke the function for; `etag` and `last_modified` as far as known."""

    bucket: str
    key: str
    etag: str = ""
    last_modified: datetime | None = None
    source: str = "event"
    queued_at: float = field(default_factory=time.monotonic)
    #: The job was handed to its function's suspect lane (and runs there).
    suspect: bool = False
    #: What `process` keeps with a job it hands to the lane (the attempts made); the queue
    #: does not look at it.
    handover: object = None


class JobQueue:
    """Queued and running jobs by (bucket, key); `process` is called for each in a worker thread
    of its function, and returns SUSPECT to move the job to the function's suspect lane (a job
    already there is done whatever it returns). A job whose bucket goes to none of `functions`
    is rejected."""

    def __init__(
        self,
        process: Callable[[Job], str | None],
        metrics: NotifierMetrics,
        stop: threading.Event,
        max_backlog: int = MAX_BACKLOG,
        function_of: Callable[[str], str] = lambda bucket: "",
        functions: Iterable[str] = ("",),
    ):
        self._process = process
        self._metrics = metrics
        self._function_of = function_of
        self._stop = stop
        self.max_backlog = max_backlog
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[Ident, Job] = {}
        self._running: dict[Ident, Job] = {}
        self._rerun: dict[Ident, Job] = {}
        self._queues: dict[str, queue.Queue[Ident | None]] = {function: queue.Queue() for function in functions}
        #: Each function's suspect lane, and the functions whose lane has a job running.
        self._lanes: dict[str, deque[Ident]] = {function: deque() for function in self._queues}
        self._lane_busy: set[str] = set()
        self._threads: list[tuple[threading.Thread, queue.Queue]] = []
        #: Queued, running and re-run jobs by bucket (a handful of buckets: cheap to sum per function).
        self._pending: Counter[str] = Counter()
        self._gauged: set[str] = set()

    def _update_gauges(self) -> None:
        backlog: Counter[str] = Counter()
        for bucket, count in self._pending.items():
            backlog[self._function_of(bucket)] += count
        inflight = Counter(self._function_of(bucket) for bucket, _key in self._running)
        self._gauged |= backlog.keys()
        for function in self._gauged:
            self._metrics.backlog.labels(function).set(backlog[function])
            self._metrics.inflight.labels(function).set(inflight[function])

    def submit(self, job: Job) -> str:
        """Queue `job` unless the same object version is already queued or running: ACCEPTED, DUPLICATE or
        REJECTED (backlog full, or stopping)."""
        ident = (job.bucket, job.key)
        work = self._queues.get(self._function_of(job.bucket))
        with self._lock:
            if self._stop.is_set() or work is None:
                return REJECTED
            current = self._jobs.get(ident)
            if current is None:
                if len(self._jobs) + len(self._rerun) >= self.max_backlog:
                    return REJECTED
                self._jobs[ident] = job
                self._pending[job.bucket] += 1
                work.put(ident)
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
            if rerun is None:
                self._pending[job.bucket] += 1
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

    def _take(self, function: str, work: queue.Queue) -> tuple[Ident, Job] | None:
        """The next job for a worker of `function`, marked running: the suspect lane's next one
        when no suspect of the function runs, else the next from the FIFO (waiting for one).
        None when stopping."""
        with self._lock:
            if self._stop.is_set():
                return None
            lane = self._lanes[function]
            if lane and function not in self._lane_busy:
                self._lane_busy.add(function)
                return self._mark_running(lane.popleft())
        ident = work.get()
        if ident is None or self._stop.is_set():
            return None
        with self._lock:
            return self._mark_running(ident)

    def _mark_running(self, ident: Ident) -> tuple[Ident, Job]:
        job = self._running[ident] = self._jobs[ident]
        self._update_gauges()
        return ident, job

    def _finish(self, function: str, work: queue.Queue, ident: Ident, job: Job, outcome: str | None) -> None:
        """After `process`: run the job's re-run next, or hand the job to the suspect lane, or drop it."""
        handed_over = False
        with self._changed:
            del self._running[ident]
            if job.suspect:
                self._lane_busy.discard(function)
            rerun = self._rerun.pop(ident, None)
            if rerun is not None and not self._stop.is_set():
                self._jobs[ident] = rerun  # a newer version: the suspect's attempts no longer matter
                work.put(ident)
                self._pending[job.bucket] -= 1
            elif outcome == SUSPECT and not job.suspect and not self._stop.is_set():
                job.suspect = handed_over = True
                self._lanes[function].append(ident)
                waiting, busy = len(self._lanes[function]), function in self._lane_busy
            else:
                del self._jobs[ident]
                self._pending[job.bucket] -= 1
            self._update_gauges()
            self._changed.notify_all()
        if handed_over:
            log.info(
                "suspect queued", key=job.key, bucket=job.bucket, function=function, etag=job.etag,
                waiting=waiting, suspect_running=busy,
                detail="the function failed on it before: it runs alone among suspects",
            )  # fmt: skip

    def _worker(self, function: str, work: queue.Queue) -> None:
        while True:
            taken = self._take(function, work)
            if taken is None:
                return
            ident, job = taken
            outcome = None
            try:
                outcome = self._process(job)
            except Exception:
                log.exception("unexpected error", key=job.key, bucket=job.bucket, source=job.source)
            finally:
                self._finish(function, work, ident, job, outcome)

    def start(self, workers: int) -> None:
        """`workers` threads for each function."""
        for function, work in self._queues.items():
            for index in range(max(1, workers)):
                name = f"invoker-{function}-{index}" if function else f"invoker-{index}"
                thread = threading.Thread(target=self._worker, args=(function, work), name=name, daemon=True)
                thread.start()
                self._threads.append((thread, work))

    def stop(self, deadline: float) -> tuple[int, int]:
        """Wake the workers and wait for them until `deadline` (monotonic); the caller sets the stop
        event first. Returns (running, queued) left behind."""
        for _thread, work in self._threads:
            work.put(None)
        for thread, _work in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            running = len(self._running)
            return running, len(self._jobs) - running + len(self._rerun)
