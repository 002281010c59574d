"""The fault scenarios' paced workload: upload every clip (and photo) at a steady rate, inject
the fault, wait for every answer and count: nothing lost, nothing duplicated, nothing wrong."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from botocore.exceptions import BotoCoreError, ClientError

from facepipe.answers import error_key, parse_csv, parse_labels_csv, result_key
from facepipe_tools.chaos.clips import Clip
from facepipe_tools.chaos.faults import Fault, RunInfo
from facepipe_tools.chaos.stack import (
    FACES,
    IMAGES,
    POLL_S,
    UPLOAD_THREADS,
    ChaosError,
    StackClient,
    recognitions_between,
)
from facepipe_tools.mapping import OK, ImageEntry, MappingEntry, compare, compare_labels
from facepipe_tools.polling import wait_for

SCENARIOS = ("notifier-kill", "function-kill", "rgw-restart", "notifications-off", "duplicate-events")


@dataclass
class ScenarioResult:
    """One run of the workload: `videos` to the face bucket and `images` to the image bucket;
    results, lost, duplicated and wrong count both."""

    name: str
    videos: int
    images: int = 0
    results: int = 0
    lost: int = 0
    duplicated: int = 0
    wrong: int = 0
    #: recognitions beyond one per clip; None when unknown (a function worker restarted)
    reprocessed: int | None = None
    fault_at_s: float | None = None
    down_s: float | None = None
    last_answer_s: float | None = None
    max_wait_s: float | None = None
    recover_s: float | None = None
    note: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def uploads(self) -> int:
        return self.videos + self.images

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.wrong == 0 and self.results == self.uploads

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "videos": self.videos,
            "images": self.images,
            "results": self.results,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "recover_s": self.recover_s,
        }


def judge_answer(entry: MappingEntry | ImageEntry | None, text: str, kind: str = FACES) -> str | None:
    """None when a CSV answer is what the mapping expects, else why not."""
    try:
        found = parse_labels_csv(text) if kind == IMAGES else parse_csv(text)
    except ValueError as exc:
        return f"unreadable result: {exc}"
    if entry is None:
        return None
    if isinstance(entry, ImageEntry):
        status, detail = compare_labels(entry, found)
    else:
        status, detail = compare(entry, found)
    return None if status == OK else detail


def interleave(clips: list[Clip], photos: list[Clip]) -> list[Clip]:
    """The photos spread evenly among the clips (one upload order for both buckets)."""
    if not photos:
        return list(clips)
    merged: list[Clip] = []
    step = max(1, len(clips) // len(photos))
    pending = list(photos)
    for index, clip in enumerate(clips):
        merged.append(clip)
        if pending and index % step == step - 1:
            merged.append(pending.pop(0))
    return merged + pending


def _ident(clip: Clip) -> tuple[str, str]:
    return clip.kind, clip.key


class ScenarioRunner:
    """Runs paced workloads with a fault and counts the answers. `clips` may mix videos and
    photos (Clip.kind): each goes to its function's bucket and is judged there."""

    def __init__(self, client: StackClient, clips: list[Clip], rate: float, timeout_s: float = 600.0) -> None:
        if len({(c.kind, result_key(c.key)) for c in clips}) != len(clips):
            raise ChaosError("two clips of the workload share an answer key")
        self.client = client
        self.clips = clips
        self.rate = rate
        self.timeout_s = timeout_s
        self.bodies = {_ident(clip): clip.path.read_bytes() for clip in clips}

    def _upload_paced(
        self, t0: float, fault: Fault | None, fault_thread: threading.Thread | None, uploaded_at: dict[str, float]
    ) -> None:
        trigger = max(1, len(self.clips) // 3)
        with ThreadPoolExecutor(max_workers=UPLOAD_THREADS) as pool:
            futures = []
            for index, clip in enumerate(self.clips):
                delay = t0 + index / self.rate - time.time()
                if delay > 0:
                    time.sleep(delay)
                if fault_thread is not None and index == trigger:
                    fault_thread.start()

                def upload(clip: Clip = clip) -> None:
                    self.client.put(clip.key, self.bodies[_ident(clip)], kind=clip.kind)
                    uploaded_at[_ident(clip)] = time.time()
                    if fault is not None and fault.on_upload is not None:
                        fault.on_upload(clip)

                futures.append(pool.submit(upload))
            for future in futures:
                future.result()

    def _answers(self) -> dict[str, dict[str, dict]]:
        """The listing of each kind's output bucket that the workload uses."""
        return {kind: self.client.list(self.client.buckets(kind)[1]) for kind in {c.kind for c in self.clips}}

    def run(self, fault: Fault | None, baseline: ScenarioResult | None = None) -> ScenarioResult:
        name = fault.name if fault else "baseline"
        client = self.client
        images = sum(clip.kind == IMAGES for clip in self.clips)
        result = ScenarioResult(name, len(self.clips) - images, images)
        client.wait_idle(60)
        client.clear()
        client.wait_idle(60)
        function_before = client.function_metrics()
        info = RunInfo({}, {})
        marks = info.marks
        retries = client.put_retries

        def fault_body() -> None:
            assert fault is not None
            if fault.wait_busy:
                wait_for(lambda: client.notifier_metrics().value("facerec_notifier_inflight") >= 1, 15, 0.05)
            marks["fault"] = time.time()
            assert fault.inject is not None
            fault.inject()
            if fault.down_s:
                time.sleep(fault.down_s)
            fault.repair()
            marks["repaired"] = time.time()

        t0 = time.time()
        has_injection = fault is not None and fault.inject is not None
        fault_thread = threading.Thread(target=fault_body, name="fault") if has_injection else None
        try:
            if fault is not None:
                fault.before()
            t0 = time.time()
            self._upload_paced(t0, fault, fault_thread, info.uploaded_at)
            first_answer = self._wait_answers(t0)
            if fault_thread is not None:
                fault_thread.join(timeout=300)
            if fault is not None and fault.after_answers is not None:
                problem = fault.after_answers(self.clips)
                if problem:
                    result.problems.append(problem)
            if not client.wait_idle(120):
                result.problems.append("the notifier was still busy 120 s after the last answer")
            self._count(result, first_answer, t0)
            waits = [first_answer[k].timestamp() - at for k, at in info.uploaded_at.items() if k in first_answer]
            result.max_wait_s = round(max(waits), 1) if waits else None
        finally:
            if fault_thread is not None and fault_thread.is_alive():
                fault_thread.join(timeout=300)
            if fault is not None:
                fault.after()
        recognitions = recognitions_between(function_before, client.function_metrics())
        if recognitions is not None:
            result.reprocessed = max(0, recognitions - result.videos)
        if "fault" in marks:
            result.fault_at_s = round(marks["fault"] - t0, 1)
            if "repaired" in marks:
                result.down_s = round(marks["repaired"] - marks["fault"], 1)
        if baseline is not None and result.last_answer_s is not None and baseline.last_answer_s is not None:
            result.recover_s = round(max(0.0, result.last_answer_s - baseline.last_answer_s), 1)
        elif baseline is None and result.last_answer_s is not None:
            result.recover_s = 0.0
        notes = [fault.description] if fault is not None else []
        if fault is not None and fault.summary is not None:
            notes.append(fault.summary(info))
        if client.put_retries > retries:
            notes.append(f"{client.put_retries - retries} upload attempts failed and were retried")
        result.note = "; ".join(note for note in notes if note)
        return result

    def _wait_answers(self, t0: float) -> dict[tuple[str, str], datetime]:
        """Poll the outputs until every upload has an answer (or the timeout): the LastModified
        of the first answer seen per upload."""
        first: dict[tuple[str, str], datetime] = {}
        wanted = {_ident(clip): (result_key(clip.key), error_key(clip.key)) for clip in self.clips}

        def all_answered() -> bool:
            try:
                outputs = self._answers()
            except (BotoCoreError, ClientError):
                outputs = {}
            for (kind, key), names in wanted.items():
                listing = outputs.get(kind, {})
                if (kind, key) not in first:
                    found = [listing[n]["LastModified"] for n in names if n in listing]
                    if found:
                        first[kind, key] = min(found)
            return len(first) == len(wanted)

        wait_for(all_answered, self.timeout_s, POLL_S)
        return first

    def _count(self, result: ScenarioResult, first_answer: dict[tuple[str, str], datetime], t0: float) -> None:
        outputs = self._answers()
        for clip in self.clips:
            listing = outputs.get(clip.kind, {})
            label = f"{clip.key}" if clip.kind == FACES else f"{clip.key} (image bucket)"
            has_csv = result_key(clip.key) in listing
            has_error = error_key(clip.key) in listing
            if not has_csv and not has_error:
                result.lost += 1
                result.problems.append(f"{label}: no answer")
                continue
            result.results += 1
            if has_csv and has_error:
                result.duplicated += 1
                result.problems.append(f"{label}: both a CSV and an error record")
            if has_error and not has_csv:
                result.wrong += 1
                record = client_text(self.client, error_key(clip.key), clip.kind)
                result.problems.append(f"{label}: error record {record[:120]}")
            elif has_csv:
                text = self.client.read_output(result_key(clip.key), clip.kind)
                problem = judge_answer(clip.expected, text, clip.kind)
                if problem:
                    result.wrong += 1
                    result.problems.append(f"{label}: {problem}")
        if first_answer:
            result.last_answer_s = round(max(first_answer.values()).timestamp() - t0, 1)


def client_text(client: StackClient, key: str, kind: str = FACES) -> str:
    try:
        return client.read_output(key, kind)
    except ClientError as exc:
        return f"(unreadable: {exc})"
