"""Face descriptors: the 128 numbers that face_recognition compares.

Two encoders give the same numbers. ``dlib`` makes face_recognition's own calls. ``numpy`` runs
the very same network, dlib's ResNet with the weights of face_recognition_models' file,
with numpy's OpenBLAS: the prebuilt dlib wheels are built without BLAS, and their own matrix
code takes 110-170 ms per face on this project's 2-core machine, numpy about 30 ms. Both
align the face the same way (dlib's 5-point landmarks and face chip); the tests check that
the descriptors agree with dlib's to within 1e-5.

The network is the one described in dlib's ``dnn_face_recognition_ex.cpp``: a 7x7
convolution, max pooling, 14 residual blocks (32, 64, 128, 256, 256 filters), average
pooling over everything and a 128-wide linear layer. The weights file is dlib's serialised
network: layer details in dlib's compact integer format, tensors as raw little-endian float32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from facepipe.settings import ConfigurationError

ENCODERS = ("numpy", "dlib")

#: A face box as face_recognition gives it: top, right, bottom, left.
Box = tuple[int, int, int, int]

CHIP_SIZE = 150
CHIP_PADDING = 0.25
#: dlib's input_rgb_image_sized<150>: (pixel - channel mean) / 256.
_PIXEL_MEANS = np.array([122.782, 117.001, 104.298], np.float32)
#: (filters, residual blocks) per level, input side first; every level but the first starts
#: with a block that halves the size (stride-2 convolution, 2x2 average pooling on the skip).
_LEVELS = ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))


class ModelFormatError(ConfigurationError):
    """The weights file is not dlib's face recognition ResNet."""


@dataclass(frozen=True)
class _Conv:
    """A convolution followed by its affine (batch norm) layer, folded into one matrix."""

    matrix: np.ndarray  # (in_channels * rows * cols, filters)
    bias: np.ndarray  # (filters,)
    size: int
    stride: int
    padding: int

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x: (height, width, channels) -> (height', width', filters)."""
        if self.padding:
            p = self.padding
            x = np.pad(x, ((p, p), (p, p), (0, 0)))
        windows = sliding_window_view(x, (self.size, self.size), axis=(0, 1))[:: self.stride, :: self.stride]
        rows, cols = windows.shape[:2]
        out = windows.reshape(rows * cols, -1) @ self.matrix
        out += self.bias
        return out.reshape(rows, cols, -1)


def _read_int(data: bytes, pos: int) -> tuple[int, int]:
    """dlib's compact integer: a control byte (byte count, 0x80 when negative), then little-endian bytes."""
    if pos >= len(data):
        raise ModelFormatError("unexpected end of file")
    control = data[pos]
    count = control & 0x0F
    value = int.from_bytes(data[pos + 1 : pos + 1 + count], "little")
    return (-value if control & 0x80 else value), pos + 1 + count


def _read_ints(file: BinaryIO, count: int) -> list[int]:
    """`count` compact integers from the file's position; the position ends just after them."""
    start = file.tell()
    data = file.read(9 * count)  # at most 9 bytes each
    values, pos = [], 0
    for _ in range(count):
        value, pos = _read_int(data, pos)
        values.append(value)
    file.seek(start + pos)
    return values


def _read_tensor(file: BinaryIO) -> np.ndarray:
    version, *shape = _read_ints(file, 5)
    if version != 2:
        raise ModelFormatError(f"tensor format version {version}, expected 2")
    count = int(np.prod(shape))
    values = np.fromfile(file, dtype="<f4", count=count)
    if values.size != count:
        raise ModelFormatError("a tensor runs past the end of the file")
    return values.astype(np.float32, copy=False).reshape(shape)


_CON, _AFFINE, _FC = b"con_4", b"affine_", b"fc_2"
#: How dlib serialises a layer's name: its length as a compact integer, then the bytes.
_MARKERS = {bytes([1, len(name)]) + name: name for name in (_CON, _AFFINE, _FC)}


def _find_marker(file: BinaryIO, chunk: int = 1 << 16) -> bytes | None:
    """Seek just past the next layer name that has parameters; that name, or None at the end."""
    overlap = max(map(len, _MARKERS)) - 1
    while True:
        start = file.tell()
        data = file.read(chunk)
        found = [(data.find(marker), marker) for marker in _MARKERS]
        found = [(at, marker) for at, marker in found if at >= 0]
        if found:
            at, marker = min(found)
            file.seek(start + at + len(marker))
            return _MARKERS[marker]
        if len(data) < chunk:
            return None
        file.seek(start + len(data) - overlap)


def _read_layers(file: BinaryIO) -> Iterator[tuple[bytes, list]]:
    """The layers with parameters in file order (input side first), each (name, values),
    one at a time: parameter data is read straight into arrays, never the whole file."""
    while (name := _find_marker(file)) is not None:
        if name == _FC:
            _read_ints(file, 2)  # outputs, inputs (the tensor's shape says it again)
        values: list = [_read_tensor(file)]
        if name == _CON:  # filters, rows, cols, stride y, stride x, padding y, padding x
            values += _read_ints(file, 7)
        yield name, values


def _architecture() -> list[tuple[int, int, int]]:
    """(filters, input channels, stride) of every convolution, input side first."""
    specs = [(32, 3, 2)]
    channels = 32
    for filters, count in _LEVELS:
        for index in range(count):
            down = index == 0 and filters != 32
            specs += [(filters, channels, 2 if down else 1), (filters, filters, 1)]
            channels = filters
    return specs


def _conv(con: list, affine: list, filters: int, in_channels: int, stride: int) -> _Conv:
    tensor, count, rows, cols, stride_y, stride_x, pad_y, pad_x = con
    size = 7 if in_channels == 3 else 3
    expected = (filters, size, size, stride, stride)
    if (count, rows, cols, stride_y, stride_x) != expected or pad_y != pad_x:
        raise ModelFormatError(f"convolution {(count, rows, cols, stride_y, stride_x)}, expected {expected}")
    weights = tensor.reshape(-1)
    if weights.size != filters * in_channels * size * size + filters:
        raise ModelFormatError(f"a {filters}-filter convolution has {weights.size} values")
    kernel = weights[:-filters].reshape(filters, in_channels, size, size)
    bias = weights[-filters:]
    scale_shift = affine[0].reshape(-1)
    if scale_shift.size != 2 * filters:
        raise ModelFormatError(f"an affine layer after {filters} filters has {scale_shift.size} values")
    scale, shift = scale_shift[:filters], scale_shift[filters:]
    # (pixels, channels x rows x cols) @ matrix, matching sliding_window_view's (.., C, kh, kw) order.
    matrix = (kernel * scale[:, None, None, None]).reshape(filters, -1).T
    return _Conv(np.ascontiguousarray(matrix), (bias * scale + shift).astype(np.float32), size, stride, pad_y)


def _pool(x: np.ndarray, size: int, reduce: Callable) -> np.ndarray:
    """size x size pooling with stride 2 and no padding, as in the network."""
    return reduce(sliding_window_view(x, (size, size), axis=(0, 1))[::2, ::2], axis=(3, 4))


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """dlib's add_prev: shapes that differ add as if the smaller were zero-padded (bottom, right, channels)."""
    if a.shape == b.shape:
        return a + b
    out = np.zeros(tuple(map(max, a.shape, b.shape)), np.float32)
    out[: a.shape[0], : a.shape[1], : a.shape[2]] += a
    out[: b.shape[0], : b.shape[1], : b.shape[2]] += b
    return out


class ResNet:
    """dlib's face recognition network on numpy; `descriptor(chip)` for one 150x150 RGB face chip."""

    def __init__(self, model_path: str | Path):
        specs = _architecture()
        convs: list[_Conv] = []
        pending: list | None = None  # a convolution waiting for its affine layer
        linear: np.ndarray | None = None
        with open(model_path, "rb") as file:
            for name, values in _read_layers(file):
                if name == _CON and pending is None and len(convs) < len(specs):
                    pending = values
                elif name == _AFFINE and pending is not None:
                    convs.append(_conv(pending, values, *specs[len(convs)]))
                    pending = None
                elif name == _FC and linear is None and len(convs) == len(specs):
                    linear = values[0]
                else:
                    where = f"after {len(convs)} convolutions"
                    raise ModelFormatError(f"{model_path}: unexpected {name.decode()} layer {where}")
        if len(convs) != len(specs) or linear is None:
            found = f"{len(convs)} of {len(specs)} convolutions" + ("" if linear is not None else ", no linear layer")
            raise ModelFormatError(f"{model_path}: not dlib's face recognition network ({found})")
        if linear.shape[:2] != (256, 128):
            raise ModelFormatError(f"linear layer {linear.shape[:2]}, expected (256, 128)")
        self.stem = convs[0]
        self.blocks = [
            (first, second, first.stride == 2) for first, second in zip(convs[1::2], convs[2::2], strict=True)
        ]
        self.linear = np.ascontiguousarray(linear.reshape(256, 128))

    def descriptor(self, chip: np.ndarray) -> np.ndarray:
        if chip.shape != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"a face chip is {CHIP_SIZE}x{CHIP_SIZE} RGB, not {chip.shape}")
        x = (chip.astype(np.float32) - _PIXEL_MEANS) / np.float32(256)
        x = _pool(np.maximum(self.stem(x), 0), 3, np.max)
        for first, second, down in self.blocks:
            y = second(np.maximum(first(x), 0))
            x = np.maximum(_add(y, _pool(x, 2, np.mean) if down else x), 0)
        return x.mean(axis=(0, 1)) @ self.linear


class FaceEncoder:
    """`encoder(image, boxes)` -> one descriptor per box (float64, like face_recognition's).

    The models are loaded from face_recognition_models' files with dlib alone: importing
    face_recognition would load all of its models (the 68-point landmarks, the CNN detector,
    dlib's ResNet), about 107 MiB per worker that the function never uses. The ``dlib``
    encoder makes face_recognition's own calls (`face_encodings` with the "small" landmarks
    and one jitter)."""

    def __init__(self, name: str = "numpy"):
        if name not in ENCODERS:
            raise ValueError(f"FACE_ENCODER must be one of {', '.join(ENCODERS)}, not {name!r}")
        import dlib
        import face_recognition_models

        self._dlib = dlib
        self.name = name
        self._landmarks = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
        weights = face_recognition_models.face_recognition_model_location()
        self._net = ResNet(weights) if name == "numpy" else None
        self._dlib_net = dlib.face_recognition_model_v1(weights) if name == "dlib" else None

    def __call__(self, image: np.ndarray, boxes: Sequence[Box]) -> list[np.ndarray]:
        dlib = self._dlib
        rects = [dlib.rectangle(left, top, right, bottom) for top, right, bottom, left in boxes]
        shapes = [self._landmarks(image, rect) for rect in rects]
        if self._dlib_net is not None:
            return [np.array(self._dlib_net.compute_face_descriptor(image, shape, 1)) for shape in shapes]
        # One chip at a time, as face_recognition's face_encodings does: dlib's batch call
        # (get_face_chips) shares one image pyramid between the chips, and with faces of
        # different sizes in one frame some chips come out different (seen: 6e-3 in a descriptor).
        chips = [dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING) for shape in shapes]
        return [self._net.descriptor(np.asarray(chip)).astype(np.float64) for chip in chips]
