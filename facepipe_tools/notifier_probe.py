"""Asking a running notifier how much work it has (its `/healthz` reports the backlog)."""

from __future__ import annotations

import requests

from facepipe_tools.polling import wait_for


def backlog(notify_url: str) -> int | None:
    """Objects queued or being processed, or None when the notifier does not answer."""
    try:
        return int(requests.get(notify_url.rstrip("/") + "/healthz", timeout=5).json()["backlog"])
    except (requests.RequestException, ValueError, KeyError):
        return None


def wait_idle(notify_url: str, timeout_s: float = 120.0, interval_s: float = 0.25) -> bool:
    """Until the notifier reports an empty backlog twice in a row; False after `timeout_s`."""
    idle_polls = 0

    def idle_twice() -> bool:
        nonlocal idle_polls
        idle_polls = idle_polls + 1 if backlog(notify_url) == 0 else 0
        return idle_polls >= 2

    return wait_for(idle_twice, timeout_s, interval_s=interval_s)
