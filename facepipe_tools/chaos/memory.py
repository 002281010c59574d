"""The `memory` scenario: the hostile files of facepipe_tools.hostile_media through the running
stack, every function worker's peak resident memory (VmHWM) followed throughout."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from facepipe.answers import error_key, parse_csv, parse_error, result_key
from facepipe_tools import hostile_media
from facepipe_tools.chaos.stack import POLL_S, UPLOAD_THREADS, ChaosError, StackClient
from facepipe_tools.hostile_media import ffmpeg
from facepipe_tools.polling import wait_for
from facepipe_tools.stats import read_status, vmhwm_mb

#: Hostile media through the running stack, the workers' peak memory measured (run_memory).
MEMORY = "memory"
#: The bound every function worker must keep, whatever it is sent (the container limit in
#: stack.yml is 1 GiB).
WORKER_RSS_LIMIT_MB = 700
MEMORY_PREFIX = "memory/"


class RssSampler:
    """Follows the function workers' peak resident memory (VmHWM, which the kernel keeps for
    the life of a process) while a run goes on: `pids` lists the workers now, `status` reads
    a process's /proc status. The peak of a worker that dies is its last sample."""

    def __init__(self, pids: Callable[[], list[int]], status: Callable[[int], str | None] = read_status,
                 interval_s: float = 0.2) -> None:  # fmt: skip
        self.pids = pids
        self.status = status
        self.interval_s = interval_s
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        for pid in self.pids():
            text = self.status(pid)
            peak = vmhwm_mb(text) if text else None
            if peak is not None:
                self.peaks[pid] = max(peak, self.peaks.get(pid, 0.0))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample()

    @property
    def max_mb(self) -> float | None:
        return round(max(self.peaks.values()), 1) if self.peaks else None


@dataclass
class MemoryResult:
    """The memory scenario: hostile files uploaded, how each was answered, the workers' peaks."""

    files: int = 0
    answered: int = 0
    failed: list[str] = field(default_factory=list)
    worker_restarts: int = 0
    max_worker_rss_mb: float | None = None
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # name, answer, problem

    @property
    def passed(self) -> bool:
        return (
            not self.failed
            and self.answered == self.files
            and self.worker_restarts == 0
            and self.max_worker_rss_mb is not None
            and self.max_worker_rss_mb <= WORKER_RSS_LIMIT_MB
        )

    def to_json(self) -> dict:
        return {
            "files": self.files,
            "answered": self.answered,
            "failed": len(self.failed),
            "worker_restarts": self.worker_restarts,
            "max_worker_rss_mb": self.max_worker_rss_mb,
            "limit_mb": WORKER_RSS_LIMIT_MB,
        }


def read_answer(client: StackClient, key: str, outputs: dict[str, dict]) -> tuple[str, str | list[str]] | None:
    """("csv", people) or (error kind, detail) for an input key; None without an answer."""
    if result_key(key) in outputs:
        return "csv", [student.name for student in parse_csv(client.read_output(result_key(key)))]
    if error_key(key) in outputs:
        record = parse_error(client.read_output(error_key(key)))
        return str(record.get("error")), str(record.get("detail", ""))
    return None


def run_memory(client: StackClient, media_dir: Path, reference: Path, timeout_s: float = 600.0) -> MemoryResult:
    """The `memory` scenario: restart the function (fresh workers: their peak is this run's),
    upload the reference clip to learn who is in it, make the hostile files from its first
    frame (facepipe_tools.hostile_media), upload them all at once, wait for every answer and
    judge it; the workers' peak resident memory is followed throughout, and none may die."""
    stack, settings = client.stack, client.settings
    result = MemoryResult()
    client.wait_idle(120)
    client.clear()
    stack.restart("function")
    if not client.wait_gateway_ready(180):
        raise ChaosError("the function's workers did not get ready")
    ref_key = MEMORY_PREFIX + "reference.mp4"
    client.put(ref_key, reference.read_bytes())
    if not wait_for(lambda: result_key(ref_key) in client.list(settings.output_bucket), 180, POLL_S):
        raise ChaosError("the reference clip got no result")
    people = [student.name for student in parse_csv(client.read_output(result_key(ref_key)))]
    if not people:
        raise ChaosError("nobody known in the reference clip")
    media_dir.mkdir(parents=True, exist_ok=True)
    still = media_dir / "reference.png"
    if not still.exists():
        ffmpeg("-i", str(reference), "-frames:v", "1", str(still))
    made = hostile_media.build(media_dir / "hostile", still)
    keys = {MEMORY_PREFIX + case.name: (case, path) for case, path in made}
    result.files = len(keys)
    workers_before = set(stack.worker_pids())
    with RssSampler(stack.worker_pids) as sampler:
        with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
            list(pool.map(lambda item: client.put(item[0], item[1][1].read_bytes()), keys.items()))

        def all_answered() -> bool:
            outputs = client.list(settings.output_bucket)
            return all(result_key(key) in outputs or error_key(key) in outputs for key in keys)

        wait_for(all_answered, timeout_s, POLL_S)
        client.wait_idle(120)
    result.max_worker_rss_mb = sampler.max_mb
    now = set(stack.worker_pids())
    result.worker_restarts = max(len((set(sampler.peaks) | now) - workers_before), len(workers_before - now))
    outputs = client.list(settings.output_bucket)
    for key, (case, _) in keys.items():
        answer = read_answer(client, key, outputs)
        if answer is None:
            result.failed.append(f"{case.name}: no answer")
            result.rows.append((case.name, "-", "no answer"))
            continue
        result.answered += 1
        kind, found = answer
        problem = hostile_media.judge(case, kind, found, people)
        shown = f"csv {found}" if kind == "csv" else f"{kind}: {found}"
        result.rows.append((case.name, shown[:90], problem or ""))
        if problem:
            result.failed.append(f"{case.name}: {problem}")
    return result


def memory_table(result: MemoryResult) -> str:
    """One line per hostile file, left-aligned (the cells are sentences, not numbers)."""
    lines = [("file", "result", "answer")]
    lines += [(name, "FAILED: " + problem if problem else "ok", answer) for name, answer, problem in result.rows]
    widths = [max(len(line[i]) for line in lines) for i in range(2)]
    out = [f"{a.ljust(widths[0])}  {b.ljust(widths[1])}  {c}".rstrip() for a, b, c in lines]
    out.insert(1, f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * 6}")
    return "\n".join(out)
