"""The function runner: the local OpenFaaS gateway stand-in and its worker processes
(facepipe_tools/function_runner.py), all in one process group.

The function reads known faces only as JSON (or photos). A stack started with the CSE546
pickle gets it converted at each start, by the parser that never unpickles, to
`<state>/known_faces.json`; `worker_known_faces` is what the workers' KNOWN_FACES must be."""

from __future__ import annotations

import sys
from pathlib import Path

from facepipe.faces.known_faces import KnownFacesError, is_pickle, load_for_conversion
from facepipe_tools.function_runner import worker_metrics_ports
from facepipe_tools.stack.component import HttpComponent, StackError, StackPaths
from facepipe_tools.stack.config import HOST, StackConfig

CONVERTED_KNOWN_FACES = "known_faces.json"


def worker_known_faces(paths: StackPaths, config: StackConfig) -> str:
    """The known faces the workers read: the JSON converted from a pickle at start, else the
    configured file itself."""
    if is_pickle(config.known_faces):
        return str(paths.state_dir / CONVERTED_KNOWN_FACES)
    return config.known_faces


class FunctionRunner(HttpComponent):
    name = "function"
    #: Every worker loads the known faces and the face models before it is ready.
    start_timeout_s = 180.0

    def command(self, config: StackConfig) -> list[str]:
        return [
            sys.executable, "-m", "facepipe_tools.function_runner", "--host", HOST, "--port", str(config.gateway_port),
            "--workers", str(config.workers), "--worker-base-port", str(config.worker_base_port),
        ]  # fmt: skip

    def ports(self, config: StackConfig) -> list[int]:
        """The gateway's port first, then the workers', then the workers' metrics ports."""
        workers = range(config.worker_base_port, config.worker_base_port + config.workers)
        return [config.gateway_port, *workers, *worker_metrics_ports(config.worker_base_port, config.workers)]

    def before_start(self, config: StackConfig) -> None:
        """Check the known faces (a clear error here rather than workers that never get
        ready) and convert a pickle to the JSON the workers read."""
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


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file, so a reader sees the old or the new."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
