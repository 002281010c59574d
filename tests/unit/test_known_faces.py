import io
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from facepipe.faces import known_faces as known_faces_module
from facepipe.faces.known_faces import (
    KnownFaces,
    KnownFacesError,
    load_for_conversion,
    load_json,
    load_known_faces,
    load_pickle,
    main,
)
from facepipe_tools.sample import SAMPLE_PEOPLE, build_known_faces, photo

REPO_ROOT = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------- a pickle assembler
# Known-faces pickles written opcode by opcode, in the layout numpy and pickle (protocol 3)
# give the CSE546 file, so that each hostile variant differs from a valid file in one place.

NONE, TRUE, FALSE, MARK, TUPLE, TUPLE1 = b"N", b"\x88", b"\x89", b"(", b"t", b"\x85"
REDUCE, BUILD, STOP = b"R", b"b", b"."


def op_str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def op_bytes(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def op_int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def op_global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def op_tuple(*items: bytes) -> bytes:
    return MARK + b"".join(items) + TUPLE


def dtype_state(order: str = "<", fields: bytes = NONE) -> bytes:
    return op_tuple(op_int(3), op_str(order), NONE, NONE, fields, op_int(-1), op_int(-1), op_int(0))


def dtype_ops(descr: str = "f8", order: str = "<", args: bytes | None = None, state: bytes | None = None) -> bytes:
    args = args if args is not None else op_tuple(op_str(descr), FALSE, TRUE)
    state = state if state is not None else dtype_state(order)
    return op_global("numpy", "dtype") + args + REDUCE + state + BUILD


def array_ops(
    data: bytes = bytes(1024),
    shape: bytes | None = None,
    dtype: bytes | None = None,
    fortran: bytes = FALSE,
    module: str = "numpy.core.multiarray",
    reconstruct_args: bytes | None = None,
) -> bytes:
    """``_reconstruct(ndarray, (0,), b'b')`` then BUILD with ``(1, shape, dtype, fortran, data)``."""
    reconstruct_args = reconstruct_args or op_tuple(op_global("numpy", "ndarray"), op_int(0) + TUPLE1, op_bytes(b"b"))
    shape = shape if shape is not None else op_int(128) + TUPLE1
    dtype = dtype if dtype is not None else dtype_ops()
    state = op_tuple(op_int(1), shape, dtype, fortran, op_bytes(data))
    return op_global(module, "_reconstruct") + reconstruct_args + REDUCE + state + BUILD


def known_faces_pickle(names: tuple[str, ...] = ("a",), arrays: list[bytes] | None = None) -> bytes:
    """``{"name": [names], "encoding": [arrays]}`` in protocol 3."""
    arrays = arrays if arrays is not None else [array_ops(np.full(128, i, "<f8").tobytes()) for i in range(len(names))]
    return (
        b"\x80\x03}" + MARK
        + op_str("name") + b"]" + MARK + b"".join(map(op_str, names)) + b"e"
        + op_str("encoding") + b"]" + MARK + b"".join(arrays) + b"e"
        + b"u" + STOP
    )  # fmt: skip


def with_body(body: bytes, protocol: int = 3) -> bytes:
    return b"\x80" + bytes([protocol]) + body + STOP


def with_array(**changes: bytes | str) -> bytes:
    """A one-face pickle whose array differs from a valid one as `changes` say."""
    return known_faces_pickle(arrays=[array_ops(**changes)])


def with_dtype(**changes: bytes | str) -> bytes:
    return with_array(dtype=dtype_ops(**changes))


SHAPE_128 = op_int(128) + TUPLE1
NDARRAY = op_global("numpy", "ndarray")
FROMBUFFER = op_global("numpy._core.numeric", "_frombuffer")
VALID_STATE = op_tuple(op_int(1), SHAPE_128, dtype_ops(), FALSE, op_bytes(bytes(1024)))

HOSTILE: dict[str, bytes] = {
    # The C unpickler grows its memo to the index; a tiny file could ask for 16 GiB.
    "memo index 2**31": with_body(NONE + b"r" + struct.pack("<I", 2**31)),
    "memo index 2**32-1": with_body(NONE + b"r" + struct.pack("<I", 2**32 - 1)),
    "memo read before written": with_body(b"j" + struct.pack("<I", 7)),
    # Declared lengths far beyond the file.
    "BINBYTES8 2**62": with_body(b"\x8e" + struct.pack("<Q", 2**62) + b"x" * 16, protocol=4),
    "BINUNICODE8 2**62": with_body(b"\x8d" + struct.pack("<Q", 2**62) + b"x" * 16, protocol=4),
    "BYTEARRAY8 2**40": with_body(b"\x96" + struct.pack("<Q", 2**40) + b"x" * 16, protocol=5),
    "BINBYTES 2**32-1": with_body(b"B" + struct.pack("<I", 2**32 - 1) + b"x" * 16),
    "BINUNICODE 2**32-1": with_body(b"X" + struct.pack("<I", 2**32 - 1) + b"x" * 16),
    "LONG4 2**31-1": with_body(b"\x8b" + struct.pack("<i", 2**31 - 1) + b"\x01" * 16),
    "LONG4 of 8 KiB": with_body(b"\x8b" + struct.pack("<i", 8192) + b"\xff" * 8192),
    "FRAME past the end": with_body(b"\x95" + struct.pack("<Q", 2**40) + NONE, protocol=4),
    # Shapes, dtypes and data that numpy would act on.
    "shape (2**40,)": with_array(shape=b"\x8a\x06" + (2**40).to_bytes(6, "little") + TUPLE1),
    "shape (2**28,)": with_array(shape=op_int(2**28) + TUPLE1),
    "shape (128, 1)": with_array(shape=op_tuple(op_int(128), op_int(1))),
    "shape ()": with_array(shape=b")", data=bytes(8)),
    "shape (-1,)": with_array(shape=op_int(-1) + TUPLE1),
    "shape (True,)": with_array(shape=TRUE + TUPLE1),
    "dtype O": with_dtype(descr="O8", order="|"),
    "dtype O without size": with_dtype(descr="O", order="|"),
    "dtype <f4": with_array(data=bytes(512), dtype=dtype_ops("f4")),
    "dtype >f8": with_dtype(order=">"),
    "dtype =f8": with_dtype(order="="),
    "dtype V2147483647": with_dtype(descr="V2147483647", order="|"),
    "dtype with fields": with_dtype(state=dtype_state("|", fields=b"}")),
    "dtype state built twice": with_array(dtype=dtype_ops() + dtype_state(">") + BUILD),
    "dtype not built": with_array(dtype=op_global("numpy", "dtype") + op_tuple(op_str("f8"), FALSE, TRUE) + REDUCE),
    "dtype as a string": with_array(dtype=op_str("<f8")),
    "Fortran order": with_array(fortran=TRUE),
    "Fortran flag 0": with_array(fortran=op_int(0)),
    "data of 1023 bytes": with_array(data=bytes(1023)),
    "data of 1025 bytes": with_array(data=bytes(1025)),
    "data of 0 bytes": with_array(data=b""),
    "data of 2 KiB": with_array(data=bytes(2048)),
    "data as a string": known_faces_pickle(
        arrays=[array_ops(data=b"").replace(op_bytes(b"") + TUPLE, op_str("x") + TUPLE)]
    ),
    "NaN data": with_array(data=np.full(128, np.nan).tobytes()),
    "array state version 2": known_faces_pickle(arrays=[array_ops().replace(MARK + op_int(1), MARK + op_int(2))]),
    "array state built twice": known_faces_pickle(arrays=[array_ops() + VALID_STATE + BUILD]),
    "array never built": known_faces_pickle(arrays=[array_ops().rsplit(MARK + op_int(1), 1)[0]]),
    # Globals other than numpy's array and dtype constructors.
    "os.system": with_body(op_global("os", "system") + op_tuple(op_str("touch /tmp/pwned")) + REDUCE),
    "posix.system": with_body(op_global("posix", "system") + op_tuple(op_str("true")) + REDUCE),
    "builtins.eval": with_body(op_global("builtins", "eval") + op_tuple(op_str("1")) + REDUCE),
    "numpy.frombuffer": with_body(op_global("numpy", "frombuffer") + op_tuple(op_bytes(bytes(8))) + REDUCE),
    "numpy.core.multiarray.scalar": with_body(
        op_global("numpy.core.multiarray", "scalar") + op_tuple(dtype_ops("O8", "|"), op_bytes(b"A" * 8)) + REDUCE
    ),
    "numpy._core.multiarray.scalar": with_body(op_global("numpy._core.multiarray", "scalar")),
    "numpy.ndarray called": known_faces_pickle(arrays=[NDARRAY + op_tuple(SHAPE_128, dtype_ops()) + REDUCE]),
    "STACK_GLOBAL os.system": with_body(b"\x8c\x02os\x8c\x06system\x93", protocol=4),
    "STACK_GLOBAL of non-strings": with_body(op_int(1) + op_int(2) + b"\x93", protocol=4),
    "pickle INST": with_body(MARK + b"ios\nsystem\n"),
    "pickle OBJ": with_body(MARK + op_global("os", "system") + b"o"),
    "persistent id": with_body(b"Pfoo\n"),
    "EXT1": with_body(b"\x82\x01"),
    # REDUCE on the allowed globals with other arguments.
    "dtype('f8', 1, 1)": with_dtype(args=op_tuple(op_str("f8"), op_int(1), op_int(1))),
    "dtype('f8',)": with_dtype(args=op_tuple(op_str("f8"))),
    "dtype with 4 args": with_dtype(args=op_tuple(op_str("f8"), FALSE, TRUE, NONE)),
    "dtype(('f8',), ...)": with_dtype(args=op_tuple(op_str("f8") + TUPLE1, FALSE, TRUE)),
    "dtype args not a tuple": with_dtype(args=op_str("f8")),
    "_reconstruct with shape (1,)": with_array(reconstruct_args=op_tuple(NDARRAY, op_int(1) + TUPLE1, op_bytes(b"b"))),
    "_reconstruct of a dtype": with_array(
        reconstruct_args=op_tuple(op_global("numpy", "dtype"), op_int(0) + TUPLE1, op_bytes(b"b"))
    ),
    "_frombuffer of 8 bytes": with_body(
        FROMBUFFER + op_tuple(op_bytes(bytes(8)), dtype_ops(), SHAPE_128, op_str("C")) + REDUCE, protocol=5
    ),
    "_frombuffer in Fortran order": with_body(
        FROMBUFFER + op_tuple(op_bytes(bytes(1024)), dtype_ops(), SHAPE_128, op_str("F")) + REDUCE, protocol=5
    ),
    "BUILD on a list": with_body(b"]" + op_tuple(NONE) + BUILD),
    "BUILD on a global": with_body(op_global("numpy", "dtype") + b"}" + BUILD),
    "APPEND to a dict": with_body(b"}" + NONE + b"a"),
    "SETITEMS on a list": with_body(b"]" + MARK + op_str("name") + b"]" + b"u"),
    # Deep or wide structures.
    "100k marks": with_body(MARK * 100_000),
    "nested tuples": with_body(NONE + TUPLE1 * 100_000),
    "nested lists": with_body(b"]" * 5_000 + b"a" * 4_999),
    "a list in a tuple": with_body(b"]" + TUPLE1),
    "a long tuple": with_body(op_tuple(*[NONE] * 100)),
    "a huge stack": with_body(NONE * 200_000),
    "dict in a dict": with_body(b"}" + op_str("name") + b"}" + b"s"),
    # The shape of the whole file.
    "protocol 0": pickle.dumps({"name": ["a"], "encoding": [[0.0] * 128]}, protocol=0),
    "protocol 2": pickle.dumps({"name": ["a"], "encoding": [np.zeros(128)]}, protocol=2),
    "PROTO twice": b"\x80\x03" + known_faces_pickle(),
    "trailing bytes": known_faces_pickle() + b"junk",
    "no STOP": known_faces_pickle()[:-1],
    "only the header": b"\x80\x03",
    "two objects left": with_body(NONE + NONE),
    "empty stack at STOP": with_body(b""),
    "extra key": known_faces_pickle().replace(b"u.", op_str("extra") + b"]" + b"u."),
    "a list at the top": with_body(b"]"),
    "names not strings": known_faces_pickle(arrays=[]).replace(op_str("a"), op_int(5)),
    "a name too long": known_faces_pickle(("x" * 300,)),
    "a name with a newline": known_faces_pickle(("bad\nname",)),
    "an empty name": known_faces_pickle(("",)),
    "more names than encodings": known_faces_pickle(("a", "b"), arrays=[array_ops()]),
    "names in the encoding list": known_faces_pickle(("a",), arrays=[op_str("a")]),
}


def _cse546_style_pickle(names: list[str], seed: int = 0, protocol: int = 3) -> bytes:
    rng = np.random.default_rng(seed)
    return pickle.dumps({"name": names, "encoding": [rng.normal(size=128) for _ in names]}, protocol=protocol)


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


class _ReferenceUnpickler(pickle.Unpickler):
    """The previous reading of the CSE546 file (numpy's own reconstruct), for comparison on
    the trusted reference file only."""

    def find_class(self, module: str, name: str) -> object:
        allowed = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}
        assert (module, name) in allowed, (module, name)
        return super().find_class(module.replace("numpy.core", "numpy._core"), name)


# --------------------------------------------------------------------------- the formats


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_cse546_style_pickle_converts(tmp_path: Path, protocol: int) -> None:
    data = _cse546_style_pickle(["a", "b", "c"], protocol=protocol)
    path = tmp_path / "encoding"
    path.write_bytes(data)
    faces = load_for_conversion(path)
    assert faces.names == ("a", "b", "c")
    assert faces.encodings.shape == (3, 128) and faces.encodings.dtype == np.float64
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(faces.encodings, np.stack([rng.normal(size=128) for _ in range(3)]))


def test_assembled_pickle_is_the_cse546_layout() -> None:
    """The assembler above writes what pickle and numpy write (so that its variants test the
    parser where it matters)."""
    data = known_faces_pickle(("a", "b"))
    reference = _ReferenceUnpickler(io.BytesIO(data)).load()
    assert reference["name"] == ["a", "b"]
    np.testing.assert_array_equal(np.stack(reference["encoding"]), [np.zeros(128), np.ones(128)])
    faces = load_pickle(data)
    assert faces.names == ("a", "b")
    np.testing.assert_array_equal(faces.encodings, [np.zeros(128), np.ones(128)])


def test_the_function_refuses_pickles_and_says_how_to_convert(tmp_path: Path) -> None:
    path = tmp_path / "encoding"
    path.write_bytes(_cse546_style_pickle(["a"]))
    with pytest.raises(KnownFacesError, match=r"refusing to load .*pickle.*known_faces convert"):
        load_known_faces(path)


def test_malicious_pickle_is_refused_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"name": ["x"], "encoding": [_RunsCode(marker)]}, protocol=3)
    with pytest.raises(KnownFacesError, match="refusing to load builtins.getattr"):
        load_pickle(payload)
    path = tmp_path / "encoding"
    path.write_bytes(payload)
    assert main(["convert", str(path), "-o", str(tmp_path / "out.json")]) == 1
    assert not marker.exists() and not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_pickles_are_refused(name: str) -> None:
    with pytest.raises(KnownFacesError, match="unsafe or invalid pickle|names must|non-empty|NaN"):
        load_pickle(HOSTILE[name])


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("memo index 2**31", "memo index 2147483648"),
        ("BINBYTES8 2**62", "corrupt pickle"),
        ("LONG4 2**31-1", "opcode LONG4 at byte 2"),
        ("no STOP", "ends before its STOP"),
        ("PROTO twice", "second protocol header"),
        ("LONG4 of 8 KiB", "opcode LONG4"),
        ("shape (2**28,)", r"shape \(268435456,"),
        ("dtype O", "dtype 'O8'"),
        ("dtype <f4", "dtype 'f4'"),
        ("dtype >f8", "byte order '>'"),
        ("Fortran order", "Fortran"),
        ("data of 1023 bytes", "1023 bytes"),
        ("os.system", "refusing to load os.system"),
        ("numpy.frombuffer", "refusing to load numpy.frombuffer"),
        ("builtins.eval", "refusing to load builtins.eval"),
        ("numpy.core.multiarray.scalar", "refusing to load numpy.core.multiarray.scalar"),
        ("STACK_GLOBAL os.system", "refusing to load os.system"),
        ("dtype('f8', 1, 1)", "other arguments than \\('f8', False, True\\)"),
        ("100k marks", "marks nested"),
        ("nested tuples", "nested more than two deep"),
        ("nested lists", "a list holding a list"),
        ("a huge stack", "objects on the pickle stack"),
        ("protocol 2", "protocol 2"),
        ("protocol 0", "does not start with a protocol"),
        ("trailing bytes", "4 bytes after the end"),
        ("extra key", "dict key 'extra'"),
    ],
)
def test_refusals_say_what_was_refused(name: str, reason: str) -> None:
    with pytest.raises(KnownFacesError, match=reason):
        load_pickle(HOSTILE[name])


def test_pickle_size_and_face_count_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(known_faces_module, "MAX_FACES", 2)
    assert len(load_pickle(known_faces_pickle(("a", "b"))).names) == 2
    with pytest.raises(KnownFacesError, match="bytes \\(at most"):
        load_pickle(known_faces_pickle(tuple("abcdefg")))
    with pytest.raises(KnownFacesError, match="more than 2 faces"):
        load_pickle(known_faces_pickle(("a", "b", "c")))


@pytest.mark.parametrize(
    "obj",
    [
        ["not", "a", "dict"],
        {"name": ["a", "b"], "encoding": [np.zeros(128)]},
        {"name": ["a"], "encoding": [np.zeros(12)]},
        {"name": [""], "encoding": [np.zeros(128)]},
        {"name": ["a"], "encoding": [np.full(128, np.nan)]},
        {"name": ["a"], "encoding": [np.zeros(128, dtype=np.float32)]},
        {"name": ["a"], "encoding": [np.zeros((128, 1))]},
        {"name": ["a"], "encoding": [np.zeros(128).astype(">f8")]},
        {"name": ["a"], "encoding": [[0.0] * 128]},
        {"name": ("a",), "encoding": [np.zeros(128)]},
    ],
)
def test_malformed_pickles_are_clear_errors(obj: object) -> None:
    for protocol in (3, 4, 5):
        with pytest.raises(KnownFacesError):
            load_pickle(pickle.dumps(obj, protocol=protocol))


def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken"
    path.write_bytes(b"\x80\x03}q\x00(X\x04\x00\x00")
    with pytest.raises(KnownFacesError, match="corrupt pickle"):
        load_for_conversion(path)
    with pytest.raises(KnownFacesError, match="cannot read"):
        load_known_faces(tmp_path / "missing.json")
    (tmp_path / "binary").write_bytes(b"\xff\xfe")
    with pytest.raises(KnownFacesError, match="neither a JSON file nor a pickle"):
        load_known_faces(tmp_path / "binary")


def test_json_round_trip_and_matching() -> None:
    encodings = np.eye(3, 128)
    faces = KnownFaces(("a", "b", "b"), encodings)
    loaded = load_json(faces.to_json())
    assert loaded.names == faces.names
    np.testing.assert_allclose(loaded.encodings, encodings)
    assert loaded.match(encodings[1] * 0.9, tolerance=0.6) == ("b", pytest.approx(0.1))
    name, distance = loaded.match(np.full(128, 5.0), tolerance=0.6)
    assert name is None and distance > 0.6


def _json_faces(faces: list) -> str:
    return json.dumps({"format": "facepipe-known-faces/1", "faces": faces})


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 100_000 + "]" * 100_000, "more values"),
        ("[" * 5_000 + "]" * 5_000, "invalid JSON"),
        ('{"format": "facepipe-known-faces/1", "faces": [' + "[]," * 30_000 + "[]]}", "more values"),
        ('{"format": "facepipe-known-faces/1", "faces": [' + "0," * 2_000_000 + "0]}", "more values"),
        ('{"format": "facepipe-known-faces/1", "faces": [' + "1" * 5000 + "]}", "invalid JSON"),
        (_json_faces([{"name": "a", "encoding": [10**400] + [0] * 127}]), "too large"),
        (_json_faces([{"name": "a", "encoding": [True] * 128}]), "numbers only"),
        (_json_faces([{"name": "a", "encoding": [[0.0]] * 128}]), "numbers only"),
        (_json_faces([{"name": "a", "encoding": [0.0] * 127}]), "128 values"),
        (_json_faces([{"name": "a", "encoding": [float("nan")] * 128}]), "NaN"),
        (_json_faces([{"name": "a\x00b", "encoding": [0.0] * 128}]), "printable"),
        (_json_faces([{"name": 5, "encoding": [0.0] * 128}]), "non-empty string"),
        (_json_faces([{"encoding": [0.0] * 128}]), "needs 'name' and 'encoding'"),
        (_json_faces(["a"]), "needs 'name' and 'encoding'"),
        ('{"format": "something-else", "faces": []}', "must have format"),
    ],
)
def test_hostile_json_is_refused(text: str, reason: str) -> None:
    with pytest.raises(KnownFacesError, match=reason):
        load_json(text)


def test_json_size_and_count_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = KnownFaces(("a", "b", "c"), np.zeros((3, 128))).to_json()
    monkeypatch.setattr(known_faces_module, "MAX_FACES", 2)
    with pytest.raises(KnownFacesError, match="more values|3 faces"):
        load_json(text)
    monkeypatch.setattr(known_faces_module, "MAX_FILE_BYTES", 100)
    path = tmp_path / "faces.json"
    path.write_text(text)
    with pytest.raises(KnownFacesError, match="larger than 100 bytes"):
        load_known_faces(path)


# --------------------------------------------------------------------------- sources and CLI


def test_committed_sample_known_faces_match_the_package_photos() -> None:
    committed = load_known_faces(REPO_ROOT / "data" / "known_faces.json")
    rebuilt = build_known_faces()
    assert committed.names == rebuilt.names == tuple(sorted(SAMPLE_PEOPLE))
    np.testing.assert_allclose(committed.encodings, rebuilt.encodings, atol=1e-5)


def test_folder_of_photos_and_cli_build(tmp_path: Path) -> None:
    for name in SAMPLE_PEOPLE:
        (tmp_path / "photos" / name).mkdir(parents=True)
        (tmp_path / "photos" / name / "1.png").write_bytes(photo(name).read_bytes())
    output = tmp_path / "faces.json"
    assert main(["build", str(tmp_path / "photos"), "-o", str(output)]) == 0
    data = json.loads(output.read_text())
    assert sorted(face["name"] for face in data["faces"]) == sorted(SAMPLE_PEOPLE)
    assert load_known_faces(tmp_path / "photos").names == tuple(sorted(SAMPLE_PEOPLE))
    assert main(["build", str(output), "-o", str(tmp_path / "again.json")]) == 1


def test_photo_without_a_face_is_reported(tmp_path: Path) -> None:
    (tmp_path / "coffee_person").mkdir()
    (tmp_path / "coffee_person" / "cup.png").write_bytes(photo("coffee").read_bytes())
    with pytest.raises(KnownFacesError, match="no face found"):
        load_known_faces(tmp_path)


def test_real_cse546_encoding_converts_as_it_was_read_before(
    cse546: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = (cse546 / "encoding").read_bytes()
    reference = _ReferenceUnpickler(io.BytesIO(data)).load()
    faces = load_for_conversion(cse546 / "encoding")
    assert len(faces.names) == 11
    assert faces.names == tuple(reference["name"])
    np.testing.assert_array_equal(faces.encodings, np.stack(reference["encoding"]))

    output = tmp_path / "known_faces.json"
    assert main(["convert", str(cse546 / "encoding"), "-o", str(output)]) == 0
    converted = load_known_faces(output)
    assert converted.names == faces.names
    np.testing.assert_allclose(converted.encodings, faces.encodings, rtol=0, atol=1e-8)
    assert main(["show", str(cse546 / "encoding")]) == 0
    assert "president_biden\t1 encoding(s)" in capsys.readouterr().out


def test_the_local_stack_converts_a_pickle_at_start(tmp_path: Path) -> None:
    from facepipe_tools.stack.component import StackError, StackPaths
    from facepipe_tools.stack.config import StackConfig
    from facepipe_tools.stack.function import FunctionRunner, worker_known_faces

    source = tmp_path / "encoding"
    source.write_bytes(_cse546_style_pickle(["a", "b"]))
    paths = StackPaths(tmp_path / "state")
    paths.state_dir.mkdir()
    config = StackConfig(
        mon_port=1, rgw_port=2, dynamodb_port=3, gateway_port=4, notifier_port=5, workers=1,
        known_faces=str(source), student_data="students.json", env_file="env",
    )  # fmt: skip
    FunctionRunner(paths).before_start(config)
    converted = Path(worker_known_faces(paths, config))
    assert converted.parent == paths.state_dir and load_known_faces(converted).names == ("a", "b")

    json_source = tmp_path / "faces.json"
    json_source.write_text(load_known_faces(converted).to_json())
    config.known_faces = str(json_source)
    FunctionRunner(paths).before_start(config)
    assert worker_known_faces(paths, config) == str(json_source)

    source.write_bytes(HOSTILE["os.system"])
    config.known_faces = str(source)
    with pytest.raises(StackError, match="refusing to load os.system"):
        FunctionRunner(paths).before_start(config)


def test_the_function_secret_holds_json_converted_from_a_pickle(tmp_path: Path) -> None:
    from facepipe_tools import cluster

    source = tmp_path / "encoding"
    source.write_bytes(_cse546_style_pickle(["a", "b"]))
    secret = cluster.read_known_faces(source)
    assert load_json(secret.decode()).names == ("a", "b")
    source.write_bytes(HOSTILE["memo index 2**31"])
    with pytest.raises(cluster.ClusterError, match="memo index"):
        cluster.read_known_faces(source)
