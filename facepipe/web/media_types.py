"""What an uploaded file is: its type by its first bytes, its name as stored, the stem users know it by."""

from __future__ import annotations

import posixpath

from facepipe import answers, keys

#: How many bytes of an upload `sniff` and `looks_like_text` look at.
SNIFF_BYTES = 512
MAX_NAME_CHARS = 200

#: Magic numbers of the formats the function reads, and the extension a file without a known
#: extension is stored with (the function picks its decoder from the content, not the name).
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\xff\xd8\xff", ".jpg"),
    (0, b"\x89PNG\r\n\x1a\n", ".png"),
    (0, b"GIF87a", ".gif"),
    (0, b"GIF89a", ".gif"),
    (0, b"BM", ".bmp"),
    (0, b"II*\x00", ".tif"),
    (0, b"MM\x00*", ".tif"),
    (4, b"ftyp", ".mp4"),  # MP4, QuickTime, 3GP
    (4, b"moov", ".mov"),
    (4, b"mdat", ".mov"),
    (0, b"\x1aE\xdf\xa3", ".mkv"),  # Matroska, WebM
    (0, b"\x00\x00\x01\xba", ".mpg"),
    (0, b"\x00\x00\x01\xb3", ".mpg"),
    (0, b"FLV\x01", ".flv"),
    (0, b"0&\xb2u\x8ef\xcf\x11", ".wmv"),  # ASF
    (0, b"OggS", ".ogv"),
)


def sniff(head: bytes) -> str | None:
    """The extension for a recognised image or video signature, else None."""
    for offset, magic, suffix in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return suffix
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"WEBP"):
        return ".avi" if head[8:12] == b"AVI " else ".webp"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:  # MPEG transport stream
        return ".ts"
    return None


#: What `sniff` answers for the still images the classification function reads.
IMAGE_FORMATS = frozenset({".jpg", ".png", ".gif", ".bmp", ".tif", ".webp"})
#: File name extensions of those images (GIF counts as a video for the face function).
IMAGE_NAMES = keys.IMAGE_SUFFIXES | {".gif"}


class UnsupportedMedia(ValueError):
    """The upload is not something the function it was posted for reads (HTTP 415)."""


def media_name(name: str, head: bytes) -> str:
    """The name an upload for face recognition is stored under: its own when it names an image
    or video (and does not hold text), else with the extension its first bytes show."""
    if keys.is_media_name(name):
        if looks_like_text(head):
            raise UnsupportedMedia(f"{name} is named like an image or video but holds text")
        return name
    suffix = sniff(head)
    if suffix is None:
        raise UnsupportedMedia(f"{name} is not an image or video this service reads (by its name and its content)")
    return name + suffix


def image_name(name: str, head: bytes) -> str:
    """The name a photo for classification is stored under. Its first bytes decide (JPEG, PNG,
    GIF, BMP, TIFF or WebP): the name is kept when its extension names an image, else the
    extension of the format found is added."""
    suffix = sniff(head)
    if suffix in IMAGE_FORMATS:
        return name if posixpath.splitext(name.lower())[1] in IMAGE_NAMES else name + suffix
    if suffix is not None:
        raise UnsupportedMedia(f"{name} is a video; image classification takes a photo (send videos to POST /)")
    raise UnsupportedMedia(f"{name} is not an image this service classifies (JPEG, PNG, GIF, BMP, TIFF or WebP)")


def looks_like_text(head: bytes) -> bool:
    """True when the first bytes are plain text (a page, a script, a CSV): never an image or video."""
    if not head or b"\x00" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the end of the sample is still text.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    return all(ch.isprintable() or ch in "\t\r\n\f" for ch in text)


def clean_name(filename: str) -> str:
    """The file name a client sent, without folders or control characters, at most 200 characters."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    if name in ("", ".", ".."):
        return ""
    if len(name) > MAX_NAME_CHARS:
        base, ext = posixpath.splitext(name)
        ext = ext if len(ext) <= 16 else ""
        name = base[: MAX_NAME_CHARS - len(ext)] + ext
    return name


def display_stem(key: str) -> str:
    """The stem a user knows: `web/<id>/test_0.mp4` -> `test_0`, `a/b/clip.mp4` -> `clip`."""
    return posixpath.basename(answers.stem(key))
