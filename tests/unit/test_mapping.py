"""Mapping files: parsing (both line forms, several people, nobody) and comparison with results."""

from __future__ import annotations

from pathlib import Path

import pytest

from facepipe.answers import Student
from facepipe_tools.mapping import (
    OK,
    WRONG,
    ExpectedPerson,
    MappingEntry,
    compare,
    load_mapping,
    parse_mapping,
)

REPO = Path(__file__).resolve().parents[2]


def test_parses_every_line_form():
    text = """\
# comment
test_5.mp4:computer_science,sophomore

clip.mp4: grace_hopper , computer_science , senior
two.mp4:alice,math,senior;bob,physics,junior
nobody.mov:
   # indented comment
weird:name.mp4:math,junior\r
"""
    entries = parse_mapping(text)
    assert [(e.video, e.line) for e in entries] == [
        ("test_5.mp4", 2),
        ("clip.mp4", 4),
        ("two.mp4", 5),
        ("nobody.mov", 6),
        ("weird:name.mp4", 8),
    ]
    assert entries[0].people == (ExpectedPerson("computer_science", "sophomore"),)
    assert entries[1].people == (ExpectedPerson("computer_science", "senior", "grace_hopper"),)
    assert entries[2].people == (ExpectedPerson("math", "senior", "alice"), ExpectedPerson("physics", "junior", "bob"))
    assert entries[3].people == ()
    assert entries[3].describe() == "(nobody)"
    assert entries[2].describe() == "alice,math,senior;bob,physics,junior"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.mp4:x,y\nno colon here\n", "line 2: expected 'video:major,year'"),
        (":math,junior\n", "line 1"),
        ("a.mp4:math\n", "line 1: expected 'major,year' or 'name,major,year'"),
        ("a.mp4:a,b,c,d\n", "line 1"),
        ("\n\na.mp4:math,\n", "line 3"),
        ("a.mp4:x,math,junior;\n", "line 1"),
        ("a.mp4:math,junior\nb.mp4:x,y\na.mp4:math,junior\n", "line 3: 'a.mp4' is already mapped on line 1"),
    ],
)
def test_bad_lines_name_the_line(text, message):
    with pytest.raises(ValueError, match=message):
        parse_mapping(text)


def test_load_mapping_names_the_file(tmp_path):
    path = tmp_path / "mapping"
    path.write_text("a.mp4:math\n")
    with pytest.raises(ValueError, match=f"{path}: line 1"):
        load_mapping(path)
    path.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(ValueError, match="not a UTF-8 text file"):
        load_mapping(path)


def test_sample_mapping_parses():
    entries = {entry.video: entry for entry in load_mapping(REPO / "data" / "sample_mapping")}
    assert [person.name for person in entries["sample_hopper.mp4"].people] == ["grace_hopper"]


def test_cse546_mapping_parses(cse546: Path):
    entries = load_mapping(cse546 / "mapping")
    assert len(entries) == 100
    assert all(len(e.people) == 1 and e.people[0].name is None for e in entries)


def entry(text: str) -> MappingEntry:
    return parse_mapping(text)[0]


VIN = Student("vin_diesel", "computer_science", "sophomore")
BEAN = Student("mr_bean", "lawyer", "freshmen")


@pytest.mark.parametrize(
    ("line", "students", "status", "detail"),
    [
        ("v.mp4:computer_science,sophomore", [VIN], OK, ""),
        ("v.mp4:computer_science,sophomore", [], WRONG, "expected 1 row(s), got 0"),
        ("v.mp4:computer_science,sophomore", [VIN, BEAN], WRONG, "expected 1 row(s), got 2"),
        ("v.mp4:computer_science,sophomore", [VIN, VIN], WRONG, "expected 1 row(s), got 2"),
        ("v.mp4:computer_science,sophomore", [BEAN], WRONG, "no row for computer_science,sophomore"),
        ("v.mp4:computer_science,junior", [VIN], WRONG, "no row for computer_science,junior"),
        ("v.mp4:vin_diesel,computer_science,sophomore", [VIN], OK, ""),
        ("v.mp4:someone_else,computer_science,sophomore", [VIN], WRONG, "no row for someone_else"),
        ("v.mp4:vin_diesel,computer_science,senior", [VIN], WRONG, "no row for vin_diesel,computer_science,senior"),
        ("v.mp4:vin_diesel,computer_science,sophomore;mr_bean,lawyer,freshmen", [BEAN, VIN], OK, ""),
        ("v.mp4:vin_diesel,computer_science,sophomore;mr_bean,lawyer,freshmen", [VIN], WRONG, "expected 2"),
        ("v.mp4:lawyer,freshmen;vin_diesel,computer_science,sophomore", [VIN, BEAN], OK, ""),
        ("v.mp4:", [], OK, ""),
        ("v.mp4:", [BEAN], WRONG, "expected 0 row(s), got 1"),
    ],
)
def test_compare(line, students, status, detail):
    got_status, got_detail = compare(entry(line), students)
    assert got_status == status
    assert detail in got_detail
    assert (got_detail == "") == (status == OK)


def test_named_people_are_matched_before_major_year_people():
    both = Student("a", "math", "senior")
    other = Student("b", "math", "senior")
    mixed = entry("v.mp4:math,senior;b,math,senior")
    assert compare(mixed, [other, both]) == (OK, "")
    assert compare(mixed, [both, both])[0] == WRONG
