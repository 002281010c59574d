"""Bounded memory per object (issue #12): formats from magic bytes, container indexes checked
before FFmpeg opens them, pixel and byte limits on images and on every video frame, and the
peak resident memory of a worker-like process over a set of hostile files made at test time
(facepipe_tools/hostile_media.py)."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest
from PIL import Image

from facepipe import containers, media
from facepipe.containers import Sniffed, check_index, sniff
from facepipe.function import ObjectFunction
from facepipe.media import MediaError, sample_frames
from facepipe.settings import Settings
from facepipe_tools import hostile_media
from facepipe_tools.paths import REPO_ROOT
from facepipe_tools.sample import photo

#: The bound of the issue is 700 MiB for a function worker; the measuring process has the
#: models and the known faces but not the worker's web stack (Flask, waitress, boto3,
#: prometheus_client: about 30 MiB more, measured on index.py).
WORKER_LIMIT_MB = 700
WEB_STACK_MB = 40
KNOWN_FACES = REPO_ROOT / "data" / "known_faces.json"


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


# ----------------------------------------------------------------------------- formats


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0\0\x10JFIF\0", Sniffed("image", "JPEG")),
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", Sniffed("image", "PNG")),
        (b"GIF89a\x01\0\x01\0\0\0\0\0", Sniffed("image", "GIF")),
        (b"II*\0\x08\0\0\0\0\0\0\0\0\0\0\0", Sniffed("image", "TIFF")),
        (b"RIFF\0\0\0\0WEBPVP8 ", Sniffed("image", "WEBP")),
        (b"RIFF\0\0\0\0AVI LIST", Sniffed("video", "avi")),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\0\0\0\0\0\0\0", Sniffed("video", "matroska")),
        (b"\0\0\0\x20ftypisom\0\0\x02\0", Sniffed("video", "mov")),
        (b"\0\0\0\x08wide\0\0\0\0mdat", Sniffed("video", "mov")),
        (b"#EXTM3U\n#EXT-X-VERSION:3\n", None),
        (b"ffconcat version 1.0\nfile", None),
        (b"v=0\no=- 0 0 IN IP4 127.0.0.1", None),
        (b"\x47\x40\x11\x10\0\x42\xf0\x25\0\x01\xc1\0\0\xff\x01\xff", None),  # MPEG-TS
        (b"OggS\0\x02\0\0\0\0\0\0\0\0\0\0", None),
        (b"FLV\x01\x05\0\0\0\x09\0\0\0\0\x12\0\0", None),
        (b"these are my notes", None),
    ],
)
def test_the_format_comes_from_the_magic_bytes(head: bytes, expected: Sniffed | None) -> None:
    assert sniff(head) == expected


@pytest.mark.parametrize(
    "content",
    [
        b"#EXTM3U\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
        b"ffconcat version 1.0\nfile '/etc/passwd'\n",
        b"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=video 5004 RTP/AVP 96\n",
    ],
)
@pytest.mark.parametrize("name", ["clip.m3u8", "clip.mp4", "list.ffconcat", "session.sdp", "img%03d.jpg"])
def test_playlists_and_sessions_are_refused_whatever_their_name(tmp_path: Path, content: bytes, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MediaError) as info:
        list(sample_frames(path))
    assert info.value.kind == "unreadable"
    assert "MP4/QuickTime, Matroska/WebM, AVI" in info.value.detail


def test_a_file_is_read_as_what_its_bytes_say(tmp_path: Path, sample_dir: Path) -> None:
    clip = tmp_path / "photo.jpg"
    clip.write_bytes((sample_dir / "sample_hopper.mp4").read_bytes())
    still = tmp_path / "clip%d.mp4"
    still.write_bytes((sample_dir / "sample_hopper_photo.jpg").read_bytes())
    assert [f.time_s for f in sample_frames(clip)] == [0.0, 1.0]
    assert [f.image.shape for f in sample_frames(still)] == [(600, 512, 3)]


def test_other_containers_and_codecs_are_refused(tmp_path: Path) -> None:
    flv = tmp_path / "clip.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=5", "-t", "1", "-f", "flv", str(flv))
    with pytest.raises(MediaError, match="not a video or image format read here") as info:
        list(sample_frames(flv))
    assert info.value.kind == "unreadable"
    lossless = tmp_path / "lossless.mkv"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=5", "-t", "1", "-c:v", "ffv1", str(lossless))
    with pytest.raises(MediaError, match="codec ffv1 is not decoded here"):
        list(sample_frames(lossless))


def test_avi_is_read(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=5", "-t", "2", "-c:v", "mpeg4", str(path))
    with path.open("rb") as file:
        check_index(file, containers.AVI)
    assert [f.time_s for f in sample_frames(path, keyframes_only=False)] == [0.0, 1.0]


# ----------------------------------------------------------------------------- container indexes


def test_real_indexes_pass(sample_dir: Path) -> None:
    for name in ("sample_hopper.mp4", "sample_hopper_rotated.mp4", "sample_nobody.mov", "sample_hopper_small.mkv",
                 "sample_collins_late.webm"):  # fmt: skip
        kind, demuxer = media._sniff(sample_dir / name)
        with (sample_dir / name).open("rb") as file:
            check_index(file, demuxer)


@pytest.fixture(scope="module")
def face() -> Path:
    return photo("grace_hopper")


@pytest.mark.parametrize(
    ("make", "kwargs", "detail"),
    [
        (hostile_media.mp4_sample_count_bomb, {"samples": 3_000_000}, "index lists 3000000 samples"),
        (hostile_media.mp4_fragment_bomb, {"samples": 3_000_000}, "index lists 3000000 samples"),
        (hostile_media.mp4_edit_list_bomb, {"edits": 300, "samples": 100_000}, "300 edit-list entries"),
        (hostile_media.mp4_edit_list_bomb, {"edits": 2000, "samples": 10}, "2000 edit-list entries"),
    ],
)
def test_absurd_mp4_indexes_are_refused_before_ffmpeg_opens_them(
    tmp_path: Path, face: Path, make, kwargs: dict, detail: str
) -> None:
    path = tmp_path / "bomb.mp4"
    make(path, face, **kwargs)
    with pytest.raises(MediaError, match=detail) as info:
        list(sample_frames(path))
    assert info.value.kind == "too_large"


def test_a_sane_edit_list_passes(tmp_path: Path, face: Path) -> None:
    path = tmp_path / "edits.mp4"
    hostile_media.mp4_edit_list_bomb(path, face, edits=4, samples=2)
    with path.open("rb") as file:
        check_index(file, containers.MP4)


def test_a_huge_matroska_index_is_refused(tmp_path: Path, face: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "MAX_INDEX_BYTES", 1 << 20)
    path = tmp_path / "cues.mkv"
    hostile_media.matroska_cues_bomb(path, face, cue_bytes=(1 << 20) + 4096)
    with pytest.raises(MediaError, match="Matroska index takes") as info:
        list(sample_frames(path))
    assert info.value.kind == "too_large"


def test_cues_found_through_the_seek_head_count(sample_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Matroska file written by FFmpeg has its Cues after the clusters, listed in its SeekHead."""
    path = sample_dir / "sample_hopper_small.mkv"
    walk = containers._Walk(path.open("rb"), None)
    assert containers._matroska_cues_bytes(walk, path.stat().st_size) > 0
    monkeypatch.setattr(containers, "MAX_INDEX_BYTES", 1)
    with path.open("rb") as file, pytest.raises(MediaError, match="Matroska index"):
        check_index(file, containers.MATROSKA)


def test_a_huge_avi_index_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "clip.avi"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", "4", "-c:v", "mpeg4", str(path))
    monkeypatch.setattr(containers, "MAX_INDEX_BYTES", 1000)  # 100 frames: 1600 bytes of idx1
    with pytest.raises(MediaError, match="AVI index takes") as info:
        list(sample_frames(path))
    assert info.value.kind == "too_large"


def test_walking_a_container_stops_at_the_deadline(tmp_path: Path) -> None:
    path = tmp_path / "boxes.mp4"
    path.write_bytes(struct.pack(">I4s4sI", 16, b"ftyp", b"isom", 0) + struct.pack(">I4s", 8, b"free") * 5000)
    with path.open("rb") as file, pytest.raises(MediaError) as info:
        check_index(file, containers.MP4, deadline=time.monotonic() - 1)
    assert info.value.kind == "timeout"


def test_the_deadline_covers_opening(sample_dir: Path) -> None:
    with pytest.raises(MediaError, match="opening the video") as info:
        list(sample_frames(sample_dir / "sample_hopper.mp4", timeout_s=0.0))
    assert info.value.kind == "timeout"


@pytest.mark.parametrize(("slow", "kind"), [(True, "timeout"), (False, "unreadable")])
def test_an_open_cut_by_its_time_limit_is_a_timeout(
    slow: bool, kind: str, sample_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FFmpeg's MP4 demuxer takes a read cut by the open timeout for the end of the file ("moov
    atom not found"): past that timeout it is a timeout, before it a file without its index."""

    def open_without_moov(*args, timeout: tuple[float, float], **kwargs):
        if slow:
            time.sleep(timeout[0])
        raise av.error.InvalidDataError(-1094995529, "Invalid data found when processing input")

    monkeypatch.setattr(media.av, "open", open_without_moov)
    with pytest.raises(MediaError) as info:
        list(sample_frames(sample_dir / "sample_hopper.mp4", timeout_s=0.2))
    assert info.value.kind == kind
    assert ("moov" in str(info.value)) is not slow


# ----------------------------------------------------------------------------- frames and images


def test_every_video_frame_is_checked_not_only_the_header(tmp_path: Path) -> None:
    """Motion JPEG whose header (and first frames) say 320x240 and whose third frame is
    12000x12000: FFmpeg refuses to allocate it (max_pixels) and the answer is too_large."""
    path = tmp_path / "later.avi"
    hostile_media.later_frames_huge_mjpeg(path, photo("grace_hopper"))
    for keyframes_only in (True, False):
        with pytest.raises(MediaError) as info:
            list(sample_frames(path, interval_s=0.01, keyframes_only=keyframes_only))
        assert info.value.kind == "too_large"


def test_frames_over_the_byte_limit_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "444.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=640x480:rate=5", "-t", "1", "-c:v", "libx264", "-pix_fmt",
            "yuv444p10le", str(path))  # fmt: skip
    monkeypatch.setattr(media, "MAX_FRAME_BYTES", 640 * 480 * 6 - 1)
    with pytest.raises(MediaError, match="in yuv444p10le takes") as info:
        list(sample_frames(path))
    assert info.value.kind == "too_large"


def test_decoding_memory_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sample_dir: Path) -> None:
    monkeypatch.setattr(media, "MAX_DECODE_GROWTH_BYTES", -(1 << 40))  # any growth is too much
    with pytest.raises(MediaError, match="decoding the video needed") as info:
        list(sample_frames(sample_dir / "sample_hopper.mp4"))
    assert info.value.kind == "too_large"


def test_only_the_first_video_stream_is_read(tmp_path: Path, sample_dir: Path) -> None:
    path = tmp_path / "two.mkv"
    _ffmpeg("-i", str(sample_dir / "sample_hopper.mp4"), "-f", "lavfi", "-i", "testsrc=size=7680x4320:rate=1",
            "-map", "0:v", "-map", "1:v", "-t", "1", "-c:v:0", "copy", "-c:v:1", "mjpeg", str(path))  # fmt: skip
    assert [f.image.shape for f in sample_frames(path)] == [(600, 512, 3)]


@pytest.mark.parametrize(
    ("mode", "size"),
    [("RGB", (4000, 3000)), ("P", (5000, 4000)), ("I;16", (3000, 2000)), ("F", (2000, 1000)), ("CMYK", (3000, 3000)),
     ("1", (4000, 4000)), ("LA", (3000, 1000))],
)  # fmt: skip
def test_images_of_every_mode_are_shrunk_to_rgb(tmp_path: Path, mode: str, size: tuple[int, int]) -> None:
    path = tmp_path / "image.tif"
    image = Image.new(mode, size)
    image.paste(Image.new(mode, (size[0] // 2, size[1] // 2), 1), (0, 0))
    image.save(path, "TIFF", compression="group4" if mode == "1" else "tiff_deflate")
    pixels = media.load_image(path)
    assert pixels.dtype.name == "uint8" and pixels.shape[2] == 3
    assert max(pixels.shape[:2]) == media.MAX_DECODE_SIDE


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # media.py filters it; pytest resets
def test_an_image_that_would_need_too_much_memory_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "rgba.png"
    hostile_media.png_bomb(path, 7500, 7500, 6, 8)  # 56 Mpx, under the pixel limit; 4 bytes a pixel
    with pytest.raises(MediaError, match="would need") as info:
        media.load_image(path)
    assert info.value.kind == "too_large"


def test_image_decode_cost_counts_what_the_decoders_hold(tmp_path: Path) -> None:
    """Progressive JPEG keeps every coefficient at full size; WebP holds the file and canvases."""
    progressive = tmp_path / "p.jpg"
    Image.new("RGB", (4000, 4000)).save(progressive, "JPEG", progressive=True, subsampling=0)
    baseline = tmp_path / "b.jpg"
    Image.new("RGB", (4000, 4000)).save(baseline, "JPEG", subsampling=0)
    costs = {}
    for path in (progressive, baseline):
        with Image.open(path) as image:
            full = image.size
            image.draft("RGB", (media.MAX_DECODE_SIDE, media.MAX_DECODE_SIDE))
            costs[path.name] = media._decode_cost(image, full, path.stat().st_size)
    assert costs["p.jpg"] - costs["b.jpg"] == 4000 * 4000 * 3 * 2


def test_pillow_refuses_what_media_refuses() -> None:
    assert Image.MAX_IMAGE_PIXELS * 2 == media.MAX_IMAGE_PIXELS
    height = media.MAX_IMAGE_PIXELS // 10_000 + 1
    header = hostile_media._png_chunk(b"IHDR", struct.pack(">IIBBBBB", 10_000, height, 1, 0, 0, 0, 0))
    chunks = header + hostile_media._png_chunk(b"IDAT", b"") + hostile_media._png_chunk(b"IEND", b"")
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(b"\x89PNG\r\n\x1a\n" + chunks))


def test_a_huge_bmp_rle_is_refused_before_python_decodes_it(tmp_path: Path) -> None:
    path = tmp_path / "rle.bmp"
    hostile_media.bmp_rle_bomb(path, photo("grace_hopper"), side=2100)
    with pytest.raises(MediaError, match="RLE-compressed BMP") as info:
        media.load_image(path)
    assert info.value.kind == "too_large"


def test_multi_frame_images_give_their_first_frame(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (64, 48), color) for color in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=100)
    (frame,) = sample_frames(path)
    assert frame.image.shape == (48, 64, 3) and tuple(frame.image[0, 0]) == (255, 0, 0)


# ----------------------------------------------------------------------------- the temporary file


def test_the_temporary_file_name_never_comes_from_the_key(s3) -> None:
    seen: list[Path] = []

    class Recorder:
        def compute(self, path: Path, deadline: float | None = None):
            seen.append(path)
            raise MediaError("unreadable", "recorded")

        def answer(self, computed):
            raise AssertionError("not reached")

        def stored_details(self, body):
            return {}

    key = "lecture/../playlist.m3u8"
    s3.put_object(Bucket="input", Key=key, Body=b"#EXTM3U\n")
    outcome = ObjectFunction(Settings(), Recorder(), s3=s3).process("input", key)
    assert outcome.error == {"error": "unreadable", "detail": "recorded"}
    assert seen[0].suffix == "" and "m3u8" not in seen[0].name and "playlist" not in seen[0].name


# ----------------------------------------------------------------------------- hostile files, peak memory


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, face: Path) -> list[tuple[hostile_media.Hostile, Path]]:
    return hostile_media.build(tmp_path_factory.mktemp("hostile"), face)


def _measure(paths: list[Path], frame_sampling: str) -> dict:
    """The face task over `paths` in a fresh process, as a worker would (MALLOC_ARENA_MAX as
    in the image and the local runner)."""
    env = dict(os.environ, MALLOC_ARENA_MAX="2")
    done = subprocess.run(
        [sys.executable, "-m", "facepipe_tools.hostile_media", "measure", "--known-faces", str(KNOWN_FACES),
         "--frame-sampling", frame_sampling, *map(str, paths)],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=900, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_hostile_files_are_answered_in_bounded_memory(hostile: list[tuple[hostile_media.Hostile, Path]]) -> None:
    """Every hostile file gets an acceptable answer (an error record of the right kind, or the
    right people) and the process's peak resident memory, models included, stays within the
    worker's bound; then the videos again, sampled on time (FRAME_SAMPLING=interval)."""
    videos = [(case, path) for case, path in hostile if getattr(sniff(path.read_bytes()[:16]), "kind", "") == "video"]
    for frame_sampling, files in (("keyframes", hostile), ("interval", videos)):
        measured = _measure([path for _, path in files], frame_sampling)
        problems = {}
        for case, path in files:
            kind, found = measured["answers"][path.name]
            problem = hostile_media.judge(case, kind, found, ["grace_hopper"])
            if problem:
                problems[case.name] = problem
        assert problems == {}, frame_sampling
        assert measured["peak_rss_mb"] <= WORKER_LIMIT_MB - WEB_STACK_MB, (frame_sampling, measured)


def test_frames_say_how_much_smaller_than_coded_they_were_decoded(tmp_path: Path, sample_dir: Path) -> None:
    """`max_side` bounds the decoded size; `source_scale` carries the shrink to detection."""
    (whole,) = sample_frames(sample_dir / "sample_hopper.mp4", max_frames=1)
    (small,) = sample_frames(sample_dir / "sample_hopper.mp4", max_frames=1, max_side=300)
    assert whole.image.shape == (600, 512, 3) and whole.source_scale == 1.0
    assert small.image.shape == (300, 256, 3) and small.source_scale == 0.5
    still = tmp_path / "still.png"
    Image.new("RGB", (2400, 1200)).save(still)
    assert [(f.image.shape, f.source_scale) for f in sample_frames(still)] == [((640, 1280, 3), 1280 / 2400)]
    assert [(f.image.shape, f.source_scale) for f in sample_frames(still, max_side=1920)] == [((960, 1920, 3), 0.8)]
