"""Records the spool kept but the store has not committed yet are searchable
(control/logs/fresh.py): every filter answers for them as the index does,
each record is found once while and after its batch commits, the two are
merged in time (or seq) order, and a node's pipeline wires the spool to it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from control.config import AgentConfig
from control.logs.fresh import FreshRecords
from control.logs.setup import open_pipeline
from control.logs.sink import Record
from control.logs.spool import Spool
from control.logs.store import LogStore
from tests.logs.test_log_store import MIDNIGHT, S, mixed, record, seqs

pytestmark = pytest.mark.timeout(120)

T = MIDNIGHT + 3600 * S
TRACE = "ab" * 16
QUERIES: list[dict[str, Any]] = [
    {},
    {"level_min": 40},
    {"level_min": 50},
    {"event": "deadline_miss"},
    {"trace_id": TRACE},
    {"node": "node-b"},
    {"text": "woke LATE"},
    {"text": "late cycle"},
    {"text": "foo:bar"},
    {"text": '"('},
    {"since_ns": T + 9 * S},
    {"until_ns": T + 1 * S},
    {"since_ns": T + 3 * S, "until_ns": T + 5 * S},
    {"event": "deadline"},
    {"level_min": 40, "event": "deadline_miss"},
    {"text": "late", "level_min": 40, "event": "deadline_miss", "until_ns": T + 6 * S},
    {"text": "step ok", "level_min": 20, "node": "node-b"},
    {"trace_id": TRACE, "level_min": 20},
    {"event": "lease_lost", "node": "node-a"},
    {"limit": 3},
    {"after_seq": 8},
    {"after_seq": 0, "limit": 3},
    {"after_seq": 0, "event": "deadline_miss"},
    {"text": "json"},
    {"node": 'no"de-c'},
    {"event": 'e"vent'},
    {"text": "wörd übergröße"},
    {"text": "WÖRD"},
]


def batch() -> list[Record]:
    a_long_word = "x" * 45  # longer than the analyzer keeps: in no index
    return [
        *mixed(),
        record(13, T + 12 * S, "config foo:bar rejected (code 7) " + a_long_word),
        (14, T + 13 * S, 30, b"not json: kept by its text"),
        # JSON escapes a quote in a value; bytes.lower() folds only ASCII
        record(15, T + 14 * S, "Übergröße WÖRD", node='no"de-c', event='e"vent'),
    ]


def offer(store: LogStore, records: Sequence[Record]) -> None:
    """As the spool does when it keeps records: numbered from the first seq."""
    store.fresh.add(records[0][0], [(t, level, doc) for _, t, level, doc in records])


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[LogStore, LogStore]]:
    indexed, fresh = LogStore(tmp_path / "indexed"), LogStore(tmp_path / "fresh")
    yield indexed, fresh
    indexed.close()
    fresh.close()


@pytest.mark.parametrize("query", QUERIES, ids=[str(q) or "all" for q in QUERIES])
def test_fresh_records_answer_every_filter_as_the_index_does(
    stores: tuple[LogStore, LogStore], query: dict[str, Any]
) -> None:
    indexed, fresh = stores
    indexed.deliver(batch())
    offer(fresh, batch())
    assert fresh.search(**query) == indexed.search(**query)
    assert len(fresh.fresh) == 15  # nothing was indexed there


def test_a_record_is_found_once_while_and_after_its_batch_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LogStore(tmp_path / "logs")
    try:
        records = batch()
        offer(store, records)
        assert seqs(store.search()) == list(range(15, 0, -1))
        # a search between a commit and the settled seq's update: records 1-6
        # are both committed and fresh, found in both and returned once
        monkeypatch.setattr(store.fresh, "settle", lambda seq: None)
        store.deliver(records[:6])
        store.settled_seq = 0
        assert len(store.fresh) == 15 and store.stats()["docs"] == 6
        assert seqs(store.search()) == list(range(15, 0, -1))
        assert seqs(store.search(after_seq=2, limit=5)) == [3, 4, 5, 6, 7]
        monkeypatch.undo()
        store.deliver(records[:6])  # a replay: duplicates, settles them
        assert store.settled_seq == 6 and len(store.fresh) == 9
        assert seqs(store.search()) == list(range(15, 0, -1))
        store.deliver(records[6:])
        assert len(store.fresh) == 0
        assert seqs(store.search()) == list(range(15, 0, -1))
    finally:
        store.close()


def test_indexed_and_fresh_records_merge_in_time_order(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "logs")
    try:
        # the index has the odd seconds, the spool the even ones (later seqs)
        store.deliver([record(n, T + (2 * n - 1) * S) for n in range(1, 4)])
        offer(store, [record(n, T + 2 * (n - 3) * S) for n in range(4, 7)])
        assert seqs(store.search()) == [6, 3, 5, 2, 4, 1]
        assert seqs(store.search(limit=4)) == [6, 3, 5, 2]
        assert seqs(store.search(after_seq=2)) == [3, 4, 5, 6]
        assert seqs(store.search(after_seq=2, limit=2)) == [3, 4]
    finally:
        store.close()


def test_a_node_pipeline_makes_a_record_searchable_once_spooled(tmp_path: Path) -> None:
    pipeline, store = open_pipeline(AgentConfig(node_id="fresh", data_dir=str(tmp_path)))
    assert store is not None
    try:
        # the sink workers are not started: nothing reaches the index
        pipeline.append([(t, level, doc) for _, t, level, doc in mixed()])
        assert seqs(store.search(event="deadline_miss"))[:1] != []
        assert [r["message"] for r in store.search(event="deadline_miss")] == [
            "woke late by 900 us",
            "woke late by 7 us",
            "woke late by 40 us",
            "woke late by 512 us",
        ]
        assert store.stats()["docs"] == 0
    finally:
        pipeline.stop()
        store.close()


@pytest.mark.parametrize("after_seq", [None, 3])
def test_a_commit_during_a_search_loses_no_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, after_seq: int | None
) -> None:
    """The store commits (and forgets the fresh copies of) a batch while a
    search runs: the search still finds every record (what tail -f relies on:
    a gap there is a record never printed)."""
    store = LogStore(tmp_path / "logs")
    try:
        records = batch()
        offer(store, records)
        store.deliver(records[:6])
        above = store.fresh.above

        def commit_first(seq: int) -> Any:
            monkeypatch.setattr(store.fresh, "above", above)
            store.deliver(records[6:])  # settles and forgets 7-15
            return above(seq)

        monkeypatch.setattr(store.fresh, "above", commit_first)
        if after_seq is None:
            assert seqs(store.search()) == list(range(15, 0, -1))
        else:
            assert seqs(store.search(after_seq=after_seq)) == list(range(4, 16))
        assert store.fresh.above is above  # the commit did happen inside the search
    finally:
        store.close()


def follow(store: LogStore, after: int, printed: list[int]) -> int:
    """One poll of `rtctl logs tail -f`: what it prints, and its new cursor."""
    new = seqs(store.search(after_seq=after, limit=1000))
    printed += new
    return max([after, *new])


def test_a_follower_skips_nothing_when_the_agent_restarts_with_a_backlog(tmp_path: Path) -> None:
    """Records spooled before a restart and not yet stored are in neither the
    index nor the new agent's fresh buffer: a follower must wait for them,
    not move past them to the new records."""
    spool = Spool(str(tmp_path / "spool"), ["store"])
    store = LogStore(tmp_path / "logs")
    spool.append([(t, level, doc) for _, t, level, doc in mixed()[:10]])
    store.deliver(spool.read("store", 100))  # 1-10 stored; 11, 12 spooled only:
    spool.append([(t, level, doc) for _, t, level, doc in mixed()[10:]])
    spool.close()
    store.close()
    # the agent restarts: a new spool and store, wired as a node wires them
    spool = Spool(str(tmp_path / "spool"), ["store"])
    store = LogStore(tmp_path / "logs")
    try:
        spool.on_append = store.fresh.add
        spool.append([(T + 20 * S, 20, record(0, 0, "after the restart")[3])])
        printed: list[int] = []
        cursor = follow(store, 10, printed)
        assert printed == []  # not the new record before 11 and 12
        # the new record is found by a search all the same
        assert [r["message"] for r in store.search(limit=1)] == ["after the restart"]
        store.deliver(spool.read("store", 100))
        follow(store, cursor, printed)
        assert printed == [11, 12, printed[-1]] and printed[-1] > 12
    finally:
        spool.close()
        store.close()


def test_a_follower_skips_nothing_when_the_store_falls_behind_the_buffer(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "logs")
    store.fresh = FreshRecords(capacity=5)
    try:
        records = [record(n, T + n * S) for n in range(1, 21)]
        offer(store, records[:3])
        store.deliver(records[:3])
        printed: list[int] = []
        cursor = follow(store, 0, printed)
        # the store stalls while 17 more come: the buffer keeps the newest 5
        for rec in records[3:]:
            offer(store, [rec])
        cursor = follow(store, cursor, printed)
        assert printed == [1, 2, 3]  # not 16-20 before 4-15
        store.deliver(records[3:])
        follow(store, cursor, printed)
        assert printed == list(range(1, 21))
    finally:
        store.close()
