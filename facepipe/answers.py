"""Answers in the output bucket: their names, their formats, and when one is current.

Every input object `<stem>.<ext>` gets one answer: the result `<stem>.csv` (with the annotated
picture `<stem>.jpg` beside it) or the error record `<stem>.error.json`. Every answer carries,
in its object metadata `source-etag`, the ETag of the input version it answers.

The freshness rule (`is_current`), used by the function, the notifier's reconciler, the web
tier and the checker alike: an answer is current for an input version when its recorded
source ETag is that version's ETag. Where only bucket listings are at hand (they carry no
metadata), an answer written no earlier than the version was uploaded is current.

`find` looks all of a key's answers up with one LIST of their common prefix `<stem>.`;
`index` builds the same view from a listing of the whole output bucket.

An error record `{"key", "error", "detail"}` comes from the function (`error` names what is
wrong with the media: `empty`, `unreadable`, `too_large`, ...) or from the notifier: `failed`
(FAILED, a dead letter, `render_failed`) when the function crashed, timed out or answered 5xx
for that input version `Settings.dead_letter_attempts` times; it also carries `attempts` and
`last_error`. Like any answer it is current for its source ETag: nothing invokes the function
for that version again, a new upload (new ETag) is processed as usual.

Two result formats, told apart by their header: the face function's `name,major,year` (one row
per known person) and the image classification function's `rank,label,score` (the five most
likely ImageNet classes, most likely first; score = softmax probability, 4 decimals).
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from botocore.exceptions import ClientError

RESULT_SUFFIX = ".csv"
ERROR_SUFFIX = ".error.json"
PICTURE_SUFFIX = ".jpg"
#: Object metadata on every answer: the ETag of the input object version it answers.
SOURCE_ETAG_METADATA = "source-etag"
CSV_HEADER = ("name", "major", "year")
LABELS_CSV_HEADER = ("rank", "label", "score")
#: The error kind an answer that cannot be parsed reads as.
UNREADABLE = "unreadable_result"
#: The error kind of a dead letter: the notifier gave up on an input version (`render_failed`).
FAILED = "failed"


# ---------------------------------------------------------------------------------- names


def stem(key: str) -> str:
    """The key without its last extension; everything before the name is kept verbatim
    (`a/b.mp4` -> `a/b`, `a//b.mp4` -> `a//b`), so distinct folders never share an answer."""
    folder, slash, name = key.rpartition("/")
    base, _ext = posixpath.splitext(name)
    return folder + slash + (base or name)


def result_key(key: str) -> str:
    return stem(key) + RESULT_SUFFIX


def error_key(key: str) -> str:
    return stem(key) + ERROR_SUFFIX


def picture_key(key: str) -> str:
    """The annotated picture written beside a result."""
    return stem(key) + PICTURE_SUFFIX


# -------------------------------------------------------------------------------- formats


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


@dataclass(frozen=True)
class Label:
    """One line of a classification: `rank` 1 is the most likely class; `score` in [0, 1]."""

    rank: int
    label: str
    score: float


def render_labels_csv(labels: list[Label]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LABELS_CSV_HEADER)
    for label in labels:
        writer.writerow((label.rank, label.label, f"{label.score:.4f}"))
    return buffer.getvalue()


def parse_labels_csv(text: str) -> list[Label]:
    """Parse a classification CSV; raise ValueError unless it is `rank,label,score` and its rows
    have a whole rank and a score between 0 and 1."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or tuple(cell.strip() for cell in rows[0]) != LABELS_CSV_HEADER:
        raise ValueError("classification CSV does not start with the header rank,label,score")
    labels = []
    for row in rows[1:]:
        if not row:
            continue
        if len(row) != 3:
            raise ValueError(f"classification CSV row has {len(row)} fields, expected 3: {row!r}")
        try:
            label = Label(int(row[0]), row[1].strip(), float(row[2]))
        except ValueError:
            raise ValueError(f"classification CSV row has no whole rank and numeric score: {row!r}") from None
        if not 0.0 <= label.score <= 1.0 or label.rank < 1 or not label.label:
            raise ValueError(f"classification CSV row is out of range: {row!r}")
        labels.append(label)
    return labels


def _header(text: str) -> tuple[str, ...]:
    first = next(csv.reader(io.StringIO(text.partition("\n")[0])), [])
    return tuple(cell.strip() for cell in first)


def render_error(key: str, error: str, detail: str, **extra: object) -> str:
    """An error record: `{"key", "error", "detail"}` and any `extra` fields after them."""
    record = {"key": key, "error": error, "detail": detail, **extra}
    return json.dumps(record, ensure_ascii=False, indent=1) + "\n"


def render_failed(key: str, attempts: int, last_error: str) -> str:
    """The dead-letter record the notifier writes: error FAILED, the number of failed
    invocations and the last one's error, also spelt out in `detail`."""
    detail = f"failed after {attempts} attempt{'s' if attempts != 1 else ''}; last error: {last_error}"
    return render_error(key, FAILED, detail, attempts=attempts, last_error=last_error)


def parse_error(text: str) -> dict:
    record = json.loads(text)
    if not isinstance(record, dict) or "error" not in record:
        raise ValueError("error record has no 'error' field")
    return record


# ------------------------------------------------------------------------------ freshness


@dataclass(frozen=True)
class Version:
    """One version of an input object, as far as it is known: its ETag and upload time."""

    etag: str = ""
    modified: datetime | None = None

    @classmethod
    def of(cls, obj: dict) -> Version:
        """The version an S3 listing entry or HEAD answer describes."""
        return cls(_etag(obj), obj.get("LastModified"))


@dataclass(frozen=True)
class StoredAnswer:
    """One answer object. `source_etag` is known once its metadata was read (HEAD or GET)."""

    key: str
    modified: datetime
    etag: str = ""
    source_etag: str | None = None

    @property
    def is_error(self) -> bool:
        return self.key.endswith(ERROR_SUFFIX)

    @classmethod
    def from_listing(cls, obj: dict) -> StoredAnswer:
        return cls(obj["Key"], obj["LastModified"], _etag(obj))


def is_current(answer: StoredAnswer, version: Version) -> bool:
    """The one freshness rule (see the module docstring)."""
    if answer.source_etag is not None and version.etag:
        return answer.source_etag == version.etag
    return version.modified is not None and answer.modified >= version.modified


@dataclass(frozen=True)
class Answers:
    """What the output bucket holds for one input key."""

    result: StoredAnswer | None = None
    error: StoredAnswer | None = None
    picture: StoredAnswer | None = None

    @property
    def names(self) -> set[str]:
        return {answer.key for answer in (self.result, self.error, self.picture) if answer is not None}

    def newest(self) -> StoredAnswer | None:
        """The newer of the result and the error record (a picture is no answer by itself)."""
        found = [answer for answer in (self.result, self.error) if answer is not None]
        return max(found, key=lambda answer: answer.modified) if found else None

    def current(self, version: Version) -> StoredAnswer | None:
        """The newest answer that is current for `version`, judged from the listing alone."""
        newest = self.newest()
        return newest if newest is not None and is_current(newest, version) else None


def _etag(obj: dict) -> str:
    return str(obj.get("ETag", "")).strip('"')


def _kind(name: str) -> tuple[str, str] | None:
    """(stem, field of Answers) of an output object name, or None for other objects."""
    for suffix, kind in ((ERROR_SUFFIX, "error"), (RESULT_SUFFIX, "result"), (PICTURE_SUFFIX, "picture")):
        if name.endswith(suffix):
            return name[: -len(suffix)], kind
    return None


def index(listing: Iterable[dict]) -> dict[str, Answers]:
    """Answers by stem, from list_objects_v2 entries of the output bucket."""
    found: dict[str, dict[str, StoredAnswer]] = {}
    for obj in listing:
        kind = _kind(obj["Key"])
        if kind is not None:
            found.setdefault(kind[0], {})[kind[1]] = StoredAnswer.from_listing(obj)
    return {base: Answers(**answers) for base, answers in found.items()}


def list_objects(s3, bucket: str, prefix: str = "") -> Iterable[dict]:
    """Every list_objects_v2 entry of `bucket` under `prefix`, page after page."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def find(s3, bucket: str, key: str) -> Answers:
    """The answers of input `key`: one LIST of their common prefix, cheaper than a HEAD per
    name when, as usual, none exists yet."""
    base = stem(key)
    wanted = {result_key(key), error_key(key), picture_key(key)}
    listing = (obj for obj in list_objects(s3, bucket, base + ".") if obj["Key"] in wanted)
    return index(listing).get(base, Answers())


def head(s3, bucket: str, answer: StoredAnswer) -> StoredAnswer | None:
    """`answer` with its metadata (`source_etag`) read by one HEAD; None when it is gone."""
    try:
        obj = s3.head_object(Bucket=bucket, Key=answer.key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    source_etag = obj.get("Metadata", {}).get(SOURCE_ETAG_METADATA)
    return StoredAnswer(answer.key, obj["LastModified"], _etag(obj), source_etag)


def find_current(s3, bucket: str, key: str, version: Version, *, results_only: bool = False) -> StoredAnswer | None:
    """The answer (result or error record; only the result with `results_only`) of input `key`
    that is current for `version`, judged by its metadata: one LIST, a HEAD per answer found."""
    found = find(s3, bucket, key)
    for answer in (found.result,) if results_only else (found.result, found.error):
        if answer is None:
            continue
        stored = head(s3, bucket, answer)
        if stored is not None and is_current(stored, version):
            return stored
    return None


# -------------------------------------------------------------------------------- reading


@dataclass
class AnswerBody:
    """A parsed answer: the people (faces) or labels (classification) of a result, or the error
    record (`error`, `detail`; a FAILED record also `attempts` and `last_error`)."""

    answer: StoredAnswer
    people: list[Student] = field(default_factory=list)
    error: dict | None = None
    labels: list[Label] = field(default_factory=list)

    @property
    def unreadable(self) -> bool:
        return self.error is not None and self.error["error"] == UNREADABLE

    @property
    def failed(self) -> bool:
        """A dead letter: the function never answered for this version (see `render_failed`)."""
        return self.error is not None and self.error["error"] == FAILED


def _error_fields(record: dict) -> dict:
    """What a parsed error record keeps: `error` and `detail`, for FAILED also `attempts` (an
    int) and `last_error`."""
    fields = {"error": str(record["error"]), "detail": str(record.get("detail") or "")}
    if fields["error"] == FAILED:
        attempts = record.get("attempts")
        fields["attempts"] = attempts if isinstance(attempts, int) and not isinstance(attempts, bool) else None
        fields["last_error"] = str(record.get("last_error") or "")
    return fields


def parse(answer: StoredAnswer, text: str) -> AnswerBody:
    """An answer's text parsed; an unreadable answer reads as the error UNREADABLE."""
    try:
        if answer.is_error:
            return AnswerBody(answer, error=_error_fields(parse_error(text)))
        if _header(text) == LABELS_CSV_HEADER:
            return AnswerBody(answer, labels=parse_labels_csv(text))
        return AnswerBody(answer, people=parse_csv(text))
    except ValueError as exc:
        return AnswerBody(answer, error={"error": UNREADABLE, "detail": str(exc)})


def read(s3, bucket: str, answer: StoredAnswer) -> AnswerBody:
    """GET and parse an answer; its metadata fills in `source_etag`."""
    obj = s3.get_object(Bucket=bucket, Key=answer.key)
    text = obj["Body"].read().decode("utf-8", "replace")
    stored = StoredAnswer(answer.key, answer.modified, _etag(obj), obj.get("Metadata", {}).get(SOURCE_ETAG_METADATA))
    return parse(stored, text)
