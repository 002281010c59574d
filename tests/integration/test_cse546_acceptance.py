"""Acceptance: the CSE546 reference set through a real local stack serving its known faces."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facepipe_tools.paths import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.acceptance]


def test_cse546_all_uploads_all_mapping_entries_correct(cse546: Path, make_stack, tmp_path: Path) -> None:
    stack = make_stack(known_faces=cse546 / "encoding", student_data=cse546 / "student_data.json")
    stack.up()
    env = {**__import__("os").environ, **stack.settings_env(), "FACEPIPE_ENV_FILE": str(stack.env_file)}
    folders = [cse546 / "test_cases" / "test_case_1", cse546 / "test_cases" / "test_case_2"]
    uploads = sum(1 for folder in folders for _ in folder.glob("*.mp4"))
    assert uploads == 108

    started = time.monotonic()
    workload = subprocess.run(
        [sys.executable, "workload/workload.py", *map(str, folders)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert workload.returncode == 0, workload.stdout + workload.stderr
    summary_file = tmp_path / "check.json"
    check = subprocess.run(
        [sys.executable, "checker/check.py", "--mapping", str(cse546 / "mapping"), "--wait", "600",
         "--json", str(summary_file)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=700,
    )  # fmt: skip
    wall = time.monotonic() - started
    assert check.returncode == 0, check.stdout[-5000:] + check.stderr
    assert "100/100 correct" in check.stdout
    summary = json.loads(summary_file.read_text())
    print(f"\nCSE546: 108 uploads, 100/100 correct, wall {wall:.1f} s; checker summary: {json.dumps(summary)[:600]}")
