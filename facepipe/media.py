"""Reading media: sample frames from a video, or load a still image, in bounded memory.

Videos are decoded in-process with FFmpeg's libraries (PyAV): no process start per video,
only the sampled frames are converted, one at a time. Rotation metadata is honoured (the
display matrix for video, EXIF for photos).

Every object is untrusted, so memory and time are bounded whatever its bytes say
(a function worker holds at most about 700 MiB, models included):

- the format comes from the file's magic bytes (`facepipe.containers.sniff`), never from
  its name; only MP4/QuickTime, Matroska/WebM and AVI reach FFmpeg, each with its demuxer
  named, the file protocol only and no stream probing beyond the first packet; container
  indexes that would make FFmpeg allocate gigabytes are refused before it opens them;
- only the first video stream is demuxed and decoded, with a decoder from
  VIDEO_DECODERS; FFmpeg itself refuses frames over MAX_VIDEO_PIXELS (`max_pixels`), every
  decoded frame is checked against MAX_VIDEO_PIXELS and MAX_FRAME_BYTES (a stream can change
  size mid-way), packets against MAX_PACKET_BYTES, and the process's resident memory may
  grow by at most MAX_DECODE_GROWTH_BYTES while a video is decoded;
- still images are opened by Pillow with the sniffed format only; their size, mode and
  format give the memory decoding needs (MAX_IMAGE_DECODE_BYTES) before anything is
  decoded; a big image is shrunk in bands, so that only its decoded pixels are ever held
  at full size; multi-frame images give their first frame;
- the time limit covers opening and probing as well as decoding.

A bomb is `too_large`, a format or codec that is not read here `unreadable`. Truncation is
judged by real signs, never by frame counts a muxer may get wrong: the file ends before its
container says (`containers.declared_size`), a packet is cut off, demuxing or decoding fails.
A damaged video is answered from the frames it still has, `Samples.damage` saying what was
wrong; only one without a usable frame is an error.
"""

from __future__ import annotations

import ctypes
import fractions
import math
import os
import time
import warnings
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.stream
import numpy as np
from PIL import Image

from facepipe.containers import MP4, SNIFF_BYTES, SUPPORTED, MediaError, check_index, declared_size, sniff

#: Frames and stills are decoded at most this large (long side) unless a caller asks for
#: another size (`max_side`; `Frame.source_scale` says how much smaller than coded they are).
MAX_DECODE_SIDE = 1280
#: Pixels of a still image (Pillow refuses larger ones too: Image.MAX_IMAGE_PIXELS below).
MAX_IMAGE_PIXELS = 64_000_000
#: Memory a still image may need while it is decoded (see `_decode_cost`).
MAX_IMAGE_DECODE_BYTES = 320 << 20
#: Pixels of an RLE-compressed BMP, which Pillow decodes in Python (slowly).
MAX_RLE_PIXELS = 4_000_000
#: Pixels of a video frame: 8K UHD.
MAX_VIDEO_PIXELS = 7680 * 4320
#: Bytes of one decoded video frame: 8K 4:2:0 8-bit is 50 MB, 4K 4:4:4 16-bit as much.
MAX_FRAME_BYTES = 64 << 20
#: Bytes of one compressed video packet.
MAX_PACKET_BYTES = 64 << 20
#: Growth of the process's resident memory while one video is decoded (reference frames,
#: FFmpeg's buffer pools, the frame being converted): about five 8K frames. It is checked
#: after each packet, so the peak can pass it by one frame.
MAX_DECODE_GROWTH_BYTES = 256 << 20
#: FFmpeg decoders the function uses (camera, phone, web and editing codecs); lossless and
#: raw codecs (ffv1, rawvideo, png, tiff, exr...) are refused: huge frames, nothing to gain.
VIDEO_DECODERS = frozenset(
    "h264 hevc vp8 vp9 av1 libdav1d mpeg4 mpeg1video mpeg2video mjpeg h263 theora prores dnxhd".split()
)
#: Options of every video opened: the demuxer's and those of the decoders FFmpeg opens to
#: probe streams. Probing reads one packet at most: the allowed containers describe their
#: streams in their headers, and any probing decode allocates frames.
_OPEN_OPTIONS = {
    "protocol_whitelist": "file",
    "codec_whitelist": ",".join(sorted(VIDEO_DECODERS)),
    "probesize": "32",
    "max_streams": "32",
    "max_pixels": str(MAX_VIDEO_PIXELS),
    "threads": "1",
}

# Pillow's own limit is the same: it raises DecompressionBombError above twice its setting,
# so it refuses exactly what is above ours. Its warning between half and all of ours is
# noise: the decode cost decides (`_decode_cost`).
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS // 2
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

#: Bytes per pixel of Pillow's storage by mode (4 for every mode not listed).
_PILLOW_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
#: Modes shrunk in place by Pillow (its thumbnail); the others are converted band by band.
_THUMBNAIL_MODES = {"RGB", "L", "RGBA", "LA"}
#: Bytes of one band of a full-size image converted at a time.
_BAND_BYTES = 16 << 20
#: EXIF orientation -> the transpose that shows the picture upright (as ImageOps.exif_transpose).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class Frame:
    index: int
    time_s: float
    image: np.ndarray  # RGB, uint8, shape (height, width, 3)
    #: Pixels of `image` per pixel of the picture as coded: below 1 when it was decoded smaller.
    source_scale: float = 1.0


def _load_libc() -> ctypes.CDLL | None:
    """The C library this process runs with, if it is glibc (which has malloc_trim)."""
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


_LIBC = _load_libc()


def release_memory() -> None:
    """Give the heap memory freed by the last decode back to the system (glibc's
    malloc_trim): otherwise what one big object left free adds to the next one's peak."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _sniff(path: Path) -> tuple[str, str]:
    """(kind, format) of the file from its magic bytes; MediaError if empty or not allowed."""
    with path.open("rb") as file:
        head = file.read(SNIFF_BYTES)
    if not head:
        raise MediaError("empty", "the file is empty")
    found = sniff(head)
    if found is None:
        raise MediaError("unreadable", f"not a video or image format read here ({SUPPORTED})")
    return found.kind, found.name


# ----------------------------------------------------------------------------- stills


def load_image(path: Path) -> np.ndarray:
    """A still image as RGB, upright (EXIF orientation applied), long side at most MAX_DECODE_SIDE."""
    kind, name = _sniff(path)
    if kind != "image":
        raise MediaError("unreadable", "not a still image that can be decoded")
    try:
        return _decode_still(path, name, MAX_DECODE_SIDE)[0]
    finally:
        release_memory()


def _decode_still(path: Path, fmt: str, max_side: int) -> tuple[np.ndarray, float]:
    """Decode the first frame of a still image of Pillow format `fmt` (sniffed), its long side
    at most `max_side`; with the scale it was decoded at (`Frame.source_scale`)."""
    try:
        image = Image.open(path, formats=[fmt])
    except Image.DecompressionBombError as exc:
        raise MediaError("too_large", f"image is too large: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many kinds on malformed headers
        raise MediaError("unreadable", f"not a {fmt} image that can be decoded ({type(exc).__name__})") from None
    with image:
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise MediaError("too_large", f"image of {image.width}x{image.height} pixels is too large")
        full_size = image.size
        image.draft("RGB", (max_side, max_side))  # JPEG: decode at 1/2, 1/4 or 1/8
        cost = _decode_cost(image, full_size, path.stat().st_size)
        if cost > MAX_IMAGE_DECODE_BYTES:
            raise MediaError(
                "too_large",
                f"{image.format} image of {full_size[0]}x{full_size[1]} pixels (mode {image.mode}) would need "
                f"{cost >> 20} MiB to decode, the limit is {MAX_IMAGE_DECODE_BYTES >> 20} MiB",
            )
        try:
            image.load()
            orientation = image.getexif().get(_EXIF_ORIENTATION)
            small = _shrink(image, max_side)
        except MemoryError:
            raise MediaError("too_large", "the image needs more memory than there is") from None
        except Exception as exc:  # noqa: BLE001 - truncated or corrupt data, unsupported modes
            raise MediaError("unreadable", f"image cannot be decoded: {type(exc).__name__}: {exc}"[:300]) from None
    scale = max(small.size) / max(full_size)
    if orientation in _ORIENTATION:
        small = small.transpose(_ORIENTATION[orientation])
    return np.asarray(small), scale


def _decode_cost(image: Image.Image, full_size: tuple[int, int], file_bytes: int) -> int:
    """Bytes that decoding `image` (opened, drafted, not loaded) holds at its peak: its pixels
    in Pillow's storage and what the format's decoder keeps besides, plus half as much again
    for shrinking (`_shrink`)."""
    pixels = image.width * image.height
    decoded = pixels * _PILLOW_BYTES.get(image.mode, 4)
    cost = decoded + decoded // 2
    if image.format in ("JPEG", "MPO") and image.info.get("progressive"):
        # libjpeg keeps every DCT coefficient (2 bytes) of a progressive JPEG, at full size
        # whatever the draft scale: components weighted by their sampling.
        layers = getattr(image, "layer", None) or [("", 1, 1, 0)] * len(image.getbands())
        h_max, v_max = max(layer[1] for layer in layers), max(layer[2] for layer in layers)
        share = sum(layer[1] * layer[2] for layer in layers) / (h_max * v_max)
        cost += int(full_size[0] * full_size[1] * share * 2)
    elif image.format == "WEBP":
        # Pillow holds the file; libwebp's animation decoder two canvases, and hands a copy over.
        cost += file_bytes + 3 * pixels * 4
    elif image.format == "TIFF":
        # libtiff reads a strip (or tile) whole, and one strip may be the whole image.
        bits = image.tag_v2.get(258) if hasattr(image, "tag_v2") else None
        bits_per_pixel = sum(bits) if isinstance(bits, tuple) else 8 * len(image.getbands())
        cost += pixels * bits_per_pixel // 8
    if image.tile and image.tile[0][0] == "bmp_rle":
        if pixels > MAX_RLE_PIXELS:
            raise MediaError(
                "too_large", f"RLE-compressed BMP of {pixels} pixels: the limit is {MAX_RLE_PIXELS} pixels"
            )
        cost += pixels
    return cost


def _shrink(image: Image.Image, max_side: int) -> Image.Image:
    """A loaded image as RGB with its long side at most `max_side`. Only the decoded
    image is ever full size: Pillow's thumbnail shrinks the common modes in place; the others
    are converted to RGB band by band, each band reduced before the next is made."""
    if image.mode in _THUMBNAIL_MODES:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return image.convert("RGB")
    width, height = image.size
    factor = max(1, max(width, height) // max_side)
    if factor == 1:
        small = _to_rgb_image(image)
    else:
        rows = factor * max(1, _BAND_BYTES // (width * 4 * factor))
        small = Image.new("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
        scale = _value_scale(image)
        for top in range(0, height, rows):
            band = image.crop((0, top, width, min(height, top + rows)))
            small.paste(_to_rgb_image(band, scale).reduce(factor), (0, top // factor))
    small.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return small


def _value_scale(image: Image.Image) -> tuple[float, float] | None:
    """For 16-bit, 32-bit and float grey images: (offset, factor) that map their values onto
    0-255 (Pillow's own conversion clips them)."""
    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return None
    low, high = image.getextrema()
    return float(low), 255.0 / max(float(high) - float(low), 1e-9)


def _to_rgb_image(image: Image.Image, scale: tuple[float, float] | None = None) -> Image.Image:
    """`image` (small or one band) in RGB."""
    scale = scale if scale is not None else _value_scale(image)
    if scale is not None:
        values = np.asarray(image, dtype=np.float32)
        grey = np.clip((values - scale[0]) * scale[1], 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return image.convert("RGB")


# ----------------------------------------------------------------------------- video


def _to_rgb(frame: av.VideoFrame, max_side: int) -> tuple[np.ndarray, float]:
    """The frame as upright RGB, scaled (by FFmpeg's swscale) to at most `max_side`; with the
    scale (`Frame.source_scale`)."""
    scale = min(1.0, max_side / max(frame.width, frame.height))
    width, height = max(2, round(frame.width * scale)), max(2, round(frame.height * scale))
    image = frame.to_ndarray(format="rgb24", width=width, height=height)
    turns = round((frame.rotation or 0) / 90) % 4  # display matrix, counter-clockwise degrees
    return np.ascontiguousarray(np.rot90(image, turns)), scale


def _open_error(path: Path, demuxer: str, exc: Exception, timed_out: bool) -> MediaError:
    # A read cut by the open timeout can look like the end of the file to the demuxer ("moov
    # atom not found"): once that timeout has passed, it is the reason.
    if isinstance(exc, av.error.ExitError) or timed_out:
        return MediaError("timeout", "opening the video took longer than its time limit")
    if isinstance(exc, MemoryError):
        return MediaError("too_large", "opening the video needs more memory than there is")
    with path.open("rb") as file:
        head = file.read(12)
    if demuxer == MP4 and head[4:8] == b"ftyp":  # an MP4/QuickTime file whose index FFmpeg could not find
        return MediaError("unreadable", "the video is truncated or incomplete (no moov atom)")
    if isinstance(exc, av.error.InvalidDataError):
        return MediaError("unreadable", "not a video FFmpeg can read")
    return MediaError("unreadable", f"FFmpeg cannot open the file: {exc}"[:300])


def _frame_bytes(frame: av.VideoFrame) -> int:
    return sum(plane.buffer_size for plane in frame.planes)


class _MemoryGuard:
    """Watches the growth of this process's resident memory since the guard was made, read
    from /proc/self/statm (Linux; elsewhere the guard sees no growth)."""

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._start = self.resident()

    def resident(self) -> int:
        try:
            with open("/proc/self/statm", "rb") as statm:
                return int(statm.read().split()[1]) * self._page
        except (OSError, ValueError, IndexError):
            return 0

    def check(self) -> None:
        grown = self.resident() - self._start
        if grown > MAX_DECODE_GROWTH_BYTES:
            raise MediaError(
                "too_large",
                f"decoding the video needed {grown >> 20} MiB, the limit is {MAX_DECODE_GROWTH_BYTES >> 20} MiB",
            )


def _open_video(path: Path, demuxer: str, deadline: float) -> tuple[av.container.InputContainer, int | None]:
    """Open with the sniffed demuxer only, after checking its index, before `deadline`; with
    the size the container declares for the file (`containers.declared_size`).
    PyAV's open timeout applies to opening and to probing in turn: half the time each."""
    with path.open("rb") as file:
        check_index(file, demuxer, deadline)
        declared = declared_size(file, demuxer)
    remaining = max(0.001, deadline - time.monotonic())
    options = dict(_OPEN_OPTIONS, format_whitelist=demuxer)
    if demuxer == MP4:
        options["enable_drefs"] = "0"  # never open the files an MP4 refers to
    started = time.monotonic()
    try:
        container = av.open(str(path), mode="r", format=demuxer, options=options, timeout=(remaining / 2, remaining))
    except (av.FFmpegError, OSError, UnicodeDecodeError, MemoryError) as exc:
        raise _open_error(path, demuxer, exc, time.monotonic() - started >= remaining / 2) from None
    return container, declared


def _check_frame(frame: av.VideoFrame) -> None:
    if frame.width * frame.height > MAX_VIDEO_PIXELS:
        raise MediaError("too_large", f"a frame of {frame.width}x{frame.height} pixels is too large")
    size = _frame_bytes(frame)
    if size > MAX_FRAME_BYTES:
        raise MediaError(
            "too_large",
            f"a frame of {frame.width}x{frame.height} pixels in {frame.format.name} takes {size >> 20} MiB, "
            f"the limit is {MAX_FRAME_BYTES >> 20} MiB",
        )


def _check_size(context: av.codec.context.CodecContext) -> None:
    """The size the decoder last read from the stream (it changes mid-stream in a hostile
    one); FFmpeg refuses to allocate frames over max_pixels, this says why none came."""
    if (context.width or 0) * (context.height or 0) > MAX_VIDEO_PIXELS:
        raise MediaError("too_large", f"a frame of {context.width}x{context.height} pixels is too large")


def _decode_error(context: av.codec.context.CodecContext, exc: Exception) -> MediaError | None:
    """The MediaError a decoding error means, None when it is only a damaged packet."""
    _check_size(context)
    if isinstance(exc, MemoryError):
        return MediaError("too_large", "decoding needs more memory than there is")
    if isinstance(exc, av.error.ArgumentError):
        # EINVAL: the decoder refused the frame's dimensions (FFmpeg resets them to 0 first)
        return MediaError("too_large", f"FFmpeg refused a frame over {MAX_VIDEO_PIXELS} pixels (or of no size)")
    return None


class Samples:
    """The frames of one file, in order (an iterator). Once they are all out, `damage` says
    why a damaged file was answered from the frames it still had: a readable reason (where
    the data ends or what could not be decoded, and how many frames were used), None when
    nothing was wrong."""

    def __init__(self, frames: Callable[[Samples], Generator[Frame, None, None]]) -> None:
        self.damage: str | None = None
        self._frames = frames(self)

    def __iter__(self) -> Samples:
        return self

    def __next__(self) -> Frame:
        return next(self._frames)

    def close(self) -> None:
        """Stop early: the file is closed."""
        self._frames.close()


#: Positions within this of a sample time count as at it (timestamps are rounded to ticks).
_EPSILON_S = 1e-4
#: Decode errors after which the rest of a video is given up.
_MAX_DECODE_ERRORS = 50


class _Grid:
    """Sample times `offset`, `offset` + `step`... from the first frame, at most `count`: the
    frame on screen at each is a sample. A face on screen for `step` or longer, from `a` to
    `a` + `step` or later, is on screen at the sample time in [a, a + step): it is in a sample,
    whatever the offset below `step`. The offset is the smallest one that needs no more
    samples than the duration asks for (a 2.002 s clip: 0.002 and 1.002 s, two frames, early
    in the clip): early samples need fewer frames decoded before them, and an encoder's
    keyframes at whole seconds from the start then are samples of a video of whole seconds.

    Frames well before a sample time are decoded only when later frames refer to them
    (`skip_frame` NONREF); those in the window before one all are, so the frame on screen at
    it is among them: the window is two frame durations, 0.1 s at least."""

    def __init__(self, step: float, count: int, offset: float, frame_s: float) -> None:
        self.step = step
        self.count = count
        self.offset = offset
        self.frame_s = frame_s
        self.window = max(0.1, 2 * frame_s)

    def time(self, k: int) -> float:
        return self.offset + k * self.step

    def first_at_or_after(self, position: float) -> int:
        """Index of the first sample time at or after `position`."""
        return max(0, math.ceil((position - self.offset - _EPSILON_S) / self.step))

    def near(self, position: float) -> bool:
        """Whether a frame starting at `position` may be on screen at a sample time."""
        k = self.first_at_or_after(position)
        return k < self.count and self.time(k) - position <= self.window

    def past_the_end(self, position: float) -> bool:
        """Whether a packet at `position` is so far past the last sample time that no frame
        from it on can be a sample (B-frames come a few frames out of order: half a second)."""
        return position > self.time(self.count - 1) + self.window + 0.5


def _grid(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, interval_s: float, max_frames: int
) -> _Grid:
    """The sample times of a video: every `interval_s`, or evenly over its duration when
    `max_frames` would not reach its end. Without a duration in the container, `max_frames`
    from the first frame; with one, as many as it needs and no frame decoded past the last (a
    container that declares less than it holds loses the rest)."""
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    rate = stream.guessed_rate or stream.average_rate
    frame_s = 1 / float(rate) if rate else 0.05
    step = max(interval_s, 1e-3)
    count = max(1, max_frames)
    if duration is None or duration <= 0:
        return _Grid(step, count, 0.0, frame_s)
    if duration > step * count:
        step = duration / count
    count = max(1, min(count, math.floor(duration / step + 1e-9)))
    offset = min(max(0.0, duration - count * step), step - _EPSILON_S)
    return _Grid(step, count, offset, frame_s)


@dataclass(frozen=True)
class _Sampling:
    """What `sample_frames` and `sample_video_frames` were asked for."""

    interval_s: float
    max_frames: int
    timeout_s: float
    keyframes_only: bool
    max_side: int


def sample_video_frames(
    path: Path,
    interval_s: float = 1.0,
    max_frames: int = 60,
    timeout_s: float = 60.0,
    keyframes_only: bool = False,
    demuxer: str | None = None,
    max_side: int = MAX_DECODE_SIDE,
) -> Samples:
    """Frames to look at in a video, so that a face on screen for `interval_s` or longer
    anywhere in it is in one, whatever the encoder's keyframes: the frame on screen at each of
    the times `offset` + k x `interval_s` from the first frame, each frame once (`_Grid`: how
    the offset, below `interval_s`, is chosen from the container's duration to need the fewest
    frames). At most `max_frames`: a video longer than `interval_s` x `max_frames` is sampled
    evenly over its length instead. Only what those frames need is decoded: frames no other
    frame refers to are skipped unless a sample time is near, intra-only codecs decode nothing
    else, the demuxer seeks to a keyframe the container's index shows before the next sample
    time when nothing from it on has been decoded, and nothing is decoded past the last one.

    With `keyframes_only` the decoder skips every frame that is not a keyframe and keeps
    keyframes at least `interval_s` apart: cheaper, but what it sees depends on the encoder.

    Opening and decoding stop with a `timeout` error once they have taken `timeout_s`. A file
    cut short (its container declares more bytes than it has), with packets cut off or not
    decodable, gives the frames found and says so in `Samples.damage`; without any frame it
    is an `unreadable` error.
    """
    sampling = _Sampling(interval_s, max_frames, timeout_s, keyframes_only, max_side)
    return Samples(lambda samples: _video_frames(samples, path, sampling, demuxer))


def _video_frames(
    samples: Samples, path: Path, sampling: _Sampling, demuxer: str | None
) -> Generator[Frame, None, None]:
    deadline = time.monotonic() + sampling.timeout_s
    if demuxer is None:
        kind, demuxer = _sniff(path)
        if kind != "video":
            raise MediaError("unreadable", "not a video format read here (MP4/QuickTime, Matroska/WebM, AVI)")
    guard = _MemoryGuard()
    container, declared = _open_video(path, demuxer, deadline)
    with container:
        if time.monotonic() > deadline:
            raise MediaError("timeout", f"opening the video took longer than {sampling.timeout_s:g} s")
        if not container.streams.video:
            raise MediaError("no_video_stream", "the file has no video stream")
        stream = container.streams.video[0]
        context = stream.codec_context
        if context is None or context.name not in VIDEO_DECODERS:
            codec = context.name if context is not None else stream.codec_tag or "unknown"
            raise MediaError("unreadable", f"the video codec {codec} is not decoded here")
        width, height = context.width, context.height
        if width * height > MAX_VIDEO_PIXELS:
            raise MediaError("too_large", f"video of {width}x{height} pixels is too large")
        for other in container.streams:
            if other.index != stream.index:
                other.discard = av.stream.Discard.all  # the demuxer skips their packets
        context.options = {"max_pixels": str(MAX_VIDEO_PIXELS)}
        context.thread_count = 1  # one video per worker process; processes give parallelism
        guard.check()
        size = path.stat().st_size
        decoder = _Decoder(container, stream, deadline, sampling.timeout_s, guard)
        if sampling.keyframes_only:
            frames = decoder.keyframes(sampling.interval_s, sampling.max_frames)
        else:
            frames = decoder.on_grid(_grid(container, stream, sampling.interval_s, sampling.max_frames))
        count = 0
        for frame in frames:
            yield Frame(count, round(decoder.position(frame), 3), *_to_rgb(frame, sampling.max_side))
            count += 1
        notes = decoder.notes
        if declared is not None and declared > size:
            notes.insert(0, f"the file ends after {size} of the {declared} bytes its container declares")
    if notes and count == 0:
        raise MediaError("unreadable", f"the video is damaged or truncated: {'; '.join(notes)}; no frame is usable")
    if count == 0:
        raise MediaError("no_frames", "the video has no decodable frames")
    if notes:
        samples.damage = f"{'; '.join(notes)}; {count} frames used"


def _reason(exc: Exception) -> str:
    """FFmpeg's words for an error, without its errno and function name."""
    return str(getattr(exc, "strerror", None) or exc)[:160]


class _Decoder:
    """Demuxes and decodes the first video stream within the limits, noting damage: packets
    cut short, demuxing and decoding errors."""

    def __init__(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 deadline: float, timeout_s: float, guard: _MemoryGuard) -> None:  # fmt: skip
        self.container = container
        self.stream = stream
        self.context = stream.codec_context
        self.deadline = deadline
        self.timeout_s = timeout_s
        self.guard = guard
        self.time_base = stream.time_base or fractions.Fraction(1, 90_000)
        self.start: int | None = None  # pts of the first frame, in the stream's time base
        self.fed: int | None = None  # dts (else pts) of the last packet sent to the decoder
        self.last_read: int | None = None  # timestamp of the last packet read
        self.notes: list[str] = []
        self.errors = 0
        self.seeks = 0
        self.can_seek = True
        self.landing: int | None = None  # after a seek: the last packet decoded before it
        self.key_delay = 0  # presentation minus decoding timestamp of keyframes
        self.previous: int | None = None  # pts of the last frame decoded
        rate = stream.guessed_rate or stream.average_rate
        self.tick = max(1, round(1 / (float(rate) * self.time_base))) if rate else 1

    def position(self, frame: av.VideoFrame) -> float:
        """Seconds from the first frame."""
        if frame.pts is None or self.start is None:
            return 0.0
        return float((frame.pts - self.start) * self.time_base)

    def packet_position(self, packet: av.Packet) -> float | None:
        stamp = packet.pts if packet.pts is not None else packet.dts
        if stamp is None or self.start is None:
            return None
        return float((stamp - self.start) * self.time_base)

    def packets(self) -> Iterator[av.Packet]:
        """Packets of the stream, then the decoder's flush packet; a demuxing error ends them."""
        try:
            for packet in self.container.demux(self.stream):
                if time.monotonic() > self.deadline:
                    raise MediaError("timeout", f"decoding took longer than {self.timeout_s:g} s")
                if packet.size > MAX_PACKET_BYTES:
                    raise MediaError("too_large", f"a packet of {packet.size} bytes is too large")
                if packet.size:
                    stamp = packet.pts if packet.pts is not None else packet.dts
                    self.last_read = stamp if stamp is not None else self.last_read
                    if packet.is_keyframe and packet.pts is not None and packet.dts is not None:
                        self.key_delay = max(self.key_delay, packet.pts - packet.dts)
                    if self.landing is not None:
                        decoded = packet.dts if packet.dts is not None else packet.pts
                        if decoded is not None and decoded <= self.landing:
                            self.can_seek = False
                        self.landing = None
                    if packet.is_corrupt:
                        self.notes.append(f"the data ends inside a packet at {self._at()}")
                yield packet
        except (av.FFmpegError, OSError) as exc:
            if isinstance(exc, av.error.ExitError):
                raise MediaError("timeout", f"decoding took longer than {self.timeout_s:g} s") from None
            self.notes.append(f"the file cannot be read past {self._at()}: {_reason(exc)}")
            yield av.Packet()  # an empty packet drains the decoder

    def _at(self) -> str:
        """Where the last packet read is, for a note."""
        if self.last_read is None:
            return "the start"
        return f"{float((self.last_read - (self.start or 0)) * self.time_base):.1f} s"

    def decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        """The frames the packet completes; damaged packets give none and a note."""
        if packet.size:
            self.fed = packet.dts if packet.dts is not None else packet.pts
        try:
            frames = self.context.decode(packet)
        except (av.FFmpegError, MemoryError) as exc:
            error = _decode_error(self.context, exc)
            if error is not None:
                raise error from None
            self.errors += 1
            if self.errors == 1:
                self.notes.append(f"decode error at {self._at()}: {_reason(exc)}")
            if self.errors == _MAX_DECODE_ERRORS:
                self.notes.append(f"{_MAX_DECODE_ERRORS} packets could not be decoded, the rest was not tried")
            return []
        _check_size(self.context)
        for frame in frames:
            _check_frame(frame)
        self.guard.check()
        for frame in frames:
            if frame.pts is None:  # no timestamp: one frame duration after the last
                frame.pts = self.previous + self.tick if self.previous is not None else 0
            self.previous = frame.pts
        if frames and self.start is None:
            self.start = frames[0].pts
        return frames

    def keyframes(self, interval_s: float, max_frames: int) -> Iterator[av.VideoFrame]:
        """Keyframes at least `interval_s` apart."""
        self.context.skip_frame = "NONKEY"
        next_time = 0.0
        count = 0
        for packet in self.packets():
            for frame in self.decode(packet):
                position = self.position(frame)
                if position + 1e-6 < next_time:
                    continue
                yield frame
                count += 1
                next_time = position + interval_s
                if count >= max_frames:
                    return
            if self.errors >= _MAX_DECODE_ERRORS:
                return

    def on_grid(self, grid: _Grid) -> Iterator[av.VideoFrame]:
        """The frame on screen at each of the grid's times, each frame once; a video that ends
        before the first gives its last frame."""
        intra_only = bool(self.context.codec.intra_only)
        k = 0  # the next sample time
        held: av.VideoFrame | None = None  # the last frame that starts at or before it
        last: float | None = None  # position of the last frame given
        given = 0
        skip = "DEFAULT"
        landed = False  # sought ahead, until the first frame after the seek
        while True:
            seek_to = back = None
            for packet in self.packets():
                at = self.packet_position(packet)
                if packet.size and at is not None:
                    if grid.past_the_end(at):
                        packet = av.Packet()  # drain what was decoded before it, then stop
                    elif not grid.near(at):
                        if intra_only:
                            continue  # no other frame refers to it
                        if skip != "NONREF":
                            self.context.skip_frame = skip = "NONREF"
                    elif skip != "DEFAULT":
                        self.context.skip_frame = skip = "DEFAULT"
                for frame in self.decode(packet):
                    position = self.position(frame)
                    if last is not None and position <= last + _EPSILON_S:
                        continue  # given already, or before (decoded again after a seek back)
                    after = position > grid.time(k) + _EPSILON_S
                    if landed:
                        landed = False
                        if after:
                            # The keyframe sought starts after the sample time, so the frame on
                            # screen then came before it: back to the keyframe before.
                            back = self._keyframe_before(frame.pts)
                            if back is not None:
                                break
                    if after:
                        if held is not None:
                            yield held
                            last, held, given = self.position(held), None, given + 1
                        k = grid.first_at_or_after(position)
                        if k >= grid.count:
                            return
                        seek_to = self._keyframe_ahead(grid.time(k))
                    held = frame
                if self.errors >= _MAX_DECODE_ERRORS or not packet.size or seek_to is not None or back is not None:
                    break
            if back is not None:
                self._seek(back)
            elif seek_to is not None:
                landed = self._seek(seek_to)
            else:
                stopped = self.errors >= _MAX_DECODE_ERRORS
                if held is not None and (given == 0 or stopped or self._end(held, grid) > grid.time(k) + _EPSILON_S):
                    yield held  # the last frame, on screen at the sample time (or the last sound one)
                return

    def _end(self, frame: av.VideoFrame, grid: _Grid) -> float:
        """Where the frame stops being on screen (seconds from the first frame)."""
        duration = float(frame.duration * self.time_base) if frame.duration else grid.frame_s
        return self.position(frame) + duration

    def _keyframe_ahead(self, position: float) -> int | None:
        """Where to seek for the frame on screen at `position`: its timestamp, when the
        container's index has a keyframe that starts at or before it (`search_timestamp` finds
        entries by decoding timestamp, the MP4 demuxer seeks by presentation timestamp: a
        keyframe shows `key_delay` after it is decoded) and no packet from that keyframe on has
        been decoded yet. None when decoding on is as good."""
        if self.start is None or self.fed is None or not self.can_seek:
            return None
        entries = self.stream.index_entries
        target = self.start + math.floor(position / self.time_base + _EPSILON_S)
        found = entries.search_timestamp(target - self.key_delay, backward=True) if len(entries) else -1
        if found < 0 or entries[found].timestamp <= self.fed:
            return None
        return target

    def _keyframe_before(self, stamp: int) -> int | None:
        """A timestamp to seek to for the keyframe before the one that starts at `stamp`."""
        entries = self.stream.index_entries
        found = entries.search_timestamp(stamp - self.key_delay - 1, backward=True) if len(entries) else -1
        return entries[found].timestamp if found >= 0 else None

    def _seek(self, stamp: int) -> bool:
        """Seek the demuxer to the last keyframe that starts at or before `stamp` (the decoder
        is flushed). A seek that lands before the packets already decoded turns seeking off:
        the index misled it, and decoding on is then the cheaper way."""
        try:
            self.container.seek(stamp, stream=self.stream, backward=True)
        except av.FFmpegError:
            self.can_seek = False
            return False
        self.seeks += 1
        self.landing = self.fed
        return True


def sample_frames(
    path: Path,
    interval_s: float = 1.0,
    max_frames: int = 60,
    timeout_s: float = 60.0,
    keyframes_only: bool = False,
    max_side: int = MAX_DECODE_SIDE,
) -> Samples:
    """Frames to look at: the picture itself (its first frame) for a still image, else
    sampled video frames (`sample_video_frames`), long side at most `max_side`. The format is
    the one the file's bytes say."""
    sampling = _Sampling(interval_s, max_frames, timeout_s, keyframes_only, max_side)
    return Samples(lambda samples: _frames(samples, path, sampling))


def _frames(samples: Samples, path: Path, sampling: _Sampling) -> Generator[Frame, None, None]:
    kind, name = _sniff(path)
    try:
        if kind == "image":
            yield Frame(0, 0.0, *_decode_still(path, name, sampling.max_side))
            return
        yield from _video_frames(samples, path, sampling, name)  # closed with this generator
    finally:
        release_memory()
