"""The embedded trace store on a real SQLite file: round trip, summaries and
their filters, retention by age and by size, restart, concurrent use, and a
damaged or unreachable database."""

from __future__ import annotations

import glob
import os
import threading
import time
from typing import Any

import pytest
from loguru import logger

from control.errors import FailedPrecondition, InvalidArgument, NotFound
from control.tracing import store as store_mod
from control.tracing.store import TraceStore

pytestmark = pytest.mark.timeout(120)

NOW = time.time_ns()
MS = 1_000_000


def span(
    trace: int,
    n: int,
    start_ms: float,
    end_ms: float,
    *,
    parent: int | None = None,
    name: str = "rt.step",
    status: str = "ok",
    node: str = "n1",
    base: int = NOW,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "trace_id": f"{trace:032x}",
        "span_id": f"{trace:08x}{n:08x}",
        "parent_span_id": None if parent is None else f"{trace:08x}{parent:08x}",
        "start_time_ns": base + int(start_ms * MS),
        "end_time_ns": base + int(end_ms * MS),
        "kind": "internal",
        "status": status,
        "status_message": "late" if status == "error" else "",
        "attributes": {"joint": n, "nested": {"a": [1, 2]}},
        "cycle": 1000 + n,
        "flags": 1,
        "node": node,
        "process": "rt" if name.startswith("rt.") else "agent",
        "pid": 4242,
        **extra,
    }


def a_trace(trace: int, base: int = NOW, **root: Any) -> list[dict[str, Any]]:
    """Root 0..10 ms with two children and a grandchild."""
    return [
        span(trace, 1, 0, 10, name="job.run", base=base, **root),
        span(trace, 2, 1, 4, parent=1, base=base),
        span(trace, 3, 2, 3, parent=2, name="rt.checkpoint", base=base),
        span(trace, 4, 5, 9, parent=1, name="agent.export", base=base),
    ]


@pytest.fixture
def store(tmp_path):
    s = TraceStore(str(tmp_path / "traces"))
    yield s
    s.close()


@pytest.fixture
def logged():
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m).strip()), level="ERROR")
    yield lines
    logger.remove(sink)


def test_a_trace_comes_back_whole_and_ordered_by_start(store):
    spans = a_trace(1)
    store.add([spans[3], spans[1]])
    store.add([spans[2], spans[0]])
    store.add(a_trace(2))
    assert store.get(f"{1:032x}") == spans
    assert [s["span_id"] for s in store.get(f"{2:032x}")] == [s["span_id"] for s in a_trace(2)]
    assert store.get(f"{1:032X}") == spans, "ids are hex: any case"


def test_an_unknown_or_malformed_trace_id(store):
    store.add(a_trace(1))
    with pytest.raises(NotFound, match=f"no trace {2:032x}"):
        store.get(f"{2:032x}")
    for bad in ("xyz", "ab" * 15, "ab" * 17, "zz" * 16):
        with pytest.raises(InvalidArgument, match="32 hex digits"):
            store.get(bad)


def test_a_malformed_span_is_dropped_alone(store):
    bad = [dict(a_trace(9)[0], trace_id="nothex"), {"name": "no ids"}]
    store.add([*bad, *a_trace(1)])
    assert store.dropped == 2
    assert len(store.get(f"{1:032x}")) == 4


def test_a_summary_follows_spans_arriving_in_several_batches(store):
    spans = a_trace(1)
    # the root comes last, after its child in the same batch and from another node;
    # a later-starting span first, with an error
    store.add([dict(spans[3], status="error")])
    assert store.list()[0]["name"] == "agent.export"
    store.add([spans[2]])
    assert store.list()[0]["name"] == "rt.checkpoint", "no root yet: the earliest span's name"
    store.add([spans[1], dict(spans[0], node="n2")])
    [summary] = store.list()
    assert summary == {
        "trace_id": f"{1:032x}",
        "name": "job.run",
        "start_time_ns": NOW,
        "duration_ms": 10.0,
        "spans": 4,
        "error": True,
        "nodes": ["n1", "n2"],
    }


def test_the_root_names_the_trace_even_when_a_child_started_first(store):
    # the RT's and the agent's clocks differ a little: a child may seem to start first
    store.add([span(1, 2, 0, 5, parent=1, name="rt.early"), span(1, 1, 1, 6, name="job.run")])
    store.add([span(2, 1, 1, 6, name="job.run")])
    store.add([span(2, 2, 0, 5, parent=1, name="rt.early")])
    assert [t["name"] for t in store.list()] == ["job.run", "job.run"]


def test_list_filters_and_order(store):
    hour = 3600 * 10**9
    store.add(a_trace(1, base=NOW - 2 * hour))  # old
    store.add([span(2, 1, 0, 50, name="job.slow")])  # slow, started at NOW
    store.add([span(3, 1, 1, 2, name="job.fail", status="error", base=NOW + MS)])  # newest
    store.add(a_trace(4, base=NOW - hour))
    ids = lambda **q: [int(t["trace_id"], 16) for t in store.list(**q)]  # noqa: E731
    assert ids() == [3, 2, 4, 1], "newest first"
    assert ids(slow_ms=20) == [2]
    assert ids(slow_ms=10) == [2, 4, 1], "10 ms lasts at least 10 ms"
    assert ids(since_ns=NOW - 90 * 60 * 10**9) == [3, 2, 4]
    assert ids(errors=True) == [3]
    assert ids(name="rt.checkpoint") == [4, 1], "any span's name, not only the root's"
    assert ids(name="job.fail", errors=True) == [3]
    assert ids(name="nothing") == []
    assert ids(limit=2) == [3, 2]


def test_retention_by_age(tmp_path, monkeypatch):
    day = 86400 * 10**9
    s = TraceStore(str(tmp_path / "t"), retention_s=86400)
    try:
        # the first add prunes: what is already too old never stays
        s.add(a_trace(1, base=NOW - 2 * day) + a_trace(2))
        with pytest.raises(NotFound):
            s.get(f"{1:032x}")
        # later adds prune only every PRUNE_INTERVAL_S
        s.add(a_trace(3, base=NOW - 2 * day))
        assert len(s.get(f"{3:032x}")) == 4
        assert s.prune() == 1
        with pytest.raises(NotFound):
            s.get(f"{3:032x}")
        assert len(s.get(f"{2:032x}")) == 4
        s.add(a_trace(4, base=NOW - 2 * day))
        monkeypatch.setattr(store_mod, "PRUNE_INTERVAL_S", 0.0)
        s._next_prune = 0.0
        s.add(a_trace(5))
        assert [int(t["trace_id"], 16) for t in s.list()] == [5, 2]
        assert s.stats()["spans"] == 8
    finally:
        s.close()


def test_retention_by_size_removes_the_oldest_first(tmp_path):
    max_bytes = 400 << 10
    s = TraceStore(str(tmp_path / "t"), max_bytes=max_bytes)
    try:
        pad = "x" * 300
        # trace ids out of time order: "oldest" must mean by start, not by id
        ids = {i: (i * 389) % 1009 for i in range(1, 1001)}
        for i, tid in ids.items():
            s.add([dict(sp, attributes={"pad": pad}) for sp in a_trace(tid, base=NOW + i * MS)])
        assert s.stats()["bytes"] > 2 * max_bytes, "the test writes well past the limit"
        assert s.prune() > 0
        stats = s.stats()
        assert stats["bytes"] <= max_bytes
        kept = [int(t["trace_id"], 16) for t in s.list(limit=1000)]
        assert 100 < len(kept) < 1000
        assert kept == [ids[i] for i in range(1000, 1000 - len(kept), -1)], "the newest"
        with pytest.raises(NotFound):
            s.get(f"{ids[1]:032x}")
        assert stats["spans"] == 4 * len(kept), "no span outlives its trace's summary"
    finally:
        s.close()


def test_traces_survive_a_restart(tmp_path):
    path = str(tmp_path / "t")
    s = TraceStore(path)
    s.add(a_trace(1))
    s.close()
    with pytest.raises(FailedPrecondition, match="closed"):
        s.get(f"{1:032x}")
    again = TraceStore(path)
    try:
        assert again.get(f"{1:032x}") == a_trace(1)
        assert [t["trace_id"] for t in again.list()] == [f"{1:032x}"]
        again.add([span(1, 9, 20, 30, parent=1, node="n3")])
        [summary] = again.list()
        assert (summary["spans"], summary["duration_ms"], summary["nodes"]) == (
            5,
            30.0,
            ["n1", "n3"],
        )
    finally:
        again.close()


def test_adds_and_lookups_at_once(store):
    store.add(a_trace(1))
    failures: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for i in range(2, 302):
                store.add(a_trace(i))
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append(e)
        finally:
            done.set()

    def read() -> None:
        try:
            while not done.is_set():
                assert len(store.get(f"{1:032x}")) == 4
                store.list(limit=10)
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append(e)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    assert store.dropped == 0
    assert store.stats()["spans"] == 4 * 301
    assert len(store.list(limit=1000)) == 301


def test_a_damaged_database_is_set_aside_with_one_error(tmp_path, logged):
    directory = tmp_path / "t"
    directory.mkdir()
    (directory / store_mod.DB_NAME).write_bytes(b"this is not a database" * 1000)
    s = TraceStore(str(directory))
    try:
        assert len(logged) == 1 and "damaged" in logged[0], logged
        assert glob.glob(str(directory / "traces.db.damaged-*"))
        s.add(a_trace(1))
        assert len(s.get(f"{1:032x}")) == 4
    finally:
        s.close()


def test_an_unreachable_database_leaves_the_store_off_not_the_agent(tmp_path, logged):
    blocker = tmp_path / "t"
    blocker.write_text("a file where the directory should be")
    s = TraceStore(str(blocker))
    try:
        assert len(logged) == 1 and str(blocker) in logged[0], logged
        s.add(a_trace(1))
        assert s.dropped == 4
        for call in (lambda: s.get(f"{1:032x}"), s.list):
            with pytest.raises(FailedPrecondition, match="trace store is unavailable"):
                call()
        assert s.stats()["error"].startswith("the trace store is unavailable")
    finally:
        s.close()
    assert os.path.isfile(blocker)
