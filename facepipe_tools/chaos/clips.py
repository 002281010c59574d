"""The uploads of a chaos workload: CSE546 clips, the built-in sample clips and the built-in
photos for the image bucket, each with the answer expected for it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from facepipe_tools.chaos.stack import FACES, IMAGES, ChaosError
from facepipe_tools.mapping import ImageEntry, MappingEntry, load_image_mapping, load_mapping
from facepipe_tools.paths import DATA_DIR


@dataclass(frozen=True)
class Clip:
    """One upload of a workload: its object key, the file, the expected answer and which
    function's bucket it goes to (FACES: a video; IMAGES: a photo to classify)."""

    key: str
    path: Path
    expected: MappingEntry | ImageEntry | None = None
    kind: str = FACES


def cse546_clips(cse546: Path, limit: int | None = None) -> list[Clip]:
    """The clips of CSE546 test_case_2 with their mapping entries (in numeric order)."""
    mapping = {entry.video: entry for entry in load_mapping(cse546 / "mapping")}
    folder = cse546 / "test_cases" / "test_case_2"
    paths = sorted(folder.glob("*.mp4"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    if not paths:
        raise ChaosError(f"no clips in {folder}")
    clips = [Clip(p.name, p, mapping.get(p.name)) for p in paths]
    return clips[:limit] if limit else clips


def sample_clips(sample_dir: Path, mapping_file: Path, count: int) -> list[Clip]:
    """`count` uploads of the built-in sample clips, each under its own key (`NN-<name>`)."""
    entries = load_mapping(mapping_file)
    clips = []
    for index in range(count):
        entry = entries[index % len(entries)]
        key = f"{index:02d}-{entry.video}"
        clips.append(Clip(key, sample_dir / entry.video, MappingEntry(key, entry.people)))
    return clips


def sample_photos(photo_dir: Path, count: int, mapping_file: Path = DATA_DIR / "sample_image_mapping") -> list[Clip]:
    """`count` uploads of the built-in photos (facepipe_tools.sample, made in `photo_dir` when
    missing) to the image bucket, each under its own key (`NN-<name>`), with its labels."""
    from facepipe_tools.sample import build_image_sample

    build_image_sample(photo_dir)
    entries = load_image_mapping(mapping_file)
    photos = []
    for index in range(count):
        entry = entries[index % len(entries)]
        key = f"{index:02d}-{entry.image}"
        photos.append(Clip(key, photo_dir / entry.image, ImageEntry(key, entry.labels), IMAGES))
    return photos
