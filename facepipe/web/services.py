"""What every view shares (settings, the S3 client, the result stores of both functions): one
holder per app, kept on `app.extensions` by `create_app` and reached with `current()` inside a request."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app

from facepipe.settings import Settings
from facepipe.web.settings import WebSettings
from facepipe.web.store import ResultStore

EXTENSION = "facepipe.web"


@dataclass(frozen=True)
class Services:
    settings: Settings
    web: WebSettings
    s3: Any  # a boto3 S3 client
    store: ResultStore  # the face function's output bucket (OUTPUT_BUCKET)
    image_store: ResultStore  # the classification function's (IMAGE_OUTPUT_BUCKET)
    sends: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(16))  # WEB_CONCURRENT_SENDS

    @property
    def max_upload_bytes(self) -> int:
        """The largest file a POST may carry: WEB_MAX_UPLOAD_BYTES, else MAX_OBJECT_BYTES."""
        return self.web.max_upload_bytes or self.settings.max_object_bytes


def of(app: Flask) -> Services:
    return app.extensions[EXTENSION]


def current() -> Services:
    """The Services of the app handling the current request."""
    return of(current_app)
