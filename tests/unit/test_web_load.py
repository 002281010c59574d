"""workload.py --http: the load generator against a real HTTP server (the web tier over
HTTP, on moto S3 with the fake pipeline of tests/unit/webfake.py)."""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from werkzeug.serving import make_server

from facepipe.settings import Settings
from facepipe.web.app import create_app
from facepipe.web.settings import WebSettings
from facepipe_tools import workload
from facepipe_tools.workload import HttpOutcome, judge, send_files
from tests.unit.webfake import FakePipeline, media


@pytest.fixture
def web_url(s3) -> Iterator[str]:
    """The web tier over real HTTP (werkzeug's threaded server, which stops cleanly)."""
    app = create_app(Settings(), WebSettings(result_timeout_s=10, poll_s=0.01), s3=s3)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    with FakePipeline(s3, delay_s=0.05):
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}/"
        finally:
            server.shutdown()
            thread.join(timeout=5)


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


def test_http_options_need_http() -> None:
    with pytest.raises(SystemExit):
        workload.main(["--requests", "3"])
