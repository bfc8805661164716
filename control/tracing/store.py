"""The embedded trace store: the spans the agent keeps, RT and agent alike, in
one SQLite file under the data directory, looked up by trace id.

Span dicts are those of rtcore.records.Decoder.spans plus "node", "process"
and "pid": trace_id, span_id, parent_span_id, name, kind, status,
status_message, attributes, start_time_ns, end_time_ns (wall clock), cycle,
flags.

Two tables: `spans` (the fields queries use as columns, the rest as JSON) and
`traces` (one summary row per trace, updated as its spans arrive, so `list`
never groups spans). WAL with synchronous=NORMAL: a power cut may lose the
last moments of traces, never the file. One lock orders the writers; each
look-up uses a connection of its own, so it does not wait behind an insert.

Retention runs from add() at most every PRUNE_INTERVAL_S: traces that started
more than retention_s ago go, then the oldest until the used pages fit in
max_bytes (SQLite reuses freed pages: the file stops growing there).

A database that cannot be opened is moved aside (damaged) or left alone
(unreadable), reported in one log line, and the store runs without it:
add() drops and counts, get() and list() say why. Tracing never takes the
agent down.
"""

from __future__ import annotations

import builtins
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from loguru import logger

from control.errors import ControlError, FailedPrecondition, InvalidArgument, NotFound

DB_NAME = "traces.db"
PRUNE_INTERVAL_S = 10.0
# size retention deletes down to this share of max_bytes, so it does not run on every add
LOW_WATER = 0.9
CHUNK = 2000  # traces deleted per transaction: a look-up never waits long behind retention

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS spans (
        trace_id BLOB NOT NULL,      -- 16 bytes
        start_ns INTEGER NOT NULL,   -- unix ns
        name TEXT NOT NULL,
        doc TEXT NOT NULL            -- JSON: the span's other fields
    )""",
    "CREATE INDEX IF NOT EXISTS spans_by_trace ON spans (trace_id)",
    """CREATE TABLE IF NOT EXISTS traces (
        trace_id BLOB PRIMARY KEY,
        start_ns INTEGER NOT NULL,   -- earliest span start
        end_ns INTEGER NOT NULL,     -- latest span end
        name TEXT NOT NULL,          -- the root span's, else the earliest span's
        rooted INTEGER NOT NULL,     -- 1 once the root span (no parent) is in
        spans INTEGER NOT NULL,
        error INTEGER NOT NULL,      -- 1 when a span's status is error
        nodes TEXT NOT NULL          -- JSON list, sorted
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS traces_by_start ON traces (start_ns)",
    "CREATE INDEX IF NOT EXISTS traces_errors_by_start ON traces (start_ns) WHERE error = 1",
)
# in an upsert's SET every bare column is the stored row's old value
_UPSERT = """INSERT INTO traces VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (trace_id) DO UPDATE SET
    name = CASE
        WHEN rooted THEN name
        WHEN excluded.rooted OR excluded.start_ns < start_ns THEN excluded.name
        ELSE name END,
    rooted = max(rooted, excluded.rooted),
    start_ns = min(start_ns, excluded.start_ns),
    end_ns = max(end_ns, excluded.end_ns),
    spans = spans + excluded.spans,
    error = max(error, excluded.error),
    nodes = merge_nodes(nodes, excluded.nodes)"""
_COLUMNS = ("trace_id", "name", "start_time_ns")
_DAMAGED = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


class TraceStore:
    def __init__(self, directory: str, retention_s: float = 7 * 86400, max_bytes: int = 1 << 30):
        self.directory = directory
        self.path = os.path.join(directory, DB_NAME)
        self.retention_s = retention_s
        self.max_bytes = max_bytes
        self.dropped = 0  # spans not kept: store unavailable, a failed insert, a malformed span
        self.error: str | None = None  # why the store is unavailable
        self._lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._next_prune = 0.0
        self._last_logged = ""
        self._db: sqlite3.Connection | None = None
        self._open_or_set_aside()

    # ---- writing ----------------------------------------------------------------

    def add(self, spans: builtins.list[dict[str, Any]]) -> None:
        """Keeps `spans` (one transaction); never raises: what cannot be kept is
        counted in `dropped` and the failure logged."""
        rows, summaries = _rows(spans)
        self.dropped += len(spans) - len(rows)
        if not rows:
            return
        with self._lock:
            if self._db is None:
                self.dropped += len(rows)
                return
            try:
                with _transaction(self._db) as db:
                    db.executemany("INSERT INTO spans VALUES (?, ?, ?, ?)", rows)
                    db.executemany(_UPSERT, summaries)
            except sqlite3.Error as e:
                self.dropped += len(rows)
                self._log_once(f"trace store {self.path}: spans dropped: {e}")
                return
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_INTERVAL_S
            try:
                self.prune()
            except (sqlite3.Error, ControlError) as e:
                self._log_once(f"trace store {self.path}: retention failed: {e}")

    def prune(self, now_ns: int | None = None) -> int:
        """Applies retention now (add() does it every PRUNE_INTERVAL_S); returns
        how many traces it removed."""
        cutoff = (time.time_ns() if now_ns is None else now_ns) - int(self.retention_s * 1e9)
        removed = 0
        while True:
            n = self._delete_oldest(CHUNK, before_ns=cutoff)
            removed += n
            if n < CHUNK:
                break
        low = self.max_bytes * LOW_WATER
        # a few passes at most: each removes the share of traces the excess is of the pages
        for _ in range(10):
            used = self._used_bytes()
            if used <= self.max_bytes:
                break
            count = self._read(lambda db: db.execute("SELECT count(*) FROM traces").fetchone()[0])
            excess = max(1, math.ceil(count * (used - low) / used))
            while excess > 0:
                n = self._delete_oldest(min(excess, CHUNK))
                removed += n
                excess = excess - n if n else 0
        return removed

    def _delete_oldest(self, n: int, before_ns: int | None = None) -> int:
        with self._lock:
            if self._db is None:
                return 0
            with _transaction(self._db) as db:
                ids = [
                    r[0]
                    for r in db.execute(
                        "SELECT trace_id FROM traces WHERE start_ns < ? ORDER BY start_ns LIMIT ?",
                        (2**63 - 1 if before_ns is None else before_ns, n),
                    )
                ]
                db.executemany("DELETE FROM spans WHERE trace_id = ?", [(i,) for i in ids])
                db.executemany("DELETE FROM traces WHERE trace_id = ?", [(i,) for i in ids])
        return len(ids)

    def _used_bytes(self) -> int:
        def used(db: sqlite3.Connection) -> int:
            size = db.execute("PRAGMA page_size").fetchone()[0]
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            free = db.execute("PRAGMA freelist_count").fetchone()[0]
            return int((pages - free) * size)

        with self._lock:
            return 0 if self._db is None else used(self._db)

    # ---- reading ----------------------------------------------------------------

    def get(self, trace_id: str) -> builtins.list[dict[str, Any]]:
        """Every span of the trace, by start time; NotFound if it has none here."""
        key = _trace_key(trace_id)
        rows = self._read(
            lambda db: db.execute(
                "SELECT name, start_ns, doc FROM spans WHERE trace_id = ? ORDER BY start_ns, rowid",
                (key,),
            ).fetchall()
        )
        if not rows:
            raise NotFound(f"no trace {trace_id} in the trace store")
        return [
            {"name": name, "trace_id": trace_id.lower(), "start_time_ns": start, **json.loads(doc)}
            for name, start, doc in rows
        ]

    def list(
        self,
        slow_ms: float = 0.0,
        since_ns: int = 0,
        name: str = "",
        errors: bool = False,
        limit: int = 50,
    ) -> builtins.list[dict[str, Any]]:
        """Trace summaries, newest first: those that lasted at least slow_ms,
        started at or after since_ns, have a span called `name`, have an error."""
        where = ["t.start_ns >= ?"]
        params: builtins.list[Any] = [since_ns]
        if slow_ms > 0:
            where.append("t.end_ns - t.start_ns >= ?")
            params.append(slow_ms * 1e6)
        if errors:
            where.append("t.error = 1")
        if name:
            where.append(
                "EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = t.trace_id AND s.name = ?)"
            )
            params.append(name)
        params.append(limit)
        sql = (
            "SELECT t.trace_id, t.name, t.start_ns, t.end_ns, t.spans, t.error, t.nodes "
            f"FROM traces t WHERE {' AND '.join(where)} ORDER BY t.start_ns DESC LIMIT ?"
        )
        rows = self._read(lambda db: db.execute(sql, params).fetchall())
        return [
            {
                "trace_id": tid.hex(),
                "name": root,
                "start_time_ns": start,
                "duration_ms": (end - start) / 1e6,
                "spans": n,
                "error": bool(error),
                "nodes": json.loads(nodes),
            }
            for tid, root, start, end, n, error, nodes in rows
        ]

    def stats(self) -> dict[str, Any]:
        """For status: traces and spans kept, bytes used, spans dropped, error."""
        out: dict[str, Any] = {"dropped": self.dropped, "error": self.error}
        if self.error is None:
            traces, spans = self._read(
                lambda db: db.execute(
                    "SELECT count(*), coalesce(sum(spans), 0) FROM traces"
                ).fetchone()
            )
            out.update(traces=traces, spans=spans, bytes=self._used_bytes())
        return out

    def close(self) -> None:
        with self._lock:
            db, self._db = self._db, None
            if self.error is None:
                self.error = "the trace store is closed"
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        if db is not None:
            db.close()

    def _read(self, query: Any) -> Any:
        """query(connection) on a reader connection of the pool; sqlite errors
        become one ControlError a person can act on."""
        if self.error is not None:
            raise FailedPrecondition(self.error)
        with self._readers_lock:
            conn = self._readers.pop() if self._readers else None
        try:
            if conn is None:
                conn = sqlite3.connect(self.path, check_same_thread=False)
                conn.execute("PRAGMA query_only = 1")
            result = query(conn)
        except sqlite3.Error as e:
            if conn is not None:
                conn.close()
            raise ControlError(f"trace store {self.path}: {e}") from None
        with self._readers_lock:
            if self.error is None:
                self._readers.append(conn)
                conn = None
        if conn is not None:
            conn.close()
        return result

    # ---- opening ----------------------------------------------------------------

    def _open_or_set_aside(self) -> None:
        try:
            self._db = _open(self.path)
            return
        except sqlite3.DatabaseError as e:
            if e.sqlite_errorcode not in _DAMAGED:
                return self._unavailable(f"cannot open {self.path}: {e}")
            aside = f"{self.path}.damaged-{time.strftime('%Y%m%dT%H%M%S')}"
            try:
                for suffix in ("", "-wal", "-shm"):
                    if os.path.exists(self.path + suffix):
                        os.replace(self.path + suffix, aside + suffix)
                self._db = _open(self.path)
            except (OSError, sqlite3.Error) as again:
                return self._unavailable(f"{self.path} is damaged ({e}) and {again}")
            logger.error(
                "trace store {} is damaged ({}): moved it to {} and started an empty one",
                self.path,
                e,
                aside,
            )
        except OSError as e:
            self._unavailable(f"cannot open {self.path}: {e.strerror or e}")

    def _unavailable(self, reason: str) -> None:
        self.error = f"the trace store is unavailable: {reason}"
        logger.error("{}; traces are not kept until it is fixed and the agent restarted", reason)

    def _log_once(self, message: str) -> None:
        """A failure repeats at the span rate: log it when it changes."""
        if message != self._last_logged:
            self._last_logged = message
            logger.error(message)


def _open(path: str) -> sqlite3.Connection:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA journal_size_limit = 67108864")
        with _transaction(db):
            for statement in _SCHEMA:
                db.execute(statement)
        db.execute("SELECT count(*) FROM (SELECT 1 FROM traces LIMIT 1)").fetchone()
    except BaseException:
        db.close()
        raise
    db.create_function("merge_nodes", 2, _merge_nodes, deterministic=True)
    return db


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _trace_key(trace_id: str) -> bytes:
    try:
        key = bytes.fromhex(trace_id)
    except ValueError:
        key = b""
    if len(key) != 16:
        raise InvalidArgument("trace_id", f"{trace_id!r} is not a trace id: use 32 hex digits")
    return key


def _rows(
    spans: builtins.list[dict[str, Any]],
) -> tuple[builtins.list[tuple], builtins.list[tuple]]:
    """The spans' rows and their traces' summaries; a malformed span is left out."""
    rows: builtins.list[tuple] = []
    traces: dict[bytes, builtins.list[Any]] = {}
    for sp in spans:
        try:
            key = _trace_key(sp["trace_id"])
            start, end = int(sp["start_time_ns"]), int(sp["end_time_ns"])
            name = str(sp["name"])
            doc = json.dumps({k: v for k, v in sp.items() if k not in _COLUMNS})
        except (ControlError, KeyError, TypeError, ValueError):
            continue
        rows.append((key, start, name, doc))
        rooted = sp.get("parent_span_id") is None
        t = traces.get(key)
        if t is None:
            traces[key] = [start, end, name, rooted, 1, False, set()]
            t = traces[key]
        else:
            if not t[3] and (rooted or start < t[0]):
                t[2] = name
            t[0], t[1], t[3], t[4] = min(t[0], start), max(t[1], end), t[3] or rooted, t[4] + 1
        t[5] = t[5] or sp.get("status") == "error"
        if sp.get("node"):
            t[6].add(str(sp["node"]))
    summaries = [
        (key, start, end, name, int(rooted), n, int(error), json.dumps(sorted(nodes)))
        for key, (start, end, name, rooted, n, error, nodes) in traces.items()
    ]
    return rows, summaries


def _merge_nodes(old: str, new: str) -> str:
    if old == new:
        return old
    return json.dumps(sorted(set(json.loads(old)) | set(json.loads(new))))
