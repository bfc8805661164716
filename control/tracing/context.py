"""W3C trace context on the agent's side: parsing `traceparent`, and the
agent's own spans, made with explicit ids and times in the same form as the
RT's (so the trace store and the exporter treat both alike)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

SAMPLED = 1


@dataclass(frozen=True)
class TraceContext:
    trace_id: str  # 32 hex
    span_id: str  # 16 hex: the parent of what comes next
    flags: int

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)

    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"

    def child(self) -> TraceContext:
        return TraceContext(self.trace_id, new_span_id(), self.flags)


def from_traceparent(value: str | None) -> TraceContext | None:
    """A valid W3C traceparent (as control.rpc.service.parse_traceparent
    accepts) as a context; None otherwise."""
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4:
        return None
    try:
        flags = int(parts[3][:2], 16)
    except ValueError:
        return None
    return TraceContext(parts[1], parts[2], flags)


def new_trace(sampled: bool) -> TraceContext:
    return TraceContext(secrets.token_hex(16), new_span_id(), SAMPLED if sampled else 0)


def new_span_id() -> str:
    while (span := secrets.token_hex(8)) == "0" * 16:
        pass
    return span


def agent_span(
    name: str,
    ctx: TraceContext,
    parent_span_id: str | None,
    start_ns: int,
    end_ns: int | None = None,
    *,
    kind: str = "internal",
    status: str = "ok",
    status_message: str | None = None,
    attributes: dict[str, Any] | None = None,
    node: str = "",
    pid: int = 0,
) -> dict[str, Any]:
    """A finished agent span dict with ctx.span_id as its own id."""
    return {
        "name": name,
        "trace_id": ctx.trace_id,
        "span_id": ctx.span_id,
        "parent_span_id": parent_span_id,
        "start_time_ns": start_ns,
        "end_time_ns": end_ns if end_ns is not None else time.time_ns(),
        "kind": kind,
        "status": status,
        "status_message": status_message,
        "attributes": dict(attributes or {}),
        "cycle": 0,
        "flags": ctx.flags,
        "node": node,
        "process": "agent",
        "pid": pid,
    }
