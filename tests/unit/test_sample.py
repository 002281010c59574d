"""The built-in sample: every clip has its mapping line, and the crowded clip holds both people,
one of them only in small and medium faces."""

from __future__ import annotations

import subprocess
from pathlib import Path

from facepipe_tools.sample import SAMPLE_CLIPS, SAMPLE_PEOPLE, crowd


def test_every_sample_clip_has_its_mapping_line_and_no_other(sample_mapping) -> None:
    assert [entry.video for entry in sample_mapping] == list(SAMPLE_CLIPS)


def test_the_crowded_clip_expects_both_people(sample_dir: Path, sample_mapping) -> None:
    (entry,) = [entry for entry in sample_mapping if entry.video == "sample_crowded.mp4"]
    assert [person.name for person in entry.people] == list(SAMPLE_PEOPLE)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name,width,height",
         "-of", "csv=p=0", str(sample_dir / entry.video)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert probe.stdout.strip() == "h264,1280,720"


def test_the_crowd_has_small_faces_beside_large_ones_and_one_person_never_large() -> None:
    """At 1280x720 the large faces alone would answer Grace Hopper only."""
    frame, faces = crowd()
    assert frame.size == (1280, 720) and len(faces) == 8
    widths = sorted(face.box[1] - face.box[3] for face in faces)
    assert widths[0] < 60 and widths[-1] >= 250
    scales = {name: {face.scale for face in faces if face.name == name} for name in SAMPLE_PEOPLE}
    assert scales == {"grace_hopper": {"small", "medium", "large"}, "eileen_collins": {"small", "medium"}}
