"""Span dicts become SDK spans with their own ids, parent and times."""

from __future__ import annotations

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from control.tracing.otel_spans import node_resource, to_readable_span

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def span(**over: object) -> dict[str, object]:
    sp: dict[str, object] = {
        "name": "control_step",
        "trace_id": TRACE,
        "span_id": "00f067aa0ba902b7",
        "parent_span_id": "b7ad6b7169203331",
        "start_time_ns": 1_796_000_000_123_456_789,
        "end_time_ns": 1_796_000_000_123_556_790,
        "kind": "client",
        "status": "error",
        "status_message": "deadline missed",
        "attributes": {"jitter_ns": 1200, "load": 0.25},
        "cycle": 4711,
        "flags": 1,
        "node": "node-a",
        "process": "rt",
        "pid": 321,
    }
    sp.update(over)
    return sp


def test_ids_parent_times_kind_status_attributes_are_the_dicts() -> None:
    out = to_readable_span(span(), node_resource("node-a"))
    assert out.context is not None and out.parent is not None
    assert out.context.trace_id == int(TRACE, 16)
    assert out.context.span_id == 0x00F067AA0BA902B7
    assert out.context.trace_flags.sampled and not out.context.is_remote
    assert out.parent.trace_id == int(TRACE, 16)
    assert out.parent.span_id == 0xB7AD6B7169203331
    assert (out.start_time, out.end_time) == (1_796_000_000_123_456_789, 1_796_000_000_123_556_790)
    assert out.name == "control_step"
    assert out.kind is SpanKind.CLIENT
    assert out.status.status_code is StatusCode.ERROR
    assert out.status.description == "deadline missed"
    assert dict(out.attributes or {}) == {
        "jitter_ns": 1200,
        "load": 0.25,
        "rtcore.cycle": 4711,
        "rtcore.node": "node-a",
        "rtcore.process": "rt",
        "process.pid": 321,
    }
    res = out.resource.attributes
    assert res["service.name"] == "rtcore"
    assert res["service.instance.id"] == "node-a"
    assert res["host.name"]


def test_root_unsampled_ok_span() -> None:
    out = to_readable_span(
        span(parent_span_id=None, flags=0, kind="internal", status="ok", status_message=None),
        node_resource("n"),
    )
    assert out.parent is None
    assert out.context is not None and not out.context.trace_flags.sampled
    assert out.kind is SpanKind.INTERNAL
    assert out.status.status_code is StatusCode.OK


@pytest.mark.parametrize(
    "bad",
    [
        span(trace_id="abc"),
        span(span_id="zz" * 8),
        span(start_time_ns=None),
        {k: v for k, v in span().items() if k != "name"},
    ],
)
def test_malformed_dict_raises(bad: dict[str, object]) -> None:
    with pytest.raises((KeyError, ValueError, TypeError)):
        to_readable_span(bad, node_resource("n"))
