"""stack.yml: what `faas-cli up` needs, and agreement with the Dockerfile, k8s/ and the settings."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from facepipe.settings import DEFAULT_SECRETS_DIR, Settings
from facepipe_tools.cluster import FUNCTION_SECRET, KNOWN_FACES_KEY
from tests.deploy import deploylib
from tests.deploy.deploylib import FUNCTION_DOCKERFILE, REPO, one

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
INDEX_ENV = {"LOG_LEVEL", "HOST", "PORT", "MAX_REQUEST_BYTES"}
SETTING_NAMES = {f.name.upper() for f in fields(Settings)}
# OpenFaaS gateway timeout the docs ask for (gateway.upstreamTimeout).
GATEWAY_UPSTREAM_TIMEOUT_S = 120.0


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
    assert re.search(r"image: \$\{REGISTRY:-[^}]+\}/face-recognition:\$\{TAG:-[^}]+\}", text)
    default = deploylib.load_stack()
    custom = deploylib.load_stack(
        {"REGISTRY": "registry.example.com/team", "TAG": "1.2.3", "OPENFAAS_URL": "https://faas.example.com"}
    )
    assert default["functions"]["face-recognition"]["image"] == "localhost:5000/face-recognition:0.1.0"
    assert custom["functions"]["face-recognition"]["image"] == "registry.example.com/team/face-recognition:1.2.3"
    assert custom["provider"]["gateway"] == "https://faas.example.com"
    assert "${" not in str(default)


def test_function_is_built_from_our_dockerfile_with_the_shared_package(stack: dict) -> None:
    ((name, function),) = stack["functions"].items()
    assert name == "face-recognition" and deploylib.DNS_LABEL.match(name)
    assert function["lang"] == "dockerfile"
    handler = (REPO / function["handler"]).resolve()
    assert handler == FUNCTION_DOCKERFILE.parent and (handler / "Dockerfile").is_file()
    assert {"name": "dockerfile", "source": "https://github.com/openfaas/templates"} in stack["configuration"][
        "templates"
    ]
    copies = stack["configuration"]["copy"]
    assert copies == ["./facepipe"]
    for path in copies:
        resolved = (REPO / path).resolve()
        assert resolved.is_dir() and resolved.is_relative_to(REPO) and resolved != REPO
    # faas-cli puts ./facepipe at the root of the build context; the Dockerfile copies it there.
    _, stages = deploylib.parse_dockerfile(FUNCTION_DOCKERFILE)
    copied = [i.args for i in stages[-1].all("COPY") if "--from" not in i.args]
    assert "facepipe/ ./facepipe/" in copied and "*.py ./" in copied


def test_environment_holds_settings_and_watchdog_timeouts(stack: dict) -> None:
    (function,) = stack["functions"].values()
    env = function["environment"]
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
        key: deploylib.go_duration_seconds(env[key]) for key in ("read_timeout", "write_timeout", "exec_timeout")
    }
    assert len(set(timeouts.values())) == 1 and 0 < timeouts["exec_timeout"] <= GATEWAY_UPSTREAM_TIMEOUT_S
    # The image's defaults match (the function behaves the same without stack.yml).
    _, stages = deploylib.parse_dockerfile(FUNCTION_DOCKERFILE)
    image_env = deploylib.dockerfile_env(stages[-1])
    for key, seconds in timeouts.items():
        assert deploylib.go_duration_seconds(image_env[key]) == seconds
    docs = "\n".join(path.read_text() for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])
    assert "gateway.upstreamTimeout=2m" in docs, "the deployment docs must set the gateway's timeout"


def test_secrets_and_known_faces(stack: dict) -> None:
    (function,) = stack["functions"].values()
    assert function["secrets"] == [FUNCTION_SECRET]
    assert function["environment"]["KNOWN_FACES"] == f"{DEFAULT_SECRETS_DIR}/{KNOWN_FACES_KEY}"


def test_storage_settings_match_the_rook_manifests(stack: dict, manifests) -> None:
    (function,) = stack["functions"].values()
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


def test_community_edition_scaling_labels(stack: dict) -> None:
    (function,) = stack["functions"].values()
    labels = function["labels"]
    assert deploylib.label_errors(labels) == []
    assert 1 <= int(labels["com.openfaas.scale.min"]) <= int(labels["com.openfaas.scale.max"]) <= 5
    assert labels["com.openfaas.scale.factor"] == "0"
    assert function["namespace"] == "openfaas-fn"


def test_resources_and_read_only_root(stack: dict) -> None:
    (function,) = stack["functions"].values()
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
