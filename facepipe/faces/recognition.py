"""Detect, encode and match faces in sampled frames."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np
from threadpoolctl import threadpool_limits

from facepipe.faces.encoder import FaceEncoder
from facepipe.faces.known_faces import KnownFaces
from facepipe.media import Frame, MediaError

MAX_KEY_FRAMES = 4


@dataclass(frozen=True)
class FaceHit:
    frame_index: int
    time_s: float
    box: tuple[int, int, int, int]  # top, right, bottom, left in frame pixels
    name: str | None
    distance: float


@dataclass
class Recognition:
    hits: list[FaceHit] = field(default_factory=list)
    frames: int = 0
    decode_s: float = 0.0
    detect_s: float = 0.0
    #: The frames worth showing: each frame where someone known was first seen, else the first frame.
    key_frames: list[Frame] = field(default_factory=list)

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
        return sum(1 for hit in self.hits if hit.name is None)


class Recognizer:
    """Holds the models and known faces; create once per process.

    Detection (HOG) runs on a copy scaled to `detect_width`; when it finds
    nothing there, it tries once more with one upsampling step, which finds
    faces down to about half the size. Encodings are computed on the decoded
    frame, so small faces still give good encodings; `encoder` names how (see
    facepipe.faces.encoder: the same descriptors either way).
    """

    def __init__(self, known: KnownFaces, tolerance: float = 0.6, detect_width: int = 640, encoder: str = "numpy"):
        import face_recognition  # loads the dlib models (about 1 s)

        # One video per worker process: no thread pools competing with the other workers.
        cv2.setNumThreads(1)
        threadpool_limits(limits=1, user_api="blas")
        self._fr = face_recognition
        self.encoder = FaceEncoder(encoder)
        self.known = known
        self.tolerance = tolerance
        self.detect_width = detect_width

    def detect(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        height, width = image.shape[:2]
        scale = min(1.0, self.detect_width / max(width, height))
        small = image
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        boxes = self._fr.face_locations(small, number_of_times_to_upsample=0)
        if not boxes:
            boxes = self._fr.face_locations(small, number_of_times_to_upsample=1)
        boxes = sorted(boxes, key=lambda box: box[3])  # left to right
        return [
            (
                max(0, round(top / scale)),
                min(width, round(right / scale)),
                min(height, round(bottom / scale)),
                max(0, round(left / scale)),
            )
            for top, right, bottom, left in boxes
        ]

    def recognize_frame(self, frame: Frame) -> list[FaceHit]:
        boxes = self.detect(frame.image)
        if not boxes:
            return []
        encodings = self.encoder(frame.image, boxes)
        hits = []
        for box, encoding in zip(boxes, encodings, strict=True):
            name, distance = self.known.match(encoding, self.tolerance)
            hits.append(FaceHit(frame.index, frame.time_s, box, name, round(distance, 4)))
        return hits

    def recognize(self, frames: Iterable[Frame], deadline: float | None = None) -> Recognition:
        """Recognise the faces of every frame; past the monotonic `deadline` (checked before each
        frame's detection) stop with a `timeout` MediaError."""
        result = Recognition()
        iterator = iter(frames)
        while True:
            started = time.perf_counter()
            frame = next(iterator, None)
            result.decode_s += time.perf_counter() - started
            if frame is None:
                return result
            if deadline is not None and time.monotonic() > deadline:
                raise MediaError("timeout", f"the time limit ran out after {result.frames} frames")
            started = time.perf_counter()
            known_before = set(result.people)
            hits = self.recognize_frame(frame)
            result.hits.extend(hits)
            result.detect_s += time.perf_counter() - started
            if any(hit.name is not None and hit.name not in known_before for hit in hits):
                if not known_before:
                    result.key_frames.clear()
                if len(result.key_frames) < MAX_KEY_FRAMES:
                    result.key_frames.append(frame)
            elif not result.key_frames:
                result.key_frames.append(frame)
            result.frames += 1
