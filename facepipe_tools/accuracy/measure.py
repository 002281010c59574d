"""Run the face-recognition task over the accuracy cases and score what it answers.

The task is the function's own (`FaceRecognitionTask`, settings from the environment as a
function worker gets them, no `.env`), run in this process on local files: no stack.

- recall: of a case whose faces are placed (all generated cases), the faces found, each by a
  detection named after its person whose centre lies on it (a quarter of its width around
  it counts); else of the people expected, those named;
- precision: of the known people a case's answer names, those that are in it;
- a false truncation: a valid file answered with an error record or a damage report;
- CSE546: each mapping line's clip answered with exactly its person (a clip whose bytes
  were already answered is not computed again: the task is deterministic).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facepipe import logs
from facepipe.answers import Student
from facepipe_tools.accuracy.cases import CLASSROOM, CONTAINER, CSE546_FACES, GOP, GROUPS, SAMPLE_FACES, Case
from facepipe_tools.accuracy.classroom import PlacedFace
from facepipe_tools.mapping import OK, compare, load_mapping
from facepipe_tools.paths import DATA_DIR

log = logs.get("facepipe_tools.accuracy")

#: A detection counts for a placed face when its centre is within this share of the face's
#: width around the face's box.
FACE_MARGIN = 0.25
#: Groups whose recall must be 100%.
RECALL_TARGETS = (CLASSROOM, GOP, CONTAINER)


@dataclass
class CaseResult:
    name: str
    group: str
    what: str
    expected: list[str]
    found: list[str] = field(default_factory=list)  # known people named, in the answer's order
    faces: int = 0  # faces placed in the case
    faces_found: int = 0
    missed: list[str] = field(default_factory=list)  # the placed faces not found
    detections: int = 0  # faces detected, in every frame looked at
    unknown_faces: int = 0
    frames: int = 0
    error: str | None = None
    damage: str | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's CPU time: what the case costs on a shared machine

    @property
    def items(self) -> tuple[int, int]:
        """(found, expected): faces when the case places them, else people."""
        if self.faces:
            return self.faces_found, self.faces
        return len(set(self.expected) & set(self.found)), len(self.expected)

    @property
    def recall(self) -> float | None:
        found, expected = self.items
        return found / expected if expected else None

    @property
    def right_people(self) -> int:
        return len(set(self.expected) & set(self.found))

    @property
    def precision(self) -> float | None:
        return self.right_people / len(self.found) if self.found else None

    @property
    def false_truncation(self) -> bool:
        return self.error is not None or self.damage is not None

    def to_json(self) -> dict[str, Any]:
        found, expected = self.items
        return {
            **dataclasses.asdict(self),
            "recall": _round(self.recall),
            "recall_of": "faces" if self.faces else "people",
            "items_found": found,
            "items": expected,
            "precision": _round(self.precision),
            "false_truncation": self.false_truncation,
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


class _NoStudents:
    """The students table is not what is measured: nobody is looked up."""

    def lookup(self, names: list[str]) -> list:
        return []


def make_task(known_faces: Path):
    """The function's face-recognition task with these known faces (JSON)."""
    from facepipe.faces.task import FaceRecognitionTask
    from facepipe.settings import load_settings

    settings = dataclasses.replace(
        load_settings(env_file=os.devnull), known_faces=str(known_faces), students_table="students"
    )
    return FaceRecognitionTask(settings, students=_NoStudents())


def _decoded_scale(recognition: Any, size: tuple[int, int]) -> float:
    """Stored pixels per decoded pixel, from the size of the frames the task decoded (1 when
    unknown)."""
    decoded_width = recognition.frame_size[0]
    if not decoded_width or not size[0]:
        return 1.0
    return size[0] / decoded_width


def face_found(face: PlacedFace, hits: Sequence[Any], scale: float) -> bool:
    """Whether some hit names `face`'s person and has its centre on the face (`FACE_MARGIN`);
    hit boxes are (top, right, bottom, left) in decoded pixels, `scale` maps them to stored ones."""
    top, right, bottom, left = face.box
    margin = FACE_MARGIN * (right - left)
    for hit in hits:
        if hit.name != face.name:
            continue
        h_top, h_right, h_bottom, h_left = hit.box
        x, y = (h_left + h_right) / 2 * scale, (h_top + h_bottom) / 2 * scale
        if left - margin <= x <= right + margin and top - margin <= y <= bottom + margin:
            return True
    return False


def run_case(task: Any, case: Case, path: Path) -> CaseResult:
    """One case through the task: compute (decode, detection, matching), then the answer."""
    from facepipe.media import MediaError

    result = CaseResult(case.name, case.group, case.what, list(case.people), faces=len(case.faces))
    limit = task.settings.function_timeout_s
    started, cpu = time.perf_counter(), time.process_time()
    try:
        recognition = task.compute(path, time.monotonic() + limit if limit > 0 else None)
        computed = task.answer(recognition)
    except MediaError as exc:
        result.error = f"{exc.kind}: {exc.detail}"
        result.missed = [f"{face.name} ({face.scale})" for face in case.faces]
    else:
        result.found = list(recognition.people)
        result.detections = len(recognition.hits)
        result.unknown_faces = recognition.unknown_faces
        result.frames = recognition.frames
        result.damage = computed.details.get("damage") or getattr(recognition, "damage", None)
        scale = _decoded_scale(recognition, case.size)
        for face in case.faces:
            if face_found(face, recognition.hits, scale):
                result.faces_found += 1
            else:
                result.missed.append(f"{face.name} ({face.scale}, {face.box[1] - face.box[3]} px)")
    result.seconds = time.perf_counter() - started
    result.cpu_seconds = time.process_time() - cpu
    log.info(
        "accuracy case", case=case.name, recall=_round(result.recall), found=result.found,
        error=result.error, damage=result.damage, seconds=round(result.seconds, 3),
    )  # fmt: skip
    return result


def run_cases(
    cases: Sequence[Case], folder: Path, known_faces: dict[str, Path], say: Callable[[str], None] = lambda _: None
) -> list[CaseResult]:
    """Every case (files already in `folder`), each with the task of its known faces."""
    tasks: dict[str, Any] = {}
    results = []
    for case in cases:
        if case.known not in tasks:
            tasks[case.known] = make_task(known_faces[case.known])
        result = run_case(tasks[case.known], case, folder / case.name)
        found, expected = result.items
        say(
            f"  {case.name}: {found}/{expected} {'faces' if result.faces else 'people'}, {result.seconds:.2f} s"
            f" ({result.cpu_seconds:.2f} s CPU)"
        )
        results.append(result)
    return results


# ---------------------------------------------------------------------------------- CSE546


def cse546_clips(folder: Path) -> dict[str, Path]:
    """The CSE546 clips by file name (test_case_1 first: the same name in both is one clip)."""
    clips: dict[str, Path] = {}
    for path in sorted((folder / "test_cases").rglob("*.mp4")):
        clips.setdefault(path.name, path)
    return clips


def run_cse546(folder: Path, known_faces: Path, say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Every line of the CSE546 mapping: correct when the answer is exactly its person."""
    task = make_task(known_faces)
    students = {
        record["name"]: Student(record["name"], record["major"], record["year"])
        for record in json.loads((folder / "student_data.json").read_text())
    }
    clips = cse546_clips(folder)
    answered: dict[str, list[str] | str] = {}  # digest -> people, or the error
    wrong = []
    correct = 0
    started = time.perf_counter()
    entries = load_mapping(folder / "mapping")
    for entry in entries:
        path = clips.get(entry.video)
        if path is None:
            wrong.append({"video": entry.video, "detail": "clip not found"})
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest not in answered:
            result = run_case(task, Case(entry.video, "cse546", "", ()), path)
            answered[digest] = result.error if result.error else result.found
        people = answered[digest]
        if isinstance(people, str):
            wrong.append({"video": entry.video, "detail": people})
            continue
        status, detail = compare(entry, [students.get(name, Student(name)) for name in people])
        if status == OK:
            correct += 1
        else:
            wrong.append({"video": entry.video, "detail": f"{detail}: got {', '.join(people) or 'nobody'}"})
    seconds = time.perf_counter() - started
    say(f"  CSE546: {correct}/{len(entries)} correct ({len(answered)} distinct clips computed, {seconds:.1f} s)")
    return {"correct": correct, "total": len(entries), "distinct_clips": len(answered), "wrong": wrong,
            "seconds": round(seconds, 3)}  # fmt: skip


# --------------------------------------------------------------------------------- report


def _ratio(pairs: Sequence[tuple[int, int]]) -> float | None:
    found, total = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
    return round(found / total, 4) if total else None


def summarize(results: Sequence[CaseResult], cse546: dict[str, Any] | None, cse546_skipped: str | None) -> dict:
    """Per group and overall recall and precision, false truncations, CSE546, the targets."""

    def totals(chosen: Sequence[CaseResult]) -> dict[str, Any]:
        return {
            "cases": len(chosen),
            "recall": _ratio([r.items for r in chosen]),
            "precision": _ratio([(r.right_people, len(r.found)) for r in chosen]),
            "false_truncations": sum(r.false_truncation for r in chosen),
        }

    groups = {group: totals([r for r in results if r.group == group]) for group in GROUPS}
    groups = {group: value for group, value in groups.items() if value["cases"]}
    overall = totals(results)
    targets = []
    for group in RECALL_TARGETS:
        if group in groups:
            recall = groups[group]["recall"]
            targets.append({"target": f"{group} recall 100%", "value": recall, "met": recall == 1.0})
    truncations = [r.name for r in results if r.false_truncation]
    targets.append({"target": "0 false truncations on valid files", "value": len(truncations), "met": not truncations})
    if cse546 is not None:
        targets.append({"target": f"CSE546 {cse546['total']}/{cse546['total']}",
                        "value": f"{cse546['correct']}/{cse546['total']}",
                        "met": cse546["correct"] == cse546["total"]})  # fmt: skip
    return {
        "cases": [r.to_json() for r in results],
        "groups": groups,
        "overall": overall,
        "false_truncations": truncations,
        "cse546": cse546 if cse546 is not None else {"skipped": cse546_skipped},
        "targets": targets,
        "all_met": all(t["met"] for t in targets),
    }


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def render(summary: dict) -> list[str]:
    """The report as lines of text."""
    lines = [f"{'case':<40} {'recall':>15} {'precision':>9}  answer"]
    for case in summary["cases"]:
        recall = f"{case['items_found']}/{case['items']} {case['recall_of']}"
        if case["error"]:
            answer = f"ERROR {case['error']}"
        else:
            answer = ", ".join(case["found"]) or "nobody"
            if case["unknown_faces"]:
                answer += f" (+{case['unknown_faces']} unknown)"
            if case["damage"]:
                answer += f"; DAMAGE {case['damage']}"
        lines.append(f"{case['name']:<40} {recall:>15} {_percent(case['precision']):>9}  {answer}  "
                     f"[{case['seconds']:.2f} s, {case['cpu_seconds']:.2f} s CPU]")  # fmt: skip
        if case["missed"]:
            lines.append(f"{'':<40} missed: {'; '.join(case['missed'])}")
    lines.append("")
    for group, totals in summary["groups"].items():
        lines.append(f"{group:<12} recall {_percent(totals['recall']):>6}  precision {_percent(totals['precision']):>6}"
                     f"  false truncations {totals['false_truncations']}  ({totals['cases']} cases)")  # fmt: skip
    overall = summary["overall"]
    lines.append(f"{'overall':<12} recall {_percent(overall['recall']):>6}  precision "
                 f"{_percent(overall['precision']):>6}  false truncations {overall['false_truncations']}")  # fmt: skip
    cse546 = summary["cse546"]
    if "skipped" in cse546:
        lines.append(f"CSE546: skipped ({cse546['skipped']})")
    else:
        lines.append(f"CSE546: {cse546['correct']}/{cse546['total']} correct")
        lines.extend(f"  {wrong['video']}: {wrong['detail']}" for wrong in cse546["wrong"])
    lines.append("")
    for target in summary["targets"]:
        lines.append(f"{'met   ' if target['met'] else 'MISSED'} {target['target']} (got {target['value']})")
    return lines


def known_faces_files(folder: Path, cse546: Path | None) -> dict[str, Path]:
    """The known faces (JSON, as the function reads them) of each set: the sample's from
    data/, CSE546's converted from its pickle into `folder`."""
    files = {SAMPLE_FACES: DATA_DIR / "known_faces.json"}
    if cse546 is not None:
        from facepipe.faces.known_faces import load_for_conversion

        converted = folder / "cse546_known_faces.json"
        if not converted.exists():
            converted.write_text(load_for_conversion(cse546 / "encoding").to_json())
        files[CSE546_FACES] = converted
    return files
