"""The web tier under waitress, with its checks where the bytes arrive.

Waitress reads a whole request body (into memory up to `inbuf_overflow`, 512 KiB, then into
a temporary file) before the app sees the request. Its parser is extended here so that:

- the request line and headers are checked first: a body over the size limit (Content-Length),
  a missing token (401), a foreign Origin (403) and, for uploads, a full spool budget (503)
  are answered before one byte of the body is read;
- an upload's body is scanned as it arrives (`formdata.UploadScanner`): a file of the wrong
  type (415) or a body without a file (400) is answered as soon as its first bytes show it,
  within the first 64 KiB, so before anything is written to disk; a file over the limit
  (413) as soon as the byte past the limit arrives, before the rest is read;
- the body is then held once (the spool file in WEB_SPOOL_DIR, counted by
  `facepipe_web_spool_files_total`) and the view streams the file from it to S3.

A refusal is handed to the app in the WSGI environ (`access.ENVIRON_KEY`), which answers it
like its own (text or JSON); the rest of the body is never parsed nor kept, only drained
from the socket until the connection closes (see GuardedChannel). Connections are bounded by
WEB_CONNECTION_LIMIT and WEB_CHANNEL_TIMEOUT_S.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time

from flask import Flask
from prometheus_client import Counter
from waitress.buffers import OverflowableBuffer, TempfileBasedBuffer
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import BaseWSGIServer, create_server
from waitress.task import WSGITask
from waitress.utilities import RequestEntityTooLarge

from facepipe import logs
from facepipe.web import access, services
from facepipe.web.access import Refusal
from facepipe.web.formdata import SNIFF_WINDOW, Accepts, UploadRejected, UploadScanner
from facepipe.web.settings import WebSettings

log = logs.get("facepipe.web")

#: app.extensions key: the upload routes, path -> what they accept (set by create_app).
UPLOADS = "facepipe.web.uploads"
#: Waitress keeps this much of a body in memory before it spools the body to a file.
INBUF_OVERFLOW = 512 * 1024
RETRY_AFTER_S = 5
#: How long a connection whose request was refused still reads (and drops) the client's body.
LINGER_S = 30.0

SPOOL_FILES = Counter(
    "facepipe_web_spool_files", "Request bodies the web tier wrote to a spool file (those over 512 KiB)"
)
REFUSED_EARLY = Counter(
    "facepipe_web_refused_early", "Requests refused by the web tier before their body was read", ["status"]
)

assert SNIFF_WINDOW * 4 <= INBUF_OVERFLOW  # the type is decided before a body is spooled


class Guard:
    """The checks and the spool budget of one server."""

    def __init__(self, web: WebSettings, max_upload_bytes: int, uploads: dict[str, Accepts]) -> None:
        self.web = web
        self.max_upload_bytes = max_upload_bytes
        self.max_body_bytes = max_upload_bytes + SNIFF_WINDOW
        self.uploads = uploads
        self.spool_dir = web.spool_folder()
        self.spool_limit = web.effective_spool_limit(self.max_body_bytes)
        self.spool_file = type("Spool", (SpoolFile,), {"folder": self.spool_dir})
        self._reserved = 0
        self._lock = threading.Lock()

    def reserve(self, size: int) -> bool:
        with self._lock:
            if self._reserved and self._reserved + size > self.spool_limit:
                return False
            self._reserved += size
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self._reserved -= size

    def at_headers(self, parser: GuardedParser) -> Refusal | None:
        """Check a request on its line and headers; start scanning an upload's body."""

        def header(name: str) -> str | None:
            return parser.headers.get(name.upper().replace("-", "_"))

        if parser.content_length > self.max_body_bytes:
            return Refusal(413, f"the upload is larger than the limit of {self.max_upload_bytes} bytes")
        refusal = access.check(self.web, parser.command, parser.path, header)
        if refusal is not None:
            return refusal
        accepts = self.uploads.get(parser.path) if parser.command == "POST" else None
        if accepts is None or parser.body_rcv is None:
            return None
        size = self.max_body_bytes if parser.chunked else parser.content_length
        if not self.reserve(size):
            message = "too many uploads are arriving at once; try again in a few seconds"
            return Refusal(503, message, (("Retry-After", str(RETRY_AFTER_S)),))
        parser.reserved = size
        url = f"{parser.url_scheme}://{header('Host') or 'localhost'}{parser.path}"
        try:
            parser.scanner = UploadScanner(header("Content-Type") or "", accepts, self.max_upload_bytes, url)
        except UploadRejected as exc:
            return Refusal(exc.status, exc.message)
        return None


class SpoolFile(TempfileBasedBuffer):
    """Waitress's file buffer, in WEB_SPOOL_DIR and counted."""

    folder: str | None = None

    def newfile(self):
        SPOOL_FILES.inc()
        return tempfile.TemporaryFile("w+b", dir=self.folder, prefix="facepipe-upload-")


class SpoolBuffer(OverflowableBuffer):
    """A request body as waitress receives it (decoded from chunks): each piece is first shown
    to the upload's scanner, and is not kept once the request is refused."""

    def __init__(self, overflow: int, parser: GuardedParser) -> None:
        super().__init__(overflow)
        self.parser = parser
        self.received = 0

    def append(self, s: bytes) -> None:
        parser = self.parser
        if parser.refusal is None:
            self.received += len(s)
            if self.received > parser.guard.max_body_bytes:  # a chunked body without a length
                limit = parser.guard.max_upload_bytes
                parser.refuse(Refusal(413, f"the upload is larger than the limit of {limit} bytes"))
            elif parser.scanner is not None:
                try:
                    parser.scanner.feed(s)
                except UploadRejected as exc:
                    parser.refuse(Refusal(exc.status, exc.message))
                else:
                    if parser.scanner.file_done:
                        parser.scanner = None  # what follows the file is the view's to read
        if parser.refusal is None:
            super().append(s)

    def _set_large_buffer(self) -> None:
        old = self.buf
        self.buf = self.parser.guard.spool_file(old)
        if hasattr(old, "close"):
            old.close()
        self.overflowed = True


class GuardedParser(HTTPRequestParser):
    guard: Guard  # set by channel_class
    refusal: Refusal | None = None
    scanner: UploadScanner | None = None
    reserved = 0
    checked = False

    def _check(self) -> None:
        """Once the headers are in, before any of the body: waitress hands the body bytes
        that came with the headers to a later `received` call."""
        self.checked = True
        if self.empty or (self.error is not None and not isinstance(self.error, RequestEntityTooLarge)):
            return
        if self.body_rcv is not None:
            self.body_rcv.buf = SpoolBuffer(self.adj.inbuf_overflow, self)
        refusal = self.guard.at_headers(self)
        if refusal is not None:
            self.refuse(refusal)

    def refuse(self, refusal: Refusal) -> None:
        """Answer `refusal` without parsing or keeping any more of the body, then close (see
        GuardedChannel)."""
        REFUSED_EARLY.labels(status=str(refusal.status)).inc()
        self.refusal = refusal
        self.scanner = None
        self.expect_continue = False  # no "100 Continue": the client need not send the body
        self.headers["CONNECTION"] = "close"
        self.content_length = 0  # so that waitress's own size check does not answer instead
        self.completed = True
        self.release()

    def received(self, data: bytes) -> int:
        consumed = super().received(data)
        if self.headers_finished and not self.checked:
            self._check()
        if self.refusal is not None:
            self.error = None
            self.completed = True
            return len(data)  # the rest of this read is dropped with the body
        return consumed

    def release(self) -> None:
        if self.reserved:
            self.guard.release(self.reserved)
            self.reserved = 0

    def close(self) -> None:
        self.release()
        super().close()


class GuardedTask(WSGITask):
    def get_environment(self) -> dict:
        environ = super().get_environment()
        if self.request.refusal is not None:
            environ[access.ENVIRON_KEY] = self.request.refusal
        return environ


class GuardedChannel(HTTPChannel):
    """A connection whose refused request is answered, then closed gently: the answer is sent
    and the sending side shut, and what the client still sends of its body is read and
    dropped (at most the body limit, for at most LINGER_S) so that it gets to read the answer;
    a plain close with unread bytes would reset the connection and lose the answer."""

    task_class = GuardedTask
    parser_class = GuardedParser
    linger_pending = False
    lingering = False
    linger_until = 0.0
    drained = 0

    def service(self) -> None:
        if self.requests and self.requests[0].refusal is not None:
            self.linger_pending = True
        super().service()

    def readable(self) -> bool:
        return True if self.lingering else super().readable()

    def handle_read(self) -> None:
        if not self.lingering:
            super().handle_read()
            return
        try:
            data = self.recv(self.adj.recv_bytes)
        except OSError:
            self.handle_close()
            return
        self.drained += len(data)
        self.last_activity = time.time()
        if data and (self.drained > self.parser_class.guard.max_body_bytes or time.monotonic() > self.linger_until):
            self.handle_close()

    def handle_close(self) -> None:
        if self.linger_pending and not self.lingering and self.will_close and self.connected:
            if not self.total_outbufs_len:  # the answer is out: linger
                try:
                    self.socket.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                else:
                    self.lingering = True
                    self.will_close = False
                    self.linger_until = time.monotonic() + LINGER_S
                    return
        if isinstance(self.request, GuardedParser):  # a request cut off before its end
            self.request.release()
        super().handle_close()


def channel_class(guard: Guard) -> type[HTTPChannel]:
    parser = type("Parser", (GuardedParser,), {"guard": guard})
    return type("Channel", (GuardedChannel,), {"parser_class": parser})


def make_server(app: Flask, host: str, port: int, web: WebSettings):
    """A waitress server for `app` (made by create_app), not yet running (`.run()`)."""
    shared = services.of(app)
    guard = Guard(web, shared.max_upload_bytes, app.extensions[UPLOADS])
    dispatchers: dict = {}
    server = create_server(
        app,
        map=dispatchers,
        host=host,
        port=port,
        threads=web.threads,
        connection_limit=web.effective_connection_limit(),
        channel_timeout=web.channel_timeout_s,
        cleanup_interval=max(1, min(30, web.channel_timeout_s // 2)),
        inbuf_overflow=INBUF_OVERFLOW,
        max_request_body_size=guard.max_body_bytes + 1,
        ident="facepipe-web",
    )
    channel = channel_class(guard)
    for dispatcher in list(dispatchers.values()):
        if isinstance(dispatcher, BaseWSGIServer):
            dispatcher.channel_class = channel
    log.info(
        "server limits", connection_limit=web.effective_connection_limit(), channel_timeout_s=web.channel_timeout_s,
        max_body_bytes=guard.max_body_bytes, spool_dir=guard.spool_dir, spool_limit_bytes=guard.spool_limit,
    )  # fmt: skip
    return server
