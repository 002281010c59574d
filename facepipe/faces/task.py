"""The face-recognition function's task: frames -> faces -> known people -> their records.

`compute` samples frames and recognises faces (CPU-bound); `answer` looks the people up in
the students table and draws the picture; the CSV is `name,major,year`, one row per distinct
known person in order of first appearance. The JSON answer also counts the distinct unknown
faces (`unknown_faces`) and, for a damaged file answered from its usable frames, says why
(`damage`; the function's "object answered" log line carries both).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from facepipe import metrics
from facepipe.answers import AnswerBody, render_csv
from facepipe.faces.annotate import annotated_jpeg
from facepipe.faces.encoder import ENCODERS
from facepipe.faces.known_faces import load_known_faces
from facepipe.faces.recognition import DECODE_SIDE, Recognition, Recognizer
from facepipe.faces.students import StudentDirectory
from facepipe.function import Computed
from facepipe.media import sample_frames
from facepipe.settings import Settings, SettingsError


class FaceRecognitionTask:
    """Models, known faces and the students table: loaded once per process."""

    def __init__(self, settings: Settings, students: StudentDirectory | None = None):
        settings.require("known_faces", "students_table")
        if settings.frame_sampling not in ("keyframes", "interval"):
            raise SettingsError(f"FRAME_SAMPLING must be 'keyframes' or 'interval', not {settings.frame_sampling!r}")
        if settings.face_encoder not in ENCODERS:
            raise SettingsError(f"FACE_ENCODER must be one of {', '.join(ENCODERS)}, not {settings.face_encoder!r}")
        self.settings = settings
        self.students = students or StudentDirectory(settings)
        self.recognizer = Recognizer(
            load_known_faces(settings.known_faces),
            tolerance=settings.match_tolerance,
            detect_width=settings.detect_width,
            encoder=settings.face_encoder,
            min_face_px=settings.min_face_px,
        )

    def compute(self, path: Path, deadline: float | None = None) -> Recognition:
        """Frames of a local file, faces, matches (no S3, no DynamoDB), before `deadline`."""
        timeout_s = self.settings.ffmpeg_timeout_s
        if deadline is not None:
            timeout_s = min(timeout_s, max(0.0, deadline - time.monotonic()))
        frames = sample_frames(
            path,
            interval_s=self.settings.frame_interval_s,
            max_frames=self.settings.max_frames,
            timeout_s=timeout_s,
            keyframes_only=self.settings.frame_sampling == "keyframes",
            max_side=DECODE_SIDE,
        )
        recognition = self.recognizer.recognize(frames, deadline)
        # The picture is drawn here, within the one-computation-at-a-time section, and the key
        # frames let go: held on into `answer`, they would sit in memory beside the next
        # object's frames.
        return dataclasses.replace(recognition, picture=annotated_jpeg(recognition), key_frames=[])

    def answer(self, recognition: Recognition) -> Computed:
        t = time.perf_counter()
        people = self.students.lookup(recognition.people)
        lookup_s = time.perf_counter() - t
        metrics.FACES.labels("known").inc(len(recognition.hits) - recognition.unknown_hits)
        metrics.FACES.labels("unknown").inc(recognition.unknown_hits)
        details = {
            "people": [vars(person) for person in people],
            "faces": len(recognition.hits),
            "unknown_faces": recognition.unknown_faces,
            "frames": recognition.frames,
        }
        if recognition.damage:
            details["damage"] = recognition.damage
        return Computed(
            csv_text=render_csv(people),
            picture=recognition.picture,
            details=details,
            timings={"decode": recognition.decode_s, "detect": recognition.detect_s, "lookup": lookup_s},
        )

    def stored_details(self, body: AnswerBody) -> dict[str, Any]:
        return {"people": [vars(person) for person in body.people]}
