"""The built-in samples: videos and photos made at run time from photos that ship inside pip
packages (nothing of it is in the repository).

Face recognition: Grace Hopper (matplotlib's sample data) and Eileen Collins (scikit-image's
"astronaut") are the people; scikit-image's coffee and cat pictures have no
human face. The clips cover what the function must handle: several
containers and codecs, rotation metadata, a face that appears only later, a
small face, two people in one frame, a crowd (eight faces of the two people at
three scales, 48 to 250 px wide, small ones beside large ones), nobody, and a
still photo with EXIF orientation. `data/sample_mapping` lists the expected answers.

Image classification: photos whose top ImageNet class EfficientNet-Lite0 names clearly (a
cat, an espresso, a camera tripod, a moped, a missile), in each still format the function
reads, one in grey levels and one stored sideways with EXIF orientation (upright it is an
academic gown; sideways, a comic book). `data/sample_image_mapping` lists the labels
accepted for each (where the top two are close, both).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from PIL import Image


def photo(name: str) -> Path:
    """Path of a sample photo inside its pip package."""
    if name == "grace_hopper":
        import matplotlib

        return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    import skimage.data

    file = {
        "eileen_collins": "astronaut.png",
        "coffee": "coffee.png",
        "cat": "chelsea.png",
        "camera": "camera.png",
        "motorcycle": "motorcycle_left.png",
        "rocket": "rocket.jpg",
    }[name]
    return Path(skimage.data.__file__).parent / file


#: The people of the sample and the photos their known faces are built from.
SAMPLE_PEOPLE = ("grace_hopper", "eileen_collins")

_H264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]


def _ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def _still(name: str, seconds: float = 2.0) -> list[str]:
    return ["-loop", "1", "-framerate", "10", "-t", f"{seconds:g}", "-i", str(photo(name))]


_EVEN = "scale=trunc(iw/2)*2:trunc(ih/2)*2,setsar=1"


def _plain(person: str) -> Callable[[Path], None]:
    return lambda out: _ffmpeg(*_still(person), "-vf", _EVEN, *_H264, str(out))


def _rotated(out: Path) -> None:
    """Pixels stored turned a quarter clockwise; the display matrix turns them upright."""
    stored = out.with_suffix(".stored.mp4")
    _ffmpeg(*_still("grace_hopper"), "-vf", f"{_EVEN},transpose=clock", *_H264, str(stored))
    _ffmpeg("-i", str(stored), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(out))
    stored.unlink()


def _late(out: Path) -> None:
    """Coffee for 1.5 s, then Eileen Collins: only later frames have the face (VP8 in WebM)."""
    _ffmpeg(
        *_still("coffee", 1.5), *_still("eileen_collins", 1.5),
        "-filter_complex",
        "[0]scale=512:512,setsar=1[a];[1]scale=512:512,setsar=1[b];[a][b]concat=n=2:v=1[v]",
        "-map", "[v]", "-c:v", "libvpx", "-b:v", "1M", str(out),
    )  # fmt: skip


def _small(out: Path) -> None:
    """Grace Hopper 180 px wide on a 1280x720 frame (Matroska)."""
    _ffmpeg(
        *_still("grace_hopper"),
        "-vf", "scale=180:-2,pad=1280:720:(ow-iw)/2:(oh-ih)/2:color=gray,setsar=1",
        *_H264, str(out),
    )  # fmt: skip


def _both(out: Path) -> None:
    """Grace Hopper (left) and Eileen Collins (right) side by side."""
    _ffmpeg(
        *_still("grace_hopper"), *_still("eileen_collins"),
        "-filter_complex", "[0]scale=-2:512,setsar=1[a];[1]scale=512:512,setsar=1[b];[a][b]hstack[v]",
        "-map", "[v]", *_H264, str(out),
    )  # fmt: skip


def crowd() -> tuple[Image.Image, list]:
    """The crowded clip's picture (1280x720) and its faces (PlacedFace): eight faces laid out
    as the classroom of facepipe_tools.accuracy.classroom (a back row of small faces, a front
    row of large ones), Grace Hopper at every scale, Eileen Collins small and medium only, so
    that a detector content with the large faces misses her."""
    from facepipe_tools.accuracy.classroom import compose, sample_portraits

    hopper, collins = sample_portraits()
    return compose([collins, hopper, hopper, collins, hopper, collins, hopper, collins], 1280, 720, by_slot=True)


def _crowded(out: Path) -> None:
    frame, _ = crowd()
    still = out.with_name(out.name + ".png")
    frame.save(still)
    try:
        _ffmpeg("-loop", "1", "-framerate", "10", "-t", "2", "-i", str(still), *_H264, "-f", "mp4", str(out))
    finally:
        still.unlink(missing_ok=True)


def _nobody(out: Path) -> None:
    """A cup of coffee, then a cat (MPEG-4 Part 2 in QuickTime)."""
    _ffmpeg(
        *_still("coffee", 1.0), *_still("cat", 1.0),
        "-filter_complex", "[0]scale=600:400,setsar=1[a];[1]scale=600:400,setsar=1[b];[a][b]concat=n=2:v=1[v]",
        "-map", "[v]", "-c:v", "mpeg4", "-q:v", "5", str(out),
    )  # fmt: skip


def _exif_photo(out: Path) -> None:
    """A JPEG whose pixels are stored sideways with EXIF orientation 6 (rotate 90 degrees to show)."""
    with Image.open(photo("grace_hopper")) as image:
        exif = Image.Exif()
        exif[0x0112] = 6
        image.transpose(Image.Transpose.ROTATE_90).save(out, "JPEG", quality=90, exif=exif)


SAMPLE_CLIPS: dict[str, Callable[[Path], None]] = {
    "sample_hopper.mp4": _plain("grace_hopper"),
    "sample_collins.mp4": _plain("eileen_collins"),
    "sample_hopper_rotated.mp4": _rotated,
    "sample_collins_late.webm": _late,
    "sample_hopper_small.mkv": _small,
    "sample_both.mp4": _both,
    "sample_crowded.mp4": _crowded,
    "sample_nobody.mov": _nobody,
    "sample_hopper_photo.jpg": _exif_photo,
}


def _converted(name: str, fmt: str, **options: object) -> Callable[[Path], None]:
    """A package photo (RGB or grey levels) saved in Pillow format `fmt`."""

    def make(out: Path) -> None:
        with Image.open(photo(name)) as image:
            image.save(out, fmt, **options)

    return make


def _copied(name: str) -> Callable[[Path], None]:
    return lambda out: out.write_bytes(photo(name).read_bytes())


def _palette_gif(out: Path) -> None:
    """The coffee photo in 256 colours (GIF)."""
    with Image.open(photo("coffee")) as image:
        image.convert("P", palette=Image.Palette.ADAPTIVE).save(out, "GIF")


SAMPLE_IMAGES: dict[str, Callable[[Path], None]] = {
    "chelsea.png": _copied("cat"),
    "coffee.jpg": _converted("coffee", "JPEG", quality=90),
    "camera.png": _copied("camera"),  # grey levels
    "motorcycle.webp": _converted("motorcycle", "WEBP", quality=85),
    "rocket.bmp": _converted("rocket", "BMP"),
    "coffee_palette.gif": _palette_gif,
    "grace_hopper_rotated.jpg": _exif_photo,  # stored sideways, EXIF orientation 6
}


def _build(out_dir: Path, makers: dict[str, Callable[[Path], None]]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in makers.items():
        path = out_dir / name
        if not path.exists():
            partial = path.with_name(".partial-" + name)
            make(partial)
            partial.rename(path)
        paths.append(path)
    return paths


def build_image_sample(out_dir: Path) -> list[Path]:
    """Make every sample photo for image classification that is not in `out_dir` yet; return all their paths."""
    return _build(out_dir, SAMPLE_IMAGES)


def build_sample(out_dir: Path) -> list[Path]:
    """Make every sample clip that is not in `out_dir` yet; return all their paths."""
    if shutil.which("ffmpeg") is None:
        raise RuntimeError("ffmpeg is not installed (make install installs it)")
    return _build(out_dir, SAMPLE_CLIPS)


def build_known_faces():
    """Known faces of the sample people, encoded from their package photos."""
    from facepipe.faces.known_faces import build_from_photos

    return build_from_photos({name: [photo(name)] for name in SAMPLE_PEOPLE})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the built-in sample.")
    sub = parser.add_subparsers(dest="command", required=True)
    videos = sub.add_parser("videos", help="generate the sample clips")
    videos.add_argument("out_dir", type=Path)
    images = sub.add_parser("images", help="generate the sample photos for image classification")
    images.add_argument("out_dir", type=Path)
    faces = sub.add_parser("known-faces", help="encode the sample people's photos to a known-faces JSON")
    faces.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command in ("videos", "images"):
        for path in (build_sample if args.command == "videos" else build_image_sample)(args.out_dir):
            print(path)
    else:
        args.output.write_text(build_known_faces().to_json())
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
