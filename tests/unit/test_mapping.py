"""Mapping files: parsing (both line forms, several people, nobody; image lines with
alternative labels; telling the kinds apart) and comparison with results."""

from __future__ import annotations

from pathlib import Path

import pytest

from facepipe.answers import Label, Student
from facepipe.classify import convert, labels
from facepipe.classify.task import ImageClassificationTask
from facepipe.settings import Settings
from facepipe_tools.mapping import (
    FACES,
    IMAGES,
    OK,
    WRONG,
    ExpectedPerson,
    ImageEntry,
    MappingEntry,
    compare,
    compare_labels,
    detect_kind,
    load_any_mapping,
    load_image_mapping,
    load_mapping,
    parse_any_mapping,
    parse_image_mapping,
    parse_mapping,
    same_label,
)
from facepipe_tools.sample import build_image_sample

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


# ------------------------------------------------------------------------------ image mappings


def test_image_lines_with_alternatives():
    text = """\
# the built-in sample's form
chelsea.png:tabby cat | a cat having a striped coat|Egyptian Mau
coffee.jpg:espresso

pets/odd:name.jpg:tights for gymnastics, a one-piece leotard, or a sport jersey
twice.png:espresso|espresso
"""
    entries = parse_image_mapping(text)
    assert [(e.image, e.line) for e in entries] == [
        ("chelsea.png", 2), ("coffee.jpg", 3), ("pets/odd:name.jpg", 5), ("twice.png", 6),
    ]  # fmt: skip
    assert entries[0].labels == ("tabby cat", "a cat having a striped coat", "Egyptian Mau")
    assert entries[0].describe() == "tabby cat|a cat having a striped coat|Egyptian Mau"
    assert entries[2].labels == ("tights for gymnastics, a one-piece leotard, or a sport jersey",)
    assert entries[3].labels == ("espresso",)
    assert entries[0].key == "chelsea.png" and parse_mapping("v.mp4:a,b\n")[0].key == "v.mp4"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.jpg:espresso\nno colon\n", "line 2: expected 'image:label|label...'"),
        ("a.jpg:\n", "line 1: expected 'label' or 'label|label|...'"),
        ("a.jpg:espresso||tea cup\n", "line 1"),
        ("a.jpg:espresso|\n", "line 1"),
        ("a.jpg:espresso\na.jpg:tea cup\n", "line 2: 'a.jpg' is already mapped on line 1"),
    ],
)
def test_bad_image_lines_name_the_line(text, message):
    with pytest.raises(ValueError, match=message):
        parse_image_mapping(text)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("chelsea.png:tabby cat|Egyptian Mau\n", IMAGES),  # alternatives
        ("coffee.jpg:espresso\ncamera.png:tripod\n", IMAGES),  # photos, and no face mapping
        ("clip.mp4:tabby cat|lynx\n", IMAGES),
        ("test_0.mp4:computer_science,sophomore\n", FACES),
        ("photo.jpg:computer_science,sophomore\n", FACES),  # a face mapping of photos
        ("a.mp4:x\n", FACES),  # a bad face line stays a face mapping (and its error)
        ("a.jpg:espresso\nb.mp4:cs,senior\n", FACES),
        ("# only a comment\n", FACES),
    ],
)
def test_detect_kind(text, kind):
    assert detect_kind(text) == kind


def test_parse_any_mapping():
    assert parse_any_mapping("coffee.jpg:espresso\n") == [ImageEntry("coffee.jpg", ("espresso",), 1)]
    assert isinstance(parse_any_mapping("a.mp4:cs,senior\n")[0], MappingEntry)
    # A kind given wins: this face line is an image line with a comma in its label.
    assert parse_any_mapping("a.jpg:cs,senior\n", IMAGES) == [ImageEntry("a.jpg", ("cs,senior",), 1)]
    with pytest.raises(ValueError, match="line 1: expected 'major,year'"):
        parse_any_mapping("a.mp4:x\n")
    with pytest.raises(ValueError, match="line 1: expected 'major,year'"):
        parse_any_mapping("coffee.jpg:espresso\n", FACES)


def test_same_label_knows_the_wordnet_synonyms():
    assert same_label("tabby cat", "tabby cat")
    assert same_label("Tabby Cat ", "tabby cat")
    assert same_label("tabby", "tabby cat")  # the example line
    assert same_label("tiger cat", "a cat having a striped coat")
    assert same_label("Egyptian cat", "Egyptian Mau")
    assert same_label("projectile", "missile")  # "missile" names two classes
    assert not same_label("tabby", "Egyptian Mau")
    assert not same_label("espresso", "tea cup")
    assert not same_label("no such class", "another unknown")


def top5(*names: str) -> list[Label]:
    return [Label(rank, name, round(0.5 / rank, 4)) for rank, name in enumerate(names, start=1)]


@pytest.mark.parametrize(
    ("line", "found", "status", "detail"),
    [
        ("c.png:tabby cat|Egyptian Mau", top5("Egyptian Mau", "tabby cat"), OK, ""),
        ("c.png:tabby|tiger cat|Egyptian cat", top5("a cat having a striped coat", "lynx"), OK, ""),
        ("c.png:tabby cat", top5("Egyptian Mau", "tabby cat"), WRONG, "top label 'Egyptian Mau' is not 'tabby cat'"),
        ("c.png:tabby cat", [], WRONG, "the result has no label"),
        ("c.png:tabby cat", list(reversed(top5("tabby cat", "lynx"))), OK, ""),  # by rank, not by row order
    ],
)
def test_compare_labels(line, found, status, detail):
    assert compare_labels(parse_image_mapping(line)[0], found) == (status, detail)


def test_load_image_mapping_names_the_file(tmp_path):
    path = tmp_path / "mapping"
    path.write_text("a.jpg:\n")
    with pytest.raises(ValueError, match=f"{path}: line 1"):
        load_image_mapping(path)


def test_sample_image_mapping_lists_the_sample_with_known_labels(tmp_path):
    entries = load_any_mapping(REPO / "data" / "sample_image_mapping")
    assert all(isinstance(entry, ImageEntry) for entry in entries)
    assert sorted(entry.image for entry in entries) == sorted(path.name for path in build_image_sample(tmp_path))
    known = set(labels.names())
    assert all(label in known for entry in entries for label in entry.labels)


def test_the_classifier_gives_the_sample_photos_their_mapped_labels(tmp_path):
    """The sample's mapping holds for the model and the function's decoding (EXIF, grey levels,
    palette, every still format)."""
    model = tmp_path / "efficientnet-lite0.onnx"
    convert.write_model(model)
    task = ImageClassificationTask(Settings(classifier_model=str(model)))
    photos = {path.name: path for path in build_image_sample(tmp_path / "photos")}
    for entry in load_image_mapping(REPO / "data" / "sample_image_mapping"):
        found = task.compute(photos[entry.image]).labels
        assert compare_labels(entry, found) == (OK, ""), (entry.image, found)
