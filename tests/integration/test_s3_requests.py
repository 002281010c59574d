"""What a new video costs in S3 requests through the whole pipeline, measured on the real
stack: RGW's notification, the notifier, the function (its workers' own request counters,
`facepipe_s3_requests_total`), not counted from the code."""

from __future__ import annotations

import secrets
from pathlib import Path

import boto3

from facepipe import answers
from facepipe.settings import Settings
from facepipe_tools import metrics_client
from facepipe_tools.polling import wait_for
from facepipe_tools.stack import LocalStack

NAME = "facepipe_s3_requests_total"


def requests_by_caller(stack: LocalStack) -> dict[str, dict[str, float]]:
    """{caller: {operation: count}} over the function's workers and the notifier."""
    config = stack.config
    urls = [f"http://127.0.0.1:{config.worker_base_port + n}/metrics" for n in range(config.workers)]
    urls.append(stack.settings_env()["NOTIFY_URL"] + "metrics")
    counts: dict[str, dict[str, float]] = {}
    for url in urls:
        for sample in metrics_client.fetch(url).samples:
            if sample.name == NAME:
                per_caller = counts.setdefault(sample.labels["caller"], {})
                per_caller[sample.labels["operation"]] = per_caller.get(sample.labels["operation"], 0) + sample.value
    return counts


def difference(after: dict[str, dict[str, float]], before: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {
        caller: changed
        for caller, operations in after.items()
        if (changed := {op: n - before.get(caller, {}).get(op, 0) for op, n in operations.items()
                        if n != before.get(caller, {}).get(op, 0)})  # fmt: skip
    }


def test_a_new_video_costs_four_s3_requests(
    local_stack: LocalStack, stack_settings: Settings, sample_dir: Path
) -> None:
    """Notifier: none (the event carries key and ETag; its reconciler's periodic listings are
    apart). Function: LIST its answers, GET the video, PUT the picture, PUT the CSV."""
    s3 = boto3.client(
        "s3", endpoint_url=stack_settings.s3_endpoint_url, region_name=stack_settings.s3_region,
        aws_access_key_id=stack_settings.s3_access_key_id, aws_secret_access_key=stack_settings.s3_secret_access_key,
    )  # fmt: skip
    key = f"s3-requests/{secrets.token_hex(4)}.mp4"
    before = requests_by_caller(local_stack)
    s3.put_object(Bucket=stack_settings.input_bucket, Key=key, Body=(sample_dir / "sample_hopper.mp4").read_bytes())
    answered = wait_for(lambda: answers.find(s3, stack_settings.output_bucket, key).result, timeout_s=120)
    assert answered, f"no answer for {key}"
    spent = difference(requests_by_caller(local_stack), before)
    spent.pop("reconciler", None)
    assert spent == {"function": {"ListObjectsV2": 1, "GetObject": 1, "PutObject": 2}}
