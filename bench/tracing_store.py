"""The trace store's look-up by trace id among a million stored spans.

The store is filled the way the agent fills it (batches from one thread) with
synthetic traces of 3 to 7 spans spread over the last 24 hours; then `get`
is timed for random trace ids, at rest and while a writer adds spans at a
steady rate. The same-run baseline is the same look-ups as a full scan of an
unindexed copy of the spans table: what the index buys. The insert rate has
no meaningful baseline and is reported as measured.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

from control.tracing.store import DB_NAME, TraceStore

GOAL_GET_P99_MS = 50.0
BATCH = 500  # spans per add(): a drain of a busy ring
LOAD_SPANS_PER_S = 5000  # the writer beside the look-ups "under load"
BASELINE_LOOKUPS = 10  # a full scan each: a few suffice for a median
NAMES = ("rt.apply_commands", "rt.task_step", "rt.checkpoint", "agent.export", "rt.emit")


def trace_get_ms(directory: str, n_spans: int = 1_000_000, lookups: int = 200) -> dict[str, Any]:
    """Fills a TraceStore in `directory` with at least n_spans spans and times
    `get`; returns p50/p99/max in ms, the insert rate and the baseline."""
    rng = random.Random(11)
    now = time.time_ns()
    store = TraceStore(directory, retention_s=2 * 86400, max_bytes=1 << 40)
    try:
        trace_ids: list[str] = []
        insert_s = 0.0
        stored = 0
        for batch in _batches(rng, now, n_spans, trace_ids):
            started = time.perf_counter()
            store.add(batch)
            insert_s += time.perf_counter() - started
            stored += len(batch)
        if store.dropped:
            raise RuntimeError(f"the store dropped {store.dropped} spans: {store.error}")
        picks = [rng.choice(trace_ids) for _ in range(lookups)]
        at_rest = _time_gets(store, picks)
        under_load = _under_load(store, rng, now, picks)
        lists = _time_lists(store)
        stats = store.stats()
    finally:
        store.close()
    baseline = _baseline(directory, picks[:BASELINE_LOOKUPS])
    return {
        "spans": stats["spans"],
        "traces": stats["traces"],
        "db_bytes": stats["bytes"],
        "insert": {
            "spans_per_s": round(stored / insert_s),
            "batch": BATCH,
            "seconds": round(insert_s, 1),
        },
        "get_ms": at_rest,
        "get_under_load_ms": {**under_load, "writer_spans_per_s": LOAD_SPANS_PER_S},
        "list_ms": lists,
        "baseline": {
            "what": "the same look-ups as a full scan of an unindexed copy of the spans table",
            "get_ms": baseline,
        },
        "baseline_over_store_p50": _ratio(baseline["p50"], at_rest["p50"]),
        "goal_get_p99_ms": GOAL_GET_P99_MS,
        "goal_met": at_rest["p99"] <= GOAL_GET_P99_MS and under_load["p99"] <= GOAL_GET_P99_MS,
    }


def _batches(
    rng: random.Random, now: int, n_spans: int, trace_ids: list[str]
) -> Iterator[list[dict[str, Any]]]:
    """Traces in start order over the last 24 h, in batches of BATCH spans."""
    n_traces = n_spans // 5 + 1
    step = 86400 * 10**9 // n_traces
    batch: list[dict[str, Any]] = []
    made = 0
    t = now - 86400 * 10**9
    while made < n_spans:
        spans = _trace(rng, t)
        trace_ids.append(spans[0]["trace_id"])
        batch.extend(spans)
        made += len(spans)
        t += step
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _trace(rng: random.Random, start: int) -> list[dict[str, Any]]:
    trace_id = f"{rng.getrandbits(128):032x}"
    root_id = f"{rng.getrandbits(64):016x}"
    root_end = start + rng.randrange(200_000, 5_000_000)
    spans = [_span("rt.cycle", trace_id, root_id, None, start, root_end, "ok", rng)]
    at = start + 1000
    for _ in range(rng.randrange(2, 7)):
        end = min(root_end, at + rng.randrange(10_000, 500_000))
        status = "error" if rng.random() < 0.01 else "ok"
        span_id = f"{rng.getrandbits(64):016x}"
        spans.append(_span(rng.choice(NAMES), trace_id, span_id, root_id, at, end, status, rng))
        at = end
    return spans


def _span(
    name: str,
    trace_id: str,
    span_id: str,
    parent: str | None,
    start: int,
    end: int,
    status: str,
    rng: random.Random,
) -> dict[str, Any]:
    return {
        "name": name,
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "start_time_ns": start,
        "end_time_ns": end,
        "kind": "internal",
        "status": status,
        "status_message": "deadline missed" if status == "error" else "",
        "attributes": {"rt.job_id": rng.randrange(1, 100), "rt.joint": rng.randrange(8)},
        "cycle": rng.randrange(1 << 40),
        "flags": 1,
        "node": "n1",
        "process": "agent" if name.startswith("agent.") else "rt",
        "pid": 4242,
    }


def _time_gets(store: TraceStore, picks: list[str]) -> dict[str, float]:
    times = []
    for trace_id in picks:
        t0 = time.perf_counter_ns()
        spans = store.get(trace_id)
        times.append((time.perf_counter_ns() - t0) / 1e6)
        if not spans:
            raise RuntimeError(f"trace {trace_id} came back empty")
    return _summary(times)


def _under_load(
    store: TraceStore, rng: random.Random, now: int, picks: list[str]
) -> dict[str, float]:
    """The look-ups again while another thread adds LOAD_SPANS_PER_S."""
    stop = threading.Event()
    writer_rng = random.Random(rng.getrandbits(32))

    def write() -> None:
        t = now
        while not stop.is_set():
            batch: list[dict[str, Any]] = []
            while len(batch) < LOAD_SPANS_PER_S // 10:
                batch.extend(_trace(writer_rng, t))
                t += 1_000_000
            store.add(batch)
            stop.wait(0.1)

    writer = threading.Thread(target=write, name="bench-writer", daemon=True)
    writer.start()
    try:
        return _time_gets(store, picks)
    finally:
        stop.set()
        writer.join()


def _time_lists(store: TraceStore) -> dict[str, dict[str, float]]:
    queries: dict[str, dict[str, Any]] = {
        "newest_50": {},
        "errors": {"errors": True},
        "slow_4ms": {"slow_ms": 4.0},
        "name_rt.checkpoint": {"name": "rt.checkpoint"},
    }
    out = {}
    for label, query in queries.items():
        times = []
        for _ in range(10):
            t0 = time.perf_counter_ns()
            store.list(**query)
            times.append((time.perf_counter_ns() - t0) / 1e6)
        out[label] = _summary(times)
    return out


def _baseline(directory: str, picks: list[str]) -> dict[str, float]:
    path = os.path.join(directory, "naive.db")
    if os.path.exists(path):
        os.unlink(path)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("ATTACH DATABASE ? AS store", (os.path.join(directory, DB_NAME),))
        db.execute("CREATE TABLE main.spans AS SELECT * FROM store.spans")
        db.execute("DETACH DATABASE store")
        times = []
        for trace_id in picks:
            t0 = time.perf_counter_ns()
            rows = db.execute(
                "SELECT name, start_ns, doc FROM main.spans WHERE trace_id = ? ORDER BY start_ns",
                (bytes.fromhex(trace_id),),
            ).fetchall()
            times.append((time.perf_counter_ns() - t0) / 1e6)
            if not rows:
                raise RuntimeError(f"the baseline missed trace {trace_id}")
    finally:
        db.close()
        os.unlink(path)
    return _summary(times)


def _summary(times_ms: list[float]) -> dict[str, float]:
    s = sorted(times_ms)
    return {
        "p50": round(s[len(s) // 2], 3),
        "p99": round(s[min(len(s) - 1, int(len(s) * 0.99))], 3),
        "max": round(s[-1], 3),
        "n": len(s),
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 1) if b else None
