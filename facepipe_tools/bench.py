"""`make bench`: the function against the seeds' way, and the whole pipeline end to end.

One run, on the same machine state:

1. **Compute**: for each distinct clip of CSE546 test_case_1, the time of the function's
   recognition path (`FaceRecognitionTask.compute`: models and known faces loaded
   once, a warm-up call excluded) and of the seeds' way, implemented here as a reference
   (`seed_style_recognize`: ffmpeg CLI `-r 1` to JPEG files, known faces loaded per call,
   face_recognition on the full-resolution first frame, nearest match within 0.6). Median
   of `--rounds` rounds per clip; both must give the same people, and the right ones.
2. **End to end**: the test_case_2 clips through the bench's own local stack (upload ->
   RGW notification -> notifier -> function -> CSV present): wall time, throughput,
   p50/p95 latency, correct count, compute floor (the function's compute in this run /
   workers) and efficiency, the same with step 1's quiet times, CPU seconds per process.
3. **Idle latency**: each distinct clip alone on the idle stack, upload to CSV present.
4. **Memory**: peak RSS (VmHWM) of each function worker process.
5. **Scaling**: end-to-end throughput with 1 and with 2 workers.
6. **Image classification** (facepipe_tools/bench_classify.py; `--no-classification` skips it,
   `--only-classification` runs it alone): its own steps 1-4, in the `classification` object.

Human-readable tables go to stdout, progress to stderr; the last line of stdout is one
JSON object (see `REQUIRED_KEYS`). Exit status: 0 when the run worked and every answer was
right (whether the performance targets were met or not), 1 when an answer was wrong or
missing, 2 when the run itself failed, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import hashlib
import json
import mimetypes
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psutil
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from facepipe import answers
from facepipe.answers import Student, error_key, parse_csv, result_key
from facepipe.clients import s3_client
from facepipe.faces.known_faces import is_pickle, load_for_conversion
from facepipe.settings import Settings, load_settings
from facepipe.upload_students import load_students
from facepipe_tools import metrics_client, notifier_probe
from facepipe_tools.checker import check
from facepipe_tools.mapping import OK, MappingEntry, compare, load_mapping
from facepipe_tools.paths import cse546_dir
from facepipe_tools.stack import LocalStack, free_port, free_port_range
from facepipe_tools.stats import peak_rss_mb, percentile
from facepipe_tools.workload import clear_bucket, collect_media

#: Keys of the JSON line that are always present (null when a phase did not run).
REQUIRED_KEYS = (
    "function_s_per_video",
    "seed_style_s_per_video",
    "speedup_vs_seed",
    "e2e_videos",
    "e2e_correct",
    "e2e_wall_s",
    "e2e_floor_s",
    "e2e_efficiency",
    "e2e_p50_s",
    "e2e_p95_s",
    "idle_latency_s",
    "rss_mb_per_worker",
    "throughput_1_worker",
    "throughput_2_workers",
)

#: What the bench starts of the local stack (not the web tier, which it does not use).
BENCH_COMPONENTS = ("mon", "osd", "rgw", "dynamodb", "function", "notifier")
SEED_TOLERANCE = 0.6
#: Issue #13: the function at least this many times as fast as the seeds' way on CSE546.
SPEEDUP_TARGET = 10.0
IDLE_POLL_S = 0.01
#: The output listing is polled this often during end-to-end runs; latencies come from the
#: listing's LastModified (milliseconds), so a slow poll only delays noticing the end, and
#: keeps the bench's own load on RGW small.
RESULTS_POLL_S = 1.0
_TRANSFER = TransferConfig(use_threads=False)


class BenchError(RuntimeError):
    """The benchmark could not run (missing data or program, stack failure, timeout)."""


# ----------------------------------------------------------------------------- statistics


def median(values: list[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def mean(values: list[float]) -> float:
    if not values:
        raise ValueError("mean of no values")
    return float(statistics.fmean(values))


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# ----------------------------------------------------------------------------- clips


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def distinct_files(files: list[Path]) -> list[Path]:
    """The first file (in the given order) of each distinct content."""
    seen: set[str] = set()
    kept = []
    for path in files:
        digest = file_digest(path)
        if digest not in seen:
            seen.add(digest)
            kept.append(path)
    return kept


def students_by_name(student_data: Path) -> dict[str, Student]:
    return {
        str(item["name"]): Student(str(item["name"]), str(item.get("major", "")), str(item.get("year", "")))
        for item in load_students(student_data)
    }


def judge_people(entry: MappingEntry | None, people: list[str], students: dict[str, Student]) -> tuple[bool, str]:
    """Do these recognised names give the rows the mapping expects? (ok, detail)."""
    if entry is None:
        return False, "no mapping entry"
    rows = [students.get(name, Student(name)) for name in people]
    status, detail = compare(entry, rows)
    return status == OK, detail


# ----------------------------------------------------------------------------- 1. compute


def seed_style_recognize(video: Path, known_faces: Path, tolerance: float = SEED_TOLERANCE) -> list[str]:
    """The seeds' way, as the reference: ffmpeg CLI extracts every frame at 1 fps to JPEG
    files, the known faces are loaded on every call, faces are found (HOG, one upsampling)
    and encoded on the full-resolution first frame and each is matched to the nearest known
    face within `tolerance`. Distinct names, left to right.

    Known faces go through facepipe.faces.known_faces (the CSE546 pickle read without
    unpickling) instead of the seeds' bare `pickle.load`: the same file read and parse per
    call, without running code from the file."""
    import face_recognition

    with tempfile.TemporaryDirectory(prefix="seed-frames-") as folder:
        pattern = str(Path(folder) / "image-%3d.jpeg")
        done = subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(video), "-r", "1", pattern],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise BenchError(f"ffmpeg failed on {video}: {done.stderr.strip()[-500:]}")
        known = load_for_conversion(known_faces)
        frames = sorted(Path(folder).glob("image-*.jpeg"))
        if not frames:
            return []
        image = face_recognition.load_image_file(str(frames[0]))
        boxes = face_recognition.face_locations(image)
        encodings = face_recognition.face_encodings(image, known_face_locations=boxes)
    names: list[str] = []
    for _box, encoding in sorted(zip(boxes, encodings, strict=True), key=lambda pair: pair[0][3]):
        name, _distance = known.match(encoding, tolerance)
        if name is not None and name not in names:
            names.append(name)
    return names


@dataclass
class ClipResult:
    """Step 1 for one clip: the timings of every round and the answers of both ways."""

    path: Path
    digest: str
    function_s: list[float] = field(default_factory=list)
    seed_s: list[float] = field(default_factory=list)
    function_cpu_s: list[float] = field(default_factory=list)
    seed_cpu_s: list[float] = field(default_factory=list)
    function_people: list[str] = field(default_factory=list)
    seed_people: list[str] = field(default_factory=list)
    correct: bool = False
    detail: str = ""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def same(self) -> bool:
        return self.function_people == self.seed_people

    @property
    def function_median(self) -> float:
        return median(self.function_s)

    @property
    def seed_median(self) -> float:
        return median(self.seed_s)


@contextlib.contextmanager
def one_cpu(enabled: bool = True) -> Iterator[int | None]:
    """Pin every thread of this process (and so the ffmpeg it starts) to one CPU, the last
    one it may use, and restore the old affinity afterwards. Step 1 measures compute per
    video on one core, like a function replica serving one video at a time."""
    if not enabled or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    allowed = os.sched_getaffinity(0)
    chosen = max(allowed)
    for thread in psutil.Process().threads():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(thread.id, {chosen})
    try:
        yield chosen
    finally:
        for thread in psutil.Process().threads():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(thread.id, allowed)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the seeds' ffmpeg): less
    sensitive than wall time to other programs on a shared machine."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def compute_settings(known_faces: Path) -> Settings:
    """The function's settings for step 1: recognition parameters from the environment (as
    the stack's workers get them), no `.env`, the given known faces (as JSON, which is all
    the function reads: a pickle is converted, as the stack does at start)."""
    return dataclasses.replace(load_settings(env_file=os.devnull), known_faces=str(function_known_faces(known_faces)))


def function_known_faces(known_faces: Path) -> Path:
    """`known_faces` itself, or for a pickle its JSON conversion in a temporary folder that
    is removed when the process exits."""
    if not is_pickle(known_faces):
        return known_faces
    folder = Path(tempfile.mkdtemp(prefix="facepipe-bench-faces-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    converted = folder / "known_faces.json"
    converted.write_text(load_for_conversion(known_faces).to_json())
    return converted


def measure_compute(
    clips: list[Path],
    known_faces: Path,
    rounds: int,
    mapping: dict[str, MappingEntry],
    students: dict[str, Student],
    say: Callable[[str], None],
) -> list[ClipResult]:
    """Step 1. The two ways alternate clip by clip, so that machine noise hits both alike."""
    from facepipe.faces.task import FaceRecognitionTask

    task = FaceRecognitionTask(compute_settings(known_faces))
    say(f"compute: warm-up on {clips[0].name} (not counted)")
    task.compute(clips[0])
    seed_style_recognize(clips[0], known_faces)
    results = [ClipResult(path, file_digest(path)) for path in clips]
    for number in range(1, rounds + 1):
        for result in results:
            started, cpu = time.perf_counter(), cpu_seconds()
            recognition = task.compute(result.path)
            result.function_s.append(time.perf_counter() - started)
            result.function_cpu_s.append(cpu_seconds() - cpu)
            result.function_people = recognition.people
            started, cpu = time.perf_counter(), cpu_seconds()
            result.seed_people = seed_style_recognize(result.path, known_faces)
            result.seed_s.append(time.perf_counter() - started)
            result.seed_cpu_s.append(cpu_seconds() - cpu)
        say(f"compute: round {number}/{rounds} done")
    for result in results:
        result.correct, result.detail = judge_people(mapping.get(result.name), result.function_people, students)
    return results


@dataclass
class ClassroomRun:
    """The function's time on the generated classroom clip (`make accuracy`'s): eight faces at
    three scales, three entering late, long GOP; what crowded frames cost beside CSE546's."""

    clip: str
    function_s: float
    function_cpu_s: float
    found: list[str]
    expected: list[str]


def measure_classroom(
    cse546: Path, known_faces: Path, rounds: int, folder: Path, say: Callable[[str], None]
) -> ClassroomRun:
    """Build the classroom clip from the CSE546 clips and time the face task on it (median of
    `rounds`, after one warm run)."""
    from facepipe.faces.task import FaceRecognitionTask
    from facepipe_tools.accuracy import material
    from facepipe_tools.accuracy.cases import CLASSROOM, build

    case = next(case for case in material(cse546, {CLASSROOM}) if case.name.endswith(".mp4"))
    say(f"compute: the classroom clip {case.name} ({case.what})")
    (path,) = build([case], folder)
    task = FaceRecognitionTask(compute_settings(known_faces))
    found = task.compute(path).people
    wall, cpu = [], []
    for _ in range(rounds):
        started, cpu_before = time.perf_counter(), cpu_seconds()
        task.compute(path)
        wall.append(time.perf_counter() - started)
        cpu.append(cpu_seconds() - cpu_before)
    return ClassroomRun(case.name, median(wall), median(cpu), sorted(found), sorted(case.people))


# ----------------------------------------------------------------------------- the stack


@dataclass
class Upload:
    key: str
    path: Path
    started: float  # time.time()
    done: float


@dataclass
class Answer:
    key: str  # the output object
    is_error: bool
    seen_at: float  # time.time() of the listing that first showed it
    last_modified: datetime


@dataclass
class WorkerMetrics:
    """Totals over the function workers' /metrics (each process counts from its start)."""

    videos: float = 0.0
    video_s: float = 0.0
    compute_s: float = 0.0  # decode + detect stages

    def minus(self, other: WorkerMetrics) -> WorkerMetrics:
        return WorkerMetrics(self.videos - other.videos, self.video_s - other.video_s, self.compute_s - other.compute_s)


def worker_metrics(samples: metrics_client.Samples) -> WorkerMetrics:
    """One worker's counts: videos, seconds per video, decode + detect seconds."""
    return WorkerMetrics(
        videos=samples.value("facerec_video_seconds_count"),
        video_s=samples.value("facerec_video_seconds_sum"),
        compute_s=samples.value("facerec_stage_seconds_sum", stage="decode")
        + samples.value("facerec_stage_seconds_sum", stage="detect"),
    )


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far, None when it is gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def machine_busy_cpu_s() -> float:
    """CPU seconds all cores have spent not idle (nor waiting for I/O) since boot."""
    times = psutil.cpu_times()  # guest time is already part of user time
    return times.user + times.nice + times.system + times.irq + times.softirq + times.steal


@dataclass
class EndToEnd:
    """Step 2 (or one scaling run)."""

    workers: int
    videos: int
    correct: int
    wall_s: float
    latencies: list[float]
    #: Step 1's one-core time of each video's clip, summed, / workers.
    quiet_floor_s: float
    latency_source: str
    function: WorkerMetrics
    problems: list[str]
    #: CPU seconds per component during the run (see BenchStack.cpu_snapshot).
    cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.videos / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def floor_s(self) -> float:
        """The function's compute (decode, detect, encode) in this run, as it timed it, / workers."""
        return self.function.compute_s / self.workers

    @property
    def efficiency(self) -> float:
        return self.floor_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def quiet_efficiency(self) -> float:
        return self.quiet_floor_s / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class IdleRun:
    clip: str
    latency_s: float
    compute_s: float
    people: list[str]
    expected: list[str]

    @property
    def overhead_s(self) -> float:
        return self.latency_s - self.compute_s


class BenchStack:
    """The bench's own LocalStack: a temporary state folder, free loopback ports, the CSE546
    known faces and students; and the S3 calls the bench makes on it."""

    def __init__(self, cse546: Path, workers: int, say: Callable[[str], None]) -> None:
        self.say = say
        self.state_dir = Path(tempfile.mkdtemp(prefix="facepipe-bench-"))
        self.stack = LocalStack(
            self.state_dir,
            env_file=self.state_dir / "env",
            mon_port=free_port(),
            rgw_port=free_port(),
            dynamodb_port=free_port(),
            gateway_port=free_port(),
            notifier_port=free_port(),
            worker_base_port=free_port_range(2 * max(workers, 2)),  # 2 workers at most, and their metrics ports
            workers=workers,
            known_faces=cse546 / "encoding",
            student_data=cse546 / "student_data.json",
            components=BENCH_COMPONENTS,
            log=self._stack_log,
        )
        self.workers = workers
        self.settings: Settings = Settings()  # the stack's, once it is up
        self._s3 = None

    def _stack_log(self, line: str) -> None:
        self.say(f"stack: {line}")

    def up(self) -> None:
        self.stack.up()
        self.settings = self.stack.settings()
        self._s3 = s3_client(self.settings, max_pool_connections=16)

    @property
    def s3(self):
        if self._s3 is None:
            raise BenchError("the stack is not up")
        return self._s3

    def set_workers(self, workers: int) -> None:
        """Restart the function runner (and the notifier after it) with another worker count."""
        self.stack = LocalStack(self.state_dir, workers=workers, components=BENCH_COMPONENTS, log=self._stack_log)
        self.stack.up()
        self.workers = workers

    def down(self) -> None:
        try:
            if self.stack.config_path.is_file():
                self.stack.down()
        finally:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    # -- state

    def wait_idle(self, timeout_s: float = 120.0) -> None:
        """Until the notifier has nothing queued or running (twice in a row)."""
        if not notifier_probe.wait_idle(self.stack.settings_env()["NOTIFY_URL"], timeout_s, interval_s=0.05):
            raise BenchError(f"the notifier was still busy after {timeout_s:.0f} s")

    def clear(self) -> None:
        """Empty both buckets (input first, so that the reconciler has nothing to redo)."""
        self.wait_idle()
        for bucket in (self.settings.input_bucket, self.settings.output_bucket):
            clear_bucket(self.s3, bucket)

    def worker_pids(self) -> list[int]:
        return self.stack.pids("function")[1:]  # the runner (gateway) first, then its workers

    def worker_metrics(self) -> WorkerMetrics:
        total = WorkerMetrics()
        base = self.stack.config.worker_base_port
        for port in range(base, base + self.workers):
            one = worker_metrics(metrics_client.fetch(f"http://127.0.0.1:{port}/metrics"))
            total = WorkerMetrics(
                total.videos + one.videos, total.video_s + one.video_s, total.compute_s + one.compute_s
            )
        return total

    def cpu_snapshot(self) -> dict[str, float]:
        """CPU seconds so far of each part of the stack, of the bench itself (uploads, polling)
        and of the whole machine ("other" in the report: whatever else ran)."""
        groups: dict[str, list[int]] = {}
        for component in BENCH_COMPONENTS:
            pids = self.stack.pids(component)
            if component == "function":  # the runner (gateway) first, then its workers
                groups["function gateway"], groups["function workers"] = pids[:1], pids[1:]
            else:
                groups[component] = pids
        snapshot = {name: sum(filter(None, map(process_cpu_s, pids))) for name, pids in groups.items()}
        snapshot["bench (uploads, polling)"] = time.process_time()
        snapshot["machine"] = machine_busy_cpu_s()
        return snapshot

    # -- traffic

    def upload(self, files: list[Path], prefix: str = "", concurrency: int = 8) -> list[Upload]:
        """Upload concurrently (key = prefix + file name); per-file start and end times. A file
        below the multipart threshold goes as one PutObject, which is what upload_file sends
        for it too, without s3transfer's bookkeeping (about 1 ms of the bench's CPU a photo,
        taken from the stack it measures)."""

        def one(path: Path) -> Upload:
            key = prefix + path.name
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            bucket = self.settings.input_bucket
            started = time.time()
            if path.stat().st_size < _TRANSFER.multipart_threshold:
                self.s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), ContentType=content_type)
            else:
                self.s3.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": content_type}, Config=_TRANSFER)
            return Upload(key, path, started, time.time())

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            return list(pool.map(one, files))

    def list_output(self) -> dict[str, dict]:
        return {obj["Key"]: obj for obj in answers.list_objects(self.s3, self.settings.output_bucket)}

    def wait_answers(self, keys: list[str], timeout_s: float) -> dict[str, Answer]:
        """Poll the output listing until every key has a CSV or an error record."""
        wanted = {}
        for key in keys:
            wanted[result_key(key)] = (key, False)
            wanted[error_key(key)] = (key, True)
        answered: dict[str, Answer] = {}
        deadline = time.monotonic() + timeout_s
        while len(answered) < len(keys):
            if time.monotonic() > deadline:
                missing = sorted(set(keys) - set(answered))
                raise BenchError(
                    f"{len(missing)} of {len(keys)} videos had no result after {timeout_s:.0f} s, e.g. {missing[0]!r}"
                )
            listing = self.list_output()
            now = time.time()
            for output_key, obj in listing.items():
                if output_key in wanted:
                    key, is_error = wanted[output_key]
                    if key not in answered:
                        answered[key] = Answer(output_key, is_error, now, obj["LastModified"])
            time.sleep(RESULTS_POLL_S)
        return answered

    def run_end_to_end(
        self,
        files: list[Path],
        mapping: dict[str, MappingEntry],
        compute_by_digest: dict[str, float],
        timeout_s: float,
    ) -> EndToEnd:
        """Step 2: upload every file, wait for every answer, judge them with the mapping."""
        self.clear()
        before = self.worker_metrics()
        cpu_before = self.cpu_snapshot()
        uploads = self.upload(files)
        answered = self.wait_answers([u.key for u in uploads], timeout_s)
        self.wait_idle()
        cpu_after = self.cpu_snapshot()
        function = self.worker_metrics().minus(before)

        # Listings give LastModified in milliseconds (HEAD only in whole seconds): use it when
        # it has sub-second digits, else the time the polling loop first saw the answer.
        precise = any(answer.last_modified.microsecond for answer in answered.values())
        source = "LastModified" if precise else f"listing poll ({RESULTS_POLL_S * 1000:.0f} ms)"
        done_at = {}
        for key, answer in answered.items():
            done_at[key] = answer.last_modified.timestamp() if precise else answer.seen_at
        latencies = [done_at[u.key] - u.done for u in uploads]
        wall = max(done_at.values()) - min(u.started for u in uploads)

        entries = [mapping[u.key] for u in uploads if u.key in mapping]
        problems = [f"{u.key}: no mapping entry" for u in uploads if u.key not in mapping]
        rows = check(self.settings, entries, wait_s=0.0, s3=self.s3)
        correct = sum(row.status == OK for row in rows)
        problems += [
            f"{row.video}: {row.status}: {row.detail} (expected {row.expected}, got {row.got or '-'})"
            for row in rows
            if row.status != OK
        ]

        fallback = mean(list(compute_by_digest.values()))
        floor = 0.0
        for upload in uploads:
            digest = file_digest(upload.path)
            if digest not in compute_by_digest:
                problems.append(f"{upload.key}: not a copy of a measured clip; its floor uses the mean")
            floor += compute_by_digest.get(digest, fallback)
        return EndToEnd(
            workers=self.workers,
            videos=len(uploads),
            correct=correct,
            wall_s=wall,
            latencies=latencies,
            quiet_floor_s=floor / self.workers,
            latency_source=source,
            cpu_s={name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after},
            function=function,
            problems=problems,
        )

    def warm_up(self, clips: list[Path]) -> None:
        """One video per worker, at once, so every worker has served a request (not counted)."""
        self.clear()
        chosen = [clips[i % len(clips)] for i in range(self.workers)]
        uploads = self.upload(chosen, prefix="warmup_")
        self.wait_answers([u.key for u in uploads], timeout_s=180)
        self.clear()

    def upload_alone(self, path: Path, timeout_s: float) -> tuple[Upload, float]:
        """One file on the idle stack: the upload and its latency to the CSV, which is HEADed
        every IDLE_POLL_S after the upload."""
        self.wait_idle()
        time.sleep(0.3)
        upload = self.upload([path], prefix="idle_", concurrency=1)[0]
        output = result_key(upload.key)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.s3.head_object(Bucket=self.settings.output_bucket, Key=output)
                return upload, time.time() - upload.done
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                    raise
            if time.monotonic() > deadline:
                raise BenchError(f"idle run: no {output} after {timeout_s:.0f} s")
            time.sleep(IDLE_POLL_S)

    def idle_latency(self, clips: list[ClipResult], timeout_s: float = 120.0) -> list[IdleRun]:
        """Step 3: each clip alone on the idle stack."""
        self.clear()
        runs = []
        for clip in clips:
            upload, latency = self.upload_alone(clip.path, timeout_s)
            output = result_key(upload.key)
            body = self.s3.get_object(Bucket=self.settings.output_bucket, Key=output)["Body"].read().decode()
            people = [student.name for student in parse_csv(body)]
            runs.append(IdleRun(clip.name, latency, clip.function_median, people, clip.function_people))
        return runs


# ----------------------------------------------------------------------------- report


@dataclass
class Target:
    name: str
    wanted: str
    value: float | None
    met: bool | None  # None: not measured


def at_least(value: float | None, bound: float | None) -> bool | None:
    """Whether a target `value >= bound` is met; None when either was not measured."""
    return None if value is None or bound is None else value >= bound


def at_most(value: float | None, bound: float | None) -> bool | None:
    """Whether a target `value <= bound` is met; None when either was not measured."""
    return None if value is None or bound is None else value <= bound


def targets(report: dict) -> list[Target]:
    """The issue's performance targets, each met, not met or not measured."""
    function_s = report.get("function_s_per_video")
    idle_bound = None if function_s is None else function_s + 0.25
    speedup = report.get("speedup_vs_seed")
    efficiency = report.get("e2e_efficiency")
    idle = report.get("idle_latency_s")
    rss = report.get("rss_mb_per_worker")
    idle_wanted = "<= function_s_per_video + 0.25" + ("" if idle_bound is None else f" = {idle_bound:.3f}")
    return [
        Target("speedup_vs_seed", f">= {SPEEDUP_TARGET:g}", speedup, at_least(speedup, SPEEDUP_TARGET)),
        Target("e2e_efficiency", ">= 0.85", efficiency, at_least(efficiency, 0.85)),
        Target("idle_latency_s", idle_wanted, idle, at_most(idle, idle_bound)),
        Target("rss_mb_per_worker", "<= 400", rss, at_most(rss, 400)),
    ]


def json_line(report: dict) -> str:
    """The report as one line of JSON, the required keys first (null when not measured)."""
    ordered = {key: report.get(key) for key in REQUIRED_KEYS}
    ordered.update({key: value for key, value in report.items() if key not in ordered})
    return json.dumps(ordered, separators=(",", ":"), allow_nan=False)


def _fmt(value: float | None, unit: str = "", digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}{unit}"


def render(
    report: dict, clips: list[ClipResult], runs: dict[int, EndToEnd], idle: list[IdleRun], console: Console
) -> None:
    if clips:
        table = Table(title=f"1. compute per video, one core (median of {report['rounds']} rounds)")
        columns = ("clip", "people", "function s", "seed's way s", "speedup", "function cpu s", "seed's way cpu s")
        for column in columns:
            table.add_column(column, justify="left" if column in ("clip", "people") else "right")
        table.add_column("same answer")
        table.add_column("right answer")
        for clip in clips:
            table.add_row(
                clip.name,
                escape(",".join(clip.function_people) or "(nobody)"),
                _fmt(clip.function_median),
                _fmt(clip.seed_median),
                _fmt(ratio(clip.seed_median, clip.function_median), "x", 1),
                _fmt(median(clip.function_cpu_s)),
                _fmt(median(clip.seed_cpu_s)),
                "yes" if clip.same else f"[bold red]NO: seed's way {escape(','.join(clip.seed_people) or '-')}[/]",
                "yes" if clip.correct else f"[bold red]NO: {escape(clip.detail)}[/]",
            )
        table.add_row(
            "mean", "", _fmt(report["function_s_per_video"]), _fmt(report["seed_style_s_per_video"]),
            _fmt(report["speedup_vs_seed"], "x", 1), _fmt(report["function_cpu_s_per_video"]),
            _fmt(report["seed_style_cpu_s_per_video"]), "", "", style="bold",
        )  # fmt: skip
        console.print(table)
    if report.get("classroom_clip"):
        room = report["classroom_clip"]
        console.print(
            f"classroom clip {room['clip']}: function {_fmt(room['function_s'])} s, "
            f"cpu {_fmt(room['function_cpu_s'])} s (median of {report['rounds']}), people found {room['people_found']}",
            markup=False,
        )

    if runs:
        table = Table(title="2./5. end to end (upload -> notification -> function -> CSV)")
        for column in (
            "workers",
            "videos",
            "correct",
            "wall s",
            "videos/s",
            "p50 s",
            "p95 s",
            "floor s",
            "efficiency",
            "quiet floor s",
            "quiet efficiency",
            "function busy s",
        ):
            table.add_column(column, justify="right")
        for workers, run in sorted(runs.items()):
            table.add_row(
                str(workers), str(run.videos), f"{run.correct}/{run.videos}", _fmt(run.wall_s, digits=2),
                _fmt(run.throughput, digits=2), _fmt(percentile(run.latencies, 0.5)),
                _fmt(percentile(run.latencies, 0.95)), _fmt(run.floor_s, digits=2), _fmt(run.efficiency, digits=2),
                _fmt(run.quiet_floor_s, digits=2), _fmt(run.quiet_efficiency, digits=2),
                _fmt(run.function.video_s, digits=2),
            )  # fmt: skip
        console.print(table)
        console.print(
            "floor = the function's compute in this run (decode + detect + encode, its facerec_stage_seconds) / "
            "workers; quiet floor = sum over the videos of step 1's one-core time for that clip / workers; "
            "function busy = the workers' facerec_video_seconds (download to upload); "
            f"latency = upload done -> CSV ({report.get('e2e_latency_source')})",
            style="dim",
        )
        cpu = report.get("e2e_cpu_s") or {}
        if cpu:
            videos = report["e2e_videos"] or 1
            table = Table(title=f"CPU during the {report['workers']}-worker end-to-end run ({os.cpu_count()} cores)")
            for column in ("process", "cpu s", "ms per video", "share"):
                table.add_column(column, justify="left" if column == "process" else "right")
            for name, seconds in cpu.items():
                share = seconds / cpu["total"] if cpu["total"] else 0.0
                style = "bold" if name == "total" else None
                table.add_row(name, f"{seconds:.2f}", f"{seconds / videos * 1000:.0f}", f"{share:.0%}", style=style)
            console.print(table)

    if idle:
        table = Table(title="3. idle latency (one video at a time, upload done -> CSV present)")
        for column in ("clip", "latency s", "function s", "overhead s", "people"):
            table.add_column(column, justify="left" if column in ("clip", "people") else "right")
        for run in idle:
            table.add_row(
                run.clip,
                _fmt(run.latency_s),
                _fmt(run.compute_s),
                _fmt(run.overhead_s),
                ",".join(run.people) or "(nobody)",
            )
        table.add_row(
            "mean",
            _fmt(report["idle_latency_s"]),
            _fmt(report["function_s_per_video"]),
            _fmt(report.get("idle_overhead_s")),
            "",
            style="bold",
        )
        console.print(table)

    table = Table(title="targets")
    for column in ("metric", "value", "target", "met"):
        table.add_column(column)
    for target in targets(report):
        met = {True: "[green]met[/]", False: "[bold red]not met[/]", None: "[yellow]not measured[/]"}[target.met]
        table.add_row(target.name, _fmt(target.value), target.wanted, met)
    console.print(table)
    if report.get("rss_mb_workers"):
        console.print(f"peak RSS per worker (VmHWM): {', '.join(f'{mb:.0f} MiB' for mb in report['rss_mb_workers'])}")
    for problem in report.get("problems", []):
        console.print(f"[bold red]problem:[/] {escape(problem)}", highlight=False)
    verdict = "[bold green]answers OK[/]" if report["ok"] else "[bold red]FAILED[/]"
    console.print(f"{verdict} in {report['elapsed_s']:.0f} s")


def cpu_breakdown(cpu_s: dict[str, float]) -> dict[str, float]:
    """Per-component CPU seconds of a run, "other" (the machine's rest) and "total"."""
    if "machine" not in cpu_s:
        return {}
    parts = {name: seconds for name, seconds in cpu_s.items() if name != "machine"}
    parts["other"] = max(0.0, cpu_s["machine"] - sum(parts.values()))
    parts["total"] = cpu_s["machine"]
    return {name: round(seconds, 2) for name, seconds in parts.items()}


def build_report(
    clips: list[ClipResult],
    runs: dict[int, EndToEnd],
    main_workers: int | None,
    idle: list[IdleRun],
    rss: list[float],
    rounds: int,
    classroom: ClassroomRun | None = None,
) -> dict:
    report: dict = {key: None for key in REQUIRED_KEYS}
    problems: list[str] = []
    report["rounds"] = rounds
    if classroom is not None:
        report["classroom_clip"] = {
            "clip": classroom.clip,
            "function_s": rounded(classroom.function_s, 4),
            "function_cpu_s": rounded(classroom.function_cpu_s, 4),
            "people_found": f"{len(set(classroom.found) & set(classroom.expected))}/{len(classroom.expected)}",
        }
        if classroom.found != classroom.expected:
            problems.append(f"classroom clip: found {classroom.found}, expected {classroom.expected}")
    if clips:
        function_s = mean([clip.function_median for clip in clips])
        seed_s = mean([clip.seed_median for clip in clips])
        report["function_s_per_video"] = rounded(function_s, 4)
        report["seed_style_s_per_video"] = rounded(seed_s, 4)
        report["speedup_vs_seed"] = rounded(seed_s / function_s, 2)
        function_cpu = mean([median(clip.function_cpu_s) for clip in clips])
        seed_cpu = mean([median(clip.seed_cpu_s) for clip in clips])
        report["function_cpu_s_per_video"] = rounded(function_cpu, 4)
        report["seed_style_cpu_s_per_video"] = rounded(seed_cpu, 4)
        report["speedup_vs_seed_cpu"] = rounded(ratio(seed_cpu, function_cpu), 2)
        report["answers_identical"] = all(clip.same for clip in clips)
        report["answers_correct"] = all(clip.correct for clip in clips)
        report["clips"] = {
            clip.name: {
                "function_s": rounded(clip.function_median, 4),
                "seed_style_s": rounded(clip.seed_median, 4),
                "people": clip.function_people,
            }
            for clip in clips
        }
        for clip in clips:
            if not clip.same:
                problems.append(
                    f"{clip.name}: the function found {clip.function_people}, the seeds' way {clip.seed_people}"
                )
            if not clip.correct:
                problems.append(f"{clip.name}: the function's answer is wrong: {clip.detail}")
    main = runs.get(main_workers) if main_workers is not None else None
    if main is not None:
        report["workers"] = main.workers
        report["e2e_videos"] = main.videos
        report["e2e_correct"] = main.correct
        report["e2e_wall_s"] = rounded(main.wall_s)
        report["e2e_throughput"] = rounded(main.throughput)
        report["e2e_floor_s"] = rounded(main.floor_s)
        report["e2e_efficiency"] = rounded(main.efficiency)
        report["e2e_floor_quiet_s"] = rounded(main.quiet_floor_s)
        report["e2e_efficiency_quiet"] = rounded(main.quiet_efficiency)
        report["e2e_cpu_s"] = cpu_breakdown(main.cpu_s)
        report["e2e_p50_s"] = rounded(percentile(main.latencies, 0.5))
        report["e2e_p95_s"] = rounded(percentile(main.latencies, 0.95))
        report["e2e_latency_source"] = main.latency_source
        report["e2e_function_busy_s"] = rounded(main.function.video_s)
        report["e2e_function_compute_s"] = rounded(main.function.compute_s)
    for workers, run in runs.items():
        report[f"throughput_{workers}_worker{'s' if workers != 1 else ''}"] = rounded(run.throughput)
        report[f"e2e_correct_{workers}_worker{'s' if workers != 1 else ''}"] = run.correct
        problems += [f"{workers} worker(s): {problem}" for problem in run.problems]
        if run.correct != run.videos:
            problems.append(f"{workers} worker(s): {run.correct}/{run.videos} correct")
    if idle:
        report["idle_latency_s"] = rounded(mean([run.latency_s for run in idle]))
        report["idle_overhead_s"] = rounded(mean([run.overhead_s for run in idle]))
        for run in idle:
            if run.people != run.expected:
                problems.append(f"idle {run.clip}: got {run.people}, expected {run.expected}")
    if rss:
        report["rss_mb_per_worker"] = rounded(max(rss), 1)
        report["rss_mb_workers"] = [rounded(mb, 1) for mb in rss]
    report["targets"] = {target.name: target.met for target in targets(report)}
    report["problems"] = problems
    report["ok"] = not problems
    return report


# ----------------------------------------------------------------------------- main


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.py",
        description="Benchmark the function against the seeds' way and the pipeline end to end "
        "(own local stack, stopped at the end). Last line of stdout: one JSON object.",
    )
    parser.add_argument(
        "--cse546",
        type=Path,
        default=cse546_dir(),
        help="the CSE546 data folder (default: $CSE546_DIR or ../shared/cse546)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="function workers of the end-to-end run (default: cores)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of step 1 (median per clip)")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for all end-to-end results of one run"
    )
    parser.add_argument("--compute-only", action="store_true", help="step 1 only, no stack")
    parser.add_argument("--no-pin", action="store_true", help="do not pin step 1 to one CPU")
    from facepipe_tools import bench_classify  # it builds on this module

    bench_classify.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.no_classification and args.only_classification:
        parser.error("--no-classification and --only-classification exclude each other")
    if args.workers < 1 or args.rounds < 1:
        parser.error("--workers and --rounds must be at least 1")
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return run(args)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def run(args: argparse.Namespace) -> int:
    """The whole benchmark; see the module docstring for what it measures and returns."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 160
    status = Console(stderr=True, highlight=False)
    started = time.monotonic()
    load_start = [round(value, 2) for value in os.getloadavg()]

    def say(message: str) -> None:
        status.print(
            f"[dim]\\[bench {time.monotonic() - started:5.1f}s][/] {escape(message)}",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )

    # Ctrl-C and TERM stop the run and then the stack (even when started with INT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    from facepipe_tools import bench_classify  # it builds on this module

    if args.only_classification:
        return bench_classify.run_alone(args, say, console)
    clips: list[ClipResult] = []
    runs: dict[int, EndToEnd] = {}
    idle: list[IdleRun] = []
    rss: list[float] = []
    classroom: ClassroomRun | None = None
    stack: BenchStack | None = None
    failure: str | None = None
    code = 0
    try:
        cse546 = args.cse546.resolve()
        case1, case2 = cse546 / "test_cases" / "test_case_1", cse546 / "test_cases" / "test_case_2"
        for path in (cse546 / "mapping", cse546 / "encoding", cse546 / "student_data.json", case1, case2):
            if not path.exists():
                raise BenchError(f"{path} not found (set CSE546_DIR or --cse546 to the CSE546 data folder)")
        if shutil.which("ffmpeg") is None:
            raise BenchError("ffmpeg is not installed (make install)")
        mapping = {entry.video: entry for entry in load_mapping(cse546 / "mapping")}
        students = students_by_name(cse546 / "student_data.json")
        distinct = distinct_files(collect_media([case1]))
        videos = collect_media([case2])
        say(f"{len(distinct)} distinct clips in {case1}, {len(videos)} videos in {case2}")

        if not args.compute_only:
            stack = BenchStack(cse546, args.workers, say)
            say(f"starting the bench's stack in {stack.state_dir} ({args.workers} worker(s))")
            stack.up()
        with one_cpu(not args.no_pin) as cpu:
            say(
                f"compute: {len(distinct)} clips x {args.rounds} rounds, "
                + (f"pinned to CPU {cpu}" if cpu is not None else "not pinned")
            )
            clips = measure_compute(distinct, cse546 / "encoding", args.rounds, mapping, students, say)
            with tempfile.TemporaryDirectory(prefix="facepipe-bench-classroom-") as folder:
                classroom = measure_classroom(cse546, cse546 / "encoding", args.rounds, Path(folder), say)
        if stack is not None:
            compute_by_digest = {clip.digest: clip.function_median for clip in clips}
            say("end to end: warm-up")
            stack.warm_up(distinct)
            say(f"end to end: {len(videos)} videos, {args.workers} worker(s)")
            runs[args.workers] = stack.run_end_to_end(videos, mapping, compute_by_digest, args.timeout)
            say("idle latency: one video at a time")
            idle = stack.idle_latency(clips)
            rss = [mb for mb in (peak_rss_mb(pid) for pid in stack.worker_pids()) if mb is not None]
            for workers in (1, 2):
                if workers in runs:
                    continue
                say(f"scaling: restarting the function with {workers} worker(s)")
                stack.set_workers(workers)
                stack.warm_up(distinct)
                say(f"scaling: {len(videos)} videos, {workers} worker(s)")
                runs[workers] = stack.run_end_to_end(videos, mapping, compute_by_digest, args.timeout)
    except KeyboardInterrupt:
        failure, code = "interrupted", 130
    except Exception as exc:  # report any failure in the JSON line, then exit non-zero
        failure, code = f"{type(exc).__name__}: {exc}", 2
        log = getattr(exc, "log", None)
        if log is not None:
            failure += f" (see {log})"
    finally:
        if stack is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the stack stop completely
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            say("stopping the bench's stack")
            try:
                stack.down()
            except Exception as exc:
                say(f"could not stop the stack cleanly: {exc}")
                code = code or 2

    report = build_report(clips, runs, None if args.compute_only else args.workers, idle, rss, args.rounds, classroom)
    if failure is not None:
        report["problems"].append(f"run failed: {failure}")
        report["ok"] = False
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    report["cpus"] = os.cpu_count()
    report["loadavg_start"] = load_start
    report["loadavg_end"] = [round(value, 2) for value in os.getloadavg()]
    render(report, clips, runs, idle, console)
    if not args.no_classification and code != 130:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _raise_interrupt)
        report, code = bench_classify.merge(report, code, *bench_classify.run_section(args, say, console))
        report["elapsed_s"] = round(time.monotonic() - started, 1)
    sys.stdout.flush()
    print(json_line(report), flush=True)
    if code:
        return code
    return 0 if report["ok"] else 1
