"""Helpers of the deployment tests: manifests, CRD schemas, Dockerfiles, stack.yml.

Everything here works offline. `kubectl` (only for `kubectl kustomize`) is used
when present; tests that need it are skipped otherwise.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
FUNCTION_DIR = REPO / "functions" / "face-recognition"
FUNCTION_DOCKERFILE = FUNCTION_DIR / "Dockerfile"
CLASSIFICATION_DIR = REPO / "functions" / "image-classification"
CLASSIFICATION_DOCKERFILE = CLASSIFICATION_DIR / "Dockerfile"
#: Every function of stack.yml and its folder (handler.py, index.py, Dockerfile, requirements).
FUNCTION_DIRS = {"face-recognition": FUNCTION_DIR, "image-classification": CLASSIFICATION_DIR}
NOTIFIER_DOCKERFILE = REPO / "notifier" / "Dockerfile"
STACK_FILE = REPO / "stack.yml"
# Oldest and newest Kubernetes versions the manifests are checked against.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")


# ---------------------------------------------------------------- manifests --


@dataclass(frozen=True)
class Manifest:
    path: Path
    doc: dict

    @property
    def kind(self) -> str:
        return self.doc.get("kind", "")

    @property
    def name(self) -> str:
        return self.doc.get("metadata", {}).get("name", "")

    @property
    def namespace(self) -> str | None:
        return self.doc.get("metadata", {}).get("namespace")

    def __str__(self) -> str:
        where = self.path.relative_to(REPO) if self.path.is_relative_to(REPO) else self.path.name
        return f"{where}:{self.kind}/{self.name}"


def is_kustomization(path: Path) -> bool:
    return path.name in ("kustomization.yaml", "kustomization.yml", "Kustomization")


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest under k8s/ (not the kustomization files)."""
    return sorted(p for p in K8S.rglob("*.yaml") if not is_kustomization(p))


def load_manifests(paths: list[Path] | None = None) -> list[Manifest]:
    found = []
    for path in paths if paths is not None else manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append(Manifest(path, doc))
    return found


def parse_documents(text: str, origin: Path) -> list[Manifest]:
    return [Manifest(origin, doc) for doc in yaml.safe_load_all(text) if doc is not None]


def find(manifests: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [m for m in manifests if m.kind == kind and (name is None or m.name == name)]


def one(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    matches = find(manifests, kind, name)
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


# ------------------------------------------------------------- CRD schemas --


def _strict(schema: object) -> object:
    """A CRD structural schema as JSON Schema with the API server's strictness.

    Unknown fields are rejected unless x-kubernetes-preserve-unknown-fields is set;
    ``nullable: true`` admits null.
    """
    if not isinstance(schema, dict):
        return schema
    out = copy.deepcopy(schema)
    if isinstance(out.get("properties"), dict):
        out["properties"] = {key: _strict(value) for key, value in out["properties"].items()}
    if isinstance(out.get("items"), dict):
        out["items"] = _strict(out["items"])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _strict(out["additionalProperties"])
    for keyword in ("anyOf", "allOf", "oneOf"):
        if isinstance(out.get(keyword), list):
            out[keyword] = [_strict(item) for item in out[keyword]]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("nullable"):
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if isinstance(out.get("anyOf"), list):
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
    return out


@dataclass(frozen=True)
class CrdSchema:
    path: Path
    group: str
    version: str
    kind: str
    source: dict
    schema: dict = field(repr=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


def load_crd_schemas() -> dict[tuple[str, str], CrdSchema]:
    """(apiVersion, kind) -> strict schema, from tests/deploy/schemas/*.yaml."""
    schemas = {}
    for path in sorted(SCHEMAS.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        crd = CrdSchema(
            path=path,
            group=data["group"],
            version=data["version"],
            kind=data["kind"],
            source=data["source"],
            schema=_strict(data["openAPIV3Schema"]),
        )
        schemas[(crd.api_version, crd.kind)] = crd
    return schemas


def validate_custom_resource(doc: dict, schemas: dict[tuple[str, str], CrdSchema]) -> list[str]:
    """Errors of ``doc`` against its CRD schema (empty list when valid)."""
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in schemas:
        return [f"no vendored CRD schema for {key[0]} {key[1]}"]
    validator = jsonschema.Draft7Validator(schemas[key].schema)
    errors = [
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(doc)
    ]
    # Object metadata of a custom resource is a plain ObjectMeta: check it strictly
    # through a built-in kind.
    carrier = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc.get("metadata", {})}
    errors.extend(validate_builtin(carrier))
    return errors


def validate_builtin(doc: dict) -> list[str]:
    """Errors of a built-in kind against the Kubernetes OpenAPI schemas (strict)."""
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"Kubernetes {version}: {'.'.join(str(p) for p in exc.path)}: {exc.message}")
    return errors


def is_builtin(doc: dict) -> bool:
    group = doc.get("apiVersion", "").rpartition("/")[0]
    return group == "" or group.endswith(".k8s.io") or group in ("apps", "batch", "autoscaling", "policy")


DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def label_errors(labels: dict | None) -> list[str]:
    errors = []
    for key, value in (labels or {}).items():
        prefix, _, name = key.rpartition("/")
        if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
            errors.append(f"label key {key!r}: bad prefix")
        if len(name) > 63 or not LABEL_NAME.match(name):
            errors.append(f"label key {key!r}: bad name")
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            errors.append(f"label {key}={value!r}: bad value")
    return errors


# --------------------------------------------------------------- kustomize --


def kustomization_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if is_kustomization(p))


def prepared_k8s_tree(tmp: Path) -> Path:
    """A copy of k8s/ with the secret env files made from their .example templates."""
    target = tmp / "k8s"
    shutil.copytree(K8S, target, ignore=shutil.ignore_patterns("*.env"))
    for example in target.rglob("*.env.example"):
        example.with_name(example.name.removesuffix(".example")).write_text(example.read_text())
    return target


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed (needed only for `kubectl kustomize`)")
    return path


def kustomize_build(directory: Path) -> str:
    env = {**os.environ, "KUBECONFIG": os.devnull}
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return result.stdout


# -------------------------------------------------------------- Dockerfile --


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile (continuations joined, comments dropped)."""
    logical: list[tuple[int, str]] = []
    buffer, start = "", 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        logical.append((start, buffer + stripped))
        buffer = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, text in logical:
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            parts = args.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif not stages and keyword == "ARG":
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, args, number))
    return global_args, stages


def dockerfile_env(stage: Stage) -> dict[str, str]:
    """ENV of a stage, in order (key=value pairs, quotes removed, $PATH left as text)."""
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for token in _split_env(instruction.args):
            key, _, value = token.partition("=")
            env[key] = value
    return env


def _split_env(args: str) -> list[str]:
    tokens, current, quote = [], "", None
    for char in args:
        if quote:
            if char == quote:
                quote = None
            else:
                current += char
        elif char in "\"'":
            quote = char
        elif char.isspace():
            if current:
                tokens.append(current)
                current = ""
        else:
            current += char
    if current:
        tokens.append(current)
    return tokens


def resolve_args(image: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), image)


# ---------------------------------------------------------------- stack.yml --


def envsubst(text: str, env: dict[str, str] | None = None) -> str:
    """faas-cli's substitution: ${VAR}, ${VAR:-default}."""
    env = env or {}

    def replace(match: re.Match) -> str:
        name, default = match.group(1), match.group(3)
        value = env.get(name)
        return value if value else (default or "")

    return re.sub(r"\$\{(\w+)(:-([^}]*))?\}", replace, text)


def load_stack(env: dict[str, str] | None = None) -> dict:
    return yaml.safe_load(envsubst(STACK_FILE.read_text(), env))


def go_duration_seconds(value: str) -> float:
    """Seconds of a Go duration ("2m", "1m30s", "500ms") or a bare number of seconds (watchdog style)."""
    if re.fullmatch(r"\d+", value):
        return float(value)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
    assert parts and "".join(n + u for n, u in parts) == value, f"not a Go duration: {value!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


# ------------------------------------------------------------ OpenFaaS rules --

# The gateway's defaults when a function has no com.openfaas.scale.* label
# (openfaas/faas gateway/scaling/ranges.go).
GATEWAY_DEFAULT_SCALING_FACTOR = 10


def gateway_scaling_factor(labels: dict[str, str] | None) -> int:
    """The scaling factor the OpenFaaS gateway derives from a function's labels.

    Mirrors openfaas/faas gateway/plugin/external.go (ExternalServiceQuery.GetReplicas,
    extractLabelValue): no label or a value that is not an integer gives the default;
    an integer outside 1-100 is an error, which gateway/handlers/scaling.go
    (MakeScalingHandler) turns into a 404 for every invocation when scale-from-zero is on,
    as it is in the chart by default.
    """
    raw = (labels or {}).get("com.openfaas.scale.factor", "")
    if not raw:
        return GATEWAY_DEFAULT_SCALING_FACTOR
    try:
        value = int(raw)
    except ValueError:
        return GATEWAY_DEFAULT_SCALING_FACTOR
    if not 0 < value <= 100:
        raise ValueError(f"bad scaling factor: {value}, is not in range of [0 - 100]")
    return value


# Image references as docker and go-containerregistry parse them
# (distribution/reference regexp.go): [domain[:port]/]path[:tag][@digest].
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_REFERENCE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
    r"(?::[\w][\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$"
)


def is_image_reference(reference: str) -> bool:
    return len(reference) <= 255 and IMAGE_REFERENCE.match(reference) is not None


def image_registry(reference: str) -> str:
    """The registry host of an image reference (docker.io when none is named)."""
    first, slash, _ = reference.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        return first
    return "docker.io"


def deployment_docs() -> str:
    """README.md and docs/*.md, where the install commands live."""
    return "\n".join(path.read_text() for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])


def documented_gateway_timeouts() -> dict[str, float]:
    """Seconds of the gateway's timeouts in the documented `helm upgrade --install openfaas ...`."""
    found = dict(re.findall(r"gateway\.(upstreamTimeout|readTimeout|writeTimeout)=([0-9a-z.]+)", deployment_docs()))
    return {key: go_duration_seconds(value) for key, value in found.items()}


def documented_grace_period_s() -> int | None:
    """terminationGracePeriodSeconds of the documented `kubectl patch` for Community Edition."""
    found = set(re.findall(r'"terminationGracePeriodSeconds":\s*(\d+)', deployment_docs()))
    assert len(found) <= 1, f"the docs give different grace periods: {found}"
    return int(found.pop()) if found else None
