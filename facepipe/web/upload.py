"""Face recognition: the upload form, POST / (store the file in the input bucket, wait for its
answer) and GET /result/<key> (the answer for an input key, e.g. after a 202)."""

from __future__ import annotations

from flask import Blueprint, Response, render_template

from facepipe.web import intake, services
from facepipe.web.formdata import Accepts
from facepipe.web.intake import WEB_PREFIX, Channel
from facepipe.web.media_types import media_name
from facepipe.web.services import Services
from facepipe.web.store import Answer

__all__ = ["ACCEPTS", "FORM_FIELD", "WEB_PREFIX", "bp", "channel"]

bp = Blueprint("upload", __name__)

FORM_FIELD = "inputFile"
#: Images and videos (by name and content), in field `inputFile`.
ACCEPTS = Accepts(fields=(FORM_FIELD,), stored_name=media_name)


def _people(answer: Answer | None) -> dict:
    return {"people": [vars(person) for person in answer.people] if answer else []}


def _names(answer: Answer) -> str:
    return ",".join(person.name for person in answer.people)


def channel(svc: Services) -> Channel:
    """Videos and photos for face recognition: INPUT_BUCKET -> OUTPUT_BUCKET."""
    return Channel(
        function=svc.settings.function_name,
        input_bucket=svc.settings.input_bucket,
        store=svc.store,
        accepts=ACCEPTS,
        result_endpoint="upload.result",
        picture_endpoint="pictures.picture",
        details=_people,
        summary=_names,
    )


@bp.get("/")
def form() -> str:
    svc = services.current()
    return render_template(
        "index.html", max_upload=svc.max_upload_bytes, timeout_s=svc.web.result_timeout_s, token=bool(svc.web.token)
    )


@bp.post("/")
def submit() -> Response:
    svc = services.current()
    return intake.submit(svc, channel(svc))


@bp.get("/result/<path:key>")
def result(key: str) -> Response:
    svc = services.current()
    return intake.result(svc, channel(svc), key)
