"""Every face in the frame (#13 items 1 and 4): small faces beside large ones, many small faces
across a large frame, boxes merged once, unknown faces counted and boxed, damage reported.

The frames are composed at test time from the sample's photos (Grace Hopper from matplotlib,
Eileen Collins from scikit-image), each face scaled so that dlib's box around it has the
wanted side, on a cluttered background (scikit-image's coffee).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest
from PIL import Image

from facepipe.answers import Student
from facepipe.faces.annotate import KNOWN_COLOUR, UNKNOWN_COLOUR, annotated_jpeg
from facepipe.faces.known_faces import KnownFaces, load_known_faces
from facepipe.faces.recognition import Recognition, Recognizer, merge_boxes
from facepipe.faces.task import FaceRecognitionTask
from facepipe.media import Frame
from facepipe.settings import load_settings
from facepipe_tools.sample import photo

REPO_ROOT = Path(__file__).resolve().parents[2]
KNOWN_FACES = REPO_ROOT / "data" / "known_faces.json"


@pytest.fixture(scope="module")
def faces() -> dict[str, tuple[np.ndarray, int]]:
    """Each sample person's face with a margin around it, and the side of dlib's box in it."""
    detector = dlib.get_frontal_face_detector()
    crops = {}
    for name in ("grace_hopper", "eileen_collins"):
        image = np.asarray(Image.open(photo(name)).convert("RGB"))
        rect = max(detector(image, 1), key=lambda rect: rect.width())
        margin = int(rect.width() * 0.9)
        x, y = rect.center().x, rect.center().y
        crop = image[max(0, y - margin) : y + margin, max(0, x - margin) : x + margin]
        crops[name] = (np.ascontiguousarray(crop), rect.width())
    return crops


def background(width: int, height: int) -> np.ndarray:
    coffee = np.asarray(Image.open(photo("coffee")).convert("RGB"))
    return cv2.resize(coffee, (width, height), interpolation=cv2.INTER_LINEAR)


def paste(canvas: np.ndarray, face: tuple[np.ndarray, int], side: int, x: int, y: int) -> tuple[int, int, int, int]:
    """Paste `face` scaled so that its face box is about `side` px, at (x, y); the pasted area
    as (top, right, bottom, left)."""
    crop, box_side = face
    scale = side / box_side
    scaled = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    height, width = scaled.shape[:2]
    canvas[y : y + height, x : x + width] = scaled
    return y, x + width, y + height, x


def inside(box: tuple[int, int, int, int], area: tuple[int, int, int, int]) -> bool:
    """The centre of `box` lies in `area` (both top, right, bottom, left)."""
    top, right, bottom, left = box
    y, x = (top + bottom) / 2, (left + right) / 2
    return area[0] <= y <= area[2] and area[3] <= x <= area[1]


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    return Recognizer(load_known_faces(KNOWN_FACES))


@pytest.fixture(scope="module")
def hopper_known() -> KnownFaces:
    """The sample's known faces without Eileen Collins: her face is unknown."""
    known = load_known_faces(KNOWN_FACES)
    keep = [i for i, name in enumerate(known.names) if name == "grace_hopper"]
    return KnownFaces(tuple(known.names[i] for i in keep), known.encodings[keep])


@pytest.fixture(scope="module")
def hopper_recognizer(hopper_known: KnownFaces) -> Recognizer:
    return Recognizer(hopper_known)


def test_a_small_face_beside_a_large_one_is_found(recognizer: Recognizer, faces) -> None:
    canvas = background(1280, 720)
    large = paste(canvas, faces["grace_hopper"], 330, 40, 20)
    small = paste(canvas, faces["eileen_collins"], 48, 950, 520)
    hits = recognizer.recognize([Frame(0, 0.0, canvas)]).hits
    assert [hit.name for hit in hits] == ["grace_hopper", "eileen_collins"]  # left to right
    assert inside(hits[0].box, large) and hits[0].box[2] - hits[0].box[0] >= 300
    assert inside(hits[1].box, small) and hits[1].box[2] - hits[1].box[0] <= 60


def test_small_faces_everywhere_in_a_1920x1080_frame(recognizer: Recognizer, faces) -> None:
    canvas = background(1920, 1080)
    rng = np.random.default_rng(13)
    placed = []  # (name, area)
    for row, y in enumerate((10, 500, 1010)):  # top edge, middle, bottom edge
        for column, x in enumerate((5, 480, 960, 1440, 1850)):  # left edge to right edge
            name = ("grace_hopper", "eileen_collins")[(row + column) % 2]
            side = int(rng.integers(40, 61))
            y0 = min(y, 1080 - 2 * side)
            x0 = min(x + int(rng.integers(0, 40)), 1920 - 2 * side)
            placed.append((name, paste(canvas, faces[name], side, x0, y0)))
    hits = recognizer.recognize([Frame(0, 0.0, canvas)]).hits
    assert len(hits) == len(placed)  # each face once, nothing else
    for name, area in placed:
        found = [hit for hit in hits if inside(hit.box, area)]
        assert [hit.name for hit in found] == [name], area


def test_before_this_change_the_small_faces_were_missed(recognizer: Recognizer, faces) -> None:
    """The coarse pyramid alone (the earlier detection) does not see 40-60 px faces: the fine one is what finds them."""
    canvas = background(1920, 1080)
    paste(canvas, faces["eileen_collins"], 50, 900, 500)
    assert len(recognizer.detect(canvas)) == 1
    assert recognizer.detect(canvas, min_face=10_000) == []  # the coarse pyramid alone


def test_a_face_both_pyramids_find_is_boxed_once(recognizer: Recognizer, faces) -> None:
    """At 640x360 the coarse pyramid starts at 1.0 and finds a face, so the fine one (1.6) runs too."""
    canvas = background(640, 360)
    area = paste(canvas, faces["grace_hopper"], 120, 250, 80)
    assert len(recognizer._run(canvas, 1.0)[0]) == 1
    assert len(recognizer._run(canvas, 1.6)[0]) == 1
    boxes = recognizer.detect(canvas)
    assert len(boxes) == 1 and inside(boxes[0], area)


def test_a_large_frame_is_searched_by_the_fine_pyramid_alone(recognizer: Recognizer, faces, monkeypatch) -> None:
    """From 1.6, the fine pyramid sees every face the coarse one (0.5 at 1280 px, 1.0 upsampled) would."""
    canvas = background(1280, 720)
    paste(canvas, faces["grace_hopper"], 300, 100, 100)
    paste(canvas, faces["eileen_collins"], 44, 900, 400)
    scales = []
    run = recognizer._run
    monkeypatch.setattr(recognizer, "_run", lambda image, scale, *args, **kwargs: (
        scales.append(scale), run(image, scale, *args, **kwargs))[1])  # fmt: skip
    assert len(recognizer.detect(canvas)) == 2
    assert scales == [1.6]


def test_faces_are_looked_for_at_their_size_as_coded(faces) -> None:
    """A 4K frame decoded at 1920x1080 (`source_scale` 0.5): its 80 px faces are 40 px in the
    decoded frame, and MIN_FACE_PX=80 means 80 px as coded."""
    recognizer = Recognizer(load_known_faces(KNOWN_FACES), min_face_px=80)
    canvas = background(1920, 1080)
    area = paste(canvas, faces["eileen_collins"], 42, 900, 500)
    (hit,) = recognizer.recognize([Frame(0, 0.0, canvas, source_scale=0.5)]).hits
    assert hit.name == "eileen_collins" and inside(hit.box, area)
    assert recognizer.recognize([Frame(0, 0.0, canvas)]).hits == []  # taken as coded size, 42 px is below 80


def test_40px_faces_of_a_1080p_video_are_found(task: FaceRecognitionTask, faces, tmp_path: Path) -> None:
    """The task decodes 1920x1080 frames as coded: decoded at 1280 px, a 40 px face would be 27 px."""
    canvas = background(1920, 1080)
    hopper = paste(canvas, faces["grace_hopper"], 40, 300, 700)
    collins = paste(canvas, faces["eileen_collins"], 40, 1500, 200)
    still = tmp_path / "frame.png"
    Image.fromarray(canvas).save(still)
    clip = tmp_path / "classroom.mp4"
    ffmpeg = ["ffmpeg", "-nostdin", "-loglevel", "error", "-loop", "1", "-i", str(still), "-t", "1.5", "-r", "25"]
    subprocess.run([*ffmpeg, "-c:v", "libx264", "-crf", "16", "-pix_fmt", "yuv420p", str(clip)], check=True)
    for path in (still, clip):
        recognition = task.compute(path)
        assert recognition.frame_size == (1920, 1080)
        hits = {hit.name: hit.box for hit in recognition.hits}
        assert recognition.people == ["grace_hopper"] and recognition.unknown_faces == 1, path.name
        assert inside(hits["grace_hopper"], hopper) and inside(hits[None], collins), path.name


def test_merge_keeps_the_best_of_overlapping_or_nested_boxes() -> None:
    boxes = [
        (100, 200, 200, 100),  # a face
        (105, 205, 205, 105),  # the same face, seen at another scale
        (120, 180, 180, 120),  # inside the first
        (100, 400, 200, 300),  # another face beside it
        (150, 330, 250, 230),  # overlapping both a little: a third face
    ]
    scores = [0.5, 0.9, 0.2, 0.1, 0.3]
    assert sorted(merge_boxes(boxes, scores)) == [1, 3, 4]
    assert merge_boxes([], []) == []


def test_unknown_faces_are_counted_once_across_frames(hopper_recognizer: Recognizer, faces) -> None:
    frames = []
    for index in range(3):  # the same two people, moving
        canvas = background(1280, 720)
        paste(canvas, faces["grace_hopper"], 120, 100 + 40 * index, 200)
        paste(canvas, faces["eileen_collins"], 90 + 10 * index, 800 - 30 * index, 300)
        frames.append(Frame(index, float(index), canvas))
    result = hopper_recognizer.recognize(frames)
    assert result.people == ["grace_hopper"]
    assert result.unknown_hits == 3
    assert result.unknown_faces == 1
    assert {hit.unknown for hit in result.hits if hit.name is None} == {0}


def test_two_unknown_faces_in_one_frame_are_two(hopper_recognizer: Recognizer, faces) -> None:
    canvas = background(1280, 720)
    paste(canvas, faces["eileen_collins"], 100, 100, 200)
    paste(canvas, faces["eileen_collins"], 100, 800, 200)  # alike, but two faces at once are two people
    result = hopper_recognizer.recognize([Frame(0, 0.0, canvas)])
    assert result.unknown_faces == 2
    assert sorted(hit.unknown for hit in result.hits) == [0, 1]


class _Students:
    """The students table, as StudentDirectory answers it."""

    def lookup(self, names: list[str]) -> list[Student]:
        return [Student(name, "computer_science", "senior") for name in names]


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory, hopper_known: KnownFaces) -> FaceRecognitionTask:
    known = tmp_path_factory.mktemp("known") / "known_faces.json"
    known.write_text(hopper_known.to_json())
    settings = dataclasses.replace(load_settings(env_file=os.devnull), known_faces=str(known), students_table="t")
    return FaceRecognitionTask(settings, students=_Students())


def test_the_answer_counts_unknown_faces_and_the_csv_keeps_known_people(task: FaceRecognitionTask, faces) -> None:
    canvas = background(1280, 720)
    paste(canvas, faces["eileen_collins"], 100, 100, 200)
    paste(canvas, faces["grace_hopper"], 120, 700, 200)
    frames = [Frame(0, 0.0, canvas), Frame(1, 1.0, canvas.copy())]
    computed = task.answer(task.recognizer.recognize(frames))
    assert computed.csv_text == "name,major,year\ngrace_hopper,computer_science,senior\n"
    assert computed.details["unknown_faces"] == 1
    assert computed.details["faces"] == 4
    assert "damage" not in computed.details


class _DamagedFrames(list):
    damage = "decode error at 1.0 s: Invalid data found when processing input; 1 frames used"


def test_damage_goes_into_the_answer(task: FaceRecognitionTask) -> None:
    recognition = task.recognizer.recognize(_DamagedFrames([Frame(0, 0.0, background(320, 240))]))
    assert recognition.damage == _DamagedFrames.damage
    assert task.answer(recognition).details["damage"] == _DamagedFrames.damage


def _colour_near(picture: np.ndarray, y: int, x: int, colour: tuple[int, int, int]) -> bool:
    patch = picture[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3].reshape(-1, 3).astype(int)
    return bool(np.abs(patch - colour).sum(axis=1).min() < 60)


def test_the_picture_boxes_unknown_faces_in_their_own_colour(hopper_recognizer: Recognizer, faces) -> None:
    canvas = np.full((720, 1280, 3), 60, np.uint8)
    paste(canvas, faces["grace_hopper"], 150, 100, 200)
    paste(canvas, faces["eileen_collins"], 150, 800, 200)
    result = hopper_recognizer.recognize([Frame(0, 0.0, canvas)])
    assert [hit.name for hit in result.hits] == ["grace_hopper", None]
    picture = cv2.cvtColor(cv2.imdecode(np.frombuffer(annotated_jpeg(result), np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)  # fmt: skip
    scale = picture.shape[0] / canvas.shape[0]
    for hit, colour, other in (
        (result.hits[0], KNOWN_COLOUR, UNKNOWN_COLOUR),
        (result.hits[1], UNKNOWN_COLOUR, KNOWN_COLOUR),
    ):
        top, right, bottom, left = (round(v * scale) for v in hit.box)
        middle = (top + bottom) // 2
        assert _colour_near(picture, middle, left, colour), hit.name  # left edge
        assert _colour_near(picture, middle, right, colour), hit.name  # right edge
        assert _colour_near(picture, bottom, (left + right) // 2, colour), hit.name  # bottom edge
        assert not _colour_near(picture, middle, left, other), hit.name
    assert np.abs(np.asarray(UNKNOWN_COLOUR) - KNOWN_COLOUR).sum() > 150  # distinct colours


def test_empty_recognition_has_no_unknown_faces() -> None:
    assert Recognition().unknown_faces == 0 and Recognition().damage is None
