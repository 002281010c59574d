"""The whole pipeline on the real local stack: uploads to Ceph RGW, RGW's bucket
notifications to the notifier, the function through the gateway, DynamoDB, CSV back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from facepipe.answers import parse_csv
from facepipe.clients import s3_client
from facepipe.settings import Settings
from facepipe_tools import metrics_client
from facepipe_tools.mapping import load_mapping
from facepipe_tools.paths import REPO_ROOT
from facepipe_tools.polling import wait_for
from facepipe_tools.stack import LocalStack

pytestmark = pytest.mark.integration


def run(script: str, *args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, script, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def notifier_metrics(settings: Settings) -> metrics_client.Samples:
    return metrics_client.fetch(settings.notify_url.rstrip("/") + "/metrics")


def notifier_idle(settings: Settings) -> bool:
    """The notifier has nothing queued or running (a record it got is queued before it answers)."""
    return wait_for(lambda: notifier_metrics(settings).value("facerec_notifier_backlog") == 0, 60)


def wait_for_output(s3, settings: Settings, key: str, timeout: float = 60) -> str:
    def read() -> str | None:
        try:
            return s3.get_object(Bucket=settings.output_bucket, Key=key)["Body"].read().decode()
        except s3.exceptions.NoSuchKey:
            return None

    text = wait_for(read, timeout_s=timeout)
    assert text is not None, f"{key} did not appear in {settings.output_bucket} within {timeout} s"
    return text


def output_keys(s3, settings: Settings) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=settings.output_bucket)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def test_built_in_sample_end_to_end(local_stack: LocalStack, stack_env: dict[str, str], stack_settings) -> None:
    accepted_before = notifier_metrics(stack_settings).value("facerec_notifier_events_total", outcome="accepted")
    workload = run("workload/workload.py", env=stack_env)
    assert workload.returncode == 0, workload.stdout + workload.stderr
    check = run("checker/check.py", "--mapping", "data/sample_mapping", "--wait", "180", env=stack_env)
    assert check.returncode == 0, check.stdout + check.stderr
    videos = len(load_mapping(REPO_ROOT / "data" / "sample_mapping"))
    assert f"{videos}/{videos} correct" in check.stdout
    # The results came through RGW's notifications, one per upload.
    accepted = notifier_metrics(stack_settings).value("facerec_notifier_events_total", outcome="accepted")
    assert accepted - accepted_before >= videos
    s3 = s3_client(stack_settings)
    expected = sorted(f"{Path(entry.video).stem}.csv" for entry in load_mapping(REPO_ROOT / "data" / "sample_mapping"))
    assert sorted(k for k in output_keys(s3, stack_settings) if k.endswith(".csv")) == expected


def test_awkward_keys_and_bad_media_through_notifications(
    local_stack: LocalStack, stack_settings: Settings, sample_dir: Path
) -> None:
    s3 = s3_client(stack_settings)
    clip = (sample_dir / "sample_hopper.mp4").read_bytes()
    awkward = {
        "lecture 1/clip with spaces.mp4": "lecture 1/clip with spaces.csv",
        "ünïcode ✓ clip.mp4": "ünïcode ✓ clip.csv",
        "plus+sign&more=chars.mp4": "plus+sign&more=chars.csv",
        "100%real.mp4": "100%real.csv",
    }
    for key in awkward:
        s3.put_object(Bucket=stack_settings.input_bucket, Key=key, Body=clip)
    s3.put_object(Bucket=stack_settings.input_bucket, Key="notes.mp4", Body=b"not a video at all\n" * 10)
    s3.put_object(Bucket=stack_settings.input_bucket, Key="empty.mp4", Body=b"")
    for key, result in awkward.items():
        assert [s.name for s in parse_csv(wait_for_output(s3, stack_settings, result))] == ["grace_hopper"], key
    assert json.loads(wait_for_output(s3, stack_settings, "notes.error.json"))["error"] == "unreadable"
    assert json.loads(wait_for_output(s3, stack_settings, "empty.error.json"))["error"] == "empty"


def test_multipart_upload_is_processed_once(local_stack: LocalStack, stack_settings: Settings, sample_dir: Path):
    from boto3.s3.transfer import TransferConfig

    s3 = s3_client(stack_settings)
    big = sample_dir.parent / "multipart.mp4"
    noisy = ["-vf", "noise=alls=60:allf=t", "-t", "6", "-r", "25", "-b:v", "20M"]
    source = ["-stream_loop", "-1", "-i", str(sample_dir / "sample_hopper.mp4")]
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *source, *noisy, str(big)], check=True)
    assert big.stat().st_size > 10 * 1024 * 1024
    s3.upload_file(
        str(big),
        stack_settings.input_bucket,
        "multipart.mp4",
        Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024),
    )
    assert [s.name for s in parse_csv(wait_for_output(s3, stack_settings, "multipart.csv", timeout=120))] == [
        "grace_hopper"
    ]
    assert not any(k.startswith("multipart.error") for k in output_keys(s3, stack_settings))


def test_duplicate_uploads_give_one_result(local_stack: LocalStack, stack_settings: Settings, sample_dir: Path):
    s3 = s3_client(stack_settings)
    clip = (sample_dir / "sample_collins.mp4").read_bytes()
    events = notifier_metrics(stack_settings).by_label("facerec_notifier_events_total", "outcome")
    received_before = events.get("accepted", 0.0) + events.get("duplicate", 0.0)
    for _ in range(3):
        s3.put_object(Bucket=stack_settings.input_bucket, Key="again.mp4", Body=clip)
    assert [s.name for s in parse_csv(wait_for_output(s3, stack_settings, "again.csv"))] == ["eileen_collins"]

    def all_three_received() -> bool:
        events = notifier_metrics(stack_settings).by_label("facerec_notifier_events_total", "outcome")
        return events.get("accepted", 0.0) + events.get("duplicate", 0.0) >= received_before + 3

    # Every event of the three uploads reached the notifier and it finished with them.
    assert wait_for(all_three_received), "the notifier did not get the three uploads' events"
    assert notifier_idle(stack_settings)
    assert sorted(k for k in output_keys(s3, stack_settings) if k.startswith("again")) == ["again.csv", "again.jpg"]


def test_reconciler_finds_objects_whose_notification_was_lost(
    local_stack: LocalStack, stack_settings: Settings, stack_env: dict[str, str], sample_dir: Path
) -> None:
    s3 = s3_client(stack_settings)
    disable = run("notifier/notification.py", "disable", env=stack_env)
    assert disable.returncode == 0, disable.stdout + disable.stderr
    try:
        # Nothing tells the notifier about the upload: the bucket has no notification.
        notification = s3.get_bucket_notification_configuration(Bucket=stack_settings.input_bucket)
        assert not notification.get("TopicConfigurations"), notification
        s3.put_object(Bucket=stack_settings.input_bucket, Key="unnoticed.mp4",
                      Body=(sample_dir / "sample_hopper.mp4").read_bytes())  # fmt: skip
        local_stack.restart("notifier")  # reconciles at start
        assert [s.name for s in parse_csv(wait_for_output(s3, stack_settings, "unnoticed.csv"))] == ["grace_hopper"]
        assert notifier_metrics(stack_settings).value("facerec_notifier_reconciled_total") >= 1
    finally:
        setup = run("notifier/notification.py", "setup", env=stack_env)
        assert setup.returncode == 0, setup.stdout + setup.stderr
