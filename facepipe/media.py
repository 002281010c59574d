"""Reading media: sample frames from any container ffmpeg reads, or load a still image.

ffmpeg runs as a child process (never through a shell) and streams PPM frames
through a pipe, so only the sampled frames are held in memory, one at a time.
Rotation metadata is honoured (ffmpeg auto-rotates, Pillow applies EXIF).
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Frames are decoded at most this large (long side); detection runs on a smaller copy.
MAX_DECODE_SIDE = 1280
MAX_IMAGE_PIXELS = 80_000_000
STILL_FORMATS = {"JPEG", "PNG", "BMP", "WEBP", "TIFF", "GIF", "MPO"}


class MediaError(Exception):
    """Media that cannot be used. ``kind`` is a short code, ``detail`` a readable reason."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Frame:
    index: int
    time_s: float
    image: np.ndarray  # RGB, uint8, shape (height, width, 3)


def _cap_size(image: Image.Image) -> Image.Image:
    if max(image.size) > MAX_DECODE_SIDE:
        image = image.copy()
        image.thumbnail((MAX_DECODE_SIDE, MAX_DECODE_SIDE), Image.Resampling.LANCZOS)
    return image


def open_still(path: Path) -> Image.Image | None:
    """The image if `path` is a single-frame still picture, else None (let ffmpeg try)."""
    try:
        image = Image.open(path)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    if image.format not in STILL_FORMATS or getattr(image, "n_frames", 1) > 1:
        image.close()
        return None
    return image


def load_image(path: Path) -> np.ndarray:
    """A still image as RGB, upright (EXIF orientation applied), long side at most MAX_DECODE_SIDE."""
    image = open_still(path)
    if image is None:
        raise MediaError("unreadable", "not a still image that can be decoded")
    with image:
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise MediaError("too_large", f"image of {image.width}x{image.height} pixels is too large")
        image.draft("RGB", (MAX_DECODE_SIDE, MAX_DECODE_SIDE))
        try:
            upright = ImageOps.exif_transpose(image).convert("RGB")
        except (OSError, ValueError) as exc:
            raise MediaError("unreadable", f"image cannot be decoded: {exc}") from None
        return np.asarray(_cap_size(upright))


def _read_exact(stream, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_ppm(stream) -> np.ndarray | None:
    """Read one binary PPM (P6, maxval 255) as ffmpeg writes it; None at end of stream."""
    tokens: list[bytes] = []
    token = b""
    while len(tokens) < 4:
        char = stream.read(1)
        if not char:
            if tokens or token:
                raise MediaError("unreadable", "truncated frame from ffmpeg")
            return None
        if char.isspace():
            if token:
                tokens.append(token)
                token = b""
        else:
            token += char
    magic, width, height, maxval = tokens[0], int(tokens[1]), int(tokens[2]), int(tokens[3])
    if magic != b"P6" or maxval != 255:
        raise MediaError("unreadable", "unexpected frame format from ffmpeg")
    data = _read_exact(stream, width * height * 3)
    if len(data) != width * height * 3:
        raise MediaError("unreadable", "truncated frame from ffmpeg")
    return np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)


def _ffmpeg_command(path: Path, interval_s: float, max_frames: int) -> list[str]:
    side = MAX_DECODE_SIDE
    scale = f"scale=w='if(gte(iw,ih),min(iw,{side}),-1)':h='if(gte(iw,ih),-1,min(ih,{side}))'"
    return [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
        "-i", str(path),
        "-map", "0:v:0", "-an", "-sn", "-dn",
        "-vf", f"fps=1/{interval_s:g}:round=down,{scale}",
        "-frames:v", str(max_frames),
        "-f", "image2pipe", "-c:v", "ppm", "pipe:1",
    ]  # fmt: skip


def _explain_ffmpeg_error(stderr: str) -> MediaError:
    text = stderr.strip()
    last = text.splitlines()[-1] if text else "ffmpeg failed without a message"
    if "matches no streams" in text or "does not contain any stream" in text:
        return MediaError("no_video_stream", "the file has no video stream")
    if "moov atom not found" in text:
        return MediaError("unreadable", "the video is truncated or incomplete (moov atom not found)")
    if "Invalid data found" in text or "could not find codec parameters" in text.lower():
        return MediaError("unreadable", "not a video or image ffmpeg can read")
    return MediaError("unreadable", last[:300])


def sample_video_frames(
    path: Path, interval_s: float = 1.0, max_frames: int = 30, timeout_s: float = 60.0
) -> Iterator[Frame]:
    """Yield one frame every `interval_s` seconds from the start, at most `max_frames`.

    ffmpeg is killed if the whole decode takes longer than `timeout_s`.
    """
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            _ffmpeg_command(path, interval_s, max_frames),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            process.kill()

        timer = threading.Timer(timeout_s, kill)
        timer.start()
        count = 0
        try:
            while True:
                try:
                    image = _read_ppm(process.stdout)
                except MediaError:
                    if timed_out.is_set():
                        break
                    raise
                if image is None:
                    break
                yield Frame(count, count * interval_s, image)
                count += 1
        finally:
            timer.cancel()
            if process.poll() is None:
                process.kill()
            process.stdout.close()
            returncode = process.wait()
        if timed_out.is_set():
            raise MediaError("timeout", f"decoding took longer than {timeout_s:g} s")
        if returncode != 0:
            stderr.seek(0)
            error = _explain_ffmpeg_error(stderr.read().decode(errors="replace"))
            if count == 0:
                raise error
        if count == 0:
            raise MediaError("no_frames", "the video has no decodable frames")


def sample_frames(
    path: Path, interval_s: float = 1.0, max_frames: int = 30, timeout_s: float = 60.0
) -> Iterator[Frame]:
    """Frames to look at: the picture itself for a still image, else sampled video frames."""
    if path.stat().st_size == 0:
        raise MediaError("empty", "the file is empty")
    still = open_still(path)
    if still is not None:
        still.close()
        yield Frame(0, 0.0, load_image(path))
        return
    yield from sample_video_frames(path, interval_s, max_frames, timeout_s)
