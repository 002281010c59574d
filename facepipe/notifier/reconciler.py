"""The reconciler: what the notifications missed, found from bucket listings.

It lists the input and the output bucket and queues every input object that has no current
answer (`facepipe.answers`: judged from the listings, which carry no metadata), at start and
then every `RECONCILE_INTERVAL_S`. A lost notification, a crashed function or a restarted
notifier therefore only delays an answer.
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
from facepipe.settings import Settings

log = logs.get("facepipe.notifier")

LIST_PAGE_SIZE = 1000
RETRY_S = 10.0


class Reconciler:
    def __init__(self, settings: Settings, s3, submit: Callable[[Job], str], metrics: NotifierMetrics):
        self.settings = settings
        self.s3 = s3
        self._submit = submit
        self._metrics = metrics

    def _list(self, bucket: str) -> dict[str, dict]:
        """list_objects_v2 entries of `bucket` by key."""
        pages = self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, PaginationConfig={"PageSize": LIST_PAGE_SIZE}
        )
        return {obj["Key"]: obj for page in pages for obj in page.get("Contents", [])}

    def run_once(self) -> int:
        """Queue every input object without a current answer; returns how many were queued."""
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
            job = Job(self.settings.input_bucket, key, version.etag, version.modified, source="reconcile")
            if self._submit(job) == ACCEPTED:
                queued += 1
        self._metrics.reconciled.inc(queued)
        log.info(
            "reconciled", bucket=self.settings.input_bucket, objects=len(inputs), unanswered=unanswered,
            queued=queued, seconds=round(time.monotonic() - started, 3),
        )  # fmt: skip
        return queued

    def loop(self, stop: threading.Event) -> None:
        """`run_once` now and every interval until `stop` (once only when the interval is 0);
        a failed run is tried again after at most RETRY_S."""
        interval = self.settings.reconcile_interval_s
        while not stop.is_set():
            try:
                self.run_once()
                wait = interval
            except (BotoCoreError, ClientError) as exc:
                log.warning("reconcile failed", error=type(exc).__name__, detail=str(exc))
                wait = min(interval, RETRY_S) if interval > 0 else RETRY_S
            except Exception:
                log.exception("reconcile failed")
                wait = RETRY_S
            else:
                if interval <= 0:
                    return
            if stop.wait(wait):
                return
