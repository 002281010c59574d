"""The web tier on moto S3 with a fake pipeline (tests/unit/webfake.py): uploads, answers,
rejections, timeouts, the results page, pictures and escaping. No stack needed."""

from __future__ import annotations

import html
import io
import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from botocore.exceptions import EndpointConnectionError
from flask import Flask
from flask.testing import FlaskClient

from facepipe import answers
from facepipe.settings import Settings
from facepipe.web import services
from facepipe.web.app import create_app
from facepipe.web.media_types import clean_name, display_stem, looks_like_text, sniff
from facepipe.web.settings import WebSettings, load_web_settings
from facepipe.web.upload import WEB_PREFIX
from tests.unit.webfake import TINY_JPEG, FakePipeline, media

SETTINGS = Settings(input_bucket="input", output_bucket="output", max_object_bytes=10_000)
FAST = WebSettings(result_timeout_s=5.0, poll_s=0.01, page_size=50)


@pytest.fixture
def app(s3) -> Flask:
    return create_app(SETTINGS, FAST, s3=s3)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def pipeline(s3) -> Iterator[FakePipeline]:
    with FakePipeline(s3) as fake:
        yield fake


def post(client: FlaskClient, name: str, data: bytes, accept: str = "*/*", query: str = ""):
    return client.post(
        "/" + query,
        data={"inputFile": (io.BytesIO(data), name)},
        content_type="multipart/form-data",
        headers={"Accept": accept},
    )


def input_keys(s3) -> list[str]:
    return [obj["Key"] for obj in s3.list_objects_v2(Bucket="input").get("Contents", [])]


# ------------------------------------------------------------------------------ POST /


def test_answer_is_stem_and_names_as_plain_text(client, pipeline, s3) -> None:
    response = post(client, "test_0.mp4", media("people=grace_hopper"))
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == "test_0:grace_hopper"
    # Stored through the input bucket (the pipeline's own path), under a key of its own.
    [key] = input_keys(s3)
    assert re.fullmatch(r"web/[0-9a-f]{16}/test_0\.mp4", key)
    assert s3.get_object(Bucket="input", Key=key)["Body"].read() == media("people=grace_hopper")
    assert s3.head_object(Bucket="input", Key=key)["ContentType"] == "video/mp4"


def test_several_people_and_nobody(client, pipeline) -> None:
    both = post(client, "two.jpg", media("people=grace_hopper,eileen_collins"))
    assert both.get_data(as_text=True) == "two:grace_hopper,eileen_collins"
    nobody = post(client, "empty room.mov", media("people="))
    assert (nobody.status_code, nobody.get_data(as_text=True)) == (200, "empty room:")


def test_json_answer_has_the_whole_result(client, pipeline) -> None:
    response = post(client, "clip.webm", media("people=eileen_collins,nobody_known picture"), "application/json")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "done"
    assert (body["file"], body["stem"], body["bucket"]) == ("clip.webm", "clip", "input")
    assert body["key"].startswith(WEB_PREFIX) and body["key"].endswith("/clip.webm")
    assert body["output_key"] == answers.result_key(body["key"])
    assert body["people"] == [
        {"name": "eileen_collins", "major": "aerospace_engineering", "year": "junior"},
        {"name": "nobody_known", "major": "", "year": ""},
    ]
    assert body["error"] is None
    assert body["picture_key"] == answers.stem(body["key"]) + ".jpg"
    assert body["picture_url"].startswith("/picture/web/")
    assert body["seconds"] >= 0
    picture = client.get(body["picture_url"])
    assert (picture.status_code, picture.mimetype, picture.data) == (200, "image/jpeg", TINY_JPEG)
    # The result can be looked up again later.
    again = client.get(body["result_url"], headers={"Accept": "application/json"})
    assert again.status_code == 200
    assert again.get_json()["people"] == body["people"]
    assert client.get(body["result_url"]).get_data(as_text=True) == "clip:eileen_collins,nobody_known"


def test_no_picture_yet_is_fine(client, pipeline) -> None:
    body = post(client, "clip.mp4", media("people=grace_hopper"), "application/json").get_json()
    assert body["status"] == "done"
    assert body["picture_key"] is None and body["picture_url"] is None


def test_format_query_asks_for_json(client, pipeline) -> None:
    response = post(client, "clip.mp4", media("people=grace_hopper"), query="?format=json")
    assert response.get_json()["people"][0]["name"] == "grace_hopper"


def test_unusable_media_is_a_422_with_the_error_record(client, pipeline) -> None:
    response = post(client, "bad.mp4", media("broken"))
    assert response.status_code == 422
    assert response.get_data(as_text=True) == "bad: error unreadable: ffmpeg could not read the file\n"
    body = post(client, "bad.mp4", media("broken"), "application/json").get_json()
    assert body["status"] == "error"
    assert body["error"] == {"error": "unreadable", "detail": "ffmpeg could not read the file"}
    assert body["output_key"].endswith("/bad.error.json")
    assert body["people"] == [] and body["picture_url"] is None


def test_timeout_answers_202_with_the_key_to_look_up(s3, pipeline) -> None:
    client = create_app(SETTINGS, WebSettings(result_timeout_s=0.3, poll_s=0.01), s3=s3).test_client()
    response = post(client, "slow.mp4", media("silent"))
    assert response.status_code == 202
    [key] = input_keys(s3)
    text = response.get_data(as_text=True)
    assert text.startswith("pending: slow is still being processed")
    assert f"GET /result/{key}" in text and f"key: {key}" in text
    assert response.headers["Location"] == f"/result/{key}"
    pending = client.get(response.headers["Location"], headers={"Accept": "application/json"})
    assert pending.status_code == 202 and pending.get_json()["status"] == "pending"
    # The pipeline answers later; the same URL then has the answer.
    s3.put_object(Bucket="output", Key=answers.result_key(key), Body=b"name,major,year\ngrace_hopper,cs,senior\n")
    later = client.get(response.headers["Location"])
    assert (later.status_code, later.get_data(as_text=True)) == (200, "slow:grace_hopper")


def test_timeout_query_can_only_shorten_the_wait(s3, pipeline) -> None:
    client = create_app(SETTINGS, WebSettings(result_timeout_s=30, poll_s=0.01), s3=s3).test_client()
    response = post(client, "slow.mp4", media("silent"), query="?timeout=0.1")
    assert response.status_code == 202


def test_unknown_result_key_is_404(client) -> None:
    response = client.get("/result/web/nope/clip.mp4")
    assert response.status_code == 404
    assert "no upload with key" in response.get_data(as_text=True)


def test_result_of_an_earlier_upload_under_the_same_key_is_not_taken(client, s3, monkeypatch) -> None:
    s3.put_object(Bucket="output", Key="lecture.csv", Body=b"name,major,year\nold_person,,\n")
    s3.put_object(Bucket="input", Key="lecture.mp4", Body=media("new upload"))
    assert client.get("/result/lecture.mp4").get_data(as_text=True) == "lecture:old_person"
    real_head = s3.head_object

    def newer(**kwargs):
        head = real_head(**kwargs)
        head["LastModified"] = datetime(2100, 1, 1, tzinfo=UTC)
        return head

    monkeypatch.setattr(s3, "head_object", newer)
    assert client.get("/result/lecture.mp4").status_code == 202
    # With the input gone, the answer it had is still shown.
    monkeypatch.setattr(s3, "head_object", real_head)
    s3.delete_object(Bucket="input", Key="lecture.mp4")
    assert client.get("/result/lecture.mp4").status_code == 200


def test_same_name_from_many_users_at_once_never_mixes_answers(pipeline, s3) -> None:
    """20 concurrent uploads all called clip.mp4, each with other people: each gets its own.
    (A long result timeout: 20 threads share one in-process moto, and this is about answers,
    not speed.)"""
    app = create_app(SETTINGS, WebSettings(result_timeout_s=120.0, poll_s=0.05), s3=s3)
    names = ["grace_hopper", "eileen_collins", "ada", "alan", "barbara"]
    answers: dict[int, str] = {}

    def one(index: int) -> None:
        people = ",".join(names[index % len(names)] for _ in range(1)) + f",person{index}"
        response = post(app.test_client(), "clip.mp4", media(f"people={people}"))
        answers[index] = f"{response.status_code} {response.get_data(as_text=True)}"

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=150)
    assert answers == {i: f"200 clip:{names[i % len(names)]},person{i}" for i in range(20)}
    assert len(set(input_keys(s3))) == 20


# ------------------------------------------------------------------------------ rejections


def test_missing_file_is_400(client) -> None:
    for response in (
        client.post("/", data={}, content_type="multipart/form-data"),
        client.post("/", data={"other": (io.BytesIO(b"x"), "a.mp4")}, content_type="multipart/form-data"),
        client.post("/", data=b"raw body", content_type="application/octet-stream"),
        client.post("/", data={"inputFile": (io.BytesIO(b"x"), "")}, content_type="multipart/form-data"),
    ):
        assert response.status_code == 400
        assert "inputFile" in response.get_data(as_text=True)


def test_empty_file_and_unusable_name_are_400(client) -> None:
    assert post(client, "clip.mp4", b"").status_code == 400
    response = post(client, "../..", media("x"))
    assert response.status_code == 400 and "file name" in response.get_data(as_text=True)


def test_wrong_type_is_415(client, s3) -> None:
    for name, data in (
        ("notes.txt", b"just some notes\n"),
        ("page.html", b"<html><script>alert(1)</script></html>"),
        ("archive.zip", b"PK\x03\x04" + bytes(range(256))),
        ("noextension", b"\x00\x01\x02garbage"),
        ("clip.mp4", b"<html>this is a web page, not a video</html>\n"),
    ):
        response = post(client, name, data, "application/json")
        assert response.status_code == 415, name
        assert response.get_json()["status"] == "rejected"
    assert input_keys(s3) == []


def test_a_file_without_extension_is_sniffed(client, pipeline, s3) -> None:
    response = post(client, "snapshot", media("people=grace_hopper"))
    assert (response.status_code, response.get_data(as_text=True)) == (200, "snapshot:grace_hopper")
    [key] = input_keys(s3)
    assert key.endswith("/snapshot.jpg")


def test_oversized_upload_is_413(s3) -> None:
    client = create_app(SETTINGS, WebSettings(max_upload_bytes=1000, poll_s=0.01), s3=s3).test_client()
    response = post(client, "big.mp4", media("x" * 2000))
    assert response.status_code == 413
    assert "limit is 1000 bytes" in response.get_data(as_text=True)
    # Far larger than the limit: refused by Flask's MAX_CONTENT_LENGTH before the form is parsed.
    huge = post(client, "huge.mp4", media("x" * 200_000), "application/json")
    assert huge.status_code == 413 and "larger than the limit" in huge.get_json()["error"]
    assert input_keys(s3) == []


def test_default_upload_limit_is_max_object_bytes(s3) -> None:
    client = create_app(SETTINGS, WebSettings(poll_s=0.01), s3=s3).test_client()
    assert post(client, "big.mp4", media("x" * 10_001)).status_code == 413


def test_storage_down_is_503(app, client, s3, monkeypatch) -> None:
    def down(*args, **kwargs):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    monkeypatch.setattr(s3, "upload_fileobj", down)
    response = post(client, "clip.mp4", media("people=x"))
    assert response.status_code == 503
    monkeypatch.setattr(s3, "get_paginator", down)
    assert client.get("/results").status_code == 503


def test_other_routes_and_methods(client) -> None:
    assert client.get("/healthz").get_data(as_text=True) == "ok\n"
    page = client.get("/")
    assert page.status_code == 200 and b'name="inputFile"' in page.data
    assert client.put("/").status_code == 405
    assert client.get("/nope").status_code == 404


# ------------------------------------------------------------------------------ results page


def put_result(s3, stem: str, csv: str, picture: bool = False) -> None:
    if picture:
        s3.put_object(Bucket="output", Key=stem + ".jpg", Body=TINY_JPEG)
    s3.put_object(Bucket="output", Key=stem + ".csv", Body=csv.encode())


def put_error(s3, stem: str, error: str, detail: str) -> None:
    record = {"key": stem + ".mp4", "error": error, "detail": detail}
    s3.put_object(Bucket="output", Key=stem + ".error.json", Body=json.dumps(record).encode())


def test_results_page_lists_results_and_errors_newest_first(client, s3) -> None:
    put_result(s3, "first", "name,major,year\ngrace_hopper,computer_science,senior\n", picture=True)
    put_error(s3, "broken", "unreadable", "moov atom not found")
    put_result(s3, "lecture 1/nobody", "name,major,year\n")
    s3.put_object(Bucket="output", Key="unrelated.txt", Body=b"x")
    s3.put_object(Bucket="output", Key="orphan.jpg", Body=TINY_JPEG)  # a picture without an answer
    data = client.get("/results.json").get_json()
    assert data["counts"] == {"total": 3, "done": 2, "error": 1}
    assert sorted(item["stem"] for item in data["items"]) == ["broken", "first", "lecture 1/nobody"]
    by_stem = {item["stem"]: item for item in data["items"]}
    assert by_stem["first"]["people"] == [{"name": "grace_hopper", "major": "computer_science", "year": "senior"}]
    assert by_stem["first"]["picture_url"].startswith("/picture/first.jpg?v=")
    assert by_stem["broken"]["status"] == "error"
    assert by_stem["broken"]["error"] == {"error": "unreadable", "detail": "moov atom not found"}
    assert by_stem["lecture 1/nobody"]["people"] == [] and by_stem["lecture 1/nobody"]["picture_url"] is None
    assert (by_stem["lecture 1/nobody"]["name"], by_stem["lecture 1/nobody"]["folder"]) == ("nobody", "lecture 1")
    times = [item["processed_at"] for item in data["items"]]
    assert times == sorted(times, reverse=True)

    html = client.get("/results").get_data(as_text=True)
    assert "grace_hopper" in html and "computer_science" in html and "senior" in html
    assert 'class="error-code">unreadable<' in html and "moov atom not found" in html
    assert "nobody recognised" in html
    assert html.count("<img ") == 1
    assert 'src="/static/results.js"' in html


def test_newest_first_by_processing_time(client, s3, monkeypatch) -> None:
    put_result(s3, "zzz_old", "name,major,year\n")
    put_result(s3, "aaa_new", "name,major,year\n")
    store = services.of(client.application).store
    real = s3.get_paginator

    class Paginator:
        def __init__(self, name: str) -> None:
            self.inner = real(name)

        def paginate(self, **kwargs):
            for page in self.inner.paginate(**kwargs):
                for obj in page.get("Contents", []):
                    obj["LastModified"] = datetime(2030 if obj["Key"].startswith("aaa") else 2020, 1, 1, tzinfo=UTC)
                yield page

    monkeypatch.setattr(s3, "get_paginator", Paginator)
    store._listing = None
    assert [item["stem"] for item in client.get("/results.json").get_json()["items"]] == ["aaa_new", "zzz_old"]


def test_results_page_escapes_user_controlled_text(client, s3) -> None:
    evil = '<script>alert("key")</script>'
    put_result(s3, f"web/abc/{evil}", 'name,major,year\n<img src=x onerror=alert(1)>,"<b>major</b>",2\n', True)
    put_error(s3, "e<svg onload=alert(2)>", "unreadable", "<script>alert(3)</script>")
    for url in ("/results", "/results/rows"):
        html = client.get(url).get_data(as_text=True)
        assert "<script>alert" not in html and "<img src=x" not in html and "<svg" not in html
        assert "&lt;script&gt;alert(&#34;key&#34;)&lt;/script&gt;" in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html
        assert "&lt;b&gt;major&lt;/b&gt;" in html
    response = client.get("/results")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    # The picture of the awkward key is served under its quoted URL.
    [item] = [i for i in client.get("/results.json").get_json()["items"] if i["picture_url"]]
    assert "<" not in item["picture_url"]
    assert client.get(item["picture_url"]).data == TINY_JPEG


def test_pagination(s3) -> None:
    client = create_app(SETTINGS, WebSettings(page_size=2), s3=s3).test_client()
    for index in range(5):
        put_result(s3, f"clip{index}", "name,major,year\n")
    pages = [client.get(f"/results.json?page={n}").get_json() for n in (1, 2, 3)]
    assert [p["pages"] for p in pages] == [3, 3, 3]
    assert [len(p["items"]) for p in pages] == [2, 2, 1]
    assert len({item["stem"] for p in pages for item in p["items"]}) == 5
    assert client.get("/results.json?page=99").get_json()["page"] == 3
    assert client.get("/results.json?page=x").get_json()["page"] == 1
    html = client.get("/results?page=2").get_data(as_text=True)
    assert 'href="/results?page=1"' in html and 'href="/results?page=3"' in html


def test_rows_version_changes_when_a_result_arrives(client, s3) -> None:
    store = services.of(client.application).store
    put_result(s3, "one", "name,major,year\n")
    before = client.get("/results/rows").get_data(as_text=True)
    version = re.search(r'data-version="(\w+)"', before)[1]
    store._listing = None  # skip the 1 s listing cache
    assert re.search(r'data-version="(\w+)"', client.get("/results/rows").get_data(as_text=True))[1] == version
    put_result(s3, "two", "name,major,year\ngrace_hopper,cs,senior\n")
    store._listing = None
    after = client.get("/results/rows").get_data(as_text=True)
    assert re.search(r'data-version="(\w+)"', after)[1] != version
    assert "grace_hopper" in after


def test_an_error_replacing_a_result_hides_the_old_picture(client, s3) -> None:
    put_result(s3, "clip", "name,major,year\ngrace_hopper,cs,senior\n", picture=True)
    put_error(s3, "clip", "unreadable", "corrupt re-upload")
    s3.delete_object(Bucket="output", Key="clip.csv")
    [item] = client.get("/results.json").get_json()["items"]
    assert item["status"] == "error" and item["picture_url"] is None


def test_empty_bucket_page(client) -> None:
    html = client.get("/results").get_data(as_text=True)
    assert "No results yet" in html


def test_picture_route(client, s3) -> None:
    s3.put_object(Bucket="output", Key="a b/ü.jpg", Body=TINY_JPEG)
    s3.put_object(Bucket="output", Key="a.csv", Body=b"name,major,year\n")
    response = client.get("/picture/a%20b/%C3%BC.jpg")
    assert (response.status_code, response.data) == (200, TINY_JPEG)
    assert response.headers["Cache-Control"] == "no-cache"
    etag = response.headers["ETag"]
    assert client.get("/picture/a%20b/%C3%BC.jpg", headers={"If-None-Match": etag}).status_code == 304
    assert client.get("/picture/a%20b/%C3%BC.jpg?v=1").headers["Cache-Control"].startswith("public")
    assert client.get("/picture/a.csv").status_code == 404  # only pictures
    assert client.get("/picture/missing.jpg").status_code == 404


# ------------------------------------------------------------------------------ helpers


@pytest.mark.parametrize(
    ("head", "suffix"),
    [
        (b"\xff\xd8\xff\xe0rest", ".jpg"),
        (b"\x89PNG\r\n\x1a\nrest", ".png"),
        (b"\x00\x00\x00\x20ftypisom", ".mp4"),
        (b"\x1aE\xdf\xa3\x01", ".mkv"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", ".avi"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", ".webp"),
        (b"GIF89a", ".gif"),
        (b"G" + bytes(187) + b"G", ".ts"),
        (b"hello", None),
        (b"", None),
    ],
)
def test_sniff(head: bytes, suffix: str | None) -> None:
    assert sniff(head) == suffix


def test_looks_like_text() -> None:
    assert looks_like_text(b"plain text\nwith lines\t")
    assert looks_like_text("ünïcode ✓ text".encode()[:-1])  # a character cut at the end
    assert not looks_like_text(b"\xff\xd8\xff\xe0")
    assert not looks_like_text(b"text\x00with nul")
    assert not looks_like_text(b"")


def test_clean_name() -> None:
    assert clean_name("clip.mp4") == "clip.mp4"
    assert clean_name("C:\\Users\\me\\clip.mp4") == "clip.mp4"
    assert clean_name("../../etc/clip.mp4") == "clip.mp4"
    assert clean_name("bad\x00\x1fname.mp4") == "badname.mp4"
    assert clean_name("..") == "" and clean_name("dir/") == ""
    long = clean_name("x" * 500 + ".mp4")
    assert len(long) == 200 and long.endswith(".mp4")


def test_display_stem() -> None:
    assert display_stem("web/0123/test_0.mp4") == "test_0"
    assert display_stem("clip.tar.mp4") == "clip.tar"


def test_load_web_settings(tmp_path) -> None:
    none = {"SECRETS_DIR": str(tmp_path / "none")}
    assert load_web_settings(none) == WebSettings()
    loaded = load_web_settings({"WEB_RESULT_TIMEOUT_S": "30", "WEB_THREADS": "8", "WEB_MAX_UPLOAD_BYTES": "99", **none})
    assert (loaded.result_timeout_s, loaded.threads, loaded.max_upload_bytes) == (30.0, 8, 99)
    with pytest.raises(ValueError, match="WEB_THREADS"):
        load_web_settings({"WEB_THREADS": "0", **none})
    with pytest.raises(ValueError, match="WEB_POLL_S must be a number"):
        load_web_settings({"WEB_POLL_S": "fast", **none})
    hardened = load_web_settings({
        "WEB_TOKEN": "from-env", "WEB_ALLOWED_ORIGINS": "https://App.Example.org, http://10.0.0.5:8080/",
        "WEB_CONNECTION_LIMIT": "300", "WEB_CHANNEL_TIMEOUT_S": "20", "WEB_SPOOL_DIR": str(tmp_path),
        "WEB_SPOOL_LIMIT_BYTES": "5000000", "WEB_CONCURRENT_SENDS": "4", **none,
    })  # fmt: skip
    assert hardened.token == "from-env" and "from-env" not in repr(hardened)
    assert hardened.allowed_origins == ("https://app.example.org", "http://10.0.0.5:8080")
    assert (hardened.effective_connection_limit(), hardened.channel_timeout_s) == (300, 20)
    assert (hardened.spool_folder(), hardened.effective_spool_limit(10**6), hardened.concurrent_sends) == (
        str(tmp_path),
        5_000_000,
        4,
    )
    assert 10**6 <= WebSettings().effective_spool_limit(10**6) <= 8 * 10**6
    with pytest.raises(ValueError, match="WEB_ALLOWED_ORIGINS"):
        load_web_settings({"WEB_ALLOWED_ORIGINS": "evil.example", **none})
    with pytest.raises(ValueError, match="WEB_CHANNEL_TIMEOUT_S"):
        load_web_settings({"WEB_CHANNEL_TIMEOUT_S": "0", **none})
    # The secret file comes first, as for the other secrets.
    (tmp_path / "web-token").write_text("from-file\n")
    assert load_web_settings({"WEB_TOKEN": "from-env", "SECRETS_DIR": str(tmp_path)}).token == "from-file"


# ------------------------------------------------------------------------------ token and origin (in the app)

TOKEN = "t0ken"


def test_the_app_checks_the_token_itself(s3, pipeline) -> None:
    """Under any server (here the test client): 401 without the token, for the pages, the
    answers, the pictures and the uploads; the probes and static files stay open."""
    client = create_app(SETTINGS, WebSettings(result_timeout_s=5.0, poll_s=0.01, token=TOKEN), s3=s3).test_client()
    for path in ("/", "/results", "/results.json", "/results/rows", "/result/web/x/a.mp4", "/picture/a.jpg"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert sorted(value.split()[0] for value in response.headers.getlist("WWW-Authenticate")) == ["Basic", "Bearer"]
    for path in ("/healthz", "/metrics", "/static/style.css"):
        assert client.get(path).status_code == 200, path
    assert post(client, "clip.mp4", media("people=grace_hopper")).status_code == 401
    assert input_keys(s3) == []
    answer = client.post(
        "/", data={"inputFile": (io.BytesIO(media("people=grace_hopper")), "clip.mp4")},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )  # fmt: skip
    assert (answer.status_code, answer.get_data(as_text=True)) == (200, "clip:grace_hopper")
    page = client.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).get_data(as_text=True)
    assert "Authorization: Bearer $WEB_TOKEN" in html.unescape(page)


def test_the_app_refuses_cross_origin_posts_itself(s3, pipeline) -> None:
    client = create_app(SETTINGS, FAST, s3=s3).test_client()
    upload = {"inputFile": (io.BytesIO(media("people=grace_hopper")), "clip.mp4")}
    refused = client.post("/", data=upload, headers={"Origin": "https://evil.example", "Accept": "application/json"})
    assert refused.status_code == 403 and "cross-origin" in refused.get_json()["error"]
    upload = {"inputFile": (io.BytesIO(media("people=grace_hopper")), "clip.mp4")}
    own = client.post("/", data=upload, headers={"Origin": "http://localhost"})  # the test client's host
    assert own.status_code == 200
    assert len(input_keys(s3)) == 1


def test_an_upload_is_logged_as_fields(client, pipeline, caplog) -> None:
    with caplog.at_level("INFO", logger="facepipe.web"):
        post(client, "clip.mp4", media("people=grace_hopper"))
        post(client, "notes.txt", b"just notes\n")
    [answered] = [r for r in caplog.records if r.getMessage() == "upload answered"]
    assert answered.fields["key"].endswith("/clip.mp4") and answered.fields["bucket"] == "input"
    assert (answered.fields["outcome"], answered.fields["status"]) == ("done", 200)
    assert answered.fields["seconds"] >= 0
    [rejected] = [r for r in caplog.records if r.getMessage() == "upload rejected"]
    assert (rejected.fields["status"], rejected.fields["outcome"]) == (415, "rejected")
