"""The OpenFaaS python3-http template contract, served by waitress.

of-watchdog (mode=http) forwards every request to this server; it builds the
`event` and `context` objects the template defines and calls
`handler.handle(event, context)`. The local runner starts exactly this file.
"""

from __future__ import annotations

import os
import sys

import handler
from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from waitress import serve

from facepipe import logs
from facepipe.settings import ConfigurationError

log = logs.get("facepipe.function")

app = Flask(__name__)
app.config["MAX_CONTENT_LENGTH"] = int(os.getenv("MAX_REQUEST_BYTES", str(1024 * 1024)))


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


@app.get("/healthz")
def healthz() -> Response:
    """Ready only when warm: models and known faces loaded, the configuration usable."""
    reason = handler.not_ready_reason()
    if reason is not None:
        return Response(f"not ready: {reason}\n", status=503, mimetype="text/plain")
    return Response("ok\n", mimetype="text/plain")


@app.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


@app.route("/", defaults={"path": ""}, methods=["GET", "PUT", "POST", "PATCH", "DELETE"])
@app.route("/<path:path>", methods=["GET", "PUT", "POST", "PATCH", "DELETE"])
def call_handler(path: str) -> Response:
    return format_response(handler.handle(Event(), Context()))


def main() -> int:
    logs.setup()
    try:
        handler.warm_up()
    except ConfigurationError as exc:
        # Keep serving: /healthz says why the function is not ready, requests get 500.
        log.error("not configured", outcome="configuration_error", detail=str(exc))
    port = int(os.getenv("PORT", "5000"))
    serve(app, host=os.getenv("HOST", "0.0.0.0"), port=port, threads=4, ident="face-recognition")
    return 0


if __name__ == "__main__":
    sys.exit(main())
