"""Jobs in one SQLite file, changed only by applying machine events.

Each event is one transaction: read the job, apply the pure transition, write
the result back with an UPDATE conditional on the revision it was read at.
An event that changes nothing writes nothing, so a repeated RT event or a
retried call cannot finish a job twice.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from control.api import JOB_STATES, Waypoint
from control.errors import ControlError, InvalidArgument, NotFound
from control.jobs import machine
from control.jobs.machine import Job
from control.jobs.trajectory import validate_name, validate_waypoints

SCHEMA_VERSION = 2
_TABLE = """CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: ids go to the RT as job_id
    name TEXT NOT NULL,
    state TEXT NOT NULL
        CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    waypoints TEXT NOT NULL,               -- JSON [[t, [q...]], ...]
    n_waypoints INTEGER NOT NULL,
    cursor INTEGER NOT NULL DEFAULT 0,     -- waypoints reached
    submitted_ns INTEGER NOT NULL,         -- unix ns
    started_ns INTEGER,
    finished_ns INTEGER,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0    -- times its commands were handed to an RT
)"""
_INDEXES = (
    # the RT task runs one trajectory at a time
    "CREATE UNIQUE INDEX jobs_one_running ON jobs (state) WHERE state = 'running'",
    "CREATE INDEX jobs_by_state ON jobs (state, id)",
)
# version 2: the machine's progress (epoch, ckpt_seq, cursor), its attempt, a revision
_V2_COLUMNS = (
    "epoch INTEGER NOT NULL DEFAULT 0",
    "ckpt_seq INTEGER NOT NULL DEFAULT 0",
    "cmd_seq INTEGER NOT NULL DEFAULT 0",
    "attempt_epoch INTEGER NOT NULL DEFAULT 0",
    "attempt_seq INTEGER NOT NULL DEFAULT 0",
    "rev INTEGER NOT NULL DEFAULT 0",  # transitions applied: the guard of the conditional UPDATE
)
_FIELDS = tuple(f.name for f in dataclasses.fields(Job))
_STORED = tuple(f for f in _FIELDS if f != "waypoints")
# what callers see of a job; the attempt's bookkeeping stays inside
_PUBLIC = (
    "id",
    "name",
    "state",
    "n_waypoints",
    "cursor",
    "epoch",
    "ckpt_seq",
    "submitted_ns",
    "started_ns",
    "finished_ns",
    "error",
    "attempts",
)


class JobStoreError(ControlError):
    """The job database cannot be opened or was written by a newer version."""


class JobStore:
    """Jobs in one SQLite file (WAL, synchronous=FULL: a job the caller was
    told is queued survives a power cut). Safe to share between threads.
    `clock` stamps the jobs this store submits; transitions take their time
    from their events."""

    def __init__(
        self, path: str | os.PathLike[str], clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.path = os.fspath(path)
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except sqlite3.DatabaseError as e:
            raise JobStoreError(
                f"cannot open the job database {self.path}: {e} "
                "(move the file aside to start with an empty job list)"
            ) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def apply(self, ev: machine.Event) -> bool:
        """Apply one event in one transaction; True if it changed the job.
        NotFound for an event of a job that does not exist; IllegalTransition
        (a FailedPrecondition) for one that cannot follow the job's state."""
        with self._tx() as db:
            return self._apply(db, ev)[1]

    def submit(self, name: str, waypoints: builtins.list[Waypoint]) -> dict[str, Any]:
        """Queue a job under the next never-used id; returns it."""
        name = validate_name(name)
        checked = tuple((t, tuple(q)) for t, q in validate_waypoints(waypoints))
        with self._tx() as db:
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
            job_id = (row[0] if row else 0) + 1
            ev = machine.Submitted(job_id, self._clock(), name, checked)
            return public(self._apply(db, ev)[0])

    def cancel(self, job_id: int, time_ns: int) -> tuple[str, dict[str, Any]]:
        """queued | running -> cancelled; returns (the state it had, the job).
        NotFound, or IllegalTransition if it has already ended."""
        with self._tx() as db:
            before = self._load(db, job_id)
            after, _ = self._apply(db, machine.Cancelled(job_id, time_ns))
            return before.state, public(after)

    def put(self, job: Job) -> None:
        """Write `job` as it is (a cluster node mirrors the replicated jobs):
        inserted, or replacing the row of the same id. Idempotent."""
        values = {f: getattr(job, f) for f in _STORED}
        values |= {"waypoints": json.dumps(job.waypoints), "n_waypoints": job.n_waypoints}
        cols = ", ".join(values)
        with self._tx() as db:
            if job.state == "running":
                # the replicated order is the truth: a row another job left
                # running (an older mirror) gives way
                db.execute(
                    "UPDATE jobs SET state = 'failed', error = 'superseded by the cluster' "
                    "WHERE state = 'running' AND id != ?",
                    (job.id,),
                )
            db.execute(
                f"INSERT INTO jobs ({cols}) VALUES ({', '.join('?' * len(values))}) "
                f"ON CONFLICT(id) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in values)
                + ", rev = rev + 1",
                tuple(values.values()),
            )

    def job(self, job_id: int) -> Job:
        """The job's machine state."""
        with self._tx() as db:
            return self._load(db, job_id)

    def get(self, job_id: int) -> dict[str, Any]:
        return public(self.job(job_id))

    def waypoints(self, job_id: int) -> builtins.list[Waypoint]:
        return [(t, list(q)) for t, q in self.job(job_id).waypoints]

    def next_queued(self) -> Job | None:
        """The oldest queued job."""
        return self._one("state = 'queued' ORDER BY id LIMIT 1")

    def running_job(self) -> Job | None:
        return self._one("state = 'running'")

    def running(self) -> dict[str, Any] | None:
        job = self.running_job()
        return public(job) if job is not None else None

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        with self._tx() as db:
            rows = db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {state: 0 for state in JOB_STATES} | {s: int(n) for s, n in rows}

    def list(self, state: str | None = None, limit: int = 100) -> builtins.list[dict[str, Any]]:
        """Jobs, newest first, optionally only those in `state`."""
        if state is not None and state not in JOB_STATES:
            raise InvalidArgument("state", f"{state!r} is not one of {', '.join(JOB_STATES)}")
        if limit < 1:
            raise InvalidArgument("limit", f"{limit} must be >= 1")
        where, args = ("WHERE state = ?", (state, limit)) if state else ("", (limit,))
        with self._tx() as db:
            rows = db.execute(f"SELECT * FROM jobs {where} ORDER BY id DESC LIMIT ?", args)
            return [public(_from_row(r)) for r in rows.fetchall()]

    def _apply(self, db: sqlite3.Connection, ev: machine.Event) -> tuple[Job, bool]:
        """(the job after ev, whether ev changed it)."""
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (ev.job_id,)).fetchone()
        if row is None and not isinstance(ev, machine.Submitted):
            raise NotFound(f"job {ev.job_id} does not exist")
        before = _from_row(row) if row is not None else None
        after = machine.apply(before, ev)
        if after is before:
            return after, False
        values = {f: getattr(after, f) for f in _STORED}
        if row is None:
            values |= {"waypoints": json.dumps(after.waypoints), "n_waypoints": after.n_waypoints}
            cols = ", ".join(values)
            db.execute(
                f"INSERT INTO jobs ({cols}) VALUES ({', '.join('?' * len(values))})",
                tuple(values.values()),
            )
            return after, True
        sets = ", ".join(f"{f} = ?" for f in values)
        changed = db.execute(
            f"UPDATE jobs SET {sets}, rev = rev + 1 WHERE id = ? AND rev = ?",
            (*values.values(), after.id, row["rev"]),
        ).rowcount
        if changed != 1:  # the transaction holds the write lock: only a bug gets here
            raise RuntimeError(f"job {after.id} changed while {type(ev).__name__} applied")
        return after, True

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._tx() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                # statement by statement: executescript() would commit this transaction
                for stmt in (_TABLE, *_INDEXES):
                    db.execute(stmt)
            if version in (0, 1):
                for column in _V2_COLUMNS:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {column}")
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise JobStoreError(
                    f"the job database {self.path} has schema version {version}; this "
                    f"agent reads version {SCHEMA_VERSION} (upgrade the agent)"
                )

    def _load(self, db: sqlite3.Connection, job_id: int) -> Job:
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} does not exist")
        return _from_row(row)

    def _one(self, where: str) -> Job | None:
        with self._tx() as db:
            row = db.execute(f"SELECT * FROM jobs WHERE {where}").fetchone()
        return _from_row(row) if row is not None else None


def _from_row(row: sqlite3.Row) -> Job:
    fields = {f: row[f] for f in _STORED}
    fields["waypoints"] = tuple((t, tuple(q)) for t, q in json.loads(row["waypoints"]))
    return Job(**fields)


def public(job: Job) -> dict[str, Any]:
    doc = {k: getattr(job, k) for k in _PUBLIC}
    doc["progress"] = job.cursor / job.n_waypoints
    return doc
