"""Security properties, checked on the running code:

- media is decoded in-process: decoding works with every way of starting a program disabled
  (that no code runs a shell is ruff's to check: rules S602, S604, S605 in pyproject.toml);
- a malicious known-faces pickle is refused by the function's entry point without running;
- servers listen on the loopback address unless told otherwise;
- the files that hold credentials are ignored by git (the scan for tracked credentials is
  tests/deploy/test_no_secrets.py);
- distinct input keys never share an answer.

The notifier's constant-time token check is tested with the notifier (tests/unit/test_notifier*.py).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests

from facepipe.answers import error_key, result_key
from facepipe.media import sample_frames
from facepipe_tools.polling import wait_for
from facepipe_tools.stack import free_port, free_port_range

REPO = Path(__file__).resolve().parents[2]


def _refuse(*args, **kwargs):
    raise AssertionError("media decoding tried to start a program")


def test_media_decoding_starts_no_process(sample_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every sample clip and photo decodes with subprocess, os.system, os.popen, fork and
    posix_spawn disabled: FFmpeg's libraries run in-process (PyAV)."""
    for module, name in ((subprocess, "Popen"), (os, "system"), (os, "popen"), (os, "fork"), (os, "posix_spawn"),
                         (os, "posix_spawnp"), (os, "execv"), (os, "execve")):  # fmt: skip
        monkeypatch.setattr(module, name, _refuse)
    clips = sorted(sample_dir.iterdir())
    assert len(clips) >= 8
    for clip in clips:
        frames = list(sample_frames(clip, interval_s=1.0, max_frames=3, timeout_s=30))
        assert frames, clip.name


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_function_refuses_a_malicious_known_faces_pickle(tmp_path: Path) -> None:
    """The function's own entry point (index.py, as the container runs it) with a pickle
    whose loading would create a file: the file is not created, and the function reports
    not ready with the reason instead of serving."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "encoding"
    evil.write_bytes(pickle.dumps({"name": ["x"], "encoding": [_RunsCode(marker)]}, protocol=3))
    port = free_port()
    env = {
        **os.environ,
        "KNOWN_FACES": str(evil),
        "FACEPIPE_ENV_FILE": str(tmp_path / "none.env"),
        "SECRETS_DIR": str(tmp_path),
        "HOST": "127.0.0.1",
        "PORT": str(port),
    }
    process = subprocess.Popen(
        [sys.executable, "index.py"], cwd=REPO / "functions" / "face-recognition", env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        health = wait_for(lambda: _get(f"http://127.0.0.1:{port}/healthz"), timeout_s=120)
        assert health is not None, "the function did not answer"
        status, text = health
        assert status == 503 and "refusing to load" in text, text
        answer = requests.post(f"http://127.0.0.1:{port}/", json={"bucket": "input", "key": "a.mp4"}, timeout=10)
        assert answer.status_code == 503 and "not configured" in answer.json()["error"]
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert '"event": "not configured"' in output and "refusing to load" in output, output
    assert not marker.exists()


def _get(url: str) -> tuple[int, str] | None:
    """(status, text), or None while nothing listens."""
    try:
        response = requests.get(url, timeout=2)
    except requests.ConnectionError:
        return None
    return response.status_code, response.text


@pytest.mark.parametrize(
    ("argv", "what"),
    [
        (["notifier/notification.py", "serve", "--port", "{port}"], "notifier"),
        (["web/app.py", "--port", "{port}"], "web tier"),
        (["-m", "facepipe_tools.function_runner", "--port", "{port}", "--workers", "1",
          "--worker-base-port", "{worker_port}"], "function runner"),
    ],
)  # fmt: skip
def test_servers_listen_on_loopback_by_default(argv: list[str], what: str, tmp_path: Path) -> None:
    """Started without --host, each server listens on 127.0.0.1 and nowhere else."""
    port = free_port_range(6)  # the runner's gateway, then 1 face and 1 image worker with their metrics ports
    worker_port = port + 1
    env = {
        **os.environ,
        "FACEPIPE_ENV_FILE": str(tmp_path / "none.env"),
        "SECRETS_DIR": str(tmp_path),
        "NOTIFY_TOKEN": "test-token",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "KNOWN_FACES": str(REPO / "data" / "known_faces.json"),
    }
    args = [arg.format(port=port, worker_port=worker_port) for arg in argv]
    process = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        listening = wait_for(lambda: _listening(process.pid, port), timeout_s=60)
        assert listening, f"the {what} did not listen on port {port}"
        assert listening == {"127.0.0.1"}, f"the {what} listens on {listening}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _listening(pid: int, port: int) -> set[str]:
    """The addresses process `pid` (or a child) listens on at `port`."""
    processes = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return {
        connection.laddr.ip
        for process in processes
        for connection in process.net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
    }


CREDENTIAL_FILES = (".env", ".env.cluster", ".stack/ceph/client.admin.keyring", "k8s/base/secrets/aws.env",
                    "k8s/base/secrets/notify.env", "k8s/base/secrets/aws-function.env",
                    "k8s/base/secrets/aws-upload-data.env")  # fmt: skip


@pytest.mark.parametrize("name", CREDENTIAL_FILES)
def test_credential_files_are_ignored_by_git(name: str) -> None:
    try:
        done = subprocess.run(["git", "check-ignore", "-q", name], cwd=REPO, capture_output=True, timeout=30)
    except OSError:
        pytest.skip("git is not installed")
    if done.returncode == 128:
        pytest.skip("not a git work tree")
    assert done.returncode == 0, f"{name} is not ignored by git"


@pytest.mark.parametrize(
    "keys",
    [
        ("a/b.mp4", "a//b.mp4", "a///b.mp4"),
        ("../x.mp4", "x.mp4", "./x.mp4", "a/../x.mp4"),
        ("clip.mp4", "clip.mp4.mp4", "a/clip.mp4"),
        ("100%25.mp4", "100%.mp4", "100 .mp4", "100+.mp4"),
    ],
)
def test_distinct_keys_never_share_an_answer(keys: tuple[str, ...]) -> None:
    """An answer belongs to one input: keys that differ other than in the extension have
    different answer keys (only `clip.mp4`, `clip.mov` and `clip` share `clip.csv`: the contract)."""
    assert len({result_key(key) for key in keys}) == len(keys)
    assert len({error_key(key) for key in keys}) == len(keys)
