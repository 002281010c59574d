"""Classify a photo into the 1000 ImageNet classes with EfficientNet-Lite0 on onnxruntime.

The ONNX file is written beforehand by ``python -m facepipe.classify.convert -o PATH`` (at image
build or install time); nothing is downloaded at run time. One thread per session: a worker
process classifies one image at a time, and parallelism comes from running more workers.

    classifier = Classifier(Path("/models/efficientnet-lite0.onnx"))
    classifier.classify(Image.open("cat.jpg"))  # [("tabby cat", 0.61), ("Egyptian Mau", 0.2), ...]
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# onnxruntime's Linux wheel sends usage telemetry unless told not to (before it is imported).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from PIL import Image, ImageOps

from facepipe import logs
from facepipe.classify import labels

log = logs.get(__name__)

RESIZE_TO = 256
CROP_TO = 224
MEAN = 127.0
STD = 128.0


def preprocess(image: Image.Image) -> np.ndarray:
    """EfficientNet-Lite's input for one photo: float32 [1, 3, 224, 224] (NCHW), values in [-0.99, 1].

    As in the reference (TensorFlow's EfficientNet-Lite evaluation): RGB, the shorter side
    resized to 256 (bicubic), the centre 224x224 cropped, then ``(x - 127) / 128``. The EXIF
    orientation is applied first, so a phone photo is classified the way it is shown. A JPEG
    not yet decoded is decoded at a reduced scale when that still leaves the shorter side at
    256 or more (libjpeg's DCT scaling: much faster for large photos).
    """
    width, height = image.size
    if width < 1 or height < 1:
        raise ValueError("empty image")
    scale = RESIZE_TO / min(width, height)
    if scale < 1 and image.format == "JPEG":
        image.draft("RGB", (int(np.ceil(width * scale)), int(np.ceil(height * scale))))
    image = ImageOps.exif_transpose(image).convert("RGB")
    width, height = image.size
    scale = RESIZE_TO / min(width, height)
    size = (max(RESIZE_TO, round(width * scale)), max(RESIZE_TO, round(height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - CROP_TO) // 2, (size[1] - CROP_TO) // 2
    image = image.crop((left, top, left + CROP_TO, top + CROP_TO))
    pixels = np.asarray(image, dtype=np.float32)
    return ((pixels - MEAN) / STD).transpose(2, 0, 1)[np.newaxis].copy()


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities along the last axis (float64, numerically stable)."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class Classifier:
    """An onnxruntime session over the converted model; one thread, sequential execution."""

    def __init__(self, model_path: Path | str) -> None:
        started = time.perf_counter()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        (model_input,) = self._session.get_inputs()
        (model_output,) = self._session.get_outputs()
        if list(model_input.shape[1:]) != [3, CROP_TO, CROP_TO] or model_output.shape[-1] != labels.NUM_CLASSES:
            raise ValueError(f"{model_path} is not a 224x224, {labels.NUM_CLASSES}-class image classifier")
        self._input, self._output = model_input.name, model_output.name
        self.names = labels.names()
        log.info("classifier loaded", path=str(model_path), seconds=round(time.perf_counter() - started, 3))

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw scores, float32 [N, 1000], for a preprocessed batch float32 [N, 3, 224, 224]."""
        return self._session.run([self._output], {self._input: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def classify(self, image: Image.Image, top: int = 5) -> list[tuple[str, float]]:
        """The ``top`` most likely classes of one photo, as (name, probability), most likely first."""
        probabilities = softmax(self.logits(preprocess(image))[0])
        best = np.argsort(-probabilities, kind="stable")[:top]
        return [(self.names[i], float(probabilities[i])) for i in best]
