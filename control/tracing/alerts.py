"""Alerts: bottlenecks (and, later, other rules) raised and cleared with
hysteresis (placeholder: the registry only; detection comes with the
bottleneck detector)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Alerts:
    """Active and cleared alerts; `on_change(kind, level, message, fields)` is
    called when one is raised or cleared (the agent publishes it on the bus)."""

    def __init__(self, on_change: Callable[[str, str, str, dict[str, Any]], None]) -> None:
        self._on_change = on_change
        self._lock = threading.Lock()
        self._alerts: list[dict[str, Any]] = []

    def observe_spans(self, spans: list[dict[str, Any]]) -> None:
        """Feed finished spans to the detectors."""

    def list(self, all: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(a) for a in self._alerts if all or a.get("active")]
