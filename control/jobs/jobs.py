"""Trajectory jobs: a durable queue (JobStore, one SQLite file) and the state
machine that hands queued jobs to the RT task one at a time and follows them
through its events (JobRunner).

A job goes queued -> running -> done | failed, or -> cancelled from queued or
running. Every transition is one transaction that checks the state it starts
from, so a repeated RT event or a retried call changes nothing the second time.
"""

from __future__ import annotations

import builtins
import errno
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from control.api import JOB_STATES, Waypoint
from control.errors import ControlError, FailedPrecondition, InvalidArgument, NotFound
from control.jobs.trajectory import validate_name, validate_waypoints
from rtcore import layout, records, reftask

SCHEMA_VERSION = 1
_SCHEMA = (
    """CREATE TABLE jobs (
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
        attempts INTEGER NOT NULL DEFAULT 0    -- times its commands were sent to the RT
    )""",
    # the RT task runs one trajectory at a time
    "CREATE UNIQUE INDEX jobs_one_running ON jobs (state) WHERE state = 'running'",
    "CREATE INDEX jobs_by_state ON jobs (state, id)",
)
_COLUMNS = (
    "id, name, state, n_waypoints, cursor, submitted_ns, started_ns, finished_ns, error, attempts"
)
_FINAL = ("done", "failed", "cancelled")
_TRAJ = {name: code for code, name in reftask.TRAJ_STATES.items()}


class JobStoreError(ControlError):
    """The job database cannot be opened or was written by a newer version."""


class JobStore:
    """Jobs in one SQLite file (WAL, synchronous=FULL: a job the caller was
    told is queued survives a power cut). Safe to share between threads."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
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

    def submit(self, name: str, waypoints: builtins.list[Waypoint]) -> dict[str, Any]:
        """Queue a job; returns it."""
        name = validate_name(name)
        checked = validate_waypoints(waypoints)
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO jobs (name, state, waypoints, n_waypoints, submitted_ns) "
                "VALUES (?, 'queued', ?, ?, ?)",
                (name, json.dumps(checked), len(checked), time.time_ns()),
            )
            return self._get(db, cur.lastrowid)

    def get(self, job_id: int) -> dict[str, Any]:
        with self._tx() as db:
            return self._get(db, job_id)

    def waypoints(self, job_id: int) -> builtins.list[Waypoint]:
        with self._tx() as db:
            row = db.execute("SELECT waypoints FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} does not exist")
        return [(t, q) for t, q in json.loads(row["waypoints"])]

    def next_queued(self) -> dict[str, Any] | None:
        """The oldest queued job."""
        return self._one("state = 'queued' ORDER BY id LIMIT 1")

    def running(self) -> dict[str, Any] | None:
        return self._one("state = 'running'")

    def mark_started(self, job_id: int) -> bool:
        """queued -> running, one more attempt; False if it was not queued."""
        return self._update(
            "SET state = 'running', attempts = attempts + 1, started_ns = ? "
            "WHERE id = ? AND state = 'queued'",
            (time.time_ns(), job_id),
        )

    def mark_resent(self, job_id: int) -> bool:
        """One more attempt of a running job; False if it is not running."""
        return self._update(
            "SET attempts = attempts + 1 WHERE id = ? AND state = 'running'", (job_id,)
        )

    def advance(self, job_id: int, cursor: int) -> bool:
        """Raise a running job's cursor; never lowers it, never past the end."""
        return self._update(
            "SET cursor = min(?, n_waypoints) "
            "WHERE id = ? AND state = 'running' AND cursor < min(?, n_waypoints)",
            (cursor, job_id, cursor),
        )

    def mark_done(self, job_id: int) -> bool:
        """running -> done with every waypoint reached; False if it was not running."""
        return self._update(
            "SET state = 'done', cursor = n_waypoints, finished_ns = ? "
            "WHERE id = ? AND state = 'running'",
            (time.time_ns(), job_id),
        )

    def mark_failed(self, job_id: int, error: str) -> bool:
        """running -> failed; False if it was not running."""
        return self._update(
            "SET state = 'failed', error = ?, finished_ns = ? WHERE id = ? AND state = 'running'",
            (error, time.time_ns(), job_id),
        )

    def cancel(self, job_id: int) -> tuple[str, dict[str, Any]]:
        """queued | running -> cancelled; returns (the state it had, the job).
        NotFound, or FailedPrecondition if it has already ended."""
        with self._tx() as db:
            state = self._get(db, job_id)["state"]
            if state in _FINAL:
                raise FailedPrecondition(
                    f"job {job_id} is {state}; only queued or running jobs can be cancelled"
                )
            db.execute(
                "UPDATE jobs SET state = 'cancelled', finished_ns = ? WHERE id = ?",
                (time.time_ns(), job_id),
            )
            return state, self._get(db, job_id)

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
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY id DESC LIMIT ?", args
            ).fetchall()
        return [_job(r) for r in rows]

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
                for stmt in _SCHEMA:
                    db.execute(stmt)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise JobStoreError(
                    f"the job database {self.path} has schema version {version}; this "
                    f"agent reads version {SCHEMA_VERSION} (upgrade the agent)"
                )

    def _get(self, db: sqlite3.Connection, job_id: int | None) -> dict[str, Any]:
        row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFound(f"job {job_id} does not exist")
        return _job(row)

    def _one(self, where: str) -> dict[str, Any] | None:
        with self._tx() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE {where}").fetchone()
        return _job(row) if row is not None else None

    def _update(self, sql: str, params: tuple[Any, ...]) -> bool:
        """One conditional UPDATE; True if it changed the job."""
        with self._tx() as db:
            return db.execute(f"UPDATE jobs {sql}", params).rowcount == 1


def _job(row: sqlite3.Row) -> dict[str, Any]:
    job = {k: row[k] for k in row.keys()}  # noqa: SIM118 - sqlite3.Row iterates values
    job["progress"] = row["cursor"] / row["n_waypoints"]
    return job


class JobRunner:
    """Starts the oldest queued job when the RT is ready and no job runs,
    follows it through RT events, and recovers it across RT restarts.

    send(records) pushes command records to the RT all or nothing (False: the
    ring had no room, nothing was sent); next_seq() hands out command sequence
    numbers, and must give consecutive ones to the runner: a job's commands
    carry one run of numbers. All methods may be called from any thread.
    """

    def __init__(
        self,
        store: JobStore,
        send: Callable[[builtins.list[bytes]], bool],
        next_seq: Callable[[], int],
    ) -> None:
        self._store = store
        self._send = send
        self._next_seq = next_seq
        self._lock = threading.Lock()
        running = store.running()
        self._job_id: int | None = running["id"] if running else None
        self._seqs: dict[int, str] = {}  # the running job's command seqs -> what they did
        self._unsent = False  # the running job must be sent again (ring was full)
        self._attempt_counted = False  # its unsent attempt is already counted
        self._clear_for: int | None = None  # a TRAJ_CLEAR still owed to the RT, for this job

    def tick(self, rt_ready: bool) -> None:
        """Send what is owed: a running job's commands after a restart, else the
        next queued job, else a pending TRAJ_CLEAR."""
        with self._lock:
            if not rt_ready:
                return
            if self._job_id is not None:
                if self._unsent:
                    self._resend(self._job_id)
                return
            job = self._store.next_queued()
            if job is None:
                if self._clear_for is not None:
                    self._clear(self._clear_for)
                return
            # recorded as running before anything is sent: an agent that dies in
            # between finds it running (and settles it from the RT's state)
            # instead of queued (and runs it a second time)
            seqs = self._seqs_for(job["id"])
            if not self._store.mark_started(job["id"]):
                return  # cancelled by someone else meanwhile
            self._job_id = job["id"]
            self._clear_for = None  # the job's own commands begin with TRAJ_CLEAR
            sent = self._commands(job["id"], seqs)
            if sent is None:
                self._unsent = True
                self._attempt_counted = True
                return
            self._seqs = sent

    def on_event(self, ev: dict[str, Any]) -> None:
        """Follow one decoded RT event (rtcore.records.Decoder.event)."""
        kind, a, b = ev["kind_id"], ev["a"], ev["b"]
        with self._lock:
            job_id = self._job_id
            if job_id is None:
                return
            if kind == reftask.EV_WAYPOINT_REACHED and a == job_id:
                self._store.advance(job_id, b + 1)
            elif kind == reftask.EV_TRAJ_DONE and a == job_id:
                self._store.mark_done(job_id)
                self._forget()
            elif kind == layout.EV_CMD_ACK and b < 0 and a in self._seqs:
                name = errno.errorcode.get(-b, str(b))
                self._store.mark_failed(
                    job_id,
                    f"{self._seqs[a]} (command {a}) refused by the RT task: "
                    f"{name} ({os.strerror(-b)})",
                )
                self._forget()
                # its START may still have run on the waypoints that were accepted
                self._clear(job_id)

    def on_rt_restarted(self, state: np.void | None) -> None:
        """A new RT process is running with `state`, the reftask state it
        restored from a checkpoint (None: it started fresh). The running job
        goes on from the restored cursor (its recorded progress never moves
        back), ends if the checkpoint saw it end, else is sent again."""
        with self._lock:
            if state is None:
                restored_job, traj, cursor = 0, _TRAJ["idle"], 0
            else:
                restored_job = int(state["job_id"])
                traj, cursor = int(state["traj_state"]), int(state["cursor"])
            job_id = self._job_id
            if job_id is None:
                if traj == _TRAJ["running"]:
                    # a job that has since ended (cancelled, done) would run again
                    self._clear(restored_job)
                return
            if restored_job == job_id and traj == _TRAJ["running"]:
                self._store.advance(job_id, cursor)
            elif restored_job == job_id and traj == _TRAJ["done"]:
                self._store.mark_done(job_id)
                self._forget()
            else:
                # the checkpoint predates this job's start, so running it from
                # the beginning does not run any part of it twice
                self._seqs = {}
                self._unsent = True
                self._resend(job_id)

    def cancel(self, job_id: int) -> dict[str, Any]:
        """Cancel a queued or running job (a running one is stopped with
        TRAJ_CLEAR); NotFound, or FailedPrecondition if it has ended."""
        with self._lock:
            previous, job = self._store.cancel(job_id)
            if previous == "running":
                self._forget()
                self._clear(job_id)
            return job

    def _seqs_for(self, job_id: int) -> list[int]:
        """Consecutive command numbers for the job's clear, appends and start."""
        seqs = [self._next_seq() for _ in range(self._store.get(job_id)["n_waypoints"] + 2)]
        if seqs != builtins.list(range(seqs[0], seqs[0] + len(seqs))):
            raise RuntimeError(f"next_seq() gave {seqs}; a job's commands need consecutive seqs")
        return seqs

    def _commands(self, job_id: int, seqs: list[int] | None = None) -> dict[int, str] | None:
        """Send the job's trajectory; its seqs -> command names, None if the
        ring had no room."""
        waypoints = self._store.waypoints(job_id)
        seqs = seqs or self._seqs_for(job_id)
        if not self._send(reftask.trajectory_commands(job_id, waypoints, seqs[0])):
            return None
        names = ["TRAJ_CLEAR", *(f"TRAJ_APPEND of waypoint {i}" for i in range(len(waypoints)))]
        return dict(zip(seqs, [*names, "TRAJ_START"], strict=True))

    def _resend(self, job_id: int) -> None:
        sent = self._commands(job_id)
        if sent is not None:
            if not self._attempt_counted:
                self._store.mark_resent(job_id)
            self._attempt_counted = False
            self._seqs = sent
            self._unsent = False

    def _clear(self, job_id: int) -> None:
        """Stop the RT's trajectory; owed until the ring has room."""
        cmd = records.command(reftask.CMD_TRAJ_CLEAR, seq=self._next_seq(), job_id=job_id)
        self._clear_for = None if self._send([cmd]) else job_id

    def _forget(self) -> None:
        self._job_id = None
        self._seqs = {}
        self._unsent = False
