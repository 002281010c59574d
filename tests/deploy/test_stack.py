"""stack.yml: what `faas-cli up` needs, and agreement with the Dockerfiles, k8s/ and the settings."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from facepipe.settings import DEFAULT_SECRETS_DIR, SECRET_NAMES, Settings, env_name
from facepipe_tools.cluster import FUNCTION_SECRET, KNOWN_FACES_KEY
from tests.deploy import deploylib
from tests.deploy.deploylib import FUNCTION_DIRS, REPO, one

FUNCTIONS = sorted(FUNCTION_DIRS)
CLASSIFICATION = "image-classification"

# Field names of faas-cli's stack schema (stack/schema.go: Services, Provider,
# Function, FunctionResources, StackConfiguration, TemplateSource).
TOP_LEVEL = {"version", "provider", "functions", "configuration"}
PROVIDER = {"name", "gateway", "network"}
FUNCTION = {
    "lang",
    "handler",
    "image",
    "registry_auth",
    "fprocess",
    "environment",
    "secrets",
    "skip_build",
    "constraints",
    "environment_file",
    "labels",
    "limits",
    "requests",
    "readonly_root_filesystem",
    "build_options",
    "build_args",
    "build_config",
    "annotations",
    "namespace",
}
RESOURCES = {"memory", "cpu"}
CONFIGURATION = {"templates", "copy"}
# Read by of-watchdog, and by index.py besides the facepipe settings.
WATCHDOG_ENV = {"read_timeout", "write_timeout", "exec_timeout", "max_inflight", "healthcheck_interval"}
INDEX_ENV = {"LOG_LEVEL", "HOST", "PORT", "MAX_REQUEST_BYTES", "METRICS_PORT", "DRAIN_TIMEOUT_S"}
SETTING_NAMES = {env_name(f.name) for f in fields(Settings)}
# of-watchdog's own ports: the function (port, 8080) and its Prometheus metrics, fixed at
# 8081 (openfaas/of-watchdog config/config.go, MetricsPort).
WATCHDOG_PORTS = {8080, 8081}
# faas-netes (OpenFaaS Standard) sets a function's terminationGracePeriodSeconds to
# write_timeout + 2 s (openfaas/faas-netes c3962e34 and 3ab2d578, getTerminationGracePeriodSeconds;
# removed from Community Edition by 09d44a46, where the docs patch it in).
GRACE_JITTER_S = 2


def test_only_fields_faas_cli_knows(stack: dict) -> None:
    assert set(stack) <= TOP_LEVEL
    assert str(stack["version"]) == "1.0"
    assert set(stack["provider"]) <= PROVIDER
    assert stack["provider"]["name"] == "openfaas"
    for function in stack["functions"].values():
        assert set(function) <= FUNCTION, set(function) - FUNCTION
        for kind in ("limits", "requests"):
            assert set(function[kind]) <= RESOURCES
    assert set(stack["configuration"]) <= CONFIGURATION


def test_gateway_and_image_come_from_the_environment() -> None:
    text = deploylib.STACK_FILE.read_text()
    assert "${OPENFAAS_URL:-http://127.0.0.1:8080}" in text
    custom = deploylib.load_stack(
        {"REGISTRY": "registry.example.com/team", "TAG": "1.2.3", "OPENFAAS_URL": "https://faas.example.com"}
    )
    for name in FUNCTIONS:
        assert re.search(rf"image: \$\{{REGISTRY:-[^}}]+\}}/{name}:\$\{{TAG:-[^}}]+\}}", text), name
        assert custom["functions"][name]["image"] == f"registry.example.com/team/{name}:1.2.3"
    assert custom["provider"]["gateway"] == "https://faas.example.com"
    assert "${" not in str(deploylib.load_stack())


@pytest.mark.parametrize("name", FUNCTIONS)
def test_the_default_image_cannot_be_pushed_or_deployed(name: str) -> None:
    """Without REGISTRY the image reference is invalid, so build, push and deploy stop at once.

    A default that parses would be pushed somewhere that cannot work: localhost:5000 is, inside
    the cluster, the faas-netes pod itself, and Community Edition deploys only images that it
    can pull anonymously (openfaas/faas-netes pkg/handlers/validate.go, isAnonymous).
    """
    default = deploylib.load_stack()["functions"][name]["image"]
    assert not deploylib.is_image_reference(default), default
    assert "REGISTRY" in default, "the image must say what is missing"
    assert "localhost" not in default and "127.0.0.1" not in default
    # What docs/deploy.md offers for Community Edition parses, with the registry it names.
    for registry, host in (
        ("docker.io/someone", "docker.io"),
        ("ghcr.io/someone", "ghcr.io"),
        ("ttl.sh/3f2a9c1e-facepipe", "ttl.sh"),
        ("someone", "docker.io"),
        ("registry.example.com:5000/team", "registry.example.com:5000"),
    ):
        image = deploylib.load_stack({"REGISTRY": registry})["functions"][name]["image"]
        assert deploylib.is_image_reference(image), image
        assert deploylib.image_registry(image) == host
    # The reference check itself rejects what docker rejects.
    for bad in ("someone/Face-recognition:1", "/face-recognition:1", "a b/c:1", "REGISTRY_NOT_SET/x"):
        assert not deploylib.is_image_reference(bad), bad
    docs = deploylib.deployment_docs()
    assert "export REGISTRY=" in docs and "isAnonymous" in docs


def test_functions_are_built_from_our_dockerfiles_with_the_shared_package(stack: dict) -> None:
    assert sorted(stack["functions"]) == FUNCTIONS
    for name, function in stack["functions"].items():
        assert deploylib.DNS_LABEL.match(name) and function["lang"] == "dockerfile"
        handler = (REPO / function["handler"]).resolve()
        assert handler == FUNCTION_DIRS[name] and (handler / "Dockerfile").is_file()
        assert (handler / "index.py").is_file() and (handler / "handler.py").is_file()
        # faas-cli puts ./facepipe at the root of the build context; the Dockerfile copies it there.
        _, stages = deploylib.parse_dockerfile(handler / "Dockerfile")
        copied = [i.args for i in stages[-1].all("COPY") if "--from" not in i.args]
        assert "facepipe/ ./facepipe/" in copied and "*.py ./" in copied, name
    assert {"name": "dockerfile", "source": "https://github.com/openfaas/templates"} in stack["configuration"][
        "templates"
    ]
    copies = stack["configuration"]["copy"]
    assert copies == ["./facepipe"]
    for path in copies:
        resolved = (REPO / path).resolve()
        assert resolved.is_dir() and resolved.is_relative_to(REPO) and resolved != REPO


@pytest.mark.parametrize("name", FUNCTIONS)
def test_environment_holds_settings_and_watchdog_timeouts(stack: dict, name: str) -> None:
    env = stack["functions"][name]["environment"]
    assert all(isinstance(value, str) for value in env.values()), "faas-cli wants strings"
    unknown = set(env) - SETTING_NAMES - WATCHDOG_ENV - INDEX_ENV
    assert not unknown, f"not settings: {unknown}"
    for secret_setting in (
        "S3_ACCESS_KEY_ID",
        "S3_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "NOTIFY_TOKEN",
    ):
        assert secret_setting not in env, f"{secret_setting} belongs in the OpenFaaS secret"
    assert "DYNAMODB_ENDPOINT_URL" not in env, "DynamoDB is AWS in the cluster"
    timeouts = {
        key: deploylib.go_duration_seconds(env[key])
        for key in ("read_timeout", "write_timeout", "exec_timeout", "healthcheck_interval")
    }
    # The watchdog answers 504 at exec_timeout, before its server's write deadline.
    assert 0 < timeouts["exec_timeout"] < timeouts["write_timeout"]
    assert timeouts["read_timeout"] <= timeouts["write_timeout"]
    # After SIGTERM of-watchdog waits healthcheck_interval, then up to write_timeout for the
    # requests in flight (of-watchdog pkg/watchdog.go, listenUntilShutdown); a request taken
    # just before the pod left the endpoints ends by healthcheck_interval + exec_timeout, which
    # the grace period (write_timeout + 2 s) must cover.
    grace = timeouts["write_timeout"] + GRACE_JITTER_S
    assert timeouts["healthcheck_interval"] + timeouts["exec_timeout"] <= grace
    # The function stops its own work before exec_timeout.
    function_timeout = env.get("FUNCTION_TIMEOUT_S")
    if function_timeout is not None:
        assert float(function_timeout) < timeouts["exec_timeout"]
    # The image's defaults match (the function behaves the same without stack.yml).
    _, stages = deploylib.parse_dockerfile(FUNCTION_DIRS[name] / "Dockerfile")
    image_env = deploylib.dockerfile_env(stages[-1])
    for key, seconds in timeouts.items():
        assert deploylib.go_duration_seconds(image_env[key]) == seconds, f"{key}: stack.yml and the Dockerfile differ"
    # The gateway (and faas-netes, which takes the same values) waits at least as long.
    gateway = deploylib.documented_gateway_timeouts()
    assert set(gateway) == {"upstreamTimeout", "readTimeout", "writeTimeout"}, gateway
    assert gateway["upstreamTimeout"] >= timeouts["write_timeout"]
    # The chart: upstreamTimeout "Must be smaller than read/write_timeout".
    assert gateway["readTimeout"] > gateway["upstreamTimeout"] < gateway["writeTimeout"]
    # Community Edition sets no grace period (Kubernetes' 30 s): the docs patch it in.
    assert deploylib.documented_grace_period_s() == grace


@pytest.mark.parametrize("name", FUNCTIONS)
def test_metrics_are_served_beside_the_watchdog(stack: dict, name: str) -> None:
    port = int(stack["functions"][name]["environment"]["METRICS_PORT"])
    assert 1024 < port < 65536 and port not in WATCHDOG_PORTS
    _, stages = deploylib.parse_dockerfile(FUNCTION_DIRS[name] / "Dockerfile")
    assert deploylib.dockerfile_env(stages[-1]).get("METRICS_PORT") == str(port)


def test_secrets_and_known_faces(stack: dict) -> None:
    function = stack["functions"]["face-recognition"]
    assert function["secrets"] == [FUNCTION_SECRET]
    assert function["environment"]["KNOWN_FACES"] == f"{DEFAULT_SECRETS_DIR}/{KNOWN_FACES_KEY}"


def test_classification_has_its_own_secret_and_the_image_s_model(stack: dict) -> None:
    """Least privilege: the classification function gets only the storage keys (no DynamoDB,
    no known faces, no notify token); its model is the one its image converted at build time."""
    function = stack["functions"][CLASSIFICATION]
    assert function["secrets"] == [CLASSIFICATION] != [FUNCTION_SECRET]
    env = function["environment"]
    assert not {"KNOWN_FACES", "STUDENTS_TABLE", "AWS_REGION", "DYNAMODB_ENDPOINT_URL"} & set(env)
    assert not set(SECRET_NAMES) & set(env)
    _, stages = deploylib.parse_dockerfile(FUNCTION_DIRS[CLASSIFICATION] / "Dockerfile")
    model = deploylib.dockerfile_env(stages[-1])["CLASSIFIER_MODEL"]
    assert env["CLASSIFIER_MODEL"] == model and model.startswith("/opt/model/")
    assert CLASSIFICATION == Settings().image_function_name
    # Photos: a smaller object limit than the videos'.
    assert int(env["MAX_OBJECT_BYTES"]) < int(stack["functions"]["face-recognition"]["environment"]["MAX_OBJECT_BYTES"])


def test_storage_settings_match_the_rook_manifests(stack: dict, manifests) -> None:
    function = stack["functions"]["face-recognition"]
    env = function["environment"]
    store = one(manifests, "CephObjectStore")
    assert env["S3_ENDPOINT_URL"] == (
        f"http://rook-ceph-rgw-{store.name}.{store.namespace}.svc:{store.doc['spec']['gateway']['port']}"
    )
    buckets = {m.name: m.doc["spec"]["bucketName"] for m in deploylib.find(manifests, "ObjectBucketClaim")}
    assert env["INPUT_BUCKET"] == buckets["facepipe-input"]
    assert env["OUTPUT_BUCKET"] == buckets["facepipe-output"]
    config = one(manifests, "ConfigMap", "facepipe").doc["data"]
    assert env["STUDENTS_TABLE"] == config["STUDENTS_TABLE"] and env["AWS_REGION"] == config["AWS_REGION"]
    gateway = config["OPENFAAS_GATEWAY"]
    assert gateway == "http://gateway.openfaas.svc:8080"
    assert config["FUNCTION_NAME"] in stack["functions"]


def test_classification_storage_matches_the_rook_manifests(stack: dict, manifests) -> None:
    """The same object store as the face function, and the buckets the cluster claims for
    images, which the notifier routes to this function (IMAGE_INPUT_BUCKET from that claim)."""
    face, image = (stack["functions"][name]["environment"] for name in ("face-recognition", CLASSIFICATION))
    assert (image["S3_ENDPOINT_URL"], image["S3_REGION"]) == (face["S3_ENDPOINT_URL"], face["S3_REGION"])
    buckets = {m.name: m.doc["spec"].get("bucketName") for m in deploylib.find(manifests, "ObjectBucketClaim")}
    assert image["INPUT_BUCKET"] == buckets.get("facepipe-images-input")
    assert image["OUTPUT_BUCKET"] == buckets.get("facepipe-images-output")
    assert not {image["INPUT_BUCKET"], image["OUTPUT_BUCKET"]} & {face["INPUT_BUCKET"], face["OUTPUT_BUCKET"]}
    config = one(manifests, "ConfigMap", "facepipe").doc["data"]
    assert config.get("IMAGE_FUNCTION_NAME", CLASSIFICATION) == CLASSIFICATION


@pytest.mark.parametrize("name", FUNCTIONS)
def test_community_edition_scaling_labels(stack: dict, name: str) -> None:
    function = stack["functions"][name]
    labels = function["labels"]
    assert deploylib.label_errors(labels) == []
    # A factor outside 1-100 makes the gateway answer 404 to every invocation.
    assert 1 <= deploylib.gateway_scaling_factor(labels) <= 100
    # scale.min would reset KEDA's replica count on every `faas-cli up`
    # (openfaas/faas-netes pkg/handlers/update.go, getMinReplicaCount).
    assert "com.openfaas.scale.min" not in labels
    # Community Edition refuses scale.min/max above 5 (pkg/handlers/validate.go) and the
    # labels of the paid autoscaler (scale.zero, scale.target, scale.type).
    for key in ("com.openfaas.scale.min", "com.openfaas.scale.max"):
        if key in labels:
            assert 1 <= int(labels[key]) <= 5
    assert not {"com.openfaas.scale.target", "com.openfaas.scale.type", "com.openfaas.scale.zero-duration"} & set(
        labels
    )
    assert labels.get("com.openfaas.scale.zero", "false") == "false"
    assert function["namespace"] == "openfaas-fn"


def test_the_scaling_factor_rule_is_the_gateways() -> None:
    """deploylib.gateway_scaling_factor follows openfaas/faas gateway/plugin/external.go."""
    assert deploylib.gateway_scaling_factor({}) == deploylib.GATEWAY_DEFAULT_SCALING_FACTOR
    assert deploylib.gateway_scaling_factor({"com.openfaas.scale.factor": "not a number"}) == 10
    for good in ("1", "20", "100"):
        assert deploylib.gateway_scaling_factor({"com.openfaas.scale.factor": good}) == int(good)
    for bad in ("0", "101", "-1"):
        with pytest.raises(ValueError, match="bad scaling factor"):
            deploylib.gateway_scaling_factor({"com.openfaas.scale.factor": bad})


@pytest.mark.parametrize("name", FUNCTIONS)
def test_resources_and_read_only_root(stack: dict, name: str) -> None:
    function = stack["functions"][name]
    for kind in ("requests", "limits"):
        assert re.fullmatch(r"\d+(Mi|Gi)", function[kind]["memory"])
        assert re.fullmatch(r"\d+m|\d+", function[kind]["cpu"])

    def mebibytes(value: str) -> int:
        return int(value[:-2]) * (1024 if value.endswith("Gi") else 1)

    assert mebibytes(function["requests"]["memory"]) <= mebibytes(function["limits"]["memory"])
    assert function["readonly_root_filesystem"] is True


def test_stack_file_has_no_tabs() -> None:
    text = Path(deploylib.STACK_FILE).read_text()
    assert "\t" not in text
