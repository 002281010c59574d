"""What a media file is, from its own bytes, and whether its container index is sane.

The function decodes only formats it chooses from the file's magic bytes (never from its
name): MP4/QuickTime, Matroska/WebM and AVI for video, JPEG, PNG, GIF, BMP, WebP and TIFF
for stills. Everything else (HLS playlists, concat lists, SDP files, MPEG-TS...) is refused
before any demuxer sees it.

Container indexes are read by FFmpeg in one go while it opens a file, and FFmpeg keeps
about 30 bytes per indexed sample: an MP4 whose sample table claims 30 million samples in
15 MB (`stz2` packs two sizes in a byte), or a fragment run (`trun`) claiming millions of
samples that take no bytes at all, makes it allocate gigabytes before the first frame;
an MP4 of 300 KB with 2 000 edit-list entries over 100 000 samples keeps it busy for
seconds (the edit list is applied to every sample, and nothing interrupts that).
`check_index` walks the boxes (MP4) or elements (Matroska) or chunks (AVI) that hold the
index, reading only headers and counts, and refuses absurd ones.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

#: Samples an MP4 may index (every track and fragment together): two hours of 60 fps video
#: with its audio is about 800 000; FFmpeg keeps about 30 bytes for each.
MAX_INDEX_SAMPLES = 2_000_000
#: Bytes of index a Matroska (Cues) or AVI (idx1, OpenDML indexes) file may hold; FFmpeg
#: needs up to about six times as much memory. Ten hours of video index in under 1 MB.
MAX_INDEX_BYTES = 16 << 20
#: Edit-list entries of an MP4 track (a camera writes one; an editor a few per cut), and
#: entries times samples (FFmpeg's work applying them: about 40 ns each).
MAX_EDITS = 1024
MAX_EDIT_WORK = 20_000_000
#: Boxes, elements or chunks walked before giving up (a real file has at most thousands).
MAX_WALK = 1_000_000


class MediaError(Exception):
    """Media that cannot be used. ``kind`` is a short code (an error record's kind), ``detail``
    a readable reason. Raised here for containers and by `facepipe.media` for everything else."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Sniffed:
    """`kind` is "image" or "video"; `name` is the Pillow format or the FFmpeg demuxer."""

    kind: str
    name: str


#: FFmpeg's demuxers for the allowed containers (format names as av.open takes them).
MP4, MATROSKA, AVI = "mov", "matroska", "avi"
#: Top-level boxes a QuickTime/MP4 file starts with (FFmpeg's mov probe accepts the same).
_QUICKTIME_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
_IMAGE_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)
SNIFF_BYTES = 16
SUPPORTED = "MP4/QuickTime, Matroska/WebM, AVI, JPEG, PNG, GIF, BMP, WebP or TIFF"


def sniff(head: bytes) -> Sniffed | None:
    """The format of a file that starts with `head` (at least SNIFF_BYTES), None if not allowed."""
    for magic, name in _IMAGE_MAGIC:
        if head.startswith(magic):
            return Sniffed("image", name)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniffed("image", "WEBP")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Sniffed("video", AVI)
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return Sniffed("video", MATROSKA)
    if head[4:8] in _QUICKTIME_FIRST_BOXES:
        return Sniffed("video", MP4)
    return None


def check_index(file: BinaryIO, demuxer: str, deadline: float | None = None) -> None:
    """Raise MediaError (`too_large`) when the container's index is beyond the limits,
    (`timeout`) when walking it outlasts the monotonic `deadline`."""
    size = file.seek(0, 2)
    walk = _Walk(file, deadline)
    if demuxer == MP4:
        _check_mp4(walk, size)
    elif demuxer == MATROSKA:
        _check_index_bytes("Matroska", _matroska_cues_bytes(walk, size))
    elif demuxer == AVI:
        _check_index_bytes("AVI", _avi_index_bytes(walk, size))


def declared_size(file: BinaryIO, demuxer: str) -> int | None:
    """The bytes the container's top level says the file holds (MP4 boxes, AVI RIFF lists,
    the Matroska Segment), None when it does not say (sizes left open, as a live recording
    writes them). A file shorter than that was cut: a real sign of truncation, unlike frame
    counts, which muxers get wrong (FFmpeg's AVI header can count frames it never wrote)."""
    size = file.seek(0, 2)
    walk = _Walk(file, None)
    if demuxer == MP4:
        return _top_level_end(walk, size, ">I", open_sizes=(0,))
    if demuxer == AVI:
        return _top_level_end(walk, size, "<I", open_sizes=(0, 0xFFFFFFFF))
    if demuxer == MATROSKA:
        header = _element(walk, 0)
        segment = _element(walk, header[1] + header[2]) if header is not None and header[2] >= 0 else None
        if segment is None or segment[0] != _EBML_SEGMENT or segment[2] < 0:
            return None
        return segment[1] + segment[2]
    return None


def _top_level_end(walk: _Walk, size: int, size_format: str, open_sizes: tuple[int, ...]) -> int | None:
    """Where the last top-level box (MP4) or chunk (AVI, padded to even) declares its end."""
    at = end = 0
    while at < size:
        walk.step("boxes")
        header = walk.read(at, 16)
        if len(header) < 8:
            return at + 8  # the file ends inside a header
        mp4 = size_format == ">I"  # MP4: size then type; AVI (RIFF): type then size
        length = struct.unpack(size_format, header[:4] if mp4 else header[4:8])[0]
        if length in open_sizes:
            return None
        if mp4:  # the size counts the header; 1 means a 64-bit size follows
            if length == 1:
                if len(header) < 16:
                    return at + 16
                length = struct.unpack(">Q", header[8:16])[0]
            if length < 8:
                return None  # malformed: FFmpeg decides what it is
            end = at = at + length
        else:
            end = at + 8 + length
            at = end + (length & 1)  # chunks are padded to even sizes; the last pad may be missing
    return end


class _Walk:
    """Reads of one check: counts the boxes, elements or chunks seen and watches the deadline."""

    def __init__(self, file: BinaryIO, deadline: float | None) -> None:
        self.file = file
        self.deadline = deadline
        self.seen = 0

    def step(self, what: str) -> None:
        self.seen += 1
        if self.seen > MAX_WALK:
            raise MediaError("unreadable", f"the file has more than {MAX_WALK} {what}")
        if self.deadline is not None and self.seen % 1024 == 0 and time.monotonic() > self.deadline:
            raise MediaError("timeout", "reading the file's structure took longer than its time limit")

    def read(self, at: int, count: int) -> bytes:
        self.file.seek(at)
        return self.file.read(count)


def _check_index_bytes(container: str, index_bytes: int) -> None:
    if index_bytes > MAX_INDEX_BYTES:
        raise MediaError(
            "too_large", f"the {container} index takes {index_bytes} bytes, the limit is {MAX_INDEX_BYTES}"
        )


# ----------------------------------------------------------------------------- MP4


def _mp4_boxes(walk: _Walk, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, body start, end) of each box between `start` and `end`; stops at a malformed one."""
    at = start
    while at + 8 <= end:
        walk.step("boxes")
        header = walk.read(at, 16)
        if len(header) < 8:
            return
        box_size, kind = struct.unpack(">I4s", header[:8])
        header_size = 8
        if box_size == 1 and len(header) >= 16:
            box_size, header_size = struct.unpack(">Q", header[8:16])[0], 16
        elif box_size == 0:
            box_size = end - at
        if box_size < header_size:
            return  # malformed: FFmpeg decides what it is
        yield kind, at + header_size, min(end, at + box_size)
        at += box_size


def _check_mp4(walk: _Walk, size: int) -> None:
    """Samples of every track (stsz, stz2) and fragment run (trun); edit lists per track."""
    total = 0
    for kind, body, end in _mp4_boxes(walk, 0, size):
        if kind == b"moov":
            for trak_kind, trak_body, trak_end in _mp4_boxes(walk, body, end):
                if trak_kind == b"trak":
                    total += _mp4_track(walk, trak_body, trak_end)
        elif kind == b"moof":
            for traf in _mp4_children(walk, body, end, b"traf"):
                for trun in _mp4_children(walk, traf[0], traf[1], b"trun"):
                    total += _u32(walk.read(trun[0] + 4, 4))
    if total > MAX_INDEX_SAMPLES:
        raise MediaError("too_large", f"the MP4 index lists {total} samples, the limit is {MAX_INDEX_SAMPLES}")


def _mp4_children(walk: _Walk, start: int, end: int, wanted: bytes) -> Iterator[tuple[int, int]]:
    for kind, body, box_end in _mp4_boxes(walk, start, end):
        if kind == wanted:
            yield body, box_end


def _mp4_track(walk: _Walk, start: int, end: int) -> int:
    """The track's sample count, after checking its edit list against it."""
    samples = edits = 0
    for edts in _mp4_children(walk, start, end, b"edts"):
        for elst in _mp4_children(walk, *edts, b"elst"):
            edits += _u32(walk.read(elst[0] + 4, 4))
    for mdia in _mp4_children(walk, start, end, b"mdia"):
        for minf in _mp4_children(walk, *mdia, b"minf"):
            for stbl in _mp4_children(walk, *minf, b"stbl"):
                for kind, body, _ in _mp4_boxes(walk, *stbl):
                    if kind in (b"stsz", b"stz2"):
                        samples += _u32(walk.read(body + 8, 4))
    if samples > MAX_INDEX_SAMPLES:
        raise MediaError("too_large", f"the MP4 index lists {samples} samples, the limit is {MAX_INDEX_SAMPLES}")
    if edits > MAX_EDITS or edits * samples > MAX_EDIT_WORK:
        raise MediaError(
            "too_large",
            f"an MP4 track has {edits} edit-list entries over {samples} samples, the limits are {MAX_EDITS} "
            f"entries and {MAX_EDIT_WORK} entries times samples",
        )
    return samples


def _u32(data: bytes) -> int:
    return struct.unpack(">I", data)[0] if len(data) == 4 else 0


# ----------------------------------------------------------------------------- Matroska

_EBML_SEGMENT = 0x18538067
_EBML_SEEKHEAD = 0x114D9B74
_EBML_SEEK = 0x4DBB
_EBML_SEEK_ID = 0x53AB
_EBML_SEEK_POSITION = 0x53AC
_EBML_CUES = 0x1C53BB6B
_EBML_UNKNOWN = -1
_MAX_SEEKHEAD_BYTES = 1 << 20


def _vint(data: bytes, at: int, keep_marker: bool) -> tuple[int, int]:
    """(value, length) of the EBML variable-length integer at `at`; value -1 for the reserved
    all-ones size ("unknown"); length 0 when it is malformed or cut off."""
    if at >= len(data) or data[at] == 0:
        return 0, 0
    first = data[at]
    length = 9 - first.bit_length()
    if at + length > len(data):
        return 0, 0
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[at + 1 : at + length]:
        value = (value << 8) | byte
    if not keep_marker and value == (1 << (7 * length)) - 1:
        return _EBML_UNKNOWN, length
    return value, length


def _element(walk: _Walk, at: int) -> tuple[int, int, int] | None:
    """(id, data start, data size or -1) of the element at `at`, None when unreadable."""
    head = walk.read(at, 12)
    element_id, id_length = _vint(head, 0, keep_marker=True)
    if not id_length or id_length > 4:
        return None
    size, size_length = _vint(head, id_length, keep_marker=False)
    if not size_length:
        return None
    return element_id, at + id_length + size_length, size


def _matroska_cues_bytes(walk: _Walk, size: int) -> int:
    """Bytes of every Cues element FFmpeg would read: those among the Segment's children up to
    the first element of unknown size, and those a SeekHead points to."""
    first = _element(walk, 0)
    if first is None or first[2] < 0:
        return 0
    segment = _element(walk, first[1] + first[2])
    if segment is None or segment[0] != _EBML_SEGMENT:
        return 0
    segment_start = segment[1]
    segment_end = size if segment[2] < 0 else min(size, segment_start + segment[2])
    cues: dict[int, int] = {}
    seek_targets: set[int] = set()
    at = segment_start
    while at < segment_end:
        walk.step("elements")
        element = _element(walk, at)
        if element is None or element[2] < 0:
            break
        element_id, data_start, data_size = element
        if element_id == _EBML_CUES:
            cues[at] = data_size
        elif element_id == _EBML_SEEKHEAD:
            seek_targets |= _seek_positions(walk, data_start, data_size, segment_start)
        at = data_start + data_size
    for target in sorted(seek_targets - set(cues)):
        element = _element(walk, target) if target < size else None
        if element is not None and element[0] == _EBML_CUES:
            cues[target] = max(0, min(element[2], size - element[1]))
        elif element is not None and element[0] == _EBML_SEEKHEAD and element[2] >= 0:
            for nested in _seek_positions(walk, element[1], element[2], segment_start) - set(cues):
                found = _element(walk, nested) if nested < size else None
                if found is not None and found[0] == _EBML_CUES:
                    cues[nested] = max(0, min(found[2], size - found[1]))
    return sum(cues.values())


def _seek_positions(walk: _Walk, start: int, length: int, segment_start: int) -> set[int]:
    """File offsets of the Cues and SeekHead elements a SeekHead lists."""
    data = walk.read(start, min(length, _MAX_SEEKHEAD_BYTES))
    found = set()
    at = 0
    while at < len(data):
        seek_id, id_length = _vint(data, at, keep_marker=True)
        seek_size, size_length = _vint(data, at + id_length, keep_marker=False) if id_length else (0, 0)
        if not size_length or seek_size < 0:
            break
        body = at + id_length + size_length
        if seek_id == _EBML_SEEK:
            target_id, position = None, None
            inner = body
            while inner < min(len(data), body + seek_size):
                child_id, child_id_length = _vint(data, inner, keep_marker=True)
                child_size, child_size_length = (
                    _vint(data, inner + child_id_length, keep_marker=False) if child_id_length else (0, 0)
                )
                if not child_size_length or child_size < 0:
                    break
                value = data[inner + child_id_length + child_size_length : inner + child_id_length +
                             child_size_length + child_size]  # fmt: skip
                if child_id == _EBML_SEEK_ID:
                    target_id = int.from_bytes(value, "big")
                elif child_id == _EBML_SEEK_POSITION:
                    position = int.from_bytes(value, "big")
                inner += child_id_length + child_size_length + child_size
            if target_id in (_EBML_CUES, _EBML_SEEKHEAD) and position is not None:
                found.add(segment_start + position)
        at = body + seek_size
    return found


# ----------------------------------------------------------------------------- AVI

_AVI_INDEX_OF_INDEXES = 0


def _avi_index_bytes(walk: _Walk, size: int) -> int:
    """Bytes of the legacy index (idx1) and of every index an OpenDML super index (indx)
    points to, in every RIFF list of the file."""
    total = 0
    stack = [(0, size)]
    while stack:
        at, end = stack.pop()
        while at + 8 <= end:
            walk.step("chunks")
            head = walk.read(at, 12)
            if len(head) < 8:
                break
            kind, chunk_size = head[:4], struct.unpack("<I", head[4:8])[0]
            body = at + 8
            if kind in (b"RIFF", b"LIST") and len(head) == 12:
                if head[8:12] != b"movi":  # the frames themselves: nothing of the index inside
                    stack.append((body + 4, min(end, body + chunk_size)))
            elif kind == b"idx1":
                total += max(0, min(chunk_size, size - body))
            elif kind == b"indx":
                total += _avi_super_index_bytes(walk, body, chunk_size)
            at = body + chunk_size + (chunk_size & 1)
    return total


def _avi_super_index_bytes(walk: _Walk, body: int, chunk_size: int) -> int:
    head = walk.read(body, 24)
    if len(head) < 24:
        return 0
    longs_per_entry, _, index_type, entries = struct.unpack("<HBBI", head[:8])
    if index_type != _AVI_INDEX_OF_INDEXES or longs_per_entry != 4:
        return chunk_size
    entries = min(entries, max(0, chunk_size - 24) // 16)
    table = walk.read(body + 24, entries * 16)
    return sum(struct.unpack_from("<QII", table, 16 * i)[1] for i in range(len(table) // 16))
