"""A stand-in for the pipeline (notification -> notifier -> function) for web-tier unit tests:
a thread that watches an input bucket (moto) and writes what the function would write.

What it writes depends on the uploaded bytes, so each test file says what its answer is:
`people=a,b` -> `<stem>.csv` with those people (majors from STUDENTS); `broken` -> an
`unreadable` error record; `silent` -> nothing (the web tier times out); `picture` -> also
`<stem>.jpg`, written before the CSV like the real function does. As the classification
function (`classify=True`): `labels=a;b;c` -> `<stem>.csv` (rank,label,score) with those
labels, most likely first.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time

from PIL import Image

from facepipe import answers
from facepipe.answers import Label, Student, render_csv, render_labels_csv

STUDENTS = {
    "grace_hopper": Student("grace_hopper", "computer_science", "senior"),
    "eileen_collins": Student("eileen_collins", "aerospace_engineering", "junior"),
}
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"


def tiny_jpeg() -> bytes:
    """A real JPEG (8x6, red), for the picture the fake function writes."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


TINY_JPEG = tiny_jpeg()


def media(marker: str) -> bytes:
    """Bytes that pass the web tier's type check (a JPEG signature) and carry `marker`."""
    return JPEG + marker.encode() + b"\x00"


def ranked(names: list[str]) -> list[Label]:
    """Labels for `names`, most likely first, with made-up falling scores."""
    return [Label(rank, name, round(0.5 / rank, 4)) for rank, name in enumerate(names, start=1)]


class FakePipeline:
    def __init__(
        self,
        s3,
        input_bucket: str = "input",
        output_bucket: str = "output",
        delay_s: float = 0.0,
        classify: bool = False,
    ):
        self.s3 = s3
        self.input_bucket = input_bucket
        self.output_bucket = output_bucket
        self.delay_s = delay_s
        self.classify = classify
        self.seen: set[str] = set()
        self.processed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakePipeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.input_bucket)
            fresh = [obj["Key"] for page in pages for obj in page.get("Contents", []) if obj["Key"] not in self.seen]
            for key in fresh:
                self.seen.add(key)
                self.process(key)
            time.sleep(0.01)

    def process(self, key: str) -> None:
        body = self.s3.get_object(Bucket=self.input_bucket, Key=key)["Body"].read()
        if self.delay_s:
            time.sleep(self.delay_s)
        if b"silent" in body:
            return
        if b"broken" in body:
            record = {"key": key, "error": "unreadable", "detail": "ffmpeg could not read the file"}
            self.s3.put_object(Bucket=self.output_bucket, Key=answers.error_key(key), Body=json.dumps(record).encode())
            self.processed.append(key)
            return
        if b"picture" in body:
            self.s3.put_object(Bucket=self.output_bucket, Key=answers.stem(key) + ".jpg", Body=TINY_JPEG)
        self.s3.put_object(Bucket=self.output_bucket, Key=answers.result_key(key), Body=self.result(body).encode())
        self.processed.append(key)

    def result(self, body: bytes) -> str:
        if self.classify:
            match = re.search(rb"labels=([^\x00]*)", body)
            names = [n for n in (match.group(1).decode().split(";") if match else ["tabby cat"]) if n]
            return render_labels_csv(ranked(names))
        match = re.search(rb"people=([\w,]*)", body)
        names = [n for n in (match.group(1).decode().split(",") if match else []) if n]
        return render_csv([STUDENTS.get(name, Student(name)) for name in names])
