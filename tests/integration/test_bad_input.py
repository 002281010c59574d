"""The bad-input suite of `make chaos` against a real stack of its own (the built-in sample,
with only Grace Hopper known so that Eileen Collins is an unknown face): every case gets a
clear answer, the service keeps serving, and nothing is left behind."""

from __future__ import annotations

import contextlib
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from facepipe.clients import s3_client
from facepipe_tools.chaos import (
    BadInputContext,
    CaseResult,
    ChaosStack,
    StackClient,
    bad_input_cases,
    bad_input_table,
    check_no_leftovers,
    new_chaos_stack,
    prepare_bad_inputs,
    run_bad_inputs,
)
from facepipe_tools.paths import REPO_ROOT
from facepipe_tools.sample import photo

pytestmark = pytest.mark.integration

#: Above every legitimate test file (the slow-decode clip is about 5 MB).
MAX_OBJECT_BYTES = 8 * 1024 * 1024
MAX_FRAMES = 30
KNOWN = "grace_hopper"


@pytest.fixture(scope="module")
def bad_stack(tmp_path_factory: pytest.TempPathFactory, start_stack) -> ChaosStack:
    state = tmp_path_factory.mktemp("bad-input")
    faces = json.loads((REPO_ROOT / "data" / "known_faces.json").read_text())
    faces["faces"] = [face for face in faces["faces"] if face["name"] == KNOWN]
    known_faces = state.parent / f"{state.name}-known.json"
    known_faces.write_text(json.dumps(faces))
    return start_stack(
        new_chaos_stack(
            state,
            known_faces,
            REPO_ROOT / "data" / "student_data.json",
            extra_env={"MAX_OBJECT_BYTES": str(MAX_OBJECT_BYTES), "MAX_FRAMES": str(MAX_FRAMES)},
            log=lambda line: print(f"bad-input stack: {line}"),
        )
    )


@pytest.fixture(scope="module")
def outcomes(
    bad_stack: ChaosStack, sample_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, CaseResult]:
    ctx = BadInputContext(
        StackClient(bad_stack),
        tmp_path_factory.mktemp("bad-input-media"),
        [sample_dir / "sample_hopper.mp4"],
        photo("eileen_collins"),
        max_object_bytes=MAX_OBJECT_BYTES,
        max_frames=MAX_FRAMES,
    )
    prepare_bad_inputs(ctx)
    assert ctx.ref_people == [KNOWN]
    cases = bad_input_cases()
    results = run_bad_inputs(ctx, cases)
    ctx.client.wait_idle(120)
    uploads = len(ctx.ref_clips) + sum(1 for case in cases if case.key)
    results.append(check_no_leftovers(bad_stack, uploads))
    print("\n" + bad_input_table(results))
    return {result.name: result for result in results}


CASES = [case.name for case in bad_input_cases()] + ["still-serving", "no-leftovers"]


def test_at_least_fifty_kinds() -> None:
    assert len(bad_input_cases()) >= 50


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_handled(name: str, outcomes: dict[str, CaseResult]) -> None:
    result = outcomes[name]
    assert result.passed, f"{name} ({result.what}): {result.detail}"


def bucket_policy(bucket: str) -> dict:
    """The documented RGW bucket policy of the `input` or `output` bucket (k8s/policies/)."""
    return json.loads((REPO_ROOT / "k8s" / "policies" / f"rgw-{bucket}-bucket.json").read_text())


def rgw_user(stack: ChaosStack, uid: str) -> dict[str, str]:
    """A new RGW user that may not create buckets; its S3 key pair."""

    def admin(*args: str) -> str:
        done = subprocess.run(
            ["radosgw-admin", "-c", str(stack.conf_path), *args],
            env=stack.child_env(), capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return done.stdout

    info = json.loads(admin("user", "create", "--uid", uid, "--display-name", uid))
    admin("user", "modify", "--uid", uid, "--max-buckets", "-1")
    return info["keys"][0]


def test_least_privilege_rgw_policies(bad_stack: ChaosStack) -> None:
    """The documented bucket policies on this RGW: each user can do its part and nothing else."""
    settings = bad_stack.settings()
    owner = s3_client(settings)
    users = {uid: rgw_user(bad_stack, uid) for uid in ("facepipe-function", "facepipe-notifier")}
    clients = {
        uid: s3_client(replace(settings, s3_access_key_id=key["access_key"], s3_secret_access_key=key["secret_key"]))
        for uid, key in users.items()
    }
    fn, notifier = clients["facepipe-function"], clients["facepipe-notifier"]
    inp, out = settings.input_bucket, settings.output_bucket
    # The pipeline answers this one too (an error record); the answer probed below has its own key.
    owner.put_object(Bucket=inp, Key="policy-probe.mp4", Body=b"video")
    try:
        for bucket in (inp, out):
            owner.put_bucket_policy(Bucket=bucket, Policy=json.dumps(bucket_policy(bucket)))

        def status(call) -> int:
            try:
                call()
            except ClientError as exc:
                return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            return 200

        allowed = {
            "function HEAD video": lambda: fn.head_object(Bucket=inp, Key="policy-probe.mp4"),
            "function GET video": lambda: fn.get_object(Bucket=inp, Key="policy-probe.mp4"),
            "function PUT answer": lambda: fn.put_object(Bucket=out, Key="policy-answer.csv", Body=b"x"),
            "function HEAD answer": lambda: fn.head_object(Bucket=out, Key="policy-answer.csv"),
            "function LIST answers": lambda: fn.list_objects_v2(Bucket=out, Prefix="policy-answer."),
            "function DELETE answer": lambda: fn.delete_object(Bucket=out, Key="policy-answer.error.json"),
            "notifier LIST input": lambda: notifier.list_objects_v2(Bucket=inp),
            "notifier LIST output": lambda: notifier.list_objects_v2(Bucket=out),
            "notifier DELETE answer": lambda: notifier.delete_object(Bucket=out, Key="policy-dead.error.json"),
            "notifier HEAD answer": lambda: notifier.head_object(Bucket=out, Key="policy-answer.csv"),
            "notifier GET video": lambda: notifier.get_object(Bucket=inp, Key="policy-probe.mp4"),
            "notifier PUT answer": lambda: notifier.put_object(Bucket=out, Key="policy-dead.error.json", Body=b"x"),
        }
        denied = {
            "function PUT video": lambda: fn.put_object(Bucket=inp, Key="x.mp4", Body=b"x"),
            "function DELETE video": lambda: fn.delete_object(Bucket=inp, Key="policy-probe.mp4"),
            "function create bucket": lambda: fn.create_bucket(Bucket="function-own"),
            "function notification": lambda: fn.get_bucket_notification_configuration(Bucket=inp),
            "notifier PUT video": lambda: notifier.put_object(Bucket=inp, Key="x.mp4", Body=b"x"),
            "notifier DELETE video": lambda: notifier.delete_object(Bucket=inp, Key="policy-probe.mp4"),
        }
        missing = {  # 404, not 403: what the function relies on to tell "not there"
            "function HEAD missing video": lambda: fn.head_object(Bucket=inp, Key="nope.mp4"),
            "function HEAD missing answer": lambda: fn.head_object(Bucket=out, Key="nope.csv"),
        }
        got = {name: status(call) for name, call in {**allowed, **denied, **missing}.items()}
        assert {name: got[name] for name in allowed if got[name] != 200} == {}, got
        assert {name: got[name] for name in denied if got[name] != 403} == {}, got
        assert {name: got[name] for name in missing if got[name] != 404} == {}, got
    finally:
        for bucket in (inp, out):
            with contextlib.suppress(ClientError):
                owner.delete_bucket_policy(Bucket=bucket)
        for bucket, key in ((out, "policy-answer.csv"), (inp, "policy-probe.mp4"), (out, "policy-probe.error.json")):
            owner.delete_object(Bucket=bucket, Key=key)
