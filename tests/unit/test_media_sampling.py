"""Sampling on time, whatever the GOP (issue #13 item 2), and truncation judged by real signals
(item 3): files made at test time with the ffmpeg CLI and checked against every frame decoded."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from facepipe import containers
from facepipe.media import Frame, MediaError, sample_frames
from facepipe_tools.sample import photo

FPS = 25
#: x264 with its default keyframe distance (250 frames, 10 s at 25 fps) and no keyframe at
#: scene cuts, so that a face shown between two keyframes stays between them.
LONG_GOP = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-x264-params", "keyint=250:scenecut=0"]
#: Where the face is put in the 320x240 picture, and its size.
FACE_AT, FACE_SIDE = (100, 60), 120


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def _all_frames(path: Path) -> list[tuple[float, np.ndarray]]:
    """Every frame, decoded from the start without skipping: (seconds from the first, RGB)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        time_base = stream.time_base
        frames = [(frame.pts, frame.to_ndarray(format="rgb24")) for frame in container.decode(stream)]
    start = frames[0][0]
    return [(float((pts - start) * time_base), image) for pts, image in frames]


def _keyframe_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        time_base = stream.time_base
        stamps = sorted(packet.pts for packet in container.demux(stream) if packet.size and packet.is_keyframe)
    return [float((stamp - stamps[0]) * time_base) for stamp in stamps]


def _shows_face(image: np.ndarray) -> bool:
    """Whether the photo is in the picture: the background is one flat grey."""
    left, top = FACE_AT
    return float(image[top : top + FACE_SIDE, left : left + FACE_SIDE].std()) > 20


def _face_clip(path: Path, seconds: float, shown: list[float], extra: list[str]) -> None:
    """A flat grey clip of `seconds` with the face photo shown for exactly 1 s (25 frames)
    from each of `shown`."""
    enable = "+".join(f"between(n,{round(t * FPS)},{round(t * FPS) + FPS - 1})" for t in shown)
    _ffmpeg(
        "-f", "lavfi", "-i", f"color=c=gray:size=320x240:rate={FPS}", "-i", str(photo("grace_hopper")),
        "-filter_complex",
        f"[1:v]scale={FACE_SIDE}:{FACE_SIDE}[face];[0:v][face]overlay={FACE_AT[0]}:{FACE_AT[1]}:enable='{enable}'",
        "-frames:v", str(round(seconds * FPS)), *LONG_GOP, *extra, str(path),
    )  # fmt: skip


def _check_guarantee(frames: list[Frame], reference: list[tuple[float, np.ndarray]], interval: float) -> None:
    """Each sample is a frame of the video, decoded exactly; the samples are in order, the first
    within one interval of the start, each next one within one interval of the last, the last
    within one interval of the end: so every stretch of one interval holds one."""
    times = [time for time, _ in reference]
    end = times[-1] + (times[-1] - times[-2])
    assert frames, "no frame"
    for frame in frames:
        index = min(range(len(times)), key=lambda i: abs(times[i] - frame.time_s))
        assert abs(times[index] - frame.time_s) < 1e-3, frame.time_s
        assert np.array_equal(frame.image, reference[index][1]), f"the frame at {frame.time_s} s differs"
    positions = [frame.time_s for frame in frames]
    assert positions == sorted(set(positions))
    assert positions[0] < interval
    assert all(b - a <= interval + 1e-3 for a, b in zip(positions, positions[1:], strict=False)), positions
    assert positions[-1] >= end - interval - 1e-3, (positions[-1], end)


# ----------------------------------------------------------------------------- GOP


@pytest.mark.parametrize("seconds", [20.0, 20.52], ids=["whole-seconds", "fraction"])
@pytest.mark.parametrize("b_frames", [3, 0], ids=["b-frames", "no-b-frames"])
def test_a_face_shown_for_one_second_between_keyframes_is_sampled(
    tmp_path: Path, seconds: float, b_frames: int
) -> None:
    shown = [0.52, 3.0, 6.96, 12.04, 18.5]  # none at a keyframe (0 s, 10 s), at several phases
    path = tmp_path / "long-gop.mp4"
    _face_clip(path, seconds, shown, ["-bf", str(b_frames)])
    assert set(_keyframe_times(path)) <= {0.0, 10.0, 20.0}
    frames = list(sample_frames(path))
    for start in shown:
        seen = [f.time_s for f in frames if start - 1e-3 <= f.time_s < start + 1 and _shows_face(f.image)]
        assert seen, f"the face shown from {start} s was not sampled: {[f.time_s for f in frames]}"
    _check_guarantee(frames, _all_frames(path), 1.0)
    # Keyframes alone (the former default) miss every one but the face shown at the start.
    keyframes = list(sample_frames(path, keyframes_only=True))
    assert not any(_shows_face(f.image) for f in keyframes)


@pytest.mark.parametrize("keyint", [250, 25, 12])
def test_samples_are_the_frames_on_screen_whatever_the_gop(tmp_path: Path, keyint: int) -> None:
    path = tmp_path / f"keyint{keyint}.mp4"
    _ffmpeg("-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={FPS}", "-t", "30.4", "-c:v", "libx264",
            "-preset", "veryfast", "-pix_fmt", "yuv420p", "-x264-params", f"keyint={keyint}", str(path))  # fmt: skip
    frames = list(sample_frames(path))
    assert len(frames) == 30  # as few as the guarantee allows: 30 for 30.4 s
    _check_guarantee(frames, _all_frames(path), 1.0)


def test_a_long_video_is_sampled_evenly_and_a_short_one_gives_a_frame(tmp_path: Path) -> None:
    long = tmp_path / "long.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-t", "90", "-c:v", "libx264",
            "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(long))  # fmt: skip
    frames = list(sample_frames(long, max_frames=30))
    assert len(frames) == 30
    _check_guarantee(frames, _all_frames(long), 3.0)
    short = tmp_path / "short.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-t", "0.5", "-c:v", "libx264", str(short))
    assert len(list(sample_frames(short))) == 1


# ----------------------------------------------------------------------------- containers


def _valid_files(folder: Path) -> dict[str, Path]:
    """ffmpeg-made files of 3.2 s in every container read here, with and without B-frames,
    with the index quirks ffmpeg writes."""
    source = ["-f", "lavfi", "-i", f"testsrc2=size=320x240:rate={FPS}", "-t", "3.2"]
    x264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    # Two frames dropped: FFmpeg's AVI muxer fills the gaps with empty chunks, so its header and
    # index count two frames more than there are to decode.
    gaps = ["-vf", r"select=not(eq(n\,10))*not(eq(n\,20))", "-fps_mode", "passthrough"]
    made = {
        "mjpeg.avi": [*source, "-c:v", "mjpeg", "-q:v", "5"],
        "mjpeg-gaps.avi": [*source, *gaps, "-c:v", "mjpeg", "-q:v", "5"],
        "mpeg4-b-frames.avi": [*source, "-c:v", "mpeg4", "-bf", "2"],
        "h264-b-frames.mp4": [*source, *x264, "-bf", "3", "-preset", "medium"],
        "h264.mp4": [*source, *x264, "-bf", "0"],
        "h264-gaps.mp4": [*source, *gaps, *x264],
        "h264-faststart.mp4": [*source, *x264, "-bf", "3", "-preset", "medium", "-movflags", "+faststart"],
        "h264-fragmented.mp4": [*source, *x264, "-bf", "3", "-preset", "medium", "-movflags",
                                "frag_keyframe+empty_moov"],
        "h264-b-frames.mov": [*source, *x264, "-bf", "3", "-preset", "medium"],
        "h264-b-frames.mkv": [*source, *x264, "-bf", "3", "-preset", "medium"],
        "h264-keyint-12.mkv": [*source, *x264, "-bf", "3", "-preset", "medium", "-g", "12"],  # seeks on Cues
        "mpeg4-keyint-12.avi": [*source, "-c:v", "mpeg4", "-g", "12"],  # seeks on idx1
        "vp9.webm": [*source, "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", "30"],
    }  # fmt: skip
    paths = {}
    for name, args in made.items():
        paths[name] = folder / name
        _ffmpeg(*args, str(paths[name]))
    live = folder / "h264-live.mkv"  # written to a pipe: sizes left open, no index
    with live.open("wb") as out:
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", *source, *x264, "-f", "matroska", "-"],
                       stdout=out, check=True)  # fmt: skip
    paths[live.name] = live
    return paths


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _valid_files(tmp_path_factory.mktemp("valid"))


def test_valid_files_are_not_truncated(valid_files: dict[str, Path]) -> None:
    for name, path in valid_files.items():
        samples = sample_frames(path)
        frames = list(samples)
        assert samples.damage is None, (name, samples.damage)
        _check_guarantee(frames, _all_frames(path), 1.0)
        with path.open("rb") as file:
            declared = containers.declared_size(file, containers.sniff(file.read(16)).name)
        assert declared in (None, path.stat().st_size), name


# ----------------------------------------------------------------------------- damage


@pytest.mark.parametrize("name", ["h264-faststart.mp4", "h264-b-frames.mkv", "mjpeg.avi"])
def test_a_truncated_file_is_answered_from_its_frames_and_says_so(
    tmp_path: Path, valid_files: dict[str, Path], name: str
) -> None:
    data = valid_files[name].read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: len(data) * 2 // 3])
    samples = sample_frames(path)
    frames = list(samples)
    assert 1 <= len(frames) <= 3
    assert samples.damage is not None and "ends after" in samples.damage, samples.damage
    assert samples.damage.endswith(f"; {len(frames)} frames used")
    whole = _all_frames(valid_files[name])
    for frame in frames:  # the frames used are sound
        index = min(range(len(whole)), key=lambda i: abs(whole[i][0] - frame.time_s))
        assert np.array_equal(frame.image, whole[index][1])


def test_a_file_without_a_usable_frame_is_an_error(tmp_path: Path, valid_files: dict[str, Path]) -> None:
    data = valid_files["h264-faststart.mp4"].read_bytes()
    mdat = data.index(b"mdat")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: mdat + 64])  # the index, then almost nothing of the frames
    with pytest.raises(MediaError, match="truncated") as info:
        list(sample_frames(cut))
    assert info.value.kind == "unreadable"
    garbled = tmp_path / "garbled.mp4"
    garbled.write_bytes(data[: mdat + 4] + bytes(len(data) - mdat - 4))  # the frames all zero
    with pytest.raises(MediaError) as info:
        list(sample_frames(garbled))
    assert info.value.kind in ("unreadable", "no_frames")


def test_declared_size_reads_the_top_level() -> None:
    mp4 = b"\0\0\0\x10ftypisom\0\0\0\0" + b"\0\0\x01\0mdat"
    assert containers.declared_size(_file(mp4), containers.MP4) == 16 + 256
    assert containers.declared_size(_file(mp4[:16] + b"\0\0\0\0mdat" + bytes(8)), containers.MP4) is None
    avi = b"RIFF" + (1000).to_bytes(4, "little") + b"AVI " + bytes(20)
    assert containers.declared_size(_file(avi), containers.AVI) == 1008
    odd = b"RIFF" + (7).to_bytes(4, "little") + b"AVI xyz"  # an odd size, its pad byte missing
    assert containers.declared_size(_file(odd), containers.AVI) == 15
    assert containers.declared_size(_file(b"RIFF\xff\xff\xff\xffAVI "), containers.AVI) is None


def _file(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


def test_time_is_measured_from_the_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "late-start.mkv"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10", "-t", "3", "-output_ts_offset", "7.5",
            "-c:v", "libx264", "-preset", "ultrafast", str(path))  # fmt: skip
    frames = list(sample_frames(path))
    assert len(frames) == 3
    _check_guarantee(frames, _all_frames(path), 1.0)
