"""The OpenFaaS python3-http template contract, served by waitress: one server for every function.

of-watchdog (mode=http) forwards every request to this server; it builds the `event` and
`context` objects the template defines and calls `handler.handle(event, context)`. A function's
`index.py` is a few lines: `FunctionServer(handler, name)` and `main()`. The local runner starts
exactly that file.

Behaviour under of-watchdog (its source: pkg/watchdog.go, executor/http_runner.go):

- SIGTERM (scale-down) reaches this process at once while the watchdog keeps forwarding for
  its `healthcheck_interval`, then waits up to `write_timeout` for its requests. This process
  drains: new invocations get 503 with Retry-After (the notifier retries them elsewhere),
  requests in flight finish within DRAIN_TIMEOUT_S, then it exits 0 (1 when the grace ran
  out). A non-zero exit makes the watchdog exit at once.
- `max_inflight` limits every watchdog route, /metrics included: METRICS_PORT (off when unset
  or 0; 8082 in the images, since the watchdog's own metrics take 8081) serves the metrics on
  their own port for Prometheus. /metrics stays on the main port for the local runner.
- Every invocation's answer is counted by HTTP status (facerec_requests_total).
- Readiness: the pod is ready while `/tmp/.lock` exists (faas-netes' probe: `cat /tmp/.lock`,
  or the watchdog's /_/health, which checks the same file). The watchdog would write it as
  soon as it listens, seconds before the models are loaded; the images set
  `suppress_lock=true` and this process writes the file once it is warm and serving, and
  removes it when it starts draining.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from waitress.server import create_server
from werkzeug.wsgi import ClosingIterator

from facepipe import logs
from facepipe.metrics import REQUESTS, REQUESTS_IN_FLIGHT
from facepipe.settings import ConfigurationError

log = logs.get("facepipe.function")

#: Routes that are not invocations: not counted by status; /metrics is served while draining.
NOT_INVOCATIONS = ("/healthz", "/metrics")
RETRY_AFTER_S = 5
#: A little under the images' write_timeout, over FUNCTION_TIMEOUT_S plus the upload.
DEFAULT_DRAIN_TIMEOUT_S = 125.0


class Event:
    def __init__(self) -> None:
        self.body = request.get_data()
        self.headers = request.headers
        self.method = request.method
        self.query = request.args
        self.path = request.path


class Context:
    def __init__(self) -> None:
        self.hostname = os.getenv("HOSTNAME", "localhost")


def format_response(result: object) -> Response:
    if not isinstance(result, dict):
        return Response(str(result if result is not None else ""), status=200)
    return Response(
        result.get("body", ""),
        status=int(result.get("statusCode", 200)),
        headers=result.get("headers") or {},
    )


# ----------------------------------------------------------------------------- drain, counts


class Drain:
    """Requests in flight, and whether new ones are still taken (SIGTERM stops that)."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.in_flight = 0
        self.draining = False

    def enter(self) -> bool:
        """Count a new request in; False once draining (the request is refused)."""
        with self._changed:
            if self.draining:
                return False
            self.in_flight += 1
            REQUESTS_IN_FLIGHT.inc()
            return True

    def leave(self) -> None:
        with self._changed:
            self.in_flight -= 1
            REQUESTS_IN_FLIGHT.dec()
            self._changed.notify_all()

    def start(self) -> None:
        with self._changed:
            self.draining = True

    def wait(self, timeout_s: float) -> bool:
        """Whether every request in flight finished within `timeout_s`."""
        with self._changed:
            return self._changed.wait_for(lambda: self.in_flight == 0, timeout=timeout_s)


class Gate:
    """WSGI middleware: counts requests in and out for the drain, refuses new ones while
    draining, and counts every invocation's answer by HTTP status."""

    def __init__(self, app: Callable, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path not in NOT_INVOCATIONS:
            start_response = self._counting(start_response)
        if path == "/metrics":
            return self.app(environ, start_response)
        if not self.drain.enter():
            return self._refuse(path, start_response)
        try:
            answer = self.app(environ, start_response)
        except BaseException:
            self.drain.leave()
            raise
        # Left when the server closes the answer, after its body was handed over.
        return ClosingIterator(answer, [self.drain.leave])

    @staticmethod
    def _counting(start_response: Callable) -> Callable:
        def counted(status: str, headers: list, exc_info: object = None) -> Callable:
            REQUESTS.labels(status.split(" ", 1)[0]).inc()
            return start_response(status, headers, exc_info)

        return counted

    @staticmethod
    def _refuse(path: str, start_response: Callable) -> list[bytes]:
        if path == "/healthz":
            body, content_type = b"not ready: shutting down\n", "text/plain"
        else:
            error = {"error": "the function is shutting down; retry the request"}
            body, content_type = json.dumps(error).encode(), "application/json"
        headers = [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Retry-After", str(RETRY_AFTER_S)),
        ]
        start_response("503 Service Unavailable", headers)
        return [body]


class ReadyLock:
    """The watchdog's lock file, kept by this process: present exactly while it is ready."""

    def __init__(self) -> None:
        # Where the watchdog looks: Go's os.TempDir(), $TMPDIR or /tmp (so does gettempdir).
        self.path = Path(tempfile.gettempdir()) / ".lock"

    def create(self) -> None:
        self.path.write_text("ready\n")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class Shutdown:
    """SIGTERM: drain in a thread (the server's main loop keeps sending the answers), then
    stop the server from the main thread with SystemExit, which waitress's loop handles."""

    def __init__(self, drain: Drain, ready_lock: ReadyLock, timeout_s: float) -> None:
        self.drain = drain
        self.ready_lock = ready_lock
        self.timeout_s = timeout_s
        self.server = None
        self.exit_code: int | None = None

    def on_signal(self, signum: int, frame: object) -> None:
        if self.exit_code is not None:
            raise SystemExit(self.exit_code)
        if self.drain.draining:
            return
        self.drain.start()
        self.ready_lock.remove()
        log.info("draining", outcome="draining", in_flight=self.drain.in_flight, seconds=self.timeout_s)
        threading.Thread(target=self._drain_then_stop, name="drain", daemon=True).start()

    def _drain_then_stop(self) -> None:
        started = time.monotonic()
        drained = self.drain.wait(self.timeout_s) and self._flushed(started + self.timeout_s)
        seconds = round(time.monotonic() - started, 3)
        if drained:
            log.info("drained", outcome="ok", seconds=seconds)
        else:
            log.warning("drain timed out", outcome="timeout", in_flight=self.drain.in_flight, seconds=seconds)
        self.exit_code = 0 if drained else 1
        # Wakes the main thread out of its select(): on_signal runs there and raises SystemExit.
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)

    def _flushed(self, deadline: float) -> bool:
        """Wait until the server has sent every answer (a finished request's bytes may still be
        in a channel's buffer, written by the main loop)."""
        while time.monotonic() < deadline:
            try:
                channels = list(getattr(self.server, "active_channels", {}).values())
            except RuntimeError:  # changed while copied
                continue
            if all(not channel.requests and not channel.total_outbufs_len for channel in channels):
                return True
            time.sleep(0.02)
        return False


def _seconds(name: str, default: float) -> float:
    value = float(os.getenv(name, str(default)))
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value


# ------------------------------------------------------------------------------- the server


class FunctionServer:
    """The Flask app of one function around its `handler` module, which provides
    `handle(event, context)`, `warm_up()` (raises ConfigurationError) and `not_ready_reason()`.
    The module's attributes are looked up on every request, as the template does."""

    def __init__(self, handler: ModuleType, name: str) -> None:
        self.handler = handler
        self.name = name
        self.app = Flask(handler.__name__)
        self.app.config["MAX_CONTENT_LENGTH"] = int(os.getenv("MAX_REQUEST_BYTES", str(1024 * 1024)))
        self.app.add_url_rule("/healthz", "healthz", self.healthz, methods=["GET"])
        self.app.add_url_rule("/metrics", "metrics", self.metrics, methods=["GET"])
        methods = ["GET", "PUT", "POST", "PATCH", "DELETE"]
        self.app.add_url_rule("/", "call_handler", self.call_handler, defaults={"path": ""}, methods=methods)
        self.app.add_url_rule("/<path:path>", "call_handler", self.call_handler, methods=methods)
        self.drain = Drain()
        self.app.wsgi_app = Gate(self.app.wsgi_app, self.drain)  # type: ignore[method-assign]
        self.ready_lock = ReadyLock()

    def healthz(self) -> Response:
        """Ready only when warm: models loaded, the configuration usable."""
        reason = self.handler.not_ready_reason()
        if reason is not None:
            return Response(f"not ready: {reason}\n", status=503, mimetype="text/plain")
        return Response("ok\n", mimetype="text/plain")

    @staticmethod
    def metrics() -> Response:
        return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)

    def call_handler(self, path: str) -> Response:
        return format_response(self.handler.handle(Event(), Context()))

    def main(self) -> int:
        """Serve until SIGTERM (drained) or Ctrl-C; the process's exit code."""
        logs.setup()
        host = os.getenv("HOST", "0.0.0.0")
        shutdown = Shutdown(self.drain, self.ready_lock, _seconds("DRAIN_TIMEOUT_S", DEFAULT_DRAIN_TIMEOUT_S))
        signal.signal(signal.SIGTERM, shutdown.on_signal)
        metrics_port = int(os.getenv("METRICS_PORT") or "0")
        if metrics_port:
            start_http_server(metrics_port, addr=host)
        self.ready_lock.remove()  # a stale one from an earlier process in the same container
        warm = True
        try:
            self.handler.warm_up()
        except ConfigurationError as exc:
            # Keep serving: /healthz says why the function is not ready, requests get 503.
            log.error("not configured", outcome="configuration_error", detail=str(exc))
            warm = False
        port = int(os.getenv("PORT", "5000"))
        shutdown.server = create_server(self.app, host=host, port=port, threads=4, ident=self.name)
        if warm:
            self.ready_lock.create()
        log.info("serving", port=port, metrics_port=metrics_port or None, outcome="ok" if warm else "not_ready")
        shutdown.server.run()  # returns on SystemExit (raised by Shutdown.on_signal) and on Ctrl-C
        return shutdown.exit_code or 0
