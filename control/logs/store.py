"""The embedded log store: every spooled record, searchable, in the data
directory, without a server (tantivy).

One tantivy index per UTC day (`logs-YYYYMMDD/`): retention removes whole
days, and a query opens only the days its time range overlaps. A record is
indexed by the fields queries filter on (time, seq, level, event.action,
trace.id, service.node.name, the message's words) and keeps its ECS document
as stored bytes, the only stored field: filters never read documents, and a
hit costs one read.

How a record is indexed and a query answered: control/logs/query.py.

deliver() commits every index it touched before it returns, and only then
is the batch acknowledged. Delivery is at-least-once: a day ignores records
whose seq is not above the highest it holds (per day, since a crash may land
between two days' commits). A record is searchable before that: a search also
scans the spool's records the store has not settled yet (`fresh`, see
control/logs/fresh.py), so it does not wait for the commit of its batch.

A day whose index cannot be opened is moved aside (`<dir>.damaged-<ts>`),
counted and logged once; the store carries on without it.
"""

from __future__ import annotations

import calendar
import os
import random
import re
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import tantivy
from loguru import logger

from control.errors import InvalidArgument
from control.logs.fresh import FreshRecords
from control.logs.query import (
    DAY_NS,
    SCHEMA,
    WORDS,
    Filters,
    count,
    fields_of,
    matching,
    max_seq,
    range_query,
    results,
    windows,
)
from control.logs.sink import Delivery, Record

DIR_PREFIX = "logs-"
LEVELS = (10, 20, 30, 40, 50)
WRITER_HEAP_BYTES = 64 << 20
MAX_WRITERS = 2  # today's, and one for late records of another day
WRITER_IDLE_S = 60.0
LOW_WATER = 0.9  # size retention removes down to this share of max_bytes
BACKOFF_S = (0.1, 30.0)  # first and longest wait after a failed delivery
CUTOFF_NS = 1_000_000  # size retention's cutoff time resolution


class StoreError(OSError):
    """The store directory cannot be used; the message says why."""


def day_dir_name(day: int) -> str:
    return DIR_PREFIX + time.strftime("%Y%m%d", time.gmtime(day * 86_400))


@dataclass
class _Day:
    number: int  # days since the epoch, UTC
    path: str
    index: tantivy.Index
    writer: tantivy.IndexWriter | None = None
    max_seq: int = -1  # highest seq committed; read when the writer opens
    used: float = field(default_factory=time.monotonic)


class LogStore:
    """A Sink (name "store") that also answers searches. Thread-safe: one
    writer (the pipeline's worker, or retention) at a time; searches run
    beside it on the last committed state."""

    name = "store"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_age_s: float = 30 * 86_400,
        max_bytes: int = 2 << 30,
    ) -> None:
        self.directory = os.fspath(directory)
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as e:
            raise StoreError(f"log store directory {self.directory}: {e.strerror}") from None
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise StoreError(f"log store directory {self.directory} is not writable")
        self._write = threading.Lock()
        # replaced, never mutated, so a search reads a consistent map without the lock
        self._days: dict[int, _Day] = {}
        self.counts = {"duplicates": 0, "expired": 0, "malformed": 0, "damaged": 0}
        self.last_seq = -1
        # every record up to this seq is in the index (or was a duplicate, or
        # expired); the ones above are searched in `fresh`. Spool seqs start at 1
        self.settled_seq = 0
        self.fresh = FreshRecords()
        self.error: str | None = None  # why the last delivery failed; None once one succeeds
        self._failures = 0
        for name in sorted(os.listdir(self.directory)):
            number = _parse_day(name)
            # a day without meta.json holds nothing yet: it is made when a record comes
            if number is not None and os.path.exists(
                os.path.join(self.directory, name, "meta.json")
            ):
                self._open_day(number)

    # ---- writing ------------------------------------------------------------------

    def deliver(self, records: Sequence[Record]) -> Delivery:
        """Indexes and commits the batch; never raises for a failing disk: the
        batch is retried after a backoff, and what was committed is skipped."""
        with self._write:
            pending: dict[int, tuple[_Day, int]] = {}  # day -> (it, last seq added), uncommitted
            try:
                self._add(records, pending)
                while pending:
                    self._commit(*pending.pop(next(iter(pending))))
            except (OSError, ValueError) as e:
                return self._failed([day for day, _ in pending.values()], e)
            self._close_idle()
            self._failures = 0
            self.error = None
            if records:
                self.settled_seq = max(self.settled_seq, records[-1][0])
                self.fresh.settle(self.settled_seq)
            return Delivery(len(records))

    def _add(self, records: Sequence[Record], pending: dict[int, tuple[_Day, int]]) -> None:
        first_kept = self._first_kept_day(time.time_ns())
        number = -1
        day: _Day | None = None
        writer: tantivy.IndexWriter | None = None
        for seq, time_ns, level, doc in records:
            if time_ns // DAY_NS != number:
                number = time_ns // DAY_NS
                day = self._day(number) if number >= first_kept else None
                writer = self._writer(day, pending) if day is not None else None
            if day is None or writer is None:
                self.counts["expired"] += 1
            elif seq <= day.max_seq:
                self.counts["duplicates"] += 1
            else:
                writer.add_document(self._document(seq, time_ns, level, doc))
                pending[number] = (day, seq)

    def _commit(self, day: _Day, last_seq: int) -> None:
        assert day.writer is not None
        day.writer.commit()
        day.max_seq = last_seq
        self.last_seq = max(self.last_seq, last_seq)
        day.index.reload()

    def _day(self, number: int) -> _Day:
        # a damaged index is moved aside, and the day starts afresh
        day = self._days.get(number) or self._open_day(number) or self._open_day(number)
        if day is None:
            raise OSError(f"cannot open the index of {day_dir_name(number)}")
        return day

    def _writer(self, day: _Day, pending: dict[int, tuple[_Day, int]]) -> tantivy.IndexWriter:
        """The day's writer, opened (reading its max_seq) if need be; beyond
        MAX_WRITERS the least recently used one is committed and closed."""
        day.used = time.monotonic()
        if day.writer is None:
            open_writers = sorted(
                (d for d in self._days.values() if d.writer is not None), key=lambda d: d.used
            )
            for old in open_writers[: max(0, len(open_writers) - MAX_WRITERS + 1)]:
                if old.number in pending:
                    self._commit(*pending.pop(old.number))
                _close_writer(old)
            day.writer = day.index.writer(WRITER_HEAP_BYTES, 2)
            day.max_seq = max_seq(day.index.searcher())
            self.last_seq = max(self.last_seq, day.max_seq)
        return day.writer

    def _document(self, seq: int, time_ns: int, level: int, doc: bytes) -> tantivy.Document:
        f = fields_of(doc)
        if f.malformed:
            self.counts["malformed"] += 1
        d = tantivy.Document()
        d.add_integer("time_ns", time_ns)
        d.add_integer("seq", seq)
        d.add_integer("level", level)
        d.add_bytes("doc", f.doc)
        # spelled out rather than looped: this runs for every record
        if f.message is not None:
            d.add_text("message", f.message)
        if f.event is not None:
            d.add_text("event", f.event)
        if f.trace is not None:
            d.add_text("trace", f.trace)
        if f.node is not None:
            d.add_text("node", f.node)
        return d

    def _failed(self, touched: list[_Day], error: Exception) -> Delivery:
        # uncommitted documents go with their writer; a replay skips what was committed
        for day in touched:
            _close_writer(day, rollback=True)
        self._failures += 1
        self.error = (
            f"log store {self.directory}: {error} ({_free_mib(self.directory)} free on its disk)"
        )
        if self._failures == 1:
            logger.warning("{}; retrying", self.error)
        first, longest = BACKOFF_S
        wait = min(longest, first * 2 ** (self._failures - 1))
        return Delivery(0, wait * random.uniform(0.5, 1.0))

    def _close_idle(self) -> None:
        idle = time.monotonic() - WRITER_IDLE_S
        for day in self._days.values():
            if day.writer is not None and day.used < idle:
                _close_writer(day)

    # ---- days ---------------------------------------------------------------------

    def _open_day(self, number: int) -> _Day | None:
        """The day's index, made if it has none yet (OSError if that fails);
        None when it has one that cannot be opened: then it is moved aside."""
        path = os.path.join(self.directory, day_dir_name(number))
        existed = os.path.exists(os.path.join(path, "meta.json"))
        try:
            os.makedirs(path, exist_ok=True)
            index = tantivy.Index(SCHEMA, path=path, reuse=True)
        except (OSError, ValueError) as e:
            if not existed:
                raise OSError(f"cannot make the index {path}: {e}") from None
            self._set_aside(path, e)
            return None
        index.config_reader("Manual")  # reloaded after each commit, no watcher thread
        day = _Day(number, path, index)
        self._days = {**self._days, number: day}
        return day

    def _set_aside(self, path: str, error: Exception) -> None:
        aside = f"{path}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
        try:
            os.rename(path, aside)
        except OSError as e:
            logger.error("log store: {} cannot be opened ({}) nor moved aside: {}", path, error, e)
            return
        self.counts["damaged"] += 1
        logger.error("log store: {} cannot be opened ({}); moved to {}", path, error, aside)

    def _remove_day(self, day: _Day) -> None:
        _close_writer(day)
        self._days = {n: d for n, d in self._days.items() if n != day.number}
        shutil.rmtree(day.path, ignore_errors=True)

    def _first_kept_day(self, now_ns: int) -> int:
        """Days before this one are past max_age_s (all their records are)."""
        return (now_ns - int(self.max_age_s * 1e9)) // DAY_NS

    # ---- retention ----------------------------------------------------------------

    def retention(self, now_ns: int | None = None) -> dict[str, Any]:
        """Removes the days older than max_age_s, then the oldest days until the
        store fits max_bytes; a single day over the cap loses its oldest records
        (their space returns as tantivy drops or merges their segments)."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        removed: list[str] = []
        deleted = 0
        with self._write:
            first_kept = self._first_kept_day(now_ns)
            for day in sorted(self._days.values(), key=lambda d: d.number):
                if day.number < first_kept:
                    removed.append(os.path.basename(day.path))
                    self._remove_day(day)
            while len(self._days) > 1 and self._bytes() > self.max_bytes:
                oldest = self._days[min(self._days)]
                removed.append(os.path.basename(oldest.path))
                self._remove_day(oldest)
            if len(self._days) == 1:
                [day] = self._days.values()
                # deleted records keep their bytes until tantivy drops or merges
                # their segment: count only the live share, or each pass would
                # delete again what the last one did
                # records differ in size (merged segments pack tighter), so a
                # share of the count frees only about that share of the bytes:
                # a few passes bring the day under the cap in one call
                for _ in range(4):
                    live = _index_bytes(day.path)[1]
                    if live <= self.max_bytes:
                        break
                    deleted += self._delete_oldest(day, 1 - self.max_bytes * LOW_WATER / live)
        return {"days_removed": removed, "records_deleted": deleted, "bytes": self._bytes()}

    def _delete_oldest(self, day: _Day, share: float) -> int:
        """Deletes the oldest `share` of the day's records (to CUTOFF_NS)."""
        searcher = day.index.searcher()
        wanted = round(searcher.num_docs * share)
        if wanted <= 0:
            return 0
        # bisect for the cutoff on counts of the time column: exact, unlike the
        # percentile aggregation, whose relative error is days at epoch nanoseconds
        lo, hi = day.number * DAY_NS, (day.number + 1) * DAY_NS
        while hi - lo > CUTOFF_NS:
            mid = (lo + hi) // 2
            if count(searcher, range_query("time_ns", None, mid - 1)) < wanted:
                lo = mid
            else:
                hi = mid
        older = range_query("time_ns", None, hi - 1)
        deleted = count(searcher, older)
        writer = self._writer(day, {})
        writer.delete_documents_by_query(older)
        writer.commit()
        writer.garbage_collect_files()
        day.index.reload()
        return deleted

    # ---- reading ------------------------------------------------------------------

    def search(
        self,
        *,
        level_min: int | None = None,
        event: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        trace_id: str | None = None,
        node: str | None = None,
        text: str | None = None,
        limit: int = 100,
        after_seq: int | None = None,
    ) -> list[dict[str, Any]]:
        """Records matching every filter given, newest first; with after_seq,
        the records after it in seq order (for following the log). Each is its
        ECS document plus "_seq". `text`: words that must all be in the message
        (no query syntax); a text without words matches nothing."""
        if limit < 1:
            raise InvalidArgument("limit", f"must be at least 1, not {limit}")
        if level_min is not None and level_min > LEVELS[-1]:
            raise InvalidArgument("level_min", f"{level_min} is above CRITICAL ({LEVELS[-1]})")
        if since_ns is not None and until_ns is not None and since_ns > until_ns:
            raise InvalidArgument("since", "is after until")
        terms = [(f, v) for f, v in (("event", event), ("trace", trace_id), ("node", node)) if v]
        if text is not None:
            words = sorted(set(WORDS.analyze(text)))
            if not words:
                return []
            terms += [("message", w) for w in words]
        levels = [lv for lv in LEVELS if level_min is None or lv >= level_min]
        lo = since_ns if since_ns is not None else 0
        hi = until_ns if until_ns is not None else 2**63 - 1
        # The fresh records are copied before any searcher is taken: a commit
        # in between then finds them in both (kept once below), while the other
        # order loses the records a commit settles (and forgets) between the
        # searcher and the copy. The settled seq is read before either.
        settled = self.settled_seq
        fresh, complete_above = self.fresh.above(
            settled if after_seq is None else max(settled, after_seq)
        )
        if after_seq is not None and settled < complete_above:
            # records between the settled ones and the buffer's are in neither
            # yet: a follower given the buffer's would move past them for good
            fresh = []
        days = [d for n, d in sorted(self._days.items()) if lo // DAY_NS <= n <= hi // DAY_NS]
        query = Filters(terms, levels if len(levels) < len(LEVELS) else [])
        if after_seq is not None:
            hits = results(self._after(days, query, lo, hi, after_seq, limit))
            hits += matching(fresh, query, lo, hi, limit, by_seq=True)
            hits.sort(key=lambda hit: hit.seq)
        else:
            hits = results(self._newest(days, query, lo, hi, limit))
            hits += matching(fresh, query, lo, hi, limit, by_seq=False)
            hits.sort(key=lambda hit: (hit.time_ns, hit.seq), reverse=True)
        out = []
        seen: set[int] = set()
        for hit in hits:
            if hit.seq not in seen:
                seen.add(hit.seq)
                out.append({**hit.doc, "_seq": hit.seq})
                if len(out) == limit:
                    break
        return out

    def _newest(
        self, days: list[_Day], query: Filters, lo: int, hi: int, limit: int
    ) -> list[tuple[tantivy.Searcher, tantivy.DocAddress]]:
        found: list[tuple[tantivy.Searcher, tantivy.DocAddress]] = []
        for day in reversed(days):
            searcher = day.index.searcher()
            start = max(lo, day.number * DAY_NS)
            end = min(hi, (day.number + 1) * DAY_NS - 1)
            matches = query.most_matches(searcher)
            for window_lo, window_hi in windows(matches, start, end, limit - len(found)):
                hits = searcher.search(
                    query.build(range_query("time_ns", window_lo, window_hi)),
                    limit - len(found),
                    count=False,
                    order_by_field="time_ns",
                    order=tantivy.Order.Desc,
                ).hits
                found += [(searcher, address) for _, address in hits]
                if len(found) == limit:
                    return found
        return found

    def _after(
        self, days: list[_Day], query: Filters, lo: int, hi: int, after_seq: int, limit: int
    ) -> list[tuple[tantivy.Searcher, tantivy.DocAddress]]:
        # a late record lands in an older day with a higher seq: every day can hold some
        found: list[tuple[int, tantivy.Searcher, tantivy.DocAddress]] = []
        for day in days:
            searcher = day.index.searcher()
            hits = searcher.search(
                query.build(
                    range_query("time_ns", lo, hi), range_query("seq", after_seq + 1, None)
                ),
                limit,
                count=False,
                order_by_field="seq",
                order=tantivy.Order.Asc,
            ).hits
            found += [(seq, searcher, address) for seq, address in hits]
        found.sort(key=lambda hit: hit[0])
        return [(searcher, address) for _, searcher, address in found[:limit]]

    # ---- state --------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        days = self._days
        return {
            "docs": sum(d.index.searcher().num_docs for d in days.values()),
            "bytes": self._bytes(),
            "days": len(days),
            "last_seq": self.last_seq,
            **self.counts,
            "error": self.error,
        }

    def _bytes(self) -> int:
        return sum(_index_bytes(d.path)[0] for d in self._days.values())

    def close(self) -> None:
        with self._write:
            for day in self._days.values():
                _close_writer(day)


def _close_writer(day: _Day, rollback: bool = False) -> None:
    writer, day.writer = day.writer, None
    if writer is None:
        return
    try:
        if rollback:
            writer.rollback()
        writer.wait_merging_threads()
    except (OSError, ValueError) as e:
        if not rollback:  # after a failure the writer is often dead already
            logger.warning("log store: closing the writer of {}: {}", day.path, e)


def _parse_day(name: str) -> int | None:
    if not name.startswith(DIR_PREFIX) or len(name) != len(DIR_PREFIX) + 8:
        return None
    try:
        t = time.strptime(name[len(DIR_PREFIX) :], "%Y%m%d")
    except ValueError:
        return None
    return calendar.timegm(t) // 86_400


_SEGMENT_FILE = re.compile("[0-9a-f]{32}")


def _index_bytes(path: str) -> tuple[int, float]:
    """(bytes, live bytes) of the segments the index's committed meta.json
    names. Files of a merge still running, or of merged segments not yet
    collected, are not counted: counting them made a size check right after a
    merge see the day doubled and cut it again. Live bytes weigh each segment
    by the share of its documents not deleted (their bytes stay until tantivy
    merges or drops the segment)."""
    try:
        with open(os.path.join(path, "meta.json"), "rb") as f:
            segments = orjson.loads(f.read())["segments"]
        share = {
            s["segment_id"].replace("-", ""): (
                1 - (s.get("deletes") or {}).get("num_deleted_docs", 0) / s["max_doc"]
                if s["max_doc"]
                else 0.0
            )
            for s in segments
        }
    except FileNotFoundError:
        return 0, 0.0
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        share = None  # unreadable meta: count every file as live
    total, live = 0, 0.0
    try:
        with os.scandir(path) as entries:
            for e in entries:
                if not e.is_file(follow_symlinks=False):
                    continue
                size = e.stat(follow_symlinks=False).st_size
                segment = e.name.split(".", 1)[0]
                if share is not None and _SEGMENT_FILE.fullmatch(segment):
                    weight = share.get(segment)
                    if weight is not None:
                        total, live = total + size, live + size * weight
                else:  # meta.json, .managed.json, locks; or every file if meta is unreadable
                    total, live = total + size, live + size
    except FileNotFoundError:
        pass
    return total, live


def _free_mib(path: str) -> str:
    try:
        return f"{shutil.disk_usage(path).free >> 20} MiB"
    except OSError as e:
        return f"unknown MiB ({e.strerror})"
