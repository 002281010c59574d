"""The AWS IAM policies in the README are enough, and no more: the function reads the
students table with `dynamodb:GetItem` only; upload_data needs DescribeTable, CreateTable and
BatchWriteItem. Checked against a moto server that enforces IAM (INITIAL_NO_AUTH_ACTION_COUNT:
the first requests set up the users, every later one is authorised). moto matches policy
actions but not resource ARNs for DynamoDB, so the README's one-table Resource is replaced
by "*" here; the Resource line itself is checked to name exactly the students table.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from facepipe.clients import dynamodb_client
from facepipe.faces.students import StudentDirectory
from facepipe.settings import Settings
from facepipe.upload_students import upload

REPO = Path(__file__).resolve().parents[2]
SETUP_ACTIONS = 6  # two users: create_user, put_user_policy, create_access_key each


def readme_policy(name: str) -> dict:
    """The JSON block that follows `<!-- iam-policy: name -->` in the README."""
    text = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- iam-policy: {re.escape(name)} -->\s*```json\n(.*?)```", text, re.S)
    assert match, f"README has no IAM policy block marked {name!r}"
    return json.loads(match[1])


@pytest.fixture(scope="module")
def moto_iam_url() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_ACTIONS)}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)


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
        iam.put_user_policy(UserName=user, PolicyName=user, PolicyDocument=json.dumps(_as_tested(readme_policy(user))))
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
        for statement in readme_policy(name)["Statement"]:
            assert statement["Effect"] == "Allow"
            assert re.fullmatch(r"arn:aws:dynamodb:[a-z0-9-]+:\d{12}:table/students", statement["Resource"])
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert all(action.startswith("dynamodb:") and "*" not in action for action in actions)
    assert readme_policy("function")["Statement"][0]["Action"] == "dynamodb:GetItem"


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
