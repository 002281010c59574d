from pathlib import Path

import numpy as np
import pytest

from facepipe.faces.known_faces import KnownFaces, load_for_conversion, load_known_faces
from facepipe.faces.recognition import Recognizer
from facepipe.media import sample_frames

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer(load_known_faces(REPO_ROOT / "data" / "known_faces.json"))


def test_every_sample_clip_gives_the_expected_people(recognizer: Recognizer, sample_dir: Path, sample_mapping) -> None:
    for entry in sample_mapping:
        people = recognizer.recognize(sample_frames(sample_dir / entry.video)).people
        assert people == [person.name for person in entry.people], entry.video


def test_two_people_in_one_frame_in_left_to_right_order(recognizer: Recognizer, sample_dir: Path) -> None:
    result = recognizer.recognize(sample_frames(sample_dir / "sample_both.mp4"))
    assert result.people == ["grace_hopper", "eileen_collins"]
    # The astronaut photo also holds a false detection (an unknown face): only the known ones here.
    first_frame = [hit for hit in result.hits if hit.frame_index == 0 and hit.name is not None]
    assert [hit.name for hit in first_frame] == ["grace_hopper", "eileen_collins"]
    assert first_frame[0].box[3] < first_frame[1].box[3]


def test_face_that_appears_later_is_found_with_its_time(recognizer: Recognizer, sample_dir: Path) -> None:
    result = recognizer.recognize(sample_frames(sample_dir / "sample_collins_late.webm"))
    assert result.people == ["eileen_collins"]
    assert not any(hit.frame_index == 0 for hit in result.hits)


def test_key_frames_are_where_people_are_first_seen(recognizer: Recognizer, sample_dir: Path) -> None:
    late = recognizer.recognize(sample_frames(sample_dir / "sample_collins_late.webm"))
    first_seen = min(hit.time_s for hit in late.hits if hit.name == "eileen_collins")
    assert first_seen >= 1.5  # coffee before
    assert [frame.time_s for frame in late.key_frames] == [first_seen]
    nobody = recognizer.recognize(sample_frames(sample_dir / "sample_nobody.mov"))
    assert [frame.index for frame in nobody.key_frames] == [0]


def test_annotated_picture_marks_every_face(recognizer: Recognizer, sample_dir: Path) -> None:
    import cv2

    from facepipe.faces.annotate import KNOWN_COLOUR, UNKNOWN_COLOUR, annotated_jpeg

    result = recognizer.recognize(sample_frames(sample_dir / "sample_both.mp4"))
    picture = cv2.cvtColor(cv2.imdecode(np.frombuffer(annotated_jpeg(result), np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)  # fmt: skip
    assert picture.shape[0] == 360
    scale = result.key_frames[0].scale
    assert scale == 360 / result.frame_size[1]
    for hit in result.hits:
        top, right, bottom, left = (round(v * scale) for v in hit.box)
        edge = picture[(top + bottom) // 2, max(0, left - 1) : left + 2].astype(int)
        colour = KNOWN_COLOUR if hit.name else UNKNOWN_COLOUR  # green for the known, orange for the unknown
        assert np.abs(edge - colour).sum(axis=1).min() < 90, hit.name
    assert annotated_jpeg(type(result)()) is None


def test_small_face_is_found_by_upsampling(recognizer: Recognizer, sample_dir: Path) -> None:
    result = recognizer.recognize(sample_frames(sample_dir / "sample_hopper_small.mkv"))
    assert result.people == ["grace_hopper"]
    top, right, bottom, left = result.hits[0].box
    assert bottom - top < 120  # a small face in a 1280x720 frame


def test_unknown_face_only(sample_dir: Path) -> None:
    only_hopper = load_known_faces(REPO_ROOT / "data" / "known_faces.json")
    keep = [i for i, name in enumerate(only_hopper.names) if name == "grace_hopper"]
    recognizer = Recognizer(KnownFaces(tuple(only_hopper.names[i] for i in keep), only_hopper.encodings[keep]))
    result = recognizer.recognize(sample_frames(sample_dir / "sample_collins.mp4"))
    assert result.people == []
    assert result.unknown_faces >= 1


def test_tolerance_decides_a_match(sample_dir: Path) -> None:
    known = load_known_faces(REPO_ROOT / "data" / "known_faces.json")
    strict = Recognizer(known, tolerance=0.01)
    result = strict.recognize(sample_frames(sample_dir / "sample_hopper.mp4"))
    assert result.people == [] and result.unknown_faces == len(result.hits) > 0


def test_empty_known_faces_match_nobody(sample_dir: Path) -> None:
    recognizer = Recognizer(KnownFaces((), np.zeros((0, 128))))
    assert recognizer.recognize(sample_frames(sample_dir / "sample_hopper.mp4")).people == []


def test_cse546_clips(cse546: Path) -> None:
    recognizer = Recognizer(load_for_conversion(cse546 / "encoding"))
    expected = {
        "test_0": "president_trump", "test_1": "president_biden", "test_2": "mr_bean", "test_4": "johnny_dep",
        "test_5": "vin_diesel", "test_6": "floki", "test_7": "morgan_freeman", "test_8": "president_obama",
    }  # fmt: skip
    for stem, person in expected.items():
        clip = cse546 / "test_cases" / "test_case_1" / f"{stem}.mp4"
        assert recognizer.recognize(sample_frames(clip)).people == [person], stem
