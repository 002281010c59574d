"""The notifier's Prometheus metrics (`facerec_notifier_*`, read by the Grafana dashboard and KEDA).

They live in a registry of their own, one per `Notifier`, so that tests can build several;
`/metrics` serves it together with the process's default registry, which holds the S3
client's request counter (`facepipe_s3_requests_total`) and the process metrics.
"""

from __future__ import annotations

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
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "facerec_notifier_events", "Notification records, by outcome", ["outcome"], registry=self.registry
        )
        self.backlog = Gauge("facerec_notifier_backlog", "Objects queued or being processed", registry=self.registry)
        self.inflight = Gauge("facerec_notifier_inflight", "Function invocations running", registry=self.registry)
        self.invocations = Counter(
            "facerec_notifier_invocations", "Objects invoked, by final outcome", ["outcome"], registry=self.registry
        )
        self.retries = Counter("facerec_notifier_retries", "Invocation retries", registry=self.registry)
        self.reconciled = Counter(
            "facerec_notifier_reconciled", "Objects queued by the reconciler", registry=self.registry
        )
        self.skipped = Counter(
            "facerec_notifier_skipped",
            "Invocations the function answered with the answer it already had for that ETag",
            registry=self.registry,
        )
        self.invoke_seconds = Histogram(
            "facerec_notifier_invocation_seconds",
            "Time from the first attempt to the final outcome of one object",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )
        for outcome in EVENT_OUTCOMES:
            self.events.labels(outcome)
        for outcome in INVOKE_OUTCOMES:
            self.invocations.labels(outcome)

    def exposition(self) -> bytes:
        """The text format of the default registry followed by the notifier's own."""
        return generate_latest(REGISTRY) + generate_latest(self.registry)
