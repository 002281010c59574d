"""Reading a component's Prometheus `/metrics`: the one parser of the tools and the tests.

    samples = metrics_client.fetch(f"http://127.0.0.1:{port}/metrics")
    samples.value("facerec_videos_total", outcome="ok")
    samples.by_label("facerec_notifier_events_total", "outcome")   # {"accepted": 3.0, ...}

Names are sample names as exposed (`facerec_videos_total`, `facerec_stage_seconds_count`).
"""

from __future__ import annotations

from collections.abc import Iterable

import requests
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

#: Exposed by prometheus_client's process collector: tells a restarted process (its counters
#: start again from zero) from the one scraped before.
START_TIME = "process_start_time_seconds"


class Samples:
    """The samples of one scrape of one process."""

    def __init__(self, samples: Iterable[Sample] = ()) -> None:
        self.samples = list(samples)

    def __bool__(self) -> bool:
        return bool(self.samples)

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` that carry these labels (0 when there is none)."""
        return sum(
            sample.value
            for sample in self.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """The samples called `name`, summed by the value of one of their labels."""
        found: dict[str, float] = {}
        for sample in self.samples:
            if sample.name == name and label in sample.labels:
                found[sample.labels[label]] = found.get(sample.labels[label], 0.0) + sample.value
        return found

    @property
    def started_at(self) -> float | None:
        """When the process started (seconds since the epoch), if it exposes it."""
        starts = [sample.value for sample in self.samples if sample.name == START_TIME]
        return starts[0] if starts else None


def parse(text: str) -> Samples:
    """Prometheus text exposition format -> Samples; raises ValueError on text that is not."""
    return Samples(sample for family in text_string_to_metric_families(text) for sample in family.samples)


def fetch(url: str, timeout_s: float = 5.0) -> Samples:
    """GET a /metrics URL and parse it; raises requests.RequestException or ValueError."""
    response = requests.get(url, timeout=timeout_s)
    response.raise_for_status()
    return parse(response.text)


def total(scrapes: Iterable[Samples], name: str, **labels: str) -> float:
    """`name` (with these labels) summed over several processes (the workers of a function)."""
    return sum(samples.value(name, **labels) for samples in scrapes)
