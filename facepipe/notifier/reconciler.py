"""The reconciler: what the notifications missed, found from bucket listings.

For every route of the routing table it lists the input and the output bucket and queues every
input object that has no current answer (`facepipe.answers`: judged from the listings, which
carry no metadata), at start and then every `RECONCILE_INTERVAL_S`. A lost notification, a
crashed function or a restarted notifier therefore only delays an answer. A route whose
buckets cannot be listed does not hold up the others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from botocore.exceptions import BotoCoreError, ClientError

from facepipe import answers, logs
from facepipe.keys import validate_key
from facepipe.notifier.jobs import Job
from facepipe.notifier.metrics import ACCEPTED, NotifierMetrics
from facepipe.settings import Route, Settings

log = logs.get("facepipe.notifier")

LIST_PAGE_SIZE = 1000
RETRY_S = 10.0


class ReconcileError(RuntimeError):
    """At least one route could not be reconciled (each failure was logged)."""


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        s3,
        submit: Callable[[Job], str],
        metrics: NotifierMetrics,
        routes: list[Route] | None = None,
    ):
        self.settings = settings
        self.s3 = s3
        self.routes = routes if routes is not None else settings.routes()
        self._submit = submit
        self._metrics = metrics

    def _list(self, bucket: str) -> dict[str, dict]:
        """list_objects_v2 entries of `bucket` by key."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, PaginationConfig={"PageSize": LIST_PAGE_SIZE}
        )
        return {obj["Key"]: obj for page in pages for obj in page.get("Contents", [])}

    def run_route(self, route: Route) -> int:
        """Queue every object of the route's input bucket without a current answer in its output
        bucket; returns how many were queued."""
        started = time.monotonic()
        inputs = self._list(route.input_bucket)
        found = answers.index(self._list(route.output_bucket).values())
        queued = unanswered = 0
        for key, obj in sorted(inputs.items(), key=lambda item: item[1]["LastModified"]):
            try:
                validate_key(key)
            except ValueError:
                continue
            version = answers.Version.of(obj)
            if found.get(answers.stem(key), answers.Answers()).current(version) is not None:
                continue
            unanswered += 1
            job = Job(route.input_bucket, key, version.etag, version.modified, source="reconcile")
            if self._submit(job) == ACCEPTED:
                queued += 1
        self._metrics.reconciled.labels(route.function).inc(queued)
        log.info(
            "reconciled", bucket=route.input_bucket, function=route.function, objects=len(inputs),
            unanswered=unanswered, queued=queued, seconds=round(time.monotonic() - started, 3),
        )  # fmt: skip
        return queued

    def run_once(self) -> int:
        """`run_route` for every route; returns how many objects were queued in all. Raises
        ReconcileError after the others when a route failed (its listing, say)."""
        queued = failed = 0
        for route in self.routes:
            try:
                queued += self.run_route(route)
            except (BotoCoreError, ClientError) as exc:
                failed += 1
                log.warning(
                    "reconcile failed", bucket=route.input_bucket, function=route.function,
                    error=type(exc).__name__, detail=str(exc),
                )  # fmt: skip
        if failed:
            raise ReconcileError(f"{failed} of {len(self.routes)} routes not reconciled")
        return queued

    def loop(self, stop: threading.Event) -> None:
        """`run_once` now and every interval until `stop` (once only when the interval is 0);
        a failed run is tried again after at most RETRY_S."""
        interval = self.settings.reconcile_interval_s
        while not stop.is_set():
            try:
                self.run_once()
                wait = interval
            except ReconcileError:
                wait = min(interval, RETRY_S) if interval > 0 else RETRY_S
            except Exception:
                log.exception("reconcile failed")
                wait = RETRY_S
            else:
                if interval <= 0:
                    return
            if stop.wait(wait):
                return
