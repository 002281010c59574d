"""The function runner: the local OpenFaaS gateway stand-in and its worker processes
(facepipe_tools/function_runner.py), all in one process group."""

from __future__ import annotations

import sys
from pathlib import Path

from facepipe_tools.stack.component import HttpComponent, StackError
from facepipe_tools.stack.config import HOST, StackConfig


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
        """The gateway's port first, then the workers'."""
        return [config.gateway_port, *range(config.worker_base_port, config.worker_base_port + config.workers)]

    def before_start(self, config: StackConfig) -> None:
        if not Path(config.known_faces).is_file():
            raise StackError(f"known faces file not found: {config.known_faces}")
