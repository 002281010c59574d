"""An output bucket as the web tier reads it: the answer for one input key (one LIST of its
answers, `facepipe.answers.find`), and the newest answer of every stem for the results page.
One store per output bucket: the face function's and the image classification function's."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from facepipe import answers
from facepipe.answers import AnswerBody, Label, StoredAnswer, Student


@dataclass
class Answer:
    """What the output bucket says about one input key."""

    key: str
    state: str  # done | error
    stored: StoredAnswer
    people: list[Student] = field(default_factory=list)
    error: dict | None = None
    picture: StoredAnswer | None = None
    labels: list[Label] = field(default_factory=list)  # a classification's, most likely first

    @property
    def output_key(self) -> str:
        return self.stored.key

    @property
    def modified(self) -> datetime:
        return self.stored.modified


@dataclass(frozen=True)
class Row:
    """One line of the results page: the newest answer for a stem of the output bucket."""

    stem: str
    answer: StoredAnswer
    picture: StoredAnswer | None

    @property
    def state(self) -> str:
        return "error" if self.answer.is_error else "done"


class ResultStore:
    """Reads results, error records and pictures from the output bucket (parsed bodies cached
    per key and ETag; the bucket listing shared for a second between page refreshes)."""

    CACHE_LIMIT = 5000
    LISTING_TTL_S = 1.0

    def __init__(self, s3, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket
        self._lock = threading.Lock()
        self._bodies: dict[tuple[str, str], AnswerBody] = {}
        self._listing: tuple[float, list[Row]] | None = None

    def read(self, answer: StoredAnswer) -> AnswerBody:
        """The parsed answer (people or labels, or the error record), cached per key and ETag."""
        ident = (answer.key, answer.etag)
        with self._lock:
            cached = self._bodies.get(ident)
        if cached is not None:
            return cached
        body = answers.read(self.s3, self.bucket, answer)
        with self._lock:
            if len(self._bodies) >= self.CACHE_LIMIT:
                self._bodies.clear()
            self._bodies[ident] = body
        return body

    def lookup(self, key: str) -> Answer | None:
        """The answer for input `key`, or None while there is none (one LIST, one GET)."""
        found = answers.find(self.s3, self.bucket, key)
        newest = found.newest()
        if newest is None:
            return None
        body = self.read(newest)
        return Answer(
            key=key,
            state="error" if body.error else "done",
            stored=body.answer,
            people=body.people,
            error=body.error,
            picture=found.picture if body.error is None else None,
            labels=body.labels,
        )

    def rows(self) -> list[Row]:
        """Every answer in the output bucket, newest first (listing cached for LISTING_TTL_S)."""
        now = time.monotonic()
        with self._lock:
            if self._listing is not None and now - self._listing[0] < self.LISTING_TTL_S:
                return self._listing[1]
        rows = []
        for base, found in answers.index(answers.list_objects(self.s3, self.bucket)).items():
            newest = found.newest()
            if newest is not None:
                rows.append(Row(base, newest, None if newest.is_error else found.picture))
        rows.sort(key=lambda row: (row.answer.modified, row.stem), reverse=True)
        with self._lock:
            self._listing = (time.monotonic(), rows)
        return rows

    def details(self, row: Row) -> AnswerBody:
        return self.read(row.answer)
