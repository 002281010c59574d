"""The web tier's own settings (environment or `.env`, read after `facepipe.settings.load_settings`)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class WebSettings:
    result_timeout_s: float = 120.0  # WEB_RESULT_TIMEOUT_S: longest a POST waits for its result
    poll_s: float = 0.15  # WEB_POLL_S: first interval between looks at the output bucket
    max_upload_bytes: int = 0  # WEB_MAX_UPLOAD_BYTES: 0 = MAX_OBJECT_BYTES
    page_size: int = 50  # WEB_PAGE_SIZE: rows per results page
    threads: int = 64  # WEB_THREADS: waitress worker threads = requests served at once


def load_web_settings(environ: dict[str, str] | None = None) -> WebSettings:
    """WebSettings from `WEB_<FIELD>` variables (os.environ by default); ValueError names a bad one."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, float | int] = {}
    for name, default in vars(WebSettings()).items():
        raw = environ.get("WEB_" + name.upper(), "").strip()
        if not raw:
            continue
        try:
            value = type(default)(raw)
        except ValueError:
            raise ValueError(f"WEB_{name.upper()} must be a number, not {raw!r}") from None
        if value < 0 or (name in ("page_size", "threads") and value < 1):
            raise ValueError(f"WEB_{name.upper()} is out of range: {raw!r}")
        values[name] = value
    return WebSettings(**values)
