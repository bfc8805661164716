"""The log pipeline of a real agent, measured end to end: an RT push until
the record is searchable (embedded store, and a real OpenSearch when one can
run here), and the rate the pipeline sustains from the RT's ring through the
spool into the store.

The source is bench/tasks/chatty.c in a real RT process: N records a cycle.
Delivery is probed the way a user would notice it: a search for the newest
record, repeated; a sample is the time from the newest record's own RT
timestamp to the moment a search first returns it. The probe's round trip
(the same search, answered from what is already there) is measured in the
same run: it is the floor of what the probe can see.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.runner import BenchError, background_agent, build_chatty

DELIVERY_S = 20.0
PROBE_INTERVAL_S = 0.005
SUSTAIN_S = 60.0
SUSTAIN_RATE = 200_000  # records a second: the goal
GOAL_DELIVERY_P99_MS = 100.0
GOAL_BULK_DELIVERY_P99_MS = 500.0


def _pcts(samples: list[float]) -> dict[str, float | int | None]:
    if not samples:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    s = sorted(samples)
    return {
        "n": len(s),
        "p50": round(s[len(s) // 2], 2),
        "p99": round(s[min(len(s) - 1, int(len(s) * 0.99))], 2),
        "max": round(s[-1], 2),
        "mean": round(statistics.fmean(s), 2),
    }


def _probe(newest: Any, seconds: float) -> tuple[list[float], list[float]]:
    """(delivery samples ms, probe round trips ms): `newest()` returns the
    newest record's RT time (unix ns) or None."""
    delivery: list[float] = []
    rtt: list[float] = []
    last = None
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        ts = newest()
        now = time.time_ns()
        rtt.append((time.perf_counter() - t0) * 1e3)
        if ts is not None and ts != last:
            if last is not None:  # the first one may have waited for the probe to start
                delivery.append((now - ts) / 1e6)
            last = ts
        time.sleep(PROBE_INTERVAL_S)
    return delivery, rtt


def delivery(cpu: int, seconds: float = DELIVERY_S, with_opensearch: bool = True) -> dict[str, Any]:
    """1,000 records a second; the newest searched for in the agent's store
    (gRPC SearchLogs) and, with a real OpenSearch, in OpenSearch."""
    from bench import opensearch
    from control.rpc.client import Client

    why_not = opensearch.unavailable() if with_opensearch else "not asked for (--no-opensearch)"
    with tempfile.TemporaryDirectory(prefix="rtc-bench-logdelivery-") as tmp:
        lib = build_chatty(tmp)
        server = None if why_not else opensearch.OpenSearch(Path(tmp) / "opensearch")
        try:
            if server is not None:
                server.start()
            extra = ["--es-url", server.url] if server is not None else []
            task = ["--task", lib, "--task-params", "mode=loud,logs=1,spans=0"]
            with (
                background_agent("logdelivery", cpu, *task, *extra) as agent,
                Client(agent.target, timeout=5) as client,
            ):

                def newest_in_store() -> int | None:
                    logs = client.search_logs(text="record", limit=1)["logs"]
                    return logs[0]["rtcore"]["time_ns"] if logs else None

                store, store_rtt = _probe(newest_in_store, seconds)
                bulk: list[float] = []
                bulk_rtt: list[float] = []
                if server is not None:
                    body = {
                        "size": 1,
                        "sort": [{"rtcore.time_ns": "desc"}],
                        "query": {"match": {"rtcore.template": "record"}},
                        "_source": ["rtcore.time_ns"],
                    }

                    def newest_in_opensearch() -> int | None:
                        status, page = server.request(
                            "POST", "/rtcore-logs-*/_search", body, timeout_s=5
                        )
                        hits = page.get("hits", {}).get("hits", []) if status == 200 else []
                        return hits[0]["_source"]["rtcore"]["time_ns"] if hits else None

                    bulk, bulk_rtt = _probe(newest_in_opensearch, seconds)
                st = client.status()
        finally:
            if server is not None:
                server.stop()
    out: dict[str, Any] = {
        "rate_records_per_s": 1000,
        "delivery_ms": _pcts(store),
        "probe_rtt_ms": _pcts(store_rtt),
        "bulk_delivery_ms": _pcts(bulk) if server is not None else None,
        "bulk_probe_rtt_ms": _pcts(bulk_rtt) if server is not None else None,
        "opensearch": why_not or "OpenSearch 2.19 (bench/opensearch.py), refresh 250 ms",
        "ring_dropped": st["rt"]["ring_dropped"]["log"],
        "method": f"a real agent, chatty task logging 1 record a cycle at 1 kHz; every "
        f"{PROBE_INTERVAL_S * 1000:.0f} ms for {seconds:.0f} s a search for the newest "
        "record (rtctl logs search over gRPC; OpenSearch _search sorted by rtcore.time_ns); "
        "a sample = wall time when a search first returns a new newest record minus that "
        "record's RT timestamp (clock-anchored); probe_rtt = the searches' own duration",
    }
    return out


def sustained(cpu: int, rate: int = SUSTAIN_RATE, seconds: float = SUSTAIN_S) -> dict[str, Any]:
    """`rate` records a second from the RT (rate/1000 a cycle at 1 kHz) for
    `seconds`: what reached the spool and the store, what the ring dropped."""
    from control.rpc.client import Client

    per_cycle = max(1, rate // 1000)
    if per_cycle > 1000:
        raise BenchError(f"rate {rate} needs more than 1000 records a cycle")
    with tempfile.TemporaryDirectory(prefix="rtc-bench-logsustain-") as tmp:
        lib = build_chatty(tmp)
        task = ["--task", lib, "--task-params", f"mode=loud,logs={per_cycle},spans=0"]
        with (
            background_agent("logsustain", cpu, *task) as agent,
            Client(agent.target, timeout=10) as client,
        ):
            first = client.status()
            t0 = time.monotonic()
            time.sleep(seconds)
            mid = client.status()
            elapsed = time.monotonic() - t0
            # the RT stops making records; the store works off its backlog
            client.rt_action("stop")
            deadline = time.monotonic() + 300
            last = mid
            while time.monotonic() < deadline:
                last = client.status()
                if last["logs"]["spool"]["sinks"]["store"]["lag_records"] == 0:
                    break
                time.sleep(0.2)
            drained = time.monotonic() - t0

    def delta(a: dict, b: dict, *path: str) -> int:
        for k in path:
            a, b = a[k], b[k]
        return int(b) - int(a)  # type: ignore[call-overload]

    made = delta(first, mid, "rt", "cycles") * per_cycle
    dropped = delta(first, mid, "rt", "ring_dropped", "log")
    spooled = delta(first, mid, "logs", "spool", "appended")
    stored = delta(first, last, "logs", "sinks", "store", "docs")
    return {
        "offered_records_per_s": per_cycle * 1000,
        "seconds": round(elapsed, 1),
        "made_records_per_s": round(made / elapsed),
        "spooled_records_per_s": round(spooled / elapsed),
        "stored_records_per_s": round(stored / drained),
        "store_caught_up_after_s": round(drained, 1),
        "ring_dropped": dropped,
        "spool_dropped": last["logs"]["spool"]["dropped"],
        "store_lag_when_the_rt_stopped": mid["logs"]["spool"]["sinks"]["store"]["lag_records"],
        "store_caught_up": last["logs"]["spool"]["sinks"]["store"]["lag_records"] == 0,
        "method": f"a real agent, chatty task logging {per_cycle} INFO records a cycle at "
        f"1 kHz for {seconds:.0f} s, then the RT stopped; rates from the agent's own "
        "counters: made = RT cycles x records a cycle and spooled over those seconds, stored "
        "= store documents until the store caught up, over the time that took; the agent "
        "and its threads (tantivy's included) share the CPUs the RT's CPU leaves",
    }


def run(
    cpu: int, delivery_s: float = DELIVERY_S, sustain_s: float = SUSTAIN_S, opensearch: bool = True
) -> dict[str, Any]:
    d = delivery(cpu, delivery_s, opensearch)
    s = sustained(cpu, SUSTAIN_RATE, sustain_s)
    return {
        "delivery": d,
        "sustained": s,
        "goals": {
            "delivery_p99_le_100ms": (d["delivery_ms"]["p99"] or 1e9) <= GOAL_DELIVERY_P99_MS,
            "bulk_delivery_p99_le_500ms": None
            if d["bulk_delivery_ms"] is None
            else (d["bulk_delivery_ms"]["p99"] or 1e9) <= GOAL_BULK_DELIVERY_P99_MS,
            "sustained_200k_per_s_no_ring_drops": s["ring_dropped"] == 0
            and s["stored_records_per_s"] >= SUSTAIN_RATE * 0.99,
        },
    }
