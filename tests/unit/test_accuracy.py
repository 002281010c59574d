"""The accuracy material and its scoring (`make accuracy`; the run itself is in
tests/integration/test_accuracy.py)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from facepipe_tools.accuracy import __main__ as cli
from facepipe_tools.accuracy import cases, classroom, measure
from facepipe_tools.accuracy.classroom import FACE_WIDTHS, LATE_SLOTS, SLOTS, PlacedFace, compose, sample_portraits
from facepipe_tools.accuracy.measure import CaseResult, face_found, render, summarize


@dataclass(frozen=True)
class Hit:
    name: str | None
    box: tuple[int, int, int, int]


def overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[3] < b[1] and b[3] < a[1]


@pytest.mark.parametrize(("width", "height"), [(1280, 720), (1920, 1080)])
def test_classroom_has_faces_of_three_scales_apart_inside_the_frame(width: int, height: int) -> None:
    frame, faces = compose(sample_portraits(), width, height)
    assert frame.size == (width, height) and len(faces) == len(SLOTS) == 8
    widths = {face.scale: face.box[1] - face.box[3] for face in faces}
    for scale, expected in FACE_WIDTHS[height].items():
        assert abs(widths[scale] - expected) <= 1, scale
    assert widths["small"] < 60 and widths["large"] >= 250
    for face in faces:
        top, right, bottom, left = face.box
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
    assert not any(overlap(a.box, b.box) for i, a in enumerate(faces) for b in faces[i + 1 :])


def test_with_two_people_each_is_seen_at_every_scale() -> None:
    _, faces = compose(sample_portraits(), 1280, 720)
    seen = {(face.name, face.scale) for face in faces}
    assert seen == {(name, scale) for name in ("grace_hopper", "eileen_collins") for scale in FACE_WIDTHS[720]}


def test_late_entrants_are_one_of_each_scale_and_absent_before() -> None:
    portraits = sample_portraits()
    before, faces = compose(portraits, 1280, 720, late_s=2.4, hide_late=True)
    after, same = compose(portraits, 1280, 720, late_s=2.4)
    assert faces == same
    late = [face for face in faces if face.enters_s == 2.4]
    assert sorted(face.scale for face in late) == ["large", "medium", "small"] and len(late) == len(LATE_SLOTS)
    background = list(classroom.BACKGROUND)
    for face in faces:
        top, right, bottom, left = face.box
        centre = ((left + right) // 2, (top + bottom) // 2)
        assert list(after.getpixel(centre)) != background
        assert (list(before.getpixel(centre)) == background) == (face in late)


def test_gop_faces_are_shown_one_second_between_two_keyframes_of_files_up_to_a_minute() -> None:
    for length_s, at_s, fps, _ in cases.GOP_SPECS:
        keyint_s = 250 / fps
        assert length_s <= 60 and at_s + 1 <= length_s
        assert int(at_s // keyint_s) == int((at_s + 1) // keyint_s) and at_s % keyint_s > 0
    assert len({at_s // (250 / fps) for _, at_s, fps, _ in cases.GOP_SPECS}) >= 4  # several GOPs


def keyframe_times(path: Path) -> list[float]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-skip_frame", "nokey", "-show_entries",
         "frame=pts_time", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return [float(line.strip(",")) for line in out.split()]


def count(path: Path, entry: str) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries", f"stream={entry}",
         "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return int(out.strip().strip(","))


def test_a_gop_case_has_keyframes_only_every_250_frames(tmp_path: Path) -> None:
    case = cases.gop_cases(sample_portraits())[1]  # 20 s, the face from 14.6 s
    (path,) = cases.build([case], tmp_path)
    assert keyframe_times(path) == [0.0, 10.0]
    assert count(path, "nb_read_frames") == 500


def test_the_avi_index_quirk_declares_two_frames_more_than_decode(tmp_path: Path) -> None:
    (case,) = [case for case in cases.container_cases(sample_portraits()) if "quirk" in case.name]
    (path,) = cases.build([case], tmp_path)
    assert count(path, "nb_frames") == 75
    assert count(path, "nb_read_frames") == 73


def test_case_names_are_unique_and_every_case_is_valid_material() -> None:
    everything = cases.all_cases(sample_portraits())
    assert len({case.name for case in everything}) == len(everything)
    assert {case.group for case in everything} == set(cases.GROUPS)
    for case in everything:
        assert case.faces and {face.name for face in case.faces} == set(case.people), case.name


def test_build_keeps_what_is_there_and_never_leaves_half_made_files(tmp_path: Path) -> None:
    made = []

    def good(out: Path) -> None:
        made.append(out.name)
        out.write_bytes(b"x")

    def broken(out: Path) -> None:
        out.write_bytes(b"half")
        raise RuntimeError("encoder died")

    ok = cases.Case("a.mp4", cases.GOP, "", (), make=good)
    cases.build([ok], tmp_path)
    cases.build([ok], tmp_path)
    assert made == [".partial-a.mp4"]
    with pytest.raises(RuntimeError):
        cases.build([cases.Case("b.mp4", cases.GOP, "", (), make=broken)], tmp_path)
    assert not (tmp_path / "b.mp4").exists()


FACE = PlacedFace("ann", (100, 200, 200, 100), "medium")


def test_a_face_is_found_by_a_hit_of_its_person_centred_on_it() -> None:
    assert face_found(FACE, [Hit("ann", (110, 190, 190, 110))], 1.0)
    assert face_found(FACE, [Hit("ann", (55, 95, 95, 55))], 2.0)  # decoded at half size
    assert face_found(FACE, [Hit("ann", (100, 240, 200, 140))], 1.0)  # centre 20 px off, within a quarter
    assert not face_found(FACE, [Hit("bob", (110, 190, 190, 110))], 1.0)
    assert not face_found(FACE, [Hit(None, (110, 190, 190, 110))], 1.0)
    assert not face_found(FACE, [Hit("ann", (300, 400, 400, 300))], 1.0)


def result(group: str, **fields) -> CaseResult:
    base = {"name": f"{group}.mp4", "group": group, "what": "", "expected": ["ann"]}
    return CaseResult(**{**base, **fields})


def test_recall_counts_faces_when_placed_and_precision_counts_named_people() -> None:
    two_faces = result(cases.CLASSROOM, expected=["ann", "bob"], found=["ann", "eve"], faces=2, faces_found=1)
    assert two_faces.recall == 0.5 and two_faces.precision == 0.5
    people = result(cases.GOP, expected=["ann"], found=["ann"])
    assert people.recall == 1.0 and people.precision == 1.0
    nobody = result(cases.GOP, found=[])
    assert nobody.recall == 0.0 and nobody.precision is None and not nobody.false_truncation
    assert result(cases.CONTAINER, error="unreadable: truncated").false_truncation
    assert result(cases.CONTAINER, found=["ann"], damage="decode error at 1 s").false_truncation


def test_summary_meets_the_targets_only_when_all_are_met() -> None:
    good = [result(cases.CLASSROOM, found=["ann"], faces=1, faces_found=1), result(cases.GOP, found=["ann"])]
    cse546 = {"correct": 100, "total": 100, "distinct_clips": 8, "wrong": [], "seconds": 1.0}
    summary = summarize(good, cse546, None)
    assert summary["all_met"] and summary["overall"]["recall"] == 1.0
    assert [t["met"] for t in summary["targets"]] == [True, True, True, True]
    json.dumps(summary)

    truncated = result(cases.CONTAINER, error="unreadable: the video is truncated", missed=["ann (medium)"])
    worse = summarize([*good, truncated], {**cse546, "correct": 99}, None)
    assert not worse["all_met"]
    assert {t["target"] for t in worse["targets"] if not t["met"]} == {
        "container recall 100%", "0 false truncations on valid files", "CSE546 100/100",
    }  # fmt: skip
    assert worse["false_truncations"] == ["container.mp4"] and worse["overall"]["recall"] == pytest.approx(2 / 3, 1e-3)
    text = "\n".join(render(worse))
    assert "MISSED 0 false truncations" in text and "missed: ann (medium)" in text and "CSE546: 99/100" in text

    skipped = summarize(good, None, "no CSE546 here")
    assert skipped["all_met"] and skipped["cse546"] == {"skipped": "no CSE546 here"}
    assert "CSE546: skipped (no CSE546 here)" in render(skipped)


def test_the_command_exits_non_zero_when_a_target_is_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    calls = []

    def fake_run(folder: Path, cse546, skipped, groups, say) -> dict:
        calls.append((folder, cse546, skipped, groups))
        summary = summarize([result(cases.GOP, found=[])], None, skipped)
        summary["seconds"] = {"material": 0.1, "run": 0.2}
        return summary

    monkeypatch.setattr(cli, "run", fake_run)
    assert (
        cli.main(["--folder", str(tmp_path), "--no-cse546", "--group", "gop", "--json", str(tmp_path / "r.json")]) == 1
    )
    assert calls == [(tmp_path, None, "left out (--no-cse546)", {"gop"})]
    assert json.loads((tmp_path / "r.json").read_text())["all_met"] is False
    assert "MISSED gop recall 100%" in capsys.readouterr().out

    assert cli.main(["--no-cse546", "--json"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1])["targets"][0]["target"] == "gop recall 100%"
    assert calls[-1][0] != tmp_path and not calls[-1][0].exists()  # a temporary folder, removed


def test_known_faces_are_the_samples_without_cse546(tmp_path: Path) -> None:
    assert measure.known_faces_files(tmp_path, None) == {cases.SAMPLE_FACES: measure.DATA_DIR / "known_faces.json"}


def test_material_of_some_groups_only() -> None:
    from facepipe_tools.accuracy import material

    assert {case.group for case in material(None, {cases.GOP})} == {cases.GOP}
    classroom_cases = material(None, {cases.CLASSROOM})
    assert [case.name for case in classroom_cases] == ["classroom_sample_frame.jpg", "classroom_sample_clip.mp4"]
    assert {case.known for case in classroom_cases} == {cases.SAMPLE_FACES}


def test_portraits_can_be_given_slot_by_slot() -> None:
    hopper, collins = sample_portraits()
    _, faces = compose([hopper] * 4 + [collins] * 4, 1280, 720, by_slot=True)
    assert [face.name for face in faces] == ["grace_hopper"] * 4 + ["eileen_collins"] * 4
    with pytest.raises(ValueError, match="8 portraits"):
        compose([hopper, collins], 1280, 720, by_slot=True)


def test_a_cse546_folder_asked_for_must_be_there(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["--cse546", str(tmp_path / "nowhere")]) == 2
    assert "CSE546 reference data not found" in capsys.readouterr().err
