"""Student records from DynamoDB, cached per process."""

from __future__ import annotations

import threading
import time

from facepipe import logs
from facepipe.answers import Student
from facepipe.clients import dynamodb_client
from facepipe.settings import Settings

log = logs.get("facepipe.students")


class StudentDirectory:
    """Looks people up by name (the table's partition key); caches answers for `ttl_s`."""

    def __init__(self, settings: Settings, client=None):
        self.table = settings.students_table
        self.ttl_s = settings.student_cache_ttl_s
        self._client = client or dynamodb_client(settings)
        self._cache: dict[str, tuple[float, Student | None]] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Student | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(name)
        if cached and cached[0] > now:
            return cached[1]
        response = self._client.get_item(TableName=self.table, Key={"name": {"S": name}})
        item = response.get("Item")
        student = None
        if item is not None:
            student = Student(
                name=item["name"]["S"],
                major=_text(item.get("major")),
                year=_text(item.get("year")),
            )
        with self._lock:
            self._cache[name] = (now + self.ttl_s, student)
        return student

    def lookup(self, names: list[str]) -> list[Student]:
        """A row per name, in the given order; a known face without a record gets empty fields."""
        rows = []
        for name in names:
            student = self.get(name)
            if student is None:
                log.warning("no student record", person=name, table=self.table)
                student = Student(name)
            rows.append(student)
        return rows


def _text(value: dict | None) -> str:
    if not value:
        return ""
    if "S" in value:
        return value["S"]
    if "N" in value:
        return value["N"]
    return ""
