"""Mapping files: which people each video is expected to show, and the comparison with a result.

One line per video::

    test_5.mp4:computer_science,sophomore        # CSE546: major,year of the one person
    clip.mp4:grace_hopper,computer_science,1928  # name,major,year
    two.mp4:alice,math,senior;bob,physics,junior  # several people
    empty.mp4:                                   # nobody known expected

Blank lines and `#` comments are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facepipe.answers import Student

OK = "ok"
WRONG = "wrong"
MISSING = "missing"
ERROR = "error"


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

    def describe(self) -> str:
        return ";".join(person.describe() for person in self.people) or "(nobody)"


def _parse_person(text: str, line_no: int) -> ExpectedPerson:
    fields = [field.strip() for field in text.split(",")]
    if len(fields) not in (2, 3) or not all(fields):
        raise ValueError(
            f"line {line_no}: expected 'major,year' or 'name,major,year' after the colon,"
            f" got {text.strip()!r}"
        )
    if len(fields) == 2:
        return ExpectedPerson(major=fields[0], year=fields[1])
    return ExpectedPerson(name=fields[0], major=fields[1], year=fields[2])


def parse_mapping(text: str) -> list[MappingEntry]:
    """Parse mapping text; raise ValueError naming the line of the first bad line."""
    entries: list[MappingEntry] = []
    seen: dict[str, int] = {}
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        video, colon, people_text = line.rpartition(":")
        video = video.strip()
        if not colon or not video:
            raise ValueError(f"line {line_no}: expected 'video:major,year', got {line!r}")
        if video in seen:
            raise ValueError(f"line {line_no}: {video!r} is already mapped on line {seen[video]}")
        seen[video] = line_no
        people_text = people_text.strip()
        people = tuple(_parse_person(part, line_no) for part in people_text.split(";")) if people_text else ()
        entries.append(MappingEntry(video=video, people=people, line=line_no))
    return entries


def load_mapping(path: str | Path) -> list[MappingEntry]:
    """Read and parse a mapping file; errors name the file and the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None
    try:
        return parse_mapping(text)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


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
