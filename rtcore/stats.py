"""Percentiles from the loop's log-linear histograms (include/rtcore/hist.h)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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


def summary_us(hist: Sequence[int], max_ns: int) -> dict[str, float]:
    """p50/p99/p999/max in microseconds, plus mean and stddev from bucket midpoints."""
    total = sum(hist)
    mids = [(bucket_lower(i) + bucket_upper(i)) / 2 for i in range(len(hist))]
    mean = sum(c * m for c, m in zip(hist, mids, strict=True)) / total if total else 0.0
    var = (
        sum(c * (m - mean) ** 2 for c, m in zip(hist, mids, strict=True)) / total if total else 0.0
    )
    return {
        "p50": round(percentile(hist, 0.50, max_ns) / 1000, 3),
        "p99": round(percentile(hist, 0.99, max_ns) / 1000, 3),
        "p999": round(percentile(hist, 0.999, max_ns) / 1000, 3),
        "max": round(max_ns / 1000, 3),
        "mean": round(mean / 1000, 3),
        "stddev": round(var**0.5 / 1000, 3),
        "count": total,
    }
