"""The job state machine driven by hand (pure: same events, same bytes),
JobStore on a real SQLite file and JobRunner driven by hand with synthetic
RT events (deterministic), then once against a real RT process."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import sqlite3
import threading
import time
from typing import Any

import numpy as np
import pytest

from control.errors import FailedPrecondition, InvalidArgument, NotFound
from control.jobs import machine
from control.jobs.machine import IllegalTransition
from control.jobs.runner import JobRunner, checkpoint_position
from control.jobs.store import SCHEMA_VERSION, JobStore, JobStoreError
from rtcore import _core, layout, reftask
from rtcore.records import Drainer
from tests.conftest import wait_for
from tests.rtcore.rtproc import open_when_ready, status

WPS = [(0.5, [0.1, 0.2]), (1.0, [0.3, 0.4]), (1.5, [0.5, 0.6])]
CLEAR, APPEND, START = reftask.CMD_TRAJ_CLEAR, reftask.CMD_TRAJ_APPEND, reftask.CMD_TRAJ_START


class FakeRing:
    """The runner's send(): records what it accepted, refuses while `full`."""

    def __init__(self) -> None:
        self.full = False
        self.batches: list[list[dict[str, Any]]] = []

    def send(self, recs: list[bytes]) -> bool:
        if self.full:
            return False
        batch = []
        for r in recs:
            rec = np.frombuffer(r, dtype=layout.CMD_REC)[0]
            batch.append(
                {
                    "seq": int(rec["seq"]),
                    "kind": int(rec["kind"]),
                    "job_id": int(rec["job_id"]),
                    "args": [float(x) for x in rec["args"][: int(rec["nargs"])]],
                }
            )
        self.batches.append(batch)
        return True

    def kinds(self, batch: int = -1) -> list[int]:
        return [c["kind"] for c in self.batches[batch]]


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "jobs.db")
    yield s
    s.close()


@pytest.fixture
def ring():
    return FakeRing()


class FakeCheckpoints:
    """The runner's checkpoint(): an RT that checkpoints between any two looks
    (each call a newer seq), or stands still at `seq` once `frozen`."""

    def __init__(self, epoch: int = 1, seq: int = 100) -> None:
        self.epoch, self.seq, self.frozen = epoch, seq, False

    def __call__(self) -> tuple[int, int]:
        if not self.frozen:
            self.seq += 1
        return self.epoch, self.seq


@pytest.fixture
def ckpt():
    return FakeCheckpoints()


@pytest.fixture
def runner(store, ring, ckpt):
    return JobRunner(store, ring.send, itertools.count(1).__next__, ckpt)


def ev(kind_id: int, a: int, b: int) -> dict[str, Any]:
    return {
        "kind": str(kind_id),
        "kind_id": kind_id,
        "a": a,
        "b": b,
        "cycle": 0,
        "ts_ns": 0,
        "time_ns": time.time_ns(),
    }


def ack(seq: int, result: int = 0) -> dict[str, Any]:
    return ev(layout.EV_CMD_ACK, seq, result)


def reached(job_id: int, index: int) -> dict[str, Any]:
    return ev(reftask.EV_WAYPOINT_REACHED, job_id, index)


def done(job_id: int) -> dict[str, Any]:
    return ev(reftask.EV_TRAJ_DONE, job_id, 1234)


def rt_state(job_id: int, traj: str, cursor: int = 0) -> np.void:
    """A reftask state as the new RT process would have restored it."""
    raw = np.zeros((), dtype=reftask.STATE)
    codes = {name: code for code, name in reftask.TRAJ_STATES.items()}
    raw["version"], raw["n_joints"] = 1, 2
    raw["job_id"], raw["traj_state"] = job_id, codes[traj]
    raw["cursor"], raw["n_waypoints"] = cursor, len(WPS)
    return reftask.decode_state(raw.tobytes())


def run_to_done(runner: JobRunner, job_id: int) -> None:
    for i in range(len(WPS)):
        runner.on_event(reached(job_id, i))
    runner.on_event(done(job_id))


# ---- the state machine, by hand ----------------------------------------------

MWPS = tuple((t, tuple(q)) for t, q in WPS)


def script() -> list[machine.Event]:
    """One job's life with every kind of event: started, sent, an accepted
    ack, waypoints, an RT restart that resumes it, one that predates it (so
    it is sent again), done."""
    return [
        machine.Submitted(1, 1_000, "pick", MWPS),
        machine.Started(1, 2_000, epoch=1, ckpt_seq=10),
        machine.CommandsSent(1, 2_001, first_seq=50, epoch=1, ckpt_seq=10),
        machine.CommandAcked(1, 2_002, seq=50, result=0),
        machine.WaypointReached(1, 3_000, index=0, epoch=1, ckpt_seq=12),
        machine.RtRestarted(1, 4_000, 1, 13, restored_job=1, traj="running", cursor=2),
        machine.RtRestarted(1, 5_000, 2, 3, restored_job=0, traj="idle", cursor=0),
        machine.CommandsSent(1, 5_001, first_seq=60, epoch=2, ckpt_seq=3),
        machine.WaypointReached(1, 6_000, index=2, epoch=2, ckpt_seq=9),
        machine.Done(1, 7_000, epoch=2, ckpt_seq=10),
    ]


def replay(events: list[machine.Event]) -> list[bytes]:
    job: machine.Job | None = None
    states = []
    for e in events:
        job = machine.apply(job, e)
        states.append(machine.encode(job))
    return states


def test_machine_same_events_same_job_byte_for_byte():
    first = replay(script())
    time.sleep(0.01)
    assert replay(script()) == first, "a transition read something besides its event"
    job = machine.decode(first[-1])
    assert machine.encode(job) == first[-1]
    assert (job.state, job.cursor, job.attempts, job.cmd_seq) == ("done", 3, 2, 60)
    assert (job.epoch, job.ckpt_seq) == (2, 10), "progress: the checkpoint it was learnt at"
    assert (job.started_ns, job.finished_ns) == (2_000, 7_000), "times come from the events"
    resumed = machine.decode(first[5])
    assert (resumed.epoch, resumed.ckpt_seq, resumed.cursor) == (1, 13, 2)


def test_machine_duplicate_events_change_nothing():
    job: machine.Job | None = None
    for e in script():
        job = machine.apply(job, e)
        again = machine.apply(job, e)
        assert again is job, f"{e} applied twice changed the job"
    assert job is not None
    # what the RT may still say about a job that has ended
    late = [
        machine.Done(1, 9_000, 3, 1),
        machine.WaypointReached(1, 9_000, 0, 3, 1),
        machine.CommandAcked(1, 9_000, seq=61, result=-errno.EINVAL),
        machine.CommandsSent(1, 9_000, first_seq=70, epoch=3, ckpt_seq=1),
        machine.RtRestarted(1, 9_000, 3, 1, restored_job=1, traj="running", cursor=0),
    ]
    for e in late:
        assert machine.apply(job, e) is job, e
    cancelled = machine.apply(machine.apply(None, script()[0]), machine.Cancelled(1, 8_000))
    assert machine.apply(cancelled, machine.Cancelled(1, 8_000)) is cancelled


@pytest.mark.parametrize(
    ("before", "event", "error"),
    [
        (0, machine.Started(1, 1, 0, 0), "job 1 does not exist"),
        (1, machine.Submitted(1, 1_000, "other", MWPS), "job 1 already exists"),
        (1, machine.WaypointReached(1, 5, 0, 1, 1), "job 1 is queued; WaypointReached needs"),
        (1, machine.Done(1, 5, 1, 1), "job 1 is queued; Done needs it running"),
        (2, machine.Started(1, 9_999, 1, 11), "job 1 is running; only a queued job can start"),
        (3, machine.CommandsSent(1, 5, 49, 1, 11), "seq 49 sent after those from 50"),
        (len(script()), machine.Cancelled(1, 8_000), "job 1 is done; only queued or running"),
        (len(script()), machine.Started(1, 8_000, 1, 11), "job 1 is done; only a queued job"),
    ],
)
def test_machine_refuses_illegal_transitions(before, event, error):
    job: machine.Job | None = None
    for e in script()[:before]:
        job = machine.apply(job, e)
    with pytest.raises(IllegalTransition, match=error):
        machine.apply(job, event)
    assert issubclass(IllegalTransition, FailedPrecondition), "gRPC: FAILED_PRECONDITION"


def test_machine_a_checkpoint_before_the_attempt_never_holds_it():
    """The restored checkpoint's position, not the job id it names, says whether
    it holds this attempt: a job id may name an older job (a job database moved
    aside, another node's ids)."""
    job = None
    for e in script()[:3]:  # sent after checkpoint (1, 10)
        job = machine.apply(job, e)
    assert job is not None

    def restart(epoch: int, seq: int, traj: str = "running") -> machine.RtRestarted:
        return machine.RtRestarted(1, 4_000, epoch, seq, restored_job=1, traj=traj, cursor=2)

    for older in (restart(1, 9), restart(1, 10), restart(0, 99), restart(1, 10, "done")):
        assert not machine.holds_attempt(job, older)
        assert machine.apply(job, older) is job, older
    for newer in (restart(1, 11), restart(2, 1)):
        assert machine.holds_attempt(job, newer)
        assert machine.apply(job, newer).cursor == 2
    assert not machine.holds_attempt(job, restart(1, 11, "loading"))
    assert machine.apply(job, restart(1, 11, "done")).state == "done"


# ---- JobStore ----------------------------------------------------------------


def test_submit_get_list(store):
    a = store.submit("a", WPS)
    b = store.submit("b", [(1, [0])])
    assert a["id"] == 1 and b["id"] == 2
    assert a["state"] == "queued" and a["n_waypoints"] == 3 and a["cursor"] == 0
    assert a["progress"] == 0.0 and a["attempts"] == 0 and a["error"] is None
    assert a["started_ns"] is None and a["finished_ns"] is None
    assert abs(a["submitted_ns"] - time.time_ns()) < 10e9
    assert store.get(2) == b
    assert store.waypoints(1) == WPS and store.waypoints(2) == [(1.0, [0.0])]
    assert [j["id"] for j in store.list()] == [2, 1]
    assert [j["id"] for j in store.list(limit=1)] == [2]
    assert store.list(state="running") == []
    with pytest.raises(NotFound, match="job 3 does not exist"):
        store.get(3)
    with pytest.raises(InvalidArgument, match="state: 'runing' is not one of queued"):
        store.list(state="runing")
    with pytest.raises(InvalidArgument, match="limit"):
        store.list(limit=0)


def test_submit_refuses_invalid_jobs(store):
    with pytest.raises(InvalidArgument, match=r"waypoints\[1\]\.t"):
        store.submit("x", [(1.0, [0.0]), (0.5, [0.0])])
    with pytest.raises(InvalidArgument, match="name"):
        store.submit("", WPS)
    assert store.list() == []


def test_jobs_and_states_survive_reopening(tmp_path, ring):
    path = tmp_path / "jobs.db"
    store = JobStore(path)
    runner = JobRunner(store, ring.send, itertools.count(1).__next__, FakeCheckpoints())
    for name in ("done", "failed", "cancelled", "running", "queued"):
        store.submit(name, WPS)
    runner.tick(True)
    run_to_done(runner, 1)
    runner.tick(True)
    runner.on_event(ack(ring.batches[-1][1]["seq"], -errno.EINVAL))
    runner.cancel(3)
    runner.tick(True)
    runner.on_event(reached(4, 0))
    before = store.list()
    store.close()

    store = JobStore(path)
    assert store.list() == before
    assert [j["state"] for j in reversed(before)] == [
        "done",
        "failed",
        "cancelled",
        "running",
        "queued",
    ]
    assert store.get(4)["cursor"] == 1 and store.get(4)["attempts"] == 1
    assert "EINVAL" in store.get(2)["error"]
    assert store.submit("next", WPS)["id"] == 6
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_ids_are_never_reused(tmp_path):
    path = tmp_path / "jobs.db"
    store = JobStore(path)
    store.submit("a", WPS)
    store.submit("b", WPS)
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM jobs WHERE id = 2")
    store = JobStore(path)
    assert store.submit("c", WPS)["id"] == 3, "an RT job_id must not name two jobs"
    store.close()


def test_unusable_database_files(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(JobStoreError, match="move the file aside"):
        JobStore(garbage)
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 9")
    with pytest.raises(JobStoreError, match="schema version 9"):
        JobStore(newer)


def test_a_version_1_database_is_migrated(tmp_path):
    path = tmp_path / "jobs.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, "
            "state TEXT NOT NULL, waypoints TEXT NOT NULL, n_waypoints INTEGER NOT NULL, "
            "cursor INTEGER NOT NULL DEFAULT 0, submitted_ns INTEGER NOT NULL, "
            "started_ns INTEGER, finished_ns INTEGER, error TEXT, "
            "attempts INTEGER NOT NULL DEFAULT 0)"
        )
        db.execute(
            "INSERT INTO jobs (name, state, waypoints, n_waypoints, cursor, submitted_ns, "
            "started_ns, attempts) VALUES ('old', 'running', '[[0.5, [0.1]]]', 1, 0, 5, 6, 1)"
        )
        db.execute("PRAGMA user_version = 1")
    store = JobStore(path)
    old = store.get(1)
    assert (old["state"], old["attempts"], old["epoch"], old["ckpt_seq"]) == ("running", 1, 0, 0)
    assert store.waypoints(1) == [(0.5, [0.1])]
    assert store.apply(machine.Done(1, 7, 1, 3)) and store.get(1)["state"] == "done"
    assert store.submit("new", WPS)["id"] == 2
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_store_applies_each_event_once(store):
    store.submit("a", WPS)
    started = machine.Started(1, time.time_ns(), 1, 10)
    assert store.apply(started) is True
    assert store.apply(started) is False, "a duplicate writes nothing"
    done = machine.Done(1, time.time_ns(), 1, 12)
    assert store.apply(done) is True
    finished = store.get(1)
    assert store.apply(done) is False and store.get(1) == finished
    with pytest.raises(NotFound, match="job 2 does not exist"):
        store.apply(machine.Done(2, 1, 1, 1))
    with pytest.raises(IllegalTransition, match="only queued or running"):
        store.cancel(1, time.time_ns())
    assert store.get(1) == finished


# ---- JobRunner: the happy path, duplicates, order -------------------------------


def test_happy_path(store, ring, runner):
    job = store.submit("pick", WPS)
    runner.tick(False)
    assert ring.batches == [] and store.get(1)["state"] == "queued", "RT not ready"
    runner.tick(True)
    assert ring.kinds() == [CLEAR, APPEND, APPEND, APPEND, START]
    assert {c["job_id"] for c in ring.batches[0]} == {job["id"]}
    assert [c["seq"] for c in ring.batches[0]] == [1, 2, 3, 4, 5]
    assert ring.batches[0][3]["args"] == [1.5, 0.5, 0.6]
    running = store.get(1)
    assert running["state"] == "running" and running["attempts"] == 1
    assert running["started_ns"] is not None

    for seq in range(1, 6):
        runner.on_event(ack(seq))
    runner.on_event(ev(reftask.EV_TRAJ_STARTED, 1, 3))
    runner.on_event(ev(layout.EV_ADOPTED, 7, 7))
    assert store.get(1)["state"] == "running" and store.get(1)["cursor"] == 0
    runner.on_event(reached(1, 0))
    assert store.get(1)["cursor"] == 1 and store.get(1)["progress"] == pytest.approx(1 / 3)
    runner.on_event(reached(1, 1))
    runner.on_event(reached(1, 2))
    assert store.get(1)["cursor"] == 3 and store.get(1)["state"] == "running"
    runner.on_event(done(1))
    finished = store.get(1)
    assert finished["state"] == "done" and finished["progress"] == 1.0
    assert finished["finished_ns"] >= finished["started_ns"] >= finished["submitted_ns"]
    runner.tick(True)
    assert len(ring.batches) == 1, "nothing more to send"


def test_duplicate_events_change_nothing(store, ring, runner):
    store.submit("a", WPS)
    store.submit("b", WPS)
    runner.tick(True)
    runner.on_event(reached(1, 1))
    runner.on_event(reached(1, 1))
    runner.on_event(reached(1, 0))
    assert store.get(1)["cursor"] == 2, "the cursor never moves back"
    runner.on_event(reached(1, 7))
    assert store.get(1)["cursor"] == 3, "nor past the end"
    runner.on_event(done(1))
    first = store.get(1)
    runner.on_event(done(1))
    runner.on_event(reached(1, 0))
    assert store.get(1) == first

    runner.tick(True)
    assert store.get(2)["state"] == "running"
    runner.on_event(done(1))
    runner.on_event(reached(1, 2))
    assert store.get(2)["state"] == "running" and store.get(2)["cursor"] == 0, (
        "a late event of job 1 does not touch job 2"
    )
    runner.on_event(done(2))
    runner.on_event(done(2))
    assert store.get(2)["state"] == "done" and store.get(2)["attempts"] == 1


def test_oldest_queued_first_one_at_a_time(store, ring, runner):
    for name in "abc":
        store.submit(name, WPS)
    order = []
    for _ in range(3):
        runner.tick(True)
        runner.tick(True)
        (job,) = store.list(state="running")
        order.append(job["name"])
        assert {c["job_id"] for c in ring.batches[-1]} == {job["id"]}
        run_to_done(runner, job["id"])
    assert order == ["a", "b", "c"] and len(ring.batches) == 3
    assert [j["state"] for j in store.list()] == ["done"] * 3


# ---- cancel ----------------------------------------------------------------------


def test_cancel_in_each_state(store, ring, runner):
    for name in ("queued", "running", "done"):
        store.submit(name, WPS)
    assert runner.cancel(1)["state"] == "cancelled"
    runner.tick(True)
    assert store.get(2)["state"] == "running" and len(ring.batches) == 1

    assert runner.cancel(2)["state"] == "cancelled"
    assert ring.kinds() == [CLEAR], "a running job is stopped on the RT"
    runner.on_event(reached(2, 0))
    runner.on_event(done(2))
    assert store.get(2)["state"] == "cancelled" and store.get(2)["cursor"] == 0

    runner.tick(True)
    run_to_done(runner, 3)
    runner.on_event(ack(ring.batches[-1][0]["seq"] + 1, -errno.EBUSY))
    assert store.get(3)["state"] == "done"
    for job_id, state in ((1, "cancelled"), (2, "cancelled"), (3, "done")):
        with pytest.raises(FailedPrecondition, match=f"job {job_id} is {state}"):
            runner.cancel(job_id)
    with pytest.raises(NotFound):
        runner.cancel(99)


def test_cancel_with_a_full_ring_owes_the_clear(store, ring, runner):
    store.submit("a", WPS)
    runner.tick(True)
    ring.full = True
    assert runner.cancel(1)["state"] == "cancelled"
    runner.tick(True)
    ring.full = False
    runner.tick(False)
    assert len(ring.batches) == 1
    runner.tick(True)
    assert ring.kinds() == [CLEAR] and ring.batches[-1][0]["job_id"] == 1
    runner.tick(True)
    assert len(ring.batches) == 2, "sent once"


def test_starting_a_job_settles_an_owed_clear(store, ring, runner):
    store.submit("a", WPS)
    runner.tick(True)
    ring.full = True
    runner.cancel(1)
    store.submit("b", WPS)
    ring.full = False
    runner.tick(True)
    assert ring.kinds() == [CLEAR, APPEND, APPEND, APPEND, START]
    run_to_done(runner, 2)
    runner.tick(True)
    assert len(ring.batches) == 2, "job b's own TRAJ_CLEAR stopped job a"


# ---- failures -------------------------------------------------------------------


def test_a_refused_command_fails_the_job(store, ring, runner):
    store.submit("a", WPS)
    store.submit("b", WPS)
    runner.tick(True)
    seqs = [c["seq"] for c in ring.batches[0]]
    runner.on_event(ack(seqs[0]))
    runner.on_event(ack(999, -errno.EINVAL))
    assert store.get(1)["state"] == "running", "not one of this job's commands"
    runner.on_event(ack(seqs[2], -errno.ENOSPC))
    failed = store.get(1)
    assert failed["state"] == "failed" and failed["finished_ns"] is not None
    assert failed["error"] == (
        f"TRAJ_APPEND of waypoint 1 (command {seqs[2]}) refused by the RT task: "
        "ENOSPC (No space left on device)"
    )
    assert ring.kinds() == [CLEAR], "the waypoints it did take must not run"
    runner.on_event(ack(seqs[4], -errno.EINVAL))
    runner.on_event(done(1))
    assert store.get(1) == failed
    runner.tick(True)
    assert store.get(2)["state"] == "running"


def test_a_full_ring_is_retried_without_sending_twice(store, ring, runner):
    store.submit("a", WPS)
    ring.full = True
    runner.tick(True)
    runner.tick(True)
    # recorded as running (one attempt) before sending, so a crash cannot run it twice
    assert store.get(1)["state"] == "running" and store.get(1)["attempts"] == 1
    assert ring.batches == []
    ring.full = False
    runner.tick(True)
    runner.tick(True)
    assert len(ring.batches) == 1
    assert store.get(1)["state"] == "running" and store.get(1)["attempts"] == 1
    seqs = [c["seq"] for c in ring.batches[0]]
    assert seqs == list(range(seqs[0], seqs[0] + 5))


def test_next_seq_must_hand_out_runs(store, ring):
    runner = JobRunner(store, ring.send, itertools.count(1, 2).__next__, FakeCheckpoints())
    store.submit("a", WPS)
    with pytest.raises(RuntimeError, match="consecutive"):
        runner.tick(True)
    assert ring.batches == [] and store.get(1)["state"] == "queued"


# ---- RT restarts -----------------------------------------------------------------


def test_restart_restored_running_keeps_the_job(store, ring, runner):
    store.submit("a", WPS)
    runner.tick(True)
    runner.on_event(reached(1, 0))
    runner.on_rt_restarted(rt_state(1, "running", cursor=2))
    job = store.get(1)
    assert job["state"] == "running" and job["cursor"] == 2 and job["attempts"] == 1
    runner.on_rt_restarted(rt_state(1, "running", cursor=1))
    assert store.get(1)["cursor"] == 2, "an older checkpoint does not move progress back"
    runner.tick(True)
    assert len(ring.batches) == 1, "the RT goes on from its cursor: nothing resent"
    runner.on_event(reached(1, 2))
    runner.on_event(done(1))
    assert store.get(1)["state"] == "done" and store.get(1)["attempts"] == 1


def test_restart_restored_done_finishes_the_job(store, ring, runner):
    store.submit("a", WPS)
    store.submit("b", WPS)
    runner.tick(True)
    runner.on_rt_restarted(rt_state(1, "done", cursor=3))
    assert store.get(1)["state"] == "done" and store.get(1)["cursor"] == 3
    assert len(ring.batches) == 1
    runner.on_event(done(1))
    assert store.get(1)["attempts"] == 1
    runner.tick(True)
    assert store.get(2)["state"] == "running"


@pytest.mark.parametrize(
    "state",
    [None, "other_job_running", "other_job_done", "idle"],
)
def test_restart_from_before_the_start_resends_once(store, ring, runner, state):
    restored = {
        None: None,
        "other_job_running": rt_state(7, "running", cursor=1),
        "other_job_done": rt_state(7, "done", cursor=3),
        "idle": rt_state(0, "idle"),
    }[state]
    store.submit("a", WPS)
    runner.tick(True)
    first = [c["seq"] for c in ring.batches[0]]
    runner.on_rt_restarted(restored)
    assert len(ring.batches) == 2
    assert ring.kinds() == [CLEAR, APPEND, APPEND, APPEND, START]
    assert {c["job_id"] for c in ring.batches[1]} == {1}
    assert store.get(1)["state"] == "running" and store.get(1)["attempts"] == 2
    runner.tick(True)
    runner.tick(True)
    assert len(ring.batches) == 2, "resent exactly once"
    runner.on_event(ack(first[1], -errno.EBUSY))
    assert store.get(1)["state"] == "running", "an ack of the superseded attempt"
    run_to_done(runner, 1)
    assert store.get(1)["state"] == "done" and store.get(1)["attempts"] == 2


def test_restart_resend_waits_for_room_in_the_ring(store, ring, runner):
    store.submit("a", WPS)
    runner.tick(True)
    ring.full = True
    runner.on_rt_restarted(None)
    assert store.get(1)["attempts"] == 1
    runner.tick(True)
    ring.full = False
    runner.tick(False)
    assert len(ring.batches) == 1
    runner.tick(True)
    runner.tick(True)
    assert len(ring.batches) == 2 and store.get(1)["attempts"] == 2


def test_restart_that_revives_an_ended_job_stops_it(store, ring, runner):
    store.submit("a", WPS)
    runner.tick(True)
    runner.cancel(1)
    runner.on_rt_restarted(rt_state(1, "running", cursor=1))
    assert ring.kinds() == [CLEAR] and len(ring.batches) == 3
    assert store.get(1)["state"] == "cancelled"
    runner.on_rt_restarted(rt_state(1, "done", cursor=3))
    runner.on_rt_restarted(None)
    assert len(ring.batches) == 3


def test_a_new_runner_picks_up_the_running_job(tmp_path, ring):
    path = tmp_path / "jobs.db"
    store = JobStore(path)
    runner = JobRunner(store, ring.send, itertools.count(1).__next__, FakeCheckpoints())
    store.submit("a", WPS)
    runner.tick(True)
    store.close()

    store = JobStore(path)
    runner = JobRunner(store, ring.send, itertools.count(100).__next__, FakeCheckpoints())
    runner.tick(True)
    assert len(ring.batches) == 1
    run_to_done(runner, 1)
    assert store.get(1)["state"] == "done" and store.get(1)["cursor"] == 3
    store.close()


def test_progress_is_recorded_with_the_checkpoint_it_was_learnt_at(store, ring, runner, ckpt):
    store.submit("a", WPS)
    ckpt.frozen, ckpt.seq = True, 40
    runner.tick(True)
    assert machine.decode(machine.encode(store.job(1))).attempt_seq == 40
    ckpt.seq = 42
    runner.on_event(reached(1, 0))
    job = store.get(1)
    assert (job["epoch"], job["ckpt_seq"], job["cursor"]) == (1, 42, 1)
    ckpt.seq = 45
    runner.on_event(reached(1, 0))
    assert store.get(1)["ckpt_seq"] == 42, "a repeated waypoint records nothing"
    runner.on_rt_restarted(rt_state(1, "running", cursor=2))
    job = store.get(1)
    assert (job["epoch"], job["ckpt_seq"], job["cursor"]) == (1, 45, 2)


def test_a_restored_job_id_from_before_the_attempt_is_not_this_job(tmp_path, ring, ckpt):
    """The job database was moved aside: job 1 is a new job, but the RT's
    checkpoint (older than the new job's start) names the old job 1 running."""
    store = JobStore(tmp_path / "jobs.db")
    runner = JobRunner(store, ring.send, itertools.count(1).__next__, ckpt)
    store.submit("new", WPS)
    ckpt.frozen, ckpt.seq = True, 500
    runner.tick(True)
    ckpt.seq = 480  # the RT came back from a checkpoint older than the job's start
    runner.on_rt_restarted(rt_state(1, "running", cursor=2))
    job = store.get(1)
    assert len(ring.batches) == 2 and ring.kinds() == [CLEAR, APPEND, APPEND, APPEND, START]
    assert job["state"] == "running" and job["cursor"] == 0 and job["attempts"] == 2
    ckpt.seq = 470
    runner.on_rt_restarted(rt_state(1, "done", cursor=3))
    assert store.get(1)["state"] == "running", "the old job 1 ended, not this one"
    assert store.get(1)["attempts"] == 3
    store.close()


def test_a_job_cancelled_elsewhere_is_stopped_on_the_rt(store, ring, runner):
    """A state that arrives from elsewhere (the cluster) is read at the next step."""
    store.submit("a", WPS)
    store.submit("b", WPS)
    runner.tick(True)
    store.apply(machine.Cancelled(1, time.time_ns()))
    runner.on_event(reached(1, 0))
    assert ring.kinds() == [CLEAR] and ring.batches[-1][0]["job_id"] == 1
    assert store.get(1)["cursor"] == 0
    runner.tick(True)
    assert store.get(2)["state"] == "running" and ring.batches[-1][0]["job_id"] == 2


def test_a_refused_command_fails_the_job_after_the_runner_restarts(tmp_path, ring):
    path = tmp_path / "jobs.db"
    store = JobStore(path)
    JobRunner(store, ring.send, itertools.count(1).__next__, FakeCheckpoints()).tick(True)
    store.submit("a", WPS)
    JobRunner(store, ring.send, itertools.count(1).__next__, FakeCheckpoints()).tick(True)
    seqs = [c["seq"] for c in ring.batches[0]]
    store.close()

    store = JobStore(path)
    runner = JobRunner(store, ring.send, itertools.count(100).__next__, FakeCheckpoints())
    runner.on_event(ack(seqs[-1], -errno.EBUSY))
    failed = store.get(1)
    assert failed["state"] == "failed" and failed["error"].startswith(
        f"TRAJ_START (command {seqs[-1]}) refused by the RT task: EBUSY"
    )
    assert ring.kinds() == [CLEAR]
    store.close()


# ---- threads ---------------------------------------------------------------------


def test_concurrent_submit_cancel_and_drain(store, ring, runner):
    """gRPC threads submit and cancel while the drainer thread ticks and plays
    the RT: every job ends exactly once, never two running at a time."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def drainer() -> None:
        try:
            while not stop.is_set() or store.list(state="queued", limit=1):
                runner.tick(True)
                running = store.list(state="running")
                assert len(running) <= 1
                if running:
                    run_to_done(runner, running[0]["id"])
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    def client(k: int) -> None:
        for i in range(15):
            job = store.submit(f"c{k}-{i}", WPS)
            if i % 3 == 0:
                with contextlib.suppress(FailedPrecondition):
                    runner.cancel(job["id"])

    thread = threading.Thread(target=drainer)
    thread.start()
    clients = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    stop.set()
    thread.join(timeout=30)
    assert not errors
    jobs = store.list(limit=1000)
    assert len(jobs) == 60
    assert {j["state"] for j in jobs} <= {"done", "cancelled"}
    assert sum(j["state"] == "cancelled" for j in jobs) >= 1
    done_jobs = [j for j in jobs if j["state"] == "done"]
    assert all(j["attempts"] == 1 and j["cursor"] == 3 for j in done_jobs)
    started = [b[0]["job_id"] for b in ring.batches if len(b) > 1]
    assert len(started) == len(set(started)), "no job was sent twice"


# ---- against a real RT process ---------------------------------------------------


def test_job_runs_on_a_real_rt_process(spawn, shm_name, tmp_path):
    cpu = str(max(os.sched_getaffinity(0)))
    proc = spawn.rt(shm_name, "--cpus", cpu, "--actuate-without-lease")
    seg = open_when_ready(shm_name, proc)
    writer = _core.RingWriter(seg.buf, "cmd")
    drainer = Drainer(seg.buf)

    def send(recs: list[bytes]) -> bool:
        head, tail, _, _, cap = _core.ring_counters(seg.buf, "cmd")
        if cap - (head - tail) < len(recs):
            return False
        return all(writer.push(r) for r in recs)

    joints = 6  # the built-in task's default
    store = JobStore(tmp_path / "jobs.db")
    runner = JobRunner(store, send, itertools.count(1).__next__, lambda: checkpoint_position(seg))
    waypoints = [(0.1 * (i + 1), [0.02 * (i + 1)] * joints) for i in range(3)]
    job = store.submit("real", waypoints)
    events: list[dict[str, Any]] = []

    def finished() -> bool:
        for e in drainer.drain("event"):
            events.append(e)
            runner.on_event(e)
        runner.tick(True)
        return store.get(job["id"])["state"] != "running" and bool(store.get(job["id"])["attempts"])

    wait_for(finished, timeout=15, what="the job to finish on the RT")
    time.sleep(0.1)
    for e in drainer.drain_all("event"):
        events.append(e)
        runner.on_event(e)
    final = store.get(job["id"])
    assert final["state"] == "done", final
    assert final["cursor"] == 3 and final["attempts"] == 1 and final["error"] is None
    assert [e["a"] for e in events if e["kind_id"] == reftask.EV_TRAJ_DONE] == [job["id"]]
    assert [e["b"] for e in events if e["kind_id"] == reftask.EV_WAYPOINT_REACHED] == [0, 1, 2]
    acks = [e for e in events if e["kind"] == "command_ack"]
    assert [(e["a"], e["b"]) for e in acks] == [(s, 0) for s in range(1, 6)]
    assert status(seg)["cmds_applied"] == 5
    store.close()
    seg.close()
