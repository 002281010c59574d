"""upload_data.py: table creation, batch loading, validation of the student file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from facepipe import upload_students
from facepipe.settings import Settings
from facepipe.upload_students import DataError, ensure_table, load_students, upload, write_students
from facepipe_tools.stack import free_port

REPO = Path(__file__).resolve().parents[2]
SETTINGS = Settings(aws_region="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def dynamodb():
    with mock_aws():
        yield boto3.client(
            "dynamodb", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
        )


def write_json(tmp_path: Path, data, name: str = "students.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


STUDENTS = [
    {"id": 1, "name": "grace_hopper", "major": "computer_science", "year": "senior"},
    {"id": 2, "name": "eileen_collins", "major": "aerospace_engineering", "year": "junior"},
]


def test_creates_the_table_and_loads_items_twice_safely(dynamodb, tmp_path):
    path = write_json(tmp_path, STUDENTS)
    assert upload(SETTINGS, path, client=dynamodb) == (2, True)
    assert upload(SETTINGS, path, client=dynamodb) == (2, False)
    table = dynamodb.describe_table(TableName="students")["Table"]
    assert table["KeySchema"] == [{"AttributeName": "name", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    item = dynamodb.get_item(TableName="students", Key={"name": {"S": "grace_hopper"}})["Item"]
    assert item == {
        "name": {"S": "grace_hopper"},
        "id": {"N": "1"},
        "major": {"S": "computer_science"},
        "year": {"S": "senior"},
    }
    assert dynamodb.scan(TableName="students")["Count"] == 2


def test_more_than_one_batch(dynamodb):
    students = [{"id": i, "name": f"p{i}", "major": "m", "year": "y"} for i in range(60)]
    ensure_table(dynamodb, "students")
    assert write_students(dynamodb, "students", students) == 60
    assert dynamodb.scan(TableName="students", Select="COUNT")["Count"] == 60


def test_unprocessed_items_are_sent_again():
    class Throttled:
        """Leaves every item but the first of its first request unprocessed."""

        def __init__(self):
            self.calls = []

        def batch_write_item(self, RequestItems):
            self.calls.append(RequestItems)
            if len(self.calls) == 1:
                return {"UnprocessedItems": {"t": RequestItems["t"][1:]}}
            return {"UnprocessedItems": {}}

    client = Throttled()
    students = [{"id": i, "name": f"p{i}", "major": "m", "year": "y"} for i in range(30)]
    assert write_students(client, "t", students) == 30
    sent = [[request["PutRequest"]["Item"]["name"]["S"] for request in call["t"]] for call in client.calls]
    assert [len(names) for names in sent] == [25, 25, 4]
    # The 24 left over go out again, with the 5 not sent yet: every student exactly once in the end.
    assert sorted(sent[0][:1] + sent[1] + sent[2]) == sorted(s["name"] for s in students)


def test_existing_table_with_another_key_is_an_error(dynamodb):
    dynamodb.create_table(
        TableName="students",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "N"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    with pytest.raises(DataError, match="expected partition key 'name'"):
        ensure_table(dynamodb, "students")


def test_cse546_student_file_is_valid(cse546: Path):
    assert len(load_students(cse546 / "student_data.json")) == 8


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "not valid JSON"),
        ("[{]", "not valid JSON: .* line 1"),
        ('{"id": 1}', "expected a JSON list"),
        ("[1]", "item 0: expected an object"),
        ('[{"id": 1, "name": "a", "major": "m"}]', "item 0: missing year"),
        ('[{"id": "1", "name": "a", "major": "m", "year": "y"}]', "'id' must be an integer"),
        ('[{"id": true, "name": "a", "major": "m", "year": "y"}]', "'id' must be an integer"),
        ('[{"id": 1, "name": " ", "major": "m", "year": "y"}]', "'name' must be a non-empty string"),
        ('[{"id": 1, "name": "a", "major": null, "year": "y"}]', "'major' must be a string"),
        (
            '[{"id": 1, "name": "a", "major": "m", "year": "y"}, {"id": 2, "name": "a", "major": "m", "year": "y"}]',
            "item 1: name 'a' already used by item 0",
        ),
    ],
)
def test_malformed_files_are_clear_errors(tmp_path, content, message):
    with pytest.raises(DataError, match=message):
        load_students(write_json(tmp_path, content))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_students(tmp_path / "nope.json")


def test_numeric_year_is_stored_as_text(tmp_path):
    students = load_students(write_json(tmp_path, [{"id": 7, "name": "x", "major": "m", "year": 2024}]))
    assert students == [{"id": 7, "name": "x", "major": "m", "year": "2024"}]


def test_main_reports_a_bad_file_without_a_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FACEPIPE_ENV_FILE", str(tmp_path / "none.env"))
    assert upload_students.main(["--file", str(write_json(tmp_path, "[{"))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not valid JSON" in err and "Traceback" not in err


def script_env(tmp_path, endpoint: str, **extra: str) -> dict[str, str]:
    """A bare environment for upload_data.py: no .env, no secrets, this DynamoDB endpoint."""
    return {
        "PATH": "/usr/bin:/bin",
        "FACEPIPE_ENV_FILE": str(tmp_path / "none.env"),
        "SECRETS_DIR": str(tmp_path),
        "DYNAMODB_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        **extra,
    }


def test_script_against_a_dynamodb_server(tmp_path, moto_endpoint):
    env = script_env(tmp_path, moto_endpoint, STUDENTS_TABLE="people")
    script = [sys.executable, str(REPO / "data" / "upload_data.py"), "--file", str(write_json(tmp_path, STUDENTS))]
    first = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
    second = subprocess.run(script, env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "2 students written to created table 'people'" in first.stdout
    assert second.returncode == 0 and "existing table 'people'" in second.stdout


def test_script_with_unreachable_endpoint_is_a_clear_error(tmp_path):
    port = free_port()
    env = script_env(tmp_path, f"http://127.0.0.1:{port}")
    script = [sys.executable, str(REPO / "data" / "upload_data.py"), "--file", str(write_json(tmp_path, STUDENTS))]
    result = subprocess.run(script, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert f"error: DynamoDB at http://127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
