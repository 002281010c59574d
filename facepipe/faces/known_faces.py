"""Known faces: load, build, convert and match.

The function (``KNOWN_FACES``) reads only the safe formats:

- a JSON file written by ``python -m facepipe.faces.known_faces build`` or ``convert``;
- a folder with one sub-folder of photos per person (encoded at load time).

The CSE546 ``encoding`` pickle is converted to JSON once, by the tools
(``python -m facepipe.faces.known_faces convert encoding -o known_faces.json``, the local
stack at start, ``facepipe_tools.cluster function-secret``), with the parser of
known_faces_pickle.py, which reads the format without unpickling it. Both parsers bound
the file's size and the number of faces before they build anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facepipe.faces.known_faces_pickle import ENCODING_SIZE, UnsafePickleError, parse_pickle
from facepipe.keys import IMAGE_SUFFIXES
from facepipe.settings import ConfigurationError

JSON_FORMAT = "facepipe-known-faces/1"
#: At most this many faces (encodings) in a known-faces source.
MAX_FACES = 10_000
MAX_NAME_LENGTH = 200
#: A JSON face takes about 1.7 KB (128 values rounded to 8 decimals); full precision about 2.7 KB.
MAX_JSON_BYTES = MAX_FACES * 4096
#: The pickle parser's own cap (it depends on the same MAX_FACES) is lower; this bounds the read.
MAX_FILE_BYTES = MAX_JSON_BYTES
PICKLE_MAGIC = b"\x80"


class KnownFacesError(ConfigurationError):
    """The known-faces source cannot be used; the message says why."""


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


def _check_names(names: list) -> tuple[str, ...]:
    if len(names) > MAX_FACES:
        raise KnownFacesError(f"{len(names)} faces (at most {MAX_FACES})")
    for name in names:
        if not isinstance(name, str) or not name:
            raise KnownFacesError("every name must be a non-empty string")
        if len(name) > MAX_NAME_LENGTH or not name.isprintable():
            raise KnownFacesError(f"names must be printable and at most {MAX_NAME_LENGTH} characters")
    return tuple(names)


def _from_pairs(names: list, encodings: list) -> KnownFaces:
    """Known faces from the photo encoder's names and 128-d encodings."""
    checked = _check_names(names)
    try:
        array = np.asarray([np.asarray(e, dtype=np.float64).reshape(-1) for e in encodings], dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise KnownFacesError(f"face encodings are not numeric arrays: {exc}") from None
    if array.size == 0:
        array = array.reshape(0, ENCODING_SIZE)
    return KnownFaces(checked, array)


def load_pickle(data: bytes) -> KnownFaces:
    """The CSE546 format, ``{"name": [str, ...], "encoding": [ndarray(128), ...]}``, read by
    known_faces_pickle.py without unpickling (for conversion to JSON; the function never
    reads pickles)."""
    try:
        names, encodings = parse_pickle(data, max_faces=MAX_FACES, max_name_length=MAX_NAME_LENGTH)
    except UnsafePickleError as exc:
        raise KnownFacesError(f"unsafe or invalid pickle: {exc}") from None
    return KnownFaces(_check_names(names), encodings)


def load_json(text: str) -> KnownFaces:
    """The JSON format, ``{"format": JSON_FORMAT, "faces": [{"name", "encoding"}, ...]}``.
    Its size and its number of values are bounded before it is parsed."""
    if len(text) > MAX_JSON_BYTES:
        raise KnownFacesError(f"JSON known faces of {len(text)} characters (at most {MAX_JSON_BYTES})")
    # Every JSON value but the first follows a comma or an opening bracket: this bounds the
    # objects json.loads can make to those of MAX_FACES faces, whatever the file holds.
    containers = text.count("[") + text.count("{")
    values = containers + text.count(",")
    if containers > 2 * MAX_FACES + 8 or values > MAX_FACES * (ENCODING_SIZE + 8) + 16:
        raise KnownFacesError(f"JSON known faces with more values than {MAX_FACES} faces have")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or an integer of too many digits
        raise KnownFacesError(f"invalid JSON: {str(exc)[:200]}") from None
    faces = obj.get("faces") if isinstance(obj, dict) else None
    if not isinstance(faces, list) or obj.get("format") != JSON_FORMAT:
        raise KnownFacesError(f"JSON known faces must have format {JSON_FORMAT!r} and a 'faces' list")
    if len(faces) > MAX_FACES:
        raise KnownFacesError(f"{len(faces)} faces (at most {MAX_FACES})")
    names, encodings = [], []
    for face in faces:
        if not isinstance(face, dict) or "name" not in face or "encoding" not in face:
            raise KnownFacesError("every face needs 'name' and 'encoding'")
        encoding = face["encoding"]
        if not isinstance(encoding, list) or len(encoding) != ENCODING_SIZE:
            raise KnownFacesError(f"face encodings must have {ENCODING_SIZE} values each")
        if not all(type(value) in (int, float) for value in encoding):
            raise KnownFacesError("face encodings must hold numbers only")
        names.append(face["name"])
        encodings.append(encoding)
    checked = _check_names(names)
    try:
        array = np.array(encodings, dtype=np.float64).reshape(len(encodings), ENCODING_SIZE)
    except OverflowError:
        raise KnownFacesError("face encodings hold numbers too large for float64") from None
    return KnownFaces(checked, array)


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
    if not folder.is_dir():
        raise KnownFacesError(f"{folder} is not a folder (one sub-folder of photos per person)")
    photos = {
        person.name: sorted(p for p in person.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for person in sorted(folder.iterdir())
        if person.is_dir()
    }
    photos = {name: paths for name, paths in photos.items() if paths}
    if not photos:
        raise KnownFacesError(f"{folder} has no sub-folders with photos")
    return build_from_photos(photos)


def _read(path: Path) -> bytes:
    """The file's bytes, reading at most MAX_FILE_BYTES (a FIFO or a device cannot make us
    read without end)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise KnownFacesError(f"cannot read known faces {path}: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise KnownFacesError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    return data


def is_pickle(path: str | Path) -> bool:
    """Whether the file starts like a pickle of protocol 2 or later (the CSE546 file is 3)."""
    try:
        with Path(path).open("rb") as handle:
            return handle.read(1) == PICKLE_MAGIC
    except OSError:
        return False


def _json_from_bytes(data: bytes, path: Path) -> KnownFaces:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise KnownFacesError(f"{path} is neither a JSON file nor a pickle") from None
    return load_json(text)


def load_known_faces(source: str | Path) -> KnownFaces:
    """What the function reads: a JSON file or a folder of photos. A pickle is refused with
    the command that converts it."""
    path = Path(source)
    if path.is_dir():
        return load_folder(path)
    data = _read(path)
    if data[:1] == PICKLE_MAGIC:
        raise KnownFacesError(
            f"refusing to load {path}: it is a pickle, and the function reads only JSON or photos; "
            f"convert it once with `python -m facepipe.faces.known_faces convert {path} -o known_faces.json`"
        )
    return _json_from_bytes(data, path)


def load_for_conversion(source: str | Path) -> KnownFaces:
    """For the tools that convert: a JSON file, a folder of photos or a CSE546 pickle (read by
    the parser of known_faces_pickle.py, never unpickled)."""
    path = Path(source)
    if path.is_dir():
        return load_folder(path)
    data = _read(path)
    if data[:1] == PICKLE_MAGIC:
        return load_pickle(data)
    return _json_from_bytes(data, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build, convert or inspect known-faces files.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="encode a folder of photos (one sub-folder per person) to JSON")
    build.add_argument("folder", type=Path)
    build.add_argument("-o", "--output", type=Path, required=True)
    convert = sub.add_parser("convert", help="convert any accepted source (e.g. the CSE546 pickle) to JSON")
    convert.add_argument("source", type=Path)
    convert.add_argument("-o", "--output", type=Path, required=True)
    show = sub.add_parser("show", help="list the people in a known-faces source (JSON, photos or pickle)")
    show.add_argument("source", type=Path)
    args = parser.parse_args(argv)
    try:
        faces = load_folder(args.folder) if args.command == "build" else load_for_conversion(args.source)
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
