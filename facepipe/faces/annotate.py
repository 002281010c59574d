"""The annotated picture of a result: key frames with a box on every face, named in green when
known, labelled "unknown" in orange otherwise."""

from __future__ import annotations

import cv2
import numpy as np

from facepipe.faces.recognition import KEY_FRAME_HEIGHT, Recognition

MAX_PANELS = 4
KNOWN_COLOUR = (46, 204, 64)  # RGB
UNKNOWN_COLOUR = (255, 133, 27)  # RGB, orange


def _panel(image: np.ndarray, hits: list, scale: float) -> np.ndarray:
    panel = image.copy()
    thickness = max(1, round(KEY_FRAME_HEIGHT / 180))
    for hit in hits:
        top, right, bottom, left = (round(v * scale) for v in hit.box)
        colour = KNOWN_COLOUR if hit.name else UNKNOWN_COLOUR
        cv2.rectangle(panel, (left, top), (right, bottom), colour, thickness)
        label = hit.name or "unknown"
        (width, height), baseline = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        y = max(height + baseline, top)
        cv2.rectangle(panel, (left, y - height - baseline), (left + width + 4, y), colour, cv2.FILLED)
        cv2.putText(panel, label, (left + 2, y - baseline), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return panel


def annotated_jpeg(recognition: Recognition, quality: int = 85) -> bytes | None:
    """A JPEG of the key frames side by side, faces boxed and named; None when no frame was read."""
    panels = []
    for frame in recognition.key_frames[:MAX_PANELS]:
        hits = [hit for hit in recognition.hits if hit.frame_index == frame.index]
        panels.append(_panel(frame.image, hits, frame.scale))
    if not panels:
        return None
    picture = np.hstack(panels) if len(panels) > 1 else panels[0]
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return data.tobytes() if ok else None
