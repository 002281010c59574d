"""The web tier's own settings (environment or `.env`, read after `facepipe.settings.load_settings`;
WEB_TOKEN also from the secret file `web-token` in SECRETS_DIR, like the other secrets)."""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from facepipe.settings import DEFAULT_SECRETS_DIR

#: The secret file WEB_TOKEN may come from (first, as for the other secrets).
TOKEN_SECRET = "web-token"


@dataclass(frozen=True)
class WebSettings:
    result_timeout_s: float = 120.0  # WEB_RESULT_TIMEOUT_S: longest a POST waits for its result
    poll_s: float = 0.15  # WEB_POLL_S: first interval between looks at the output bucket
    max_upload_bytes: int = 0  # WEB_MAX_UPLOAD_BYTES: 0 = MAX_OBJECT_BYTES
    page_size: int = 50  # WEB_PAGE_SIZE: rows per results page
    threads: int = 64  # WEB_THREADS: waitress worker threads = requests served at once
    #: WEB_TOKEN: when set, uploads, answers, results and pictures need `Authorization: Bearer
    #: <token>` (or HTTP Basic with the token as password, for browsers). Required off loopback.
    token: str = field(default="", repr=False)
    #: WEB_ALLOWED_ORIGINS: comma-separated origins (`https://app.example.org`) whose pages may
    #: POST here, besides the web tier's own.
    allowed_origins: tuple[str, ...] = ()
    #: WEB_CONNECTION_LIMIT: open connections at most (each may hold 512 KiB of a body in
    #: memory); 0 = 4 per thread, at least 100, at most half the open-file limit.
    connection_limit: int = 0
    #: WEB_CHANNEL_TIMEOUT_S: a connection that sends nothing for this long is closed (a slow
    #: or stalled client; a request waiting for its answer is not idle).
    channel_timeout_s: int = 30
    #: WEB_SPOOL_DIR: where bodies over 512 KiB are held while they arrive (default: the
    #: system's temporary folder).
    spool_dir: str = ""
    #: WEB_SPOOL_LIMIT_BYTES: upload bodies being received at once, in bytes (declared
    #: lengths); more is refused with 503 and Retry-After. 0 = 8 of the largest, at most half
    #: the spool folder's free space.
    spool_limit_bytes: int = 0
    #: WEB_CONCURRENT_SENDS: uploads sent on to S3 at once (each holds up to 5 MiB in memory
    #: while it is sent); the others wait their turn.
    concurrent_sends: int = 16

    def effective_connection_limit(self) -> int:
        if self.connection_limit:
            return self.connection_limit
        wanted = max(100, 4 * self.threads)
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return wanted
        return max(16, min(wanted, soft // 2))

    def spool_folder(self) -> str:
        return self.spool_dir or tempfile.gettempdir()

    def effective_spool_limit(self, max_body_bytes: int) -> int:
        """The spool budget for bodies of at most `max_body_bytes`."""
        if self.spool_limit_bytes:
            return self.spool_limit_bytes
        free = shutil.disk_usage(self.spool_folder()).free
        return max(max_body_bytes, min(8 * max_body_bytes, free // 2))


def parse_origins(text: str) -> tuple[str, ...]:
    """`scheme://host[:port]` entries, comma-separated, normalised (lower case, no path)."""
    origins = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        parts = urlsplit(entry)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ValueError(f"WEB_ALLOWED_ORIGINS: {entry!r} is not an origin like https://host[:port]")
        origins.append(f"{parts.scheme}://{parts.netloc}".lower())
    return tuple(origins)


def _secret(secrets_dir: Path) -> str | None:
    try:
        return (secrets_dir / TOKEN_SECRET).read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None


def load_web_settings(environ: dict[str, str] | None = None) -> WebSettings:
    """WebSettings from `WEB_<FIELD>` variables (os.environ by default); ValueError names a bad one."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, object] = {}
    for setting in fields(WebSettings):
        name = "WEB_" + setting.name.upper()
        raw = environ.get(name, "").strip()
        if setting.name == "token":
            raw = _secret(Path(environ.get("SECRETS_DIR", DEFAULT_SECRETS_DIR))) or raw
        if not raw:
            continue
        if setting.name == "allowed_origins":
            values[setting.name] = parse_origins(raw)
            continue
        if isinstance(setting.default, str):
            values[setting.name] = raw
            continue
        try:
            value = type(setting.default)(raw)
        except ValueError:
            raise ValueError(f"{name} must be a number, not {raw!r}") from None
        if value < 0 or (
            setting.name in ("page_size", "threads", "channel_timeout_s", "concurrent_sends") and value < 1
        ):
            raise ValueError(f"{name} is out of range: {raw!r}")
        values[setting.name] = value
    return WebSettings(**values)  # type: ignore[arg-type]
