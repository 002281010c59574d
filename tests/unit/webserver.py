"""The web tier under waitress on 127.0.0.1 (a free port), in a thread of the test process,
on the moto S3 of the `s3` fixture: for tests over real HTTP (tests/unit/test_web_server.py,
tests/integration/test_web_browser.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from facepipe.settings import Settings
from facepipe.web.app import create_app
from facepipe.web.server import make_server
from facepipe.web.settings import WebSettings


@dataclass(frozen=True)
class Served:
    url: str  # http://127.0.0.1:<port>/
    port: int
    spool_dir: Path


@contextmanager
def serving(s3, settings: Settings, spool_dir: Path, **web_fields) -> Iterator[Served]:
    """The web tier for `settings` with WebSettings `**web_fields` (fast polling by default),
    its bodies spooled in `spool_dir`; stopped (threads and connections) on exit."""
    fields = {"result_timeout_s": 10.0, "poll_s": 0.01, "spool_dir": str(spool_dir), **web_fields}
    web = WebSettings(**fields)
    server = make_server(create_app(settings, web, s3=s3), "127.0.0.1", 0, web)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    port = int(server.effective_port)
    try:
        yield Served(f"http://127.0.0.1:{port}/", port, spool_dir)
    finally:
        server.task_dispatcher.shutdown()

        def close() -> None:
            for channel in list(server.active_channels.values()):
                channel.close()
            server.close()

        # In the server's own loop thread: sockets closed from here race its select() (EBADF).
        server.trigger.pull_trigger(close)
        thread.join(timeout=10)
        assert not thread.is_alive(), "the web server's loop did not stop"
