"""`make accuracy`'s targets (issue #13), run in this process on material made in a temporary
folder (no stack): every face of the classroom, GOP and container cases found by name, no
valid file answered as truncated or damaged, and every CSE546 clip correct (skipped, with the
reason, when the CSE546 data is not there)."""

from __future__ import annotations

from pathlib import Path

import pytest

from facepipe_tools.accuracy import cse546_folder, measure, run
from facepipe_tools.accuracy.cases import CLASSROOM, CONTAINER, GOP


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict:
    cse546, skipped = cse546_folder()
    result = run(Path(tmp_path_factory.mktemp("accuracy")), cse546, skipped)
    print("\n".join(measure.render(result)))
    return result


def missed(summary: dict, group: str) -> list[str]:
    """The cases of `group` short of full recall, with what they missed and answered."""
    return [
        f"{case['name']}: {case['items_found']}/{case['items']} {case['recall_of']}, missed {case['missed']}, "
        f"answered {case['error'] or case['found']}"
        for case in summary["cases"]
        if case["group"] == group and case["recall"] != 1.0
    ]


def test_every_face_of_the_classroom_is_found(summary: dict) -> None:
    """Eight faces at 40, 100-110 and 250-270 px, small beside large, three entering after 2 s."""
    assert [case["name"] for case in summary["cases"] if case["group"] == CLASSROOM]
    assert missed(summary, CLASSROOM) == []


def test_a_face_shown_for_one_second_between_keyframes_is_found(summary: dict) -> None:
    assert len([case for case in summary["cases"] if case["group"] == GOP]) >= 5
    assert missed(summary, GOP) == []


def test_the_face_is_found_in_every_container(summary: dict) -> None:
    assert missed(summary, CONTAINER) == []


def test_no_valid_file_is_answered_as_truncated_or_damaged(summary: dict) -> None:
    answers = {
        case["name"]: case["error"] or f"damage: {case['damage']}"
        for case in summary["cases"]
        if case["false_truncation"]
    }
    assert answers == {}


def test_every_cse546_clip_is_correct(summary: dict) -> None:
    cse546 = summary["cse546"]
    if "skipped" in cse546:
        pytest.skip(cse546["skipped"])
    assert cse546["wrong"] == []
    assert cse546["correct"] == cse546["total"] == 100


def test_the_summary_meets_every_target(summary: dict) -> None:
    assert [target for target in summary["targets"] if not target["met"]] == []
