"""`make accuracy`: does the face-recognition function find every face of every valid file?

Test material is made at run time, never committed (`cases.py`, `classroom.py`): a classroom
frame and clip (eight faces at three scales, some entering late, long GOP) composed from the
CSE546 clips when they are there and from the built-in sample's photos otherwise; a face on
screen for 1 s between two keyframes of long-GOP files up to 60 s; the same clip in the
containers and muxer quirks ffmpeg writes. The function's task runs on each in this process
(`measure.py`), and on the CSE546 set when it is there.

Targets: 100% recall on the classroom, GOP and container cases, no false truncation, every
CSE546 clip correct.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facepipe_tools.accuracy import cases as case_defs
from facepipe_tools.accuracy import classroom, measure
from facepipe_tools.paths import cse546_dir


def cse546_folder(folder: Path | None = None) -> tuple[Path | None, str | None]:
    """(the CSE546 folder, None) when its mapping and encodings are there, else (None, why not)."""
    folder = folder or cse546_dir()
    missing = [name for name in ("mapping", "encoding", "student_data.json") if not (folder / name).is_file()]
    if missing:
        return None, f"CSE546 reference data not found at {folder} (no {', '.join(missing)}; set CSE546_DIR)"
    return folder, None


#: What `run` can be asked for: the case groups, and the CSE546 set.
CSE546 = "cse546"
PARTS = (*case_defs.GROUPS, CSE546)


def material(cse546: Path | None, groups: set[str] | None = None) -> list[case_defs.Case]:
    """The cases of `groups` (all by default): the classroom from CSE546 when given (finding
    each clip's face takes dlib)."""
    sample = classroom.sample_portraits()
    portraits = None
    if cse546 is not None and (groups is None or case_defs.CLASSROOM in groups):
        from facepipe.faces.known_faces import load_for_conversion

        clips = sorted((cse546 / "test_cases" / "test_case_1").glob("*.mp4"))
        portraits = classroom.cse546_portraits(clips, load_for_conversion(cse546 / "encoding"))
    return [case for case in case_defs.all_cases(sample, portraits) if groups is None or case.group in groups]


def run(
    folder: Path,
    cse546: Path | None,
    cse546_skipped: str | None = None,
    groups: set[str] | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Make the material in `folder` (what is there already is kept), run every case of
    `groups` (of PARTS; all by default) and, with `cse546`, the CSE546 set; the summary. The
    classroom is made from `cse546` when given, asked for or not."""
    started = time.perf_counter()
    whole_set = cse546 is not None and (groups is None or CSE546 in groups)
    if cse546 is not None and not whole_set:
        cse546_skipped = "not asked for"
    cases = material(cse546, groups)
    say(f"making {len(cases)} cases in {folder}")
    case_defs.build(cases, folder)
    built = time.perf_counter()
    known = measure.known_faces_files(folder, cse546)
    say("running the face-recognition task on each")
    results = measure.run_cases(cases, folder, known, say)
    report = measure.run_cse546(cse546, known[case_defs.CSE546_FACES], say) if whole_set else None
    summary = measure.summarize(results, report, cse546_skipped)
    summary["seconds"] = {"material": round(built - started, 1), "run": round(time.perf_counter() - built, 1)}
    return summary
