"""The accuracy cases and the files they read, made at run time with the ffmpeg CLI.

- classroom: a still frame (1920x1080 JPEG) and a clip (1280x720 H.264, one keyframe every
  250 frames and none at scene cuts, light sensor noise) of eight faces at three scales, three
  of them entering the clip after 2 s; from the CSE546 clips when there, else from the
  built-in sample's photos (`classroom.py`);
- gop: a face on screen for exactly 1 s between two keyframes of a long-GOP H.264 file
  (keyint 250, no scene-cut keyframes), at several offsets, in files of 20 s to 60 s;
- container: one short clip, a face entering after 0.8 s, written as AVI/MJPEG (also with
  the index quirk of ffmpeg's own AVI muxer: frames dropped from a variable-rate stream
  leave empty index entries, so the index declares more frames than decode), Matroska,
  QuickTime, MP4 with and without B-frames, faststart and not, and fragmented MP4.

Every file is valid: an error record or a damage report for any of them is a false truncation.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from facepipe_tools.accuracy.classroom import FACE_WIDTHS, PlacedFace, Portrait, compose
from facepipe_tools.sample import photo

CLASSROOM = "classroom"
GOP = "gop"
CONTAINER = "container"
GROUPS = (CLASSROOM, GOP, CONTAINER)
#: The two sets of known faces a case is recognised with.
SAMPLE_FACES = "sample"
CSE546_FACES = "cse546"

FPS = 25
#: x264 with a keyframe every 250 frames (its default keyint, 10 s at 25 fps) and none at scene
#: cuts, so that a face that appears later is never on a keyframe by luck.
LONG_GOP = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            "-x264-params", "keyint=250:min-keyint=250:scenecut=0"]  # fmt: skip
#: Late entrants of the classroom clip come in at this time (s); the clip lasts CLIP_S.
LATE_S = 2.4
CLIP_S = 6.0


@dataclass(frozen=True)
class Case:
    """One input file and what recognising it must give."""

    name: str  # the file's name
    group: str  # CLASSROOM, GOP or CONTAINER
    what: str
    people: tuple[str, ...]  # the known people in it
    faces: tuple[PlacedFace, ...] = ()  # where each face is (stored frame's pixels), when known
    size: tuple[int, int] = (0, 0)  # the stored frame's width and height
    known: str = SAMPLE_FACES  # which known faces recognise it
    make: Callable[[Path], None] | None = field(default=None, compare=False, repr=False)


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def _save(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


def _people(faces: Sequence[PlacedFace]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(face.name for face in faces))


# ------------------------------------------------------------------------------ classroom


def classroom_cases(portraits: Sequence[Portrait], known: str) -> list[Case]:
    """The classroom frame and clip of `portraits` (recognised with the `known` faces)."""
    origin = "CSE546 clips" if known == CSE546_FACES else "the sample's photos"
    stem = f"classroom_{known}"
    frame, frame_faces = compose(portraits, 1920, 1080)
    before, clip_faces = compose(portraits, 1280, 720, late_s=LATE_S, hide_late=True)
    after, _ = compose(portraits, 1280, 720, late_s=LATE_S)

    def make_frame(out: Path) -> None:
        frame.save(out, "JPEG", quality=92)

    def make_clip(out: Path) -> None:
        stills = [
            _save(before, out.with_name(out.name + ".before.png")),
            _save(after, out.with_name(out.name + ".after.png")),
        ]
        try:
            ffmpeg(
                "-loop", "1", "-framerate", str(FPS), "-t", f"{LATE_S:g}", "-i", str(stills[0]),
                "-loop", "1", "-framerate", str(FPS), "-t", f"{CLIP_S - LATE_S:g}", "-i", str(stills[1]),
                "-filter_complex", "[0][1]concat=n=2:v=1,noise=alls=3:allf=t,setsar=1[v]",
                "-map", "[v]", *LONG_GOP, "-f", "mp4", str(out),
            )  # fmt: skip
        finally:
            for still in stills:
                still.unlink(missing_ok=True)

    widths = {height: "/".join(str(width) for width in sizes.values()) for height, sizes in FACE_WIDTHS.items()}
    scales = f"faces of {widths[720]} px"
    return [
        Case(f"{stem}_frame.jpg", CLASSROOM, f"8 faces of {len(portraits)} people from {origin}, {widths[1080]} px, "
             "1920x1080 JPEG", _people(frame_faces), tuple(frame_faces), (1920, 1080), known, make_frame),
        Case(f"{stem}_clip.mp4", CLASSROOM, f"8 faces of {len(portraits)} people from {origin}, {scales}, 3 enter "
             f"at {LATE_S:g} s, 1280x720 H.264 keyint 250, {CLIP_S:g} s", _people(clip_faces), tuple(clip_faces),
             (1280, 720), known, make_clip),
    ]  # fmt: skip


# ------------------------------------------------------------------------------------ gop

#: (file length s, when the face appears s, fps, person) of the GOP cases.
GOP_SPECS: tuple[tuple[float, float, int, str], ...] = (
    (20.0, 3.3, 25, "grace_hopper"),
    (20.0, 14.6, 25, "eileen_collins"),
    (60.0, 31.7, 25, "grace_hopper"),
    (60.0, 47.2, 30, "eileen_collins"),
    (60.0, 58.6, 25, "grace_hopper"),
)
GOP_SIZE = (854, 480)
GOP_FACE_WIDTH = 120


def _background(out: Path, size: tuple[int, int]) -> Path:
    """The coffee photo (no face) filling a frame of `size`."""
    with Image.open(photo("coffee")) as image:
        image.convert("RGB").resize(size, Image.Resampling.BILINEAR).save(out)
    return out


def _overlay_case(
    out: Path, portrait: Portrait, size: tuple[int, int], face_width: int, at: tuple[int, int],
    length_s: float, shown: tuple[float, float], fps: int, encode: Sequence[str], pre: str = "",
) -> None:  # fmt: skip
    """A clip of `length_s` on the coffee background with the portrait's head at `at` (x, y)
    during [shown[0], shown[1]) s; `pre` is a filter chain applied to the decoded frames of
    that clip (made first in an intermediate file) before encoding."""
    head, _ = portrait.head(face_width)
    background = _background(out.with_name(out.name + ".bg.png"), size)
    head_png = _save(head, out.with_name(out.name + ".head.png"))
    middle = out.with_name(out.name + ".mid.mkv")
    enable = f"gte(t\\,{shown[0]:g})*lt(t\\,{shown[1]:g})"
    # Each still decoded once and repeated by the loop filter: much cheaper than `-loop 1`.
    repeat = f"format=yuv420p,loop=loop=-1:size=1,fps={fps},trim=duration={length_s:g},setpts=N/{fps}/TB"
    overlay = f"overlay=x={at[0]}:y={at[1]}:format=yuv420:enable='{enable}',setsar=1"
    chain = f"[0]{repeat}[b];[1]{repeat}[h];[b][h]{overlay}[v]"
    try:
        stills = ["-i", str(background), "-i", str(head_png), "-filter_complex", chain, "-map", "[v]"]
        if not pre:
            ffmpeg(*stills, *encode, str(out))
        else:
            # Filters such as `select` with passthrough timing need the real timestamps of a
            # decoded file: the loop filter's sometimes repeat.
            ffmpeg(*stills, "-c:v", "mjpeg", "-q:v", "2", "-f", "matroska", str(middle))
            ffmpeg("-i", str(middle), "-vf", pre, *encode, str(out))
    finally:
        for path in (background, head_png, middle):
            path.unlink(missing_ok=True)


def _placed(portrait: Portrait, face_width: int, at: tuple[int, int], enters_s: float) -> PlacedFace:
    _, (top, right, bottom, left) = portrait.head(face_width)
    return PlacedFace(portrait.name, (top + at[1], right + at[0], bottom + at[1], left + at[0]), "medium", enters_s)


def gop_cases(portraits: Sequence[Portrait]) -> list[Case]:
    """A face on screen for exactly 1 s between two keyframes, at each of GOP_SPECS."""
    by_name = {portrait.name: portrait for portrait in portraits}
    cases = []
    for length_s, at_s, fps, name in GOP_SPECS:
        portrait = by_name[name]
        position = (GOP_SIZE[0] // 2 - GOP_FACE_WIDTH, GOP_SIZE[1] // 4)
        keyint_s = 250 / fps

        def make(out: Path, portrait=portrait, length_s=length_s, at_s=at_s, fps=fps, position=position) -> None:
            _overlay_case(out, portrait, GOP_SIZE, GOP_FACE_WIDTH, position, length_s, (at_s, at_s + 1.0), fps,
                          [*LONG_GOP, "-f", "mp4"])  # fmt: skip

        before_key = int(at_s // keyint_s) * keyint_s
        cases.append(Case(
            f"gop_{length_s:g}s_face_at_{at_s:g}s.mp4", GOP,
            f"{name} for 1 s from {at_s:g} s, between keyframes at {before_key:g} s and {before_key + keyint_s:g} s "
            f"({length_s:g} s, {fps} fps, keyint 250)",
            (name,), (_placed(portrait, GOP_FACE_WIDTH, position, at_s),), GOP_SIZE, SAMPLE_FACES, make,
        ))  # fmt: skip
    return cases


# ------------------------------------------------------------------------------ container

CONTAINER_SIZE = (640, 480)
CONTAINER_FACE_WIDTH = 140
CONTAINER_S = 3.0
CONTAINER_ENTERS_S = 0.8
_X264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
_MJPEG = ["-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p"]
#: Frames 10 and 40 dropped from the stream and the gaps kept (variable frame rate): ffmpeg's
#: AVI muxer writes an empty index entry for each, so its index declares two frames more
#: than decode.
_DROP_TWO = "select='not(eq(n\\,10))*not(eq(n\\,40))'"

#: (file name, what, encoder options, filter chain before encoding)
CONTAINER_SPECS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("container_mjpeg.avi", "AVI, MJPEG", (*_MJPEG, "-f", "avi"), ""),
    ("container_mjpeg_index_quirk.avi", "AVI, MJPEG, written by ffmpeg with 2 empty index entries (75 declared, "
     "73 decode)", (*_MJPEG, "-fps_mode", "passthrough", "-f", "avi"), _DROP_TWO),
    ("container_h264.mkv", "Matroska, H.264", (*_X264, "-f", "matroska"), ""),
    ("container_h264.mov", "QuickTime, H.264", (*_X264, "-f", "mov"), ""),
    ("container_h264_bframes.mp4", "MP4, H.264 with 3 B-frames, moov at the end",
     (*_X264, "-bf", "3", "-f", "mp4"), ""),
    ("container_h264_no_bframes.mp4", "MP4, H.264 without B-frames", (*_X264, "-bf", "0", "-f", "mp4"), ""),
    ("container_h264_faststart.mp4", "MP4, H.264 with B-frames, moov first (faststart)",
     (*_X264, "-movflags", "+faststart", "-f", "mp4"), ""),
    ("container_h264_fragmented.mp4", "fragmented MP4 (empty moov, a fragment per keyframe), H.264",
     (*_X264, "-g", "25", "-movflags", "frag_keyframe+empty_moov+default_base_moof", "-f", "mp4"), ""),
)  # fmt: skip


def container_cases(portraits: Sequence[Portrait]) -> list[Case]:
    """The same kind of clip in every container of CONTAINER_SPECS, the sample's people in turn."""
    cases = []
    position = (CONTAINER_SIZE[0] // 2 - CONTAINER_FACE_WIDTH, CONTAINER_SIZE[1] // 5)
    for number, (name, what, encode, pre) in enumerate(CONTAINER_SPECS):
        portrait = portraits[number % len(portraits)]

        def make(out: Path, portrait=portrait, encode=encode, pre=pre) -> None:
            _overlay_case(out, portrait, CONTAINER_SIZE, CONTAINER_FACE_WIDTH, position, CONTAINER_S,
                          (CONTAINER_ENTERS_S, CONTAINER_S + 1), FPS, encode, pre)  # fmt: skip

        cases.append(Case(
            name, CONTAINER, f"{portrait.name} from {CONTAINER_ENTERS_S:g} s of {CONTAINER_S:g} s; {what}",
            (portrait.name,), (_placed(portrait, CONTAINER_FACE_WIDTH, position, CONTAINER_ENTERS_S),),
            CONTAINER_SIZE, SAMPLE_FACES, make,
        ))  # fmt: skip
    return cases


# ---------------------------------------------------------------------------------- build


def all_cases(sample: Sequence[Portrait], cse546: Sequence[Portrait] | None = None) -> list[Case]:
    """Every case: the classroom from the CSE546 portraits when given, else from the sample's;
    the GOP and container cases from the sample's."""
    classroom = classroom_cases(cse546, CSE546_FACES) if cse546 else classroom_cases(sample, SAMPLE_FACES)
    return [*classroom, *gop_cases(sample), *container_cases(sample)]


def build(cases: Sequence[Case], folder: Path) -> list[Path]:
    """Make every case's file that is not in `folder` yet (a half-made file never counts);
    return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for case in cases:
        path = folder / case.name
        if not path.exists():
            partial = folder / (".partial-" + case.name)
            assert case.make is not None, case.name
            case.make(partial)
            partial.rename(path)
        paths.append(path)
    return paths
