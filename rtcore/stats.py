"""Percentiles from the loop's log-linear histograms (include/rtcore/hist.h)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

SUB_BUCKETS = 16
HIST_BUCKETS = 640  # RTC_HIST_BUCKETS; test_hist checks both agree


def bucket_lower(idx: int) -> int:
    """Smallest value in bucket idx; mirrors rtc_hist_lower()."""
    if idx < SUB_BUCKETS:
        return idx
    msb = idx // SUB_BUCKETS + 3
    return (SUB_BUCKETS + idx % SUB_BUCKETS) << (msb - 4)


def bucket_upper(idx: int) -> int:
    """Largest value in bucket idx."""
    return bucket_lower(idx + 1) - 1


def bucket_of(value: int) -> int:
    """Python mirror of rtc_hist_bucket(), for baselines measured elsewhere."""
    if value < SUB_BUCKETS:
        return max(value, 0)
    msb = value.bit_length() - 1
    return min((msb - 3) * SUB_BUCKETS + ((value >> (msb - 4)) & 15), HIST_BUCKETS - 1)


def histogram(values: Iterable[int], buckets: int) -> list[int]:
    hist = [0] * buckets
    for v in values:
        hist[min(bucket_of(int(v)), buckets - 1)] += 1
    return hist


def percentile(hist: Sequence[int], q: float, max_value: int | None = None) -> float:
    """Value at quantile q (0..1), read as the midpoint of its bucket and
    capped at the exact maximum when known. 0 for an empty histogram."""
    total = sum(hist)
    if total == 0:
        return 0.0
    rank = q * total
    seen = 0
    for idx, count in enumerate(hist):
        seen += count
        if count and seen >= rank:
            mid = (bucket_lower(idx) + bucket_upper(idx)) / 2
            return float(min(mid, max_value)) if max_value is not None else float(mid)
    return float(max_value or 0)


@functools.cache
def _midpoints(n: int) -> Any:
    import numpy as np

    return np.array([(bucket_lower(i) + bucket_upper(i)) / 2 for i in range(n)])


def summary_us(hist: Sequence[int], max_ns: int) -> dict[str, float]:
    """p50/p99/p999/max in microseconds, plus mean and stddev from bucket
    midpoints. Vectorised: the agent computes it on every status request."""
    import numpy as np

    counts = np.asarray(hist, dtype=np.float64)
    mids = _midpoints(len(counts))
    total = float(counts.sum())
    cum = np.cumsum(counts)

    def pct(q: float) -> float:
        if total == 0:
            return 0.0
        idx = int(np.searchsorted(cum, q * total, side="left"))
        idx = min(idx, len(counts) - 1)
        return float(min(mids[idx], max_ns))

    mean = float(counts @ mids) / total if total else 0.0
    var = float(counts @ (mids - mean) ** 2) / total if total else 0.0
    return {
        "p50": round(pct(0.50) / 1000, 3),
        "p99": round(pct(0.99) / 1000, 3),
        "p999": round(pct(0.999) / 1000, 3),
        "max": round(max_ns / 1000, 3),
        "mean": round(mean / 1000, 3),
        "stddev": round(var**0.5 / 1000, 3),
        "count": int(total),
    }
