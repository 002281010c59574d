"""AWS stand-ins for the tests: moto in-process (`mock_aws`) for unit tests that need no
wire, and a moto server over real HTTP started exactly as the local stack starts its
DynamoDB (`python -m moto.server`), for tests whose clients talk HTTP."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

from facepipe_tools.polling import wait_for
from facepipe_tools.stack import free_port


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def moto_server(environ: dict[str, str] | None = None) -> Iterator[str]:
    """A moto server on a free loopback port (with extra environment, e.g. to enforce IAM);
    yields its URL and stops it afterwards."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **(environ or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        if not wait_for(lambda: _accepts(port) or server.poll() is not None, timeout_s=60) or server.poll() is not None:
            raise RuntimeError(f"moto server did not start (exit code {server.poll()})")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=10)
