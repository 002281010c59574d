"""`GET /metrics`: the web tier's Prometheus metrics (the process's default registry: the S3
client's requests, `facepipe_s3_requests_total{caller="web"}`, and the process metrics)."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)
