"""The log-linear histogram: rtcore/stats.py against include/rtcore/hist.h
(through rtcore._core), bucket geometry, and percentiles read from buckets."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from rtcore import _core, layout, stats

NB = layout.HIST_BUCKETS
# first value past the last regular bucket: larger values are clamped into
# bucket NB - 1 by rtc_hist_bucket()
TOP = _core.hist_lower(NB)


def test_top_is_2_pow_43() -> None:
    assert TOP == 1 << 43 == stats.bucket_lower(NB)


def test_bucket_of_mirrors_c_for_0_to_100000() -> None:
    mismatches = [
        (v, stats.bucket_of(v), _core.hist_bucket(v))
        for v in range(100_001)
        if stats.bucket_of(v) != _core.hist_bucket(v)
    ]
    assert not mismatches, mismatches[:10]


def test_bucket_lower_mirrors_c_for_every_bucket() -> None:
    for idx in range(NB + 1):
        assert stats.bucket_lower(idx) == _core.hist_lower(idx), idx
    for idx in range(NB):
        assert stats.bucket_upper(idx) == _core.hist_lower(idx + 1) - 1


@settings(max_examples=2000)
@given(st.integers(min_value=0, max_value=TOP - 1))
def test_bucket_of_mirrors_c_for_large_values(v: int) -> None:
    assert stats.bucket_of(v) == _core.hist_bucket(v)


@given(
    st.integers(min_value=0, max_value=40).flatmap(
        lambda e: st.integers(min_value=max(0, (1 << e) - 2), max_value=(1 << (e + 1)) + 2)
    )
)
def test_bucket_of_mirrors_c_around_powers_of_two(v: int) -> None:
    assert stats.bucket_of(v) == _core.hist_bucket(v)


def test_values_past_the_last_bucket_are_clamped_in_c() -> None:
    for v in (TOP, TOP + 1, 1 << 50, (1 << 63) - 1, (1 << 64) - 1):
        assert _core.hist_bucket(v) == NB - 1
    assert _core.hist_bucket(TOP - 1) == NB - 1
    # stats.histogram() clamps the same way when it bins values
    assert stats.histogram([TOP, 1 << 60, 5], NB)[NB - 1] == 2


def test_bucket_of_mirrors_c_past_the_last_bucket() -> None:
    """bucket_of() is documented as a mirror of rtc_hist_bucket(), which clamps."""
    for v in (TOP, 1 << 50, (1 << 64) - 1):
        assert stats.bucket_of(v) == _core.hist_bucket(v) == NB - 1


@settings(max_examples=2000)
@given(st.integers(min_value=0, max_value=TOP - 1))
def test_value_lies_inside_its_bucket(v: int) -> None:
    b = _core.hist_bucket(v)
    assert _core.hist_lower(b) <= v < _core.hist_lower(b + 1)


def test_value_lies_inside_its_bucket_exhaustive_small() -> None:
    for v in range(100_001):
        b = _core.hist_bucket(v)
        assert _core.hist_lower(b) <= v < _core.hist_lower(b + 1), v


def test_bucket_geometry() -> None:
    lowers = [_core.hist_lower(i) for i in range(NB + 1)]
    assert lowers[:17] == list(range(17))  # exact below 16
    assert all(a < b for a, b in zip(lowers, lowers[1:], strict=False)), "strictly increasing"
    for idx in range(16, NB):
        width = lowers[idx + 1] - lowers[idx]
        assert width * 16 <= lowers[idx], (idx, lowers[idx], width)  # relative width <= 1/16
        assert _core.hist_bucket(lowers[idx]) == idx
        assert _core.hist_bucket(lowers[idx + 1] - 1) == idx
    # the buckets tile 0..TOP without holes: every bucket's lower bound maps back to it
    assert [_core.hist_bucket(lo) for lo in lowers[:NB]] == list(range(NB))


def _exact_percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile."""
    k = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[k - 1]


def _c_histogram(values: list[int]) -> list[int]:
    hist = [0] * NB
    for v in values:
        hist[_core.hist_bucket(v)] += 1
    return hist


QS = [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999, 1.0]


def _assert_within_one_bucket(values: list[int], q: float, hist: list[int]) -> None:
    values = sorted(values)
    exact = _exact_percentile(values, q)
    for cap in (None, values[-1]):
        got = stats.percentile(hist, q, cap)
        b_got = _core.hist_bucket(int(got))
        b_exact = _core.hist_bucket(exact)
        assert abs(b_got - b_exact) <= 1, (q, cap, exact, got)
        if cap is not None:
            assert got <= cap


def test_percentile_uniform() -> None:
    values = list(range(1, 100_001))
    hist = _c_histogram(values)
    assert hist == stats.histogram(values, NB)
    for q in QS:
        _assert_within_one_bucket(values, q, hist)


def test_percentile_lognormal_latencies() -> None:
    rng = random.Random(2024)
    # wake-up latencies: ~20 us median with a long tail up to tens of ms
    values = [int(rng.lognormvariate(math.log(20_000), 0.8)) for _ in range(50_000)]
    values += [rng.randint(1_000_000, 50_000_000) for _ in range(50)]
    hist = _c_histogram(values)
    for q in QS:
        _assert_within_one_bucket(values, q, hist)


def test_percentile_constant_and_empty() -> None:
    hist = _c_histogram([12_345] * 1000)
    for q in QS:
        got = stats.percentile(hist, q)
        assert _core.hist_lower(_core.hist_bucket(12_345)) <= got
        assert got <= _core.hist_lower(_core.hist_bucket(12_345) + 1)
        assert stats.percentile(hist, q, 12_345) <= 12_345
    assert stats.percentile([0] * NB, 0.5) == 0.0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=10**10), min_size=1, max_size=300),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_percentile_within_one_bucket_of_exact(values: list[int], q: float) -> None:
    _assert_within_one_bucket(values, q, _c_histogram(values))
