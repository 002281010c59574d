"""Build the function images and the notifier image with a local container engine (`make images`).

The Dockerfiles are the ones users build against the public bases (python:3.11-slim, of-watchdog).
No image registry is reachable here, so the bases are made on this machine and passed as build
arguments, and pip installs from a wheelhouse downloaded on the host:

- the Python base: Debian bookworm from `mmdebstrap` (minbase, python3, venv), imported as an image;
- the watchdog stage: a placeholder whose /fwatchdog refuses to run. The of-watchdog binary is not
  obtainable here, so these images are for tests only: the tests start `python index.py` the
  way of-watchdog does (same user, environment, read-only root, /tmp, secret files);
- pip: `PIP_INDEX_URL` points at the wheelhouse, served as a simple index on loopback during
  the build (`--network host`); the build reaches nothing else.

Rootful podman on this kind of machine needs runc (crun refuses the hybrid cgroups) and ulimits
within the hard limit; `Engine` adds them to every command.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

from facepipe import logs
from facepipe_tools.paths import REPO_ROOT

log = logs.get("facepipe.images")

FUNCTION_DIR = REPO_ROOT / "functions" / "face-recognition"
CLASSIFICATION_DIR = REPO_ROOT / "functions" / "image-classification"
NOTIFIER_DOCKERFILE = REPO_ROOT / "notifier" / "Dockerfile"
CACHE_DIR = REPO_ROOT / ".cache" / "images"

BASE_IMAGE = "localhost/facepipe-base/python:3.11-bookworm"
PLACEHOLDER_WATCHDOG_IMAGE = "localhost/facepipe-base/no-watchdog:1"
FUNCTION_IMAGE = "localhost/facepipe/face-recognition:test"
CLASSIFICATION_IMAGE = "localhost/facepipe/image-classification:test"
NOTIFIER_IMAGE = "localhost/facepipe/notifier:test"

DEBIAN_SOURCES = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
]
# What python:3.11-slim-bookworm has that the Dockerfiles use: python, venv (with pip), useradd.
BASE_PACKAGES = ["python3", "python3-venv", "python-is-python3", "ca-certificates"]
PLACEHOLDER_WATCHDOG = b"""#!/bin/sh
echo "fwatchdog: this image was built by make images with a placeholder instead of of-watchdog;" >&2
echo "build it with faas-cli (docs/deploy.md) for a deployable image." >&2
exit 127
"""
# face_recognition goes in with --no-deps (its metadata asks for dlib, which would compile);
# setuptools and wheel build face_recognition_models, the one source package.
FACE_RECOGNITION = "face_recognition==1.3.0"
BUILD_BACKEND = ["setuptools==80.9.0", "wheel==0.45.1"]
WHEELHOUSE_PORT = 18631


class ImageError(RuntimeError):
    """The engine or a build step failed; the message says which and why."""


@dataclass(frozen=True)
class Engine:
    """Rootful podman's command line with this machine's flags."""

    program: str = "podman"

    def base(self) -> list[str]:
        # runc: crun refuses the hybrid cgroups here. cgroupfs and a file event log: no systemd.
        return [self.program, "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]

    @staticmethod
    def ulimits() -> list[str]:
        """Within this machine's hard limits (the engines' defaults are above them)."""
        return ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]

    def available(self) -> str | None:
        """None when the engine works, else why not."""
        if shutil.which(self.program) is None:
            return f"{self.program} is not installed (scripts/install.sh installs podman)"
        result = subprocess.run([*self.base(), "info"], capture_output=True, text=True, timeout=120)
        return None if result.returncode == 0 else f"{self.program} info failed: {result.stderr.strip()[-500:]}"

    def run(self, *args: str, timeout: float = 120, check: bool = True, stdin: bytes | None = None) -> str:
        command = [*self.base(), *args]
        result = subprocess.run(command, input=stdin, capture_output=True, timeout=timeout)
        if check and result.returncode != 0:
            raise ImageError(f"{' '.join(command[:6])} ... failed: {result.stderr.decode(errors='replace')[-2000:]}")
        return result.stdout.decode(errors="replace")

    def image_exists(self, image: str) -> bool:
        return subprocess.run([*self.base(), "image", "inspect", image], capture_output=True).returncode == 0

    def image_size(self, image: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", image).strip())


def build_base_image(engine: Engine) -> None:
    """Debian bookworm with Python 3.11 from mmdebstrap, imported as BASE_IMAGE."""
    if shutil.which("mmdebstrap") is None:
        raise ImageError("mmdebstrap is not installed (scripts/install.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="facepipe-base-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        command = [
            "mmdebstrap", "--variant=minbase", "--quiet", f"--include={','.join(BASE_PACKAGES)}",
            "--aptopt=APT::Install-Recommends \"false\"",
            "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "bookworm", str(rootfs), *DEBIAN_SOURCES,
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
        if result.returncode != 0:
            raise ImageError(f"mmdebstrap failed: {result.stderr[-2000:]}")
        engine.run(
            "import", "--change", "ENV LANG=C.UTF-8", "--change", 'CMD ["python3"]', str(rootfs), BASE_IMAGE,
            timeout=600,
        )  # fmt: skip


def build_placeholder_watchdog(engine: Engine) -> None:
    """An image holding only /fwatchdog, a script that says it is not of-watchdog."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        entry = tarfile.TarInfo("fwatchdog")
        entry.size, entry.mode, entry.mtime = len(PLACEHOLDER_WATCHDOG), 0o755, 0
        tar.addfile(entry, io.BytesIO(PLACEHOLDER_WATCHDOG))
    engine.run("import", "-", PLACEHOLDER_WATCHDOG_IMAGE, stdin=archive.getvalue())


def _download(dest: Path, *args: str) -> None:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--dest", str(dest)]
    result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise ImageError(f"pip download {' '.join(args)} failed: {result.stderr[-2000:]}")


def requirement_files() -> list[Path]:
    """Every requirements file an image build installs from (the wheelhouse holds them all)."""
    return [
        FUNCTION_DIR / "requirements.txt",
        CLASSIFICATION_DIR / "requirements.txt",
        CLASSIFICATION_DIR / "requirements-build.txt",
        REPO_ROOT / "notifier" / "requirements.txt",
    ]


def build_wheelhouse(root: Path = CACHE_DIR / "wheelhouse") -> Path:
    """Wheels (and face_recognition_models' source) for every image, laid out as a simple index
    (`<root>/simple/<project>/<file>`); downloaded again only when a requirements file changed."""
    stamp = hashlib.sha256(
        "\n".join([*(p.read_text() for p in requirement_files()), FACE_RECOGNITION, *BUILD_BACKEND]).encode()
    ).hexdigest()
    index = root / "simple"
    if (root / "stamp").is_file() and (root / "stamp").read_text() == stamp:
        return index
    shutil.rmtree(root, ignore_errors=True)
    files = root / "files"
    files.mkdir(parents=True)
    requirements = [arg for path in requirement_files() for arg in ("-r", str(path))]
    _download(files, "--only-binary=:all:", "--no-binary=face_recognition_models", *requirements, *BUILD_BACKEND)
    _download(files, "--only-binary=:all:", "--no-deps", FACE_RECOGNITION)
    for path in files.iterdir():
        if path.name.endswith(".whl"):
            name = parse_wheel_filename(path.name)[0]
        else:
            name = parse_sdist_filename(path.name)[0]
        project = index / canonicalize_name(name)
        project.mkdir(parents=True, exist_ok=True)
        path.rename(project / path.name)
    (root / "stamp").write_text(stamp)
    return index


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass


@contextmanager
def serve_index(index: Path) -> Iterator[str]:
    """Serve a simple-index folder on loopback; yields its URL. The port is the same from one
    build to the next when it is free: the URL is a build argument, and a new one would make
    the engine run the pip layers again."""
    handler = functools.partial(_QuietHandler, directory=str(index))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", WHEELHOUSE_PORT), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="wheelhouse", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _copy_tree(source: Path, target: Path) -> None:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def function_context(into: Path, function_dir: Path = FUNCTION_DIR) -> Path:
    """What `faas-cli build` sends: the handler folder, plus stack.yml's `configuration.copy`."""
    _copy_tree(function_dir, into)
    stack = yaml.safe_load((REPO_ROOT / "stack.yml").read_text())
    for source in stack["configuration"]["copy"]:
        _copy_tree(REPO_ROOT / source, into / Path(source).name)
    return into


def notifier_context(into: Path) -> Path:
    """The repository root filtered by notifier/Dockerfile.dockerignore (an allow-list)."""
    ignore_file = NOTIFIER_DOCKERFILE.parent / "Dockerfile.dockerignore"
    allowed = [line[1:].strip().rstrip("/") for line in ignore_file.read_text().splitlines() if line.startswith("!")]
    for name in allowed:
        source, target = REPO_ROOT / name, into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            _copy_tree(source, target)
        else:
            shutil.copy2(source, target)
    return into


@dataclass(frozen=True)
class Built:
    image: str
    seconds: float
    size_bytes: int

    def to_json(self) -> dict:
        return {"image": self.image, "build_s": round(self.seconds, 1), "size_mb": round(self.size_bytes / 1e6, 1)}


def build_image(engine: Engine, image: str, dockerfile: Path, context: Path, index_url: str) -> Built:
    started = time.monotonic()
    engine.run(
        "build", "--pull=never", "--network", "host", *engine.ulimits(),
        "--build-arg", f"PYTHON_IMAGE={BASE_IMAGE}",
        "--build-arg", f"WATCHDOG_IMAGE={PLACEHOLDER_WATCHDOG_IMAGE}",
        "--build-arg", f"PIP_INDEX_URL={index_url}",
        "--tag", image, "--file", str(dockerfile), str(context),
        timeout=3600,
    )  # fmt: skip
    built = Built(image, time.monotonic() - started, engine.image_size(image))
    log.info("image built", image=image, seconds=round(built.seconds, 1), size_mb=round(built.size_bytes / 1e6, 1))
    return built


def build_all(engine: Engine | None = None, rebuild_base: bool = False) -> list[Built]:
    """The two function images and the notifier image (bases and wheelhouse made first when
    missing). The engine's layer cache makes a build without changes take seconds."""
    engine = engine or Engine()
    reason = engine.available()
    if reason:
        raise ImageError(reason)
    if rebuild_base or not engine.image_exists(BASE_IMAGE):
        log.info("building the base image", image=BASE_IMAGE)
        build_base_image(engine)
    if not engine.image_exists(PLACEHOLDER_WATCHDOG_IMAGE):
        build_placeholder_watchdog(engine)
    index = build_wheelhouse()
    with serve_index(index) as index_url, tempfile.TemporaryDirectory(prefix="facepipe-contexts-") as tmp:
        function = function_context(Path(tmp) / "function")
        classification = function_context(Path(tmp) / "classification", CLASSIFICATION_DIR)
        notifier = notifier_context(Path(tmp) / "notifier")
        return [
            build_image(engine, FUNCTION_IMAGE, FUNCTION_DIR / "Dockerfile", function, index_url),
            build_image(engine, CLASSIFICATION_IMAGE, CLASSIFICATION_DIR / "Dockerfile", classification, index_url),
            build_image(engine, NOTIFIER_IMAGE, NOTIFIER_DOCKERFILE, notifier, index_url),
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild-base", action="store_true", help="make the Debian base image again")
    args = parser.parse_args(argv)
    logs.setup()
    try:
        built = build_all(Engine(), rebuild_base=args.rebuild_base)
    except (ImageError, subprocess.TimeoutExpired) as exc:
        print(f"make images: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"images": [b.to_json() for b in built]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
