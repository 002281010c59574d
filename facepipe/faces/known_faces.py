"""Known faces: load, build and match.

Three sources are accepted for ``KNOWN_FACES``:

- a JSON file written by ``python -m facepipe.faces.known_faces build`` (the safe format);
- a folder with one sub-folder of photos per person (encoded at load time);
- the CSE546 ``encoding`` pickle, read through a restricted unpickler that only
  rebuilds numpy arrays: loading an arbitrary pickle would execute code.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facepipe.keys import IMAGE_SUFFIXES
from facepipe.settings import ConfigurationError

ENCODING_SIZE = 128
JSON_FORMAT = "facepipe-known-faces/1"


class KnownFacesError(ConfigurationError):
    """The known-faces source cannot be used; the message says why."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals needed to rebuild numpy arrays."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> object:
        target = self._ALLOWED.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a known-faces pickle")
        return super().find_class(*target)


@dataclass(frozen=True)
class KnownFaces:
    """Parallel arrays: ``names[i]`` is the person whose face encoding is ``encodings[i]``."""

    names: tuple[str, ...]
    encodings: np.ndarray

    def __post_init__(self) -> None:
        if self.encodings.ndim != 2 or self.encodings.shape[1] != ENCODING_SIZE:
            raise KnownFacesError(f"face encodings must have {ENCODING_SIZE} values each")
        if len(self.names) != len(self.encodings):
            raise KnownFacesError("the number of names and encodings differ")
        if not np.isfinite(self.encodings).all():
            raise KnownFacesError("face encodings contain NaN or infinite values")

    @property
    def people(self) -> list[str]:
        return sorted(set(self.names))

    def match(self, encoding: np.ndarray, tolerance: float) -> tuple[str | None, float]:
        """The nearest known person within ``tolerance`` (Euclidean distance), and that distance."""
        if not self.names:
            return None, float("inf")
        distances = np.linalg.norm(self.encodings - encoding, axis=1)
        best = int(np.argmin(distances))
        distance = float(distances[best])
        return (self.names[best] if distance <= tolerance else None), distance

    def to_json(self) -> str:
        faces = [
            {"name": name, "encoding": [round(float(v), 8) for v in encoding]}
            for name, encoding in zip(self.names, self.encodings, strict=True)
        ]
        lines = ",\n".join("  " + json.dumps(face) for face in faces)
        return f'{{"format": "{JSON_FORMAT}", "faces": [\n{lines}\n]}}\n'


def _from_pairs(names: list, encodings: list) -> KnownFaces:
    if not all(isinstance(name, str) and name for name in names):
        raise KnownFacesError("every name must be a non-empty string")
    try:
        array = np.asarray([np.asarray(e, dtype=np.float64).reshape(-1) for e in encodings], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise KnownFacesError(f"face encodings are not numeric arrays: {exc}") from None
    if array.size == 0:
        array = array.reshape(0, ENCODING_SIZE)
    return KnownFaces(tuple(names), array)


def load_pickle(data: bytes) -> KnownFaces:
    """Load the CSE546 format: ``{"name": [str, ...], "encoding": [ndarray(128), ...]}``."""
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as exc:
        raise KnownFacesError(f"unsafe or invalid pickle: {exc}") from None
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise KnownFacesError(f"invalid pickle: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), list) or "encoding" not in obj:
        raise KnownFacesError("pickle must hold a dict with 'name' and 'encoding' lists")
    return _from_pairs(obj["name"], list(obj["encoding"]))


def load_json(text: str) -> KnownFaces:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KnownFacesError(f"invalid JSON: {exc}") from None
    faces = obj.get("faces") if isinstance(obj, dict) else None
    if not isinstance(faces, list) or obj.get("format") != JSON_FORMAT:
        raise KnownFacesError(f"JSON known faces must have format {JSON_FORMAT!r} and a 'faces' list")
    try:
        return _from_pairs([f["name"] for f in obj["faces"]], [f["encoding"] for f in obj["faces"]])
    except (KeyError, TypeError):
        raise KnownFacesError("every face needs 'name' and 'encoding'") from None


def encode_photo(path: Path) -> np.ndarray:
    """The encoding of the largest face in a photo; KnownFacesError if there is none."""
    import face_recognition

    from facepipe.media import load_image

    image = load_image(path)
    boxes = face_recognition.face_locations(image, number_of_times_to_upsample=1)
    if not boxes:
        raise KnownFacesError(f"no face found in {path}")
    largest = max(boxes, key=lambda b: (b[2] - b[0]) * (b[1] - b[3]))
    return face_recognition.face_encodings(image, [largest])[0]


def build_from_photos(photos: dict[str, list[Path]]) -> KnownFaces:
    names, encodings = [], []
    for name, paths in sorted(photos.items()):
        for path in paths:
            names.append(name)
            encodings.append(encode_photo(path))
    return _from_pairs(names, encodings)


def load_folder(folder: Path) -> KnownFaces:
    """One sub-folder per person, named after the person, holding one or more photos."""
    photos = {
        person.name: sorted(p for p in person.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for person in sorted(folder.iterdir())
        if person.is_dir()
    }
    photos = {name: paths for name, paths in photos.items() if paths}
    if not photos:
        raise KnownFacesError(f"{folder} has no sub-folders with photos")
    return build_from_photos(photos)


def load_known_faces(source: str | Path) -> KnownFaces:
    """Load from a JSON file, a folder of photos, or a CSE546 pickle (detected by content)."""
    path = Path(source)
    if path.is_dir():
        return load_folder(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KnownFacesError(f"cannot read known faces {path}: {exc.strerror}") from None
    if data[:1] == b"\x80":
        return load_pickle(data)
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise KnownFacesError(f"{path} is neither a JSON file nor a pickle") from None
    return load_json(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build or inspect known-faces files.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="encode a folder of photos (one sub-folder per person) to JSON")
    build.add_argument("folder", type=Path)
    build.add_argument("-o", "--output", type=Path, required=True)
    convert = sub.add_parser("convert", help="convert any accepted source (e.g. the CSE546 pickle) to JSON")
    convert.add_argument("source", type=Path)
    convert.add_argument("-o", "--output", type=Path, required=True)
    show = sub.add_parser("show", help="list the people in a known-faces source")
    show.add_argument("source", type=Path)
    args = parser.parse_args(argv)
    try:
        faces = load_known_faces(args.folder if args.command == "build" else args.source)
    except KnownFacesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.command == "show":
        for person in faces.people:
            print(f"{person}\t{faces.names.count(person)} encoding(s)")
        return 0
    args.output.write_text(faces.to_json())
    print(f"wrote {len(faces.names)} encodings of {len(faces.people)} people to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
