"""Span dicts (RT records and agent spans) as OpenTelemetry SDK spans.

The spans were already timed and identified where they happened (the RT
loop, the agent), so they are built directly as `ReadableSpan`s: going
through a `Tracer` would let the SDK mint new ids and read its own clock.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

SERVICE_NAME = "rtcore"
SCOPE = InstrumentationScope("rtcore")

KINDS = {
    "internal": SpanKind.INTERNAL,
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
}
STATUSES = {"unset": StatusCode.UNSET, "ok": StatusCode.OK, "error": StatusCode.ERROR}


def node_resource(node_id: str) -> Resource:
    """The resource every span of this node's agent is exported under."""
    return Resource.create(
        {
            "service.name": SERVICE_NAME,
            "host.name": socket.gethostname(),
            "service.instance.id": node_id,
        }
    )


def _context(trace_id: str, span_id: str, flags: int) -> SpanContext:
    if len(trace_id) != 32 or len(span_id) != 16:
        raise ValueError(f"bad ids {trace_id!r}/{span_id!r}: want 32 and 16 hex digits")
    return SpanContext(
        trace_id=int(trace_id, 16),
        span_id=int(span_id, 16),
        is_remote=False,
        trace_flags=TraceFlags(flags & 0xFF),
    )


def _status(span: Mapping[str, Any]) -> Status:
    code = STATUSES.get(span.get("status") or "unset", StatusCode.UNSET)
    # the SDK accepts a description only with ERROR (and warns otherwise)
    message = span.get("status_message") if code is StatusCode.ERROR else None
    return Status(code, message)


def to_readable_span(span: Mapping[str, Any], resource: Resource) -> ReadableSpan:
    """One span dict as a ReadableSpan with exactly its ids, parent and times.

    Raises KeyError, ValueError or TypeError for a malformed dict."""
    flags = int(span.get("flags", 0))
    context = _context(span["trace_id"], span["span_id"], flags)
    parent_id = span.get("parent_span_id")
    parent = _context(span["trace_id"], parent_id, flags) if parent_id else None
    attributes: dict[str, Any] = dict(span.get("attributes") or {})
    attributes["rtcore.cycle"] = int(span.get("cycle", 0))
    attributes["rtcore.node"] = str(span.get("node", ""))
    attributes["rtcore.process"] = str(span.get("process", ""))
    attributes["process.pid"] = int(span.get("pid") or 0)
    return ReadableSpan(
        name=span["name"],
        context=context,
        parent=parent,
        resource=resource,
        attributes=attributes,
        kind=KINDS.get(span.get("kind") or "internal", SpanKind.INTERNAL),
        status=_status(span),
        start_time=int(span["start_time_ns"]),
        end_time=int(span["end_time_ns"]),
        instrumentation_scope=SCOPE,
    )
