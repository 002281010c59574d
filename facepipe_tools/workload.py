"""The workload generator: clear both buckets, upload media files concurrently with a progress bar;
or, with `--http URL`, send the files to the web tier concurrently and report latency and failures.

`--images` does the same for image classification: photos to IMAGE_INPUT_BUCKET (clearing it and
IMAGE_OUTPUT_BUCKET first), by default the built-in photo sample. With `--http`, a URL ending in
`/classify` gets photos, and `--mapping` then takes an image mapping (`image:label|label...`)."""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import posixpath
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from facepipe.answers import Label, Student, stem
from facepipe.clients import s3_client
from facepipe.keys import is_media_name
from facepipe.settings import Settings, SettingsError, load_settings
from facepipe_tools.mapping import (
    IMAGE_NAMES,
    IMAGES,
    OK,
    ImageEntry,
    MappingEntry,
    compare,
    compare_labels,
    describe_labels,
    describe_students,
    kind_of,
    load_any_mapping,
)
from facepipe_tools.paths import REPO_ROOT
from facepipe_tools.stats import percentile

SAMPLE_DIR = REPO_ROOT / "build" / "sample"
IMAGE_SAMPLE_DIR = REPO_ROOT / "build" / "sample_images"
DELETE_BATCH = 1000
_TRANSFER = TransferConfig(use_threads=False)


class WorkloadError(Exception):
    """A problem the user can fix (missing path, unreachable endpoint, missing bucket)."""


def is_image_name(name: str) -> bool:
    """A photo the classification function reads, by its name."""
    return posixpath.splitext(name.lower())[1] in IMAGE_NAMES


def collect_media(paths: list[Path], wanted: Callable[[str], bool] = is_media_name) -> list[Path]:
    """Files named on the command line, plus every media file found under named folders, recursively.

    Folders are filtered by extension (`wanted`: keys.is_media_name, or is_image_name for
    photos); a file named explicitly is always taken, so odd inputs can be uploaded on purpose.
    Sorted, without repeats.
    """
    found: set[Path] = set()
    for path in paths:
        if path.is_file():
            found.add(path)
        elif path.is_dir():
            found.update(p for p in path.rglob("*") if p.is_file() and wanted(p.name))
        else:
            raise WorkloadError(f"no such file or folder: {path}")
    return sorted(found)


def group_by_key(files: list[Path]) -> dict[str, list[Path]]:
    """Object key = file name. Files sharing a name are uploaded one after another, in path order."""
    groups: dict[str, list[Path]] = {}
    for path in files:
        groups.setdefault(path.name, []).append(path)
    return groups


def check_bucket(s3, bucket: str, endpoint: str | None) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
    except EndpointConnectionError:
        raise WorkloadError(f"cannot reach the S3 endpoint {endpoint or '(AWS)'}; is the stack up?") from None
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 404:
            raise WorkloadError(
                f"bucket {bucket!r} does not exist; create it with: notifier/notification.py setup"
            ) from None
        if status == 403:
            raise WorkloadError(f"access to bucket {bucket!r} denied; check S3_ACCESS_KEY_ID / SECRET") from None
        raise


def clear_bucket(s3, bucket: str) -> int:
    """Delete every object in `bucket` (paginated, batched); returns how many were deleted."""
    deleted = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            response = s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise WorkloadError(
                    f"could not delete {len(errors)} object(s) from {bucket!r}, e.g. {first.get('Key')!r}:"
                    f" {first.get('Code')} {first.get('Message')}"
                )
            deleted += len(batch)
    return deleted


@dataclass
class UploadSummary:
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    failures: list[tuple[Path, str]] = field(default_factory=list)


def upload_files(
    s3, bucket: str, files: list[Path], concurrency: int = 8, console: Console | None = None
) -> UploadSummary:
    """Upload `files` (key = file name) with `concurrency` threads and a progress bar."""
    console = console or Console(stderr=True)
    groups = group_by_key(files)
    total_bytes = sum(path.stat().st_size for path in files)
    summary = UploadSummary()
    started = time.monotonic()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[done]}/{task.fields[total_files]} files"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("uploading", total=total_bytes, done=0, total_files=len(files))

        def upload_group(key: str, paths: list[Path]) -> list[tuple[Path, str | None]]:
            outcomes = []
            for path in paths:
                content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
                try:
                    s3.upload_file(
                        str(path),
                        bucket,
                        key,
                        ExtraArgs={"ContentType": content_type},
                        Callback=lambda sent: progress.advance(task, sent),
                        Config=_TRANSFER,
                    )
                    outcomes.append((path, None))
                except (Boto3Error, BotoCoreError, ClientError, OSError) as exc:
                    outcomes.append((path, str(exc)))
            return outcomes

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            futures = [pool.submit(upload_group, key, paths) for key, paths in groups.items()]
            for future in as_completed(futures):
                for path, error in future.result():
                    if error is None:
                        summary.files += 1
                        summary.bytes += path.stat().st_size
                    else:
                        summary.failures.append((path, error))
                progress.update(task, done=summary.files + len(summary.failures))
    summary.seconds = time.monotonic() - started
    return summary


def default_sample(console: Console, images: bool = False) -> list[Path]:
    from facepipe_tools import sample

    folder = IMAGE_SAMPLE_DIR if images else SAMPLE_DIR
    console.print(f"no PATH given: using the built-in {'photo ' if images else ''}sample in {folder}", markup=False)
    try:
        return (sample.build_image_sample if images else sample.build_sample)(folder)
    except Exception as exc:
        raise WorkloadError(f"could not build the built-in sample: {exc}") from None


def inputs(paths: list[Path], console: Console, images: bool = False) -> list[Path]:
    """The files to send: those under `paths`, else the built-in (photo) sample."""
    if not paths:
        return default_sample(console, images)
    files = collect_media(paths, is_image_name if images else is_media_name)
    if not files:
        kind = "image" if images else "media"
        raise WorkloadError(f"no {kind} files found under " + ", ".join(str(p) for p in paths))
    return files


def _size(count: float) -> str:
    if count < 1000:
        return f"{count:.0f} B"
    for unit in ("KB", "MB", "GB"):
        count /= 1000
        if count < 1000 or unit == "GB":
            break
    return f"{count:.1f} {unit}"


def run(
    settings: Settings, paths: list[Path], keep: bool, concurrency: int, console: Console, images: bool = False
) -> int:
    """Clear the buckets (unless `keep`) and upload the files: videos and photos for face
    recognition, or with `images`, photos to the image classification buckets."""
    files = inputs(paths, console, images)
    if images:
        input_bucket, output_bucket = settings.image_input_bucket, settings.image_output_bucket
    else:
        input_bucket, output_bucket = settings.input_bucket, settings.output_bucket
    s3 = s3_client(settings)
    for bucket in (input_bucket, output_bucket):
        check_bucket(s3, bucket, settings.s3_endpoint_url)
    if not keep:
        for bucket in (input_bucket, output_bucket):
            console.print(f"cleared {clear_bucket(s3, bucket)} object(s) from {bucket!r}")
    repeated = {key: group for key, group in group_by_key(files).items() if len(group) > 1}
    if repeated:
        console.print(
            f"note: {len(repeated)} file name(s) occur more than once (e.g. {next(iter(repeated))!r});"
            " they share one object key and are uploaded one after another",
            markup=False,
        )
    summary = upload_files(s3, input_bucket, files, concurrency, console)
    for path, error in summary.failures:
        console.print(f"[red]failed[/red] {escape(str(path))}: {escape(error)}")
    rate = summary.files / summary.seconds if summary.seconds else 0.0
    console.print(
        f"uploaded {summary.files} file(s), {_size(summary.bytes)}, to {input_bucket!r}"
        f" in {summary.seconds:.2f} s ({rate:.1f} files/s)"
        + (f"; [red]{len(summary.failures)} failed[/red]" if summary.failures else "")
    )
    return 1 if summary.failures else 0


# ------------------------------------------------------------------------------ --http mode


@dataclass
class HttpOutcome:
    """One request to the web tier: HTTP status (None when it never answered), seconds, body."""

    path: Path
    status: int | None
    seconds: float
    body: str
    failure: str | None = None
    checked: bool = False  # compared with the mapping


def expected_stem(path: Path) -> str:
    """The stem the web tier answers with for a file (`clip.mp4` -> `clip`)."""
    return posixpath.basename(stem(path.name))


def is_classify_url(url: str) -> bool:
    """A URL of the web tier's image classification route (`.../classify`)."""
    return urlsplit(url).path.rstrip("/").endswith("/classify")


def _judged(entry: MappingEntry | ImageEntry, data: dict) -> tuple[str, str, str]:
    """(status, detail, what the answer says) of a JSON answer against its mapping entry."""
    if isinstance(entry, ImageEntry):
        labels = [Label(int(item["rank"]), str(item["label"]), float(item["score"])) for item in data["labels"]]
        return *compare_labels(entry, labels), describe_labels(labels)
    people = [Student(p["name"], p.get("major", ""), p.get("year", "")) for p in data["people"]]
    return *compare(entry, people), describe_students(people)


def judge(outcome: HttpOutcome, mapping: dict[str, MappingEntry] | dict[str, ImageEntry] | None) -> HttpOutcome:
    """Set `failure` unless the answer is a 200 for this very file (and, with a mapping, right)."""
    if outcome.failure is not None:
        return outcome
    first_line = outcome.body.strip().splitlines()[0] if outcome.body.strip() else ""
    if outcome.status != 200:
        outcome.failure = f"HTTP {outcome.status}: {first_line[:300]}"
        return outcome
    want = expected_stem(outcome.path)
    if mapping is None:
        if not outcome.body.startswith(want + ":"):
            outcome.failure = f"answer {first_line[:200]!r} is not for {want!r}"
        return outcome
    entry = mapping.get(outcome.path.name)
    try:
        data = json.loads(outcome.body)
        got_stem = data["stem"]
        judged = _judged(entry, data) if entry is not None else None
    except (ValueError, KeyError, TypeError) as exc:
        outcome.failure = f"unreadable JSON answer ({exc!r}): {first_line[:200]}"
        return outcome
    if got_stem != want:
        outcome.failure = f"answer is for {got_stem!r}, not {want!r}"
        return outcome
    if entry is not None and judged is not None:
        outcome.checked = True
        status, detail, got = judged
        if status != OK:
            outcome.failure = f"wrong: expected {entry.describe()}, got {got} ({detail})"
    return outcome


def post_file(session: requests.Session, url: str, path: Path, timeout_s: float, want_json: bool) -> HttpOutcome:
    """POST one file as multipart field `inputFile` (with the web tier's token, WEB_TOKEN, when
    it is set); never raises for HTTP or network errors."""
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers = {"Accept": "application/json" if want_json else "text/plain"}
    token = os.environ.get("WEB_TOKEN", "").strip()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    started = time.perf_counter()
    try:
        with path.open("rb") as handle:
            response = session.post(
                url, files={"inputFile": (path.name, handle, content_type)}, headers=headers, timeout=timeout_s
            )
        body = response.text
    except (requests.RequestException, OSError) as exc:
        return HttpOutcome(path, None, time.perf_counter() - started, "", f"request failed: {exc}")
    return HttpOutcome(path, response.status_code, time.perf_counter() - started, body)


@dataclass
class HttpSummary:
    outcomes: list[HttpOutcome]
    seconds: float

    @property
    def failures(self) -> list[HttpOutcome]:
        return [o for o in self.outcomes if o.failure is not None]

    def latency(self) -> dict[str, float] | None:
        values = [o.seconds for o in self.outcomes if o.status is not None]
        if not values:
            return None
        return {
            "p50": percentile(values, 0.50),
            "p95": percentile(values, 0.95),
            "max": max(values),
        }


def send_files(
    url: str,
    files: list[Path],
    concurrency: int,
    total: int | None = None,
    mapping: dict[str, MappingEntry] | dict[str, ImageEntry] | None = None,
    timeout_s: float = 300.0,
    console: Console | None = None,
) -> HttpSummary:
    """POST `total` requests (default one per file, cycling through `files`) with `concurrency`
    at once; each answer is judged (see `judge`)."""
    console = console or Console(stderr=True)
    total = len(files) if total is None else total
    order = [files[i % len(files)] for i in range(total)]
    local = threading.local()

    def one(path: Path) -> HttpOutcome:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return judge(post_file(local.session, url, path, timeout_s, want_json=mapping is not None), mapping)

    outcomes: list[HttpOutcome] = []
    started = time.monotonic()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} answers, {task.fields[failed]} failed"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("posting", total=total, failed=0)
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            futures = [pool.submit(one, path) for path in order]
            for future in as_completed(futures):
                outcome = future.result()
                outcomes.append(outcome)
                progress.update(task, advance=1, failed=sum(o.failure is not None for o in outcomes))
    return HttpSummary(outcomes, time.monotonic() - started)


def run_http(
    url: str,
    paths: list[Path],
    concurrency: int,
    total: int | None,
    mapping_path: Path | None,
    timeout_s: float,
    console: Console,
) -> int:
    images = is_classify_url(url)
    mapping = None
    if mapping_path is not None:
        try:
            entries = load_any_mapping(mapping_path, IMAGES if images else None)
        except (OSError, ValueError) as exc:
            raise WorkloadError(f"cannot read the mapping: {exc}") from None
        if kind_of(entries) == IMAGES and not images:
            raise WorkloadError(
                f"{mapping_path} lists images (image:label lines): post them to a URL ending in /classify"
            )
        mapping = {entry.key: entry for entry in entries}
    files = inputs(paths, console, images)
    count = len(files) if total is None else total
    console.print(
        f"posting {count} request(s) from {len(files)} file(s) to {url}, {concurrency} at a time", markup=False
    )
    summary = send_files(url, files, concurrency, total, mapping, timeout_s, console)
    for outcome in sorted(summary.failures, key=lambda o: o.path):
        console.print(f"[red]failed[/red] {escape(outcome.path.name)}: {escape(outcome.failure or '')}")
    ok = len(summary.outcomes) - len(summary.failures)
    rate = len(summary.outcomes) / summary.seconds if summary.seconds else 0.0
    checked = sum(o.checked and o.failure is None for o in summary.outcomes)
    console.print(
        f"{len(summary.outcomes)} request(s) in {summary.seconds:.2f} s ({rate:.1f}/s): {ok} ok, "
        + (f"[red]{len(summary.failures)} failed[/red]" if summary.failures else "0 failed")
        + (f"; {checked} checked against the mapping" if mapping is not None else "")
    )
    latency = summary.latency()
    if latency:
        console.print(f"latency: p50 {latency['p50']:.2f} s, p95 {latency['p95']:.2f} s, max {latency['max']:.2f} s")
    return 1 if summary.failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="workload.py",
        description="Clear both buckets and upload every video/image under the given files or folders; "
        "with --http, send them to the web tier instead and report latency percentiles and failures. "
        "--images does the same with photos for image classification.",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="files or folders (searched recursively); default: the built-in sample",
    )
    parser.add_argument("--keep", action="store_true", help="do not clear the buckets first")
    parser.add_argument(
        "--images",
        action="store_true",
        help="photos for image classification: IMAGE_INPUT_BUCKET, IMAGE_OUTPUT_BUCKET, and by default"
        " the built-in photo sample (with --http: a URL ending in /classify)",
    )
    parser.add_argument("--concurrency", type=int, default=8, help="parallel uploads or requests (default 8)")
    web = parser.add_argument_group("web tier load generator")
    web.add_argument(
        "--http",
        metavar="URL",
        help="POST each file to the web tier at URL (e.g. $WEB_URL, or $WEB_URL/classify for photos)"
        " instead of uploading to S3; exit status 1 when any request fails",
    )
    web.add_argument(
        "--requests",
        type=int,
        metavar="N",
        help="with --http: send N requests, cycling through the files (default: one per file)",
    )
    web.add_argument(
        "--mapping",
        type=Path,
        metavar="FILE",
        help="with --http: ask for JSON and check every answer against this mapping file"
        " (an image mapping, image:label|label..., for /classify)",
    )
    web.add_argument("--timeout", type=float, default=300.0, help="with --http: seconds per request (default 300)")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.requests is not None and args.requests < 1:
        parser.error("--requests must be at least 1")
    if args.http is None and (args.requests is not None or args.mapping is not None):
        parser.error("--requests and --mapping need --http")
    if args.http is not None and args.images and not is_classify_url(args.http):
        parser.error("--images with --http: post the photos to the web tier's /classify URL")
    console = Console(stderr=False, highlight=False)
    if args.http is not None:
        try:
            return run_http(args.http, args.paths, args.concurrency, args.requests, args.mapping, args.timeout, console)
        except WorkloadError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    settings = None
    try:
        settings = load_settings()
        return run(settings, args.paths, args.keep, args.concurrency, console, images=args.images)
    except (WorkloadError, SettingsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except EndpointConnectionError:
        endpoint = settings.s3_endpoint_url if settings else None
        print(f"error: cannot reach the S3 endpoint {endpoint or '(AWS)'}; is the stack up?", file=sys.stderr)
        return 1
    except (BotoCoreError, ClientError) as exc:
        print(f"error: S3 request failed: {exc}", file=sys.stderr)
        return 1
