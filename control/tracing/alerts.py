"""Alerts: span names that became bottlenecks, raised and cleared with
hysteresis by control.tracing.bottleneck, kept for `rtctl alerts` and
`rtctl diagnose`."""

from __future__ import annotations

import copy
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from control.tracing.bottleneck import BottleneckDetector, Change, Figures, Sample

OnChange = Callable[[str, str, str, dict[str, Any]], None]


class Alerts:
    """Active and cleared alerts; `on_change(kind, level, message, fields)` is
    called when one is raised ("alert_raised", CRITICAL) or cleared
    ("alert_cleared", WARN), after the registry holds the change (the agent
    publishes it on the bus). Thresholds and window: see BottleneckDetector.
    Every active alert is kept, and the newest `keep_cleared` cleared ones.
    `clock` gives unix ns (tests pass a fake one)."""

    def __init__(
        self,
        on_change: OnChange,
        *,
        keep_cleared: int = 200,
        clock: Callable[[], int] = time.time_ns,
        **thresholds: Any,
    ) -> None:
        self._on_change = on_change
        # mean_ms, p99_ms, overrides, window_s, min_count, clear_ratio
        self._detector = BottleneckDetector(**thresholds)
        self._window_s = self._detector.window_ns / 1e9
        self._clock = clock
        self._lock = threading.Lock()
        self._active: dict[str, dict[str, Any]] = {}  # by subject
        self._cleared: deque[dict[str, Any]] = deque(maxlen=keep_cleared)
        self._ids = itertools.count(1)

    def observe_spans(self, spans: list[dict[str, Any]]) -> None:
        """Feed finished spans to the detector; a span without a name or both
        times is skipped."""
        samples: list[Sample] = []
        for sp in spans:
            name, start, end = sp.get("name"), sp.get("start_time_ns"), sp.get("end_time_ns")
            if name and isinstance(start, int) and isinstance(end, int):
                samples.append((name, end - start, sp.get("trace_id")))
        if not samples:
            return
        with self._lock:
            now = self._clock()
            notices = [self._apply(c, now) for c in self._detector.observe(samples, now)]
        # outside the lock: a listener may well call list()
        for kind, level, message, fields in notices:
            self._on_change(kind, level, message, fields)

    def list(self, all: bool = False) -> list[dict[str, Any]]:
        """Active alerts, newest first; with `all` the cleared ones follow them."""
        with self._lock:
            found = sorted(self._active.values(), key=lambda a: -a["raised_at"])
            if all:
                found += reversed(self._cleared)
            return copy.deepcopy(found)

    def _apply(self, change: Change, now: int) -> tuple[str, str, str, dict[str, Any]]:
        if change.raised:
            alert: dict[str, Any] = {
                "id": next(self._ids),
                "kind": "bottleneck",
                "subject": change.name,
                "active": True,
                "message": _raised_message(change, self._window_s),
                "figures": _figures(change.figures),
                "threshold": change.threshold.as_dict(),
                "exceeded": list(change.exceeded),
                "example_trace_ids": [t for _, t in change.figures.slowest],
                "raised_at": now,
                "cleared_at": None,
                "cleared_figures": None,
            }
            self._active[change.name] = alert
            return "alert_raised", "CRITICAL", alert["message"], _fields(alert, now)
        alert = self._active.pop(change.name)
        alert["active"] = False
        alert["cleared_at"] = now
        alert["cleared_figures"] = _figures(change.figures)
        self._cleared.append(alert)
        message = (
            f"bottleneck cleared: span {change.name} mean {_ms(change.figures.mean_ms)}, "
            f"p99 {_ms(change.figures.p99_ms)}, under its threshold for {self._window_s:g} s"
        )
        return "alert_cleared", "WARN", message, _fields(alert, now)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g} ms"


def _raised_message(change: Change, window_s: float) -> str:
    f, limits = change.figures, change.threshold.as_dict()
    over = ", ".join(
        f"{figure.split('_')[0]} {_ms(f.get(figure))} over {_ms(limits[figure])}"
        for figure in change.exceeded
    )
    return f"bottleneck: span {change.name} {over} ({f.count} spans in the last {window_s:g} s)"


def _figures(f: Figures) -> dict[str, Any]:
    return {"mean_ms": round(f.mean_ms, 3), "p99_ms": round(f.p99_ms, 3), "count": f.count}


def _fields(alert: dict[str, Any], now: int) -> dict[str, Any]:
    """Event fields: none named like the event's own keys (kind, level,
    message); trace_id links the event to the slowest example trace."""
    figures = alert["cleared_figures"] or alert["figures"]
    fields: dict[str, Any] = {
        "alert_id": alert["id"],
        "alert_kind": alert["kind"],
        "subject": alert["subject"],
        **figures,
        "threshold_mean_ms": alert["threshold"]["mean_ms"],
        "threshold_p99_ms": alert["threshold"]["p99_ms"],
        "example_trace_ids": list(alert["example_trace_ids"]),
        "ts_ns": now,
    }
    if alert["example_trace_ids"]:
        fields["trace_id"] = alert["example_trace_ids"][0]
    return fields
