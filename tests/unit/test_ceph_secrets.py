"""The local stack's Ceph tools keep S3 keys off command lines and out of error texts (#12
item 6): `radosgw-admin` gets them through CEPH_ARGS, and a failing call's StackError (what
`python -m facepipe_tools.stack` prints) holds neither the command line's keys nor the keys
in the tool's output."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from facepipe_tools.stack.ceph import CephTools, redact, shown_command
from facepipe_tools.stack.component import StackError, StackPaths
from facepipe_tools.stack.config import StackConfig

FAKE_TOOL = """#!/bin/sh
# Stands in for radosgw-admin: records its argv and CEPH_ARGS, prints what the real one prints.
printf '%s\\n' "$@" > "$FAKE_RECORD.argv"
printf '%s' "$CEPH_ARGS" > "$FAKE_RECORD.env"
case "$*" in
  *"user info"*) echo 'could not fetch user info: no user info saved' >&2; exit 22 ;;
esac
if [ -n "$FAKE_FAIL" ]; then
  echo '{"user_id": "facepipe", "keys": [{"user": "facepipe",'
  echo '  "access_key": "'"$FAKE_ACCESS"'", "secret_key": "'"$FAKE_SECRET"'"}]}'
  echo "could not create user: $CEPH_ARGS" >&2
  exit 17
fi
echo '{"user_id": "facepipe", "keys": []}'
"""


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CephTools:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "radosgw-admin"
    fake.write_text(FAKE_TOOL)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    paths = StackPaths(tmp_path / "state")
    paths.log_dir.mkdir(parents=True)
    config = StackConfig(
        mon_port=1, rgw_port=2, dynamodb_port=3, gateway_port=4, notifier_port=5, workers=1,
        known_faces="", student_data="", env_file="",
    )  # fmt: skip
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_RECORD": str(tmp_path / "call"),
        "FAKE_ACCESS": config.s3_access_key_id,
        "FAKE_SECRET": config.s3_secret_access_key,
        "CEPH_ARGS": "--from-the-caller",
    }
    return CephTools(paths, config, env)


def recorded(tools: CephTools, what: str) -> str:
    return Path(tools.env["FAKE_RECORD"] + f".{what}").read_text()


def test_user_keys_reach_radosgw_admin_outside_its_argv(tools: CephTools) -> None:
    c = tools.config
    assert tools.ensure_rgw_user() is True
    argv = recorded(tools, "argv")
    assert "user\ncreate\n" in argv
    assert c.s3_secret_access_key not in argv and c.s3_access_key_id not in argv
    assert recorded(tools, "env") == f"--access-key {c.s3_access_key_id} --secret-key {c.s3_secret_access_key}"


def test_a_failing_call_names_no_secret(tools: CephTools) -> None:
    c = tools.config
    tools.env["FAKE_FAIL"] = "1"
    with pytest.raises(StackError) as raised:
        tools.ensure_rgw_user()
    err = raised.value
    text = f"{err}\n{err.output}"
    assert "failed (17): radosgw-admin" in text and "could not create user" in text
    for secret in (c.s3_secret_access_key, c.s3_access_key_id):
        assert secret not in text
    assert '"secret_key": "***"' in err.output


def test_a_secret_passed_on_the_command_line_is_not_shown(tools: CephTools) -> None:
    tools.env["FAKE_FAIL"] = "1"
    with pytest.raises(StackError) as raised:
        tools.run("radosgw-admin", "key", "create", "--uid", "x", "--secret-key", "s3cr3t-on-argv", log="rgw")
    assert "s3cr3t-on-argv" not in f"{raised.value}\n{raised.value.output}"
    assert "--secret-key ***" in str(raised.value)


def test_keys_with_whitespace_are_refused_before_any_call(tools: CephTools) -> None:
    with pytest.raises(StackError, match="without whitespace"):
        tools.run("radosgw-admin", "user", "list", secret_options={"--secret-key": "a b"})


def test_redact_removes_json_members_keyring_lines_and_known_values() -> None:
    output = json.dumps({"keys": [{"access_key": "AK1", "secret_key": 'S"K1'}], "swift_keys": [{"secret": "SW"}]})
    cleaned = redact(output + "\n[osd.0]\n\tkey = AQBcephxkey==\nmentions AK1 and tok", ("tok",))
    for secret in ("AK1", 'S\\"K1', "SW", "AQBcephxkey==", "tok"):
        assert secret not in cleaned
    assert json.loads(cleaned.split("\n")[0])["keys"][0] == {"access_key": "***", "secret_key": "***"}
    assert shown_command(["radosgw-admin", "--access-key", "AK", "--secret", "S", "--uid", "u"]) == (
        "radosgw-admin --access-key *** --secret *** --uid u"
    )
