"""The image-classification task and function: real photos from scikit-image, every kind of
input that is not a photo, the answers' format, and the function through its own index.py."""

from __future__ import annotations

import importlib.util
import io
import json
import struct
import sys
import time
import zlib
from fractions import Fraction
from pathlib import Path

import av
import boto3
import numpy as np
import pytest
import skimage.data
from moto import mock_aws
from PIL import Image

from facepipe import answers
from facepipe.answers import Label, StoredAnswer, parse_labels_csv, render_labels_csv
from facepipe.classify import convert
from facepipe.classify.task import PICTURE_SIDE, ImageClassificationTask
from facepipe.media import MediaError
from facepipe.settings import ConfigurationError, Settings, SettingsError
from facepipe_tools.sample import photo

REPO_ROOT = Path(__file__).resolve().parents[2]
CLASSIFICATION_DIR = REPO_ROOT / "functions" / "image-classification"

#: Acceptable top-1 names (facepipe/classify/labels.py's curated ImageNet names).
CAT = {"a cat having a striped coat", "tabby cat", "Egyptian Mau"}  # tiger cat, tabby, Egyptian cat
COFFEE = {"espresso", "tea cup", "coffee mug"}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("classifier") / "efficientnet-lite0.onnx"
    convert.write_model(path)
    return path


@pytest.fixture(scope="module")
def task(model_path: Path) -> ImageClassificationTask:
    return ImageClassificationTask(Settings(classifier_model=str(model_path)))


def _jpeg(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(array).save(path, "JPEG", quality=90)
    return path


def _video(path: Path) -> Path:
    """A real (tiny) H.264 MP4 of the cat photo: a video is not a photo."""
    frame = np.asarray(Image.fromarray(skimage.data.chelsea()).resize((64, 48)))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.time_base = Fraction(1, 5)
        for _ in range(5):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` RGB pixels and holds almost none of them."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


# ---------------------------------------------------------------------------------- photos


@pytest.mark.parametrize(("name", "expected"), [("chelsea", CAT), ("coffee", COFFEE)], ids=["chelsea", "coffee"])
def test_real_photos_get_their_imagenet_class(task, tmp_path: Path, name: str, expected: set[str]) -> None:
    path = _jpeg(getattr(skimage.data, name)(), tmp_path / f"{name}.jpg")
    computed = task.answer(task.compute(path, deadline=time.monotonic() + 60))
    lines = computed.csv_text.splitlines()
    assert lines[0] == "rank,label,score" and len(lines) == 6
    labels = parse_labels_csv(computed.csv_text)
    assert [label.rank for label in labels] == [1, 2, 3, 4, 5]
    assert labels[0].label in expected, labels
    scores = [label.score for label in labels]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
    assert all(len(line.rsplit(",", 1)[1].split(".")[1]) == 4 for line in lines[1:]), "4 decimals"
    assert computed.details == {"labels": [vars(label) for label in labels]}
    assert set(computed.timings) == {"decode", "classify"}
    picture = Image.open(io.BytesIO(computed.picture))
    assert picture.format == "JPEG" and max(picture.size) <= PICTURE_SIDE


def test_png_photo_from_its_package(task) -> None:
    """The PNG as scikit-image ships it (not re-encoded)."""
    labels = task.answer(task.compute(photo("cat"))).details["labels"]
    assert labels[0]["label"] in CAT


def test_stored_answer_reads_back_as_the_same_labels(task, tmp_path: Path) -> None:
    computed = task.answer(task.compute(_jpeg(skimage.data.coffee(), tmp_path / "coffee.jpg")))
    body = answers.parse(StoredAnswer("coffee.csv", None), computed.csv_text)
    assert body.error is None and body.people == []
    assert task.stored_details(body) == computed.details


# ------------------------------------------------------------------------ not a usable photo


def test_a_video_is_unreadable_with_a_clear_detail(task, tmp_path: Path) -> None:
    with pytest.raises(MediaError) as raised:
        task.compute(_video(tmp_path / "cat.mp4"))
    assert raised.value.kind == "unreadable" and "still photo" in raised.value.detail


@pytest.mark.parametrize(
    "data",
    [b"these are my lecture notes, not a photo\n", b"\xff\xd8\xff\xe0" + b"\0" * 100, b"GIF89a" + b"\x01" * 20],
    ids=["text", "truncated-jpeg", "broken-gif"],
)
def test_garbage_is_unreadable(task, tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "garbage.jpg"
    path.write_bytes(data)
    with pytest.raises(MediaError) as raised:
        task.compute(path)
    assert raised.value.kind == "unreadable" and raised.value.detail


def test_an_empty_file_is_empty(task, tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(MediaError) as raised:
        task.compute(path)
    assert raised.value.kind == "empty"


def test_an_image_that_declares_too_many_pixels_is_too_large(task, tmp_path: Path) -> None:
    """90 megapixels declared in a few bytes: refused before decoding."""
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(10_000, 9_000))
    assert path.stat().st_size < 200
    with pytest.raises(MediaError) as raised:
        task.compute(path)
    assert raised.value.kind == "too_large", raised.value


def test_work_past_the_deadline_is_a_timeout(task, tmp_path: Path) -> None:
    path = _jpeg(skimage.data.chelsea(), tmp_path / "late.jpg")
    with pytest.raises(MediaError) as raised:
        task.compute(path, deadline=time.monotonic() - 1)
    assert raised.value.kind == "timeout"


# ------------------------------------------------------------------------------ the format


def test_labels_csv_quotes_what_needs_it_and_reads_back() -> None:
    labels = [Label(1, "tabby, tabby cat", 0.61234), Label(2, 'a "quoted" name', 0.2)]
    text = render_labels_csv(labels)
    assert text.splitlines()[1] == '1,"tabby, tabby cat",0.6123'
    assert parse_labels_csv(text) == [Label(1, "tabby, tabby cat", 0.6123), Label(2, 'a "quoted" name', 0.2)]
    assert parse_labels_csv("rank,label,score\n") == []


@pytest.mark.parametrize(
    "text",
    ["name,major,year\n", "rank,label\n1,cat\n", "rank,label,score\none,cat,0.5\n", "rank,label,score\n1,cat,1.5\n",
     "rank,label,score\n0,cat,0.5\n", "rank,label,score\n1,,0.5\n"],
)  # fmt: skip
def test_malformed_labels_csv_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_labels_csv(text)
    if text.startswith("rank,label,score"):
        body = answers.parse(StoredAnswer("x.csv", None), text)
        assert body.unreadable


# ---------------------------------------------------------------------------- configuration


def test_missing_or_broken_model_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="CLASSIFIER_MODEL"):
        ImageClassificationTask(Settings())
    with pytest.raises(ConfigurationError, match="does not exist"):
        ImageClassificationTask(Settings(classifier_model=str(tmp_path / "missing.onnx")))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ConfigurationError, match="cannot be loaded"):
        ImageClassificationTask(Settings(classifier_model=str(broken)))


# ------------------------------------------------------------- the function (index.py, moto)


def _load_index():
    """functions/image-classification/index.py as the template loads it, with its own
    `handler` module (the face function's, if loaded, is put back afterwards)."""
    other = sys.modules.pop("handler", None)
    sys.path.insert(0, str(CLASSIFICATION_DIR))
    try:
        spec = importlib.util.spec_from_file_location("classification_index", CLASSIFICATION_DIR / "index.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(CLASSIFICATION_DIR))
        sys.modules.pop("handler", None)
        if other is not None:
            sys.modules["handler"] = other
    return module


@pytest.fixture(scope="module")
def function(model_path: Path):
    patch = pytest.MonkeyPatch()
    env = {
        "INPUT_BUCKET": "images-input", "OUTPUT_BUCKET": "images-output", "CLASSIFIER_MODEL": str(model_path),
        "S3_ACCESS_KEY_ID": "test", "S3_SECRET_ACCESS_KEY": "test", "SECRETS_DIR": "/nonexistent",
        "MAX_OBJECT_BYTES": "2000000",
    }  # fmt: skip
    for name, value in env.items():
        patch.setenv(name, value)
    patch.delenv("S3_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        for bucket in ("images-input", "images-output"):
            s3.create_bucket(Bucket=bucket)
        index = _load_index()
        index.handler.object_handler.reset()
        yield {"s3": s3, "client": index.app.test_client(), "index": index}
    patch.undo()


def _invoke(function, key: str) -> tuple[int, dict]:
    response = function["client"].post("/", json={"bucket": "images-input", "key": key})
    return response.status_code, response.get_json()


def _outputs(function, prefix: str) -> set[str]:
    listing = function["s3"].list_objects_v2(Bucket="images-output", Prefix=prefix).get("Contents", [])
    return {obj["Key"] for obj in listing}


def test_function_classifies_once_and_answers_repeats_from_the_stored_csv(function) -> None:
    function["s3"].put_object(Bucket="images-input", Key="pets/chelsea.png", Body=photo("cat").read_bytes())
    status, body = _invoke(function, "pets/chelsea.png")
    assert status == 200, body
    assert body["outcome"] == "ok" and body["output_key"] == "pets/chelsea.csv"
    assert body["picture_key"] == "pets/chelsea.jpg"
    assert [label["rank"] for label in body["labels"]] == [1, 2, 3, 4, 5]
    assert body["labels"][0]["label"] in CAT
    assert {"download", "decode", "classify", "upload", "total"} <= set(body["timings"])
    stored = function["s3"].get_object(Bucket="images-output", Key="pets/chelsea.csv")
    assert stored["Metadata"][answers.SOURCE_ETAG_METADATA] and stored["ContentType"] == "text/csv"
    assert [vars(label) for label in parse_labels_csv(stored["Body"].read().decode())] == body["labels"]

    again_status, again = _invoke(function, "pets/chelsea.png")
    assert again_status == 200 and again["outcome"] == "skipped"
    assert again["labels"] == body["labels"] and again["picture_key"] == "pets/chelsea.jpg"
    assert _outputs(function, "pets/chelsea") == {"pets/chelsea.csv", "pets/chelsea.jpg"}


def test_function_writes_an_error_record_for_what_is_not_a_photo(function, tmp_path: Path) -> None:
    function["s3"].put_object(Bucket="images-input", Key="clip.mp4", Body=_video(tmp_path / "clip.mp4").read_bytes())
    status, body = _invoke(function, "clip.mp4")
    assert status == 422 and body["error"]["error"] == "unreadable", body
    record = json.loads(function["s3"].get_object(Bucket="images-output", Key="clip.error.json")["Body"].read())
    assert record == {"key": "clip.mp4", "error": "unreadable", "detail": body["error"]["detail"]}
    assert _outputs(function, "clip") == {"clip.error.json"}
    function["s3"].put_object(Bucket="images-input", Key="huge.jpg", Body=b"\xff" * 2_000_001)
    assert _invoke(function, "huge.jpg")[1]["error"]["error"] == "too_large"


def test_function_requests_and_health(function) -> None:
    assert function["client"].get("/healthz").status_code == 200
    assert _invoke(function, "missing.jpg")[0] == 404
    wrong = function["client"].post("/", json={"bucket": "input", "key": "a.jpg"})
    assert wrong.status_code == 400 and "not the input bucket" in wrong.get_json()["error"]
    assert function["client"].get("/").status_code == 405
    assert "facerec_requests_total" in function["client"].get("/metrics").get_data(as_text=True)
