"""Image classification on the session stack, beside face recognition: a photo uploaded to the
image input bucket -> RGW's notification -> the notifier (the image route) -> the gateway
stand-in -> a classification worker -> `<stem>.csv` (rank,label,score) in the image output
bucket. The photos are scikit-image's, encoded as JPEG at test time."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from skimage import data as skimage_data

from facepipe import answers
from facepipe.classify import labels
from facepipe.clients import s3_client, sns_client
from facepipe.notifier.setup import disable_notifications, setup_notifications
from facepipe.settings import Route, Settings
from facepipe_tools import metrics_client
from facepipe_tools.mapping import load_mapping
from facepipe_tools.paths import REPO_ROOT
from facepipe_tools.polling import wait_for
from facepipe_tools.stack import LocalStack

pytestmark = pytest.mark.integration

#: Each photo's acceptable top classes, as ImageNet-1k indices (names from facepipe.classify.labels):
#: tabby / tiger cat / Egyptian cat; espresso / cup / coffee mug; missile / projectile / space shuttle.
PHOTOS = {"chelsea": (281, 282, 285), "coffee": (967, 968, 504), "rocket": (657, 744, 812)}
IMAGES = "image-classification"
FACE_CLIP = "sample_hopper.mp4"


def jpeg(name: str) -> bytes:
    """A scikit-image sample photo as JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(getattr(skimage_data, name)()).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def notifier_log(stack: LocalStack) -> list[dict]:
    """The notifier's JSON log records so far."""
    lines = stack.log_path("notifier").read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def notifier_metrics(settings: Settings) -> metrics_client.Samples:
    return metrics_client.fetch(settings.notify_url.rstrip("/") + "/metrics")


def wait_for_answer(s3, bucket: str, key: str, timeout_s: float = 90) -> answers.AnswerBody:
    found = wait_for(lambda: answers.find(s3, bucket, key).newest(), timeout_s=timeout_s)
    assert found, f"no answer for {key} in {bucket} within {timeout_s:.0f} s"
    return answers.read(s3, bucket, found)


@pytest.fixture
def uploads(stack_settings: Settings) -> Iterator[list[tuple[str, str]]]:
    """(bucket, key) of what a test uploads; those objects and their answers are removed after it."""
    made: list[tuple[str, str]] = []
    yield made
    s3 = s3_client(stack_settings)
    outputs = {route.input_bucket: route.output_bucket for route in stack_settings.routes()}
    for bucket, key in made:
        s3.delete_object(Bucket=bucket, Key=key)
        for name in answers.find(s3, outputs[bucket], key).names:
            s3.delete_object(Bucket=outputs[bucket], Key=name)


def test_the_stack_routes_images_to_the_classification_function(local_stack: LocalStack) -> None:
    settings = local_stack.settings()
    assert Route(settings.image_input_bucket, IMAGES, settings.image_output_bucket) in settings.routes()
    assert Path(settings.classifier_model).is_file()
    notification = s3_client(settings).get_bucket_notification_configuration(Bucket=settings.image_input_bucket)
    assert [config["Id"] for config in notification["TopicConfigurations"]] == [f"{IMAGES}-input"]


def test_photos_are_classified_beside_the_face_pipeline(
    local_stack: LocalStack, stack_settings: Settings, sample_dir: Path, uploads: list[tuple[str, str]]
) -> None:
    s3 = s3_client(stack_settings)
    prefix = f"classify-{uuid.uuid4().hex[:8]}/"
    images_in, images_out = stack_settings.image_input_bucket, stack_settings.image_output_bucket
    ok_before = notifier_metrics(stack_settings).value(
        "facerec_notifier_invocations_total", function=IMAGES, outcome="ok"
    )
    photos = {f"{prefix}{name}.jpg": name for name in PHOTOS}
    clip = f"{prefix}{FACE_CLIP}"
    for key, name in photos.items():
        uploads.append((images_in, key))
        s3.put_object(Bucket=images_in, Key=key, Body=jpeg(name), ContentType="image/jpeg")
    unreadable = f"{prefix}not-a-photo.jpg"
    uploads.append((images_in, unreadable))
    s3.put_object(Bucket=images_in, Key=unreadable, Body=b"this is not a photo\n" * 20)
    uploads.append((stack_settings.input_bucket, clip))
    s3.put_object(Bucket=stack_settings.input_bucket, Key=clip, Body=(sample_dir / FACE_CLIP).read_bytes())

    names = labels.names()
    for key, name in photos.items():
        body = wait_for_answer(s3, images_out, key)
        assert body.error is None, (key, body.error)
        assert [label.rank for label in body.labels] == [1, 2, 3, 4, 5], key
        scores = [label.score for label in body.labels]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001, (key, scores)
        acceptable = {names[index] for index in PHOTOS[name]}
        assert body.labels[0].label in acceptable, (key, body.labels)
    error = wait_for_answer(s3, images_out, unreadable)
    assert error.answer.key == answers.error_key(unreadable)
    assert error.error is not None and error.error["error"] == "unreadable", error.error
    # Nothing of the images in the face output bucket, nothing of the video in the image one.
    for key in photos:
        assert not answers.find(s3, stack_settings.output_bucket, key).names, key
    assert not answers.find(s3, images_out, clip).names

    # The face pipeline answered its video meanwhile, as usual.
    (expected,) = [entry for entry in load_mapping(REPO_ROOT / "data" / "sample_mapping") if entry.video == FACE_CLIP]
    video = wait_for_answer(s3, stack_settings.output_bucket, clip, timeout_s=120)
    assert [person.name for person in video.people] == [person.name for person in expected.people]

    # They came through RGW's notifications, to the function of their route.
    queued = {record["key"]: record for record in notifier_log(local_stack) if record["event"] == "event queued"}
    for key in [*photos, unreadable]:
        assert queued[key]["bucket"] == images_in and queued[key]["function"] == IMAGES, queued.get(key)
    assert queued[clip]["function"] == stack_settings.function_name
    ok_after = notifier_metrics(stack_settings).value(
        "facerec_notifier_invocations_total", function=IMAGES, outcome="ok"
    )
    assert ok_after - ok_before >= len(photos)


def test_the_reconciler_finds_a_photo_whose_notification_was_lost(
    local_stack: LocalStack, stack_settings: Settings, uploads: list[tuple[str, str]]
) -> None:
    """The image bucket's notification alone is removed; the notifier, restarted, reconciles
    every route at start and finds the photo."""
    s3 = s3_client(stack_settings)
    images_only = replace(
        stack_settings,
        routes_table=str(Route(stack_settings.image_input_bucket, IMAGES, stack_settings.image_output_bucket)),
    )
    disable_notifications(images_only, s3=s3)
    try:
        notification = s3.get_bucket_notification_configuration(Bucket=stack_settings.image_input_bucket)
        assert not notification.get("TopicConfigurations"), notification
        assert s3.get_bucket_notification_configuration(Bucket=stack_settings.input_bucket)["TopicConfigurations"]
        key = f"unnoticed-{uuid.uuid4().hex[:8]}.jpg"
        uploads.append((stack_settings.image_input_bucket, key))
        s3.put_object(Bucket=stack_settings.image_input_bucket, Key=key, Body=jpeg("chelsea"))
        local_stack.restart("notifier")  # reconciles at start
        body = wait_for_answer(s3, stack_settings.image_output_bucket, key)
        assert body.labels and body.labels[0].label in {labels.names()[index] for index in PHOTOS["chelsea"]}
        reconciled = notifier_metrics(stack_settings).value("facerec_notifier_reconciled_total", function=IMAGES)
        assert reconciled >= 1
    finally:
        setup_notifications(stack_settings, s3=s3, sns=sns_client(stack_settings))
