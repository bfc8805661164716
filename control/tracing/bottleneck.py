"""Bottleneck detection: per span name, the mean and p99 of its durations over
a rolling time window, held against thresholds.

A name is raised when a figure crosses its threshold (once the window holds
`min_count` spans, so one slow span on a quiet name is not a bottleneck) and
cleared only after every figure has stayed under `clear_ratio` of its
threshold for a whole window: a name hovering at the threshold does not flap.
Pure: the caller passes the time, so tests drive it with a fake clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from control.errors import InvalidArgument

FIGURES = ("mean_ms", "p99_ms")


@dataclass(frozen=True)
class Threshold:
    """A figure's limit in ms; None: that figure is not checked."""

    mean_ms: float | None = 10.0
    p99_ms: float | None = None

    def limits(self) -> dict[str, float]:
        return {k: v for k, v in self.as_dict().items() if v is not None}

    def as_dict(self) -> dict[str, float | None]:
        return {"mean_ms": self.mean_ms, "p99_ms": self.p99_ms}


@dataclass(frozen=True)
class Figures:
    mean_ms: float
    p99_ms: float
    count: int
    # (duration_ms, trace_id), slowest first, one per trace
    slowest: tuple[tuple[float, str], ...]

    def get(self, figure: str) -> float:
        return self.mean_ms if figure == "mean_ms" else self.p99_ms


@dataclass(frozen=True)
class Change:
    """A name raised (`raised` True) or cleared, with the figures that did it."""

    raised: bool
    name: str
    figures: Figures
    threshold: Threshold
    # the figures over their limit when raised; empty when cleared
    exceeded: tuple[str, ...]


# (name, duration_ns, trace_id)
Sample = tuple[str, int, str | None]


class _Series:
    def __init__(self, max_samples: int) -> None:
        # (observed_at_ns, duration_ns, trace_id)
        self.samples: deque[tuple[int, int, str | None]] = deque(maxlen=max_samples)
        self.active = False
        self.calm_since_ns: int | None = None


class BottleneckDetector:
    """Thresholds: `mean_ms`/`p99_ms` for every name, `overrides` per name
    ({name: {"mean_ms": x, "p99_ms": y}}; a key left out keeps the default,
    None turns that figure off). The window is the last `window_s` seconds,
    at most `max_samples` spans per name; at most `max_names` names are
    followed (the longest-quiet one that is not raised makes room)."""

    def __init__(
        self,
        *,
        mean_ms: float | None = 10.0,
        p99_ms: float | None = None,
        overrides: Mapping[str, Mapping[str, float | None]] | None = None,
        window_s: float = 60.0,
        min_count: int = 20,
        clear_ratio: float = 0.8,
        max_samples: int = 2048,
        max_names: int = 512,
        examples: int = 3,
    ) -> None:
        self.default = Threshold(_limit("mean_ms", mean_ms), _limit("p99_ms", p99_ms))
        self.overrides = {
            name: _threshold(name, given, self.default) for name, given in (overrides or {}).items()
        }
        if not (math.isfinite(window_s) and window_s > 0):
            raise InvalidArgument("window_s", f"{window_s} is not a positive number of seconds")
        if not 0.0 < clear_ratio <= 1.0:
            raise InvalidArgument("clear_ratio", f"{clear_ratio} is out of range: use (0, 1]")
        for field, value in (
            ("min_count", min_count),
            ("max_samples", max_samples),
            ("max_names", max_names),
            ("examples", examples),
        ):
            if value < 1:
                raise InvalidArgument(field, f"{value} is out of range: use 1 or more")
        if min_count > max_samples:
            raise InvalidArgument("min_count", f"{min_count} is more than max_samples")
        self.window_ns = int(window_s * 1e9)
        self.min_count = min_count
        self.clear_ratio = clear_ratio
        self.max_samples = max_samples
        self.max_names = max_names
        self.examples = examples
        self._series: OrderedDict[str, _Series] = OrderedDict()

    def threshold(self, name: str) -> Threshold:
        return self.overrides.get(name, self.default)

    def observe(self, samples: Iterable[Sample], now_ns: int) -> list[Change]:
        """Add finished spans seen at `now_ns`; returns what was raised or cleared."""
        touched: dict[str, None] = {}  # judged once each, in order of arrival
        for name, duration_ns, trace_id in samples:
            series = self._series_of(name)
            if series is None:
                continue
            series.samples.append((now_ns, max(0, duration_ns), trace_id))
            touched[name] = None
        return [c for name in touched if (c := self._judge(name, now_ns)) is not None]

    def figures(self, name: str, now_ns: int) -> Figures | None:
        """The window's figures for `name`, None when it holds no span."""
        series = self._series.get(name)
        if series is None:
            return None
        self._expire(series, now_ns)
        return self._figures(series)

    def _series_of(self, name: str) -> _Series | None:
        series = self._series.get(name)
        if series is not None:
            self._series.move_to_end(name)
            return series
        if len(self._series) >= self.max_names:
            quiet = next((n for n, s in self._series.items() if not s.active), None)
            if quiet is None:
                return None  # every followed name is raised: keep those, skip the new one
            del self._series[quiet]
        series = self._series[name] = _Series(self.max_samples)
        return series

    def _expire(self, series: _Series, now_ns: int) -> None:
        horizon = now_ns - self.window_ns
        while series.samples and series.samples[0][0] <= horizon:
            series.samples.popleft()

    def _figures(self, series: _Series) -> Figures | None:
        if not series.samples:
            return None
        durations = sorted(d for _, d, _ in series.samples)
        n = len(durations)
        p99 = durations[math.ceil(0.99 * n) - 1]  # nearest rank
        slowest: list[tuple[float, str]] = []
        seen: set[str] = set()
        for _, d, trace_id in sorted(series.samples, key=lambda s: -s[1]):
            if trace_id and trace_id not in seen:
                seen.add(trace_id)
                slowest.append((d / 1e6, trace_id))
                if len(slowest) == self.examples:
                    break
        return Figures(sum(durations) / n / 1e6, p99 / 1e6, n, tuple(slowest))

    def _judge(self, name: str, now_ns: int) -> Change | None:
        series = self._series[name]
        self._expire(series, now_ns)
        if len(series.samples) < self.min_count:
            return None  # too few spans to judge either way
        figures = self._figures(series)
        assert figures is not None
        threshold = self.threshold(name)
        limits = threshold.limits()
        if not series.active:
            exceeded = tuple(f for f, limit in limits.items() if figures.get(f) > limit)
            if not exceeded:
                return None
            series.active = True
            series.calm_since_ns = None
            return Change(True, name, figures, threshold, exceeded)
        if any(figures.get(f) >= self.clear_ratio * limit for f, limit in limits.items()):
            series.calm_since_ns = None
            return None
        if series.calm_since_ns is None:
            series.calm_since_ns = now_ns
        if now_ns - series.calm_since_ns < self.window_ns:
            return None
        series.active = False
        series.calm_since_ns = None
        return Change(False, name, figures, threshold, ())


def _limit(field: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(field, f"{value!r} is not a number of ms")
    if not (math.isfinite(value) and value > 0):
        raise InvalidArgument(field, f"{value} is out of range: use more than 0 ms, or none")
    return float(value)


def _threshold(name: str, given: Mapping[str, Any], default: Threshold) -> Threshold:
    unknown = sorted(set(given) - set(FIGURES))
    if unknown:
        raise InvalidArgument(
            f"overrides[{name!r}]", f"unknown {', '.join(unknown)}: use mean_ms, p99_ms"
        )
    values = default.as_dict()
    values.update({k: _limit(f"overrides[{name!r}].{k}", v) for k, v in given.items()})
    return Threshold(**values)
