"""Connect the tools to the pipeline running on Kubernetes.

Rook provisions the buckets of the ObjectBucketClaims in ``k8s/base/bucket-claims.yaml``
and writes, for each claim, a ConfigMap (``BUCKET_HOST``, ``BUCKET_PORT``,
``BUCKET_NAME``, ``BUCKET_REGION``) and a Secret (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``) named after the claim. Both claims are owned by the
same RGW user, so both Secrets hold the same key pair.

Commands (they use your kubeconfig, like kubectl):

``env``
    Write the settings that ``workload.py`` and ``check.py`` need (endpoint, keys,
    bucket names) to a .env file. The in-cluster RGW address is not reachable from
    outside; pass ``--s3-endpoint`` with a port-forward or ingress address.

``function-secret``
    Create or update the OpenFaaS secret of the function (``openfaas-fn/face-recognition``):
    the S3 keys from the claim, the DynamoDB keys and the notify token from the
    Secrets that ``kubectl apply -k k8s/`` made, and the known faces as JSON (a CSE546
    pickle is converted first). OpenFaaS mounts each key as ``/var/openfaas/secrets/<key>``.

Example::

    python -m facepipe_tools.cluster function-secret --known-faces data/known_faces.json
    kubectl -n rook-ceph port-forward svc/rook-ceph-rgw-facepipe-store 8081:80 &
    python -m facepipe_tools.cluster env --s3-endpoint http://127.0.0.1:8081 -o .env.cluster
    FACEPIPE_ENV_FILE=.env.cluster python workload/workload.py
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from facepipe.settings import SECRET_NAMES

NAMESPACE = "facepipe"
FUNCTION_NAMESPACE = "openfaas-fn"
INPUT_CLAIM = "facepipe-input"
OUTPUT_CLAIM = "facepipe-output"
AWS_SECRET = "facepipe-aws"
TOKEN_SECRET = "facepipe-notify-token"
FUNCTION_SECRET = "face-recognition"
KNOWN_FACES_KEY = "known-faces"
DEFAULT_ENV_FILE = ".env.cluster"
# A Kubernetes Secret holds at most 1 MiB; leave room for the other keys.
MAX_KNOWN_FACES_BYTES = 900 * 1024


class ClusterError(RuntimeError):
    """Something the cluster should have provisioned is missing; the message says what."""


@dataclass(frozen=True)
class BucketClaim:
    """What Rook provisioned for one ObjectBucketClaim."""

    name: str
    bucket: str
    host: str
    port: int
    region: str
    access_key_id: str
    secret_access_key: str

    @property
    def endpoint_url(self) -> str:
        scheme = "https" if self.port == 443 else "http"
        return f"{scheme}://{self.host}:{self.port}"


def _status(exc: Exception) -> int | None:
    """HTTP status of a kubernetes ApiException (None for other errors)."""
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def _api_exception_type() -> type[Exception]:
    from kubernetes.client.exceptions import ApiException

    return ApiException


def _read(reader, kind: str, namespace: str, name: str, hint: str):
    try:
        return reader(name, namespace)
    except _api_exception_type() as exc:
        if _status(exc) == 404:
            raise ClusterError(f"{kind} {namespace}/{name} not found: {hint}") from None
        raise ClusterError(f"cannot read {kind} {namespace}/{name}: {exc}") from None


def _decode(data: dict[str, str] | None, key: str, where: str) -> str:
    """The value of ``key`` in a Secret's base64 ``data``."""
    if not data or key not in data:
        raise ClusterError(f"{where} has no key {key}")
    try:
        return base64.b64decode(data[key], validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise ClusterError(f"{where} key {key} is not valid base64 text") from None


def read_secret_values(core, namespace: str, name: str, keys: tuple[str, ...], hint: str) -> dict[str, str]:
    """Decoded values of ``keys`` from Secret ``namespace/name``."""
    secret = _read(core.read_namespaced_secret, "Secret", namespace, name, hint)
    where = f"Secret {namespace}/{name}"
    return {key: _decode(secret.data, key, where) for key in keys}


def read_claim(core, namespace: str, name: str) -> BucketClaim:
    """Read the ConfigMap and Secret that Rook generated for ObjectBucketClaim ``name``."""
    hint = (
        f"the bucket claim is not provisioned yet; see `kubectl -n {namespace} get objectbucketclaim {name}` "
        "and the rook-ceph-operator log"
    )
    config_map = _read(core.read_namespaced_config_map, "ConfigMap", namespace, name, hint)
    data = config_map.data or {}
    missing = [key for key in ("BUCKET_HOST", "BUCKET_PORT", "BUCKET_NAME") if not data.get(key)]
    if missing:
        raise ClusterError(f"ConfigMap {namespace}/{name} lacks {', '.join(missing)}")
    try:
        port = int(data["BUCKET_PORT"])
    except ValueError:
        raise ClusterError(f"ConfigMap {namespace}/{name} has a non-numeric BUCKET_PORT") from None
    keys = read_secret_values(core, namespace, name, ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), hint)
    return BucketClaim(
        name=name,
        bucket=data["BUCKET_NAME"],
        host=data["BUCKET_HOST"],
        port=port,
        region=data.get("BUCKET_REGION") or "us-east-1",
        access_key_id=keys["AWS_ACCESS_KEY_ID"],
        secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
    )


def check_same_owner(input_claim: BucketClaim, output_claim: BucketClaim) -> None:
    """The function reads one bucket and writes the other with one key pair."""
    if input_claim.access_key_id != output_claim.access_key_id:
        raise ClusterError(
            f"claims {input_claim.name} and {output_claim.name} have different keys: the buckets are not "
            "owned by the same RGW user. Allow the bucketOwner field in the Rook operator "
            '(ROOK_OBC_ALLOW_ADDITIONAL_CONFIG_FIELDS: "maxObjects,maxSize,bucketOwner"), then delete and '
            "re-apply the claims"
        )


def env_values(input_claim: BucketClaim, output_claim: BucketClaim, s3_endpoint: str | None = None) -> dict[str, str]:
    """Settings for workload.py and check.py (names as in facepipe/settings.py)."""
    check_same_owner(input_claim, output_claim)
    return {
        "S3_ENDPOINT_URL": s3_endpoint or input_claim.endpoint_url,
        "S3_ACCESS_KEY_ID": input_claim.access_key_id,
        "S3_SECRET_ACCESS_KEY": input_claim.secret_access_key,
        "S3_REGION": input_claim.region,
        "INPUT_BUCKET": input_claim.bucket,
        "OUTPUT_BUCKET": output_claim.bucket,
    }


def render_env(values: dict[str, str]) -> str:
    """A .env text that python-dotenv reads back to the same values."""
    lines = ["# Written by `python -m facepipe_tools.cluster env`: the pipeline on Kubernetes. Keep it private."]
    for key, value in values.items():
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{key}="{escaped}"')
    return "\n".join(lines) + "\n"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def read_known_faces(path: Path) -> bytes:
    """The JSON the function's secret holds, written afresh from what the file loads to (a
    JSON file, or the CSE546 pickle read by the parser that never unpickles), checked to fit
    a Secret."""
    from facepipe.faces.known_faces import KnownFacesError, load_for_conversion

    if not path.is_file():
        raise ClusterError(f"{path} is not a file (a folder of photos must be built to JSON first)")
    try:
        faces = load_for_conversion(path)
    except KnownFacesError as exc:
        raise ClusterError(f"{path}: {exc}") from None
    if not faces.names:
        raise ClusterError(f"{path} holds no faces")
    data = faces.to_json().encode()
    if len(data) > MAX_KNOWN_FACES_BYTES:
        raise ClusterError(f"{path} makes {len(data)} bytes of JSON; a Kubernetes Secret holds at most 1 MiB")
    return data


def function_secret_data(
    claim: BucketClaim, aws: dict[str, str], notify_token: str, known_faces: bytes
) -> dict[str, str]:
    """The function secret's keys (file names under /var/openfaas/secrets), base64-encoded."""
    values: dict[str, bytes] = {
        SECRET_NAMES["S3_ACCESS_KEY_ID"]: claim.access_key_id.encode(),
        SECRET_NAMES["S3_SECRET_ACCESS_KEY"]: claim.secret_access_key.encode(),
        SECRET_NAMES["AWS_ACCESS_KEY_ID"]: aws["AWS_ACCESS_KEY_ID"].encode(),
        SECRET_NAMES["AWS_SECRET_ACCESS_KEY"]: aws["AWS_SECRET_ACCESS_KEY"].encode(),
        SECRET_NAMES["NOTIFY_TOKEN"]: notify_token.encode(),
        KNOWN_FACES_KEY: known_faces,
    }
    return {key: base64.b64encode(value).decode() for key, value in values.items()}


def function_secret_body(namespace: str, data: dict[str, str]):
    """The Kubernetes Secret object, labelled as an OpenFaaS secret (`faas-cli secret list` shows it)."""
    from kubernetes import client

    return client.V1Secret(
        api_version="v1",
        kind="Secret",
        type="Opaque",
        metadata=client.V1ObjectMeta(
            name=FUNCTION_SECRET,
            namespace=namespace,
            labels={"app.kubernetes.io/managed-by": "openfaas", "app.kubernetes.io/part-of": "facepipe"},
        ),
        data=data,
    )


def apply_secret(core, body) -> str:
    """Create the Secret, or replace it if it exists. Returns "created" or "updated"."""
    namespace = body.metadata.namespace
    name = body.metadata.name
    try:
        core.create_namespaced_secret(namespace, body)
        return "created"
    except _api_exception_type() as exc:
        if _status(exc) != 409:
            raise ClusterError(f"cannot create Secret {namespace}/{name}: {exc}") from None
    try:
        core.replace_namespaced_secret(name, namespace, body)
    except _api_exception_type() as exc:
        raise ClusterError(f"cannot update Secret {namespace}/{name}: {exc}") from None
    return "updated"


def make_function_secret(core, namespace: str, function_namespace: str, known_faces: Path) -> str:
    """Gather the function's secret values from the cluster and the known-faces file; apply it."""
    faces = read_known_faces(known_faces)
    claim = read_claim(core, namespace, INPUT_CLAIM)
    check_same_owner(claim, read_claim(core, namespace, OUTPUT_CLAIM))
    hint = "create k8s/base/secrets/{file} and run `kubectl apply -k k8s/`"
    aws = read_secret_values(
        core, namespace, AWS_SECRET, ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), hint.format(file="aws.env")
    )
    token = read_secret_values(core, namespace, TOKEN_SECRET, ("NOTIFY_TOKEN",), hint.format(file="notify.env"))
    body = function_secret_body(function_namespace, function_secret_data(claim, aws, token["NOTIFY_TOKEN"], faces))
    return apply_secret(core, body)


def core_api(context: str | None):
    """A CoreV1Api from the kubeconfig (or the in-cluster service account)."""
    from kubernetes import client, config

    try:
        config.load_kube_config(context=context)
    except config.ConfigException:
        try:
            config.load_incluster_config()
        except config.ConfigException as exc:
            raise ClusterError(f"no Kubernetes configuration: {exc}") from None
    return client.CoreV1Api()


def main(argv: list[str] | None = None, core=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facepipe_tools.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("--namespace", default=NAMESPACE, help=f"the pipeline's namespace (default {NAMESPACE})")
    commands = parser.add_subparsers(dest="command", required=True)
    env = commands.add_parser("env", help="write the S3 settings of the cluster's buckets to a .env file")
    env.add_argument("--s3-endpoint", help="RGW address reachable from here (default: the in-cluster one)")
    env.add_argument(
        "-o", "--output", default=DEFAULT_ENV_FILE, help=f"file to write, '-' for stdout (default {DEFAULT_ENV_FILE})"
    )
    secret = commands.add_parser("function-secret", help="create or update the function's OpenFaaS secret")
    secret.add_argument("--known-faces", type=Path, required=True, help="JSON or CSE546 pickle of known faces")
    secret.add_argument(
        "--function-namespace",
        default=FUNCTION_NAMESPACE,
        help=f"OpenFaaS function namespace (default {FUNCTION_NAMESPACE})",
    )
    args = parser.parse_args(argv)

    try:
        core = core or core_api(args.context)
        if args.command == "env":
            values = env_values(
                read_claim(core, args.namespace, INPUT_CLAIM),
                read_claim(core, args.namespace, OUTPUT_CLAIM),
                args.s3_endpoint,
            )
            text = render_env(values)
            if args.output == "-":
                sys.stdout.write(text)
            else:
                write_private(Path(args.output), text)
                print(
                    f"wrote {args.output}: S3_ENDPOINT_URL={values['S3_ENDPOINT_URL']} "
                    f"INPUT_BUCKET={values['INPUT_BUCKET']} OUTPUT_BUCKET={values['OUTPUT_BUCKET']} (keys not shown)"
                )
        else:
            result = make_function_secret(core, args.namespace, args.function_namespace, args.known_faces)
            print(
                f"{result} Secret {args.function_namespace}/{FUNCTION_SECRET} "
                f"(keys: {', '.join([*SECRET_NAMES.values(), KNOWN_FACES_KEY])})"
            )
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
