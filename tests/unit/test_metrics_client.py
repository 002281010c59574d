"""metrics_client: a real /metrics exposition read back by name and labels."""

from __future__ import annotations

import socket

import psutil
import pytest
import requests
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, start_http_server

from facepipe_tools.metrics_client import Samples, fetch, parse, total


@pytest.fixture
def served():
    """A registry like a function worker's, served over HTTP on a free loopback port."""
    registry = CollectorRegistry()
    videos = Counter("facerec_videos", "Videos processed, by outcome", ["outcome"], registry=registry)
    videos.labels("ok").inc(3)
    videos.labels("error").inc()
    stages = Histogram("facerec_stage_seconds", "Time per stage", ["stage"], registry=registry)
    stages.labels("download").observe(0.2)
    stages.labels("download").observe(0.4)
    ProcessCollector(registry=registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield f"http://127.0.0.1:{server.server_port}/metrics"
    server.shutdown()
    thread.join(5)


def test_fetch_reads_counters_histograms_and_the_start_time(served: str) -> None:
    samples = fetch(served)
    assert samples.value("facerec_videos_total") == 4
    assert samples.value("facerec_videos_total", outcome="ok") == 3
    assert samples.by_label("facerec_videos_total", "outcome") == {"ok": 3.0, "error": 1.0}
    assert samples.value("facerec_stage_seconds_count", stage="download") == 2
    assert samples.value("facerec_stage_seconds_sum", stage="download") == pytest.approx(0.6)
    assert samples.value("facerec_stage_seconds_count", stage="detect") == 0
    assert samples.value("no_such_metric") == 0
    assert samples.started_at == pytest.approx(psutil.Process().create_time(), abs=1.0)


def test_total_over_processes_and_an_empty_scrape() -> None:
    one = parse('facerec_videos_total{outcome="ok"} 2.0\n')
    other = parse('facerec_videos_total{outcome="ok"} 5.0\nfacerec_videos_total{outcome="error"} 1.0\n')
    assert total([one, other, Samples()], "facerec_videos_total", outcome="ok") == 7
    assert not Samples() and Samples().started_at is None


def test_errors_are_raised() -> None:
    with pytest.raises(ValueError):
        parse("this is not { the exposition format\n")
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(requests.ConnectionError):
        fetch(f"http://127.0.0.1:{port}/metrics")
