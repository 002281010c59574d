"""The Grafana dashboard and KEDA's triggers against the local stack's Prometheus: after a small
workload (sample videos and one upload that is not a video; a photo and one upload that is not
a photo), every panel's query and each trigger's query return data. A panel whose query returns
nothing fails here.

The queries are read from k8s/base/grafana-dashboard.json and k8s/base/keda-scaledobject.yaml,
Grafana's `$__rate_interval` replaced by a window that holds the workload. Prometheus scrapes
every 2 s (facepipe_tools/stack/prometheus.py), so data arrives within seconds.
"""

from __future__ import annotations

import io
import json
import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from PIL import Image
from skimage import data as skimage_data

from facepipe import answers
from facepipe.clients import s3_client
from facepipe_tools.paths import REPO_ROOT
from facepipe_tools.polling import wait_for
from facepipe_tools.stack import LocalStack
from facepipe_tools.stack.prometheus import scrape_jobs

pytestmark = pytest.mark.integration

DASHBOARD = REPO_ROOT / "k8s" / "base" / "grafana-dashboard.json"
SCALED_OBJECT = REPO_ROOT / "k8s" / "base" / "keda-scaledobject.yaml"
#: Replaces Grafana's $__rate_interval: long enough to hold the workload and every wait after it
#: (a quantile of rates is NaN once the observations have left the window), on a loaded machine too.
RATE_WINDOW = "15m"
#: Sample clips (from the session's sample_dir) and the upload that is not a video.
CLIPS = ("sample_hopper.mp4", "sample_both.mp4", "sample_nobody.mov")
NOT_A_VIDEO = b"this is not a video\n" * 20
NOT_A_PHOTO = b"this is not a photo\n" * 20


def coffee_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(skimage_data.coffee()).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title and refId, PromQL) of every target of every panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (f"{panel['title']} [{target['refId']}]", target["expr"].replace("$__rate_interval", RATE_WINDOW))
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def keda_queries() -> list[str]:
    """The Prometheus query of every ScaledObject (one per function)."""
    return [
        trigger["metadata"]["query"]
        for doc in yaml.safe_load_all(SCALED_OBJECT.read_text())
        for trigger in doc["spec"]["triggers"]
        if trigger["type"] == "prometheus"
    ]


def instant_query(prometheus_url: str, expr: str) -> list[dict]:
    """The result vector of an instant query (an invalid query fails the test with Prometheus's reason)."""
    response = requests.get(prometheus_url + "api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


def finite_values(result: list[dict]) -> list[float]:
    """The values of a result vector that are numbers (a quantile without observations is NaN)."""
    return [value for value in (float(series["value"][1]) for series in result) if math.isfinite(value)]


def assert_returns_data(prometheus_url: str, name: str, expr: str) -> list[dict]:
    """Wait until `expr` gives at least one number; return its result vector."""
    result: list[dict] = []

    def has_data() -> bool:
        nonlocal result
        result = instant_query(prometheus_url, expr)
        return bool(finite_values(result))

    assert wait_for(has_data, timeout_s=60), f"{name}: no data for {expr} (last result: {result})"
    return result


@pytest.fixture(scope="module")
def workload(local_stack: LocalStack, sample_dir: Path) -> Iterator[None]:
    """Sample clips and one upload that is not a video, a photo and one upload that is not a
    photo, processed through RGW's notifications; removed again at the end."""
    # A rate needs a sample from before the workload: a stack that has just started may not
    # have been scraped yet (Prometheus starts last), and the first sample would already hold
    # the workload's counts.
    prometheus_url = local_stack.settings_env().get("PROMETHEUS_URL")
    assert prometheus_url, "the session stack runs without Prometheus"
    expected = sum(len(group["targets"]) for job in scrape_jobs(local_stack.config) for group in job["static_configs"])

    def all_scraped() -> bool:
        targets = requests.get(prometheus_url + "api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        return len(targets) == expected and all(target["health"] == "up" for target in targets)

    assert wait_for(all_scraped, timeout_s=60), "Prometheus has not scraped every target"
    stack_settings = local_stack.settings()
    s3 = s3_client(stack_settings)
    prefix = f"dashboards-{uuid.uuid4().hex[:8]}/"
    videos = {prefix + name: (sample_dir / name).read_bytes() for name in CLIPS}
    bad_video, bad_photo = prefix + "not-a-video.mp4", prefix + "not-a-photo.jpg"
    videos[bad_video] = NOT_A_VIDEO
    photos = {prefix + "coffee.jpg": coffee_jpeg(), bad_photo: NOT_A_PHOTO}
    routes = {
        (stack_settings.input_bucket, stack_settings.output_bucket): videos,
        (stack_settings.image_input_bucket, stack_settings.image_output_bucket): photos,
    }
    try:
        for (bucket, _), uploads in routes.items():
            for key, body in uploads.items():
                s3.put_object(Bucket=bucket, Key=key, Body=body)
        for (_, output), uploads in routes.items():
            for key in uploads:
                found = wait_for(lambda key=key, output=output: answers.find(s3, output, key).newest(), 120)
                assert found, f"no answer for {key} in {output} within 120 s"
        assert answers.find(s3, stack_settings.output_bucket, bad_video).error, f"{bad_video} got no error record"
        assert answers.find(s3, stack_settings.image_output_bucket, bad_photo).error, f"{bad_photo}: no error record"
        yield
    finally:
        for (bucket, output), uploads in routes.items():
            for key in uploads:
                s3.delete_object(Bucket=bucket, Key=key)
                for name in answers.find(s3, output, key).names:
                    s3.delete_object(Bucket=output, Key=name)


def test_every_target_is_scraped_and_up(local_stack: LocalStack, prometheus_url: str, workload: None) -> None:
    expected = {
        (job["job_name"], target)
        for job in scrape_jobs(local_stack.config)
        for group in job["static_configs"]
        for target in group["targets"]
    }
    functions = [target for job, target in expected if job == "openfaas-fn/face-recognition"]
    assert len(functions) == local_stack.config.workers
    classifiers = [target for job, target in expected if job == "openfaas-fn/image-classification"]
    assert len(classifiers) == local_stack.config.image_workers >= 1
    targets: list[dict] = []

    def all_up() -> bool:
        nonlocal targets
        targets = requests.get(prometheus_url + "api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        found = {(target["labels"]["job"], target["labels"]["instance"]) for target in targets}
        return found == expected and all(target["health"] == "up" for target in targets)

    assert wait_for(all_up, timeout_s=60), "targets not all up: " + "; ".join(
        f"{t['labels']['job']} {t['scrapeUrl']} {t['health']} {t['lastError']}" for t in targets
    )


@pytest.mark.parametrize(("panel", "expr"), dashboard_queries(), ids=[name for name, _ in dashboard_queries()])
def test_dashboard_panel_query_returns_data(prometheus_url: str, workload: None, panel: str, expr: str) -> None:
    assert_returns_data(prometheus_url, f"panel {panel!r}", expr)


@pytest.mark.parametrize("expr", keda_queries())
def test_keda_trigger_query_returns_data(prometheus_url: str, workload: None, expr: str) -> None:
    # KEDA reads a single number.
    (series,) = assert_returns_data(prometheus_url, "KEDA trigger", expr)
    assert float(series["value"][1]) >= 0


def test_series_carry_the_labels_of_the_cluster(local_stack: LocalStack, prometheus_url: str, workload: None) -> None:
    """The target labels are the ones the PodMonitors and the ServiceMonitor give on the cluster."""
    # The uploads that are neither video nor photo were counted as errors, one by each function.
    jobs = {"openfaas-fn/face-recognition", "openfaas-fn/image-classification"}
    errors: list[dict] = []

    def both_counted() -> bool:
        # Each function's count arrives with its own scrape: wait for both, not the first.
        nonlocal errors
        errors = instant_query(prometheus_url, 'facerec_videos_total{outcome="error"} >= 1')
        return {s["metric"]["job"] for s in errors} == jobs

    assert wait_for(both_counted, timeout_s=60), f"errors counted by {[s['metric'] for s in errors]}"
    assert {s["metric"]["namespace"] for s in errors} == {"openfaas-fn"}
    config = local_stack.config
    for function, workers in (("face-recognition", config.workers), ("image-classification", config.image_workers)):
        every_worker = instant_query(
            prometheus_url, f'facerec_videos_total{{outcome="error",job="openfaas-fn/{function}"}}'
        )
        assert len({s["metric"]["pod"] for s in every_worker}) == workers, function
        assert {s["metric"]["container"] for s in every_worker} == {function}
    backlog = instant_query(prometheus_url, "facerec_notifier_backlog")
    assert sorted((s["metric"]["namespace"], s["metric"]["job"], s["metric"]["function"]) for s in backlog) == [
        ("facepipe", "notifier", "face-recognition"),
        ("facepipe", "notifier", "image-classification"),
    ]
    replicas = {s["metric"]["function_name"]: s for s in instant_query(prometheus_url, "gateway_service_count")}
    assert sorted(replicas) == ["face-recognition.openfaas-fn", "image-classification.openfaas-fn"]
    assert {s["metric"]["namespace"] for s in replicas.values()} == {"openfaas"}
    assert float(replicas["face-recognition.openfaas-fn"]["value"][1]) == config.workers
    assert float(replicas["image-classification.openfaas-fn"]["value"][1]) == config.image_workers
