"""workload.py: collecting media, clearing buckets, concurrent uploads, errors a user can act on;
photos for image classification (--images) and the built-in photo sample."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from pathlib import Path

import boto3
import pytest
from PIL import Image
from rich.console import Console

import facepipe_tools.sample
from facepipe.settings import Settings
from facepipe_tools import workload
from facepipe_tools.workload import WorkloadError, clear_bucket, collect_media, upload_files

REPO = Path(__file__).resolve().parents[2]


def quiet() -> Console:
    return Console(file=io.StringIO(), width=120)


def make_tree(root: Path) -> None:
    for rel, data in {
        "b.mp4": b"bb",
        "a.MOV": b"a",
        "notes.txt": b"text",
        "deep/er/c.webm": b"ccc",
        "deep/photo.jpg": b"j",
        "deep/readme.md": b"#",
        "other/a.MOV": b"A2",
    }.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_collects_media_recursively_sorted(tmp_path):
    make_tree(tmp_path)
    found = collect_media([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.MOV", "b.mp4", "deep/er/c.webm", "deep/photo.jpg", "other/a.MOV",
    ]


def test_named_files_are_taken_as_is_and_repeats_dropped(tmp_path):
    make_tree(tmp_path)
    found = collect_media([tmp_path / "notes.txt", tmp_path / "b.mp4", tmp_path, tmp_path / "deep"])
    assert tmp_path / "notes.txt" in found
    assert len(found) == len(set(found)) == 6


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(WorkloadError, match="no such file or folder: .*nope"):
        collect_media([tmp_path, tmp_path / "nope"])


def test_clear_bucket_deletes_everything_in_batches(s3, monkeypatch):
    monkeypatch.setattr(workload, "DELETE_BATCH", 3)
    for index in range(8):
        s3.put_object(Bucket="input", Key=f"k{index}/with space ü.mp4", Body=b"x")
    calls = []
    real = s3.delete_objects
    monkeypatch.setattr(s3, "delete_objects", lambda **kw: calls.append(kw) or real(**kw), raising=False)
    assert clear_bucket(s3, "input") == 8
    assert [len(c["Delete"]["Objects"]) for c in calls] == [3, 3, 2]
    assert s3.list_objects_v2(Bucket="input")["KeyCount"] == 0
    assert clear_bucket(s3, "input") == 0


def test_uploads_concurrently_with_file_name_keys(s3, tmp_path, monkeypatch):
    make_tree(tmp_path)
    files = collect_media([tmp_path])
    active, peak, lock = [0], [0], threading.Lock()
    real = s3.upload_file

    def counting_upload(*args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            threading.Event().wait(0.05)
            return real(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(s3, "upload_file", counting_upload, raising=False)
    summary = upload_files(s3, "input", files, concurrency=3, console=quiet())
    assert (summary.files, summary.failures) == (5, [])
    assert summary.bytes == sum(p.stat().st_size for p in files)
    keys = {o["Key"]: o for o in s3.list_objects_v2(Bucket="input")["Contents"]}
    assert sorted(keys) == ["a.MOV", "b.mp4", "c.webm", "photo.jpg"]
    assert s3.get_object(Bucket="input", Key="a.MOV")["Body"].read() == b"A2"
    assert s3.head_object(Bucket="input", Key="c.webm")["ContentType"] == "video/webm"
    assert 1 < peak[0] <= 3


def test_upload_failures_are_reported_not_raised(s3, tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"a")
    summary = upload_files(s3, "no-such-bucket", [tmp_path / "a.mp4"], console=quiet())
    assert summary.files == 0
    assert [path.name for path, _ in summary.failures] == ["a.mp4"]
    assert "NoSuchBucket" in summary.failures[0][1]


def test_run_clears_then_uploads(s3, tmp_path):
    make_tree(tmp_path / "videos")
    s3.put_object(Bucket="input", Key="old.mp4", Body=b"o")
    s3.put_object(Bucket="output", Key="old.csv", Body=b"o")
    console = quiet()
    settings = Settings(input_bucket="input", output_bucket="output")
    assert workload.run(settings, [tmp_path / "videos"], keep=False, concurrency=4, console=console) == 0
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket="input")["Contents"]) == [
        "a.MOV", "b.mp4", "c.webm", "photo.jpg",
    ]
    assert s3.list_objects_v2(Bucket="output")["KeyCount"] == 0
    output = console.file.getvalue()
    assert "cleared 1 object(s) from 'input'" in output
    assert "uploaded 5 file(s)" in output and "note: 1 file name(s) occur more than once" in output


def test_keep_leaves_the_buckets_alone(s3, tmp_path):
    (tmp_path / "new.mp4").write_bytes(b"n")
    s3.put_object(Bucket="input", Key="old.mp4", Body=b"o")
    s3.put_object(Bucket="output", Key="old.csv", Body=b"o")
    settings = Settings(input_bucket="input", output_bucket="output")
    assert workload.run(settings, [tmp_path], keep=True, concurrency=2, console=quiet()) == 0
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket="input")["Contents"]) == ["new.mp4", "old.mp4"]
    assert s3.list_objects_v2(Bucket="output")["KeyCount"] == 1


def test_no_path_uses_the_built_in_sample(s3, tmp_path, monkeypatch):
    built = []

    def fake_build_sample(out_dir: Path) -> list[Path]:
        built.append(out_dir)
        out_dir = tmp_path / "sample"
        out_dir.mkdir()
        (out_dir / "sample_a.mp4").write_bytes(b"a")
        return [out_dir / "sample_a.mp4"]

    monkeypatch.setattr(facepipe_tools.sample, "build_sample", fake_build_sample)
    settings = Settings(input_bucket="input", output_bucket="output")
    assert workload.run(settings, [], keep=False, concurrency=2, console=quiet()) == 0
    assert built == [REPO / "build" / "sample"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="input")["Contents"]] == ["sample_a.mp4"]


def test_sample_build_failure_is_a_clear_error(s3, monkeypatch):
    def broken(out_dir):
        raise RuntimeError("ffmpeg is not installed")

    monkeypatch.setattr(facepipe_tools.sample, "build_sample", broken)
    with pytest.raises(WorkloadError, match="could not build the built-in sample: ffmpeg is not installed"):
        workload.run(Settings(), [], keep=False, concurrency=1, console=quiet())


def test_missing_bucket_and_empty_folder(s3, tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"a")
    with pytest.raises(WorkloadError, match="bucket 'nope' does not exist"):
        workload.run(Settings(input_bucket="nope"), [tmp_path], keep=False, concurrency=1, console=quiet())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WorkloadError, match="no media files found"):
        workload.run(Settings(), [empty], keep=False, concurrency=1, console=quiet())


def run_script(tmp_path: Path, *args: str, endpoint: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/bin:/bin",
        "FACEPIPE_ENV_FILE": str(tmp_path / "none.env"),
        "SECRETS_DIR": str(tmp_path),
        "S3_ENDPOINT_URL": endpoint,
        "S3_ACCESS_KEY_ID": "testing",
        "S3_SECRET_ACCESS_KEY": "testing",
    }
    return subprocess.run(
        [sys.executable, str(REPO / "workload" / "workload.py"), *args],
        env=env, capture_output=True, text=True, timeout=120,
    )


def test_script_errors_are_one_clear_line(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"a")
    missing = run_script(tmp_path, str(tmp_path / "nope"), endpoint="http://127.0.0.1:1")
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: no such file or folder: {tmp_path / 'nope'}"
    unreachable = run_script(tmp_path, str(tmp_path), endpoint="http://127.0.0.1:1")
    assert unreachable.returncode == 2
    assert "cannot reach the S3 endpoint http://127.0.0.1:1" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr


def test_script_uploads_to_a_server(tmp_path, moto_endpoint):
    client = boto3.client(
        "s3", endpoint_url=moto_endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
        region_name="us-east-1",
    )  # fmt: skip
    client.create_bucket(Bucket="input")
    client.create_bucket(Bucket="output")
    make_tree(tmp_path / "v")
    result = run_script(tmp_path, str(tmp_path / "v"), "--concurrency", "2", endpoint=moto_endpoint)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="input")["Contents"])
    assert result.returncode == 0, result.stderr
    assert "uploaded 5 file(s)" in result.stdout
    assert keys == ["a.MOV", "b.mp4", "c.webm", "photo.jpg"]


# ------------------------------------------------------------------------------ --images


@pytest.fixture
def image_buckets(s3):
    s3.create_bucket(Bucket="images-input")
    s3.create_bucket(Bucket="images-output")
    return s3


def keys_in(s3, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_images_go_to_the_image_buckets(image_buckets, tmp_path):
    s3 = image_buckets
    make_tree(tmp_path / "media")
    (tmp_path / "media" / "anim.gif").write_bytes(b"GIF89a")
    s3.put_object(Bucket="images-input", Key="old.jpg", Body=b"o")
    s3.put_object(Bucket="images-output", Key="old.csv", Body=b"o")
    s3.put_object(Bucket="input", Key="video.mp4", Body=b"v")
    console = quiet()
    settings = Settings(input_bucket="input", output_bucket="output")
    assert workload.run(settings, [tmp_path / "media"], keep=False, concurrency=2, console=console, images=True) == 0
    assert keys_in(s3, "images-input") == ["anim.gif", "photo.jpg"]  # folders give only their photos
    assert keys_in(s3, "images-output") == []
    assert keys_in(s3, "input") == ["video.mp4"]  # the face buckets are left alone
    assert s3.head_object(Bucket="images-input", Key="photo.jpg")["ContentType"] == "image/jpeg"
    output = console.file.getvalue()
    assert "cleared 1 object(s) from 'images-input'" in output and "to 'images-input'" in output
    with pytest.raises(WorkloadError, match="no image files found"):
        workload.run(settings, [tmp_path / "media" / "deep" / "er"], keep=True, concurrency=1, console=quiet(),
                     images=True)  # fmt: skip


def test_no_path_with_images_uses_the_built_in_photos(image_buckets, tmp_path, monkeypatch):
    built = []

    def fake_build(out_dir: Path) -> list[Path]:
        built.append(out_dir)
        (tmp_path / "cat.png").write_bytes(b"c")
        return [tmp_path / "cat.png"]

    monkeypatch.setattr(facepipe_tools.sample, "build_image_sample", fake_build)
    assert workload.run(Settings(), [], keep=False, concurrency=1, console=quiet(), images=True) == 0
    assert built == [REPO / "build" / "sample_images"]
    assert keys_in(image_buckets, "images-input") == ["cat.png"]


def test_the_built_in_photos_cover_every_still_format(tmp_path):
    paths = facepipe_tools.sample.build_image_sample(tmp_path)
    formats = {}
    for path in paths:
        with Image.open(path) as image:
            formats[path.name] = (image.format, image.mode, image.getexif().get(0x0112))
    assert formats == {
        "chelsea.png": ("PNG", "RGB", 1),  # as shipped, with orientation 1 (upright)
        "coffee.jpg": ("JPEG", "RGB", None),
        "camera.png": ("PNG", "L", None),
        "motorcycle.webp": ("WEBP", "RGB", None),
        "rocket.bmp": ("BMP", "RGB", None),
        "coffee_palette.gif": ("GIF", "P", None),
        "grace_hopper_rotated.jpg": ("JPEG", "RGB", 6),
    }
    made = {path: path.stat().st_mtime_ns for path in paths}
    assert facepipe_tools.sample.build_image_sample(tmp_path) == paths  # made once, then reused
    assert {path: path.stat().st_mtime_ns for path in paths} == made
    assert not list(tmp_path.glob(".partial-*"))
