"""Statistics the tools report: the one percentile definition of the bench, the workload and the checker."""

from __future__ import annotations

import statistics


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
