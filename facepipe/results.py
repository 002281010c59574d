"""The result format: `name,major,year` CSV, and the JSON error record."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

CSV_HEADER = ("name", "major", "year")


@dataclass(frozen=True)
class Student:
    name: str
    major: str = ""
    year: str = ""


def render_csv(students: list[Student]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for student in students:
        writer.writerow((student.name, student.major, student.year))
    return buffer.getvalue()


def parse_csv(text: str) -> list[Student]:
    """Parse a result CSV; raise ValueError if the header is not `name,major,year`."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(cell.strip() for cell in rows[0]) != CSV_HEADER:
        raise ValueError("result CSV does not start with the header name,major,year")
    students = []
    for row in rows[1:]:
        if not row:
            continue
        if len(row) != 3:
            raise ValueError(f"result CSV row has {len(row)} fields, expected 3: {row!r}")
        students.append(Student(*(cell.strip() for cell in row)))
    return students


def render_error(key: str, error: str, detail: str) -> str:
    return json.dumps({"key": key, "error": error, "detail": detail}, ensure_ascii=False, indent=1) + "\n"


def parse_error(text: str) -> dict:
    record = json.loads(text)
    if not isinstance(record, dict) or "error" not in record:
        raise ValueError("error record has no 'error' field")
    return record
