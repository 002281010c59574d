import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from facepipe import media
from facepipe.media import MediaError, sample_frames


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def frames_of(path: Path, **kwargs) -> list[media.Frame]:
    return list(sample_frames(path, **kwargs))


def test_one_frame_per_second_from_the_start(sample_dir: Path) -> None:
    frames = frames_of(sample_dir / "sample_hopper.mp4")
    assert [f.index for f in frames] == [0, 1]
    assert [f.time_s for f in frames] == [0.0, 1.0]
    assert frames[0].image.shape == (600, 512, 3)


def test_rotation_metadata_is_honoured(sample_dir: Path) -> None:
    stored = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "stream=width,height",
         "-of", "csv=p=0", str(sample_dir / "sample_hopper_rotated.mp4")],
        capture_output=True, text=True, check=True,
    ).stdout.split(",")[:2]  # fmt: skip
    assert stored == ["600", "512"]  # stored sideways
    assert frames_of(sample_dir / "sample_hopper_rotated.mp4")[0].image.shape == (600, 512, 3)


def test_exif_orientation_of_a_still_photo_is_honoured(sample_dir: Path) -> None:
    frames = frames_of(sample_dir / "sample_hopper_photo.jpg")
    assert len(frames) == 1 and frames[0].image.shape == (600, 512, 3)


def test_other_containers_are_read(sample_dir: Path) -> None:
    for name in ("sample_collins_late.webm", "sample_hopper_small.mkv", "sample_nobody.mov"):
        assert len(frames_of(sample_dir / name)) >= 2, name


def test_large_frames_are_scaled_down(sample_dir: Path) -> None:
    assert max(frames_of(sample_dir / "sample_hopper_small.mkv")[0].image.shape[:2]) == 1280
    big = sample_dir.parent / "big.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=2560x1440:rate=5", "-t", "1", "-pix_fmt", "yuv420p", str(big))
    assert frames_of(big)[0].image.shape == (720, 1280, 3)


def test_long_video_work_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "long.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=5", "-t", "120", "-pix_fmt", "yuv420p", str(path))
    frames = frames_of(path, interval_s=1.0, max_frames=4)
    assert [f.time_s for f in frames] == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("empty.mp4", b"", "empty"),
        ("text.mp4", b"this is not a video\n" * 50, "unreadable"),
        ("random.mp4", bytes(range(256)) * 64, "unreadable"),
    ],
)
def test_unreadable_files(tmp_path: Path, name: str, content: bytes, kind: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MediaError) as info:
        frames_of(path)
    assert info.value.kind == kind


def test_truncated_mp4(tmp_path: Path, sample_dir: Path) -> None:
    data = (sample_dir / "sample_hopper.mp4").read_bytes()
    path = tmp_path / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError) as info:
        frames_of(path)
    assert info.value.kind == "unreadable"
    assert "truncated" in info.value.detail


def test_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "song.mp4"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(path))
    with pytest.raises(MediaError) as info:
        frames_of(path)
    assert info.value.kind == "no_video_stream"


def test_slow_decode_is_killed_at_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "slow.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=5", "-t", "60", "-pix_fmt", "yuv420p", str(path))
    real_command = media._ffmpeg_command

    def realtime_command(*args):  # -re: ffmpeg reads the input no faster than it plays
        command = real_command(*args)
        return [command[0], "-re", *command[1:]]

    monkeypatch.setattr(media, "_ffmpeg_command", realtime_command)
    started = time.monotonic()
    with pytest.raises(MediaError) as info:
        frames_of(path, interval_s=1.0, max_frames=60, timeout_s=1.0)
    assert info.value.kind == "timeout"
    assert time.monotonic() - started < 10


def test_huge_image_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_dir: Path) -> None:
    monkeypatch.setattr(media, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(MediaError) as info:
        frames_of(sample_dir / "sample_hopper_photo.jpg")
    assert info.value.kind == "too_large"


def test_no_ffmpeg_leftovers(tmp_path: Path, sample_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    for _ in range(3):
        frames_of(sample_dir / "sample_collins.mp4")
        generator = sample_frames(sample_dir / "sample_collins_late.webm")
        next(generator)
        generator.close()  # stop early: ffmpeg must still be reaped
    assert list(private_tmp.iterdir()) == []
    children = subprocess.run(["pgrep", "-P", str(os.getpid()), "ffmpeg"], capture_output=True)
    assert children.stdout == b""
