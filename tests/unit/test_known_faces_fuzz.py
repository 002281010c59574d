"""Fuzzing the known-faces parsers: whatever the bytes, the outcome is a valid KnownFaces or a
KnownFacesError; never another exception, a signal, or memory out of proportion to the file."""

from __future__ import annotations

import json
import pickle
import pickletools
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facepipe.faces.known_faces import MAX_FACES, KnownFaces, KnownFacesError, load_json, load_pickle
from tests.unit.test_known_faces import HOSTILE, known_faces_pickle

REPO_ROOT = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _pickles() -> list[bytes]:
    rng = np.random.default_rng(1)
    faces = {"name": ["vin_diesel", "mr_bean"], "encoding": [rng.normal(size=128) * 0.1 for _ in range(2)]}
    return [known_faces_pickle(("a",)), *(pickle.dumps(faces, protocol=p) for p in (3, 4, 5))]


BASES = _pickles()
OPCODE_BYTES = sorted({opcode.code.encode("latin-1") for opcode in pickletools.opcodes})


def check_outcome(load, data) -> KnownFaces | None:
    """Load `data`; a refusal must be a KnownFacesError and an acceptance a valid KnownFaces."""
    try:
        faces = load(data)
    except KnownFacesError:
        return None
    assert isinstance(faces, KnownFaces)
    assert all(type(name) is str and name for name in faces.names)
    assert faces.encodings.dtype == np.float64 and faces.encodings.shape == (len(faces.names), 128)
    assert len(faces.names) <= MAX_FACES and np.isfinite(faces.encodings).all()
    return faces


@st.composite
def mutated(draw: st.DrawFn, bases: list[bytes] = BASES) -> bytes:
    """A valid pickle with one to four byte flips, truncations, insertions of opcodes (with a
    few argument bytes), deletions or duplicated slices."""
    data = bytearray(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "duplicate", "int"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(OPCODE_BYTES)) + draw(st.binary(max_size=9))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif kind == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        elif kind == "int" and len(data) >= at + 4:
            extreme = draw(st.sampled_from([0, 1, 127, 128, 255, 2**16, 2**31 - 1, 2**32 - 1]))
            data[at : at + 4] = (extreme % 2**32).to_bytes(4, "little")
    return bytes(data)


small_programs = st.lists(st.tuples(st.sampled_from(OPCODE_BYTES), st.binary(max_size=8)), max_size=60).map(
    lambda ops: b"\x80\x03" + b"".join(code + arg for code, arg in ops) + b"."
)


@FUZZ
@given(mutated())
def test_mutated_pickles_are_refused_or_valid(data: bytes) -> None:
    check_outcome(load_pickle, data)


@FUZZ
@given(small_programs)
def test_random_opcode_programs_are_refused_or_valid(data: bytes) -> None:
    check_outcome(load_pickle, data)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_are_refused_or_valid(data: bytes) -> None:
    check_outcome(load_pickle, b"\x80\x03" + data)
    check_outcome(load_pickle, data)


def test_unmutated_bases_load() -> None:
    for data in BASES:
        assert check_outcome(load_pickle, data) is not None


def test_mutations_of_the_real_cse546_pickle(cse546: Path) -> None:
    real = (cse546 / "encoding").read_bytes()

    @FUZZ
    @given(mutated([real]))
    def run(data: bytes) -> None:
        check_outcome(load_pickle, data)

    run()


_JSON_BASE = KnownFaces(("a", "b"), np.linspace(-0.3, 0.3, 256).reshape(2, 128)).to_json()


@FUZZ
@given(st.data())
def test_mutated_json_is_refused_or_valid(data: st.DataObject) -> None:
    text = list(_JSON_BASE)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text) - 1))
        text[at:at] = data.draw(st.sampled_from(["[", "]", "{", "}", ",", '"', "1e999", "NaN", "-", "9" * 400, " "]))
    check_outcome(load_json, "".join(text))


def _peak_bytes(data: bytes) -> int:
    tracemalloc.start()
    try:
        check_outcome(load_pickle, data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_small_hostile_files_allocate_little() -> None:
    """A file of a few hundred bytes never makes the parser allocate more than a few MB
    (what the C unpickler and numpy would do with the memo indexes, declared lengths and
    shapes above is 2 GiB and more)."""
    small = {name: data for name, data in HOSTILE.items() if len(data) <= 1300}
    assert len(small) > 60
    for name, data in small.items():
        assert _peak_bytes(data) < 2 * 2**20, name


@settings(max_examples=150, deadline=None, database=None)
@given(small_programs)
def test_small_random_programs_allocate_little(data: bytes) -> None:
    assert _peak_bytes(data) < 2 * 2**20


_CHILD = r"""
import json, random, resource, sys
from pathlib import Path

from facepipe.faces.known_faces import KnownFacesError, load_json, load_pickle

def vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize")

folder, rounds, headroom = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
baseline = vm_size()
resource.setrlimit(resource.RLIMIT_AS, (baseline + headroom, baseline + headroom))
try:
    bytearray(2 * 2**30)
    sys.exit("the address-space limit does not hold")
except MemoryError:
    pass

def outcome(path: Path, data: bytes) -> str:
    try:
        load_json(data.decode()) if path.suffix == ".json" else load_pickle(data)
    except KnownFacesError:
        return "refused"
    return "accepted"

results = {path.name: outcome(path, path.read_bytes()) for path in sorted((folder / "hostile").iterdir())}
bases = [path.read_bytes() for path in sorted((folder / "bases").iterdir())]
assert all(outcome(Path("base"), base) == "accepted" for base in bases)
rng = random.Random(546)
counts = {"refused": 0, "accepted": 0}
for _ in range(rounds):
    data = bytearray(rng.choice(bases))
    for _ in range(rng.randint(1, 6)):
        at = rng.randrange(len(data) + 1)
        kind = rng.random()
        if kind < 0.4 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif kind < 0.7:
            data[at:at] = bytes([rng.randrange(256)]) + rng.randbytes(rng.randrange(10))
        elif kind < 0.85:
            data[at:at + 4] = rng.choice([2**31, 2**32 - 1, 2**30, 1024, 0]).to_bytes(4, "little")
        else:
            del data[at:at + rng.randrange(1, 32)]
    counts[outcome(Path("mutant"), bytes(data))] += 1
print(json.dumps({"hostile": results, "mutants": counts, "baseline_mb": baseline // 2**20}))
"""


def test_hostile_batch_under_an_address_space_limit(tmp_path: Path) -> None:
    """In a child process whose address space is capped at 300 MB above what numpy and the
    parser need loaded: every hostile file is refused, thousands of random mutants end in a
    result or a refusal, and nothing dies of a signal or a MemoryError."""
    (tmp_path / "hostile").mkdir()
    (tmp_path / "bases").mkdir()
    for number, data in enumerate(HOSTILE.values()):
        (tmp_path / "hostile" / f"{number:03}.pickle").write_bytes(data)
    hostile_json = {
        "deep": "[" * 200_000,
        "wide": '{"format": "facepipe-known-faces/1", "faces": [' + "[]," * 3_000_000 + "[]]}",
        "long-int": '{"format": "facepipe-known-faces/1", "faces": [' + "7" * 100_000 + "]}",
        "strings": '{"format": "facepipe-known-faces/1", "faces": [' + '"ab",' * 1_000_000 + '"ab"]}',
    }
    for name, text in hostile_json.items():
        (tmp_path / "hostile" / f"{name}.json").write_text(text)
    for number, data in enumerate(BASES):
        (tmp_path / "bases" / f"{number}.pickle").write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path), "3000", str(300 * 2**20)],
        capture_output=True, text=True, timeout=600, cwd=REPO_ROOT,
    )  # fmt: skip
    assert done.returncode >= 0, f"the child died of signal {-done.returncode}: {done.stderr[-3000:]}"
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(report["hostile"].values()) == {"refused"}, report["hostile"]
    assert len(report["hostile"]) == len(HOSTILE) + len(hostile_json)
    assert sum(report["mutants"].values()) == 3000


@pytest.mark.parametrize("name", ["memo index 2**31", "shape (2**28,)", "BINBYTES8 2**62", "100k marks"])
def test_known_attacks_refused_under_tracemalloc(name: str) -> None:
    """The classes the issue names, each with its allocation measured."""
    assert _peak_bytes(HOSTILE[name]) < 4 * 2**20
