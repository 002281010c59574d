"""Who may use the web tier: the optional token (WEB_TOKEN) and the origin of state-changing
requests. Plain functions of the method, path and headers, so that the server checks them on
the request line and headers, before any of the body is read (`facepipe.web.server`), and the
app checks them again for every request (`facepipe.web.app`)."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from facepipe.web.settings import WebSettings

#: Open without the token: liveness, metrics, the page's own CSS and JavaScript.
OPEN_PATHS = frozenset({"/healthz", "/metrics"})
OPEN_PREFIXES = ("/static/",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Browsers show a login prompt for Basic (the token as password); clients send Bearer.
CHALLENGES = ('Basic realm="facepipe", charset="UTF-8"', 'Bearer realm="facepipe"')
_DEFAULT_PORTS = {"http": "80", "https": "443"}

Header = Callable[[str], "str | None"]


#: WSGI environ key of a Refusal the server decided before the app ran (`facepipe.web.server`).
ENVIRON_KEY = "facepipe.refusal"


@dataclass(frozen=True)
class Refusal:
    """A request answered with `status` and `message` (as text or JSON, see responses.reject)."""

    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = field(default=())  # e.g. WWW-Authenticate, Retry-After


def needs_token(path: str) -> bool:
    return path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES)


def presented_token(authorization: str | None) -> str | None:
    """The token in `Authorization: Bearer <token>`, or the password of HTTP Basic."""
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def token_ok(expected: str, authorization: str | None) -> bool:
    given = presented_token(authorization)
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _netloc(scheme: str, netloc: str) -> str:
    netloc = netloc.lower()
    default = _DEFAULT_PORTS.get(scheme)
    return netloc.removesuffix(f":{default}") if default else netloc


def foreign_origin(web: WebSettings, header: Header) -> str | None:
    """The origin of a request sent from another site's page, or None when the request comes
    from the web tier's own pages, an allowed origin, or no page at all (no Origin and no
    Referer: curl, scripts, the workload generator)."""
    origin = header("Origin")
    if origin is None:
        referer = header("Referer")
        if not referer:
            return None
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else referer
    parts = urlsplit(origin.strip())
    scheme = parts.scheme.lower()
    if scheme in ("http", "https") and parts.netloc:
        # The web tier's own origin: the host it was addressed as. The scheme is not compared,
        # so that a proxy ending TLS in front of it changes nothing.
        if _netloc(scheme, parts.netloc) == _netloc(scheme, header("Host") or ""):
            return None
        if f"{scheme}://{parts.netloc.lower()}" in web.allowed_origins:
            return None
    return origin.strip() or "null"


def check(web: WebSettings, method: str, path: str, header: Header) -> Refusal | None:
    """Why this request is refused (401 without the token, 403 from a foreign origin), or None."""
    if web.token and needs_token(path) and not token_ok(web.token, header("Authorization")):
        challenges = tuple(("WWW-Authenticate", challenge) for challenge in CHALLENGES)
        return Refusal(401, "this web tier needs its token: send Authorization: Bearer <WEB_TOKEN>", challenges)
    if method.upper() not in SAFE_METHODS:
        origin = foreign_origin(web, header)
        if origin is not None:
            return Refusal(403, f"cross-origin request from {origin!r} refused (see WEB_ALLOWED_ORIGINS)")
    return None


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, `localhost`)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any address
