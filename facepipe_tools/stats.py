"""Statistics the tools report: the one percentile definition of the bench, the workload and the
checker, and the one reader of a process's peak memory."""

from __future__ import annotations

import statistics
from pathlib import Path


def percentile(values: list[float], fraction: float) -> float:
    """The `fraction` (0.01 .. 0.99, whole percents) percentile of a non-empty list, interpolated
    between the two nearest values; raises ValueError for no values or another fraction.

    Method "inclusive": the values are the whole run (not a sample of a larger one), so the
    smallest and largest are the 0th and 100th percentiles and no result lies outside them."""
    if not values:
        raise ValueError("percentile of no values")
    percent = round(fraction * 100)
    if not 1 <= percent <= 99 or abs(fraction * 100 - percent) > 1e-9:
        raise ValueError(f"percentile fraction must be a whole percent from 0.01 to 0.99, not {fraction!r}")
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def vmhwm_mb(status: str) -> float | None:
    """The peak resident memory (VmHWM) in MiB from the text of /proc/<pid>/status."""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def read_status(pid: int | str) -> str | None:
    """/proc/<pid>/status (`pid` "self": this process), None when the process is gone."""
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None


def peak_rss_mb(pid: int | str = "self") -> float | None:
    """VmHWM (peak resident set size) of a process in MiB, None when it is gone or there is no
    /proc. Read from /proc because psutil gives only the current RSS on Linux, not the peak."""
    status = read_status(pid)
    return vmhwm_mb(status) if status else None
