"""Create the students table (partition key `name`) if missing and load `student_data.json` into it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from boto3.dynamodb.table import BatchWriter
from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from facepipe.clients import dynamodb_client
from facepipe.settings import Settings, SettingsError, load_settings

DEFAULT_FILE = Path("data") / "student_data.json"


class DataError(ValueError):
    """The student file is unreadable or malformed; the message names the file and the item."""


def load_students(path: str | Path) -> list[dict]:
    """Read and validate the JSON list of {id, name, major, year}; names must be unique."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of students, got {type(data).__name__}")
    students: list[dict] = []
    first_seen: dict[str, int] = {}
    for index, item in enumerate(data):
        where = f"{path}: item {index}"
        if not isinstance(item, dict):
            raise DataError(f"{where}: expected an object with id, name, major, year")
        missing = [field for field in ("id", "name", "major", "year") if field not in item]
        if missing:
            raise DataError(f"{where}: missing {', '.join(missing)}")
        student_id, name, major, year = item["id"], item["name"], item["major"], item["year"]
        if isinstance(student_id, bool) or not isinstance(student_id, int):
            raise DataError(f"{where}: 'id' must be an integer, not {student_id!r}")
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{where}: 'name' must be a non-empty string")
        for field, value in (("major", major), ("year", year)):
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise DataError(f"{where}: {field!r} must be a string, not {value!r}")
        name = name.strip()
        if name in first_seen:
            raise DataError(f"{where}: name {name!r} already used by item {first_seen[name]}")
        first_seen[name] = index
        students.append({"id": student_id, "name": name, "major": str(major).strip(), "year": str(year).strip()})
    return students


def ensure_table(client, table: str, wait_s: float = 120.0) -> bool:
    """Create `table` (partition key `name`, on demand) unless it exists; wait until active. True if created."""
    created = False
    try:
        description = client.describe_table(TableName=table)["Table"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        try:
            client.create_table(
                TableName=table,
                AttributeDefinitions=[{"AttributeName": "name", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": "name", "KeyType": "HASH"}],
                BillingMode="PAY_PER_REQUEST",
            )
            created = True
        except ClientError as create_exc:
            if create_exc.response.get("Error", {}).get("Code") != "ResourceInUseException":
                raise
    else:
        key_schema = [(k["AttributeName"], k["KeyType"]) for k in description.get("KeySchema", [])]
        if key_schema != [("name", "HASH")]:
            raise DataError(f"table {table!r} exists with key {key_schema}, expected partition key 'name' only")
    client.get_waiter("table_exists").wait(
        TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": max(1, int(wait_s))}
    )
    return created


def _item(student: dict) -> dict:
    return {
        "name": {"S": student["name"]},
        "id": {"N": str(student["id"])},
        "major": {"S": student["major"]},
        "year": {"S": student["year"]},
    }


def write_students(client, table: str, students: list[dict]) -> int:
    """Write every student (an existing item with the same name is replaced); returns the count.

    boto3's batch writer, the one the resource API's `Table.batch_writer()` returns, here on
    the low-level client that `dynamodb_client` configured: 25 items per request, and the
    items DynamoDB leaves unprocessed go out again with the next request."""
    with BatchWriter(table, client) as batch:
        for student in students:
            batch.put_item(Item=_item(student))
    return len(students)


def upload(settings: Settings, path: str | Path, client=None) -> tuple[int, bool]:
    """Validate the file, make sure the table exists, write the items: (count, table created)."""
    students = load_students(path)
    client = client if client is not None else dynamodb_client(settings)
    created = ensure_table(client, settings.students_table)
    return write_students(client, settings.students_table, students), created


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="upload_data.py", description="Create the students table if missing and load the student data."
    )
    parser.add_argument("--file", default=str(DEFAULT_FILE), help=f"JSON list of students (default {DEFAULT_FILE})")
    args = parser.parse_args(argv)
    settings = None
    try:
        settings = load_settings()
        count, created = upload(settings, args.file)
    except (DataError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError, WaiterError) as exc:
        endpoint = (settings and settings.dynamodb_endpoint_url) or "AWS"
        print(f"error: DynamoDB at {endpoint}: {exc}", file=sys.stderr)
        return 1
    state = "created" if created else "existing"
    print(f"{count} students written to {state} table {settings.students_table!r} from {args.file}")
    return 0
