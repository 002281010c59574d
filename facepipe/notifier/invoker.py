"""Calls an object's function through the OpenFaaS gateway, with retries.

The function is the one the routing table (`Settings.routes`) names for the object's bucket:
`POST {gateway}/function/<function>` with `{"bucket", "key"}`. A 2xx answer is done; a 4xx
answer is final (the request or the object is at fault), except 408 and 429; anything else
(5xx, timeout, no connection) is retried with exponential backoff and jitter, honouring
`Retry-After`. The function's JSON answer says whether it recognised
the object or returned the answer it already had (`"outcome": "skipped"`).

Some failed attempts count against the object (`Reply.counts`, for the dead letters of
`facepipe.notifier.deadletter`): the function crashed or hung on it (the connection dropped
after the request was sent, no answer in time, 500, 502, 504, other 5xx). Those that say
nothing about the object do not: no connection to the gateway at all, 503 (busy, storage
unavailable: worth a retry), 408 and 429.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests
from urllib3.exceptions import ConnectTimeoutError

from facepipe import logs
from facepipe.notifier.metrics import CLIENT_ERROR, FAILED, OK
from facepipe.settings import Route, Settings

log = logs.get("facepipe.notifier")

CONNECT_TIMEOUT_S = 5.0
RETRYABLE_4XX = frozenset({408, 429})
#: 5xx answers that say nothing about the object: the function or its storage is busy or down.
UNAVAILABLE = 503
#: The function's `outcome` when it returned a stored answer without recognising again.
SKIPPED = "skipped"


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: retry n waits between half and all of min(max_s, base_s * 2**(n-1))."""

    base_s: float = 1.0
    max_s: float = 30.0

    def delay(self, retry: int, rng: random.Random) -> float:
        ceiling = min(self.max_s, self.base_s * 2 ** (retry - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass(frozen=True)
class InvokeResult:
    """The final outcome for one object; `answer` is the `outcome` field of the function's JSON."""

    outcome: str
    attempts: int
    seconds: float
    status: int | None = None
    detail: str = ""
    answer: str = ""
    #: The retries were stopped by `on_failure` (the object is to be dead-lettered, or its
    #: attempts go on elsewhere: `resume`).
    gave_up: bool = False
    #: Where the attempts stood when `on_failure` stopped them: `invoke(..., resume=)` goes on.
    resume: Progress | None = None


@dataclass(frozen=True)
class Progress:
    """The attempts made for one object so far: how many, the last reply, and when the first one
    started (monotonic)."""

    attempts: int
    last: Reply
    started: float


@dataclass(frozen=True)
class Reply:
    """One HTTP exchange with the gateway; `status` is None when no answer came, and then
    `sent` says whether the request reached the gateway (a connection was made)."""

    status: int | None
    body: object = None
    detail: str = ""
    retry_after: float | None = None
    sent: bool = True

    @property
    def counts(self) -> bool:
        """Whether this failed attempt counts against the object (see the module docstring)."""
        if self.status is None:
            return self.sent
        return self.status >= 500 and self.status != UNAVAILABLE

    @property
    def error(self) -> str:
        """The failure in one line, with the status code when there was an answer."""
        if self.status is None:
            return self.detail
        return f"HTTP {self.status}: {self.detail}" if self.detail else f"HTTP {self.status}"


def _json(response: requests.Response) -> object:
    try:
        return json.loads(response.text or "")
    except ValueError:
        return None


def error_detail(body: object, text: str, limit: int = 300) -> str:
    """The function's error message (JSON `error`/`detail`, also nested in `error`), on one line."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if isinstance(body, dict) and (body.get("error") or body.get("detail")):
        text = ": ".join(str(body[k]) for k in ("error", "detail") if body.get(k))
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _never_connected(exc: requests.ConnectionError) -> bool:
    """True when no connection was made (refused, unresolvable, connect timeout): the request
    never reached the gateway. urllib3's NewConnectionError is a ConnectTimeoutError."""
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    return isinstance(exc, requests.ConnectTimeout) or isinstance(reason, ConnectTimeoutError)


def _retry_after(response: requests.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


class Invoker:
    """Calls the function of an object's route through the gateway: 2xx done, 4xx final except
    408/429, anything else retried. `on_retry` gets the function's name before each retry."""

    def __init__(
        self,
        settings: Settings,
        backoff: Backoff = Backoff(),
        stop: threading.Event | None = None,
        on_retry: Callable[[str], None] | None = None,
        routes: list[Route] | None = None,
    ):
        gateway = settings.openfaas_gateway.rstrip("/")
        routes = routes if routes is not None else settings.routes()
        self._functions = {route.input_bucket: route.function for route in routes}
        #: The function URL of each routed input bucket.
        self.urls = {bucket: f"{gateway}/function/{function}" for bucket, function in self._functions.items()}
        self.attempts = max(1, settings.invoke_attempts)
        self.timeout_s = settings.invoke_timeout_s
        self.backoff = backoff
        self._stop = stop or threading.Event()
        self._on_retry = on_retry
        self._local = threading.local()
        self._rng = random.Random()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _post(self, url: str, bucket: str, key: str) -> Reply:
        try:
            response = self._session().post(
                url, json={"bucket": bucket, "key": key}, timeout=(CONNECT_TIMEOUT_S, self.timeout_s)
            )
        except requests.ConnectTimeout as exc:
            return Reply(None, detail=f"ConnectTimeout: {exc}", sent=False)
        except requests.Timeout:
            return Reply(None, detail=f"no answer within {self.timeout_s:g} s")
        except requests.ConnectionError as exc:
            return Reply(None, detail=f"{type(exc).__name__}: {exc}", sent=not _never_connected(exc))
        except requests.RequestException as exc:
            return Reply(None, detail=f"{type(exc).__name__}: {exc}")
        body = _json(response)
        return Reply(response.status_code, body, error_detail(body, response.text or ""), _retry_after(response))

    def invoke(
        self,
        bucket: str,
        key: str,
        on_failure: Callable[[Reply], bool] | None = None,
        resume: Progress | None = None,
    ) -> InvokeResult:
        """Invoke the function of `bucket`'s route for one object (a bucket without a route is a
        client error: there is no function to ask). `on_failure` gets every failed attempt that
        counts against the object (`Reply.counts`); when it returns True no retry follows.
        `resume` goes on from the attempts an earlier call made (its result's `resume`): with the
        retries left, after the backoff due, and `seconds` counted from its first attempt."""
        started = resume.started if resume is not None else time.monotonic()
        url = self.urls.get(bucket)
        if url is None:
            return InvokeResult(CLIENT_ERROR, 0, 0.0, detail=f"no route for bucket {bucket!r}")
        reply = resume.last if resume is not None else Reply(None)
        attempt = resume.attempts if resume is not None else 0
        while attempt < self.attempts:
            if attempt and self._pause(bucket, key, attempt, reply):
                detail = f"abandoned at shutdown after: {reply.detail}"
                return InvokeResult(FAILED, attempt, time.monotonic() - started, reply.status, detail)
            attempt += 1
            reply = self._post(url, bucket, key)
            status = reply.status
            answer = str(reply.body.get("outcome") or "") if isinstance(reply.body, dict) else ""
            if status is not None and 200 <= status < 300:
                return InvokeResult(OK, attempt, time.monotonic() - started, status, answer=answer)
            if status is not None and 400 <= status < 500 and status not in RETRYABLE_4XX:
                return InvokeResult(CLIENT_ERROR, attempt, time.monotonic() - started, status, reply.detail, answer)
            if on_failure is not None and reply.counts and on_failure(reply):
                return InvokeResult(
                    FAILED, attempt, time.monotonic() - started, status, reply.detail, gave_up=True,
                    resume=Progress(attempt, reply, started),
                )  # fmt: skip
        return InvokeResult(FAILED, attempt, time.monotonic() - started, reply.status, reply.detail)

    def _pause(self, bucket: str, key: str, attempt: int, reply: Reply) -> bool:
        """Wait the backoff after failed attempt number `attempt` (`reply`); True when stopped."""
        delay = self.backoff.delay(attempt, self._rng)
        if reply.retry_after is not None:
            delay = max(delay, min(reply.retry_after, self.backoff.max_s))
        log.warning(
            "invoke retry", key=key, bucket=bucket, function=self._functions[bucket], attempts=attempt,
            status=reply.status, detail=reply.detail, delay_s=round(delay, 2),
        )  # fmt: skip
        if self._on_retry:
            self._on_retry(self._functions[bucket])
        return self._stop.wait(delay)
