"""k8s/base/network-policies.yaml (#12 item 5): only the OpenFaaS gateway reaches the functions
(and Prometheus their metrics ports), only RGW reaches the notifier (and Prometheus its
metrics). The policies are evaluated here the way Kubernetes does for ingress: a pod selected
by any policy accepts a connection only when some rule of some policy selecting it allows
the source and the port."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.deploylib import Manifest, find, one


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str]
    ports: dict[str, int] = field(default_factory=dict)  # named container ports


def _selects(selector: dict | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions In/NotIn/Exists/DoesNotExist) on `labels`."""
    if selector is None:
        return True
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def _peer_allows(peer: dict, policy_namespace: str, source: Pod) -> bool:
    assert "ipBlock" not in peer, "these policies select pods, not addresses"
    namespace_labels = {"kubernetes.io/metadata.name": source.namespace}
    if "namespaceSelector" in peer:
        in_namespace = _selects(peer["namespaceSelector"], namespace_labels)
    else:
        in_namespace = source.namespace == policy_namespace
    return in_namespace and _selects(peer.get("podSelector"), source.labels)


def _port_allows(rule_ports: list[dict] | None, target: Pod, port: int) -> bool:
    if not rule_ports:
        return True
    for entry in rule_ports:
        assert entry.get("protocol", "TCP") == "TCP"
        wanted = entry.get("port")
        if wanted is None:  # every port
            return True
        if isinstance(wanted, str):  # a named port: only on pods that declare it
            if target.ports.get(wanted) == port:
                return True
        elif wanted <= port <= entry.get("endPort", wanted):
            return True
    return False


def allowed(policies: list[Manifest], source: Pod, target: Pod, port: int) -> bool:
    """Whether `source` may connect to `target` on TCP `port` (ingress rules only)."""
    selecting = [
        p
        for p in policies
        if p.namespace == target.namespace
        and _selects(p.doc["spec"]["podSelector"], target.labels)
        and "Ingress" in p.doc["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True
    return any(
        (not rule.get("from") or any(_peer_allows(peer, p.namespace, source) for peer in rule["from"]))
        and _port_allows(rule.get("ports"), target, port)
        for p in selecting
        for rule in p.doc["spec"].get("ingress", [])
    )


@pytest.fixture(scope="module")
def pods(manifests: list[Manifest]) -> dict[str, Pod]:
    """The pods that matter, with the labels their owners give them (faas-netes, the openfaas
    chart, Rook, kube-prometheus-stack) or our manifests give them."""
    notifier = one(manifests, "Deployment", "notifier").doc["spec"]["template"]
    gateway = one(manifests, "PodMonitor", "gateway")
    store = one(manifests, "CephObjectStore")
    job = one(manifests, "Job", "upload-data").doc["spec"]["template"]
    return {
        "face-recognition": Pod("openfaas-fn", {"faas_function": "face-recognition"}, {"http": 8080}),
        "image-classification": Pod("openfaas-fn", {"faas_function": "image-classification"}, {"http": 8080}),
        "gateway": Pod(gateway.namespace, gateway.doc["spec"]["selector"]["matchLabels"]),
        "rgw": Pod(store.namespace, {"app": "rook-ceph-rgw", "rook_object_store": store.name}),
        "prometheus": Pod("monitoring", {"app.kubernetes.io/name": "prometheus", "prometheus": "kube-prometheus"}),
        "notifier": Pod(
            "facepipe",
            notifier["metadata"]["labels"],
            {p["name"]: p["containerPort"] for p in notifier["spec"]["containers"][0]["ports"]},
        ),
        "upload-data": Pod("facepipe", job["metadata"]["labels"]),
        "other-function": Pod("openfaas-fn", {"faas_function": "someone-else"}, {"http": 8080}),
        "stranger": Pod("default", {"app": "anything"}),
        "stranger-in-openfaas": Pod("openfaas", {"app": "queue-worker"}),
    }


@pytest.fixture(scope="module")
def policies(manifests: list[Manifest]) -> list[Manifest]:
    found = find(manifests, "NetworkPolicy")
    assert found, "no NetworkPolicy under k8s/"
    return found


def _metrics_ports(manifests: list[Manifest], function: str) -> set[int]:
    """The ports the function's PodMonitor scrapes (its relabelled addresses)."""
    monitor = one(manifests, "PodMonitor", function)
    return {
        int(endpoint["relabelings"][0]["replacement"].rpartition(":")[2])
        for endpoint in monitor.doc["spec"]["podMetricsEndpoints"]
    }


@pytest.mark.parametrize("function", ["face-recognition", "image-classification"])
def test_only_the_gateway_calls_a_function(policies, pods, manifests: list[Manifest], function: str) -> None:
    target = pods[function]
    assert allowed(policies, pods["gateway"], target, 8080)
    for source in ("notifier", "rgw", "prometheus", "upload-data", "stranger", "stranger-in-openfaas"):
        assert not allowed(policies, pods[source], target, 8080), source
    other = "image-classification" if function == "face-recognition" else "face-recognition"
    assert not allowed(policies, pods[other], target, 8080)
    # Prometheus scrapes exactly the ports the PodMonitor names; the gateway nothing else.
    metrics = _metrics_ports(manifests, function)
    assert metrics == {8081, 8082}
    for port in metrics:
        assert allowed(policies, pods["prometheus"], target, port), port
        assert not allowed(policies, pods["stranger"], target, port), port
        assert not allowed(policies, pods["gateway"], target, port), port


def test_only_rgw_and_prometheus_reach_the_notifier(policies, pods, manifests: list[Manifest]) -> None:
    target = pods["notifier"]
    port = target.ports["http"]
    service = one(manifests, "Service", "notifier")
    topic_ports = {
        m.doc["spec"]["endpoint"]["http"]["uri"].rpartition(":")[2].strip("/")
        for m in find(manifests, "CephBucketTopic")
    }
    assert (
        topic_ports == {str(service.doc["spec"]["ports"][0]["port"])}
        and service.doc["spec"]["ports"][0]["targetPort"] == "http"
    )
    assert allowed(policies, pods["rgw"], target, port)
    assert allowed(policies, pods["prometheus"], target, port)  # /metrics (the ServiceMonitor's port)
    assert one(manifests, "ServiceMonitor", "notifier").doc["spec"]["endpoints"][0]["port"] == "http"
    for source in ("gateway", "face-recognition", "upload-data", "stranger", "stranger-in-openfaas"):
        assert not allowed(policies, pods[source], target, port), source
    assert not allowed(policies, pods["rgw"], target, port + 1)


def test_nothing_else_in_the_pipeline_namespace_takes_connections(policies, pods) -> None:
    for source in ("notifier", "rgw", "prometheus", "stranger"):
        assert not allowed(policies, pods[source], pods["upload-data"], 8080), source


def test_other_functions_are_left_alone(policies, pods) -> None:
    """The policies select our functions only: another function in openfaas-fn keeps its own rules."""
    assert allowed(policies, pods["stranger"], pods["other-function"], 8080)


def test_the_evaluator_follows_kubernetes_semantics() -> None:
    """A few cases of the NetworkPolicy rules the evaluator must get right."""
    target = Pod("ns", {"app": "t"}, {"web": 80})
    doc = {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "t"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": "web"}]}],
        },
    }
    policy = Manifest(Path("inline.yaml"), doc)
    client_here, client_elsewhere = Pod("ns", {"role": "client"}), Pod("other", {"role": "client"})
    assert allowed([policy], client_here, target, 80)
    assert not allowed([policy], client_here, target, 81)
    # A podSelector without a namespaceSelector means the policy's own namespace.
    assert not allowed([policy], client_elsewhere, target, 80)
    # Pods no policy selects accept everything.
    assert allowed([policy], client_elsewhere, Pod("ns", {"app": "other"}), 1234)
    # A named port the pod does not declare matches nothing.
    assert not allowed([policy], client_here, Pod("ns", {"app": "t"}), 80)
    # A rule without `from` admits every source, on its ports.
    doc["spec"]["ingress"] = [{"ports": [{"port": 80}]}]
    assert allowed([policy], client_elsewhere, target, 80) and not allowed([policy], client_elsewhere, target, 81)
    # A policy without rules admits nothing.
    doc["spec"]["ingress"] = []
    assert not allowed([policy], client_here, target, 80)
