"""Notifier reconciler: which input objects it queues, from listings of each route's two buckets."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.config import Config

from facepipe import answers
from facepipe.notifier import reconciler as reconciler_module
from facepipe.notifier.reconciler import ReconcileError
from facepipe.notifier.service import Notifier
from facepipe_tools.polling import wait_for
from facepipe_tools.stack import free_port
from tests.unit.notifierfake import FACES, IMAGES, TWO_ROUTES


def test_reconciler_queues_every_unanswered_object(notifier, s3, gateway):
    for key in ("a.mp4", "b.mp4", "c.mp4", "notes.txt", "dir/d.mp4"):
        s3.put_object(Bucket="input", Key=key, Body=b"x")
    s3.put_object(Bucket="input", Key="folder/", Body=b"")
    s3.put_object(Bucket="output", Key="b.csv", Body=b"name,major,year\n")
    s3.put_object(Bucket="output", Key="c.error.json", Body=b'{"error": "x"}')
    gateway.on_ok = lambda body: s3.put_object(
        Bucket="output", Key=answers.result_key(body["key"]), Body=b"name,major,year\n"
    )
    assert notifier.reconciler.run_once() == 3
    queued = {job.key: job for job in notifier.jobs.queued()}
    etag = s3.head_object(Bucket="input", Key="a.mp4")["ETag"].strip('"')
    assert (queued["a.mp4"].source, queued["a.mp4"].etag) == ("reconcile", etag)
    notifier.start(reconcile=False)
    assert notifier.wait_idle(5)
    assert sorted(gateway.keys()) == ["a.mp4", "dir/d.mp4", "notes.txt"]
    assert notifier.reconciler.run_once() == 0
    assert notifier.metrics.registry.get_sample_value("facerec_notifier_reconciled_total", {"function": FACES}) == 3


def test_reconciler_runs_over_every_route(settings, s3, gateway):
    for bucket in ("images", "images-out"):
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket="input", Key="a.mp4", Body=b"x")
    s3.put_object(Bucket="images", Key="cat.jpg", Body=b"x")
    s3.put_object(Bucket="images", Key="done.jpg", Body=b"x")
    s3.put_object(Bucket="images-out", Key="done.csv", Body=b"rank,label,score\n")
    s3.put_object(Bucket="output", Key="cat.csv", Body=b"name,major,year\n")  # another route's answer
    notifier = Notifier(replace(settings, routes_table=TWO_ROUTES), s3=s3)
    try:
        assert notifier.reconciler.run_once() == 2
        assert sorted((job.bucket, job.key) for job in notifier.jobs.queued()) == [
            ("images", "cat.jpg"), ("input", "a.mp4"),
        ]  # fmt: skip
        notifier.start(reconcile=False)
        assert notifier.wait_idle(5)
    finally:
        notifier.stop(grace_s=1)
    assert sorted(gateway.invoked) == [(FACES, "a.mp4"), (IMAGES, "cat.jpg")]
    reconciled = notifier.metrics.registry.get_sample_value
    assert reconciled("facerec_notifier_reconciled_total", {"function": IMAGES}) == 1
    assert reconciled("facerec_notifier_reconciled_total", {"function": FACES}) == 1


def test_a_route_that_cannot_be_listed_does_not_hold_up_the_others(settings, s3, caplog):
    """The image buckets do not exist: the face route is reconciled all the same, then the run fails."""
    s3.put_object(Bucket="input", Key="a.mp4", Body=b"x")
    images_first = f"images={IMAGES}>images-out,{settings.routes_table}"
    notifier = Notifier(replace(settings, routes_table=images_first), s3=s3)
    with caplog.at_level("WARNING", logger="facepipe.notifier"), pytest.raises(ReconcileError, match="1 of 2"):
        notifier.reconciler.run_once()
    assert [(job.bucket, job.key) for job in notifier.jobs.queued()] == [("input", "a.mp4")]
    [failure] = [r.fields for r in caplog.records if r.getMessage() == "reconcile failed"]
    assert (failure["bucket"], failure["function"], failure["error"]) == ("images", IMAGES, "NoSuchBucket")


def test_reconciler_paginates(notifier, s3, monkeypatch):
    monkeypatch.setattr(reconciler_module, "LIST_PAGE_SIZE", 2)
    for index in range(7):
        s3.put_object(Bucket="input", Key=f"v{index}.mp4", Body=b"")
        s3.put_object(Bucket="output", Key=f"v{index}.csv" if index < 3 else "x", Body=b"")
    calls = []
    s3.meta.events.register("before-call.s3.ListObjectsV2", lambda params, **kwargs: calls.append(params))
    assert notifier.reconciler.run_once() == 4
    assert len(calls) == 4 + 2  # 7 inputs and 4 outputs, 2 a page


class FakeListing:
    """Just enough S3 for the reconciler: listings with chosen LastModified times."""

    def __init__(self, buckets: dict[str, dict[str, datetime]]):
        self.buckets = buckets

    def get_paginator(self, name):
        assert name == "list_objects_v2"
        return self

    def paginate(self, Bucket, PaginationConfig=None):
        yield {"Contents": [{"Key": k, "LastModified": t, "ETag": '"e"'} for k, t in self.buckets[Bucket].items()]}


def test_reconciler_requeues_answers_older_than_their_input(settings):
    now = datetime(2026, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC)
    fake = FakeListing(
        {
            "input": {"stale.mp4": now, "fresh.mp4": now, "same.mp4": now, "err.mp4": now},
            "output": {
                "stale.csv": now - timedelta(seconds=5),
                "fresh.csv": now + timedelta(seconds=1),
                "same.csv": now,
                "err.error.json": now - timedelta(seconds=1),
                "err.csv": now + timedelta(seconds=2),
            },
        }
    )
    notifier = Notifier(settings, s3=fake)
    assert notifier.reconciler.run_once() == 1
    assert [(job.bucket, job.key) for job in notifier.jobs.queued()] == [("input", "stale.mp4")]


def test_reconciler_loop_survives_an_unreachable_endpoint(settings, caplog):
    unreachable = boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{free_port()}", aws_access_key_id="x", aws_secret_access_key="x",
        region_name="us-east-1", config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip
    notifier = Notifier(replace(settings, reconcile_interval_s=0.05), s3=unreachable)

    def failures() -> list[dict]:
        return [r.fields for r in caplog.records if r.getMessage() == "reconcile failed"]

    try:
        with caplog.at_level("WARNING", logger="facepipe.notifier"):
            notifier.start()
            assert wait_for(lambda: len(failures()) >= 2, 10), "the loop did not try again"
    finally:
        notifier.stop(grace_s=1)
    assert failures()[0]["error"] == "EndpointConnectionError"
