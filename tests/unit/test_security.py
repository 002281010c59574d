"""Security properties of the code base, checked statically (ast) and on the real entry points:

- the notifier token is compared in constant time, and no token or secret anywhere is
  compared with `==`/`!=`/`in`;
- no program is run through a shell (no shell=True, os.system, os.popen, a command string);
- a malicious known-faces pickle is refused by the function's entry point without running;
- servers listen on the loopback address unless told otherwise;
- the files that hold credentials are ignored by git (the scan for tracked credentials is
  tests/deploy/test_no_secrets.py).
"""

from __future__ import annotations

import ast
import inspect
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import requests

from facepipe.answers import error_key, result_key
from facepipe.notifier import core as notifier_core
from facepipe_tools.polling import wait_for
from facepipe_tools.stack import free_port

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".venv", "build", ".stack", "__pycache__", ".git", "node_modules", "template"}
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}
SHELL_CALLS = {
    ("os", "system"),
    ("os", "popen"),
    ("os", "execl"),
    ("os", "spawnl"),
    ("subprocess", "getoutput"),
    ("subprocess", "getstatusoutput"),
    ("asyncio", "create_subprocess_shell"),
}
SECRET_WORDS = ("token", "secret", "password", "api_key")
#: Code that runs in production (tests compare fake tokens on purpose).
PRODUCTION_DIRS = ("facepipe", "functions", "notifier", "web", "checker", "workload", "data")


def python_files() -> list[Path]:
    files = []
    for path in REPO.rglob("*.py"):
        if not SKIP_DIRS.intersection(path.relative_to(REPO).parts):
            files.append(path)
    return sorted(files)


def parsed() -> list[tuple[Path, ast.Module]]:
    return [(path, ast.parse(path.read_text(), filename=str(path))) for path in python_files()]


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _is_string_command(node: ast.AST) -> bool:
    """A command given as one string (which only a shell would split)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return True
    if isinstance(node, ast.JoinedStr):
        return True
    return isinstance(node, ast.BinOp) and (_is_string_command(node.left) or _is_string_command(node.right))


def shell_uses(tree: ast.Module) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        module, _, attr = name.rpartition(".")
        for keyword in node.keywords:
            off = isinstance(keyword.value, ast.Constant) and keyword.value.value is False
            if keyword.arg == "shell" and not off:
                found.append((node.lineno, f"{name}(shell=...)"))
        if (module.rpartition(".")[2], attr) in SHELL_CALLS:
            found.append((node.lineno, name))
        is_subprocess = module.endswith("subprocess") and attr in SUBPROCESS_CALLS
        if is_subprocess and node.args and _is_string_command(node.args[0]):
            found.append((node.lineno, f"{name} with a command string"))
    return found


def _secret_name(node: ast.AST) -> bool:
    """A variable or attribute (not a CONSTANT) whose name says it holds a secret."""
    name = _dotted(node.func if isinstance(node, ast.Call) else node).rpartition(".")[2]
    return not name.isupper() and any(word in name.lower() for word in SECRET_WORDS)


def secret_comparisons(tree: ast.Module) -> list[tuple[int, str]]:
    """`==`, `!=`, `in` between a secret and another run-time value (a timing side channel);
    comparisons with a literal (is it empty?) are fine."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        if not any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
            continue
        sides = [node.left, *node.comparators]
        if any(isinstance(side, ast.Constant) for side in sides):
            continue
        if any(_secret_name(side) for side in sides):
            found.append((node.lineno, ast.unparse(node)[:80]))
    return found


def test_the_checks_catch_what_they_look_for() -> None:
    bad = ast.parse(
        textwrap.dedent(
            """
            import os, subprocess
            subprocess.run("ffmpeg -i " + path, shell=True)
            subprocess.Popen(f"ffmpeg -i {path}")
            os.system("ffmpeg")
            os.popen("ls")
            if request_token == settings.notify_token: pass
            """
        )
    )
    assert {line for line, _ in shell_uses(bad)} == {3, 4, 5, 6}
    assert len(secret_comparisons(bad)) == 1
    good = ast.parse('subprocess.run(["ffmpeg", "-i", str(path)], check=True)\nhmac.compare_digest(a, token)')
    assert shell_uses(good) == [] and secret_comparisons(good) == []


def test_nothing_runs_through_a_shell() -> None:
    problems = {str(path.relative_to(REPO)): uses for path, tree in parsed() if (uses := shell_uses(tree))}
    assert not problems, problems


def test_no_secret_is_compared_with_equality() -> None:
    production = [(path, tree) for path, tree in parsed() if path.relative_to(REPO).parts[0] in PRODUCTION_DIRS]
    assert len(production) > 20
    problems = {
        str(path.relative_to(REPO)): found for path, tree in production if (found := secret_comparisons(tree))
    }
    assert not problems, problems


def test_notifier_token_check_uses_compare_digest() -> None:
    source = inspect.getsource(notifier_core.Notifier.check_token)
    calls = {_dotted(node.func) for node in ast.walk(ast.parse(textwrap.dedent(source))) if isinstance(node, ast.Call)}
    assert "hmac.compare_digest" in calls


def test_media_decoding_starts_no_process() -> None:
    """Frames are decoded in-process (PyAV) or, where a program runs, with an argument list:
    the function's code starts no shell and passes no command string."""
    for path in (REPO / "facepipe" / "media.py", REPO / "facepipe" / "function.py"):
        assert shell_uses(ast.parse(path.read_text())) == []


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
        assert health.status_code == 503 and "refusing to load" in health.text, health.text
        answer = requests.post(f"http://127.0.0.1:{port}/", json={"bucket": "input", "key": "a.mp4"}, timeout=10)
        assert answer.status_code == 500 and "not configured" in answer.json()["error"]
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert '"event": "not configured"' in output and "refusing to load" in output, output
    assert not marker.exists()


def _get(url: str) -> requests.Response | None:
    try:
        return requests.get(url, timeout=2)
    except requests.ConnectionError:
        return None


@pytest.mark.parametrize(
    ("script", "what"),
    [("facepipe/notifier/core.py", "notifier"), ("facepipe_tools/function_runner.py", "function runner"),
     ("facepipe/web/core.py", "web tier")],
)  # fmt: skip
def test_servers_listen_on_loopback_by_default(script: str, what: str) -> None:
    path = REPO / script
    if not path.is_file():
        pytest.skip(f"{script} not present")
    sources = [path.read_text()]
    defaults = []
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and _dotted(node.func).endswith("add_argument"):
                if node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "--host":
                    defaults += [ast.unparse(k.value) for k in node.keywords if k.arg == "default"]
    if not defaults:
        pytest.skip(f"{script} has no --host option")
    assert all("127.0.0.1" in value for value in defaults), defaults


@pytest.mark.parametrize("name", [".env", ".env.cluster", ".stack/ceph/client.admin.keyring",
                                  "k8s/base/secrets/aws.env", "k8s/base/secrets/notify.env"])  # fmt: skip
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

