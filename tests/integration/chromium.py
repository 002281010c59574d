"""Debian's Chromium, driven by Playwright, for the browser tests: where it is, how it is
started, and the skip (a failure in CI) when it or Playwright is missing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
#: As the machine's own probe starts Chromium: no sandbox as root, no GPU, nothing that reaches
#: out to the network (only the loopback web tier is visited).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def require_browser() -> None:
    """Skip (fail in CI) without Chromium or Playwright."""
    problems = []
    if not CHROMIUM.is_file():
        problems.append(f"{CHROMIUM} not found (Debian package chromium; make install)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the playwright package is not installed (requirements-dev.txt)")
    if problems:
        message = "; ".join(problems)
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
