"""The OpenFaaS python3-http template contract, served by waitress.

of-watchdog (mode=http) forwards every request to this server; it builds the
`event` and `context` objects the template defines and calls
`handler.handle(event, context)`. The local runner starts exactly this file.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from waitress import serve

here = Path(__file__).resolve().parent
for candidate in (here, here.parent.parent):  # the image copies facepipe beside index.py
    if (candidate / "facepipe").is_dir() and str(candidate) not in sys.path:
        sys.path.insert(0, str(candidate))

import handler  # noqa: E402

from facepipe.settings import SettingsError  # noqa: E402

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
    return Response("ok\n", mimetype="text/plain")


@app.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


@app.route("/", defaults={"path": ""}, methods=["GET", "PUT", "POST", "PATCH", "DELETE"])
@app.route("/<path:path>", methods=["GET", "PUT", "POST", "PATCH", "DELETE"])
def call_handler(path: str) -> Response:
    return format_response(handler.handle(Event(), Context()))


def main() -> int:
    logging.basicConfig(
        level=os.getenv("LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stdout,
    )
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    try:
        handler.warm_up()
    except (SettingsError, ValueError, OSError) as exc:
        print(f"face-recognition cannot start: {exc}", file=sys.stderr)
        return 2
    port = int(os.getenv("PORT", "5000"))
    serve(app, host=os.getenv("HOST", "0.0.0.0"), port=port, threads=4, ident="face-recognition")
    return 0


if __name__ == "__main__":
    sys.exit(main())
