"""An upload's multipart/form-data body read as a stream, never parsed into a form: the file's
first bytes decide its type before anything else is read, its size is counted while it is
read, and its data goes on to S3 from the body the server already holds (no second copy).

The same `UploadScanner` runs twice: in the server, fed the bytes as they arrive, to refuse
early (`facepipe.web.server`); and in the view, to find the file in the body and stream it
(`FileStream`). Any other server (the test client, werkzeug's) gets the same answers from
the view alone.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import NEED_DATA, Data, Epilogue, Field, File, MultipartDecoder

from facepipe.web.media_types import SNIFF_BYTES, UnsupportedMedia, clean_name

#: The file's first bytes must be in the first this many bytes of the body (the multipart
#: framing and any fields sent before it); also the allowance for the framing in the body's
#: size limit. Far below waitress's in-memory buffer (`inbuf_overflow`, 512 KiB), so the type
#: is decided before a byte of the body is written to disk.
SNIFF_WINDOW = 64 * 1024
#: Form parts a body may have (the file and a few fields).
MAX_PARTS = 16
READ_BYTES = 64 * 1024


class UploadRejected(Exception):
    """The upload is refused with HTTP `status` (400, 413, 415) and a readable message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Accepts:
    """What an upload route takes: the multipart field names of the file (the first is the
    one documented) and the name it is stored under, from its name and first bytes (raises
    UnsupportedMedia)."""

    fields: tuple[str, ...]
    stored_name: Callable[[str, bytes], str]


def no_file(accepts: Accepts, url: str) -> UploadRejected:
    field = accepts.fields[0]
    return UploadRejected(400, f"no file: send it as multipart form field {field!r} (curl -F {field}=@FILE {url})")


class UploadScanner:
    """Feeds a multipart/form-data body in pieces and finds in it the first part of one of
    `accepts.fields` with a file name: its name, its stored name (decided from its first
    SNIFF_BYTES, or all of it when shorter), and its data, counted against `max_file_bytes`.
    Every refusal is an UploadRejected, raised as soon as the bytes that justify it are fed."""

    def __init__(self, content_type: str, accepts: Accepts, max_file_bytes: int, url: str) -> None:
        self.accepts = accepts
        self.max_file_bytes = max_file_bytes
        self.url = url
        mimetype, options = parse_options_header(content_type)
        boundary = options.get("boundary", "")
        if mimetype != "multipart/form-data" or not boundary:
            raise no_file(accepts, url)
        try:
            delimiter = boundary.encode("latin-1")
        except UnicodeEncodeError:
            raise UploadRejected(400, "unusable multipart boundary") from None
        self._decoder = MultipartDecoder(delimiter, max_parts=MAX_PARTS)
        # The decoder is never shown a body that ends inside the closing delimiter
        # (`\r\n--<boundary>--`): cut between its two dashes, werkzeug's takes the `\r` before
        # it for file data. The last bytes fed wait for the next piece, or the end.
        self._hold = len(delimiter) + 8
        self._tail = b""
        self.fed = 0  # body bytes fed so far
        self.name: str | None = None  # the file name sent, cleaned
        self.stored_name: str | None = None  # set once the first bytes decided the type
        self.size = 0  # file bytes found so far
        self.file_done = False
        self._state = "before"  # before | head | file | after
        self._held: list[bytes] = []  # file data seen before the decision

    @property
    def decided(self) -> bool:
        return self.stored_name is not None

    def feed(self, data: bytes | None) -> list[bytes]:
        """The file data in `data` (None: the body has ended), in order; none before the type
        is decided, then what was held back with it."""
        found: list[bytes] = []
        if data is None:
            self._decoder.receive_data(self._tail)
            self._decoder.receive_data(None)
            self._tail = b""
        else:
            self.fed += len(data)
            pending = self._tail + data
            cut = max(0, len(pending) - self._hold)
            self._decoder.receive_data(pending[:cut])
            self._tail = pending[cut:]
        try:
            while True:
                event = self._decoder.next_event()
                if event is NEED_DATA:
                    break
                self._event(event, found)
                if isinstance(event, Epilogue):
                    break
        except RequestEntityTooLarge:
            raise UploadRejected(413, f"more than {MAX_PARTS} form parts") from None
        except ValueError as exc:  # malformed multipart (werkzeug's decoder), or cut short
            if self.file_done:
                pass  # what follows the file is not ours to judge
            elif data is not None:
                raise UploadRejected(400, f"unreadable multipart body: {exc}") from None
            elif self.name is None:
                raise no_file(self.accepts, self.url) from None
            else:
                raise UploadRejected(400, "the upload ended before its file did") from None
        if data is None and self.name is None:
            raise no_file(self.accepts, self.url)
        if not self.decided and self.fed > SNIFF_WINDOW:
            raise UploadRejected(
                400, f"the file must start within the first {SNIFF_WINDOW} bytes of the body (send it first)"
            )
        return found

    def _event(self, event: object, found: list[bytes]) -> None:
        if isinstance(event, (File, Field)):
            if self._state in ("head", "file"):
                self._end_of_file(found)
            if self._state == "before" and isinstance(event, File) and event.name in self.accepts.fields:
                if event.filename:
                    self._start_file(event.filename)
        elif isinstance(event, Data) and self._state in ("head", "file"):
            self._file_data(event.data, found)
            if not event.more_data:
                self._end_of_file(found)

    def _start_file(self, filename: str) -> None:
        self.name = clean_name(filename)
        if not self.name:
            raise UploadRejected(400, f"unusable file name {filename!r}")
        self._state = "head"

    def _file_data(self, data: bytes, found: list[bytes]) -> None:
        if not data:
            return
        self.size += len(data)
        if self.size > self.max_file_bytes:
            raise UploadRejected(413, f"{self.name} is larger than the limit: the limit is {self.max_file_bytes} bytes")
        if self._state == "file":
            found.append(data)
            return
        self._held.append(data)
        if self.size >= SNIFF_BYTES:
            self._decide(found)

    def _decide(self, found: list[bytes]) -> None:
        assert self.name is not None
        head = b"".join(self._held)[:SNIFF_BYTES]
        if not head:
            raise UploadRejected(400, f"{self.name} is empty")
        try:
            self.stored_name = self.accepts.stored_name(self.name, head)
        except UnsupportedMedia as exc:
            raise UploadRejected(415, str(exc)) from None
        found.extend(self._held)
        self._held = []
        self._state = "file"

    def _end_of_file(self, found: list[bytes]) -> None:
        if self._state == "head":
            self._decide(found)
        self._state = "after"
        self.file_done = True


class FileStream(io.RawIOBase):
    """The uploaded file's bytes, read from the request body `body` as they are asked for
    (what boto3's upload reads): nothing is copied to disk, and an UploadRejected (413, or a
    body cut short) is raised by the read that finds it."""

    def __init__(self, body: IO[bytes], scanner: UploadScanner) -> None:
        super().__init__()
        self._body = body
        self._scanner = scanner
        self._pending = bytearray()
        self._ended = False

    def start(self) -> str:
        """Read until the file's type is decided; its stored name (UploadRejected 400/415)."""
        while not self._scanner.decided:
            if self._ended:
                raise no_file(self._scanner.accepts, self._scanner.url)
            self._fill()
        assert self._scanner.stored_name is not None
        return self._scanner.stored_name

    def _fill(self) -> None:
        if self._scanner.file_done:
            self._ended = True
            return
        chunk = self._body.read(READ_BYTES)
        for piece in self._scanner.feed(chunk or None):
            self._pending += piece
        if not chunk or self._scanner.file_done:
            self._ended = True

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not self._pending and not self._ended:
            self._fill()
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        del self._pending[:count]
        return count
