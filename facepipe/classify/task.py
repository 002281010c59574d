"""The image-classification function's task: a photo -> its five most likely ImageNet classes.

`compute` decodes the photo with the project's bounded image loading (facepipe/media.py: pixel
cap, EXIF orientation, long side at most MAX_DECODE_SIDE) and runs the classifier (CPU-bound);
`answer` renders the CSV `rank,label,score` and a small JPEG with the top label written on it.
Anything that is not a still photo (a video, a document, garbage) gets the error record
`unreadable`.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facepipe.answers import AnswerBody, Label, render_labels_csv
from facepipe.classify.model import Classifier
from facepipe.function import Computed, timed_out
from facepipe.media import MediaError, load_image
from facepipe.settings import ConfigurationError, Settings

TOP = 5
PICTURE_SIDE = 480
BANNER_COLOUR = (46, 204, 64)  # RGB, as the face pictures' known-face boxes
TEXT_COLOUR = (0, 0, 0)


@dataclass
class Classification:
    """What `compute` found: the labels, the decoded photo (for the picture) and its timings."""

    labels: list[Label]
    image: np.ndarray  # RGB, uint8, (height, width, 3)
    decode_s: float
    classify_s: float


def _bounded(what: str, deadline: float | None) -> None:
    if timed_out(deadline):
        raise MediaError("timeout", f"the time limit passed before {what}")


class ImageClassificationTask:
    """The ONNX classifier, loaded once per process from CLASSIFIER_MODEL."""

    def __init__(self, settings: Settings, classifier: Classifier | None = None) -> None:
        self.settings = settings
        if classifier is None:
            settings.require("classifier_model")
            path = Path(settings.classifier_model)
            if not path.is_file():
                raise ConfigurationError(
                    f"CLASSIFIER_MODEL {path} does not exist (python -m facepipe.classify.convert)"
                )
            try:
                classifier = Classifier(path)
            except Exception as exc:  # onnxruntime's errors (InvalidProtobuf, ...) derive from Exception only
                raise ConfigurationError(f"CLASSIFIER_MODEL {path} cannot be loaded: {exc}") from None
        self.classifier = classifier

    def compute(self, path: Path, deadline: float | None = None) -> Classification:
        """Decode and classify a local file before the monotonic `deadline` (no S3)."""
        if path.stat().st_size == 0:
            raise MediaError("empty", "the file is empty")
        _bounded("decoding", deadline)
        t = time.perf_counter()
        try:
            pixels = load_image(path)
        except MediaError as exc:
            if exc.kind != "unreadable":
                raise
            raise MediaError(
                "unreadable", f"{exc.detail}: image classification takes a still photo (JPEG, PNG, WebP, ...)"
            ) from None
        decode_s = time.perf_counter() - t
        _bounded("classification", deadline)
        t = time.perf_counter()
        try:
            found = self.classifier.classify(Image.fromarray(pixels), top=TOP)
        except ValueError as exc:  # an image with no pixels
            raise MediaError("unreadable", f"the image cannot be classified: {exc}") from None
        classify_s = time.perf_counter() - t
        labels = [Label(rank, name, round(score, 4)) for rank, (name, score) in enumerate(found, start=1)]
        return Classification(labels, pixels, decode_s, classify_s)

    def answer(self, classification: Classification) -> Computed:
        return Computed(
            csv_text=render_labels_csv(classification.labels),
            picture=annotated_jpeg(classification),
            details={"labels": [vars(label) for label in classification.labels]},
            timings={"decode": classification.decode_s, "classify": classification.classify_s},
        )

    def stored_details(self, body: AnswerBody) -> dict[str, Any]:
        return {"labels": [vars(label) for label in body.labels]}


def annotated_jpeg(classification: Classification, quality: int = 85) -> bytes:
    """The photo, long side PICTURE_SIDE at most, with its top label and score in a banner.

    Bilinear (Pillow's antialiased resampling, as every filter of it when shrinking): for a
    preview it looks the same as Lanczos at half the cost, about 2 ms less per photo."""
    image = Image.fromarray(classification.image)
    image.thumbnail((PICTURE_SIDE, PICTURE_SIDE), Image.Resampling.BILINEAR)
    top = classification.labels[0]
    text = f"{top.label} {top.score:.0%}"
    size = max(12, round(image.height / 20))
    font = ImageFont.load_default(size=size)
    draw = ImageDraw.Draw(image)
    left, upper, right, lower = draw.textbbox((0, 0), text, font=font)
    padding = max(2, size // 4)
    draw.rectangle((0, 0, right - left + 2 * padding, lower - upper + 2 * padding), fill=BANNER_COLOUR)
    draw.text((padding - left, padding - upper), text, fill=TEXT_COLOUR, font=font)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
