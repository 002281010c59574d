"""The notifier's Prometheus metrics (`facerec_notifier_*`, read by the Grafana dashboard and KEDA).

They live in a registry of their own, one per `Notifier`, so that tests can build several;
`/metrics` serves it together with the process's default registry, which holds the S3
client's request counter (`facepipe_s3_requests_total`) and the process metrics.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

ACCEPTED = "accepted"
REJECTED = "rejected"
IGNORED = "ignored"
DUPLICATE = "duplicate"
EVENT_OUTCOMES = (ACCEPTED, REJECTED, IGNORED, DUPLICATE)

OK = "ok"
CLIENT_ERROR = "client_error"
FAILED = "failed"
INVOKE_OUTCOMES = (OK, CLIENT_ERROR, FAILED)


class NotifierMetrics:
    """The notifier's metrics. Those about work carry the `function` the object is routed to
    (`facerec_notifier_backlog{function="image-classification"}` is that function's KEDA
    trigger); every function of `functions` starts at 0, so that its series exist from the start."""

    def __init__(self, functions: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "facerec_notifier_events", "Notification records, by outcome", ["outcome"], registry=self.registry
        )
        self.backlog = Gauge(
            "facerec_notifier_backlog", "Objects queued or being processed, by function", ["function"],
            registry=self.registry,
        )  # fmt: skip
        self.inflight = Gauge(
            "facerec_notifier_inflight", "Function invocations running, by function", ["function"],
            registry=self.registry,
        )  # fmt: skip
        self.invocations = Counter(
            "facerec_notifier_invocations", "Objects invoked, by function and final outcome", ["function", "outcome"],
            registry=self.registry,
        )  # fmt: skip
        self.retries = Counter(
            "facerec_notifier_retries", "Invocation retries, by function", ["function"], registry=self.registry
        )
        self.reconciled = Counter(
            "facerec_notifier_reconciled", "Objects queued by the reconciler, by function", ["function"],
            registry=self.registry,
        )  # fmt: skip
        self.skipped = Counter(
            "facerec_notifier_skipped",
            "Invocations the function answered with the answer it already had for that ETag",
            ["function"],
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "facerec_notifier_dead_lettered",
            "Object versions given up on after DEAD_LETTER_ATTEMPTS failed invocations (a `failed` record written)",
            ["function"],
            registry=self.registry,
        )
        self.invoke_seconds = Histogram(
            "facerec_notifier_invocation_seconds",
            "Time from the first attempt to the final outcome of one object, by function",
            ["function"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        for outcome in EVENT_OUTCOMES:
            self.events.labels(outcome)
        for function in dict.fromkeys(functions):
            for metric in (self.backlog, self.inflight, self.retries, self.reconciled, self.skipped):
                metric.labels(function)
            self.dead_lettered.labels(function)
            self.invoke_seconds.labels(function)
            for outcome in INVOKE_OUTCOMES:
                self.invocations.labels(function, outcome)

    def exposition(self) -> bytes:
        """The text format of the default registry followed by the notifier's own."""
        return generate_latest(REGISTRY) + generate_latest(self.registry)
