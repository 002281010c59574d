"""facepipe.web.formdata: an upload's multipart body read as a stream, fed in any pieces: the
file found by its field, its type decided from its first bytes, its size counted, every
refusal raised as soon as the bytes that justify it have been fed."""

from __future__ import annotations

import io

import pytest

from facepipe.web.classify import ACCEPTS as IMAGES
from facepipe.web.formdata import SNIFF_WINDOW, FileStream, UploadRejected, UploadScanner
from facepipe.web.upload import ACCEPTS as MEDIA
from tests.unit.webfake import JPEG

BOUNDARY = "xyzBOUNDARYxyz"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(600)


def part(field: str, data: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename is not None else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def scanner(accepts=MEDIA, limit: int = 10_000) -> UploadScanner:
    return UploadScanner(CONTENT_TYPE, accepts, limit, "http://h/")


def feed_all(scan: UploadScanner, data: bytes, piece: int) -> bytes:
    found = b""
    for start in range(0, len(data), piece):
        found += b"".join(scan.feed(data[start : start + piece]))
    return found + b"".join(scan.feed(None))


@pytest.mark.parametrize("piece", [1, 7, 512, 100_000])
def test_the_file_is_found_whatever_the_pieces(piece: int) -> None:
    data = JPEG + bytes(range(256)) * 8 + b"\r\n--\r"
    scan = scanner()
    found = feed_all(scan, body(part("comment", b"hello"), part("inputFile", data, "clip.mp4")), piece)
    assert found == data
    assert (scan.name, scan.stored_name, scan.size, scan.file_done) == ("clip.mp4", "clip.mp4", len(data), True)


def test_every_cut_of_the_body_gives_the_file_exactly() -> None:
    """Two pieces, cut anywhere: also between the two dashes that end the body, where
    werkzeug's decoder alone would add a CR to the file."""
    data = JPEG + bytes(range(256)) * 3
    whole = body(part("inputFile", data, "clip.mp4"))
    for cut in range(len(whole)):
        scan = scanner()
        found = b"".join(scan.feed(whole[:cut])) + b"".join(scan.feed(whole[cut:])) + b"".join(scan.feed(None))
        assert found == data, cut


def test_nothing_of_the_file_is_given_before_its_type_is_decided() -> None:
    data = JPEG + bytes(1000)
    scan = scanner()
    whole = body(part("inputFile", data, "snapshot"))
    cut = whole.index(JPEG) + 100  # the file's first 100 bytes: not enough to decide
    assert scan.feed(whole[:cut]) == [] and not scan.decided
    rest = b"".join(scan.feed(whole[cut:]))
    assert scan.stored_name == "snapshot.jpg"  # no extension: the content's is added
    assert rest == data


def test_a_file_shorter_than_the_sniffed_bytes_is_decided_at_its_end() -> None:
    scan = scanner()
    assert feed_all(scan, body(part("inputFile", JPEG, "tiny.jpg")), 3) == JPEG
    assert scan.stored_name == "tiny.jpg"


def test_wrong_type_is_refused_from_the_first_bytes_alone() -> None:
    """415 as soon as the first bytes of a text file are in; the rest of the body is never needed."""
    scan = scanner()
    whole = body(part("inputFile", b"plain text, not a video\n" * 10_000, "clip.mp4"))
    with pytest.raises(UploadRejected) as refused:
        feed_all(scan, whole, 100)
    assert refused.value.status == 415 and "holds text" in refused.value.message
    assert scan.fed <= whole.index(b"plain") + 512 + 200


def test_a_video_is_refused_by_image_classification() -> None:
    scan = scanner(IMAGES)
    with pytest.raises(UploadRejected) as refused:
        feed_all(scan, body(part("myfile", b"\x00\x00\x00\x20ftypisom" + bytes(600), "clip.mp4")), 64)
    assert refused.value.status == 415 and "is a video" in refused.value.message
    scan = scanner(IMAGES)
    assert feed_all(scan, body(part("myfile", PNG, "cat")), 64) == PNG  # the older field name
    assert scan.stored_name == "cat.png"


def test_size_limit_while_reading() -> None:
    scan = scanner(limit=2000)
    whole = body(part("inputFile", JPEG + bytes(5000), "big.mp4"))
    with pytest.raises(UploadRejected) as refused:
        for start in range(0, len(whole), 100):
            scan.feed(whole[start : start + 100])
    assert refused.value.status == 413 and "the limit is 2000 bytes" in refused.value.message
    assert scan.fed <= 2000 + 400  # refused when the limit was passed, not at the end


def test_only_the_first_file_of_an_accepted_field_counts() -> None:
    data = JPEG + b"first"
    scan = scanner()
    found = feed_all(
        scan,
        body(
            part("other", b"PK\x03\x04zip", "x.zip"),  # another field: ignored
            part("inputFile", b"", ""),  # no file chosen in a form: skipped
            part("inputFile", data, "a.mp4"),
            part("inputFile", b"text", "b.txt"),  # a second file: ignored
        ),
        50,
    )
    assert (found, scan.name) == (data, "a.mp4")


@pytest.mark.parametrize(
    ("content_type", "data", "status", "words"),
    [
        ("application/octet-stream", b"raw", 400, "no file"),
        ("multipart/form-data", b"", 400, "no file"),  # no boundary
        (CONTENT_TYPE, body(part("comment", b"x")), 400, "no file: send it as multipart form field 'inputFile'"),
        (CONTENT_TYPE, body(part("inputFile", b"", "empty.mp4")), 400, "empty.mp4 is empty"),
        (CONTENT_TYPE, body(part("inputFile", JPEG, "../..")), 400, "unusable file name"),
        (CONTENT_TYPE, body(part("inputFile", JPEG + bytes(600), "a.mp4"))[:-40], 400, "ended before its file"),
        (CONTENT_TYPE, b"".join(part(f"f{i}", b"x") for i in range(20)), 413, "form parts"),
        (CONTENT_TYPE, b"garbage without any boundary", 400, "no file"),
        (CONTENT_TYPE, f"--{BOUNDARY}\r\nX: y\r\n\r\n".encode() + bytes(2000), 400, "unreadable multipart"),
    ],
)
def test_refusals(content_type: str, data: bytes, status: int, words: str) -> None:
    with pytest.raises(UploadRejected) as refused:
        feed_all(UploadScanner(content_type, MEDIA, 10_000, "http://h/"), data, 1000)
    assert refused.value.status == status and words in refused.value.message


def test_the_file_must_start_within_the_window() -> None:
    """A large field before the file would make the server hold the body past the point where
    it decides: refused once the window is passed."""
    scan = scanner(limit=10**6)
    whole = body(part("comment", b"x" * (SNIFF_WINDOW + 10_000)), part("inputFile", JPEG, "a.jpg"))
    with pytest.raises(UploadRejected) as refused:
        feed_all(scan, whole, 4096)
    assert refused.value.status == 400 and "first 65536 bytes" in refused.value.message


def test_file_stream_reads_the_body_only_as_asked() -> None:
    data = JPEG + bytes(range(256)) * 1000
    raw = io.BytesIO(body(part("inputFile", data, "clip.mp4"), part("after", b"never read" * 10_000)))
    stream = FileStream(raw, scanner(limit=10**6))
    assert stream.start() == "clip.mp4"
    assert raw.tell() < 100_000  # the first read only
    assert io.BufferedReader(stream).read() == data
    assert raw.tell() < len(raw.getvalue())  # the part after the file was not read to its end
