"""Stand-ins for the notifier's tests: an OpenFaaS gateway over real HTTP, RGW-shaped records,
settings and a reader of `/metrics`."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote_plus

from facepipe.notifier.invoker import Backoff
from facepipe.settings import Settings
from facepipe_tools import metrics_client

TOKEN = "t0ken-for-tests"
FAST = Backoff(base_s=0.01, max_s=0.05)
FACES = "face-recognition"
IMAGES = "image-classification"
#: The `s3` fixture's buckets to the face function: the routing table of `notifier_settings`.
FACE_ROUTE = f"input={FACES}>output"
#: Both functions; the image buckets are for the test to create.
TWO_ROUTES = f"{FACE_ROUTE},images={IMAGES}>images-out"


class Gateway:
    """A stand-in for the OpenFaaS gateway: scripted status codes per key, records every call
    (`calls`: the bodies; `invoked`: (function, key) pairs). Serves `functions`, 404 for others.

    A 2xx answer is the function's JSON answer: `"outcome": "ok"`, or `answer` (e.g. "skipped")
    when `skip` says so for the key; `on_ok` runs for each 2xx call, before it is answered."""

    def __init__(self, functions: tuple[str, ...] = (FACES, IMAGES)):
        self.functions = functions
        self.invoked: list[tuple[str, str]] = []
        self.script: dict[str, list[int]] = {}
        self.delay_s = 0.0
        self.calls: list[dict] = []
        self.on_ok = None
        self.skip: set[str] = set()
        self.active: dict[str, int] = {}
        self.max_active = 0
        self.max_active_per_key = 0
        self._lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                status = gateway._handle(self.path, body)
                payload = json.dumps(gateway._answer(status, body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def _handle(self, path: str, body: dict) -> int:
        function = path.removeprefix("/function/")
        if not path.startswith("/function/") or function not in self.functions:
            return 404
        key = body["key"]
        with self._lock:
            self.calls.append(body)
            self.invoked.append((function, key))
            self.active[key] = self.active.get(key, 0) + 1
            self.max_active = max(self.max_active, sum(self.active.values()))
            self.max_active_per_key = max(self.max_active_per_key, self.active[key])
            statuses = self.script.get(key, [200])
            status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        try:
            time.sleep(self.delay_s)
            if status == 200 and self.on_ok:
                self.on_ok(body)
        finally:
            with self._lock:
                self.active[key] -= 1
        return status

    def _answer(self, status: int, body: dict) -> dict:
        if 200 <= status < 300:
            return {**body, "outcome": "skipped" if body.get("key") in self.skip else "ok"}
        return {"error": "scripted", "detail": f"HTTP {status}"}

    def keys(self) -> list[str]:
        return [call["key"] for call in self.calls]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def notifier_settings(gateway: Gateway, **changes) -> Settings:
    """Settings for the `s3` fixture's buckets `input` and `output` (one route, to the face
    function) and `gateway`."""
    values = {
        "input_bucket": "input",
        "output_bucket": "output",
        "routes_table": FACE_ROUTE,
        "openfaas_gateway": gateway.url + "/",
        "notify_token": TOKEN,
        "notify_url": "http://127.0.0.1:8090/",
        "notifier_concurrency": 2,
        "invoke_attempts": 3,
        "invoke_timeout_s": 2.0,
        "reconcile_interval_s": 0.0,
    }
    return Settings(**{**values, **changes})


def record(
    bucket: str, key: str, *, token: object = TOKEN, event: str = "ObjectCreated:Put", etag="abc", source="ceph:s3"
) -> dict:
    """A record as Ceph RGW sends it (key verbatim); with source="aws:s3", as AWS does (key URL-encoded).
    token=None leaves `opaqueData` out."""
    sent_key = key if source == "ceph:s3" else quote_plus(key, safe="/")
    entry = {
        "eventVersion": "2.2",
        "eventSource": source,
        "eventName": event,
        "s3": {"bucket": {"name": bucket}, "object": {"key": sent_key, "size": 3, "eTag": etag}},
    }
    if token is not None:
        entry["opaqueData"] = token
    return entry


def metric(client, name: str, **labels: str) -> float:
    """A sample of the notifier's `/metrics` (Flask test client)."""
    return metrics_client.parse(client.get("/metrics").get_data(as_text=True)).value(name, **labels)
