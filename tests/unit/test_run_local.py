"""The local function runner gives up, with a non-zero exit, when its workers cannot start."""

import os
import subprocess
import sys
from pathlib import Path

from facepipe_tools.stack import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_runner_stops_when_workers_cannot_start(tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text(f"KNOWN_FACES={tmp_path / 'missing.json'}\n")
    env = {**os.environ, "FACEPIPE_ENV_FILE": str(env_file), "SECRETS_DIR": str(tmp_path)}
    env.pop("KNOWN_FACES", None)
    done = subprocess.run(
        [sys.executable, "facepipe_tools/function_runner.py", "--port", str(free_port()), "--workers", "1",
         "--worker-base-port", str(free_port())],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    output = done.stdout + done.stderr
    assert "cannot read known faces" in output
    assert "cannot start" in output
    assert "Traceback" not in output
