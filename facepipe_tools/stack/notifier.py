"""The notifier (notifier/notification.py): `setup` once per `up` (buckets, topic,
notification configuration), then `serve`, invoking as many objects of each function at once
as the function runner's workers hold (`notifier_concurrency`)."""

from __future__ import annotations

import sys

from facepipe.settings import Settings
from facepipe_tools.function_runner import FACE_INFLIGHT, IMAGE_INFLIGHT
from facepipe_tools.paths import REPO_ROOT
from facepipe_tools.stack.component import HttpComponent, StackError
from facepipe_tools.stack.config import HOST, StackConfig

NOTIFIER = REPO_ROOT / "notifier" / "notification.py"


def notifier_concurrency(config: StackConfig) -> int:
    """NOTIFIER_CONCURRENCY for the stack: enough invocations per function to fill every slot
    of its workers (workers x their in-flight requests), at least the setting's default. Fewer
    would leave a classification worker without a photo downloaded and waiting while it
    classifies one."""
    return max(
        Settings().notifier_concurrency, config.workers * FACE_INFLIGHT, (config.image_workers or 0) * IMAGE_INFLIGHT
    )


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
