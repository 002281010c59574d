"""Least privilege on Kubernetes (#12 item 6): one RGW user per part of the pipeline, bucket
policies that give each exactly its share, and Secrets that reach only the part they belong to."""

from __future__ import annotations

import json
import re

import pytest

from facepipe_tools import cluster
from tests.deploy.deploylib import K8S, Manifest, find

POLICIES = K8S / "policies"
ROOK_POLICIES = POLICIES / "rook"
OWNER = cluster.OWNER_USER
FACE, IMAGES = (cluster.FUNCTIONS[name].rgw_user for name in ("face-recognition", "image-classification"))
NOTIFIER, WEB, WORKLOAD = cluster.NOTIFIER_USER, cluster.WEB_USER, cluster.WORKLOAD_USER

READ = {"s3:GetObject", "s3:ListBucket"}
UPLOAD = {"s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"}
#: What each user may do in each bucket, and nothing more. The notifier writes dead-letter
#: records to the output buckets (and withdraws one when a late result appeared); its topics
#: and notifications are Rook's (CephBucketTopic, CephBucketNotification), so it gets no
#: notification rights.
EXPECTED = {
    "facepipe-input": {FACE: READ, NOTIFIER: READ, WEB: UPLOAD | READ, WORKLOAD: UPLOAD | READ | {"s3:DeleteObject"}},
    "facepipe-output": {
        FACE: READ | {"s3:PutObject", "s3:DeleteObject"},
        NOTIFIER: READ | {"s3:PutObject", "s3:DeleteObject"},
        WEB: READ,
        WORKLOAD: READ | {"s3:DeleteObject"},
    },
}
EXPECTED["facepipe-images-input"] = {IMAGES if u == FACE else u: a for u, a in EXPECTED["facepipe-input"].items()}
EXPECTED["facepipe-images-output"] = {IMAGES if u == FACE else u: a for u, a in EXPECTED["facepipe-output"].items()}
#: The local bucket names (and the face function's local user) of the policies in k8s/policies/.
LOCAL_NAMES = {
    "facepipe-input": "input",
    "facepipe-output": "output",
    "facepipe-images-input": "images-input",
    "facepipe-images-output": "images-output",
    FACE: "facepipe-function",
}


def grants(policy: dict, bucket: str) -> dict[str, set[str]]:
    """user -> actions of an Allow-only bucket policy, each statement on exactly `bucket` and its objects."""
    granted: dict[str, set[str]] = {}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow", statement
        assert sorted(statement["Resource"]) == [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"], statement
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all("*" not in action for action in actions), statement
        for principal in statement["Principal"]["AWS"]:
            assert principal.startswith("arn:aws:iam:::user/"), principal
            granted.setdefault(principal.removeprefix("arn:aws:iam:::user/"), set()).update(actions)
    return granted


def rook_policy(bucket: str) -> dict:
    return json.loads((ROOK_POLICIES / f"rgw-{bucket}-bucket.json").read_text())


def claims(manifests: list[Manifest]) -> dict[str, Manifest]:
    return {m.doc["spec"]["bucketName"]: m for m in find(manifests, "ObjectBucketClaim")}


def test_one_rgw_user_per_part_and_only_the_owner_may_create_buckets(manifests: list[Manifest]) -> None:
    users = {m.name: m for m in find(manifests, "CephObjectStoreUser")}
    assert set(users) == {OWNER, NOTIFIER, FACE, IMAGES, WEB, WORKLOAD}
    for name, user in users.items():
        assert "capabilities" not in user.doc["spec"], f"{name}: no admin capabilities"
        if name != OWNER:
            assert user.doc["spec"]["quotas"]["maxBuckets"] == -1, name


@pytest.mark.parametrize("bucket", sorted(EXPECTED))
def test_each_bucket_grants_each_user_exactly_its_share(manifests: list[Manifest], bucket: str) -> None:
    claim = claims(manifests)[bucket]
    inline = json.loads(claim.doc["spec"]["additionalConfig"]["bucketPolicy"])
    assert inline == rook_policy(bucket), f"{claim}: bucketPolicy differs from k8s/policies/rook/"
    assert grants(inline, bucket) == EXPECTED[bucket]
    assert claim.doc["spec"]["additionalConfig"]["bucketOwner"] == OWNER


def test_the_rook_policies_are_the_local_ones_with_the_cluster_names() -> None:
    """k8s/policies/rgw-<local bucket>-bucket.json (applied to a real RGW by the integration
    tests) and k8s/policies/rook/ grant the same, bucket and user names aside."""
    assert sorted(p.name for p in ROOK_POLICIES.glob("*.json")) == sorted(f"rgw-{b}-bucket.json" for b in EXPECTED)
    for bucket in EXPECTED:
        local_bucket = LOCAL_NAMES[bucket]
        local = json.loads((POLICIES / f"rgw-{local_bucket}-bucket.json").read_text())
        local_grants = grants(local, local_bucket)
        assert {LOCAL_NAMES.get(user, user): actions for user, actions in EXPECTED[bucket].items()} == local_grants


def _secret_refs(pod_spec: dict) -> set[str]:
    refs = set()
    for container in pod_spec["containers"]:
        refs |= {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
        refs |= {
            v["valueFrom"]["secretKeyRef"]["name"]
            for v in container.get("env", [])
            if "secretKeyRef" in v.get("valueFrom", {})
        }
    refs |= {v["secret"]["secretName"] for v in pod_spec.get("volumes", []) if "secret" in v}
    return refs


def test_each_workload_gets_only_its_own_secrets(manifests: list[Manifest]) -> None:
    """No pod gets the buckets' owner's keys (every claim's Secret), another part's keys, or
    the token unless it checks notifications."""
    used = {
        m.name: _secret_refs(m.doc["spec"]["template"]["spec"])
        for m in find(manifests, "Deployment") + find(manifests, "Job")
    }
    assert used == {
        "notifier": {cluster.user_secret_name(NOTIFIER), cluster.TOKEN_SECRET},
        "upload-data": {cluster.UPLOAD_AWS_SECRET},
    }


def test_every_function_of_the_stack_has_a_user_and_a_secret_of_its_own(stack: dict) -> None:
    assert set(cluster.FUNCTIONS) == set(stack["functions"])
    for name, function in stack["functions"].items():
        assert function["secrets"] == [cluster.FUNCTIONS[name].name], name
    assert len({spec.rgw_user for spec in cluster.FUNCTIONS.values()}) == len(cluster.FUNCTIONS)


def test_no_secret_value_is_passed_on_a_command_line_in_the_docs() -> None:
    """kubectl reads secrets from files or stdin (`--from-env-file`, `--from-file`), never
    `--from-literal` or `--docker-password`, which leave them in the shell history and in `ps`."""
    repo = K8S.parent
    texts = {
        path: path.read_text()
        for path in [*repo.glob("*.md"), *(repo / "docs").glob("*.md"), *(repo / "facepipe_tools").rglob("*.py")]
    }
    used = re.compile(r"--(?:from-literal|docker-password)(?:=|\s+\w)")
    assert not [path for path, text in texts.items() if used.search(text)]
