"""Input object keys: which keys are usable, which names are media."""

from __future__ import annotations

import posixpath

from facepipe.events import BadRequest

VIDEO_SUFFIXES = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .ts .m2ts .flv .wmv .3gp .ogv .gif".split()
)
IMAGE_SUFFIXES = frozenset(".jpg .jpeg .png .bmp .webp .tif .tiff".split())
MEDIA_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES


def is_media_name(name: str) -> bool:
    return posixpath.splitext(name.lower())[1] in MEDIA_SUFFIXES


def validate_key(key: object) -> str:
    """Return `key` if it is a usable object key, else raise BadRequest with the reason."""
    if not isinstance(key, str) or not key:
        raise BadRequest("key must be a non-empty string")
    if len(key.encode()) > 1024:
        raise BadRequest("key is longer than 1024 bytes")
    if any(ord(c) < 32 for c in key):
        raise BadRequest("key contains control characters")
    if key.endswith("/"):
        raise BadRequest("key names a folder, not an object")
    return key
