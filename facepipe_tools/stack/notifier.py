"""The notifier (notifier/notification.py): `setup` once per `up` (buckets, topic,
notification configuration), then `serve`."""

from __future__ import annotations

import sys

from facepipe_tools.paths import REPO_ROOT
from facepipe_tools.stack.component import HttpComponent, StackError
from facepipe_tools.stack.config import HOST, StackConfig

NOTIFIER = REPO_ROOT / "notifier" / "notification.py"


def require_notifier() -> None:
    if not NOTIFIER.is_file():
        raise StackError(f"{NOTIFIER.relative_to(REPO_ROOT)} is missing")


class Notifier(HttpComponent):
    name = "notifier"

    def command(self, config: StackConfig) -> list[str]:
        return [sys.executable, str(NOTIFIER), "serve", "--host", HOST, "--port", str(config.notifier_port)]

    def ports(self, config: StackConfig) -> list[int]:
        return [config.notifier_port]

    def before_start(self, config: StackConfig) -> None:
        require_notifier()


def setup_command() -> list[str]:
    """Creates the buckets and the topic, and points the input bucket's notifications at the
    notifier (idempotent)."""
    require_notifier()
    return [sys.executable, str(NOTIFIER), "setup"]
