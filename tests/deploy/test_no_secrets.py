"""No credential, token or key is tracked anywhere in the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
MAX_BYTES = 2 * 1024 * 1024

# Shapes of real credentials. Placeholders (REPLACE_WITH_..., ${VAR}) and the
# tests' own fake values do not match.
PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "credential assignment": re.compile(
        r"(?i)\b(aws_secret_access_key|secret_access_key|s3_secret_access_key|aws_session_token|notify_token"
        r"|password|passwd|api_key|secret_key)\b[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+=]{20,})"
    ),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),
}


def candidate_files() -> list[Path]:
    """Files git tracks or would track (untracked but not ignored)."""
    try:
        result = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
            timeout=60,
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git work tree")
    paths = [REPO / name for name in result.stdout.decode().split("\0") if name]
    return [p for p in paths if p.is_file() and p.stat().st_size <= MAX_BYTES]


def findings(text: str) -> list[str]:
    found = []
    for label, pattern in PATTERNS.items():
        for match in pattern.finditer(text):
            value = match.group(match.lastindex or 0)
            if label == "credential assignment" and (
                _looks_like_placeholder(value) or not (re.search(r"\d", value) and re.search(r"[A-Za-z]", value))
            ):
                continue
            found.append(f"{label}: {match.group(0)[:60]}")
    return found


def _looks_like_placeholder(value: str) -> bool:
    return value.upper().startswith(("REPLACE", "CHANGE", "YOUR", "EXAMPLE", "PLACEHOLDER", "SET-BY", "SET_BY"))


def test_the_scanner_catches_real_looking_credentials() -> None:
    # Assembled at run time so that this file itself does not match.
    assert findings("aws_access_key_id = " + "AKIA" + "IOSFODNN7EXAMPLE")
    assert findings("AWS_SECRET_ACCESS_KEY" + "=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    assert findings("NOTIFY_TOKEN" + "=3f1c9a0b7d2e4f6a8b0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a")
    assert findings("-----BEGIN OPENSSH " + "PRIVATE KEY-----")
    assert not findings("AWS_SECRET_ACCESS_KEY=REPLACE_WITH_AWS_SECRET_ACCESS_KEY")
    assert not findings("S3_SECRET_ACCESS_KEY: ${S3_SECRET_ACCESS_KEY}")
    assert not findings('"S3_SECRET_ACCESS_KEY": "s3-secret-access-key"')


def test_no_tracked_file_holds_a_credential() -> None:
    problems = {}
    for path in candidate_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # binary
        if found := findings(text):
            problems[str(path.relative_to(REPO))] = found
    assert not problems, problems


def test_no_env_file_or_secret_manifest_is_tracked() -> None:
    for path in candidate_files():
        relative = path.relative_to(REPO)
        name = path.name
        is_env_file = name == ".env" or name.endswith(".env") or name.startswith(".env.")
        assert not is_env_file or name.endswith(".example"), (
            f"{relative}: .env files hold credentials; keep them untracked (templates end in .example)"
        )
        if path.suffix in (".yaml", ".yml") and "k8s" in relative.parts:
            for doc in yaml.safe_load_all(path.read_text()):
                if isinstance(doc, dict) and doc.get("kind") == "Secret":
                    assert not doc.get("data") and not doc.get("stringData"), f"{relative}: Secret with values"
