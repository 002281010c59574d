"""Detect, encode and match faces in sampled frames."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

from facepipe.faces.encoder import Box, FaceEncoder
from facepipe.faces.known_faces import KnownFaces
from facepipe.media import Frame, MediaError

MAX_KEY_FRAMES = 4
#: Key frames are kept this high (the annotated picture's height), not at their decoded size:
#: a 1920x1080 frame is 6 MB, and a worker holds up to MAX_KEY_FRAMES of them while it detects.
KEY_FRAME_HEIGHT = 360
#: The smallest face (side of dlib's box) that the HOG detector finds reliably in the image it
#: runs on: measured with the sample's and the CSE546 faces at random offsets, faces of 60 px
#: were found in nearly every trial, 52-56 px in some, 48 px rarely (its window is 80 px).
HOG_MIN_FACE_PX = 64
#: Most pixels of the (upsampled) copy detection runs on: what a 40 px face in a 1920x1080 frame
#: needs. Past it (larger frames and smaller MIN_FACE_PX), the smallest face found grows.
MAX_DETECT_PIXELS = 3072 * 1728
#: Frames are decoded with their long side at most this: 1920x1080 is the largest frame whose
#: 40 px faces the fine pass sees within MAX_DETECT_PIXELS, and a face of 40 px as coded stays
#: 40 px (decoded smaller and scaled up again, it scores lower). Larger frames are decoded at
#: this size, their `source_scale` below 1.
DECODE_SIDE = 1920
#: The fine pyramid also reports boxes scoring down to this (dlib's threshold is 0): faces the
#: HOG model scores weakly (some CSE546 faces score near 0 at every scale). Such a box counts
#: only when its face matches a known person, at most MAX_WEAK_BOXES per frame (each costs an encoding).
WEAK_SCORE = -0.4
MAX_WEAK_BOXES = 8
#: Two boxes are one face when they overlap this much (intersection over union) ...
MERGE_IOU = 0.4
#: ... or when this share of the smaller one lies inside the other.
MERGE_CONTAINED = 0.7


@dataclass(frozen=True)
class FaceHit:
    frame_index: int
    time_s: float
    box: Box  # top, right, bottom, left in frame pixels
    name: str | None
    distance: float
    #: For a face that matched nobody: which distinct unknown face it is (0, 1, ...).
    unknown: int | None = None


@dataclass(frozen=True)
class KeyFrame:
    """A frame worth showing, shrunk (or enlarged) to KEY_FRAME_HEIGHT."""

    index: int
    time_s: float
    image: np.ndarray  # RGB, KEY_FRAME_HEIGHT high
    #: Pixels of `image` per pixel of the decoded frame (the pixels `FaceHit.box` counts in).
    scale: float

    @classmethod
    def of(cls, frame: Frame) -> KeyFrame:
        scale = KEY_FRAME_HEIGHT / frame.image.shape[0]
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        image = cv2.resize(frame.image, None, fx=scale, fy=scale, interpolation=interpolation)
        return cls(frame.index, frame.time_s, image, scale)


@dataclass
class Recognition:
    hits: list[FaceHit] = field(default_factory=list)
    frames: int = 0
    decode_s: float = 0.0
    #: Detection and encoding together (`encode_s` is the encoding part).
    detect_s: float = 0.0
    encode_s: float = 0.0
    #: The frames worth showing: each frame where someone known was first seen; else the first
    #: frame with a face; else the first frame.
    key_frames: list[KeyFrame] = field(default_factory=list)
    #: One encoding per distinct unknown face (the mean of the faces taken for it).
    unknown_encodings: list[np.ndarray] = field(default_factory=list)
    #: Why the media was only partly usable (a readable reason), None when it was whole.
    damage: str | None = None
    #: The annotated JPEG of the key frames, once the task has drawn it and let the frames go.
    picture: bytes | None = None
    #: (width, height) of the decoded frames, the pixels `FaceHit.box` counts in.
    frame_size: tuple[int, int] = (0, 0)

    @property
    def people(self) -> list[str]:
        """Distinct known people in order of first appearance (time, then left to right)."""
        seen: dict[str, None] = {}
        for hit in self.hits:
            if hit.name is not None:
                seen.setdefault(hit.name)
        return list(seen)

    @property
    def unknown_faces(self) -> int:
        """Distinct faces that matched nobody, told apart across frames by `_UnknownFaces`."""
        return len(self.unknown_encodings)

    @property
    def unknown_hits(self) -> int:
        """Faces that matched nobody, counted in every frame they were seen in."""
        return sum(1 for hit in self.hits if hit.name is None)


def detection_scale(width: int, height: int, min_face: float) -> float:
    """How much to scale a `width` x `height` image so that a face of `min_face` pixels becomes
    one the HOG detector finds; at most MAX_DETECT_PIXELS."""
    scale = HOG_MIN_FACE_PX / max(1.0, min_face)
    return min(scale, math.sqrt(MAX_DETECT_PIXELS / max(1, width * height)))


def merge_boxes(boxes: Sequence[Box], scores: Sequence[float]) -> list[int]:
    """Indices of the boxes to keep, highest score first: among boxes that overlap (MERGE_IOU) or
    lie inside one another (MERGE_CONTAINED), only the highest-scoring one shows the face."""
    kept: list[int] = []
    for index in sorted(range(len(boxes)), key=lambda i: -scores[i]):
        if not any(_same_face(boxes[index], boxes[other]) for other in kept):
            kept.append(index)
    return kept


def _same_face(a: Box, b: Box) -> bool:
    height = min(a[2], b[2]) - max(a[0], b[0])
    width = min(a[1], b[1]) - max(a[3], b[3])
    if height <= 0 or width <= 0:
        return False
    inter = height * width
    area_a = (a[2] - a[0]) * (a[1] - a[3])
    area_b = (b[2] - b[0]) * (b[1] - b[3])
    return inter / (area_a + area_b - inter) > MERGE_IOU or inter / min(area_a, area_b) > MERGE_CONTAINED


class Recognizer:
    """Holds the models and known faces; create once per process.

    Detection: dlib's HOG detector scans an image pyramid, each level 5/6 of the one above,
    from the image it is given down to its 80 px window, and finds faces of HOG_MIN_FACE_PX
    and more in each level.

    - fine: a grey copy scaled by HOG_MIN_FACE_PX / `min_face_px` (1.6 for 40 px; in the frame
      as it was coded, so a frame decoded smaller, see `Frame.source_scale`, is scaled the
      more), at most MAX_DETECT_PIXELS. Its pyramid finds every face of `min_face_px` and more,
      anywhere in the frame; grey levels cost a third less than colour and found the same
      faces in the tests and on CSE546.
    - coarse: a copy whose long side is `detect_width`, upsampled once when it shows no face,
      only where the fine pyramid starts below twice its scale (small frames, a large
      `min_face_px`). Elsewhere the fine pyramid passes through every scale the coarse one
      would look at, and the coarse one would only add time (25-45 ms a frame, and 140 ms
      for its upsampled pass, on CSE546).

    Boxes of both pyramids are merged once (`merge_boxes`). No split of the fine pyramid
    (more scales, tiles) would cost less: its top level is about a third of it. Encodings are
    computed on the decoded frame; `encoder` names how (see facepipe.faces.encoder: the same
    descriptors either way).
    """

    def __init__(
        self,
        known: KnownFaces,
        tolerance: float = 0.6,
        detect_width: int = 640,
        encoder: str = "numpy",
        min_face_px: float = 40,
    ):
        import dlib

        # One video per worker process: no thread pools competing with the other workers.
        cv2.setNumThreads(1)
        threadpool_limits(limits=1, user_api="blas")
        self._detector = dlib.get_frontal_face_detector()
        self.encoder = FaceEncoder(encoder)
        self.known = known
        self.tolerance = tolerance
        self.detect_width = detect_width
        self.min_face_px = min_face_px

    def detect(self, image: np.ndarray, min_face: float | None = None) -> list[Box]:
        """Face boxes (top, right, bottom, left) in `image` pixels, left to right; every face of
        at least `min_face` pixels (default `min_face_px`) is looked for. Weak boxes (see
        WEAK_SCORE) are left out: only a known face makes them count."""
        return [box for box, score in self.detect_scored(image, min_face) if score >= 0]

    def detect_scored(self, image: np.ndarray, min_face: float | None = None) -> list[tuple[Box, float]]:
        """`detect`'s boxes with their detection scores, weak ones (below 0) included, left to right."""
        height, width = image.shape[:2]
        coarse = min(1.0, self.detect_width / max(width, height))
        fine = detection_scale(width, height, self.min_face_px if min_face is None else min_face)
        boxes: list[Box] = []
        scores: list[float] = []
        seen = 0.0  # the largest scale a pyramid started from
        if fine < 2 * coarse:
            boxes, scores = self._run(image, coarse)
            seen = coarse
            if not boxes:
                boxes, scores = self._run(image, coarse, upsample=1)
                seen = 2 * coarse
        if fine > seen:
            grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)  # HOG on one channel: a third less time
            more, more_scores = self._run(grey, fine, threshold=WEAK_SCORE)
            boxes, scores = boxes + more, scores + more_scores
        kept = merge_boxes(boxes, scores)
        weak = [index for index in kept if scores[index] < 0][MAX_WEAK_BOXES:]
        kept = [index for index in kept if index not in weak]
        return sorted(((boxes[i], scores[i]) for i in kept), key=lambda scored: scored[0][3])

    def _run(
        self, image: np.ndarray, scale: float, upsample: int = 0, threshold: float = 0.0
    ) -> tuple[list[Box], list[float]]:
        """The detector on `image` scaled by `scale` (then upsampled `upsample` times by dlib):
        boxes in `image` pixels and their scores, down to `threshold`."""
        height, width = image.shape[:2]
        scaled = image
        if scale != 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            scaled = cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        rects, scores, _ = self._detector.run(scaled, upsample, threshold)
        boxes = [
            (
                max(0, round(rect.top() / scale)),
                min(width, round(rect.right() / scale)),
                min(height, round(rect.bottom() / scale)),
                max(0, round(rect.left() / scale)),
            )
            for rect in rects
        ]
        return boxes, list(scores)

    def recognize_frame(self, frame: Frame) -> list[FaceHit]:
        """The faces of one frame, matched against the known faces (unknown ones not told apart)."""
        return self._recognize_frame(frame)[0]

    def _recognize_frame(self, frame: Frame) -> tuple[list[FaceHit], list[np.ndarray], float]:
        """The frame's faces, their encodings and the seconds spent encoding them. A weak box
        (score below 0) counts only when it matches a known person."""
        scored = self.detect_scored(frame.image, self.min_face_px * frame.source_scale)
        if not scored:
            return [], [], 0.0
        started = time.perf_counter()
        all_encodings = self.encoder(frame.image, [box for box, _ in scored])
        encode_s = time.perf_counter() - started
        hits, encodings = [], []
        for (box, score), encoding in zip(scored, all_encodings, strict=True):
            name, distance = self.known.match(encoding, self.tolerance)
            if name is None and score < 0:
                continue
            hits.append(FaceHit(frame.index, frame.time_s, box, name, round(distance, 4)))
            encodings.append(encoding)
        return hits, encodings, encode_s

    def recognize(self, frames: Iterable[Frame], deadline: float | None = None) -> Recognition:
        """Recognise the faces of every frame; past the monotonic `deadline` (checked before each
        frame's detection) stop with a `timeout` MediaError. Unknown faces are told apart across
        frames by their encodings (`_UnknownFaces`). `damage` is the frames' own, if they have one."""
        result = Recognition()
        unknowns = _UnknownFaces(self.tolerance, result.unknown_encodings)
        iterator = iter(frames)
        key_frames_known = key_frames_faces = False
        while True:
            started = time.perf_counter()
            frame = next(iterator, None)
            result.decode_s += time.perf_counter() - started
            if frame is None:
                result.damage = getattr(frames, "damage", None)
                return result
            if not result.frames:
                result.frame_size = (frame.image.shape[1], frame.image.shape[0])
            if deadline is not None and time.monotonic() > deadline:
                raise MediaError("timeout", f"the time limit ran out after {result.frames} frames")
            started = time.perf_counter()
            known_before = set(result.people)
            hits, encodings, encode_s = self._recognize_frame(frame)
            hits = unknowns.number(hits, encodings)
            result.hits.extend(hits)
            result.detect_s += time.perf_counter() - started
            result.encode_s += encode_s
            if any(hit.name is not None and hit.name not in known_before for hit in hits):
                if not key_frames_known:
                    result.key_frames.clear()
                    key_frames_known = key_frames_faces = True
                if len(result.key_frames) < MAX_KEY_FRAMES:
                    result.key_frames.append(KeyFrame.of(frame))
            elif hits and not key_frames_faces:
                result.key_frames[:] = [KeyFrame.of(frame)]
                key_frames_faces = True
            elif not result.key_frames:
                result.key_frames.append(KeyFrame.of(frame))
            result.frames += 1


class _UnknownFaces:
    """Tells unknown faces apart across the frames of one video: a face that matched nobody is the
    distinct unknown face whose mean encoding is nearest, if within `tolerance` (the rule that
    names known people) and not taken by another face of the same frame (two faces in one frame
    are two people); else a new one. Appends to `encodings`, one mean encoding per distinct face."""

    def __init__(self, tolerance: float, encodings: list[np.ndarray]):
        self.tolerance = tolerance
        self.encodings = encodings
        self.counts: list[int] = []

    def number(self, hits: list[FaceHit], encodings: Sequence[np.ndarray]) -> list[FaceHit]:
        """The frame's hits, each unknown one with its distinct-unknown number."""
        taken: set[int] = set()
        out = []
        for hit, encoding in zip(hits, encodings, strict=True):
            if hit.name is not None:
                out.append(hit)
                continue
            number = self._nearest(encoding, taken)
            if number is None:
                number = len(self.encodings)
                self.encodings.append(np.asarray(encoding, dtype=np.float64))
                self.counts.append(1)
            else:
                self.counts[number] += 1
                mean = self.encodings[number]
                self.encodings[number] = mean + (encoding - mean) / self.counts[number]
            taken.add(number)
            out.append(dataclasses.replace(hit, unknown=number))
        return out

    def _nearest(self, encoding: np.ndarray, taken: set[int]) -> int | None:
        if not self.encodings:
            return None
        distances = np.linalg.norm(np.asarray(self.encodings) - encoding, axis=1)
        for candidate in np.argsort(distances):
            if distances[candidate] > self.tolerance:
                return None
            if int(candidate) not in taken:
                return int(candidate)
        return None
