"""Classroom pictures composed at run time: several people, small faces at the back and large
ones at the front, some entering later.

A person is a still (`Portrait`): a frame of a CSE546 clip, or a photo of the built-in sample,
with the box of its face. A portrait is cropped to the head and scaled so that its face box
has the width asked for, then pasted into a frame at a slot of the `layout`: a back row of
small and medium faces, a front row of large and medium ones. Every pasted face is recorded
(`PlacedFace`, in the frame's pixels) so that a detection can be matched with it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from facepipe_tools.sample import photo

Box = tuple[int, int, int, int]  # top, right, bottom, left

#: Face widths (the detector's box, in the frame's pixels) of the three scales, by frame height:
#: the small ones at MIN_FACE_PX, the smallest face the function promises to find.
FACE_WIDTHS = {720: {"small": 40, "medium": 100, "large": 250}, 1080: {"small": 40, "medium": 110, "large": 270}}
#: The slots of a classroom frame: (row, scale) back to front, left to right within a row.
SLOTS: tuple[tuple[str, str], ...] = (
    ("back", "small"), ("back", "small"), ("back", "medium"), ("back", "small"),
    ("front", "large"), ("front", "medium"), ("front", "large"), ("front", "medium"),
)  # fmt: skip
#: Slots whose person enters later in the clip: one of each scale.
LATE_SLOTS = frozenset({1, 5, 6})
#: The slots in the order portraits take them: every few slots cover the three scales, so
#: that with two portraits each person is seen at every scale.
_FILL_ORDER = (4, 0, 2, 6, 1, 5, 3, 7)
#: The head around a face box: widths and heights of the box.
_HEAD_WIDTH, _HEAD_HEIGHT = 1.5, 1.75
#: Background grey of the composed frames (RGB).
BACKGROUND = (96, 104, 112)
#: The sample photos' face boxes, as dlib's HOG detector gives them on the photos in the pip
#: packages (fixed images: measured once, so that building the sample needs no detector).
SAMPLE_FACE_BOXES: dict[str, Box] = {
    "grace_hopper": (137, 376, 352, 161),
    "eileen_collins": (83, 266, 170, 179),
}


@dataclass(frozen=True)
class Portrait:
    """A still of one person and where its face is."""

    name: str
    image: np.ndarray  # RGB uint8
    face: Box
    source: str  # where the still comes from, for messages

    def head(self, face_width: int) -> tuple[Image.Image, Box]:
        """The head cropped and scaled so that the face box is `face_width` wide; the face's
        box inside the returned picture."""
        top, right, bottom, left = self.face
        width, height = right - left, bottom - top
        crop_w, crop_h = round(width * _HEAD_WIDTH), round(height * _HEAD_HEIGHT)
        image_h, image_w = self.image.shape[:2]
        x0 = min(max(0, round((left + right - crop_w) / 2)), max(0, image_w - crop_w))
        y0 = min(max(0, round((top + bottom - crop_h) / 2)), max(0, image_h - crop_h))
        crop = Image.fromarray(self.image[y0 : y0 + crop_h, x0 : x0 + crop_w])
        scale = face_width / width
        size = (max(1, round(crop.width * scale)), max(1, round(crop.height * scale)))
        face = (
            round((top - y0) * scale),
            round((right - x0) * scale),
            round((bottom - y0) * scale),
            round((left - x0) * scale),
        )
        return crop.resize(size, Image.Resampling.LANCZOS), face


@dataclass(frozen=True)
class PlacedFace:
    """A face pasted into a frame: whose, where (frame pixels), its scale, and from when."""

    name: str
    box: Box
    scale: str
    enters_s: float = 0.0


def sample_portraits() -> list[Portrait]:
    """The built-in sample's two people, from their photos in the pip packages."""
    portraits = []
    for name, box in SAMPLE_FACE_BOXES.items():
        with Image.open(photo(name)) as image:
            portraits.append(Portrait(name, np.asarray(image.convert("RGB")), box, photo(name).name))
    return portraits


def _video_frames(clip: Path, times: Sequence[float]) -> list[np.ndarray]:
    """Frames of `clip` at `times` (seconds), RGB at the stored size, decoded by the ffmpeg CLI."""
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
         "-of", "csv=p=0", str(clip)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    width, height = (int(v) for v in probe.stdout.strip().split(",")[:2])
    frames = []
    for at in times:
        raw = subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-ss", f"{at:g}", "-i", str(clip), "-frames:v", "1",
             "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
            check=True, capture_output=True, stdin=subprocess.DEVNULL,
        ).stdout  # fmt: skip
        if len(raw) == width * height * 3:
            frames.append(np.frombuffer(raw, np.uint8).reshape(height, width, 3))
    return frames


def cse546_portraits(clips: Sequence[Path], known_faces, tolerance: float = 0.6) -> list[Portrait]:
    """One portrait per clip: its first frame (of a few tried) whose largest face is found at
    full size and matches a known person, who names the portrait. `known_faces` is a
    facepipe.faces.known_faces.KnownFaces."""
    import face_recognition

    portraits = []
    for clip in clips:
        for image in _video_frames(clip, (0.0, 0.4, 0.8, 1.2)):
            boxes = face_recognition.face_locations(image, number_of_times_to_upsample=0)
            if not boxes:
                continue
            box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
            name, _ = known_faces.match(face_recognition.face_encodings(image, [box])[0], tolerance)
            if name is not None:
                portraits.append(Portrait(name, image, box, clip.name))
                break
        else:
            raise RuntimeError(f"{clip}: no frame tried shows a known face at full size")
    names = [portrait.name for portrait in portraits]
    if len(set(names)) != len(names):
        raise RuntimeError(f"the clips do not show different people: {names}")
    return portraits


def layout(width: int, height: int) -> list[tuple[str, str, int]]:
    """The slots' (row, scale, face width) for a frame of this size (720 or 1080 lines)."""
    widths = FACE_WIDTHS[height]
    return [(row, scale, widths[scale]) for row, scale in SLOTS]


def compose(
    portraits: Sequence[Portrait],
    width: int,
    height: int,
    late_s: float | None = None,
    hide_late: bool = False,
    by_slot: bool = False,
) -> tuple[Image.Image, list[PlacedFace]]:
    """The classroom frame: portraits assigned to the slots in turn (repeated when there are
    fewer than slots, each person then at every scale), each row spread evenly across the
    frame, the back row near the top and the front row on the bottom edge. With `late_s`,
    the faces of LATE_SLOTS are recorded as entering at that time; `hide_late` leaves them
    out of the picture (the classroom before they enter; the recorded faces are the same).
    With `by_slot`, `portraits` are the slots' own, in the order of SLOTS."""
    if by_slot:
        if len(portraits) != len(SLOTS):
            raise ValueError(f"{len(SLOTS)} portraits are needed, one per slot")
        owner = dict(enumerate(portraits))
    else:
        owner = {slot: portraits[turn % len(portraits)] for turn, slot in enumerate(_FILL_ORDER)}
    heads = []
    for slot, (row, scale, face_width) in enumerate(layout(width, height)):
        portrait = owner[slot]
        picture, face = portrait.head(face_width)
        heads.append((slot, row, scale, portrait.name, picture, face))
    frame = Image.new("RGB", (width, height), BACKGROUND)
    placed = []
    rows: dict[str, tuple[int, int]] = {}  # row -> (top, bottom) of its heads
    for row in ("back", "front"):
        in_row = [head for head in heads if head[1] == row]
        gap = (width - sum(head[4].width for head in in_row)) / (len(in_row) + 1)
        if gap < 0:
            raise ValueError(f"the {row} row does not fit in {width} px")
        x = gap
        for slot, _, scale, name, picture, face in in_row:
            y = round(0.06 * height) if row == "back" else height - picture.height - round(0.02 * height)
            late = late_s is not None and slot in LATE_SLOTS
            if not (late and hide_late):
                frame.paste(picture, (round(x), y))
            top, right, bottom, left = face
            box = (top + y, right + round(x), bottom + y, left + round(x))
            placed.append(PlacedFace(name, box, scale, late_s if late else 0.0))
            span = rows.get(row, (y, y + picture.height))
            rows[row] = (min(span[0], y), max(span[1], y + picture.height))
            x += picture.width + gap
    if rows["back"][1] >= rows["front"][0]:
        raise ValueError(f"the rows overlap in a {width}x{height} frame")
    return frame, placed
