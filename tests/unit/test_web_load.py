"""workload.py --http: the load generator against a real HTTP server (the web tier over
HTTP, on moto S3 with the fake pipelines of tests/unit/webfake.py), for faces and for
image classification (/classify)."""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from rich.console import Console
from werkzeug.serving import make_server

from facepipe.settings import Settings
from facepipe.web.app import create_app
from facepipe.web.settings import WebSettings
from facepipe_tools import workload
from facepipe_tools.mapping import parse_image_mapping
from facepipe_tools.workload import HttpOutcome, is_classify_url, judge, send_files
from tests.unit.webfake import FakePipeline, media


@contextmanager
def serving(s3, web: WebSettings) -> Iterator[str]:
    """The web tier over real HTTP (werkzeug's threaded server, which stops cleanly), with fake
    face and classification functions behind it."""
    settings = Settings()
    s3.create_bucket(Bucket=settings.image_input_bucket)
    s3.create_bucket(Bucket=settings.image_output_bucket)
    app = create_app(settings, web, s3=s3)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    images = FakePipeline(s3, settings.image_input_bucket, settings.image_output_bucket, delay_s=0.05, classify=True)
    with FakePipeline(s3, delay_s=0.05), images:
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}/"
        finally:
            server.shutdown()
            thread.join(timeout=5)


@pytest.fixture
def web_url(s3) -> Iterator[str]:
    with serving(s3, WebSettings(result_timeout_s=10, poll_s=0.01)) as url:
        yield url


def make_files(folder: Path, specs: dict[str, str]) -> list[Path]:
    paths = []
    for name, marker in specs.items():
        path = folder / name
        path.write_bytes(media(marker))
        paths.append(path)
    return paths


def run_main(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    console = Console(file=out, width=200, highlight=False)
    original = workload.Console
    workload.Console = lambda *a, **k: console  # type: ignore[assignment]
    try:
        code = workload.main(list(args))
    finally:
        workload.Console = original  # type: ignore[assignment]
    return code, out.getvalue()


def test_all_answers_right_exit_0_with_percentiles(web_url: str, tmp_path: Path) -> None:
    make_files(tmp_path, {f"clip{i}.mp4": f"people=person{i}" for i in range(6)})
    code, out = run_main("--http", web_url, "--concurrency", "6", "--requests", "12", str(tmp_path))
    assert code == 0, out
    assert "12 request(s)" in out and "12 ok, 0 failed" in out
    assert re.search(r"latency: p50 \d+\.\d\d s, p95 \d+\.\d\d s, max \d+\.\d\d s", out), out


def test_mapping_checks_people_and_wrong_answers_fail(web_url: str, tmp_path: Path) -> None:
    make_files(tmp_path, {"a.mp4": "people=grace_hopper", "b.mp4": "people=eileen_collins", "c.mov": "people="})
    mapping = tmp_path / "mapping"
    mapping.write_text(
        "a.mp4:computer_science,senior\nb.mp4:grace_hopper,computer_science,senior\nc.mov:\n"
    )  # b is wrong on purpose
    code, out = run_main("--http", web_url, "--mapping", str(mapping), str(tmp_path / "a.mp4"),
                         str(tmp_path / "b.mp4"), str(tmp_path / "c.mov"))  # fmt: skip
    assert code == 1, out
    assert "failed b.mp4: wrong: expected grace_hopper,computer_science,senior" in out
    assert "2 ok, 1 failed; 2 checked against the mapping" in out


def test_rejected_and_unanswered_requests_are_failures(web_url: str, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video\n")
    [good] = make_files(tmp_path, {"good.jpg": "people=grace_hopper"})
    code, out = run_main("--http", web_url, str(notes), str(good))
    assert code == 1
    assert "failed notes.txt: HTTP 415: error: notes.txt is not an image or video" in out
    assert "1 ok, 1 failed" in out
    code, out = run_main("--http", "http://127.0.0.1:9/", str(good))  # nothing listens on port 9
    assert code == 1 and "request failed" in out


def test_send_files_keeps_answers_apart(web_url: str, tmp_path: Path) -> None:
    files = make_files(tmp_path, {f"same{i}.jpg": f"people=p{i}" for i in range(4)})
    summary = send_files(web_url, files, concurrency=8, total=16, console=Console(file=io.StringIO()))
    assert not summary.failures
    assert sorted(o.body for o in summary.outcomes) == sorted(f"same{i % 4}:p{i % 4}" for i in range(16))


def test_judge() -> None:
    path = Path("clip.mp4")
    assert judge(HttpOutcome(path, 200, 1.0, "clip:a,b"), None).failure is None
    assert "not for 'clip'" in judge(HttpOutcome(path, 200, 1.0, "other:a"), None).failure
    assert judge(HttpOutcome(path, 202, 1.0, "pending: ...\n"), None).failure == "HTTP 202: pending: ..."
    assert "unreadable JSON" in judge(HttpOutcome(path, 200, 1.0, "clip:a"), {}).failure


def test_photos_posted_to_classify_are_judged_by_their_top_label(web_url: str, tmp_path: Path) -> None:
    make_files(tmp_path, {
        "chelsea.png": "labels=a cat having a striped coat;tabby cat",
        "coffee.jpg": "labels=espresso;tea cup",
        "camera.png": "labels=binoculars;tripod",
        "clip.mp4": "people=grace_hopper",  # not a photo: left out of the folder
    })  # fmt: skip
    mapping = tmp_path / "mapping"
    mapping.write_text("chelsea.png:tabby|tiger cat|Egyptian cat\ncoffee.jpg:espresso\ncamera.png:tripod\n")
    code, out = run_main("--http", web_url + "classify", "--mapping", str(mapping), str(tmp_path))
    assert code == 1, out
    assert "posting 3 request(s) from 3 file(s)" in out
    assert "failed camera.png: wrong: expected tripod, got binoculars (0.50) (top label 'binoculars' is not" in out
    assert "2 ok, 1 failed; 2 checked against the mapping" in out
    code, out = run_main("--http", web_url + "classify", str(tmp_path / "coffee.jpg"), "--images")
    assert (code, "1 ok, 0 failed" in out) == (0, True), out


def test_an_image_mapping_needs_the_classify_url(web_url: str, tmp_path: Path, capsys) -> None:
    make_files(tmp_path, {"coffee.jpg": "labels=espresso"})
    mapping = tmp_path / "mapping"
    mapping.write_text("coffee.jpg:espresso|tea cup\n")
    code, _ = run_main("--http", web_url, "--mapping", str(mapping), str(tmp_path))
    assert code == 2
    assert "lists images (image:label lines): post them to a URL ending in /classify" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        workload.main(["--http", web_url, "--images"])


def test_judge_a_classification() -> None:
    mapping = {"cat.jpg": parse_image_mapping("cat.jpg:tabby cat|Egyptian Mau\n")[0]}
    labels = [{"rank": 1, "label": "Egyptian Mau", "score": 0.4}, {"rank": 2, "label": "tabby cat", "score": 0.3}]
    answer = json.dumps({"stem": "cat", "key": "web/x/cat.jpg", "labels": labels})
    outcome = judge(HttpOutcome(Path("cat.jpg"), 200, 1.0, answer), mapping)
    assert (outcome.failure, outcome.checked) == (None, True)
    assert "unreadable JSON" in judge(HttpOutcome(Path("cat.jpg"), 200, 1.0, '{"stem": "cat"}'), mapping).failure
    assert is_classify_url("http://h:8000/classify") and is_classify_url("http://h/x/classify/?a=1")
    assert not is_classify_url("http://h:8000/") and not is_classify_url("http://classify/")


def test_http_options_need_http() -> None:
    with pytest.raises(SystemExit):
        workload.main(["--requests", "3"])


def test_the_token_is_sent_when_web_token_is_set(s3, tmp_path: Path, monkeypatch) -> None:
    make_files(tmp_path, {"clip.mp4": "people=grace_hopper"})
    with serving(s3, WebSettings(result_timeout_s=10, poll_s=0.01, token="tok3n")) as url:
        monkeypatch.delenv("WEB_TOKEN", raising=False)
        code, out = run_main("--http", url, str(tmp_path))
        assert code == 1 and "HTTP 401" in out, out
        monkeypatch.setenv("WEB_TOKEN", "tok3n")
        code, out = run_main("--http", url, str(tmp_path))
        assert code == 0 and "1 ok, 0 failed" in out, out
