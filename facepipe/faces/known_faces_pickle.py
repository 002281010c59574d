"""The CSE546 known-faces pickle, read without unpickling it.

The CSE546 ``encoding`` file is a pickle (protocol 3) of ``{"name": [str, ...], "encoding":
[ndarray(128, float64), ...]}``. Unpickling runs whatever the file names, and even the few
globals a restricted unpickler lets through (numpy's ``_reconstruct``, ``ndarray``, ``dtype``)
let a crafted file of a few hundred bytes make numpy read memory at an address of its choosing
or allocate gigabytes. So no byte of the file reaches pickle's or numpy's object machinery.

`parse_pickle` walks the opcodes (as ``pickletools.genops`` does, with its argument readers)
with a small stack machine that knows this one format and nothing else:

- an allow-list of opcodes (protocols 3 to 5), checked before an opcode's argument is read;
  a cap on the file size, the number of opcodes, the stack, the marks and the memo indexes;
- the allowed globals are inert stand-ins: ``_reconstruct(ndarray, (0,), b'b')`` and
  ``_frombuffer`` make a placeholder array, ``dtype('f8', False, True)`` a placeholder dtype;
  BUILD on a placeholder checks the state (shape exactly (128,), little-endian float64, not
  Fortran, exactly 1024 bytes of data) and keeps the bytes;
- containers are built only in the shapes of the format (lists of names or arrays, a dict of
  lists, short flat tuples), so nothing deep or cyclic can be made;
- numpy sees the data once, at the end, as one ``bytes`` of ``faces * 1024`` bytes.

Anything else raises `UnsafePickleError` naming what was refused.
"""

from __future__ import annotations

import io
import pickletools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

#: Values per face encoding (dlib's 128-d face descriptor).
ENCODING_SIZE = 128
#: Bytes of one encoding: 128 little-endian float64.
RAW_BYTES = ENCODING_SIZE * 8
SUPPORTED_PROTOCOLS = (3, 4, 5)
#: File bytes allowed per face (one encoding is about 1,060 bytes in protocol 3, plus the name).
BYTES_PER_FACE = RAW_BYTES + 512
#: Opcodes (and memo slots) allowed per face: the CSE546 file uses about 25.
OPS_PER_FACE = 64
#: Marks open at once: the dict, its list, an array's state, a dtype's state.
MAX_MARKS = 8
#: Tuples in this format have at most 8 items (the dtype state).
MAX_TUPLE = 8

_ALLOWED_OPCODES = frozenset(
    {
        "PROTO", "FRAME", "STOP", "MARK",
        "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "NONE", "NEWTRUE", "NEWFALSE",
        "BININT", "BININT1", "BININT2",
        "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
        "SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "BYTEARRAY8",
        "BINPUT", "LONG_BINPUT", "MEMOIZE", "BINGET", "LONG_BINGET",
        "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
        "APPEND", "APPENDS", "SETITEM", "SETITEMS",
        "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD",
    }
)  # fmt: skip


_ALL_OPCODES = {opcode.code.encode("latin-1"): opcode for opcode in pickletools.opcodes}
_OPCODES = {code: opcode for code, opcode in _ALL_OPCODES.items() if opcode.name in _ALLOWED_OPCODES}


class UnsafePickleError(ValueError):
    """The pickle is not the CSE546 known-faces format; the message says what was refused."""


@dataclass(frozen=True, slots=True)
class _Global:
    """Stands in for an allowed numpy global; it is never called."""

    name: str


_RECONSTRUCT, _NDARRAY, _DTYPE, _FROMBUFFER = (_Global(n) for n in ("_reconstruct", "ndarray", "dtype", "_frombuffer"))
_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DTYPE,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
}


class _Dtype:
    """``dtype('f8')``, usable once BUILD has checked that its byte order is little-endian."""

    __slots__ = ("built",)

    def __init__(self) -> None:
        self.built = False


class _Array:
    """A float64 array of 128 values; ``data`` is its raw little-endian bytes once known."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | None = None) -> None:
        self.data = data


#: The args numpy pickles for ``dtype('f8')`` and the state of a little-endian float64 dtype.
_DTYPE_ARGS = ("f8", False, True)
_DTYPE_STATE = (3, "<", None, None, None, -1, -1, 0)
_RECONSTRUCT_ARGS = (_NDARRAY, (0,), b"b")
_SHAPE = (ENCODING_SIZE,)
_TUPLE_ITEM_TYPES = (int, bool, type(None), str, bytes, tuple, _Global, _Dtype)


def _same(value: object, expected: object) -> bool:
    """Equal and of exactly the same types, item by item (so True is not 1); `expected` is
    one of the constants above, which bounds the recursion."""
    if isinstance(expected, tuple):
        return (
            type(value) is tuple
            and len(value) == len(expected)
            and all(_same(v, e) for v, e in zip(value, expected, strict=True))
        )
    if isinstance(expected, _Global):
        return value is expected
    return type(value) is type(expected) and value == expected


def _describe(value: object) -> str:
    """A short description of a value from the file, never its full repr."""
    if isinstance(value, str | bytes) and len(value) <= 40:
        return repr(value)
    if isinstance(value, int) and -(10**12) < value < 10**12:
        return repr(value)
    if type(value) is tuple and len(value) <= 4 and all(type(v) in (int, bool, str) for v in value):
        return "(" + ", ".join(map(_describe, value)) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, _Global):
        return f"numpy's {value.name}"
    if isinstance(value, _Array | _Dtype):
        return f"numpy {type(value).__name__.strip('_').lower()}"
    return type(value).__name__


class _Machine:
    def __init__(self, size: int, max_faces: int, max_name_length: int) -> None:
        self.size = size
        self.max_faces = max_faces
        self.max_string = max(max_name_length, 64)
        self.max_ops = OPS_PER_FACE * max_faces + 256
        self.max_stack = max_faces + 64
        self.stack: list[object] = []
        self.marks: list[int] = []
        self.memo: dict[int, object] = {}
        self.protocol = 0
        self.result: object = None

    # ------------------------------------------------------------------ stack helpers

    def push(self, value: object) -> None:
        if len(self.stack) >= self.max_stack:
            raise UnsafePickleError(f"more than {self.max_stack} objects on the pickle stack")
        self.stack.append(value)

    def floor(self) -> int:
        return self.marks[-1] if self.marks else 0

    def pop(self) -> object:
        if len(self.stack) <= self.floor():
            raise UnsafePickleError("pickle pops an empty stack")
        return self.stack.pop()

    def pop_n(self, count: int) -> list[object]:
        if len(self.stack) - count < self.floor():
            raise UnsafePickleError("pickle pops an empty stack")
        items = self.stack[len(self.stack) - count :]
        del self.stack[len(self.stack) - count :]
        return items

    def pop_mark(self) -> list[object]:
        if not self.marks:
            raise UnsafePickleError("pickle closes a mark it never opened")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def top(self) -> object:
        if len(self.stack) <= self.floor():
            raise UnsafePickleError("pickle uses an empty stack")
        return self.stack[-1]

    # ------------------------------------------------------------------ values

    def tuple_of(self, items: list[object]) -> tuple:
        if len(items) > MAX_TUPLE:
            raise UnsafePickleError(f"a tuple of {len(items)} items (this format has at most {MAX_TUPLE})")
        for item in items:
            if not isinstance(item, _TUPLE_ITEM_TYPES):
                raise UnsafePickleError(f"a tuple holding a {_describe(item)}")
            if isinstance(item, tuple) and any(isinstance(inner, tuple) for inner in item):
                raise UnsafePickleError("tuples nested more than two deep")
        return tuple(items)

    def string(self, value: str) -> str:
        if len(value) > self.max_string:
            raise UnsafePickleError(f"a string of {len(value)} characters (at most {self.max_string})")
        return value

    def raw(self, value: bytes | bytearray) -> bytes:
        if len(value) > RAW_BYTES:
            raise UnsafePickleError(f"{len(value)} bytes of data (an encoding has {RAW_BYTES})")
        return bytes(value)

    def append(self, target: object, items: list[object]) -> None:
        if type(target) is not list:
            raise UnsafePickleError(f"appending to a {_describe(target)}")
        for item in items:
            if not isinstance(item, str | _Array):
                raise UnsafePickleError(f"a list holding a {_describe(item)} (only names and arrays)")
        if len(target) + len(items) > self.max_faces:
            raise UnsafePickleError(f"more than {self.max_faces} faces")
        target.extend(items)

    def set_items(self, target: object, items: list[object]) -> None:
        if type(target) is not dict or len(items) % 2:
            raise UnsafePickleError(f"setting items of a {_describe(target)}")
        for key, value in zip(items[::2], items[1::2], strict=True):
            if type(key) is not str or key not in ("name", "encoding"):
                raise UnsafePickleError(f"a dict key {_describe(key)} (only 'name' and 'encoding')")
            if type(value) is not list:
                raise UnsafePickleError(f"{key!r} maps to a {_describe(value)}, not a list")
            target[key] = value

    def global_(self, module: str, name: str) -> _Global:
        found = _GLOBALS.get((module, name))
        if found is None:
            raise UnsafePickleError(f"refusing to load {module[:80]}.{name[:80]} from a known-faces pickle")
        return found

    def reduce(self, func: object, args: object) -> object:
        if func is _DTYPE:
            if not _same(args, _DTYPE_ARGS):
                descr = args[0] if type(args) is tuple and args else args
                if _same(descr, "f8"):
                    raise UnsafePickleError("numpy dtype with other arguments than ('f8', False, True)")
                raise UnsafePickleError(f"dtype {_describe(descr)}: encodings must be float64 ('f8')")
            return _Dtype()
        if func is _RECONSTRUCT:
            if not _same(args, _RECONSTRUCT_ARGS):
                raise UnsafePickleError("numpy _reconstruct with other arguments than (ndarray, (0,), b'b')")
            return _Array()
        if func is _FROMBUFFER:
            if type(args) is not tuple or len(args) != 4:
                raise UnsafePickleError("numpy _frombuffer with other arguments than (data, dtype, shape, order)")
            data, dtype, shape, order = args
            self.check_array(dtype, shape, False, data)
            if not _same(order, "C"):
                raise UnsafePickleError("array order must be 'C'")
            return _Array(data)
        raise UnsafePickleError(f"calling {_describe(func)} (only numpy's array and dtype constructors)")

    def check_array(self, dtype: object, shape: object, fortran: object, data: object) -> None:
        if not _same(shape, _SHAPE):
            raise UnsafePickleError(f"array shape {_describe(shape)}: encodings have shape ({ENCODING_SIZE},)")
        if not (isinstance(dtype, _Dtype) and dtype.built):
            raise UnsafePickleError("array dtype is not a little-endian float64 dtype")
        if not _same(fortran, False):
            raise UnsafePickleError("Fortran-ordered array")
        if type(data) is not bytes or len(data) != RAW_BYTES:
            size = len(data) if isinstance(data, bytes) else _describe(data)
            raise UnsafePickleError(f"array data of {size} bytes (an encoding has {RAW_BYTES})")

    def build(self, target: object, state: object) -> None:
        if isinstance(target, _Dtype) and not target.built:
            if not _same(state, _DTYPE_STATE):
                order = _describe(state[1]) if type(state) is tuple and len(state) > 1 else "?"
                raise UnsafePickleError(f"dtype state (byte order {order}): encodings must be little-endian '<f8'")
            target.built = True
            return
        if isinstance(target, _Array) and target.data is None:
            if type(state) is not tuple or len(state) != 5 or not _same(state[0], 1):
                raise UnsafePickleError("array state is not (1, shape, dtype, is_fortran, data)")
            _version, shape, dtype, fortran, data = state
            self.check_array(dtype, shape, fortran, data)
            target.data = data
            return
        raise UnsafePickleError(f"setting the state of a {_describe(target)}")

    # ------------------------------------------------------------------ opcodes

    def step(self, name: str, arg: object, pos: int) -> None:
        if name == "PROTO":
            if pos != 0:
                raise UnsafePickleError(f"a second protocol header at byte {pos}")
            if arg not in SUPPORTED_PROTOCOLS:
                raise UnsafePickleError(f"pickle protocol {arg} (supported: 3, 4 and 5)")
            self.protocol = arg
        elif self.protocol == 0:
            raise UnsafePickleError("pickle does not start with a protocol 3, 4 or 5 header")
        elif name == "FRAME":
            if arg > self.size - pos - 9:
                raise UnsafePickleError(f"frame of {arg} bytes at byte {pos} runs past the end of the file")
        elif name == "STOP":
            if self.marks or len(self.stack) != 1:
                raise UnsafePickleError(
                    f"pickle stops with {len(self.stack)} objects and {len(self.marks)} marks on its stack"
                )
            if pos != self.size - 1:
                raise UnsafePickleError(f"{self.size - pos - 1} bytes after the end of the pickle")
            self.result = self.stack.pop()
        elif name == "MARK":
            if len(self.marks) >= MAX_MARKS:
                raise UnsafePickleError(f"marks nested more than {MAX_MARKS} deep")
            self.marks.append(len(self.stack))
        elif name == "EMPTY_DICT":
            self.push({})
        elif name == "EMPTY_LIST":
            self.push([])
        elif name == "EMPTY_TUPLE":
            self.push(())
        elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
            self.push({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
        elif name in ("BININT", "BININT1", "BININT2"):
            self.push(arg)
        elif name.endswith("UNICODE") or name == "BINUNICODE8":
            self.push(self.string(arg))
        elif name.endswith("BYTES") or name in ("BINBYTES8", "BYTEARRAY8"):
            self.push(self.raw(arg))
        elif name in ("BINPUT", "LONG_BINPUT", "MEMOIZE"):
            index = len(self.memo) if name == "MEMOIZE" else arg
            if index > self.max_ops:
                raise UnsafePickleError(f"memo index {index} (at most {self.max_ops})")
            self.memo[index] = self.top()
        elif name in ("BINGET", "LONG_BINGET"):
            if arg not in self.memo:
                raise UnsafePickleError(f"memo index {arg} read before it was written")
            self.push(self.memo[arg])
        elif name == "TUPLE":
            self.push(self.tuple_of(self.pop_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            self.push(self.tuple_of(self.pop_n(int(name[-1]))))
        elif name == "APPEND":
            item = self.pop()
            self.append(self.top(), [item])
        elif name == "APPENDS":
            items = self.pop_mark()
            self.append(self.top(), items)
        elif name == "SETITEM":
            items = self.pop_n(2)
            self.set_items(self.top(), items)
        elif name == "SETITEMS":
            items = self.pop_mark()
            self.set_items(self.top(), items)
        elif name == "GLOBAL":
            module, _, attribute = arg.partition(" ")
            self.push(self.global_(module, attribute))
        elif name == "STACK_GLOBAL":
            module, attribute = self.pop_n(2)
            if type(module) is not str or type(attribute) is not str:
                raise UnsafePickleError("STACK_GLOBAL with names that are not strings")
            self.push(self.global_(module, attribute))
        elif name == "REDUCE":
            args = self.pop()
            self.push(self.reduce(self.pop(), args))
        elif name == "BUILD":
            state = self.pop()
            self.build(self.top(), state)


def _read_global(stream: io.BytesIO) -> str:
    """GLOBAL's argument, ``module\\nname\\n``, as "module name": plain ASCII of at most 255
    bytes a line (pickletools' own reader would undo escapes)."""
    parts = []
    for _ in range(2):
        line = stream.readline(256)
        if not line.endswith(b"\n"):
            raise ValueError("a global's name without its newline, or longer than 255 bytes")
        parts.append(line[:-1].decode("ascii"))
    return " ".join(parts)


def _opcodes(data: bytes) -> Iterator[tuple[str, object, int]]:
    """(name, argument, position) of each opcode up to STOP, like ``pickletools.genops``, but
    an opcode outside the allow-list is refused before its argument is read."""
    stream = io.BytesIO(data)
    while True:
        pos = stream.tell()
        code = stream.read(1)
        if not code:
            raise UnsafePickleError("pickle ends before its STOP opcode")
        opcode = _OPCODES.get(code)
        if opcode is None:
            known = _ALL_OPCODES.get(code)
            what = f"opcode {known.name}" if known else f"unknown opcode 0x{code[0]:02x}"
            raise UnsafePickleError(f"{what} at byte {pos} (not used by the known-faces format)")
        try:
            if opcode.name == "GLOBAL":
                arg = _read_global(stream)
            else:
                arg = opcode.arg.reader(stream) if opcode.arg is not None else None
        except ValueError as exc:  # pickletools' readers: a declared length past the end, bad UTF-8
            raise UnsafePickleError(f"corrupt pickle: {opcode.name} at byte {pos}: {str(exc)[:200]}") from None
        yield opcode.name, arg, pos
        if opcode.name == "STOP":
            return


def parse_pickle(data: bytes, *, max_faces: int, max_name_length: int) -> tuple[list[str], np.ndarray]:
    """Names and a ``(faces, 128)`` float64 array from the CSE546 known-faces pickle.

    Raises `UnsafePickleError` for anything that is not exactly that format, before
    allocating more than a small multiple of the file's size."""
    max_bytes = BYTES_PER_FACE * max_faces + 4096
    if len(data) > max_bytes:
        raise UnsafePickleError(f"pickle of {len(data)} bytes (at most {max_bytes} for {max_faces} faces)")
    machine = _Machine(len(data), max_faces, max_name_length)
    for count, (name, arg, pos) in enumerate(_opcodes(data), start=1):
        if count > machine.max_ops:
            raise UnsafePickleError(f"more than {machine.max_ops} pickle opcodes for at most {max_faces} faces")
        machine.step(name, arg, pos)
    return _faces(machine.result)


def _faces(result: object) -> tuple[list[str], np.ndarray]:
    if type(result) is not dict or set(result) != {"name", "encoding"}:
        raise UnsafePickleError("the pickle must hold a dict with exactly 'name' and 'encoding' lists")
    names, encodings = result["name"], result["encoding"]
    if not all(type(name) is str for name in names):
        raise UnsafePickleError("'name' must be a list of strings")
    if not all(isinstance(encoding, _Array) and encoding.data is not None for encoding in encodings):
        raise UnsafePickleError("'encoding' must be a list of float64 arrays")
    if len(names) != len(encodings):
        raise UnsafePickleError(f"{len(names)} names but {len(encodings)} encodings")
    raw = b"".join(encoding.data for encoding in encodings)
    array = np.frombuffer(raw, dtype="<f8").reshape(len(encodings), ENCODING_SIZE).astype(np.float64)
    return list(names), array
