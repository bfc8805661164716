"""The embedded log store on real tantivy indexes on disk: each filter alone
and combined, order and limit, following by seq, UTC day partitions,
de-duplication of replays (also after a reopen), retention by age and by
size, a damaged day, query text that looks like query syntax, a full disk."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from control.errors import InvalidArgument
from control.logs import query
from control.logs import store as store_mod
from control.logs.sink import Delivery, Record
from control.logs.store import DAY_NS, LogStore, StoreError

pytestmark = pytest.mark.timeout(120)

S = 1_000_000_000
MIDNIGHT = time.time_ns() // DAY_NS * DAY_NS  # today, UTC
LEVEL = {"DEBUG": 10, "INFO": 20, "WARN": 30, "ERROR": 40, "CRITICAL": 50}


def record(
    seq: int,
    time_ns: int,
    message: str = "step ok",
    *,
    level: str = "INFO",
    event: str | None = None,
    trace: str | None = None,
    node: str = "node-a",
) -> Record:
    doc: dict[str, Any] = {
        "@timestamp": "2026-01-01T00:00:00.000000000Z",
        "log": {"level": level, "logger": "rt.loop"},
        "message": message,
        "service": {"name": "rtcore", "node": {"name": node}},
        "event": {"dataset": "rtcore.rt"},
        "rtcore": {"cycle": seq},
    }
    if event:
        doc["event"]["action"] = event
    if trace:
        doc["trace"] = {"id": trace}
    return (seq, time_ns, LEVEL[level], orjson.dumps(doc))


def seqs(results: list[dict[str, Any]]) -> list[int]:
    return [r["_seq"] for r in results]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LogStore]:
    s = LogStore(tmp_path / "logs")
    yield s
    s.close()


def mixed() -> list[Record]:
    """Twelve records a second apart from 01:00 today, each filter picking a
    known few."""
    t = MIDNIGHT + 3600 * S
    return [
        record(1, t + 0 * S, "woke late by 512 us", level="ERROR", event="deadline_miss"),
        record(2, t + 1 * S, "step ok cycle 2"),
        record(3, t + 2 * S, "lease lost", level="CRITICAL", event="lease_lost", node="node-b"),
        record(4, t + 3 * S, "step ok cycle 4", level="DEBUG", trace="ab" * 16),
        record(5, t + 4 * S, "spool nearly full", level="WARN"),
        record(6, t + 5 * S, "woke late by 40 us", level="ERROR", event="deadline_miss"),
        record(7, t + 6 * S, "rpc StartJob ok", trace="ab" * 16),
        record(8, t + 7 * S, "step ok cycle 8", node="node-b"),
        record(9, t + 8 * S, "woke late by 7 us", level="WARN", event="deadline_miss"),
        record(10, t + 9 * S, "state changed", level="ERROR", event="state_changed"),
        record(11, t + 10 * S, "step ok cycle 11", level="DEBUG"),
        record(12, t + 11 * S, "woke late by 900 us", level="CRITICAL", event="deadline_miss"),
    ]


def test_each_filter_alone_newest_first(store: LogStore) -> None:
    assert store.deliver(mixed()) == Delivery(12)
    t = MIDNIGHT + 3600 * S
    assert seqs(store.search()) == list(range(12, 0, -1))
    assert seqs(store.search(level_min=40)) == [12, 10, 6, 3, 1]
    assert seqs(store.search(level_min=50)) == [12, 3]
    assert seqs(store.search(event="deadline_miss")) == [12, 9, 6, 1]
    assert seqs(store.search(trace_id="ab" * 16)) == [7, 4]
    assert seqs(store.search(node="node-b")) == [8, 3]
    assert seqs(store.search(text="woke LATE")) == [12, 9, 6, 1]
    assert seqs(store.search(text="late cycle")) == []
    assert seqs(store.search(since_ns=t + 9 * S)) == [12, 11, 10]
    assert seqs(store.search(until_ns=t + 1 * S)) == [2, 1]
    assert seqs(store.search(since_ns=t + 3 * S, until_ns=t + 5 * S)) == [6, 5, 4]
    assert seqs(store.search(event="deadline")) == []  # exact, not a word


def test_filters_combined(store: LogStore) -> None:
    store.deliver(mixed())
    t = MIDNIGHT + 3600 * S
    assert seqs(store.search(level_min=40, event="deadline_miss")) == [12, 6, 1]
    assert seqs(
        store.search(text="late", level_min=40, event="deadline_miss", until_ns=t + 6 * S)
    ) == [6, 1]
    assert seqs(store.search(text="step ok", level_min=20, node="node-b")) == [8]
    assert seqs(store.search(trace_id="ab" * 16, level_min=20)) == [7]
    assert seqs(store.search(event="lease_lost", node="node-a")) == []


def test_results_are_the_documents_with_their_seq(store: LogStore) -> None:
    batch = mixed()
    store.deliver(batch)
    [hit] = store.search(trace_id="ab" * 16, level_min=20)
    assert hit == {**orjson.loads(batch[6][3]), "_seq": 7}


def test_limit_keeps_the_newest(store: LogStore) -> None:
    store.deliver(mixed())
    assert seqs(store.search(limit=3)) == [12, 11, 10]
    assert seqs(store.search(event="deadline_miss", limit=2)) == [12, 9]
    with pytest.raises(InvalidArgument, match="limit"):
        store.search(limit=0)
    with pytest.raises(InvalidArgument, match="level_min"):
        store.search(level_min=60)
    with pytest.raises(InvalidArgument, match="since"):
        store.search(since_ns=MIDNIGHT + S, until_ns=MIDNIGHT)


def test_after_seq_follows_in_seq_order(store: LogStore) -> None:
    store.deliver(mixed())
    assert seqs(store.search(after_seq=8)) == [9, 10, 11, 12]
    assert seqs(store.search(after_seq=0, limit=3)) == [1, 2, 3]
    assert seqs(store.search(after_seq=0, event="deadline_miss")) == [1, 6, 9, 12]
    assert store.search(after_seq=12) == []
    store.deliver([record(13, MIDNIGHT + 7200 * S), record(14, MIDNIGHT + 60 * S)])
    # a late record (earlier time, later seq) still comes after what was seen
    assert seqs(store.search(after_seq=12)) == [13, 14]
    # across days too: a late record of the day before lands in another index
    store.deliver([record(15, MIDNIGHT - 3600 * S), record(16, MIDNIGHT + 7300 * S)])
    assert seqs(store.search(after_seq=12)) == [13, 14, 15, 16]
    assert seqs(store.search(after_seq=0))[-4:] == [13, 14, 15, 16]


def test_query_text_is_words_not_syntax(store: LogStore) -> None:
    store.deliver(
        [
            record(1, MIDNIGHT + S, "config foo:bar rejected (code 7)"),
            record(2, MIDNIGHT + 2 * S, 'quoted "text" AND OR NOT here*'),
        ]
    )
    assert seqs(store.search(text="foo:bar")) == [1]
    assert seqs(store.search(text="rejected:config")) == [1]  # two words, not a field
    assert seqs(store.search(text='"text')) == [2]
    assert seqs(store.search(text="AND OR")) == [2]
    assert seqs(store.search(text="here*")) == [2]
    for no_words in ('"(', "*", ":", "", "   ", ")("):
        assert store.search(text=no_words) == []
    assert store.search(text="[1 TO 2]") == []  # the words 1, to, 2 are in no record


def test_days_are_separate_indexes_and_a_range_spans_them(store: LogStore, tmp_path: Path) -> None:
    before, after = MIDNIGHT - DAY_NS // 2, MIDNIGHT
    store.deliver(
        [
            record(1, MIDNIGHT - 2 * S, "before midnight"),
            record(2, MIDNIGHT - 1, "last ns of yesterday"),
            record(3, MIDNIGHT, "first ns of today"),
            record(4, MIDNIGHT + 2 * S, "after midnight"),
        ]
    )
    names = sorted(os.listdir(tmp_path / "logs"))
    assert names == [
        store_mod.day_dir_name(before // DAY_NS),
        store_mod.day_dir_name(after // DAY_NS),
    ]
    assert store.stats()["days"] == 2
    span = {"since_ns": MIDNIGHT - 3 * S, "until_ns": MIDNIGHT + 3 * S}
    assert seqs(store.search(**span)) == [4, 3, 2, 1]
    assert seqs(store.search(**span, limit=3)) == [4, 3, 2]
    assert seqs(store.search(until_ns=MIDNIGHT - 1)) == [2, 1]
    assert seqs(store.search(since_ns=MIDNIGHT)) == [4, 3]
    assert seqs(store.search(after_seq=1, **span)) == [2, 3, 4]


def test_busy_day_searched_in_windows_matches_a_full_sort(
    store: LogStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a day with more matches than WINDOW_ABOVE is searched in windows from its end back
    monkeypatch.setattr(query, "WINDOW_ABOVE", 10)
    monkeypatch.setattr(query, "WINDOW_TARGET", 1)
    n = 2000
    step = DAY_NS // n
    batch = [
        record(
            i,
            MIDNIGHT + i * step,
            f"busy {'odd' if i % 2 else 'even'}",
            level="WARN" if i % 2 else "INFO",
        )
        for i in range(1, n)
    ]
    # even and WARN: common words and a common level whose intersection is rare,
    # one near the end of the day, one near its start (found in a later window)
    for i in (100, 1990):
        batch[i - 1] = record(i, MIDNIGHT + i * step, "busy even", level="WARN")
    store.deliver(batch)
    assert seqs(store.search(text="even", level_min=30)) == [1990, 100]
    assert seqs(store.search(limit=1500)) == list(range(n - 1, n - 1501, -1))
    odd = [i for i in range(n - 1, 0, -1) if i % 2]
    assert (
        seqs(store.search(level_min=30, limit=900)) == sorted([*odd, 100, 1990], reverse=True)[:900]
    )
    assert seqs(store.search(text="odd", since_ns=MIDNIGHT + 500 * step, limit=1000)) == [
        i for i in odd if i >= 500
    ]


@pytest.mark.parametrize(
    ("matches", "wanted", "start", "end"),
    [
        (10**7, 100, MIDNIGHT, MIDNIGHT + DAY_NS - 1),
        (10**7, 1, MIDNIGHT + 5 * S, MIDNIGHT + 5 * S),
        (30_000, 5000, MIDNIGHT + 17, MIDNIGHT + 3600 * S + 3),
        (10, 100, MIDNIGHT, MIDNIGHT + DAY_NS - 1),
    ],
)
def test_windows_tile_the_range_from_the_newest_back(
    matches: int, wanted: int, start: int, end: int
) -> None:
    windows = list(query.windows(matches, start, end, wanted))
    assert windows[0][1] == end and windows[-1][0] == start
    for (lo, hi), (older_lo, older_hi) in zip(windows, windows[1:], strict=False):
        assert older_hi == lo - 1  # no gap, no overlap
        assert older_hi - older_lo > hi - lo or older_lo == start  # growing
    assert all(lo <= hi for lo, hi in windows)
    assert list(query.windows(matches, end + 1, end, wanted)) == []


def test_replayed_batch_is_not_stored_twice(store: LogStore) -> None:
    batch = mixed()
    store.deliver(batch)
    assert store.deliver(batch) == Delivery(12)
    store.deliver(batch[4:] + [record(13, MIDNIGHT + 4000 * S)])
    assert seqs(store.search(limit=100)) == list(range(13, 0, -1))
    assert store.stats()["docs"] == 13
    assert store.stats()["duplicates"] == 12 + 8


def test_a_day_holding_a_higher_seq_does_not_hide_another_days_records(store: LogStore) -> None:
    # a crash after today's commit and before yesterday's: today holds seq 6
    # while yesterday has none of 1..5; the replay must still land them
    late = [record(i, MIDNIGHT - DAY_NS // 2 + i * S) for i in range(1, 6)]
    today = record(6, MIDNIGHT + S)
    store.deliver([today])
    store.deliver([*late, today])
    assert seqs(store.search()) == [6, 5, 4, 3, 2, 1]


def test_reopen_keeps_everything_and_still_deduplicates(tmp_path: Path) -> None:
    first = LogStore(tmp_path / "logs")
    batch = [*mixed(), record(13, MIDNIGHT - S, "yesterday")]
    first.deliver(batch)
    first.close()
    again = LogStore(tmp_path / "logs")
    try:
        assert seqs(again.search()) == [12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 13]
        assert again.deliver(batch) == Delivery(13)
        again.deliver([record(14, MIDNIGHT + 5000 * S)])
        assert again.stats()["docs"] == 14
        assert again.stats()["last_seq"] == 14
        assert seqs(again.search(event="deadline_miss")) == [12, 9, 6, 1]
    finally:
        again.close()


def test_searches_beside_deliveries_see_whole_batches(store: LogStore) -> None:
    seen: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                seen.append(len(store.search(limit=10_000)))
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for b in range(20):
            store.deliver([record(b * 50 + i + 1, MIDNIGHT + (b * 50 + i) * S) for i in range(50)])
    finally:
        done.set()
        thread.join(30)
    assert not errors
    assert all(n % 50 == 0 for n in seen)  # a commit is all of a batch or none
    assert len(store.search(limit=10_000)) == 1000


def test_retention_by_age_removes_whole_days(tmp_path: Path) -> None:
    s = LogStore(tmp_path / "logs", max_age_s=2 * 86_400)
    try:
        s.deliver(
            [
                record(1, MIDNIGHT - 2 * DAY_NS + S, "two days ago"),
                record(2, MIDNIGHT - DAY_NS + S, "yesterday"),
                record(3, MIDNIGHT + S, "today"),
            ]
        )
        assert s.stats()["days"] == 3
        kept = s.retention(now_ns=MIDNIGHT + 3600 * S)  # the oldest day ended 25 h ago
        assert kept["days_removed"] == []
        removed = s.retention(now_ns=MIDNIGHT + DAY_NS + 3600 * S)
        assert removed["days_removed"] == [store_mod.day_dir_name(MIDNIGHT // DAY_NS - 2)]
        assert seqs(s.search()) == [3, 2]
        assert len(os.listdir(tmp_path / "logs")) == 2
        # a record past the age is not stored (it would make a day retention removes)
        assert s.deliver([record(4, MIDNIGHT - 5 * DAY_NS)]) == Delivery(1)
        assert s.stats()["expired"] == 1
        assert seqs(s.search()) == [3, 2]
    finally:
        s.close()


def fill(s: LogStore, first_seq: int, start_ns: int, n: int, step_ns: int) -> None:
    s.deliver(
        [
            record(first_seq + i, start_ns + i * step_ns, f"filler record {i} " + "x" * 200)
            for i in range(n)
        ]
    )


def test_size_counts_only_the_segments_the_index_has_committed(tmp_path: Path) -> None:
    """A merge writes its new segment before meta.json names it, and merged-away
    segments stay until collected: counting those files made a size check see
    a day up to twice its size and cut it again."""
    s = LogStore(tmp_path / "logs", max_bytes=1 << 40)
    try:
        fill(s, 1, MIDNIGHT, 500, S)
        size = s.stats()["bytes"]
        [day] = [p for p in (tmp_path / "logs").iterdir() if p.is_dir()]
        (day / ("ab" * 16 + ".store")).write_bytes(b"x" * size)  # a merge in flight
        assert s.stats()["bytes"] == size
        s.max_bytes = size
        assert s.retention()["records_deleted"] == 0
    finally:
        s.close()


def test_retention_by_size_removes_the_oldest_days(tmp_path: Path) -> None:
    s = LogStore(tmp_path / "logs", max_bytes=1 << 40)
    try:
        for d in range(4):
            fill(s, 1 + d * 1000, MIDNIGHT - (3 - d) * DAY_NS, 1000, S)
        per_day = s.stats()["bytes"] / 4
        s.max_bytes = int(per_day * 2.5)
        out = s.retention()
        assert out["days_removed"] == [
            store_mod.day_dir_name(MIDNIGHT // DAY_NS - 3),
            store_mod.day_dir_name(MIDNIGHT // DAY_NS - 2),
        ]
        assert out["bytes"] <= s.max_bytes
        assert s.stats()["docs"] == 2000
        assert min(seqs(s.search(limit=5000))) == 2001
    finally:
        s.close()


def test_retention_by_size_trims_a_single_day_from_its_oldest_records(tmp_path: Path) -> None:
    s = LogStore(tmp_path / "logs", max_bytes=1 << 40)
    try:
        # many small commits: many segments, so deletions free whole segments
        for b in range(40):
            fill(s, 1 + b * 250, MIDNIGHT + b * 250 * S, 250, S)
        size = s.stats()["bytes"]
        s.max_bytes = size // 2
        out = s.retention()
        assert out["days_removed"] == []
        assert 0 < out["records_deleted"] < 10_000
        left = seqs(s.search(limit=10_000))
        assert len(left) == 10_000 - out["records_deleted"]
        assert min(left) == 10_000 - len(left) + 1  # the oldest went, the newest stayed
        assert max(left) == 10_000
        # the deleted records' bytes linger until their segment goes: no second cut
        assert s.retention()["records_deleted"] == 0
    finally:
        s.close()


def test_damaged_day_is_moved_aside(tmp_path: Path) -> None:
    first = LogStore(tmp_path / "logs")
    first.deliver([record(1, MIDNIGHT - DAY_NS + S, "yesterday"), record(2, MIDNIGHT + S, "today")])
    first.close()
    day = tmp_path / "logs" / store_mod.day_dir_name(MIDNIGHT // DAY_NS - 1)
    (day / "meta.json").write_text("{ not json")
    again = LogStore(tmp_path / "logs")
    try:
        assert again.stats()["damaged"] == 1
        assert not day.exists()
        [aside] = [n for n in os.listdir(tmp_path / "logs") if ".damaged-" in n]
        assert aside.startswith(day.name + ".damaged-")
        assert seqs(again.search()) == [2]
        # the day starts afresh when a record for it comes
        assert again.deliver([record(3, MIDNIGHT - DAY_NS + 2 * S, "late")]) == Delivery(1)
        assert seqs(again.search()) == [2, 3]
    finally:
        again.close()


def test_malformed_document_is_kept_and_counted(store: LogStore) -> None:
    store.deliver(
        [(1, MIDNIGHT + S, 40, b"not json \xff at all"), (2, MIDNIGHT + 2 * S, 20, b"[1]")]
    )
    assert store.stats()["malformed"] == 2
    [hit] = store.search(text="json")
    assert hit["message"].startswith("not json") and hit["_seq"] == 1
    assert seqs(store.search(level_min=40)) == [1]


def test_unusable_directory_is_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match=r"^log store directory .*file/logs: Not a directory$"):
        LogStore(blocker / "logs")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a disk that fills."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot mount a small tmpfs to fill ({e})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, timeout=10)


@pytest.mark.parametrize("new_day", [False, True], ids=["same-day", "new-day"])
def test_full_disk_retries_without_loss_or_duplicates(small_fs: Path, new_day: bool) -> None:
    s = LogStore(small_fs / "logs", max_bytes=1 << 40)
    try:
        fill(s, 1, MIDNIGHT + S, 100, S)
        ballast = small_fs / "ballast"
        with contextlib.suppress(OSError), open(ballast, "wb") as f:
            while True:
                f.write(b"\0" * 65536)
        start = MIDNIGHT + (DAY_NS if new_day else 200 * S)
        batch = [
            record(101 + i, start + i * S, f"during full {i} " + "y" * 300) for i in range(2000)
        ]
        failed = s.deliver(batch)
        assert failed.done == 0 and failed.retry_after_s and failed.retry_after_s > 0
        assert "MiB free on its disk" in s.stats()["error"]
        again = s.deliver(batch)
        assert again.done == 0 and again.retry_after_s
        ballast.unlink()
        assert s.deliver(batch) == Delivery(2000)
        assert s.stats()["error"] is None
        assert sorted(seqs(s.search(limit=10_000))) == list(range(1, 2101))
        # a day that could not be made is not taken for a damaged one
        assert s.stats()["damaged"] == 0
        assert not [n for n in os.listdir(small_fs / "logs") if "damaged" in n]
    finally:
        s.close()
