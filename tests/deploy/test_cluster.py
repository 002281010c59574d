"""facepipe_tools.cluster against fake Kubernetes API objects (no cluster)."""

from __future__ import annotations

import base64
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


def claim_objects(name: str, bucket: str, key_id: str = "OWNERKEY", secret: str = "owner/secret+key") -> dict:
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
        data={"AWS_ACCESS_KEY_ID": _b64(key_id), "AWS_SECRET_ACCESS_KEY": _b64(secret)},
    )
    return {"config_map": config_map, "secret": secret_obj}


def provisioned_cluster(output_key_id: str = "OWNERKEY") -> FakeCoreV1:
    inp = claim_objects(cluster.INPUT_CLAIM, "facepipe-input")
    out = claim_objects(cluster.OUTPUT_CLAIM, "facepipe-output", key_id=output_key_id)
    aws = V1Secret(data={"AWS_ACCESS_KEY_ID": _b64("AWSKEY"), "AWS_SECRET_ACCESS_KEY": _b64("aws-secret")})
    token = V1Secret(data={"NOTIFY_TOKEN": _b64("the-token")})
    return FakeCoreV1(
        config_maps={
            ("facepipe", cluster.INPUT_CLAIM): inp["config_map"],
            ("facepipe", cluster.OUTPUT_CLAIM): out["config_map"],
        },
        secrets={
            ("facepipe", cluster.INPUT_CLAIM): inp["secret"],
            ("facepipe", cluster.OUTPUT_CLAIM): out["secret"],
            ("facepipe", cluster.AWS_SECRET): aws,
            ("facepipe", cluster.TOKEN_SECRET): token,
        },
    )


def test_read_claim_decodes_what_rook_generated() -> None:
    claim = cluster.read_claim(provisioned_cluster(), "facepipe", cluster.INPUT_CLAIM)
    assert claim == cluster.BucketClaim(
        name="facepipe-input",
        bucket="facepipe-input",
        host="rook-ceph-rgw-facepipe-store.rook-ceph.svc",
        port=80,
        region="us-east-1",
        access_key_id="OWNERKEY",
        secret_access_key="owner/secret+key",
    )
    assert claim.endpoint_url == "http://rook-ceph-rgw-facepipe-store.rook-ceph.svc:80"


def test_an_unprovisioned_claim_is_explained() -> None:
    with pytest.raises(cluster.ClusterError, match="not provisioned yet.*get objectbucketclaim facepipe-input"):
        cluster.read_claim(FakeCoreV1(), "facepipe", cluster.INPUT_CLAIM)


def test_a_config_map_without_the_bucket_fields_is_reported() -> None:
    core = provisioned_cluster()
    core.config_maps[("facepipe", cluster.INPUT_CLAIM)].data.pop("BUCKET_NAME")
    with pytest.raises(cluster.ClusterError, match="lacks BUCKET_NAME"):
        cluster.read_claim(core, "facepipe", cluster.INPUT_CLAIM)


def test_env_values_and_the_dotenv_text_round_trip(tmp_path: Path) -> None:
    core = provisioned_cluster()
    values = cluster.env_values(
        cluster.read_claim(core, "facepipe", cluster.INPUT_CLAIM),
        cluster.read_claim(core, "facepipe", cluster.OUTPUT_CLAIM),
        s3_endpoint="http://127.0.0.1:8081",
    )
    assert values == {
        "S3_ENDPOINT_URL": "http://127.0.0.1:8081",
        "S3_ACCESS_KEY_ID": "OWNERKEY",
        "S3_SECRET_ACCESS_KEY": "owner/secret+key",
        "S3_REGION": "us-east-1",
        "INPUT_BUCKET": "facepipe-input",
        "OUTPUT_BUCKET": "facepipe-output",
    }
    path = tmp_path / "cluster.env"
    path.write_text(cluster.render_env({**values, "ODD": 'a "quoted" \\ value'}))
    assert dotenv_values(path) == {**values, "ODD": 'a "quoted" \\ value'}


def test_buckets_with_different_owners_are_refused() -> None:
    core = provisioned_cluster(output_key_id="OTHERKEY")
    with pytest.raises(cluster.ClusterError, match="bucketOwner"):
        cluster.env_values(
            cluster.read_claim(core, "facepipe", cluster.INPUT_CLAIM),
            cluster.read_claim(core, "facepipe", cluster.OUTPUT_CLAIM),
        )


def test_main_env_writes_a_private_file(tmp_path: Path, capsys) -> None:
    output = tmp_path / ".env.cluster"
    code = cluster.main(
        ["env", "--s3-endpoint", "http://127.0.0.1:8081", "-o", str(output)], core=provisioned_cluster()
    )
    assert code == 0
    assert dotenv_values(output)["INPUT_BUCKET"] == "facepipe-input"
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    printed = capsys.readouterr().out
    assert "owner/secret+key" not in printed and "OWNERKEY" not in printed


def test_main_reports_missing_claims_without_a_traceback(capsys) -> None:
    assert cluster.main(["env", "-o", "-"], core=FakeCoreV1()) == 1
    assert capsys.readouterr().err.startswith("error: ConfigMap facepipe/facepipe-input not found")


def test_function_secret_is_created_then_updated(tmp_path: Path) -> None:
    core = provisioned_cluster()
    known_faces = REPO / "data" / "known_faces.json"
    assert cluster.make_function_secret(core, "facepipe", "openfaas-fn", known_faces) == "created"
    secret = core.secrets[("openfaas-fn", cluster.FUNCTION_SECRET)]
    decoded = {key: base64.b64decode(value) for key, value in secret.data.items()}
    assert set(decoded) == {*SECRET_NAMES.values(), cluster.KNOWN_FACES_KEY}
    assert decoded[SECRET_NAMES["S3_ACCESS_KEY_ID"]] == b"OWNERKEY"
    assert decoded[SECRET_NAMES["S3_SECRET_ACCESS_KEY"]] == b"owner/secret+key"
    assert decoded[SECRET_NAMES["AWS_ACCESS_KEY_ID"]] == b"AWSKEY"
    assert decoded[SECRET_NAMES["AWS_SECRET_ACCESS_KEY"]] == b"aws-secret"
    assert decoded[SECRET_NAMES["NOTIFY_TOKEN"]] == b"the-token"
    assert decoded[cluster.KNOWN_FACES_KEY] == known_faces.read_bytes()
    assert secret.metadata.labels["app.kubernetes.io/managed-by"] == "openfaas"
    assert cluster.make_function_secret(core, "facepipe", "openfaas-fn", known_faces) == "updated"
    assert core.calls[-1] == "replace openfaas-fn/face-recognition"


def test_function_secret_checks_the_known_faces_file(tmp_path: Path) -> None:
    bad = tmp_path / "faces.json"
    bad.write_text('{"format": "something-else"}')
    with pytest.raises(cluster.ClusterError, match="faces.json"):
        cluster.make_function_secret(provisioned_cluster(), "facepipe", "openfaas-fn", bad)
    with pytest.raises(cluster.ClusterError, match="not a file"):
        cluster.make_function_secret(provisioned_cluster(), "facepipe", "openfaas-fn", tmp_path)


def test_function_secret_needs_the_generated_secrets() -> None:
    core = provisioned_cluster()
    del core.secrets[("facepipe", cluster.AWS_SECRET)]
    with pytest.raises(cluster.ClusterError, match="facepipe-aws not found.*aws.env"):
        cluster.make_function_secret(core, "facepipe", "openfaas-fn", REPO / "data" / "known_faces.json")


def test_invalid_base64_in_a_secret_is_reported() -> None:
    core = provisioned_cluster()
    core.secrets[("facepipe", cluster.INPUT_CLAIM)].data["AWS_ACCESS_KEY_ID"] = "%%%"
    with pytest.raises(cluster.ClusterError, match="not valid base64"):
        cluster.read_claim(core, "facepipe", cluster.INPUT_CLAIM)
