"""The embedded trace store (placeholder: kept in memory, newest 10,000 spans).

Span dicts are those of rtcore.records.Decoder.spans plus "node", "process"
and "pid": trace_id, span_id, parent_span_id, name, kind, status,
status_message, attributes, start_time_ns, end_time_ns (wall clock), cycle,
flags.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from control.errors import NotFound


class TraceStore:
    def __init__(self, directory: str, retention_s: float = 7 * 86400, max_bytes: int = 1 << 30):
        self.directory = directory
        self._spans: deque[dict[str, Any]] = deque(maxlen=10_000)
        self._lock = threading.Lock()

    def add(self, spans: list[dict[str, Any]]) -> None:
        with self._lock:
            self._spans.extend(spans)

    def get(self, trace_id: str) -> list[dict[str, Any]]:
        with self._lock:
            found = [s for s in self._spans if s["trace_id"] == trace_id]
        if not found:
            raise NotFound(f"no trace {trace_id} in the trace store")
        return sorted(found, key=lambda s: s["start_time_ns"])

    def list(
        self,
        slow_ms: float = 0.0,
        since_ns: int = 0,
        name: str = "",
        errors: bool = False,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        with self._lock:
            roots = [s for s in self._spans if s["parent_span_id"] is None]
        out = [
            {
                "trace_id": r["trace_id"],
                "name": r["name"],
                "start_time_ns": r["start_time_ns"],
                "duration_ms": (r["end_time_ns"] - r["start_time_ns"]) / 1e6,
                "status": r["status"],
            }
            for r in roots
            if r["start_time_ns"] >= since_ns
            and (r["end_time_ns"] - r["start_time_ns"]) / 1e6 >= slow_ms
            and (not name or r["name"] == name)
            and (not errors or r["status"] == "error")
        ]
        return sorted(out, key=lambda t: -t["start_time_ns"])[:limit]

    def close(self) -> None:
        pass
