"""The AWS IAM policies in k8s/policies/ are enough, and no more: the function reads the
students table with `dynamodb:GetItem` only; upload_data needs DescribeTable, CreateTable and
BatchWriteItem. Checked against a moto server that enforces IAM (INITIAL_NO_AUTH_ACTION_COUNT:
the first requests set up the users, every later one is authorised). moto matches policy
actions but not resource ARNs for DynamoDB, so the policies' one-table Resource is replaced
by "*" here; the Resource line itself is checked to name exactly the students table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from facepipe.clients import dynamodb_client
from facepipe.faces.students import StudentDirectory
from facepipe.settings import Settings
from facepipe.upload_students import upload
from tests.aws import moto_server

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "k8s" / "policies"
SETUP_ACTIONS = 6  # two users: create_user, put_user_policy, create_access_key each


def iam_policy(name: str) -> dict:
    """The IAM policy document k8s/policies/iam-<name>.json, as documented and applied."""
    return json.loads((POLICIES / f"iam-{name}.json").read_text())


@pytest.fixture(scope="module")
def moto_iam_url() -> Iterator[str]:
    """A moto server that enforces IAM after the first SETUP_ACTIONS requests."""
    with moto_server({"INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_ACTIONS)}) as url:
        yield url


def _as_tested(policy: dict) -> dict:
    statements = [{**statement, "Resource": "*"} for statement in policy["Statement"]]
    return {**policy, "Statement": statements}


@pytest.fixture(scope="module")
def principals(moto_iam_url: str) -> dict[str, Settings]:
    """Settings (credentials) for the function's and upload_data's IAM users."""
    iam = boto3.client(
        "iam", endpoint_url=moto_iam_url, region_name="us-east-1", aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )  # fmt: skip
    found = {}
    for user in ("function", "upload-data"):
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName=user, PolicyDocument=json.dumps(_as_tested(iam_policy(user))))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        found[user] = Settings(
            dynamodb_endpoint_url=moto_iam_url,
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
            students_table="students",
        )
    return found


def _denied(call) -> bool:
    try:
        call()
    except ClientError as exc:
        return "AccessDenied" in str(exc) or exc.response.get("Error", {}).get("Code") in ("403", "AccessDenied")
    return False


def test_policies_name_one_table_and_no_wildcard_action() -> None:
    for name in ("function", "upload-data"):
        for statement in iam_policy(name)["Statement"]:
            assert statement["Effect"] == "Allow"
            assert re.fullmatch(r"arn:aws:dynamodb:[a-z0-9-]+:\d{12}:table/students", statement["Resource"])
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all(action.startswith("dynamodb:") and "*" not in action for action in actions)
    assert iam_policy("function")["Statement"][0]["Action"] == "dynamodb:GetItem"


def test_every_policy_file_is_an_allow_only_policy_document() -> None:
    """All six files (the face buckets' RGW policies are applied to a real RGW in test_bad_input)."""
    files = sorted(path.name for path in POLICIES.glob("*.json"))
    assert files == [
        "iam-function.json", "iam-upload-data.json", "rgw-images-input-bucket.json", "rgw-images-output-bucket.json",
        "rgw-input-bucket.json", "rgw-output-bucket.json",
    ]  # fmt: skip
    for name in files:
        policy = json.loads((POLICIES / name).read_text())
        assert policy["Version"] == "2012-10-17", name
        assert policy["Statement"] and all(statement["Effect"] == "Allow" for statement in policy["Statement"]), name


def test_upload_data_works_with_its_policy(principals: dict[str, Settings]) -> None:
    count, _created = upload(principals["upload-data"], REPO / "data" / "student_data.json")
    assert count >= 2


def test_function_reads_students_with_get_item_only(principals: dict[str, Settings]) -> None:
    upload(principals["upload-data"], REPO / "data" / "student_data.json")
    people = StudentDirectory(principals["function"]).lookup(["grace_hopper"])
    assert (people[0].major, people[0].year) == ("computer_science", "senior")


def test_function_can_do_nothing_else(principals: dict[str, Settings]) -> None:
    settings = principals["function"]
    client = dynamodb_client(settings)
    assert _denied(lambda: client.put_item(TableName="students", Item={"name": {"S": "mallory"}}))
    assert _denied(lambda: client.scan(TableName="students"))
    assert _denied(lambda: client.delete_table(TableName="students"))
    assert _denied(lambda: upload(settings, REPO / "data" / "student_data.json"))


def test_upload_data_cannot_read_or_delete(principals: dict[str, Settings]) -> None:
    settings = principals["upload-data"]
    client = dynamodb_client(settings)
    assert _denied(lambda: client.get_item(TableName="students", Key={"name": {"S": "grace_hopper"}}))
    assert _denied(lambda: client.delete_table(TableName="students"))
