"""OtlpExport against a real Jaeger: exact spans arrive, an outage costs the
caller nothing and is counted, and export resumes on its own."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from control.tracing.otlp import OtlpExport
from tests.tracing.conftest import Jaeger, attrs

OTLP_KIND = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
OTLP_STATUS = {"unset": 0, "ok": 1, "error": 2}


def new_trace(t0_ns: int, pid: int = 4242) -> list[dict[str, Any]]:
    """A cycle span (server, failed) with three children of every kind and
    status, times in odd nanoseconds so rounding shows."""
    trace_id = os.urandom(16).hex()
    root_id = os.urandom(8).hex()

    def sp(name: str, parent: str | None, start: int, end: int, **kw: Any) -> dict[str, Any]:
        base = {
            "name": name,
            "trace_id": trace_id,
            "span_id": os.urandom(8).hex(),
            "parent_span_id": parent,
            "start_time_ns": t0_ns + start,
            "end_time_ns": t0_ns + end,
            "kind": "internal",
            "status": "unset",
            "status_message": None,
            "attributes": {},
            "cycle": 77,
            "flags": 1,
            "node": "node-a",
            "process": "rt",
            "pid": pid,
        }
        return {**base, **kw}

    root = sp(
        "cycle",
        None,
        1_001,
        1_000_999,
        span_id=root_id,
        kind="server",
        status="error",
        status_message="deadline missed by 12 us",
        attributes={"budget_ns": 1_000_000, "load": 0.75},
    )
    return [
        root,
        sp("read_sensors", root_id, 2_003, 250_007, kind="client", status="ok"),
        sp("control_law", root_id, 250_011, 700_013, attributes={"iterations": 3}),
        sp("publish", root_id, 700_017, 990_019, kind="producer", process="agent"),
    ]


@pytest.fixture
def exporters() -> Iterator[Callable[..., OtlpExport]]:
    made: list[OtlpExport] = []

    def make(endpoint: str, **kw: Any) -> OtlpExport:
        made.append(OtlpExport(endpoint, "node-a", **kw))
        return made[-1]

    yield make
    for ex in made:
        ex.close()


def wait_stats(ex: OtlpExport, key: str, value: int, timeout_s: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while ex.stats()[key] < value and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = ex.stats()
    assert stats[key] >= value, stats
    return stats


def test_exported_trace_is_in_jaeger_exactly(
    jaeger: Jaeger, exporters: Callable[..., OtlpExport]
) -> None:
    spans = new_trace(time.time_ns())
    ex = exporters(jaeger.otlp_endpoint)
    ex.export(spans)

    got = {s["spanId"]: s for s in jaeger.wait_trace(spans[0]["trace_id"], len(spans))}
    assert set(got) == {s["span_id"] for s in spans}
    for want in spans:
        have = got[want["span_id"]]
        assert have["traceId"] == want["trace_id"]
        assert have.get("parentSpanId") == want["parent_span_id"]
        assert have["name"] == want["name"]
        assert have["kind"] == OTLP_KIND[want["kind"]]
        assert have.get("status", {}).get("code", 0) == OTLP_STATUS[want["status"]]
        assert have.get("status", {}).get("message") == want["status_message"]
        assert int(have["startTimeUnixNano"]) // 1000 == want["start_time_ns"] // 1000
        assert int(have["endTimeUnixNano"]) // 1000 == want["end_time_ns"] // 1000
        assert attrs(have.get("attributes", [])) == {
            **want["attributes"],
            "rtcore.cycle": 77,
            "rtcore.node": "node-a",
            "rtcore.process": want["process"],
            "process.pid": 4242,
        }
        assert have["resource"]["service.name"] == "rtcore"
        assert have["resource"]["service.instance.id"] == "node-a"
    # Jaeger may answer before the exporter has counted the send
    assert wait_stats(ex, "exported", len(spans))["dropped"] == 0


def test_backend_down_costs_the_caller_nothing_and_drops_are_counted(
    jaeger: Jaeger, exporters: Callable[..., OtlpExport]
) -> None:
    ex = exporters(jaeger.otlp_endpoint, max_queue=100, timeout_s=1.0)
    jaeger.stop()

    calls = []
    for _ in range(50):
        t = time.perf_counter()
        ex.export(new_trace(time.time_ns()))
        calls.append(time.perf_counter() - t)
    assert max(calls) < 0.05, f"export() took up to {max(calls) * 1e3:.1f} ms"

    # 200 spans offered, at most 100 queued; the queued ones fail to send
    stats = wait_stats(ex, "dropped", 200)
    assert stats["exported"] == 0
    assert stats["queued"] == 0
    assert stats["last_error"]


def test_close_sends_what_is_queued(jaeger: Jaeger, exporters: Callable[..., OtlpExport]) -> None:
    ex = exporters(jaeger.otlp_endpoint, schedule_delay_ms=60_000)
    spans = new_trace(time.time_ns())
    ex.export(spans)
    ex.close()
    assert ex.stats()["exported"] == len(spans)
    jaeger.wait_trace(spans[0]["trace_id"], len(spans))


def test_close_with_backend_down_is_bounded_and_accounts_for_every_span(
    jaeger: Jaeger, exporters: Callable[..., OtlpExport]
) -> None:
    ex = exporters(jaeger.otlp_endpoint, timeout_s=1.0)
    jaeger.stop()
    for _ in range(2000):
        ex.export(new_trace(time.time_ns()))

    t = time.perf_counter()
    ex.close()
    assert time.perf_counter() - t < 2 * 1.0 + 0.2 + 1.0
    stats = ex.stats()
    assert (stats["queued"], stats["exported"], stats["dropped"]) == (0, 0, 8000)
    ex.export(new_trace(time.time_ns()))
    assert ex.stats()["dropped"] == 8004


def test_export_resumes_when_the_backend_returns(
    jaeger: Jaeger, exporters: Callable[..., OtlpExport]
) -> None:
    ex = exporters(jaeger.otlp_endpoint, schedule_delay_ms=50, timeout_s=1.0)
    before = new_trace(time.time_ns())
    ex.export(before)
    jaeger.wait_trace(before[0]["trace_id"], len(before))

    jaeger.stop()
    during = new_trace(time.time_ns())
    ex.export(during)
    wait_stats(ex, "dropped", len(during))

    jaeger.start()
    # the channel reconnects within about a second (its back-off is capped);
    # what is sent before it does is counted as dropped, what follows arrives
    sent = []
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        after = new_trace(time.time_ns())
        sent.append(after)
        ex.export(after)
        time.sleep(0.3)
        if jaeger.trace(after[0]["trace_id"]):
            break
    jaeger.wait_trace(sent[-1][0]["trace_id"], len(sent[-1]), timeout_s=5.0)
    assert jaeger.trace(during[0]["trace_id"]) == []
    ex.close()
    stats = ex.stats()
    total = len(before) + len(during) + sum(len(t) for t in sent)
    assert stats["exported"] + stats["dropped"] == total, stats
    assert stats["exported"] >= len(before) + len(sent[-1]), stats


@pytest.mark.parametrize(
    "endpoint", ["localhost", "127.0.0.1:", ":4317", "host:0", "host:70000", "http://h:x"]
)
def test_endpoint_must_be_host_port(endpoint: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        OtlpExport(endpoint, "n")


def test_unreadable_ca_file_is_refused(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="CA file"):
        OtlpExport("127.0.0.1:4317", "n", insecure=False, ca_file=str(tmp_path / "none.pem"))
