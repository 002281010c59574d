"""Object key naming shared by the function, the notifier and the checker."""

from __future__ import annotations

import os
import posixpath

VIDEO_SUFFIXES = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .ts .m2ts .flv .wmv .3gp .ogv .gif".split()
)
IMAGE_SUFFIXES = frozenset(".jpg .jpeg .png .bmp .webp .tif .tiff".split())
MEDIA_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES

RESULT_SUFFIX = ".csv"
ERROR_SUFFIX = ".error.json"
PICTURE_SUFFIX = ".jpg"
#: Object metadata on every answer: the ETag of the input object version it answers.
SOURCE_ETAG_METADATA = "source-etag"


def stem(key: str) -> str:
    """The key without its last extension; everything before the name is kept verbatim
    (`a/b.mp4` -> `a/b`, `a//b.mp4` -> `a//b`), so distinct folders never share an answer."""
    folder, slash, name = key.rpartition("/")
    base, _ext = posixpath.splitext(name)
    return folder + slash + (base or name)


def result_key(key: str) -> str:
    return stem(key) + RESULT_SUFFIX


def error_key(key: str) -> str:
    return stem(key) + ERROR_SUFFIX


def picture_key(key: str) -> str:
    """The annotated picture written beside a result."""
    return stem(key) + PICTURE_SUFFIX


def is_media_name(name: str) -> bool:
    return posixpath.splitext(name.lower())[1] in MEDIA_SUFFIXES


def validate_key(key: object) -> str:
    """Return `key` if it is a usable object key, else raise ValueError with the reason."""
    if not isinstance(key, str) or not key:
        raise ValueError("key must be a non-empty string")
    if len(key.encode()) > 1024:
        raise ValueError("key is longer than 1024 bytes")
    if any(ord(c) < 32 for c in key):
        raise ValueError("key contains control characters")
    if key.endswith("/"):
        raise ValueError("key names a folder, not an object")
    return key


def existing_answers(s3, output_bucket: str, key: str) -> set[str]:
    """Which of `key`'s output objects (CSV, error record, picture) exist: one LIST of their
    common prefix, cheaper than a HEAD per name when, as usual, none exists yet."""
    names = {result_key(key), error_key(key), picture_key(key)}
    prefix = os.path.commonprefix(sorted(names))
    found = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=output_bucket, Prefix=prefix):
        found.update(obj["Key"] for obj in page.get("Contents", []) if obj["Key"] in names)
    return found
