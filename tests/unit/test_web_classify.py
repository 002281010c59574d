"""POST /classify and the classified images on the results page, on moto S3 with the fake
classification function of tests/unit/webfake.py. No stack needed."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from facepipe import answers
from facepipe.answers import render_labels_csv
from facepipe.settings import Settings
from facepipe.web.app import create_app
from facepipe.web.media_types import UnsupportedMedia, image_name
from facepipe.web.settings import WebSettings
from tests.unit.webfake import TINY_JPEG, FakePipeline, media, ranked

SETTINGS = Settings(input_bucket="input", output_bucket="output", max_object_bytes=10_000)
IMAGES_IN, IMAGES_OUT = SETTINGS.image_input_bucket, SETTINGS.image_output_bucket
FAST = WebSettings(result_timeout_s=5.0, poll_s=0.01)
PNG = b"\x89PNG\r\n\x1a\n"
CAT = ["tabby cat", "a cat having a striped coat", "Egyptian Mau", "lynx", "window screen"]


@pytest.fixture
def image_buckets(s3) -> None:
    s3.create_bucket(Bucket=IMAGES_IN)
    s3.create_bucket(Bucket=IMAGES_OUT)


@pytest.fixture
def client(s3, image_buckets) -> FlaskClient:
    return create_app(SETTINGS, FAST, s3=s3).test_client()


@pytest.fixture
def classifier(s3, image_buckets) -> Iterator[FakePipeline]:
    with FakePipeline(s3, IMAGES_IN, IMAGES_OUT, classify=True) as fake:
        yield fake


def classify(client: FlaskClient, name: str, data: bytes, accept: str = "*/*", field: str = "inputFile", query=""):
    return client.post(
        "/classify" + query,
        data={field: (io.BytesIO(data), name)},
        content_type="multipart/form-data",
        headers={"Accept": accept},
    )


def keys_in(s3, bucket: str) -> list[str]:
    return [obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


# ------------------------------------------------------------------------------ POST /classify


def test_answer_is_stem_and_top_label_as_plain_text(client, classifier, s3) -> None:
    response = classify(client, "chelsea.png", media("labels=" + ";".join(CAT)))
    assert (response.status_code, response.mimetype) == (200, "text/plain")
    assert response.get_data(as_text=True) == "chelsea:tabby cat"
    # Stored in the image input bucket, never in the face function's.
    [key] = keys_in(s3, IMAGES_IN)
    assert re.fullmatch(r"web/[0-9a-f]{16}/chelsea\.png", key)
    assert s3.head_object(Bucket=IMAGES_IN, Key=key)["ContentType"] == "image/png"
    assert keys_in(s3, "input") == []


def test_the_older_workload_generators_field_name_is_accepted(client, classifier) -> None:
    response = classify(client, "test_07.JPEG", media("labels=espresso;cup"), field="myfile")
    assert (response.status_code, response.get_data(as_text=True)) == (200, "test_07:espresso")


def test_json_answer_has_the_top_five(client, classifier) -> None:
    response = classify(client, "chelsea.jpg", media("picture labels=" + ";".join(CAT)), "application/json")
    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["file"], body["stem"], body["bucket"]) == ("done", "chelsea.jpg", "chelsea", IMAGES_IN)
    assert body["labels"] == [vars(label) for label in ranked(CAT)]
    assert [label["rank"] for label in body["labels"]] == [1, 2, 3, 4, 5]
    assert body["output_key"] == answers.result_key(body["key"]) and body["error"] is None
    assert "people" not in body
    assert body["picture_url"].startswith("/classify/picture/web/")
    picture = client.get(body["picture_url"])
    assert (picture.status_code, picture.mimetype, picture.data) == (200, "image/jpeg", TINY_JPEG)
    # The answer can be looked up again by its key, in the image buckets.
    assert body["result_url"] == f"/classify/result/{body['key']}"
    again = client.get(body["result_url"], headers={"Accept": "application/json"})
    assert again.status_code == 200 and again.get_json()["labels"] == body["labels"]
    assert client.get(body["result_url"]).get_data(as_text=True) == "chelsea:tabby cat"
    assert client.get(f"/result/{body['key']}").status_code == 404  # not a face upload


def test_unreadable_photo_is_a_422_with_the_error_record(client, classifier) -> None:
    response = classify(client, "bad.jpg", media("broken"))
    assert response.status_code == 422
    assert response.get_data(as_text=True).startswith("bad: error unreadable: ")
    body = classify(client, "bad.jpg", media("broken"), "application/json").get_json()
    assert (body["status"], body["error"]["error"], body["labels"]) == ("error", "unreadable", [])


def test_timeout_answers_202_with_where_to_look_later(s3, image_buckets, classifier) -> None:
    client = create_app(SETTINGS, WebSettings(result_timeout_s=0.2, poll_s=0.01), s3=s3).test_client()
    response = classify(client, "slow.png", media("silent"))
    assert response.status_code == 202
    [key] = keys_in(s3, IMAGES_IN)
    assert response.headers["Location"] == f"/classify/result/{key}"
    assert f"GET /classify/result/{key}" in response.get_data(as_text=True)
    s3.put_object(Bucket=IMAGES_OUT, Key=answers.result_key(key), Body=render_labels_csv(ranked(["tripod"])).encode())
    later = client.get(response.headers["Location"])
    assert (later.status_code, later.get_data(as_text=True)) == (200, "slow:tripod")


def test_a_photo_without_extension_is_stored_with_the_one_its_bytes_show(client, classifier, s3) -> None:
    response = classify(client, "snapshot", PNG + b"labels=espresso\x00")
    assert (response.status_code, response.get_data(as_text=True)) == (200, "snapshot:espresso")
    [key] = keys_in(s3, IMAGES_IN)
    assert key.endswith("/snapshot.png")


# ------------------------------------------------------------------------------ rejections


def test_anything_but_a_photo_is_415(client, s3) -> None:
    for name, data, reason in (
        ("notes.txt", b"just some notes\n", "not an image"),
        ("cat.jpg", b"<html>a page named like a photo</html>\n", "not an image"),
        ("clip.mp4", b"\x00\x00\x00\x20ftypisom" + bytes(64), "is a video"),
        ("clip.jpg", b"\x1aE\xdf\xa3" + bytes(64), "is a video"),
        ("archive.zip", b"PK\x03\x04" + bytes(64), "not an image"),
    ):
        response = classify(client, name, data, "application/json")
        assert response.status_code == 415, name
        assert reason in response.get_json()["error"], name
    assert keys_in(s3, IMAGES_IN) == []


def test_missing_file_empty_file_and_too_large(s3, image_buckets) -> None:
    client = create_app(SETTINGS, WebSettings(max_upload_bytes=1000, poll_s=0.01), s3=s3).test_client()
    missing = client.post("/classify", data={"other": (io.BytesIO(b"x"), "a.jpg")}, content_type="multipart/form-data")
    assert missing.status_code == 400 and "inputFile" in missing.get_data(as_text=True)
    assert classify(client, "a.jpg", b"").status_code == 400
    large = classify(client, "big.jpg", media("x" * 2000))
    assert large.status_code == 413 and "limit is 1000 bytes" in large.get_data(as_text=True)
    assert keys_in(s3, IMAGES_IN) == []


def test_without_the_image_buckets_it_is_503_and_says_why(s3) -> None:
    client = create_app(SETTINGS, FAST, s3=s3).test_client()
    response = classify(client, "chelsea.png", media("labels=tabby cat"))
    assert response.status_code == 503
    assert f"the input bucket {IMAGES_IN!r} does not exist" in response.get_data(as_text=True)


def test_image_name() -> None:
    assert image_name("cat.jpg", PNG) == "cat.jpg"
    assert image_name("cat.GIF", b"GIF89a") == "cat.GIF"
    assert image_name("cat", b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "cat.webp"
    assert image_name("cat.mp4", PNG) == "cat.mp4.png"
    with pytest.raises(UnsupportedMedia, match="is a video"):
        image_name("clip.mp4", b"\x00\x00\x00\x20ftypisom")
    with pytest.raises(UnsupportedMedia, match="not an image"):
        image_name("cat.jpg", b"hello")


# ------------------------------------------------------------------------------ results page


def put_labels(s3, stem: str, labels: list[str], picture: bool = False) -> None:
    if picture:
        s3.put_object(Bucket=IMAGES_OUT, Key=stem + ".jpg", Body=TINY_JPEG)
    s3.put_object(Bucket=IMAGES_OUT, Key=stem + ".csv", Body=render_labels_csv(ranked(labels)).encode())


def test_results_page_shows_the_classified_images(client, s3) -> None:
    put_labels(s3, "chelsea", CAT, picture=True)
    put_labels(s3, "photos/coffee", ["espresso", "tea cup"])
    record = {"key": "bad.png", "error": "unreadable", "detail": "not a PNG image that can be decoded"}
    s3.put_object(Bucket=IMAGES_OUT, Key="bad.error.json", Body=json.dumps(record).encode())
    s3.put_object(Bucket="output", Key="clip.csv", Body=b"name,major,year\ngrace_hopper,cs,senior\n")

    data = client.get("/results.json").get_json()
    assert data["counts"] == {"total": 1, "done": 1, "error": 0}  # the videos
    images = data["images"]
    assert images["counts"] == {"total": 3, "done": 2, "error": 1}
    by_stem = {item["stem"]: item for item in images["items"]}
    assert (by_stem["chelsea"]["label"], by_stem["chelsea"]["score"]) == ("tabby cat", 0.5)
    assert [label["label"] for label in by_stem["chelsea"]["labels"]] == CAT
    assert by_stem["chelsea"]["picture_url"].startswith("/classify/picture/chelsea.jpg?v=")
    assert (by_stem["photos/coffee"]["name"], by_stem["photos/coffee"]["folder"]) == ("coffee", "photos")
    assert by_stem["photos/coffee"]["picture_url"] is None
    assert by_stem["bad"]["status"] == "error" and by_stem["bad"]["label"] is None
    assert client.get(by_stem["chelsea"]["picture_url"]).data == TINY_JPEG

    html = client.get("/results").get_data(as_text=True)
    images_html = html[html.index('id="images"') :]
    assert "Classified images" in images_html and "3</strong> classified" in images_html
    assert '<span class="label">tabby cat</span> <span class="score">50%</span>' in images_html
    assert "then a cat having a striped coat 25%" in images_html
    assert 'class="error-code">unreadable<' in images_html
    assert images_html.count("<img ") == 1
    assert "grace_hopper" in html[: html.index('id="images"')]


def test_results_version_changes_when_an_image_is_classified(client, s3) -> None:
    from facepipe.web import services

    before = client.get("/results.json").get_json()["version"]
    put_labels(s3, "chelsea", CAT)
    services.of(client.application).image_store._listing = None  # skip the 1 s listing cache
    assert client.get("/results.json").get_json()["version"] != before


def test_image_labels_are_escaped(client, s3) -> None:
    put_labels(s3, "web/x/<script>alert(1)</script>", ["<img src=x onerror=alert(2)>"], picture=True)
    html = client.get("/results/rows").get_data(as_text=True)
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html


def test_images_are_paged_on_their_own(s3, image_buckets) -> None:
    client = create_app(SETTINGS, WebSettings(page_size=2), s3=s3).test_client()
    for index in range(3):
        put_labels(s3, f"photo{index}", ["espresso"])
    first = client.get("/results.json").get_json()["images"]
    second = client.get("/results.json?images_page=2").get_json()["images"]
    assert (first["pages"], len(first["items"]), second["page"], len(second["items"])) == (2, 2, 2, 1)
    html = client.get("/results").get_data(as_text=True)
    assert 'href="/results?images_page=2"' in html


def test_without_the_image_output_bucket_the_videos_are_still_shown(s3) -> None:
    client = create_app(SETTINGS, FAST, s3=s3).test_client()
    s3.put_object(Bucket="output", Key="clip.csv", Body=b"name,major,year\ngrace_hopper,cs,senior\n")
    response = client.get("/results")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "grace_hopper" in html
    assert f"the image output bucket {IMAGES_OUT!r} cannot be read" in html.replace("&#39;", "'")
    assert client.get("/results.json").get_json()["images"]["unavailable"]


def test_the_form_offers_both_functions(client) -> None:
    html = client.get("/").get_data(as_text=True)
    assert 'action="/classify"' in html and 'action="/"' in html
