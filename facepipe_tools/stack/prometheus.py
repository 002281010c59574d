"""Prometheus (Debian's `prometheus` package), an optional component: it scrapes the functions'
workers, the gateway stand-in, the notifier and the web tier, so that the Grafana dashboard's
queries (k8s/base/grafana-dashboard.json) and KEDA's (k8s/base/keda-scaledobject.yaml) run
against the local stack unchanged.

On the cluster kube-prometheus-stack attaches target labels from the PodMonitors and
ServiceMonitor (namespace, pod, container, endpoint; job `<namespace>/<name>` for a PodMonitor,
the Service's name for a ServiceMonitor); the queries filter on `namespace`. The scrape
configuration written here gives every local target the same labels. Its data stays under the
stack's state folder; the package's own service is never used (Debian's policy-rc.d or the
absence of systemd keeps it from starting; this one listens on its own port anyway).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from facepipe_tools.function_runner import FUNCTION_NAMESPACE, worker_ports
from facepipe_tools.stack.component import HttpComponent, StackError
from facepipe_tools.stack.config import HOST, StackConfig

#: Short, so that a test sees a counter move within seconds; the scrape timeout is the same.
SCRAPE_INTERVAL = "2s"
#: Where the facepipe services run on the cluster (k8s/base/namespace.yaml).
SERVICES_NAMESPACE = "facepipe"
#: The OpenFaaS chart's namespace (its gateway pod serves its metrics on port gw-metrics, 8082).
OPENFAAS_NAMESPACE = "openfaas"


def prometheus_binary() -> str | None:
    """The `prometheus` program (Debian installs /usr/bin/prometheus), None when not installed."""
    return shutil.which("prometheus")


def _target(port: int, namespace: str, pod: str, container: str, endpoint: str = "http", **more: str) -> dict:
    """A static target with the labels the operator would give the pod's endpoint."""
    labels = {"namespace": namespace, "pod": pod, "container": container, "endpoint": endpoint, **more}
    return {"targets": [f"{HOST}:{port}"], "labels": labels}


def scrape_jobs(config: StackConfig) -> list[dict]:
    """One scrape job per monitor of k8s/base, named as the job label it gives on the cluster."""
    ns = SERVICES_NAMESPACE
    faces, images = worker_ports(config.worker_base_port, config.workers, config.image_workers or 0)
    jobs = {
        # PodMonitors openfaas-fn/<function> (function-podmonitor.yaml): each worker's METRICS_PORT.
        f"{FUNCTION_NAMESPACE}/{function}": [
            _target(port, FUNCTION_NAMESPACE, f"{function}-{n}", function) for n, port in enumerate(ports.metrics_ports)
        ]
        for function, ports in (("face-recognition", faces), ("image-classification", images))
        if ports.metrics_ports
    }
    jobs |= {
        # PodMonitor openfaas/gateway (gateway-podmonitor.yaml): the gateway's own metrics.
        f"{OPENFAAS_NAMESPACE}/gateway": [
            _target(config.gateway_port, OPENFAAS_NAMESPACE, "gateway-0", "gateway", endpoint="gw-metrics")
        ],
        # ServiceMonitor facepipe/notifier (notifier-servicemonitor.yaml): job = the Service's name.
        "notifier": [_target(config.notifier_port, ns, "notifier-0", "notifier", service="notifier")],
        "web": [_target(config.web_port, ns, "web-0", "web", service="web")],
    }
    return [{"job_name": job, "metrics_path": "/metrics", "static_configs": targets} for job, targets in jobs.items()]


def prometheus_config(config: StackConfig) -> dict:
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL},
        "scrape_configs": scrape_jobs(config),
    }


class Prometheus(HttpComponent):
    name = "prometheus"
    start_timeout_s = 30.0
    health_path = "/-/ready"

    @property
    def config_file(self) -> Path:
        return self.paths.prometheus_dir / "prometheus.yml"

    @property
    def data_dir(self) -> Path:
        return self.paths.prometheus_dir / "data"

    def command(self, config: StackConfig) -> list[str]:
        return [
            prometheus_binary() or "prometheus",
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address={HOST}:{config.prometheus_port}",
            "--storage.tsdb.retention.time=2d",
        ]

    def ports(self, config: StackConfig) -> list[int]:
        return [config.prometheus_port]

    def before_start(self, config: StackConfig) -> None:
        """Write the scrape configuration for the stack's current ports."""
        if prometheus_binary() is None:
            raise StackError("prometheus not found (run `make install`, or `up --no-prometheus`)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(prometheus_config(config), sort_keys=False))
