"""Hostile media, made at run time: what an attacker uploads to exhaust a function worker.

Decompression bombs (a few KB that decode to hundreds of megabytes) in every image format
the function reads, multi-frame and animated images, progressive and CMYK JPEG; videos
whose later frames or second stream are huge, odd pixel formats at large sizes, codecs the
function does not decode, subtitle and attachment streams, absurd frame counts in an MP4
index; playlists, concat lists and SDP files that would make FFmpeg open other files or
the network; files whose magic says one format and name another. `build` writes them to a
folder (nothing is committed); each `Hostile` says what answer is acceptable.

Used by tests/unit/test_media_limits.py (peak memory of a worker-like process) and by the
chaos `memory` scenario (the same files through a running stack).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from facepipe_tools.stats import peak_rss_mb

#: The answers a case accepts: error kinds (an error record of that kind), FACE (a result
#: naming exactly the person in the photo the files were made with) or NOBODY (a result
#: naming nobody).
FACE = "face"
NOBODY = "nobody"
TOO_LARGE = frozenset({"too_large"})
UNREADABLE = frozenset({"unreadable"})
REFUSED = frozenset({"too_large", "unreadable"})
#: Refused, or decoded within the limits: the bombs are flat pictures, nobody in them.
BOUNDED = frozenset({"too_large", "unreadable", NOBODY})


@dataclass(frozen=True)
class Hostile:
    """One hostile file: `name` is also its file name (its suffix is part of the trick)."""

    name: str
    what: str
    make: Callable[[Path, Path], None]  # (output path, a photo with a known face)
    accept: frozenset[str]


def ffmpeg(*args: str, timeout: float = 600.0) -> None:
    """Run Debian's ffmpeg (an argument list, never a shell)."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
    )


# ----------------------------------------------------------------------------- images


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(
    out: Path, width: int, height: int, color_type: int, depth: int, extra_chunks: tuple[bytes, ...] = ()
) -> None:
    """A PNG of zero pixels, compressed row by row: a few hundred KB for any size."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    row = b"\0" * (1 + (width * channels * depth + 7) // 8)
    compressor = zlib.compressobj(9)
    with out.open("wb") as file:
        file.write(b"\x89PNG\r\n\x1a\n")
        file.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)))
        for chunk in extra_chunks:
            file.write(chunk)
        if color_type == 3:
            file.write(_png_chunk(b"PLTE", bytes(range(256)) * 3))
        pending = b""
        for _ in range(height):
            pending += compressor.compress(row)
            if len(pending) > 1 << 20:
                file.write(_png_chunk(b"IDAT", pending))
                pending = b""
        pending += compressor.flush()
        file.write(_png_chunk(b"IDAT", pending))
        file.write(_png_chunk(b"IEND", b""))


def _png(width: int, height: int, color_type: int, depth: int) -> Callable[[Path, Path], None]:
    return lambda out, face: png_bomb(out, width, height, color_type, depth)


def png_text_bomb(out: Path, face: Path) -> None:
    """A small PNG with compressed text and ICC chunks that inflate to 64 MiB each."""
    bomb = zlib.compress(b"\0" * (64 << 20), 9)
    chunks = (
        _png_chunk(b"zTXt", b"Comment\0\0" + bomb),
        _png_chunk(b"iCCP", b"icc\0\0" + bomb),
        _png_chunk(b"iTXt", b"XML:com.adobe.xmp\0\1\0\0\0" + bomb),
    )
    png_bomb(out, 64, 64, 2, 8, chunks)


def gif_bomb(out: Path, face: Path, width: int = 8000, height: int = 8000, frames: int = 3) -> None:
    """An animated GIF of `frames` full-size frames (LZW of a flat colour: small)."""
    image = Image.new("P", (width, height), 1)
    image.putpalette(bytes(range(256)) * 3)
    image.save(out, "GIF", save_all=True, append_images=[image] * (frames - 1), duration=100, loop=0)


def gif_huge_screen(out: Path, face: Path) -> None:
    """A GIF whose logical screen is 65535x65535 (4.3 gigapixels) around a 1x1 frame."""
    buffer = io.BytesIO()
    Image.new("P", (1, 1)).save(buffer, "GIF")
    data = bytearray(buffer.getvalue())
    data[6:10] = struct.pack("<HH", 65535, 65535)
    out.write_bytes(bytes(data))


def tiff_bomb(out: Path, face: Path, mode: str = "CMYK", side: int = 8000, pages: int = 2) -> None:
    """A deflate-compressed TIFF of `pages` flat pages: one strip per page, the whole image."""
    image = Image.new(mode, (side, side))
    image.save(out, "TIFF", compression="tiff_adobe_deflate", save_all=True, append_images=[image] * (pages - 1))


def webp_bomb(out: Path, face: Path, side: int = 7000, frames: int = 1) -> None:
    """A lossless WebP (or an animated one) of a flat colour."""
    image = Image.new("RGBA", (side, side), (10, 20, 30, 255))
    if frames > 1:
        image.save(out, "WEBP", lossless=True, method=0, save_all=True, append_images=[image] * (frames - 1))
    else:
        image.save(out, "WEBP", lossless=True, method=0)


def webp_huge_canvas(out: Path, face: Path) -> None:
    """An animated WebP whose VP8X header announces a 16384x16384 canvas around 8x8 frames."""
    buffer = io.BytesIO()
    frames = [Image.new("RGBA", (8, 8), (index, 0, 0, 255)) for index in range(2)]
    frames[0].save(buffer, "WEBP", lossless=True, save_all=True, append_images=frames[1:])
    data = bytearray(buffer.getvalue())
    at = data.find(b"VP8X")
    if at < 0:
        raise RuntimeError("no VP8X chunk in the animated WebP")
    data[at + 12 : at + 18] = (16383).to_bytes(3, "little") * 2
    out.write_bytes(bytes(data))


def jpeg_bomb(out: Path, face: Path, mode: str = "CMYK", side: int = 6000, progressive: bool = True) -> None:
    """A flat JPEG; progressive ones make libjpeg keep every DCT coefficient of the image."""
    Image.new(mode, (side, side)).save(out, "JPEG", quality=10, progressive=progressive, subsampling=0)


def jpeg_huge_header(out: Path, face: Path) -> None:
    """A real small JPEG whose frame header claims 65000x65000 pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    at = data.find(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", 65000, 65000)
    out.write_bytes(bytes(data))


def bmp_rle_bomb(out: Path, face: Path, side: int = 8000) -> None:
    """An RLE8 BMP of `side` x `side` (Pillow decodes RLE in Python): 2 bytes per 255 pixels."""
    rows = bytearray()
    row = (b"\xff\x01" * (side // 255)) + bytes([side % 255, 1]) + b"\x00\x00"
    for _ in range(side):
        rows += row
    rows += b"\x00\x01"
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    header_size = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 8, 1, len(rows), 2835, 2835, 256, 0)
    file_header = b"BM" + struct.pack("<IHHI", header_size + len(rows), 0, 0, header_size)
    out.write_bytes(file_header + info + palette + rows)


def face_still(out: Path, face: Path, fmt: str) -> None:
    with Image.open(face) as image:
        image.convert("RGB").save(out, fmt)


# ----------------------------------------------------------------------------- videos

_X264 = ("-c:v", "libx264", "-preset", "ultrafast", "-threads", "1")


def _face_clip(face: Path, out: Path, *encode: str, seconds: float = 2.0, extra_filter: str = "") -> None:
    scale = "scale=480:-2,setsar=1" + (f",{extra_filter}" if extra_filter else "")
    ffmpeg("-loop", "1", "-framerate", "5", "-t", f"{seconds:g}", "-i", str(face), "-vf", scale, *encode, str(out))


def _flat_clip(out: Path, size: str, *encode: str, frames: int = 2, pix_fmt: str | None = None) -> None:
    fmt = ["-pix_fmt", pix_fmt] if pix_fmt else []
    ffmpeg("-f", "lavfi", "-i", f"color=c=gray:s={size}:r=5", "-frames:v", str(frames), *encode, *fmt, str(out))


def later_frames_huge_h264(out: Path, face: Path) -> None:
    """H.264 whose first frames are 320x240 and later ones 8192x4608 (beyond 8K) for 2 s, so that
    sampling on time lands on them too: the header (and the container) only tell of the first
    size."""
    work = out.parent / f".{out.name}.parts"
    work.mkdir(exist_ok=True)
    small, big = work / "small.h264", work / "big.h264"
    _flat_clip(small, "320x240", *_X264, "-bsf:v", "h264_mp4toannexb", "-f", "h264", pix_fmt="yuv420p")
    _flat_clip(big, "8192x4608", *_X264, "-x264-params", "level=6.2", "-f", "h264", frames=10, pix_fmt="yuv420p")
    joined = work / "joined.h264"
    joined.write_bytes(small.read_bytes() + big.read_bytes())
    ffmpeg("-f", "h264", "-framerate", "5", "-i", str(joined), "-c", "copy", "-f", "mp4", str(out))
    shutil.rmtree(work)


def later_frames_huge_mjpeg(out: Path, face: Path) -> None:
    """Motion JPEG in AVI: the header says 320x240, from the third frame on (0.4 s to 1.6 s) the
    frames are 12000x12000, so that sampling on time lands on them too."""
    work = out.parent / f".{out.name}.parts"
    work.mkdir(exist_ok=True)
    for index in range(2):
        Image.new("L", (320, 240), 128).save(work / f"{index}.jpg", "JPEG", quality=5)
    Image.new("L", (12000, 12000), 128).save(work / "2.jpg", "JPEG", quality=5)
    for index in range(3, 8):
        shutil.copyfile(work / "2.jpg", work / f"{index}.jpg")
    ffmpeg("-framerate", "5", "-i", str(work / "%d.jpg"), "-c", "copy", "-f", "avi", str(out))
    shutil.rmtree(work)


def second_stream_huge(out: Path, face: Path) -> None:
    """Matroska: stream 0 the face at 480 px, stream 1 Motion JPEG at 12000x12000."""
    work = out.parent / f".{out.name}.parts"
    work.mkdir(exist_ok=True)
    clip, huge = work / "face.mkv", work / "huge.jpg"
    _face_clip(face, clip, *_X264, "-pix_fmt", "yuv420p")
    Image.new("L", (12000, 12000), 128).save(huge, "JPEG", quality=5)
    ffmpeg("-i", str(clip), "-loop", "1", "-framerate", "5", "-t", "2", "-i", str(huge),
           "-map", "0:v", "-map", "1:v", "-c:v:0", "copy", "-c:v:1", "copy", str(out))  # fmt: skip
    shutil.rmtree(work)


def huge_first_stream(out: Path, face: Path) -> None:
    """Motion JPEG at 12000x12000 as the only stream."""
    work = out.parent / f".{out.name}.parts"
    work.mkdir(exist_ok=True)
    huge = work / "huge.jpg"
    Image.new("L", (12000, 12000), 128).save(huge, "JPEG", quality=5)
    ffmpeg("-loop", "1", "-framerate", "5", "-t", "1", "-i", str(huge), "-c:v", "copy", str(out))
    shutil.rmtree(work)


def prores_4444_6k(out: Path, face: Path) -> None:
    """ProRes 4444 with alpha (yuva444p10: 8 bytes a pixel) at 6144x3456: 170 MB a frame."""
    _flat_clip(out, "6144x3456", "-c:v", "prores_ks", "-profile:v", "4444", "-qscale:v", "31",
               frames=2, pix_fmt="yuva444p10le")  # fmt: skip


def h264_444_10bit_8k(out: Path, face: Path) -> None:
    """H.264 High 4:4:4 Predictive, 10 bits, 7680x4320 (6 bytes a pixel: 200 MB a frame)."""
    _flat_clip(out, "7680x4320", *_X264, "-tune", "zerolatency", frames=2, pix_fmt="yuv444p10le")


def h264_8k_many_refs(out: Path, face: Path) -> None:
    """8K 4:2:0 H.264 with 16 reference frames and one keyframe: decoding every frame keeps
    16 frames of 50 MB."""
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=7680x4320:r=5", "-frames:v", "24", *_X264, "-tune", "zerolatency",
           "-x264-params", "ref=16:keyint=1000:min-keyint=1000:scenecut=0:bframes=0",
           "-pix_fmt", "yuv420p", str(out))  # fmt: skip


def hevc_clip(out: Path, face: Path) -> None:
    """The face in HEVC (MP4): a codec the function decodes."""
    _face_clip(face, out, "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error",
               "-pix_fmt", "yuv420p", "-tag:v", "hvc1")  # fmt: skip


def av1_clip(out: Path, face: Path) -> None:
    """The face in AV1 (WebM): a codec the function decodes."""
    _face_clip(face, out, "-c:v", "libsvtav1", "-preset", "12", "-pix_fmt", "yuv420p")


def ffv1_gray16(out: Path, face: Path) -> None:
    """FFV1 gray16 at 8000x8000 in Matroska: a lossless codec the function does not decode."""
    _flat_clip(out, "8000x8000", "-c:v", "ffv1", frames=1, pix_fmt="gray16le")


def rawvideo_rgb48(out: Path, face: Path) -> None:
    """Uncompressed rgb48 in AVI (4 MP, 24 MB a frame): refused, not decoded."""
    _flat_clip(out, "2560x1600", "-c:v", "rawvideo", frames=1, pix_fmt="rgb48le")


def with_subtitles_and_attachment(out: Path, face: Path) -> None:
    """The face, plus a subtitle stream, an audio stream and a 4 MiB attachment (Matroska)."""
    work = out.parent / f".{out.name}.parts"
    work.mkdir(exist_ok=True)
    subs, blob = work / "s.srt", work / "blob.bin"
    subs.write_text("".join(f"{i}\n00:00:0{i},000 --> 00:00:0{i},500\nline {i}\n\n" for i in range(1, 3)))
    blob.write_bytes(b"\0" * (4 << 20))
    ffmpeg("-loop", "1", "-framerate", "5", "-t", "2", "-i", str(face), "-i", str(subs),
           "-f", "lavfi", "-t", "2", "-i", "sine=frequency=440",
           "-vf", "scale=480:-2,setsar=1", *_X264, "-pix_fmt", "yuv420p", "-c:a", "libopus", "-c:s", "srt",
           "-attach", str(blob), "-metadata:s:t", "mimetype=application/octet-stream", str(out))  # fmt: skip
    shutil.rmtree(work)


def absurd_timestamps(out: Path, face: Path) -> None:
    """The face with timestamps a year apart (Matroska): a duration of years, two frames."""
    work = out.parent / f".{out.name}.parts"
    work.mkdir(exist_ok=True)
    clip = work / "face.mkv"
    _face_clip(face, clip, *_X264, "-pix_fmt", "yuv420p", seconds=0.4)
    ffmpeg("-i", str(clip), "-c", "copy", "-bsf:v", "setts=ts=PTS*31536000*5", str(out))
    shutil.rmtree(work)


# -- MP4 boxes, for indexes that claim absurd frame counts

CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf", b"edts", b"dinf"}


def mp4_boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, end) of each box between `start` and `end`."""
    end = len(data) if end is None else end
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        if size == 1:
            size = struct.unpack(">Q", data[at + 8 : at + 16])[0]
        elif size == 0:
            size = end - at
        yield kind, at, at + size
        at += size


def mp4_replace(data: bytes, path: tuple[bytes, ...], new: Callable[[bytes], bytes]) -> bytes:
    """`data` with the first box at `path` (types from the top) replaced by `new(old box)`;
    the sizes of the boxes around it are fixed. Offsets into mdat stay valid only when the
    changed box comes after it."""

    def rewrite(chunk: bytes, header: int, rest: tuple[bytes, ...]) -> bytes:
        for kind, start, end in mp4_boxes(chunk, header):
            if kind != rest[0]:
                continue
            inner = chunk[start:end]
            replaced = new(inner) if len(rest) == 1 else rewrite(inner, 8, rest[1:])
            if len(rest) > 1:
                replaced = struct.pack(">I", len(replaced)) + replaced[4:]
            return chunk[:start] + replaced + chunk[end:]
        raise KeyError(rest[0])

    return rewrite(data, 0, path)


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def _full_box(kind: bytes, payload: bytes, version_flags: int = 0) -> bytes:
    return _box(kind, struct.pack(">I", version_flags) + payload)


def _mp4_listing_samples(out: Path, face: Path, samples: int) -> tuple[bytes, Path]:
    """A real MP4 of a face (in a work folder beside `out`) whose sample table now lists
    `samples` sizes of 4 bits each (stz2) in one chunk; its bytes and the work folder."""
    work = out.parent / f".{out.name}.parts"
    work.mkdir(exist_ok=True)
    clip = work / "face.mp4"
    _face_clip(face, clip, *_X264, "-pix_fmt", "yuv420p", seconds=0.4)
    data = clip.read_bytes()
    stbl = (b"moov", b"trak", b"mdia", b"minf", b"stbl")
    sizes = struct.pack(">II", 4, samples) + b"\x11" * (samples // 2)
    data = mp4_replace(data, (*stbl, b"stts"), lambda old: _full_box(b"stts", struct.pack(">III", 1, samples, 1)))
    data = mp4_replace(data, (*stbl, b"stsc"), lambda old: _full_box(b"stsc", struct.pack(">IIII", 1, 1, samples, 1)))
    data = mp4_replace(data, (*stbl, b"stsz"), lambda old: _full_box(b"stz2", sizes))
    return data, work


def mp4_sample_count_bomb(out: Path, face: Path, samples: int = 30_000_000) -> None:
    """A real MP4 (index at the end) whose sample table now lists `samples` sizes of 4 bits
    each (stz2) in one chunk: 15 MB of file, over 30 bytes of FFmpeg memory per sample."""
    data, work = _mp4_listing_samples(out, face, samples)
    out.write_bytes(data)
    shutil.rmtree(work)


def mp4_edit_list_bomb(out: Path, face: Path, edits: int = 2000, samples: int = 100_000) -> None:
    """A real MP4 whose index lists `samples` samples and whose edit list has `edits`
    entries: 300 KB that keep FFmpeg busy for seconds while it opens the file (it applies
    every entry to every sample, and nothing interrupts that)."""
    data, work = _mp4_listing_samples(out, face, samples)
    edit_list = _box(b"edts", _full_box(b"elst", struct.pack(">I", edits) + struct.pack(">IiI", 1, 0, 0x10000) * edits))

    def with_edits(trak: bytes) -> bytes:
        children = [trak[start:end] for kind, start, end in mp4_boxes(trak, 8) if kind != b"edts"]
        kinds = [child[4:8] for child in children]
        children.insert(kinds.index(b"tkhd") + 1, edit_list)
        return _box(b"trak", b"".join(children))

    out.write_bytes(mp4_replace(data, (b"moov", b"trak"), with_edits))
    shutil.rmtree(work)


def mp4_fragment_bomb(out: Path, face: Path, samples: int = 40_000_000) -> None:
    """A fragmented MP4 whose first fragment's run (trun) claims `samples` samples that take
    no bytes in the file (sizes and durations from the defaults)."""
    work = out.parent / f".{out.name}.parts"
    work.mkdir(exist_ok=True)
    clip = work / "face.mp4"
    _face_clip(face, clip, *_X264, "-pix_fmt", "yuv420p", "-movflags", "frag_keyframe+empty_moov+default_base_moof",
               seconds=0.4)  # fmt: skip
    data = clip.read_bytes()

    def trun(old: bytes) -> bytes:
        data_offset = struct.unpack(">i", old[16:20])[0]
        return _full_box(b"trun", struct.pack(">Ii", samples, data_offset), 0x000001)

    out.write_bytes(mp4_replace(data, (b"moof", b"traf", b"trun"), trun))
    shutil.rmtree(work)


def _ebml(element_id: int, payload: bytes) -> bytes:
    """An EBML element with an 8-byte size."""
    return (
        element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")
        + (0x01 << 56 | len(payload)).to_bytes(8, "big")
        + payload
    )


def matroska_cues_bomb(out: Path, face: Path, cue_bytes: int = 17 << 20) -> None:
    """A real Matroska file with `cue_bytes` of index (Cues) before its first cluster: FFmpeg
    keeps about 100 bytes per 16-byte cue point while it opens the file."""
    work = out.parent / f".{out.name}.parts"
    work.mkdir(exist_ok=True)
    clip = work / "face.mkv"
    _face_clip(face, clip, *_X264, "-pix_fmt", "yuv420p", seconds=0.4)
    data = clip.read_bytes()
    segment = data.find(bytes.fromhex("18538067"))
    first_cluster = data.find(bytes.fromhex("1f43b675"), segment)
    head, tail = bytes.fromhex("bb8eb384"), bytes.fromhex("b786f78101f18100")  # CuePoint(CueTime, positions)
    count = cue_bytes // (len(head) + 4 + len(tail))
    cues = b"".join(head + (1000 + i).to_bytes(4, "big") + tail for i in range(count))
    header = data[: segment + 4] + b"\x01\xff\xff\xff\xff\xff\xff\xff"  # Segment of unknown size
    children = data[segment + 12 : first_cluster]
    seek_head = children.find(bytes.fromhex("114d9b74"))
    if seek_head >= 0:  # its positions are wrong now: make it a Void element of the same size
        children = children[:seek_head] + b"\xec" + children[seek_head + 4 :]
    out.write_bytes(header + children + _ebml(0x1C53BB6B, cues) + data[first_cluster:])
    shutil.rmtree(work)


def mp4_as(out: Path, face: Path) -> None:
    """A real MP4 with the face, named .jpg."""
    _face_clip(face, out, *_X264, "-pix_fmt", "yuv420p", "-f", "mp4")


def png_as_mp4(out: Path, face: Path) -> None:
    face_still(out, face, "PNG")


# -- text that FFmpeg's probing would take for a playlist, a concat list, an SDP session


def hls_playlist(out: Path, face: Path) -> None:
    out.write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
        f"#EXTINF:10.0,\nfile://{face}\n#EXTINF:10.0,\n/etc/passwd\n#EXT-X-ENDLIST\n"
    )


def ffconcat_list(out: Path, face: Path) -> None:
    out.write_text(f"ffconcat version 1.0\nfile '{face}'\nfile '/etc/passwd'\n")


def sdp_session(out: Path, face: Path) -> None:
    out.write_text(
        "v=0\no=- 0 0 IN IP4 127.0.0.1\ns=hostile\nc=IN IP4 127.0.0.1\nt=0 0\nm=video 5004 RTP/AVP 96\n"
        "a=rtpmap:96 H264/90000\n"
    )


def image2_pattern(out: Path, face: Path) -> None:
    """A JPEG named like an image2 pattern (img%03d.jpg): only its own bytes are read."""
    face_still(out, face, "JPEG")


def mp4_magic_garbage(out: Path, face: Path) -> None:
    """An `ftyp` box, then garbage."""
    out.write_bytes(struct.pack(">I4s4sI", 16, b"ftyp", b"isom", 0) + bytes(range(256)) * 256)


CASES: tuple[Hostile, ...] = (
    Hostile("png-rgba-64mpx.png", "PNG 8000x8000 RGBA of zeros (~300 KB)", _png(8000, 8000, 6, 8), BOUNDED),
    Hostile("png-rgba16-60mpx.png", "PNG 7700x7700 RGBA, 16 bits a sample", _png(7700, 7700, 6, 16), BOUNDED),
    Hostile("png-gray16-64mpx.png", "PNG 8000x8000 gray, 16 bits (mode I;16)", _png(8000, 8000, 0, 16), BOUNDED),
    Hostile("png-palette-64mpx.png", "PNG 8000x8000 with a 256-colour palette", _png(8000, 8000, 3, 8), BOUNDED),
    Hostile("png-1bit-900mpx.png", "PNG 30000x30000, 1 bit a pixel", _png(30000, 30000, 0, 1), TOO_LARGE),
    Hostile("png-text-bomb.png", "PNG 64x64 with zTXt/iCCP/iTXt chunks of 64 MiB each once inflated "
            "(Pillow refuses chunks past its MAX_TEXT_CHUNK)", png_text_bomb, UNREADABLE),
    Hostile("gif-animated-64mpx.gif", "GIF 8000x8000, 3 frames", gif_bomb, BOUNDED),
    Hostile("gif-huge-screen.gif", "GIF with a 65535x65535 logical screen", gif_huge_screen, TOO_LARGE),
    Hostile("tiff-cmyk-64mpx.tif", "TIFF 8000x8000 CMYK, deflate, one strip, 2 pages", tiff_bomb, BOUNDED),
    Hostile("tiff-float-36mpx.tif", "TIFF 6000x6000 32-bit float",
            lambda out, face: tiff_bomb(out, face, "F", 6000, 1), BOUNDED),
    Hostile("tiff-i16-64mpx.tif", "TIFF 8000x8000 16-bit gray",
            lambda out, face: tiff_bomb(out, face, "I;16", 8000, 1), BOUNDED),
    Hostile("webp-lossless-49mpx.webp", "WebP 7000x7000 lossless RGBA", webp_bomb, BOUNDED),
    Hostile("webp-animated-25mpx.webp", "animated WebP 5000x5000, 3 frames",
            lambda out, face: webp_bomb(out, face, 5000, 3), BOUNDED),
    Hostile("webp-huge-canvas.webp", "WebP with a 16384x16384 canvas", webp_huge_canvas, TOO_LARGE),
    Hostile("jpeg-progressive-cmyk-36mpx.jpg", "progressive CMYK JPEG 6000x6000", jpeg_bomb, BOUNDED),
    Hostile("jpeg-progressive-444-64mpx.jpg", "progressive 4:4:4 JPEG 8000x8000",
            lambda out, face: jpeg_bomb(out, face, "RGB", 8000), BOUNDED),
    Hostile("jpeg-huge-header.jpg", "JPEG whose header claims 65000x65000", jpeg_huge_header, TOO_LARGE),
    Hostile("bmp-rle8-64mpx.bmp", "RLE8 BMP 8000x8000 (decoded in Python by Pillow)", bmp_rle_bomb, BOUNDED),
    Hostile("h264-later-frames-huge.mp4", "H.264: 320x240, then 8192x4608 frames", later_frames_huge_h264,
            TOO_LARGE),
    Hostile("mjpeg-later-frame-huge.avi", "Motion JPEG in AVI: 320x240, then 12000x12000",
            later_frames_huge_mjpeg, TOO_LARGE),
    Hostile("second-stream-huge.mkv", "the face as stream 0, 12000x12000 Motion JPEG as stream 1",
            second_stream_huge, frozenset({FACE})),
    Hostile("huge-only-stream.mkv", "12000x12000 Motion JPEG as the only stream", huge_first_stream, TOO_LARGE),
    Hostile("prores4444-6k.mov", "ProRes 4444 with alpha at 6144x3456 (170 MB a frame)", prores_4444_6k,
            TOO_LARGE),
    Hostile("h264-444-10bit-8k.mp4", "H.264 4:4:4 10-bit at 7680x4320", h264_444_10bit_8k, TOO_LARGE),
    Hostile("h264-8k-16-refs.mp4", "8K H.264, I frames without IDR, 16 reference frames", h264_8k_many_refs,
            frozenset({NOBODY, "too_large"})),
    Hostile("av1.webm", "the face in AV1", av1_clip, frozenset({FACE})),
    Hostile("hevc.mp4", "the face in HEVC", hevc_clip, frozenset({FACE})),
    Hostile("ffv1-gray16-64mpx.mkv", "FFV1 gray16 8000x8000 (codec not decoded)", ffv1_gray16, REFUSED),
    Hostile("rawvideo-rgb48.avi", "uncompressed rgb48 in AVI (codec not decoded)", rawvideo_rgb48, REFUSED),
    Hostile("subtitles-attachment.mkv", "the face with audio, subtitles and a 4 MiB attachment",
            with_subtitles_and_attachment, frozenset({FACE})),
    Hostile("absurd-timestamps.mkv", "the face, frames a year apart", absurd_timestamps, frozenset({FACE})),
    Hostile("mp4-30m-samples.mp4", "MP4 (15 MB) whose index lists 30 million samples", mp4_sample_count_bomb,
            TOO_LARGE),
    Hostile("mp4-edit-list-2000.mp4", "MP4 (300 KB): 2000 edit-list entries over 100 000 samples (slow to open)",
            mp4_edit_list_bomb, TOO_LARGE),
    Hostile("mp4-fragment-40m-samples.mp4", "fragmented MP4, one run of 40 million samples of no bytes",
            mp4_fragment_bomb, TOO_LARGE),
    Hostile("matroska-17mib-cues.mkv", "Matroska with 17 MiB of index (1.1 million cue points)", matroska_cues_bomb,
            TOO_LARGE),
    Hostile("hls-playlist.mp4", "an HLS playlist naming the face clip and /etc/passwd", hls_playlist, UNREADABLE),
    Hostile("ffconcat.mp4", "an ffconcat list naming local files", ffconcat_list, UNREADABLE),
    Hostile("session.sdp", "an SDP description of an RTP stream", sdp_session, UNREADABLE),
    Hostile("img%03d.jpg", "a JPEG of the face named like an image2 pattern", image2_pattern, frozenset({FACE})),
    Hostile("mp4-named.jpg", "an MP4 of the face named .jpg", mp4_as, frozenset({FACE})),
    Hostile("png-named.mp4", "a PNG of the face named .mp4", png_as_mp4, frozenset({FACE})),
    Hostile("ftyp-garbage.mp4", "an ftyp box, then garbage", mp4_magic_garbage, UNREADABLE),
)  # fmt: skip


def build(folder: Path, face: Path, cases: tuple[Hostile, ...] = CASES) -> list[tuple[Hostile, Path]]:
    """Make every case that is not in `folder` yet (a case is made once per folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for case in cases:
        path = folder / case.name
        if not path.exists():
            partial = folder / f".partial-{case.name}"
            case.make(partial, face)
            partial.rename(path)
        made.append((case, path))
    return made


def judge(case: Hostile, kind: str, found: str | list[str], face_people: list[str]) -> str | None:
    """None when an answer is acceptable for `case`, else why not. `kind` is "csv" (then
    `found` is the people named) or an error kind (then `found` is its detail)."""
    if kind == "csv":
        people = sorted(found)
        if FACE in case.accept and people == sorted(face_people):
            return None
        if NOBODY in case.accept and not people:
            return None
        return f"a result naming {people or 'nobody'}; accepted: {', '.join(sorted(case.accept))}"
    if kind in case.accept:
        return None
    return f"error {kind} ({found}); accepted: {', '.join(sorted(case.accept))}"


class _NoStudents:
    """A students table that knows nobody: the records are not what is measured."""

    def lookup(self, names: list[str]) -> list:
        return []


def measure(paths: list[Path], known_faces: Path, frame_sampling: str = "keyframes") -> dict:
    """Run the face-recognition task (models, known faces and all, as in a function worker)
    over `paths` in this process: each file's answer and the peak resident memory."""
    from facepipe.faces.task import FaceRecognitionTask
    from facepipe.media import MediaError
    from facepipe.settings import Settings

    settings = Settings(known_faces=str(known_faces), students_table="students", frame_sampling=frame_sampling)
    task = FaceRecognitionTask(settings, students=_NoStudents())
    loaded = peak_rss_mb() or 0.0
    answers: dict[str, list] = {}
    for path in paths:
        try:
            recognition = task.compute(path, time.monotonic() + settings.function_timeout_s)
            task.answer(recognition)
            answers[path.name] = ["csv", list(recognition.people)]
        except MediaError as exc:
            answers[path.name] = [exc.kind, exc.detail]
    return {"answers": answers, "loaded_rss_mb": int(loaded), "peak_rss_mb": int(peak_rss_mb() or 0.0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("build", help="make the hostile files in a folder")
    make.add_argument("folder", type=Path)
    make.add_argument("--face", type=Path, help="a photo with a face (default: Grace Hopper)")
    run = sub.add_parser("measure", help="run the face task over files in this process; print answers and peak RSS")
    run.add_argument("files", type=Path, nargs="+")
    run.add_argument("--known-faces", type=Path, required=True)
    run.add_argument("--frame-sampling", default="keyframes", choices=("keyframes", "interval"))
    args = parser.parse_args(argv)
    if args.command == "measure":
        print(json.dumps(measure(args.files, args.known_faces, args.frame_sampling)))
        return 0
    if args.face is None:
        from facepipe_tools.sample import photo

        args.face = photo("grace_hopper")
    for case, path in build(args.folder, args.face):
        print(f"{path.stat().st_size:>10}  {path.name}  {case.what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
