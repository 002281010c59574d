"""Mapping files: what each input is expected to give, and the comparison with a result.

Face recognition, one line per video::

    test_5.mp4:computer_science,sophomore        # CSE546: major,year of the one person
    clip.mp4:grace_hopper,computer_science,1928  # name,major,year
    two.mp4:alice,math,senior;bob,physics,junior  # several people
    empty.mp4:                                   # nobody known expected

Image classification, one line per image: the top label expected, or several acceptable ones
separated by `|` (a label may hold commas and spaces, never `|` or `:`)::

    coffee.jpg:espresso
    chelsea.png:tabby cat|a cat having a striped coat|Egyptian Mau

Labels compare without regard to case, and an ImageNet class matches by any of its WordNet
synonyms too: `tabby|tiger cat|Egyptian cat` accepts the function's `tabby cat`, `a cat having
a striped coat` and `Egyptian Mau` (facepipe.classify.labels names the classes).

Blank lines and `#` comments are ignored. `parse_any_mapping` tells the two kinds apart: an
image mapping has a `|` on some line, or names only images and is no face mapping.
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from facepipe.answers import Label, Student
from facepipe.keys import IMAGE_SUFFIXES

OK = "ok"
WRONG = "wrong"
MISSING = "missing"
ERROR = "error"
#: The two kinds of mapping file.
FACES = "faces"
IMAGES = "images"
#: Names of the photos the classification function reads.
IMAGE_NAMES = IMAGE_SUFFIXES | {".gif"}


class MappingError(ValueError):
    """A bad line; `line` is its number (1-based)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class ExpectedPerson:
    major: str
    year: str
    name: str | None = None

    def describe(self) -> str:
        if self.name is None:
            return f"{self.major},{self.year}"
        return f"{self.name},{self.major},{self.year}"


@dataclass(frozen=True)
class MappingEntry:
    video: str
    people: tuple[ExpectedPerson, ...]
    line: int = 0

    @property
    def key(self) -> str:
        """The input object's key."""
        return self.video

    def describe(self) -> str:
        return ";".join(person.describe() for person in self.people) or "(nobody)"


@dataclass(frozen=True)
class ImageEntry:
    """An image and the top labels accepted for it (any one of them)."""

    image: str
    labels: tuple[str, ...]
    line: int = 0

    @property
    def key(self) -> str:
        """The input object's key."""
        return self.image

    def describe(self) -> str:
        return "|".join(self.labels)


def _lines(text: str, form: str) -> Iterator[tuple[int, str, str]]:
    """(line number, key, what follows the last colon) of every entry, each key once."""
    seen: dict[str, int] = {}
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, colon, rest = line.rpartition(":")
        key = key.strip()
        if not colon or not key:
            raise MappingError(line_no, f"expected {form!r}, got {line!r}")
        if key in seen:
            raise MappingError(line_no, f"{key!r} is already mapped on line {seen[key]}")
        seen[key] = line_no
        yield line_no, key, rest.strip()


def _parse_person(text: str, line_no: int) -> ExpectedPerson:
    fields = [field.strip() for field in text.split(",")]
    if len(fields) not in (2, 3) or not all(fields):
        raise MappingError(line_no, f"expected 'major,year' or 'name,major,year' after the colon, got {text.strip()!r}")
    if len(fields) == 2:
        return ExpectedPerson(major=fields[0], year=fields[1])
    return ExpectedPerson(name=fields[0], major=fields[1], year=fields[2])


def parse_mapping(text: str) -> list[MappingEntry]:
    """Parse face mapping text; raise MappingError (a ValueError) naming the first bad line."""
    entries = []
    for line_no, video, people_text in _lines(text, "video:major,year"):
        people = tuple(_parse_person(part, line_no) for part in people_text.split(";")) if people_text else ()
        entries.append(MappingEntry(video=video, people=people, line=line_no))
    return entries


def parse_image_mapping(text: str) -> list[ImageEntry]:
    """Parse image mapping text; raise MappingError (a ValueError) naming the first bad line."""
    entries = []
    for line_no, image, labels_text in _lines(text, "image:label|label..."):
        labels = tuple(dict.fromkeys(label.strip() for label in labels_text.split("|")))
        if not all(labels):
            raise MappingError(line_no, f"expected 'label' or 'label|label|...' after the colon, got {labels_text!r}")
        entries.append(ImageEntry(image=image, labels=labels, line=line_no))
    return entries


def _entry_lines(text: str) -> list[tuple[str, str]]:
    """(key, what follows the last colon) of every line that is no comment, unchecked."""
    lines = (line.strip() for line in text.splitlines())
    return [line.rpartition(":")[::2] for line in lines if line and not line.startswith("#")]


def detect_kind(text: str) -> str:
    """IMAGES when some line lists alternatives with `|`, or when every key names an image
    and the lines are no face mapping; else FACES."""
    lines = _entry_lines(text)
    if any("|" in rest for _, rest in lines):
        return IMAGES
    if lines and all(posixpath.splitext(key.strip().lower())[1] in IMAGE_NAMES for key, _ in lines):
        try:
            parse_mapping(text)
        except MappingError:
            return IMAGES
    return FACES


def parse_any_mapping(text: str, kind: str | None = None) -> list[MappingEntry] | list[ImageEntry]:
    """A face or an image mapping: of `kind` (FACES or IMAGES), else of `detect_kind(text)`."""
    return parse_image_mapping(text) if (kind or detect_kind(text)) == IMAGES else parse_mapping(text)


T = TypeVar("T")


def _load(path: str | Path, parse: Callable[[str], T]) -> T:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None
    try:
        return parse(text)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def load_mapping(path: str | Path) -> list[MappingEntry]:
    """Read and parse a face mapping file; errors name the file and the line."""
    return _load(path, parse_mapping)


def load_image_mapping(path: str | Path) -> list[ImageEntry]:
    """Read and parse an image mapping file; errors name the file and the line."""
    return _load(path, parse_image_mapping)


def load_any_mapping(path: str | Path, kind: str | None = None) -> list[MappingEntry] | list[ImageEntry]:
    """Read a face or image mapping file (`parse_any_mapping`); errors name the file and the line."""
    return _load(path, lambda text: parse_any_mapping(text, kind))


def kind_of(entries: list[MappingEntry] | list[ImageEntry]) -> str:
    return IMAGES if entries and isinstance(entries[0], ImageEntry) else FACES


def describe_students(students: list[Student]) -> str:
    return ";".join(f"{s.name},{s.major},{s.year}" for s in students) or "(nobody)"


def _matches(person: ExpectedPerson, student: Student) -> bool:
    return (
        student.major == person.major
        and student.year == person.year
        and (person.name is None or student.name == person.name)
    )


def compare(entry: MappingEntry, students: list[Student]) -> tuple[str, str]:
    """Compare a result with the expected people: (OK or WRONG, a human-readable detail).

    People are compared as a multiset: the mapping says who, not in which order.
    A person given as `major,year` matches any row with that major and year.
    """
    if len(students) != len(entry.people):
        return WRONG, f"expected {len(entry.people)} row(s), got {len(students)}"
    remaining = list(students)
    unmatched = []
    # Named people first, so a `major,year` person cannot take the row a named one needs.
    for person in sorted(entry.people, key=lambda p: p.name is None):
        match = next((s for s in remaining if _matches(person, s)), None)
        if match is None:
            unmatched.append(person.describe())
        else:
            remaining.remove(match)
    if unmatched:
        return WRONG, "no row for " + "; ".join(unmatched)
    return OK, ""


@functools.cache
def _imagenet_classes() -> dict[str, frozenset[int]]:
    """ImageNet-1k class indices by every name they go by (the curated name and each WordNet
    synonym), case-folded."""
    from facepipe.classify import labels

    found: dict[str, set[int]] = {}
    for index, (name, synonyms) in enumerate(zip(labels.names(), labels.synonyms(), strict=True)):
        for word in (name, *synonyms.split(", ")):
            found.setdefault(word.strip().casefold(), set()).add(index)
    return {word: frozenset(indices) for word, indices in found.items()}


def same_label(expected: str, got: str) -> bool:
    """True when `got` (a label as the function writes it) is `expected`, ignoring case, or
    names an ImageNet class that `expected` names too (`tabby` and `tabby cat`)."""
    expected, got = expected.strip().casefold(), got.strip().casefold()
    if expected == got:
        return True
    classes = _imagenet_classes()
    return bool(classes.get(expected, frozenset()) & classes.get(got, frozenset()))


def top_label(labels: list[Label]) -> Label | None:
    return min(labels, key=lambda label: label.rank) if labels else None


def describe_labels(labels: list[Label]) -> str:
    top = top_label(labels)
    return "(no label)" if top is None else f"{top.label} ({top.score:.2f})"


def compare_labels(entry: ImageEntry, labels: list[Label]) -> tuple[str, str]:
    """Compare a classification's top label with the accepted ones: (OK or WRONG, detail)."""
    top = top_label(labels)
    if top is None:
        return WRONG, "the result has no label"
    if any(same_label(accepted, top.label) for accepted in entry.labels):
        return OK, ""
    return WRONG, f"top label {top.label!r} is not {entry.describe()!r}"
