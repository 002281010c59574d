"""The checker: compare an output bucket with a mapping file, waiting for results if asked.

A face mapping (`video:major,year` lines) is checked against OUTPUT_BUCKET, an image mapping
(`image:label|label...` lines; `--images`, or told from the file) against the top label of
each `<stem>.csv` in IMAGE_OUTPUT_BUCKET."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from facepipe import answers
from facepipe.answers import AnswerBody, Answers, StoredAnswer, Version
from facepipe.clients import s3_client
from facepipe.settings import Settings, SettingsError, load_settings
from facepipe_tools.mapping import (
    ERROR,
    FACES,
    IMAGES,
    MISSING,
    OK,
    WRONG,
    ImageEntry,
    MappingEntry,
    compare,
    compare_labels,
    describe_labels,
    describe_students,
    kind_of,
    load_any_mapping,
)
from facepipe_tools.stats import percentile

STATUS_STYLE = {OK: "green", WRONG: "bold red", MISSING: "yellow", ERROR: "magenta"}


class CheckError(Exception):
    """The check cannot run (bad mapping, missing bucket, unreachable endpoint)."""


@dataclass
class Row:
    video: str  # the input's key: a video, or an image when checking image classification
    expected: str
    got: str
    status: str
    detail: str = ""
    latency_s: float | None = None
    answered_at: datetime | None = None
    uploaded_at: datetime | None = None


def _list(s3, bucket: str) -> dict[str, dict]:
    objects = {}
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                objects[obj["Key"]] = obj
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
            raise CheckError(f"bucket {bucket!r} does not exist") from None
        raise
    return objects


class OutputReader:
    """Reads result and error objects, each version (key + ETag) fetched once."""

    def __init__(self, s3, bucket: str):
        self.s3 = s3
        self.bucket = bucket
        self._cache: dict[tuple[str, str], AnswerBody] = {}

    def head(self, answer: StoredAnswer) -> StoredAnswer | None:
        """`answer` with the source ETag of its metadata; None when it is gone."""
        return answers.head(self.s3, self.bucket, answer)

    def read(self, answer: StoredAnswer) -> AnswerBody:
        ident = (answer.key, answer.etag)
        if ident not in self._cache:
            self._cache[ident] = answers.read(self.s3, self.bucket, answer)
        return self._cache[ident]


def _current(found: Answers, version: Version, reader: OutputReader) -> StoredAnswer | None:
    """The answer current for `version`: by the listing, else by the newest answer's metadata
    (an identical re-upload, same ETag, keeps the answer made before it)."""
    answer, newest = found.current(version), found.newest()
    if answer is not None or newest is None:
        return answer
    stored = reader.head(newest)
    return stored if stored is not None and answers.is_current(stored, version) else None


def evaluate(
    entry: MappingEntry | ImageEntry, inputs: dict[str, dict], outputs: dict[str, Answers], reader: OutputReader
) -> Row:
    """The row for one mapping entry given the current bucket listings."""
    row = Row(video=entry.key, expected=entry.describe(), got="", status=MISSING)
    noun = "image" if isinstance(entry, ImageEntry) else "video"
    uploaded = inputs.get(entry.key)
    row.uploaded_at = uploaded["LastModified"] if uploaded else None
    found = outputs.get(answers.stem(entry.key), Answers())
    newest = found.newest()
    answer = newest if uploaded is None else _current(found, Version.of(uploaded), reader)
    if answer is None:
        if newest is not None:
            row.detail = f"only a result older than the uploaded {noun}"
        elif uploaded is None:
            row.detail = f"{noun} not in the input bucket"
        else:
            row.detail = "no result yet"
        return row
    row.answered_at = answer.modified
    if row.uploaded_at is not None:
        row.latency_s = (row.answered_at - row.uploaded_at).total_seconds()
    body = reader.read(answer)
    if body.error is not None:
        message = body.error["error"] + (f": {body.error['detail']}" if body.error.get("detail") else "")
        if body.unreadable:
            row.status, row.got, row.detail = ERROR, "(unreadable result)", body.error["detail"]
        else:
            row.status, row.got, row.detail = ERROR, "-", message
        return row
    if isinstance(entry, ImageEntry):
        row.got = describe_labels(body.labels)
        row.status, row.detail = compare_labels(entry, body.labels)
    else:
        row.got = describe_students(body.people)
        row.status, row.detail = compare(entry, body.people)
    return row


def buckets(settings: Settings, entries: list[MappingEntry] | list[ImageEntry]) -> tuple[str, str]:
    """(input bucket, output bucket) the entries are checked in: the image buckets for images."""
    if kind_of(entries) == IMAGES:
        return settings.image_input_bucket, settings.image_output_bucket
    return settings.input_bucket, settings.output_bucket


def check(
    settings: Settings,
    entries: list[MappingEntry] | list[ImageEntry],
    wait_s: float = 0.0,
    poll_s: float = 1.0,
    s3=None,
    on_poll=None,
) -> list[Row]:
    """Evaluate every entry, polling until all have an answer or `wait_s` has passed."""
    s3 = s3 if s3 is not None else s3_client(settings)
    input_bucket, output_bucket = buckets(settings, entries)
    reader = OutputReader(s3, output_bucket)
    deadline = time.monotonic() + wait_s
    rows: list[Row] | None = None
    while True:
        try:
            inputs = _list(s3, input_bucket)
            outputs = answers.index(_list(s3, output_bucket).values())
            rows = [evaluate(entry, inputs, outputs, reader) for entry in entries]
            error = None
        except (BotoCoreError, ClientError) as exc:
            error = exc
        left = deadline - time.monotonic()
        if error is not None and left <= 0:
            if rows is None:
                raise CheckError(f"cannot read the buckets at {settings.s3_endpoint_url or 'AWS'}: {error}")
            return rows
        if rows is not None and error is None:
            answered = sum(row.status != MISSING for row in rows)
            if on_poll:
                on_poll(answered, len(rows), max(0.0, left))
            if answered == len(rows) or left <= 0:
                return rows
        time.sleep(max(0.0, min(poll_s, left)))


def summarize(rows: list[Row], waited_s: float | None = None, kind: str = FACES) -> dict:
    """Counts, latency statistics and every row; entries name their input `video`, or `image`
    when `kind` is IMAGES."""
    noun = "image" if kind == IMAGES else "video"
    counts = {status: sum(row.status == status for row in rows) for status in (OK, WRONG, MISSING, ERROR)}
    latencies = [row.latency_s for row in rows if row.latency_s is not None]
    uploads = [row.uploaded_at for row in rows if row.uploaded_at is not None]
    answers = [row.answered_at for row in rows if row.answered_at is not None]
    return {
        "kind": kind,
        "total": len(rows),
        "correct": counts[OK],
        "wrong": counts[WRONG],
        "missing": counts[MISSING],
        "errors": counts[ERROR],
        "all_correct": counts[OK] == len(rows),
        "waited_s": None if waited_s is None else round(waited_s, 3),
        "span_s": round((max(answers) - min(uploads)).total_seconds(), 3) if uploads and answers else None,
        "latency_s": {
            "count": len(latencies),
            "min": min(latencies),
            "median": statistics.median(latencies),
            "mean": round(statistics.fmean(latencies), 3),
            "p95": round(percentile(latencies, 0.95), 3),
            "max": max(latencies),
        }
        if latencies
        else None,
        "entries": [
            {
                (noun if k == "video" else k): v
                for k, v in asdict(row).items()
                if k not in ("answered_at", "uploaded_at")
            }
            for row in rows
        ],
    }


def summary_line(summary: dict) -> str:
    return (
        f"{summary['correct']}/{summary['total']} correct ({summary['wrong']} wrong,"
        f" {summary['missing']} missing, {summary['errors']} errors)"
    )


def latency_line(summary: dict) -> str | None:
    latency = summary["latency_s"]
    if not latency:
        return None
    noun = "image" if summary.get("kind") == IMAGES else "video"
    return (
        f"latency upload->result: median {latency['median']:.2f} s, p95 {latency['p95']:.2f} s,"
        f" max {latency['max']:.2f} s over {latency['count']} {noun}(s);"
        f" first upload to last result {summary['span_s']:.2f} s"
    )


def render(rows: list[Row], summary: dict, console: Console) -> None:
    images = summary.get("kind") == IMAGES
    table = Table(title="image classification results" if images else "face recognition results", show_lines=False)
    for column, justify in (("image" if images else "video", "left"), ("expected", "left"), ("got", "left"),
                            ("status", "left"), ("latency", "right")):
        table.add_column(column, justify=justify, overflow="fold")
    for row in rows:
        status = row.status + (f": {row.detail}" if row.detail and row.status != OK else "")
        latency = f"{row.latency_s:.2f} s" if row.latency_s is not None else "-"
        table.add_row(
            Text(row.video), Text(row.expected), Text(row.got or "-"),
            Text(status, style=STATUS_STYLE[row.status]), latency,
        )
    console.print(table)
    failures = [row for row in rows if row.status != OK]
    if failures and len(rows) > 20:
        console.print(f"not ok ({len(failures)}):")
        for row in failures:
            console.print(
                f"  {row.video}: {row.status}: {row.detail} (expected {row.expected}, got {row.got or '-'})",
                markup=False,
            )
    line = latency_line(summary)
    if line:
        console.print(line)
    style = "bold green" if summary["all_correct"] else "bold red"
    console.print(f"[{style}]{summary_line(summary)}[/]")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="check.py", description="Compare the output bucket with a mapping file; exit 0 only if all match."
    )
    parser.add_argument("--mapping", required=True, type=Path,
                        help="lines 'video.mp4:major,year' (or name,major,year), or 'image.jpg:label|label...'")
    parser.add_argument("--images", action="store_true",
                        help="the mapping lists images: check IMAGE_OUTPUT_BUCKET (default: told from the mapping)")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to SECONDS for every video to have a result (default: check once)")
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE",
                        help="write a JSON summary to FILE, or to stdout (the table then goes to stderr)")
    args = parser.parse_args(argv)
    if args.wait < 0:
        parser.error("--wait must not be negative")
    json_to_stdout = args.json == "-"
    console = Console(stderr=json_to_stdout, highlight=False)
    if not console.is_terminal:
        console.width = 160
    status_console = Console(stderr=True)
    try:
        entries = load_any_mapping(args.mapping, IMAGES if args.images else None)
        if not entries:
            raise CheckError(f"{args.mapping}: no entries")
        settings = load_settings()
        started = time.monotonic()
        with status_console.status("checking") as spinner:

            def on_poll(answered: int, total: int, left: float) -> None:
                spinner.update(f"waiting for results: {answered}/{total} answered, {left:.0f} s left")

            rows = check(settings, entries, args.wait, on_poll=on_poll)
        summary = summarize(rows, time.monotonic() - started, kind_of(entries))
    except FileNotFoundError:
        print(f"error: mapping file not found: {args.mapping}", file=sys.stderr)
        return 2
    except (ValueError, CheckError, SettingsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    render(rows, summary, console)
    if args.json:
        text = json.dumps(summary, indent=1, ensure_ascii=False)
        if json_to_stdout:
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return 0 if summary["all_correct"] else 1
