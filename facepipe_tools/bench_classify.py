"""`make bench`, image classification: the function against the seeds' way, and the image
route of the pipeline end to end (run after the face bench; `bench.py --only-classification`
runs this part alone, `--no-classification` skips it).

1. **Compute**: the built-in photo sample (facepipe_tools/sample.py) and generated variants of
   it (resized, re-encoded JPEGs with distinct bytes) up to `E2E_IMAGES` photos. For each, the
   function's `ImageClassificationTask.compute` time on one core (model loaded once, a
   warm-up call excluded), median of `--rounds` rounds. For each sample photo, the seeds' way
   too: a new Python process per image that loads the model (facepipe.classify.model,
   one thread) and classifies it, as the seeds' app tier runs its classification script
   per request. Both must name the same top label; the sample photos' labels are judged
   against data/sample_image_mapping.
2. **End to end**: every photo uploaded at once to the image input bucket of the bench's own
   local stack (1 face worker, which the stack needs, idle; `--image-workers` classification
   workers): wall time, throughput, correct count (the top label step 1 found for that
   photo), compute floor (the workers' decode + classify seconds in this run / workers)
   and efficiency = floor / wall; and the CPU seconds of every process of the stack, with
   their sum per image (`e2e_stack_cpu_ms_per_image`) and the shortest wall time the cores
   allow for it (`e2e_cpu_bound_s`): CPU time, unlike wall time, holds up on a loaded machine.
3. **Idle latency**: each sample photo alone, upload done -> CSV present, against the
   function's time for it + `IDLE_MARGIN_S`.
4. **Memory**: peak RSS (VmHWM) of each classification worker.

The figures go into a `classification` object of bench's JSON line (see `REQUIRED_KEYS`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from PIL import Image, ImageOps
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from facepipe.answers import Label, parse_labels_csv, result_key
from facepipe.settings import Settings, load_settings
from facepipe_tools import bench, sample
from facepipe_tools.bench import (
    BENCH_COMPONENTS,
    BenchError,
    BenchStack,
    EndToEnd,
    Target,
    WorkerMetrics,
    _fmt,
    at_least,
    at_most,
    file_digest,
    json_line,
    mean,
    median,
    one_cpu,
    ratio,
    rounded,
)
from facepipe_tools.function_runner import IMAGE_FUNCTION_DIR, worker_ports
from facepipe_tools.mapping import OK, ImageEntry, compare_labels, load_image_mapping
from facepipe_tools.metrics_client import Samples, fetch
from facepipe_tools.paths import REPO_ROOT
from facepipe_tools.stack import LocalStack, free_port, free_port_range
from facepipe_tools.stack.config import DEFAULT_KNOWN_FACES, DEFAULT_STUDENT_DATA
from facepipe_tools.stats import peak_rss_mb, percentile

#: Keys of the `classification` object that are always present (null when a phase did not run).
REQUIRED_KEYS = (
    "images",
    "function_ms_per_image",
    "seed_style_ms_per_image",
    "speedup_vs_seed",
    "e2e_images",
    "e2e_correct",
    "e2e_wall_s",
    "e2e_throughput",
    "e2e_floor_s",
    "e2e_efficiency",
    "idle_latency_s",
    "rss_mb_per_worker",
)
E2E_IMAGES = 100
SPEEDUP_TARGET = 10.0
EFFICIENCY_TARGET = 0.85
IDLE_MARGIN_S = 0.25
RSS_TARGET_MB = 250.0
SAMPLE_MAPPING = REPO_ROOT / "data" / "sample_image_mapping"
SEED_TIMEOUT_S = 120.0

#: The seeds' way for one photo, in a new process: load the model, classify, print the top label.
SEED_SCRIPT = textwrap.dedent(
    """
    import sys
    from PIL import Image
    from facepipe.classify.model import Classifier

    classifier = Classifier(sys.argv[1])
    with Image.open(sys.argv[2]) as image:
        print(classifier.classify(image, top=1)[0][0])
    """
)


# ----------------------------------------------------------------------------- photos


@dataclass
class Photo:
    """Step 1 for one photo: timings of every round and the top labels of both ways."""

    path: Path
    digest: str
    sample: bool  # one of the built-in sample photos (the seeds' way and idle latency run on these)
    accepted: list[str] = field(default_factory=list)  # the mapping's labels (sample photos)
    function_s: list[float] = field(default_factory=list)
    seed_s: list[float] = field(default_factory=list)
    function_label: str = ""
    seed_label: str = ""
    correct: bool = True
    detail: str = ""

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def same(self) -> bool:
        return not self.sample or self.function_label == self.seed_label

    @property
    def function_median(self) -> float:
        return median(self.function_s)

    @property
    def seed_median(self) -> float | None:
        return median(self.seed_s) if self.seed_s else None


def make_variant(source: Path, out: Path, number: int) -> None:
    """A resized JPEG of `source` (upright, RGB or grey), its size and quality chosen by
    `number` so that every variant has its own bytes."""
    scale = 0.6 + 0.1 * (number % 9)  # 0.6 .. 1.4
    with Image.open(source) as opened:
        image = ImageOps.exif_transpose(opened)
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        size = (max(32, round(image.width * scale)), max(32, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
        image.save(out, "JPEG", quality=70 + number % 25)


def build_photos(folder: Path, total: int = E2E_IMAGES) -> list[Photo]:
    """The sample photos, then variants of them up to `total` photos, all of distinct content."""
    samples = sample.build_image_sample(folder / "sample")
    mapping = {entry.image: entry for entry in load_image_mapping(SAMPLE_MAPPING)}
    photos = [
        Photo(path, file_digest(path), True, list(mapping[path.name].labels) if path.name in mapping else [])
        for path in samples
    ]
    variants = folder / "variants"
    variants.mkdir(parents=True, exist_ok=True)
    seen = {photo.digest for photo in photos}
    number = 0
    while len(photos) < total:
        source = samples[number % len(samples)]
        out = variants / f"variant_{number:03d}_{source.stem}.jpg"
        make_variant(source, out, number)
        digest = file_digest(out)
        if digest not in seen:
            seen.add(digest)
            photos.append(Photo(out, digest, False))
        number += 1
        if number > 10 * total:
            raise BenchError(f"could not make {total} distinct photos")
    return photos


# ----------------------------------------------------------------------------- 1. compute


def convert_model(folder: Path) -> Path:
    """The ONNX model, converted from the packaged weights into `folder` (as the stack does)."""
    model = folder / "efficientnet-lite0.onnx"
    done = subprocess.run(
        [sys.executable, "-m", "facepipe.classify.convert", "-o", str(model)],
        capture_output=True,
        text=True,
        timeout=SEED_TIMEOUT_S,
    )
    if done.returncode != 0 or not model.is_file():
        raise BenchError(f"converting the classifier failed: {done.stderr.strip()[-500:]}")
    return model


def seed_style_classify(model: Path, photo: Path) -> str:
    """The seeds' way: a new process that loads the model and classifies one photo (one thread)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SEED_SCRIPT, str(model), str(photo)],
        capture_output=True,
        text=True,
        timeout=SEED_TIMEOUT_S,
        cwd=REPO_ROOT,
        env=env,
    )
    if done.returncode != 0:
        raise BenchError(f"the seeds' way failed on {photo.name}: {done.stderr.strip()[-500:]}")
    return done.stdout.strip().splitlines()[-1]


def measure_compute(photos: list[Photo], model: Path, rounds: int, say: Callable[[str], None]) -> None:
    """Step 1, into `photos`. The two ways alternate photo by photo, so machine noise hits both alike."""
    from facepipe.classify.task import ImageClassificationTask

    settings = dataclasses.replace(load_settings(env_file=os.devnull), classifier_model=str(model))
    task = ImageClassificationTask(settings)
    say(f"classification compute: warm-up on {photos[0].name} (not counted)")
    task.compute(photos[0].path)
    seed_style_classify(model, photos[0].path)
    for number in range(1, rounds + 1):
        for photo in photos:
            started = time.perf_counter()
            found = task.compute(photo.path)
            photo.function_s.append(time.perf_counter() - started)
            photo.function_label = found.labels[0].label
            if photo.sample:
                started = time.perf_counter()
                photo.seed_label = seed_style_classify(model, photo.path)
                photo.seed_s.append(time.perf_counter() - started)
        say(f"classification compute: round {number}/{rounds} done")
    for photo in photos:
        if photo.accepted:
            entry = ImageEntry(photo.name, tuple(photo.accepted))
            status, photo.detail = compare_labels(entry, [Label(1, photo.function_label, 1.0)])
            photo.correct = status == OK


# ----------------------------------------------------------------------------- the stack


@dataclass
class IdleImage:
    name: str
    latency_s: float
    compute_s: float
    label: str
    expected: str

    @property
    def overhead_s(self) -> float:
        return self.latency_s - self.compute_s


def classify_metrics(samples: Samples) -> WorkerMetrics:
    """One classification worker's counts: images, seconds per image, decode + classify seconds."""
    return WorkerMetrics(
        videos=samples.value("facerec_video_seconds_count"),
        video_s=samples.value("facerec_video_seconds_sum"),
        compute_s=samples.value("facerec_stage_seconds_sum", stage="decode")
        + samples.value("facerec_stage_seconds_sum", stage="classify"),
    )


class ClassifyStack(BenchStack):
    """BenchStack for the image route: the built-in sample's faces and students (the face
    function needs them; its one worker stays idle), `image_workers` classification workers.
    BenchStack's traffic methods (upload, clear, wait_answers) use `settings.input_bucket` and
    `output_bucket`, which `up` points at the image buckets."""

    def __init__(self, image_workers: int, say: Callable[[str], None]) -> None:
        self.say = say
        self.state_dir = Path(tempfile.mkdtemp(prefix="facepipe-bench-classify-"))
        self.stack = LocalStack(
            self.state_dir,
            env_file=self.state_dir / "env",
            mon_port=free_port(),
            rgw_port=free_port(),
            dynamodb_port=free_port(),
            gateway_port=free_port(),
            notifier_port=free_port(),
            worker_base_port=free_port_range(2 * (1 + image_workers)),
            workers=1,
            image_workers=image_workers,
            known_faces=DEFAULT_KNOWN_FACES,
            student_data=DEFAULT_STUDENT_DATA,
            components=BENCH_COMPONENTS,
            log=self._stack_log,
        )
        self.workers = image_workers
        self.settings = Settings()
        self._s3 = None

    def up(self) -> None:
        super().up()
        self.settings = dataclasses.replace(
            self.settings,
            input_bucket=self.settings.image_input_bucket,
            output_bucket=self.settings.image_output_bucket,
        )

    def worker_pids(self) -> list[int]:
        """The classification workers (their folder is the function's)."""
        pids = []
        for pid in self.stack.pids("function")[1:]:
            try:
                if Path(psutil.Process(pid).cwd()) == IMAGE_FUNCTION_DIR:
                    pids.append(pid)
            except psutil.Error:
                continue
        return pids

    def worker_metrics(self) -> WorkerMetrics:
        total = WorkerMetrics()
        _faces, images = worker_ports(self.stack.config.worker_base_port, self.stack.config.workers, self.workers)
        for port in images.ports:
            one = classify_metrics(fetch(f"http://127.0.0.1:{port}/metrics"))
            total = WorkerMetrics(
                total.videos + one.videos, total.video_s + one.video_s, total.compute_s + one.compute_s
            )
        return total

    def read_top_label(self, key: str) -> str:
        body = self.s3.get_object(Bucket=self.settings.output_bucket, Key=result_key(key))["Body"].read().decode()
        labels = parse_labels_csv(body)
        return min(labels, key=lambda label: label.rank).label if labels else ""

    def run_images(self, photos: list[Photo], timeout_s: float) -> EndToEnd:
        """Step 2: upload every photo at once, wait for every answer, compare top labels with step 1's."""
        self.clear()
        before = self.worker_metrics()
        cpu_before = self.cpu_snapshot()
        uploads = self.upload([photo.path for photo in photos], concurrency=16)
        answered = self.wait_answers([u.key for u in uploads], timeout_s)
        self.wait_idle()
        cpu_after = self.cpu_snapshot()
        function = self.worker_metrics().minus(before)
        precise = any(answer.last_modified.microsecond for answer in answered.values())
        done_at = {
            key: answer.last_modified.timestamp() if precise else answer.seen_at for key, answer in answered.items()
        }
        by_name = {photo.name: photo for photo in photos}
        problems, correct = [], 0
        for upload in uploads:
            expected = by_name[upload.key].function_label
            if answered[upload.key].is_error:
                problems.append(f"{upload.key}: an error record instead of {expected!r}")
                continue
            got = self.read_top_label(upload.key)
            if got == expected:
                correct += 1
            else:
                problems.append(f"{upload.key}: top label {got!r}, step 1 found {expected!r}")
        return EndToEnd(
            workers=self.workers,
            videos=len(uploads),
            correct=correct,
            wall_s=max(done_at.values()) - min(u.started for u in uploads),
            latencies=[done_at[u.key] - u.done for u in uploads],
            quiet_floor_s=sum(photo.function_median for photo in photos) / self.workers,
            latency_source="LastModified" if precise else "listing poll",
            function=function,
            problems=problems,
            cpu_s={name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after},
        )

    def idle_images(self, photos: list[Photo], timeout_s: float = 60.0) -> list[IdleImage]:
        """Step 3: each photo alone on the idle stack."""
        self.clear()
        runs = []
        for photo in photos:
            upload, latency = self.upload_alone(photo.path, timeout_s)
            label = self.read_top_label(upload.key)
            runs.append(IdleImage(photo.name, latency, photo.function_median, label, photo.function_label))
        return runs


# ----------------------------------------------------------------------------- report


def stack_cpu_seconds(cpu_s: dict[str, float]) -> float | None:
    """CPU seconds of the stack's processes and the bench in a run (not the rest of the
    machine): little affected by other programs, unlike wall time. Divided by the cores it is
    the shortest wall time the cores allow (`e2e_cpu_bound_s`): a wall time near it means the
    run was CPU-bound, far above it that it waited (latency)."""
    parts = [seconds for name, seconds in cpu_s.items() if name != "machine"]
    return sum(parts) if parts else None


def targets(report: dict) -> list[Target]:
    """The issue's classification targets, each met, not met or not measured."""
    function_ms = report.get("function_ms_per_image")
    idle_bound = None if function_ms is None else function_ms / 1000 + IDLE_MARGIN_S
    speedup = report.get("speedup_vs_seed")
    efficiency = report.get("e2e_efficiency")
    idle = report.get("idle_latency_s")
    rss = report.get("rss_mb_per_worker")
    idle_wanted = f"<= function time + {IDLE_MARGIN_S}" + ("" if idle_bound is None else f" = {idle_bound:.3f}")
    return [
        Target("speedup_vs_seed", f">= {SPEEDUP_TARGET:g}", speedup, at_least(speedup, SPEEDUP_TARGET)),
        Target("e2e_efficiency", f">= {EFFICIENCY_TARGET:g}", efficiency, at_least(efficiency, EFFICIENCY_TARGET)),
        Target("idle_latency_s", idle_wanted, idle, at_most(idle, idle_bound)),
        Target("rss_mb_per_worker", f"<= {RSS_TARGET_MB:g}", rss, at_most(rss, RSS_TARGET_MB)),
    ]


def build_report(
    photos: list[Photo], run: EndToEnd | None, idle: list[IdleImage], rss: list[float], rounds: int
) -> dict:
    """The `classification` object: figures (null when not measured), targets, problems, ok."""
    report: dict = {key: None for key in REQUIRED_KEYS}
    problems: list[str] = []
    report["rounds"] = rounds
    samples = [photo for photo in photos if photo.sample and photo.function_s and photo.seed_s]
    if photos:
        report["images"] = len(photos)
        report["function_ms_all_images"] = rounded(mean([p.function_median for p in photos]) * 1000, 2)
    if samples:
        function_s = mean([photo.function_median for photo in samples])
        seed_s = mean([photo.seed_median or 0.0 for photo in samples])
        report["function_ms_per_image"] = rounded(function_s * 1000, 2)
        report["seed_style_ms_per_image"] = rounded(seed_s * 1000, 1)
        report["speedup_vs_seed"] = rounded(ratio(seed_s, function_s), 1)
        report["answers_identical"] = all(photo.same for photo in samples)
        report["answers_correct"] = all(photo.correct for photo in samples)
        report["photos"] = {
            photo.name: {
                "function_ms": rounded(photo.function_median * 1000, 2),
                "seed_style_ms": rounded((photo.seed_median or 0.0) * 1000, 1),
                "label": photo.function_label,
            }
            for photo in samples
        }
    for photo in photos:
        if not photo.same:
            problems.append(
                f"{photo.name}: the function found {photo.function_label!r}, the seeds' way {photo.seed_label!r}"
            )
        if not photo.correct:
            problems.append(f"{photo.name}: the function's answer is wrong: {photo.detail}")
    if run is not None:
        report["workers"] = run.workers
        report["e2e_images"] = run.videos
        report["e2e_correct"] = run.correct
        report["e2e_wall_s"] = rounded(run.wall_s)
        report["e2e_throughput"] = rounded(run.throughput, 2)
        report["e2e_floor_s"] = rounded(run.floor_s)
        report["e2e_efficiency"] = rounded(run.efficiency)
        report["e2e_floor_quiet_s"] = rounded(run.quiet_floor_s)
        report["e2e_efficiency_quiet"] = rounded(run.quiet_efficiency)
        report["e2e_p50_s"] = rounded(percentile(run.latencies, 0.5))
        report["e2e_p95_s"] = rounded(percentile(run.latencies, 0.95))
        report["e2e_function_busy_s"] = rounded(run.function.video_s)
        report["e2e_cpu_s"] = bench.cpu_breakdown(run.cpu_s)
        stack_cpu_s = stack_cpu_seconds(run.cpu_s)
        if stack_cpu_s is not None and run.videos:
            report["e2e_stack_cpu_ms_per_image"] = rounded(stack_cpu_s / run.videos * 1000, 1)
            report["e2e_cpu_bound_s"] = rounded(stack_cpu_s / (os.cpu_count() or 1))
        problems += run.problems
        if run.correct != run.videos and not run.problems:
            problems.append(f"end to end: {run.correct}/{run.videos} correct")
    if idle:
        report["idle_latency_s"] = rounded(mean([one.latency_s for one in idle]))
        report["idle_overhead_s"] = rounded(mean([one.overhead_s for one in idle]))
        problems += [
            f"idle {one.name}: got {one.label!r}, expected {one.expected!r}"
            for one in idle
            if one.label != one.expected
        ]
    if rss:
        report["rss_mb_per_worker"] = rounded(max(rss), 1)
        report["rss_mb_workers"] = [rounded(mb, 1) for mb in rss]
    report["targets"] = {target.name: target.met for target in targets(report)}
    report["problems"] = problems
    report["ok"] = not problems
    return report


def render(report: dict, photos: list[Photo], run: EndToEnd | None, idle: list[IdleImage], console: Console) -> None:
    samples = [photo for photo in photos if photo.sample and photo.seed_s]
    if samples:
        table = Table(
            title=f"classification 1. compute per image, one core (median of {report['rounds']} rounds; "
            "seeds' way = a new process that loads the model)"
        )
        for column in ("photo", "top label", "function ms", "seed's way ms", "speedup", "same", "right"):
            table.add_column(column, justify="left" if column in ("photo", "top label", "same", "right") else "right")
        for photo in samples:
            table.add_row(
                photo.name,
                escape(photo.function_label),
                _fmt(photo.function_median * 1000, digits=1),
                _fmt((photo.seed_median or 0.0) * 1000, digits=0),
                _fmt(ratio(photo.seed_median, photo.function_median), "x", 1),
                "yes" if photo.same else f"[bold red]NO: {escape(photo.seed_label)}[/]",
                "yes" if photo.correct else f"[bold red]NO: {escape(photo.detail)}[/]",
            )
        table.add_row(
            "mean", "", _fmt(report["function_ms_per_image"], digits=1),
            _fmt(report["seed_style_ms_per_image"], digits=0), _fmt(report["speedup_vs_seed"], "x", 1), "", "",
            style="bold",
        )  # fmt: skip
        console.print(table)
        console.print(
            f"all {report['images']} photos (sample and variants): function {report['function_ms_all_images']} ms "
            "per image (median per photo, mean)",
            style="dim",
        )
    if run is not None:
        table = Table(title="classification 2. end to end (upload -> notification -> function -> CSV)")
        columns = ("workers", "images", "correct", "wall s", "images/s", "p50 s", "p95 s", "floor s", "efficiency",
                   "quiet floor s", "quiet efficiency")  # fmt: skip
        for column in columns:
            table.add_column(column, justify="right")
        table.add_row(
            str(run.workers), str(run.videos), f"{run.correct}/{run.videos}", _fmt(run.wall_s, digits=2),
            _fmt(run.throughput, digits=1), _fmt(percentile(run.latencies, 0.5)),
            _fmt(percentile(run.latencies, 0.95)), _fmt(run.floor_s, digits=2), _fmt(run.efficiency, digits=2),
            _fmt(run.quiet_floor_s, digits=2), _fmt(run.quiet_efficiency, digits=2),
        )  # fmt: skip
        console.print(table)
        console.print(
            "floor = the workers' decode + classify seconds in this run (facerec_stage_seconds) / workers; "
            "quiet floor = step 1's one-core time of every photo / workers",
            style="dim",
        )
        cpu = report.get("e2e_cpu_s") or {}
        if cpu:
            table = Table(title=f"CPU during the classification end-to-end run ({os.cpu_count()} cores)")
            for column in ("process", "cpu s", "ms per image", "share"):
                table.add_column(column, justify="left" if column == "process" else "right")
            for name, seconds in cpu.items():
                share = seconds / cpu["total"] if cpu["total"] else 0.0
                per_image = seconds / max(1, run.videos) * 1000
                style = "bold" if name == "total" else None
                table.add_row(name, f"{seconds:.2f}", f"{per_image:.0f}", f"{share:.0%}", style=style)
            console.print(table)
            if report.get("e2e_cpu_bound_s") is not None:
                console.print(
                    f"stack and bench: {report['e2e_stack_cpu_ms_per_image']:.0f} ms CPU per image; on "
                    f"{os.cpu_count()} cores at least {report['e2e_cpu_bound_s']:.2f} s for the run (CPU-bound "
                    "when the wall time is near it, waiting on latency when far above)",
                    style="dim",
                )
    if idle:
        table = Table(title="classification 3. idle latency (one photo at a time, upload done -> CSV present)")
        for column in ("photo", "latency s", "function s", "overhead s", "top label"):
            table.add_column(column, justify="left" if column in ("photo", "top label") else "right")
        for one in idle:
            table.add_row(one.name, _fmt(one.latency_s), _fmt(one.compute_s), _fmt(one.overhead_s), escape(one.label))
        table.add_row(
            "mean", _fmt(report["idle_latency_s"]), _fmt((report["function_ms_per_image"] or 0) / 1000),
            _fmt(report.get("idle_overhead_s")), "", style="bold",
        )  # fmt: skip
        console.print(table)
    table = Table(title="classification targets")
    for column in ("metric", "value", "target", "met"):
        table.add_column(column)
    for target in targets(report):
        met = {True: "[green]met[/]", False: "[bold red]not met[/]", None: "[yellow]not measured[/]"}[target.met]
        table.add_row(target.name, _fmt(target.value), target.wanted, met)
    console.print(table)
    if report.get("rss_mb_workers"):
        peaks = ", ".join(f"{mb:.0f} MiB" for mb in report["rss_mb_workers"])
        console.print(f"peak RSS per classification worker (VmHWM): {peaks}")
    for problem in report.get("problems", []):
        console.print(f"[bold red]classification problem:[/] {escape(problem)}", highlight=False)


# ----------------------------------------------------------------------------- entry points


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """bench.py's options for this part."""
    parser.add_argument("--no-classification", action="store_true", help="skip the image-classification bench")
    parser.add_argument("--only-classification", action="store_true", help="run the image-classification bench alone")
    parser.add_argument(
        "--image-workers", type=int, default=2, help="classification workers of its end-to-end run (default 2)"
    )


def run_section(args: argparse.Namespace, say: Callable[[str], None], console: Console) -> tuple[dict, int]:
    """Steps 1-4 on the bench's own stack (stopped at the end), the tables printed: the
    `classification` object and an exit status (0 right answers, 1 wrong or missing ones,
    2 failed run, 130 interrupted). Call with SIGINT/SIGTERM raising KeyboardInterrupt."""
    photos: list[Photo] = []
    run: EndToEnd | None = None
    idle: list[IdleImage] = []
    rss: list[float] = []
    stack: ClassifyStack | None = None
    failure: str | None = None
    code = 0
    folder = Path(tempfile.mkdtemp(prefix="facepipe-bench-photos-"))
    load_start = [round(value, 2) for value in os.getloadavg()]
    try:
        photos = build_photos(folder)
        say(f"classification: {sum(p.sample for p in photos)} sample photos, {len(photos)} photos in all")
        model = convert_model(folder)
        if not args.compute_only:
            stack = ClassifyStack(max(1, args.image_workers), say)
            say(f"classification: starting the bench's stack in {stack.state_dir} ({stack.workers} worker(s))")
            stack.up()
        with one_cpu(not args.no_pin) as cpu:
            say(f"classification compute: {len(photos)} photos x {args.rounds} rounds, pinned to CPU {cpu}")
            measure_compute(photos, model, args.rounds, say)
        if stack is not None:
            samples = [photo for photo in photos if photo.sample]
            say("classification end to end: warm-up")
            stack.warm_up([photo.path for photo in samples])
            say(f"classification end to end: {len(photos)} photos at once")
            run = stack.run_images(photos, args.timeout)
            say("classification idle latency: one photo at a time")
            idle = stack.idle_images(samples)
            rss = [mb for mb in (peak_rss_mb(pid) for pid in stack.worker_pids()) if mb is not None]
    except KeyboardInterrupt:
        failure, code = "interrupted", 130
    except Exception as exc:  # report any failure in the JSON object, then exit non-zero
        failure, code = f"{type(exc).__name__}: {exc}", 2
        log = getattr(exc, "log", None)
        if log is not None:
            failure += f" (see {log})"
    finally:
        if stack is not None:
            handlers = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
            say("classification: stopping the bench's stack")
            try:
                stack.down()
            except Exception as exc:
                say(f"could not stop the stack cleanly: {exc}")
                code = code or 2
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        shutil.rmtree(folder, ignore_errors=True)
    report = build_report(photos, run, idle, rss, args.rounds)
    report["loadavg_start"], report["loadavg_end"] = load_start, [round(value, 2) for value in os.getloadavg()]
    if failure is not None:
        report["problems"].append(f"run failed: {failure}")
        report["ok"] = False
    render(report, photos, run, idle, console)
    return report, code or (0 if report["ok"] else 1)


def merge(face: dict, face_code: int, classification: dict, classification_code: int) -> tuple[dict, int]:
    """Bench's report with the `classification` object, and the exit status of both parts
    (130 interrupted before 2 failed before 1 wrong answers before 0)."""
    face["classification"] = classification
    face["ok"] = bool(face.get("ok")) and bool(classification.get("ok"))
    for code in (130, 2, 1):
        if code in (face_code, classification_code):
            return face, code
    return face, 0


def run_alone(args: argparse.Namespace, say: Callable[[str], None], console: Console) -> int:
    """`bench.py --only-classification`: the face figures null, the `classification` object filled."""
    started = time.monotonic()
    report = bench.build_report([], {}, None, [], [], args.rounds)
    report, code = merge(report, 0, *run_section(args, say, console))
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    sys.stdout.flush()
    print(json_line(report), flush=True)
    return code
