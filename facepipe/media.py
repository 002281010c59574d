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

A bomb is `too_large`, a format or codec that is not read here `unreadable`.
"""

from __future__ import annotations

import ctypes
import math
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.stream
import numpy as np
from PIL import Image

from facepipe.containers import MP4, SNIFF_BYTES, SUPPORTED, ContainerError, check_index, sniff

#: Frames are decoded at most this large (long side); detection runs on a smaller copy.
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
        return _decode_still(path, name)
    finally:
        release_memory()


def _decode_still(path: Path, fmt: str) -> np.ndarray:
    """Decode the first frame of a still image of Pillow format `fmt` (sniffed)."""
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
        image.draft("RGB", (MAX_DECODE_SIDE, MAX_DECODE_SIDE))  # JPEG: decode at 1/2, 1/4 or 1/8
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
            small = _shrink(image)
        except MemoryError:
            raise MediaError("too_large", "the image needs more memory than there is") from None
        except Exception as exc:  # noqa: BLE001 - truncated or corrupt data, unsupported modes
            raise MediaError("unreadable", f"image cannot be decoded: {type(exc).__name__}: {exc}"[:300]) from None
    if orientation in _ORIENTATION:
        small = small.transpose(_ORIENTATION[orientation])
    return np.asarray(small)


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


def _shrink(image: Image.Image) -> Image.Image:
    """A loaded image as RGB with its long side at most MAX_DECODE_SIDE. Only the decoded
    image is ever full size: Pillow's thumbnail shrinks the common modes in place; the others
    are converted to RGB band by band, each band reduced before the next is made."""
    if image.mode in _THUMBNAIL_MODES:
        image.thumbnail((MAX_DECODE_SIDE, MAX_DECODE_SIDE), Image.Resampling.LANCZOS)
        return image.convert("RGB")
    width, height = image.size
    factor = max(1, max(width, height) // MAX_DECODE_SIDE)
    if factor == 1:
        small = _to_rgb_image(image)
    else:
        rows = factor * max(1, _BAND_BYTES // (width * 4 * factor))
        small = Image.new("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
        scale = _value_scale(image)
        for top in range(0, height, rows):
            band = image.crop((0, top, width, min(height, top + rows)))
            small.paste(_to_rgb_image(band, scale).reduce(factor), (0, top // factor))
    small.thumbnail((MAX_DECODE_SIDE, MAX_DECODE_SIDE), Image.Resampling.LANCZOS)
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


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """The frame as upright RGB, scaled (by FFmpeg's swscale) to at most MAX_DECODE_SIDE."""
    scale = min(1.0, MAX_DECODE_SIDE / max(frame.width, frame.height))
    width, height = max(2, round(frame.width * scale)), max(2, round(frame.height * scale))
    image = frame.to_ndarray(format="rgb24", width=width, height=height)
    turns = round((frame.rotation or 0) / 90) % 4  # display matrix, counter-clockwise degrees
    return np.ascontiguousarray(np.rot90(image, turns))


def _open_error(path: Path, demuxer: str, exc: Exception) -> MediaError:
    if isinstance(exc, av.error.ExitError):
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


def _open_video(path: Path, demuxer: str, deadline: float) -> av.container.InputContainer:
    """Open with the sniffed demuxer only, after checking its index, before `deadline`.
    PyAV's open timeout applies to opening and to probing in turn: half the time each."""
    try:
        with path.open("rb") as file:
            check_index(file, demuxer, deadline)
    except ContainerError as exc:
        raise MediaError(exc.kind, exc.detail) from None
    remaining = max(0.001, deadline - time.monotonic())
    options = dict(_OPEN_OPTIONS, format_whitelist=demuxer)
    if demuxer == MP4:
        options["enable_drefs"] = "0"  # never open the files an MP4 refers to
    try:
        return av.open(str(path), mode="r", format=demuxer, options=options, timeout=(remaining / 2, remaining))
    except (av.FFmpegError, OSError, UnicodeDecodeError, MemoryError) as exc:
        raise _open_error(path, demuxer, exc) from None


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


def sample_video_frames(
    path: Path,
    interval_s: float = 1.0,
    max_frames: int = 30,
    timeout_s: float = 60.0,
    keyframes_only: bool = True,
    demuxer: str | None = None,
) -> Iterator[Frame]:
    """Yield frames at least `interval_s` apart from the start of the video, at most `max_frames`.

    With `keyframes_only` the decoder skips every frame that is not a keyframe,
    which makes sampling nearly free; encoders put keyframes at scene cuts and
    every few seconds, so people who appear later are still seen. Without it
    every frame is decoded and one per interval is kept. Opening and decoding stop
    with a `timeout` error once they have taken `timeout_s`.
    """
    deadline = time.monotonic() + timeout_s
    if demuxer is None:
        kind, demuxer = _sniff(path)
        if kind != "video":
            raise MediaError("unreadable", "not a video format read here (MP4/QuickTime, Matroska/WebM, AVI)")
    guard = _MemoryGuard()
    container = _open_video(path, demuxer, deadline)
    with container:
        if time.monotonic() > deadline:
            raise MediaError("timeout", f"opening the video took longer than {timeout_s:g} s")
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
        if keyframes_only:
            context.skip_frame = "NONKEY"
        guard.check()
        start = None
        next_time = 0.0
        count = 0
        decode_errors = 0
        packets = 0
        for packet in container.demux(stream):
            packets += 1 if packet.size else 0
            if time.monotonic() > deadline:
                raise MediaError("timeout", f"decoding took longer than {timeout_s:g} s")
            if packet.size > MAX_PACKET_BYTES:
                raise MediaError("too_large", f"a packet of {packet.size} bytes is too large")
            try:
                frames = packet.decode()
            except (av.FFmpegError, MemoryError) as exc:
                error = _decode_error(context, exc)
                if error is not None:
                    raise error from None
                decode_errors += 1
                if decode_errors > 50:
                    break
                continue
            _check_size(context)
            for frame in frames:
                _check_frame(frame)
            guard.check()
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
    """Frames to look at: the picture itself (its first frame) for a still image, else
    sampled video frames. The format is the one the file's bytes say."""
    kind, name = _sniff(path)
    try:
        if kind == "image":
            yield Frame(0, 0.0, _decode_still(path, name))
            return
        yield from sample_video_frames(path, interval_s, max_frames, timeout_s, keyframes_only, demuxer=name)
    finally:
        release_memory()
