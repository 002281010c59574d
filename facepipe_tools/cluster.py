"""Connect the tools to the pipeline running on Kubernetes.

Rook provisions the buckets of the ObjectBucketClaims in ``k8s/base/*bucket-claims.yaml``
and writes, for each claim, a ConfigMap (``BUCKET_HOST``, ``BUCKET_PORT``, ``BUCKET_NAME``,
``BUCKET_REGION``) named after the claim. The claims' own Secrets hold the keys of the
buckets' owner, which no part of the pipeline uses: each part has an RGW user of its own
(``k8s/base/rook-object-users.yaml``), whose keys Rook writes to the Secret
``rook-ceph-object-user-facepipe-store-<user>`` (``AccessKey``, ``SecretKey``), and the
buckets' policies (``k8s/policies/``) say what each user may do.

Commands (they use your kubeconfig, like kubectl; no key is ever printed or passed on a
command line):

``env``
    Write the settings that ``workload.py`` and ``check.py`` need (endpoint, the workload
    user's keys, bucket names) to a .env file, readable by you only. The in-cluster RGW
    address is not reachable from outside; pass ``--s3-endpoint`` with a port-forward or
    ingress address.

``function-secret``
    Create or update a function's OpenFaaS secret (``openfaas-fn/<function>``) with its own
    keys only: the S3 keys of its RGW user (read its input bucket, write its output bucket)
    and, for face-recognition, the DynamoDB keys that may read the students table (Secret
    ``facepipe-aws-function``) and the known faces as JSON (a CSE546 pickle is converted
    first). No notify token (the function takes events from the notifier, not from RGW) and
    no keys of other parts. OpenFaaS mounts each key as ``/var/openfaas/secrets/<key>``.

Example::

    python -m facepipe_tools.cluster function-secret --known-faces data/known_faces.json
    python -m facepipe_tools.cluster function-secret --function image-classification
    kubectl -n rook-ceph port-forward svc/rook-ceph-rgw-facepipe-store 8081:80 &
    python -m facepipe_tools.cluster env --s3-endpoint http://127.0.0.1:8081 -o .env.cluster
    FACEPIPE_ENV_FILE=.env.cluster python workload/workload.py
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from facepipe.settings import SECRET_NAMES

NAMESPACE = "facepipe"
FUNCTION_NAMESPACE = "openfaas-fn"
OBJECT_STORE = "facepipe-store"
INPUT_CLAIM = "facepipe-input"
OUTPUT_CLAIM = "facepipe-output"
IMAGE_INPUT_CLAIM = "facepipe-images-input"
IMAGE_OUTPUT_CLAIM = "facepipe-images-output"
#: DynamoDB keys of the face-recognition function's AWS user (read the students table only),
#: from k8s/base/secrets/aws-function.env.
FUNCTION_AWS_SECRET = "facepipe-aws-function"
#: DynamoDB keys of the upload-data Job's AWS user, from k8s/base/secrets/aws-upload-data.env.
UPLOAD_AWS_SECRET = "facepipe-aws-upload-data"
TOKEN_SECRET = "facepipe-notify-token"
FUNCTION_SECRET = "face-recognition"
KNOWN_FACES_KEY = "known-faces"
#: The RGW users (CephObjectStoreUser names) of the parts that touch the buckets.
OWNER_USER = "facepipe"
NOTIFIER_USER = "facepipe-notifier"
WEB_USER = "facepipe-web"
WORKLOAD_USER = "facepipe-workload"
DEFAULT_ENV_FILE = ".env.cluster"
# A Kubernetes Secret holds at most 1 MiB; leave room for the other keys.
MAX_KNOWN_FACES_BYTES = 900 * 1024


@dataclass(frozen=True)
class FunctionSpec:
    """What one function's OpenFaaS secret holds."""

    name: str  # the OpenFaaS function, and its Secret in FUNCTION_NAMESPACE
    rgw_user: str  # its CephObjectStoreUser
    known_faces: bool  # known faces and DynamoDB keys (face recognition)


FUNCTIONS = {
    "face-recognition": FunctionSpec("face-recognition", "facepipe-face-recognition", known_faces=True),
    "image-classification": FunctionSpec("image-classification", "facepipe-image-classification", known_faces=False),
}


def secret_keys(spec: FunctionSpec) -> list[str]:
    """The keys of a function's secret (the file names under /var/openfaas/secrets)."""
    names = [SECRET_NAMES["S3_ACCESS_KEY_ID"], SECRET_NAMES["S3_SECRET_ACCESS_KEY"]]
    if spec.known_faces:
        names += [SECRET_NAMES["AWS_ACCESS_KEY_ID"], SECRET_NAMES["AWS_SECRET_ACCESS_KEY"], KNOWN_FACES_KEY]
    return names


def user_secret_name(user: str, store: str = OBJECT_STORE) -> str:
    """The Secret in which Rook keeps a CephObjectStoreUser's keys."""
    return f"rook-ceph-object-user-{store}-{user}"


class ClusterError(RuntimeError):
    """Something the cluster should have provisioned is missing; the message says what."""


@dataclass(frozen=True)
class Bucket:
    """Where one ObjectBucketClaim's bucket is (Rook's ConfigMap for the claim)."""

    name: str
    bucket: str
    host: str
    port: int
    region: str

    @property
    def endpoint_url(self) -> str:
        scheme = "https" if self.port == 443 else "http"
        return f"{scheme}://{self.host}:{self.port}"


@dataclass(frozen=True)
class S3Keys:
    """One RGW user's key pair (repr shows the access key id only)."""

    user: str
    access_key_id: str
    secret_access_key: str

    def __repr__(self) -> str:
        return f"S3Keys(user={self.user!r}, access_key_id={self.access_key_id!r})"


def _status(exc: Exception) -> int | None:
    """HTTP status of a kubernetes ApiException (None for other errors)."""
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def _api_error(exc: Exception) -> str:
    """An ApiException as status, reason and the API server's message: never its headers or
    the whole body, which could echo what was sent (a Secret's values)."""
    text = f"{_status(exc) or ''} {getattr(exc, 'reason', '') or ''}".strip() or type(exc).__name__
    try:
        message = json.loads(getattr(exc, "body", None) or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return f"{text}: {message}" if isinstance(message, str) and message else text


def _api_exception_type() -> type[Exception]:
    from kubernetes.client.exceptions import ApiException

    return ApiException


def _read(reader, kind: str, namespace: str, name: str, hint: str):
    try:
        return reader(name, namespace)
    except _api_exception_type() as exc:
        if _status(exc) == 404:
            raise ClusterError(f"{kind} {namespace}/{name} not found: {hint}") from None
        raise ClusterError(f"cannot read {kind} {namespace}/{name}: {_api_error(exc)}") from None


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


def read_bucket(core, namespace: str, name: str) -> Bucket:
    """Read the ConfigMap that Rook generated for ObjectBucketClaim ``name``."""
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
    return Bucket(
        name=name,
        bucket=data["BUCKET_NAME"],
        host=data["BUCKET_HOST"],
        port=port,
        region=data.get("BUCKET_REGION") or "us-east-1",
    )


def read_user_keys(core, namespace: str, user: str) -> S3Keys:
    """The keys Rook generated for CephObjectStoreUser ``user``."""
    hint = (
        f"the RGW user is not ready yet; see `kubectl -n {namespace} get cephobjectstoreuser {user}` "
        "(k8s/base/rook-object-users.yaml) and the rook-ceph-operator log"
    )
    keys = read_secret_values(core, namespace, user_secret_name(user), ("AccessKey", "SecretKey"), hint)
    return S3Keys(user=user, access_key_id=keys["AccessKey"], secret_access_key=keys["SecretKey"])


def env_values(buckets: dict[str, Bucket], keys: S3Keys, s3_endpoint: str | None = None) -> dict[str, str]:
    """Settings for workload.py and check.py (names as in facepipe/settings.py), with the
    workload user's keys: upload to and clear the input buckets, read and clear the output."""
    values = {
        "S3_ENDPOINT_URL": s3_endpoint or buckets[INPUT_CLAIM].endpoint_url,
        "S3_ACCESS_KEY_ID": keys.access_key_id,
        "S3_SECRET_ACCESS_KEY": keys.secret_access_key,
        "S3_REGION": buckets[INPUT_CLAIM].region,
        "INPUT_BUCKET": buckets[INPUT_CLAIM].bucket,
        "OUTPUT_BUCKET": buckets[OUTPUT_CLAIM].bucket,
    }
    if IMAGE_INPUT_CLAIM in buckets and IMAGE_OUTPUT_CLAIM in buckets:
        values["IMAGE_INPUT_BUCKET"] = buckets[IMAGE_INPUT_CLAIM].bucket
        values["IMAGE_OUTPUT_BUCKET"] = buckets[IMAGE_OUTPUT_CLAIM].bucket
    return values


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
    keys: S3Keys, aws: dict[str, str] | None = None, known_faces: bytes | None = None
) -> dict[str, str]:
    """A function secret's keys (file names under /var/openfaas/secrets), base64-encoded:
    its S3 keys, and for face recognition its DynamoDB keys and the known faces."""
    values: dict[str, bytes] = {
        SECRET_NAMES["S3_ACCESS_KEY_ID"]: keys.access_key_id.encode(),
        SECRET_NAMES["S3_SECRET_ACCESS_KEY"]: keys.secret_access_key.encode(),
    }
    if aws is not None:
        values[SECRET_NAMES["AWS_ACCESS_KEY_ID"]] = aws["AWS_ACCESS_KEY_ID"].encode()
        values[SECRET_NAMES["AWS_SECRET_ACCESS_KEY"]] = aws["AWS_SECRET_ACCESS_KEY"].encode()
    if known_faces is not None:
        values[KNOWN_FACES_KEY] = known_faces
    return {key: base64.b64encode(value).decode() for key, value in values.items()}


def function_secret_body(namespace: str, data: dict[str, str], name: str = FUNCTION_SECRET):
    """The Kubernetes Secret object, labelled as an OpenFaaS secret (`faas-cli secret list` shows it)."""
    from kubernetes import client

    return client.V1Secret(
        api_version="v1",
        kind="Secret",
        type="Opaque",
        metadata=client.V1ObjectMeta(
            name=name,
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
            raise ClusterError(f"cannot create Secret {namespace}/{name}: {_api_error(exc)}") from None
    try:
        core.replace_namespaced_secret(name, namespace, body)
    except _api_exception_type() as exc:
        raise ClusterError(f"cannot update Secret {namespace}/{name}: {_api_error(exc)}") from None
    return "updated"


def make_function_secret(
    core,
    namespace: str,
    function_namespace: str,
    known_faces: Path | None = None,
    function: str = FUNCTION_SECRET,
) -> str:
    """Gather one function's secret values from the cluster (and, for face recognition, the
    known-faces file); apply it. Returns "created" or "updated"."""
    spec = FUNCTIONS.get(function)
    if spec is None:
        raise ClusterError(f"unknown function {function!r}; one of {', '.join(FUNCTIONS)}")
    if spec.known_faces and known_faces is None:
        raise ClusterError(f"{function} needs --known-faces (our JSON format or the CSE546 pickle)")
    if not spec.known_faces and known_faces is not None:
        raise ClusterError(f"{function} uses no known faces; leave out --known-faces")
    faces = read_known_faces(known_faces) if known_faces is not None else None
    keys = read_user_keys(core, namespace, spec.rgw_user)
    aws = None
    if spec.known_faces:
        aws = read_secret_values(
            core, namespace, FUNCTION_AWS_SECRET, ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
            "create k8s/base/secrets/aws-function.env and run `kubectl apply -k k8s/`",
        )  # fmt: skip
    body = function_secret_body(function_namespace, function_secret_data(keys, aws, faces), spec.name)
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
    env = commands.add_parser(
        "env", help="write the workload user's S3 settings of the cluster's buckets to a .env file"
    )
    env.add_argument("--s3-endpoint", help="RGW address reachable from here (default: the in-cluster one)")
    env.add_argument(
        "-o", "--output", default=DEFAULT_ENV_FILE, help=f"file to write, '-' for stdout (default {DEFAULT_ENV_FILE})"
    )
    secret = commands.add_parser("function-secret", help="create or update a function's OpenFaaS secret")
    secret.add_argument(
        "--function", choices=sorted(FUNCTIONS), default=FUNCTION_SECRET, help=f"default {FUNCTION_SECRET}"
    )
    secret.add_argument(
        "--known-faces", type=Path, help="JSON or CSE546 pickle of known faces (face-recognition only, required there)"
    )
    secret.add_argument(
        "--function-namespace",
        default=FUNCTION_NAMESPACE,
        help=f"OpenFaaS function namespace (default {FUNCTION_NAMESPACE})",
    )
    args = parser.parse_args(argv)

    try:
        core = core or core_api(args.context)
        if args.command == "env":
            claims = (INPUT_CLAIM, OUTPUT_CLAIM, IMAGE_INPUT_CLAIM, IMAGE_OUTPUT_CLAIM)
            buckets = {name: read_bucket(core, args.namespace, name) for name in claims}
            values = env_values(buckets, read_user_keys(core, args.namespace, WORKLOAD_USER), args.s3_endpoint)
            text = render_env(values)
            if args.output == "-":
                sys.stdout.write(text)
            else:
                write_private(Path(args.output), text)
                print(
                    f"wrote {args.output}: S3_ENDPOINT_URL={values['S3_ENDPOINT_URL']} "
                    f"INPUT_BUCKET={values['INPUT_BUCKET']} OUTPUT_BUCKET={values['OUTPUT_BUCKET']} "
                    f"(keys of RGW user {WORKLOAD_USER}, not shown)"
                )
        else:
            result = make_function_secret(
                core, args.namespace, args.function_namespace, args.known_faces, args.function
            )
            keys = ", ".join(secret_keys(FUNCTIONS[args.function]))
            print(f"{result} Secret {args.function_namespace}/{args.function} (keys: {keys})")
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
