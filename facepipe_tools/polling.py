"""Waiting for something to become true: the one polling helper of the tools and the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout_s: float = 15.0, interval_s: float = 0.1) -> T:
    """Call `condition` until it returns a true value and return that value; after
    `timeout_s`, return its last (false) value. Intervals grow to at most 1 s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        remaining = deadline - time.monotonic()
        if value or remaining <= 0:
            return value
        time.sleep(min(interval_s, remaining))
        interval_s = min(interval_s * 1.5, 1.0)
