"""The function runner: the local OpenFaaS gateway stand-in and its worker processes
(facepipe_tools/function_runner.py), all in one process group. It serves face-recognition
(`workers`) and image-classification (`image_workers`; 0: not served).

The function reads known faces only as JSON (or photos). A stack started with the CSE546
pickle gets it converted at each start, by the parser that never unpickles, to
`<state>/known_faces.json`; `worker_known_faces` is what the workers' KNOWN_FACES must be.
The classifier's ONNX model is converted from the packaged weights at each start too
(`python -m facepipe.classify.convert`, 2-3 s, rewritten only when it changed), into
`<state>/models/`: per stack, like its other state, and always the one the code builds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import requests

from facepipe.faces.known_faces import KnownFacesError, is_pickle, load_for_conversion
from facepipe_tools.function_runner import IMAGE_FUNCTION_DIR, worker_ports
from facepipe_tools.stack.component import HttpComponent, StackError, StackPaths
from facepipe_tools.stack.config import HOST, StackConfig
from facepipe_tools.stack.processes import run_logged

CONVERTED_KNOWN_FACES = "known_faces.json"
CLASSIFIER_MODEL = Path("models") / "efficientnet-lite0.onnx"
CONVERT_TIMEOUT_S = 120.0


def worker_known_faces(paths: StackPaths, config: StackConfig) -> str:
    """The known faces the workers read: the JSON converted from a pickle at start, else the
    configured file itself."""
    if is_pickle(config.known_faces):
        return str(paths.state_dir / CONVERTED_KNOWN_FACES)
    return config.known_faces


def classifier_model(paths: StackPaths) -> Path:
    """The ONNX model the classification workers read (CLASSIFIER_MODEL)."""
    return paths.state_dir / CLASSIFIER_MODEL


class FunctionRunner(HttpComponent):
    name = "function"
    #: Every worker loads the known faces and the face models (or the classifier) before it is ready.
    start_timeout_s = 180.0

    def command(self, config: StackConfig) -> list[str]:
        return [
            sys.executable, "-m", "facepipe_tools.function_runner", "--host", HOST, "--port", str(config.gateway_port),
            "--workers", str(config.workers), "--image-workers", str(config.image_workers or 0),
            "--worker-base-port", str(config.worker_base_port),
        ]  # fmt: skip

    def ports(self, config: StackConfig) -> list[int]:
        """The gateway's port first, then the face workers' and their metrics ports, then the
        classification workers' and theirs."""
        faces, images = worker_ports(config.worker_base_port, config.workers, config.image_workers or 0)
        return [config.gateway_port, *faces.all, *images.all]

    def health(self, config: StackConfig) -> tuple[bool, str]:
        """The gateway's /healthz: ready when every worker of each function is, with the counts."""
        url = self.health_url(config)
        try:
            response = requests.get(url, timeout=2.0)
        except requests.RequestException:
            return False, f"{url} -> no answer"
        counts = "; ".join(response.text.strip().splitlines())
        return response.status_code == 200, f"{url} -> {response.status_code} ({counts})"

    def before_start(self, config: StackConfig) -> None:
        """Check the known faces (a clear error here rather than workers that never get
        ready) and convert a pickle to the JSON the workers read; convert the classifier."""
        source = Path(config.known_faces)
        if not source.is_file():
            raise StackError(f"known faces file not found: {config.known_faces}")
        try:
            faces = load_for_conversion(source)
        except KnownFacesError as exc:
            raise StackError(f"known faces {source}: {exc}") from None
        target = Path(worker_known_faces(self.paths, config))
        if target != source:
            write_atomically(target, faces.to_json())
        if config.image_workers:
            if not (IMAGE_FUNCTION_DIR / "index.py").is_file():
                raise StackError(f"{IMAGE_FUNCTION_DIR} is missing (or start the stack with --image-workers 0)")
            model = classifier_model(self.paths)
            command = [sys.executable, "-m", "facepipe.classify.convert", "-o", str(model)]
            run_logged(command, self.paths.log_path("classifier-model"), dict(os.environ), CONVERT_TIMEOUT_S)


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file, so a reader sees the old or the new."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
