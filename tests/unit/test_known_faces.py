import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from facepipe.faces.known_faces import KnownFaces, KnownFacesError, load_known_faces, load_pickle, main
from facepipe_tools.sample import SAMPLE_PEOPLE, build_known_faces, photo

REPO_ROOT = Path(__file__).resolve().parents[2]


def _cse546_style_pickle(names: list[str], seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return pickle.dumps({"name": names, "encoding": [rng.normal(size=128) for _ in names]}, protocol=3)


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_cse546_style_pickle_loads(tmp_path: Path) -> None:
    path = tmp_path / "encoding"
    path.write_bytes(_cse546_style_pickle(["a", "b", "c"]))
    faces = load_known_faces(path)
    assert faces.names == ("a", "b", "c")
    assert faces.encodings.shape == (3, 128) and faces.encodings.dtype == np.float64


def test_malicious_pickle_is_refused_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"name": ["x"], "encoding": [_RunsCode(marker)]}, protocol=3)
    with pytest.raises(KnownFacesError, match="refusing to load"):
        load_pickle(payload)
    assert not marker.exists()


@pytest.mark.parametrize(
    "obj",
    [
        ["not", "a", "dict"],
        {"name": ["a", "b"], "encoding": [np.zeros(128)]},
        {"name": ["a"], "encoding": [np.zeros(12)]},
        {"name": [""], "encoding": [np.zeros(128)]},
        {"name": ["a"], "encoding": [np.full(128, np.nan)]},
    ],
)
def test_malformed_pickles_are_clear_errors(obj: object) -> None:
    with pytest.raises(KnownFacesError):
        load_pickle(pickle.dumps(obj, protocol=3))


def test_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken"
    path.write_bytes(b"\x80\x03}q\x00(X\x04\x00\x00")
    with pytest.raises(KnownFacesError, match="invalid pickle"):
        load_known_faces(path)
    with pytest.raises(KnownFacesError, match="cannot read"):
        load_known_faces(tmp_path / "missing.json")


def test_json_round_trip_and_matching() -> None:
    encodings = np.eye(3, 128)
    faces = KnownFaces(("a", "b", "b"), encodings)
    loaded = load_known_faces_from_text(faces.to_json())
    assert loaded.names == faces.names
    np.testing.assert_allclose(loaded.encodings, encodings)
    assert loaded.match(encodings[1] * 0.9, tolerance=0.6) == ("b", pytest.approx(0.1))
    name, distance = loaded.match(np.full(128, 5.0), tolerance=0.6)
    assert name is None and distance > 0.6


def load_known_faces_from_text(text: str) -> KnownFaces:
    from facepipe.faces.known_faces import load_json

    return load_json(text)


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


def test_photo_without_a_face_is_reported(tmp_path: Path) -> None:
    (tmp_path / "coffee_person").mkdir()
    (tmp_path / "coffee_person" / "cup.png").write_bytes(photo("coffee").read_bytes())
    with pytest.raises(KnownFacesError, match="no face found"):
        load_known_faces(tmp_path)


def test_real_cse546_encoding_loads(cse546: Path) -> None:
    faces = load_known_faces(cse546 / "encoding")
    assert len(faces.names) == 11
    assert {"president_biden", "mr_bean", "floki"} <= set(faces.names)
