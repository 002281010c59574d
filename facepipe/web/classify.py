"""Image classification: POST /classify (store the photo in the image input bucket, wait for
its five most likely ImageNet classes) and GET /classify/result/<key> (the answer for an
input key, e.g. after a 202). The text answer is `<stem>:<top label>`."""

from __future__ import annotations

from flask import Blueprint, Response

from facepipe.web import intake, services
from facepipe.web.formdata import Accepts
from facepipe.web.intake import Channel
from facepipe.web.media_types import image_name
from facepipe.web.services import Services
from facepipe.web.store import Answer

bp = Blueprint("classify", __name__)

#: The file's multipart field: ours first, then `myfile`, the one the older CSE546 workload
#: generator sends.
FORM_FIELDS = ("inputFile", "myfile")
#: Photos (by content), in either field.
ACCEPTS = Accepts(fields=FORM_FIELDS, stored_name=image_name)


def _labels(answer: Answer | None) -> dict:
    return {"labels": [vars(label) for label in answer.labels] if answer else []}


def _top_label(answer: Answer) -> str:
    return min(answer.labels, key=lambda label: label.rank).label if answer.labels else ""


def channel(svc: Services) -> Channel:
    """Photos for image classification: IMAGE_INPUT_BUCKET -> IMAGE_OUTPUT_BUCKET."""
    return Channel(
        function=svc.settings.image_function_name,
        input_bucket=svc.settings.image_input_bucket,
        store=svc.image_store,
        accepts=ACCEPTS,
        result_endpoint="classify.result",
        picture_endpoint="pictures.classified",
        details=_labels,
        summary=_top_label,
    )


@bp.post("/classify")
def submit() -> Response:
    svc = services.current()
    return intake.submit(svc, channel(svc))


@bp.get("/classify/result/<path:key>")
def result(key: str) -> Response:
    svc = services.current()
    return intake.result(svc, channel(svc), key)
