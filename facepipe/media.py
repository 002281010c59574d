"""Reading media: sample frames from any container FFmpeg reads, or load a still image.

Videos are decoded in-process with FFmpeg's libraries (PyAV): no process start
per video, only the sampled frames are converted, one at a time. Rotation
metadata is honoured (the display matrix for video, EXIF for photos).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Frames are decoded at most this large (long side); detection runs on a smaller copy.
MAX_DECODE_SIDE = 1280
MAX_IMAGE_PIXELS = 80_000_000
MAX_VIDEO_PIXELS = 7680 * 4320
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
    return _decode_still(image)


def _decode_still(image: Image.Image) -> np.ndarray:
    """Decode an image from `open_still` (and close it); see `load_image`."""
    with image:
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise MediaError("too_large", f"image of {image.width}x{image.height} pixels is too large")
        image.draft("RGB", (MAX_DECODE_SIDE, MAX_DECODE_SIDE))
        try:
            upright = ImageOps.exif_transpose(image).convert("RGB")
        except (OSError, ValueError) as exc:
            raise MediaError("unreadable", f"image cannot be decoded: {exc}") from None
        return np.asarray(_cap_size(upright))


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """The frame as upright RGB, scaled (by FFmpeg's swscale) to at most MAX_DECODE_SIDE."""
    scale = min(1.0, MAX_DECODE_SIDE / max(frame.width, frame.height))
    width, height = max(2, round(frame.width * scale)), max(2, round(frame.height * scale))
    image = frame.to_ndarray(format="rgb24", width=width, height=height)
    turns = round((frame.rotation or 0) / 90) % 4  # display matrix, counter-clockwise degrees
    return np.ascontiguousarray(np.rot90(image, turns))


def _open_error(path: Path, exc: Exception) -> MediaError:
    with path.open("rb") as file:
        head = file.read(12)
    if head[4:8] == b"ftyp":  # an MP4/QuickTime file whose index FFmpeg could not find
        return MediaError("unreadable", "the video is truncated or incomplete (no moov atom)")
    if isinstance(exc, av.error.InvalidDataError):
        return MediaError("unreadable", "not a video or image FFmpeg can read")
    return MediaError("unreadable", f"FFmpeg cannot open the file: {exc}"[:300])


def sample_video_frames(
    path: Path,
    interval_s: float = 1.0,
    max_frames: int = 30,
    timeout_s: float = 60.0,
    keyframes_only: bool = True,
) -> Iterator[Frame]:
    """Yield frames at least `interval_s` apart from the start of the video, at most `max_frames`.

    With `keyframes_only` the decoder skips every frame that is not a keyframe,
    which makes sampling nearly free; encoders put keyframes at scene cuts and
    every few seconds, so people who appear later are still seen. Without it
    every frame is decoded and one per interval is kept. Decoding stops with a
    `timeout` error once it has taken `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise _open_error(path, exc) from None
    with container:
        if not container.streams.video:
            raise MediaError("no_video_stream", "the file has no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > MAX_VIDEO_PIXELS:
            raise MediaError("too_large", f"video of {width}x{height} pixels is too large")
        stream.codec_context.thread_count = 1  # one video per worker process; processes give parallelism
        if keyframes_only:
            stream.codec_context.skip_frame = "NONKEY"
        start = None
        next_time = 0.0
        count = 0
        decode_errors = 0
        packets = 0
        for packet in container.demux(stream):
            packets += 1 if packet.size else 0
            if time.monotonic() > deadline:
                raise MediaError("timeout", f"decoding took longer than {timeout_s:g} s")
            try:
                frames = packet.decode()
            except av.FFmpegError:
                decode_errors += 1
                if decode_errors > 50:
                    break
                continue
            for frame in frames:
                moment = float(frame.time) if frame.time is not None else next_time
                start = moment if start is None else start
                position = moment - start
                if position + 1e-6 < next_time:
                    continue
                yield Frame(count, round(position, 3), _to_rgb(frame))
                count += 1
                next_time = position + interval_s
                if count >= max_frames:
                    return
        indexed = stream.frames  # from the container's index, 0 when it has none
        if indexed and packets < indexed:
            raise MediaError("unreadable", f"the video is truncated: {packets} of {indexed} frames are present")
    if count == 0:
        raise MediaError("no_frames", "the video has no decodable frames")


def sample_frames(
    path: Path,
    interval_s: float = 1.0,
    max_frames: int = 30,
    timeout_s: float = 60.0,
    keyframes_only: bool = True,
) -> Iterator[Frame]:
    """Frames to look at: the picture itself for a still image, else sampled video frames."""
    if path.stat().st_size == 0:
        raise MediaError("empty", "the file is empty")
    still = open_still(path)
    if still is not None:
        yield Frame(0, 0.0, _decode_still(still))
        return
    yield from sample_video_frames(path, interval_s, max_frames, timeout_s, keyframes_only)
