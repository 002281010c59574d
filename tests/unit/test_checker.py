"""check.py: every mismatch reported, waiting, stale results, latency, JSON summary, exit codes;
image mappings checked against the image buckets."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from facepipe import answers
from facepipe.answers import Label, Student, render_csv, render_error, render_labels_csv
from facepipe.settings import Settings
from facepipe_tools import checker
from facepipe_tools.checker import CheckError, check, summarize, summary_line
from facepipe_tools.mapping import IMAGES, parse_image_mapping, parse_mapping

REPO = Path(__file__).resolve().parents[2]
SETTINGS = Settings(
    s3_access_key_id="testing", s3_secret_access_key="testing", input_bucket="input", output_bucket="output"
)
MAPPING = """\
ok.mp4:computer_science,sophomore
named.mp4:vin_diesel,computer_science,sophomore
wrong.mp4:computer_science,sophomore
extra.mp4:computer_science,sophomore
err.mp4:lawyer,freshmen
missing.mp4:lawyer,freshmen
nobody.mov:
"""
VIN = Student("vin_diesel", "computer_science", "sophomore")
BEAN = Student("mr_bean", "lawyer", "freshmen")


def put_inputs(s3, *names: str) -> None:
    for name in names:
        s3.put_object(Bucket="input", Key=name, Body=b"video")


def put_results(s3) -> None:
    s3.put_object(Bucket="output", Key="ok.csv", Body=render_csv([VIN]).encode())
    s3.put_object(Bucket="output", Key="named.csv", Body=render_csv([VIN]).encode())
    s3.put_object(Bucket="output", Key="wrong.csv", Body=render_csv([BEAN]).encode())
    s3.put_object(Bucket="output", Key="extra.csv", Body=render_csv([VIN, BEAN]).encode())
    error = render_error("err.mp4", "unreadable_media", "no video")
    s3.put_object(Bucket="output", Key="err.error.json", Body=error.encode())
    s3.put_object(Bucket="output", Key="nobody.csv", Body=render_csv([]).encode())


def test_reports_every_kind_of_mismatch(s3):
    put_inputs(s3, "ok.mp4", "named.mp4", "wrong.mp4", "extra.mp4", "err.mp4", "missing.mp4", "nobody.mov")
    put_results(s3)
    rows = check(SETTINGS, parse_mapping(MAPPING), s3=s3)
    by_video = {row.video: row for row in rows}
    assert [row.video for row in rows] == [e.video for e in parse_mapping(MAPPING)]
    assert {v: r.status for v, r in by_video.items()} == {
        "ok.mp4": "ok",
        "named.mp4": "ok",
        "wrong.mp4": "wrong",
        "extra.mp4": "wrong",
        "err.mp4": "error",
        "missing.mp4": "missing",
        "nobody.mov": "ok",
    }
    assert by_video["wrong.mp4"].got == "mr_bean,lawyer,freshmen"
    assert by_video["extra.mp4"].detail == "expected 1 row(s), got 2"
    assert by_video["err.mp4"].detail == "unreadable_media: no video"
    assert by_video["missing.mp4"].detail == "no result yet"
    assert by_video["nobody.mov"].got == "(nobody)"
    assert by_video["ok.mp4"].latency_s is not None and by_video["ok.mp4"].latency_s >= 0
    summary = summarize(rows)
    assert summary_line(summary) == "3/7 correct (2 wrong, 1 missing, 1 errors)"
    assert not summary["all_correct"]


def test_waits_until_every_video_is_answered(s3):
    entries = parse_mapping("a.mp4:lawyer,freshmen\nb.mp4:lawyer,freshmen\n")
    put_inputs(s3, "a.mp4", "b.mp4")
    s3.put_object(Bucket="output", Key="a.csv", Body=render_csv([BEAN]).encode())
    polls = []

    def late_result():
        time.sleep(0.3)
        s3.put_object(Bucket="output", Key="b.csv", Body=render_csv([BEAN]).encode())

    writer = threading.Thread(target=late_result)
    writer.start()
    started = time.monotonic()
    rows = check(SETTINGS, entries, wait_s=10, poll_s=0.05, s3=s3, on_poll=lambda *a: polls.append(a))
    writer.join()
    assert time.monotonic() - started < 5
    assert [row.status for row in rows] == ["ok", "ok"]
    assert polls[0][:2] == (1, 2) and polls[-1][:2] == (2, 2)


def test_gives_up_when_the_time_is_up(s3):
    put_inputs(s3, "a.mp4")
    started = time.monotonic()
    rows = check(SETTINGS, parse_mapping("a.mp4:x,y\n"), wait_s=0.3, poll_s=0.05, s3=s3)
    assert 0.3 <= time.monotonic() - started < 3
    assert rows[0].status == "missing"


def test_missing_bucket_is_a_check_error(s3):
    with pytest.raises(CheckError, match="bucket 'nope' does not exist"):
        check(Settings(input_bucket="nope", output_bucket="output"), parse_mapping("a.mp4:x,y\n"), s3=s3)


class Reader:
    def __init__(self, texts: dict[str, str], source_etags: dict[str, str] | None = None):
        self.texts = texts
        self.source_etags = source_etags or {}

    def head(self, answer: answers.StoredAnswer) -> answers.StoredAnswer:
        return answers.StoredAnswer(answer.key, answer.modified, answer.etag, self.source_etags.get(answer.key))

    def read(self, answer: answers.StoredAnswer) -> answers.AnswerBody:
        return answers.parse(answer, self.texts[answer.key])


def evaluate(entry, inputs: dict, outputs: dict, reader: Reader):
    """The checker's evaluate on output listings given as {key: listing entry}."""
    return checker.evaluate(entry, inputs, answers.index(outputs.values()), reader)


def test_a_result_older_than_its_video_does_not_count():
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    (entry,) = parse_mapping("a.mp4:lawyer,freshmen\n")
    inputs = {"a.mp4": {"Key": "a.mp4", "LastModified": now}}
    old = {"a.csv": {"Key": "a.csv", "LastModified": now - timedelta(seconds=3)}}
    reader = Reader({"a.csv": render_csv([BEAN])})
    row = evaluate(entry, inputs, old, reader)
    assert (row.status, row.detail) == ("missing", "only a result older than the uploaded video")
    fresh = {"a.csv": {"Key": "a.csv", "LastModified": now + timedelta(seconds=1.5)}}
    row = evaluate(entry, inputs, fresh, reader)
    assert (row.status, row.latency_s) == ("ok", 1.5)


def test_an_identical_reupload_keeps_its_earlier_answer():
    """The same bytes uploaded again (CSE546's test_case_1 clips are in test_case_2 too): the
    function answers from the stored result, whose metadata names the upload's ETag."""
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    (entry,) = parse_mapping("a.mp4:lawyer,freshmen\n")
    inputs = {"a.mp4": {"Key": "a.mp4", "LastModified": now, "ETag": '"e1"'}}
    old = {"a.csv": {"Key": "a.csv", "LastModified": now - timedelta(seconds=3)}}
    row = evaluate(entry, inputs, old, Reader({"a.csv": render_csv([BEAN])}, {"a.csv": "e1"}))
    assert row.status == "ok"
    row = evaluate(entry, inputs, old, Reader({"a.csv": render_csv([BEAN])}, {"a.csv": "e0"}))
    assert (row.status, row.detail) == ("missing", "only a result older than the uploaded video")


def test_the_newer_of_result_and_error_record_wins():
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    (entry,) = parse_mapping("a.mp4:lawyer,freshmen\n")
    inputs = {"a.mp4": {"Key": "a.mp4", "LastModified": now}}
    reader = Reader({"a.csv": render_csv([BEAN]), "a.error.json": render_error("a.mp4", "boom", "")})
    outputs = {
        "a.csv": {"Key": "a.csv", "LastModified": now + timedelta(seconds=2)},
        "a.error.json": {"Key": "a.error.json", "LastModified": now + timedelta(seconds=1)},
    }
    assert evaluate(entry, inputs, outputs, reader).status == "ok"
    outputs["a.error.json"]["LastModified"] = now + timedelta(seconds=3)
    row = evaluate(entry, inputs, outputs, reader)
    assert (row.status, row.detail) == ("error", "boom")


def test_unreadable_result_and_not_uploaded_video():
    (entry,) = parse_mapping("a.mp4:lawyer,freshmen\n")
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    outputs = {"a.csv": {"Key": "a.csv", "LastModified": now}}
    row = evaluate(entry, {}, outputs, Reader({"a.csv": "garbage\n"}))
    assert row.status == "error" and "header" in row.detail and row.latency_s is None
    assert evaluate(entry, {}, {}, Reader({})).detail == "video not in the input bucket"


def test_summary_latency_statistics():
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    rows = [
        checker.Row("v", "", "", "ok", latency_s=float(i), uploaded_at=now, answered_at=now + timedelta(seconds=i))
        for i in range(1, 21)
    ]
    summary = summarize(rows, waited_s=1.23456)
    assert summary["latency_s"] == {"count": 20, "min": 1.0, "median": 10.5, "mean": 10.5, "p95": 19.05, "max": 20.0}
    assert summary["span_s"] == 20.0 and summary["waited_s"] == 1.235
    assert summary["all_correct"] and json.dumps(summary)


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "FACEPIPE_ENV_FILE": str(tmp_path / "none.env"),
        "SECRETS_DIR": str(tmp_path),
        "S3_ACCESS_KEY_ID": "testing",
        "S3_SECRET_ACCESS_KEY": "testing",
        "INPUT_BUCKET": "input",
        "OUTPUT_BUCKET": "output",
        **extra,
    }


def test_main_exit_codes_table_and_json(s3, tmp_path, monkeypatch, capsys):
    for name, value in env_for(tmp_path).items():
        monkeypatch.setenv(name, value)
    put_inputs(s3, "ok.mp4", "named.mp4", "wrong.mp4", "extra.mp4", "err.mp4", "missing.mp4", "nobody.mov")
    put_results(s3)
    mapping = tmp_path / "mapping"
    mapping.write_text(MAPPING)
    summary_file = tmp_path / "summary.json"
    assert checker.main(["--mapping", str(mapping), "--json", str(summary_file)]) == 1
    out = capsys.readouterr().out
    assert "3/7 correct (2 wrong, 1 missing, 1 errors)" in out
    for text in ("wrong.mp4", "mr_bean,lawyer,freshmen", "missing: no result yet", "error: unreadable_media"):
        assert text in out
    summary = json.loads(summary_file.read_text())
    assert (summary["correct"], summary["wrong"], summary["missing"], summary["errors"]) == (3, 2, 1, 1)
    assert {e["video"]: e["status"] for e in summary["entries"]}["err.mp4"] == "error"

    mapping.write_text("ok.mp4:computer_science,sophomore\nnobody.mov:\n")
    assert checker.main(["--mapping", str(mapping), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["all_correct"] is True
    assert "2/2 correct (0 wrong, 0 missing, 0 errors)" in captured.err


@pytest.mark.parametrize(
    ("mapping_text", "message"),
    [(None, "mapping file not found"), ("a.mp4:x\n", "line 1"), ("# nothing\n", "no entries")],
)
def test_main_usage_errors(tmp_path, monkeypatch, capsys, mapping_text, message):
    monkeypatch.setenv("FACEPIPE_ENV_FILE", str(tmp_path / "none.env"))
    mapping = tmp_path / "mapping"
    if mapping_text is not None:
        mapping.write_text(mapping_text)
    assert checker.main(["--mapping", str(mapping)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_script_against_an_unreachable_endpoint(tmp_path):
    mapping = tmp_path / "mapping"
    mapping.write_text("a.mp4:x,y\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "checker" / "check.py"), "--mapping", str(mapping)],
        env=env_for(tmp_path, S3_ENDPOINT_URL="http://127.0.0.1:1"), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "cannot read the buckets at http://127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------ image mappings

IMAGE_MAPPING = """\
chelsea.png:tabby|tiger cat|Egyptian cat
coffee.jpg:espresso
camera.png:tripod
bad.gif:espresso
missing.webp:moped
"""


def labels_csv(*names: str) -> bytes:
    return render_labels_csv([Label(rank, name, round(0.5 / rank, 4)) for rank, name in enumerate(names, 1)]).encode()


def put_image_answers(s3) -> None:
    s3.create_bucket(Bucket="images-input")
    s3.create_bucket(Bucket="images-output")
    for name in ("chelsea.png", "coffee.jpg", "camera.png", "bad.gif", "missing.webp"):
        s3.put_object(Bucket="images-input", Key=name, Body=b"photo")
    s3.put_object(Bucket="images-output", Key="chelsea.csv", Body=labels_csv("Egyptian Mau", "tabby cat"))
    s3.put_object(Bucket="images-output", Key="coffee.csv", Body=labels_csv("espresso", "tea cup"))
    s3.put_object(Bucket="images-output", Key="camera.csv", Body=labels_csv("binoculars", "tripod"))
    error = render_error("bad.gif", "unreadable", "not a GIF image that can be decoded")
    s3.put_object(Bucket="images-output", Key="bad.error.json", Body=error.encode())
    # A face result of the same name in the face buckets is not looked at.
    s3.put_object(Bucket="output", Key="missing.csv", Body=render_csv([VIN]).encode())


def test_image_mapping_is_checked_against_the_top_label_in_the_image_buckets(s3):
    put_image_answers(s3)
    rows = check(SETTINGS, parse_image_mapping(IMAGE_MAPPING), s3=s3)
    by_image = {row.video: row for row in rows}
    assert {image: row.status for image, row in by_image.items()} == {
        "chelsea.png": "ok",
        "coffee.jpg": "ok",
        "camera.png": "wrong",
        "bad.gif": "error",
        "missing.webp": "missing",
    }
    assert by_image["chelsea.png"].got == "Egyptian Mau (0.50)"
    assert by_image["camera.png"].detail == "top label 'binoculars' is not 'tripod'"
    assert by_image["bad.gif"].detail == "unreadable: not a GIF image that can be decoded"
    assert by_image["missing.webp"].detail == "no result yet"
    summary = summarize(rows, kind=IMAGES)
    assert summary_line(summary) == "2/5 correct (1 wrong, 1 missing, 1 errors)"
    assert summary["kind"] == IMAGES and summary["entries"][0]["image"] == "chelsea.png"
    assert "video" not in summary["entries"][0]


def test_main_tells_an_image_mapping_from_its_lines(s3, tmp_path, monkeypatch, capsys):
    for name, value in env_for(tmp_path).items():
        monkeypatch.setenv(name, value)
    put_image_answers(s3)
    mapping = tmp_path / "mapping"
    mapping.write_text(IMAGE_MAPPING)
    assert checker.main(["--mapping", str(mapping)]) == 1
    out = capsys.readouterr().out
    assert "image classification results" in out and "2/5 correct" in out
    assert "top label 'binoculars' is not 'tripod'" in out
    mapping.write_text("coffee.jpg:espresso\nchelsea.png:tabby cat\n")  # no '|': photos, and no face mapping
    assert checker.main(["--mapping", str(mapping), "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert (summary["kind"], summary["correct"], summary["total"]) == (IMAGES, 1, 2)
    # --images makes even a line that reads like a face line an image line.
    mapping.write_text("coffee.jpg:espresso,tea cup\n")
    assert checker.main(["--mapping", str(mapping), "--images", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["entries"][0]["expected"] == "espresso,tea cup"
