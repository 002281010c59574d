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


def test_keyframe_sampling_takes_the_first_frame_and_each_cut(sample_dir: Path) -> None:
    frames = frames_of(sample_dir / "sample_hopper.mp4", keyframes_only=True)
    assert [f.time_s for f in frames] == [0.0]
    assert frames[0].image.shape == (600, 512, 3)
    assert frames[0].image.flags["C_CONTIGUOUS"]
    late = frames_of(sample_dir / "sample_collins_late.webm", keyframes_only=True)
    assert [f.time_s for f in late] == [0.0, 1.5]  # the encoder put a keyframe at the cut


def test_interval_sampling_takes_one_frame_per_second(sample_dir: Path) -> None:
    frames = frames_of(sample_dir / "sample_hopper.mp4")
    assert [f.index for f in frames] == [0, 1]
    assert [f.time_s for f in frames] == [0.0, 1.0]
    assert frames[0].image.shape == (600, 512, 3)
    assert frames[0].image.flags["C_CONTIGUOUS"]


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
        assert len(frames_of(sample_dir / name)) >= 1, name


def test_large_frames_are_scaled_down(sample_dir: Path) -> None:
    assert max(frames_of(sample_dir / "sample_hopper_small.mkv")[0].image.shape[:2]) == 1280
    big = sample_dir.parent / "big.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=2560x1440:rate=5", "-t", "1", "-pix_fmt", "yuv420p", str(big))
    assert frames_of(big)[0].image.shape == (720, 1280, 3)


def test_long_video_work_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "long.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=5", "-t", "120", "-g", "25", str(path))
    # Evenly over the two minutes; keyframes (every 5 s) at least the interval apart.
    assert [f.time_s for f in frames_of(path, interval_s=1.0, max_frames=4)] == [0, 30, 60, 90]
    assert [f.time_s for f in frames_of(path, interval_s=1.0, max_frames=4, keyframes_only=True)] == [0, 5, 10, 15]
    assert [f.time_s for f in frames_of(path, interval_s=12.0, max_frames=3, keyframes_only=True)] == [0, 15, 30]


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


def test_mp4_truncated_after_its_index_is_answered_from_what_is_left(tmp_path: Path, sample_dir: Path) -> None:
    whole = tmp_path / "faststart.mp4"
    _ffmpeg("-i", str(sample_dir / "sample_hopper.mp4"), "-c", "copy", "-movflags", "+faststart", str(whole))
    data = whole.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[:-100])  # the last frames (the first is 62 KB of the 64)
    cut = sample_frames(path)
    assert [f.time_s for f in cut] == [0.0, 1.0]
    assert cut.damage is not None and "ends after" in cut.damage and cut.damage.endswith("; 2 frames used")
    sound = sample_frames(whole)
    assert len(list(sound)) == 2 and sound.damage is None  # the whole file is fine
    path.write_bytes(data[: len(data) // 2])  # half of the first frame: nothing usable
    with pytest.raises(MediaError, match="truncated") as info:
        frames_of(path)
    assert info.value.kind == "unreadable"


def test_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "song.mp4"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(path))
    with pytest.raises(MediaError) as info:
        frames_of(path)
    assert info.value.kind == "no_video_stream"


def test_slow_decode_stops_at_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The frames it keeps would reach the memory guard first on a slow machine: time alone here.
    monkeypatch.setattr(media, "MAX_DECODE_GROWTH_BYTES", 1 << 40)
    path = tmp_path / "slow.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=1280x720:rate=30", "-t", "20", "-pix_fmt", "yuv420p",
            "-preset", "ultrafast", str(path))  # fmt: skip
    started = time.monotonic()
    with pytest.raises(MediaError) as info:
        frames_of(path, interval_s=0.01, max_frames=10_000, timeout_s=0.3, keyframes_only=False)
    assert info.value.kind == "timeout"
    assert time.monotonic() - started < 5


def test_huge_video_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_dir) -> None:
    monkeypatch.setattr(media, "MAX_VIDEO_PIXELS", 1000)
    with pytest.raises(MediaError) as info:
        frames_of(sample_dir / "sample_hopper.mp4")
    assert info.value.kind == "too_large"


def test_huge_image_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_dir: Path) -> None:
    monkeypatch.setattr(media, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(MediaError) as info:
        frames_of(sample_dir / "sample_hopper_photo.jpg")
    assert info.value.kind == "too_large"


def test_no_leftovers(tmp_path: Path, sample_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00garbage" * 1000)
    frames_of(sample_dir / "sample_collins.mp4")  # warm up the libraries before counting
    open_files = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        frames_of(sample_dir / "sample_collins.mp4")
        generator = sample_frames(sample_dir / "sample_collins_late.webm", keyframes_only=False)
        next(generator)
        generator.close()  # stopped early: the file must still be closed
        with pytest.raises(MediaError):
            frames_of(garbage)
    assert len(os.listdir("/proc/self/fd")) == open_files
    assert list(private_tmp.iterdir()) == []
