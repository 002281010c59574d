"""facepipe_tools.cluster against fake Kubernetes API objects (no cluster)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from dotenv import dotenv_values
from kubernetes.client import V1ConfigMap, V1ObjectMeta, V1Secret
from kubernetes.client.exceptions import ApiException

from facepipe.settings import SECRET_NAMES
from facepipe_tools import cluster

REPO = Path(__file__).resolve().parents[2]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class FakeCoreV1:
    """The few CoreV1Api calls facepipe_tools.cluster makes, over dicts of objects."""

    def __init__(self, config_maps: dict | None = None, secrets: dict | None = None) -> None:
        self.config_maps = config_maps or {}
        self.secrets = secrets or {}
        self.calls: list[str] = []

    def read_namespaced_config_map(self, name: str, namespace: str) -> V1ConfigMap:
        try:
            return self.config_maps[(namespace, name)]
        except KeyError:
            raise ApiException(status=404, reason="Not Found") from None

    def read_namespaced_secret(self, name: str, namespace: str) -> V1Secret:
        try:
            return self.secrets[(namespace, name)]
        except KeyError:
            raise ApiException(status=404, reason="Not Found") from None

    def create_namespaced_secret(self, namespace: str, body: V1Secret) -> V1Secret:
        self.calls.append(f"create {namespace}/{body.metadata.name}")
        if (namespace, body.metadata.name) in self.secrets:
            raise ApiException(status=409, reason="AlreadyExists")
        self.secrets[(namespace, body.metadata.name)] = body
        return body

    def replace_namespaced_secret(self, name: str, namespace: str, body: V1Secret) -> V1Secret:
        self.calls.append(f"replace {namespace}/{name}")
        self.secrets[(namespace, name)] = body
        return body


OWNER_KEYS = ("OWNERKEY", "owner/secret+key")


def user_keys(user: str) -> tuple[str, str]:
    """The fake key pair Rook generated for RGW user `user`."""
    return f"AK-{user}", f"secret/{user}+key"


def claim_objects(name: str, bucket: str) -> dict:
    """The ConfigMap and the Secret Rook writes for a claim (the Secret holds the owner's keys)."""
    config_map = V1ConfigMap(
        metadata=V1ObjectMeta(name=name, namespace="facepipe"),
        data={
            "BUCKET_HOST": "rook-ceph-rgw-facepipe-store.rook-ceph.svc",
            "BUCKET_PORT": "80",
            "BUCKET_NAME": bucket,
            "BUCKET_REGION": "us-east-1",
            "BUCKET_SUBREGION": "",
        },
    )
    secret_obj = V1Secret(
        metadata=V1ObjectMeta(name=name, namespace="facepipe"),
        data={"AWS_ACCESS_KEY_ID": _b64(OWNER_KEYS[0]), "AWS_SECRET_ACCESS_KEY": _b64(OWNER_KEYS[1])},
    )
    return {"config_map": config_map, "secret": secret_obj}


USERS = (
    cluster.OWNER_USER, cluster.NOTIFIER_USER, cluster.WEB_USER, cluster.WORKLOAD_USER,
    *(spec.rgw_user for spec in cluster.FUNCTIONS.values()),
)  # fmt: skip
CLAIMS = {
    cluster.INPUT_CLAIM: "facepipe-input",
    cluster.OUTPUT_CLAIM: "facepipe-output",
    cluster.IMAGE_INPUT_CLAIM: "facepipe-images-input",
    cluster.IMAGE_OUTPUT_CLAIM: "facepipe-images-output",
}


def provisioned_cluster() -> FakeCoreV1:
    """Everything `kubectl apply -k k8s/` and Rook make, with a distinct value for every key."""
    config_maps, secrets = {}, {}
    for name, bucket in CLAIMS.items():
        objects = claim_objects(name, bucket)
        config_maps[("facepipe", name)] = objects["config_map"]
        secrets[("facepipe", name)] = objects["secret"]
    for user in USERS:
        access, secret = user_keys(user)
        secrets[("facepipe", cluster.user_secret_name(user))] = V1Secret(
            data={"AccessKey": _b64(access), "SecretKey": _b64(secret), "Endpoint": _b64("http://rgw:80")}
        )
    secrets[("facepipe", cluster.FUNCTION_AWS_SECRET)] = V1Secret(
        data={"AWS_ACCESS_KEY_ID": _b64("FUNCTIONAWSKEY"), "AWS_SECRET_ACCESS_KEY": _b64("function-aws-secret")}
    )
    secrets[("facepipe", cluster.UPLOAD_AWS_SECRET)] = V1Secret(
        data={"AWS_ACCESS_KEY_ID": _b64("UPLOADAWSKEY"), "AWS_SECRET_ACCESS_KEY": _b64("upload-aws-secret")}
    )
    secrets[("facepipe", cluster.TOKEN_SECRET)] = V1Secret(data={"NOTIFY_TOKEN": _b64("the-token")})
    return FakeCoreV1(config_maps=config_maps, secrets=secrets)


def test_read_bucket_decodes_what_rook_generated() -> None:
    bucket = cluster.read_bucket(provisioned_cluster(), "facepipe", cluster.INPUT_CLAIM)
    assert bucket == cluster.Bucket(
        name="facepipe-input",
        bucket="facepipe-input",
        host="rook-ceph-rgw-facepipe-store.rook-ceph.svc",
        port=80,
        region="us-east-1",
    )
    assert bucket.endpoint_url == "http://rook-ceph-rgw-facepipe-store.rook-ceph.svc:80"


def test_read_user_keys_reads_the_users_own_secret() -> None:
    keys = cluster.read_user_keys(provisioned_cluster(), "facepipe", cluster.WORKLOAD_USER)
    assert (keys.access_key_id, keys.secret_access_key) == user_keys(cluster.WORKLOAD_USER)
    assert keys.secret_access_key not in repr(keys)
    with pytest.raises(cluster.ClusterError, match="rook-ceph-object-user-facepipe-store-nobody not found"):
        cluster.read_user_keys(provisioned_cluster(), "facepipe", "nobody")


def test_an_unprovisioned_claim_is_explained() -> None:
    with pytest.raises(cluster.ClusterError, match="not provisioned yet.*get objectbucketclaim facepipe-input"):
        cluster.read_bucket(FakeCoreV1(), "facepipe", cluster.INPUT_CLAIM)


def test_a_config_map_without_the_bucket_fields_is_reported() -> None:
    core = provisioned_cluster()
    core.config_maps[("facepipe", cluster.INPUT_CLAIM)].data.pop("BUCKET_NAME")
    with pytest.raises(cluster.ClusterError, match="lacks BUCKET_NAME"):
        cluster.read_bucket(core, "facepipe", cluster.INPUT_CLAIM)


def test_env_values_and_the_dotenv_text_round_trip(tmp_path: Path) -> None:
    core = provisioned_cluster()
    buckets = {name: cluster.read_bucket(core, "facepipe", name) for name in CLAIMS}
    keys = cluster.read_user_keys(core, "facepipe", cluster.WORKLOAD_USER)
    values = cluster.env_values(buckets, keys, s3_endpoint="http://127.0.0.1:8081")
    access, secret = user_keys(cluster.WORKLOAD_USER)
    assert values == {
        "S3_ENDPOINT_URL": "http://127.0.0.1:8081",
        "S3_ACCESS_KEY_ID": access,
        "S3_SECRET_ACCESS_KEY": secret,
        "S3_REGION": "us-east-1",
        "INPUT_BUCKET": "facepipe-input",
        "OUTPUT_BUCKET": "facepipe-output",
        "IMAGE_INPUT_BUCKET": "facepipe-images-input",
        "IMAGE_OUTPUT_BUCKET": "facepipe-images-output",
    }
    path = tmp_path / "cluster.env"
    path.write_text(cluster.render_env({**values, "ODD": 'a "quoted" \\ value'}))
    assert dotenv_values(path) == {**values, "ODD": 'a "quoted" \\ value'}


def test_main_env_writes_a_private_file_with_the_workload_users_keys(tmp_path: Path, capsys) -> None:
    output = tmp_path / ".env.cluster"
    code = cluster.main(
        ["env", "--s3-endpoint", "http://127.0.0.1:8081", "-o", str(output)], core=provisioned_cluster()
    )
    assert code == 0
    written = dotenv_values(output)
    assert written["INPUT_BUCKET"] == "facepipe-input"
    assert (written["S3_ACCESS_KEY_ID"], written["S3_SECRET_ACCESS_KEY"]) == user_keys(cluster.WORKLOAD_USER)
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    printed = capsys.readouterr().out
    assert not any(value in printed for value in user_keys(cluster.WORKLOAD_USER))


def test_main_reports_missing_claims_without_a_traceback(capsys) -> None:
    assert cluster.main(["env", "-o", "-"], core=FakeCoreV1()) == 1
    assert capsys.readouterr().err.startswith("error: ConfigMap facepipe/facepipe-input not found")


def decoded_secret(core: FakeCoreV1, name: str) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in core.secrets[("openfaas-fn", name)].data.items()}


def test_face_function_secret_holds_its_own_keys_only(tmp_path: Path) -> None:
    core = provisioned_cluster()
    known_faces = REPO / "data" / "known_faces.json"
    assert cluster.make_function_secret(core, "facepipe", "openfaas-fn", known_faces) == "created"
    secret = core.secrets[("openfaas-fn", cluster.FUNCTION_SECRET)]
    decoded = decoded_secret(core, cluster.FUNCTION_SECRET)
    access, key = user_keys("facepipe-face-recognition")
    assert decoded == {
        SECRET_NAMES["S3_ACCESS_KEY_ID"]: access.encode(),
        SECRET_NAMES["S3_SECRET_ACCESS_KEY"]: key.encode(),
        SECRET_NAMES["AWS_ACCESS_KEY_ID"]: b"FUNCTIONAWSKEY",
        SECRET_NAMES["AWS_SECRET_ACCESS_KEY"]: b"function-aws-secret",
        cluster.KNOWN_FACES_KEY: known_faces.read_bytes(),
    }
    assert SECRET_NAMES["NOTIFY_TOKEN"] not in decoded
    # No value of another part: not the token, the upload Job's, the owner's or another user's.
    others = [b"the-token", b"UPLOADAWSKEY", b"upload-aws-secret", OWNER_KEYS[1].encode()]
    others += [user_keys(user)[1].encode() for user in USERS if user != "facepipe-face-recognition"]
    assert not set(others) & set(decoded.values())
    assert secret.metadata.labels["app.kubernetes.io/managed-by"] == "openfaas"
    assert cluster.make_function_secret(core, "facepipe", "openfaas-fn", known_faces) == "updated"
    assert core.calls[-1] == "replace openfaas-fn/face-recognition"


def test_image_function_secret_holds_storage_keys_only(capsys) -> None:
    core = provisioned_cluster()
    assert cluster.main(["function-secret", "--function", "image-classification"], core=core) == 0
    access, key = user_keys("facepipe-image-classification")
    assert decoded_secret(core, "image-classification") == {
        SECRET_NAMES["S3_ACCESS_KEY_ID"]: access.encode(),
        SECRET_NAMES["S3_SECRET_ACCESS_KEY"]: key.encode(),
    }
    printed = capsys.readouterr().out
    assert printed.startswith("created Secret openfaas-fn/image-classification (keys: s3-access-key-id, ")
    assert access not in printed and key not in printed


def test_function_secret_options_fit_the_function() -> None:
    core = provisioned_cluster()
    with pytest.raises(cluster.ClusterError, match="needs --known-faces"):
        cluster.make_function_secret(core, "facepipe", "openfaas-fn", None)
    with pytest.raises(cluster.ClusterError, match="uses no known faces"):
        cluster.make_function_secret(
            core, "facepipe", "openfaas-fn", REPO / "data" / "known_faces.json", function="image-classification"
        )
    with pytest.raises(cluster.ClusterError, match="unknown function"):
        cluster.make_function_secret(core, "facepipe", "openfaas-fn", None, function="nope")


def test_function_secret_checks_the_known_faces_file(tmp_path: Path) -> None:
    bad = tmp_path / "faces.json"
    bad.write_text('{"format": "something-else"}')
    with pytest.raises(cluster.ClusterError, match="faces.json"):
        cluster.make_function_secret(provisioned_cluster(), "facepipe", "openfaas-fn", bad)
    with pytest.raises(cluster.ClusterError, match="not a file"):
        cluster.make_function_secret(provisioned_cluster(), "facepipe", "openfaas-fn", tmp_path)


def test_function_secret_needs_the_generated_secrets() -> None:
    core = provisioned_cluster()
    del core.secrets[("facepipe", cluster.FUNCTION_AWS_SECRET)]
    with pytest.raises(cluster.ClusterError, match="facepipe-aws-function not found.*aws-function.env"):
        cluster.make_function_secret(core, "facepipe", "openfaas-fn", REPO / "data" / "known_faces.json")
    core = provisioned_cluster()
    del core.secrets[("facepipe", cluster.user_secret_name("facepipe-face-recognition"))]
    with pytest.raises(cluster.ClusterError, match="cephobjectstoreuser facepipe-face-recognition"):
        cluster.make_function_secret(core, "facepipe", "openfaas-fn", REPO / "data" / "known_faces.json")


def test_invalid_base64_in_a_secret_is_reported() -> None:
    core = provisioned_cluster()
    core.secrets[("facepipe", cluster.user_secret_name(cluster.WORKLOAD_USER))].data["AccessKey"] = "%%%"
    with pytest.raises(cluster.ClusterError, match="not valid base64"):
        cluster.read_user_keys(core, "facepipe", cluster.WORKLOAD_USER)


def test_a_refused_secret_is_reported_without_its_values() -> None:
    """The API server's answer is reduced to status, reason and message: an ApiException's
    text carries the response's headers and body, which could echo what was sent."""
    core = provisioned_cluster()
    echoed = json.dumps({"kind": "Status", "message": "admission webhook denied the request", "echo": "ZmFjZS1rZXk="})

    def refuse(namespace: str, body: V1Secret) -> V1Secret:
        raise ApiException(status=403, reason="Forbidden", http_resp=FakeResponse(403, "Forbidden", echoed))

    core.create_namespaced_secret = refuse
    with pytest.raises(cluster.ClusterError) as raised:
        cluster.make_function_secret(core, "facepipe", "openfaas-fn", None, function="image-classification")
    text = str(raised.value)
    assert text == (
        "cannot create Secret openfaas-fn/image-classification: 403 Forbidden: admission webhook denied the request"
    )
    assert "ZmFjZS1rZXk=" not in text and user_keys("facepipe-image-classification")[1] not in text


class FakeResponse:
    """What ApiException reads from a urllib3 response."""

    def __init__(self, status: int, reason: str, data: str) -> None:
        self.status, self.reason, self.data = status, reason, data.encode()
        self.headers = {"Audit-Id": "x"}

    def getheaders(self) -> dict[str, str]:
        return self.headers
