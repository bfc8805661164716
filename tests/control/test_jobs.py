"""JobStore on a real SQLite file and JobRunner driven by hand with synthetic
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
from control.jobs.jobs import JobRunner, JobStore, JobStoreError
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


@pytest.fixture
def runner(store, ring):
    return JobRunner(store, ring.send, itertools.count(1).__next__)


def ev(kind_id: int, a: int, b: int) -> dict[str, Any]:
    return {"kind": str(kind_id), "kind_id": kind_id, "a": a, "b": b, "cycle": 0, "ts_ns": 0}


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
    runner = JobRunner(store, ring.send, itertools.count(1).__next__)
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
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1


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
    runner = JobRunner(store, ring.send, itertools.count(1, 2).__next__)
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
    runner = JobRunner(store, ring.send, itertools.count(1).__next__)
    store.submit("a", WPS)
    runner.tick(True)
    store.close()

    store = JobStore(path)
    runner = JobRunner(store, ring.send, itertools.count(100).__next__)
    runner.tick(True)
    assert len(ring.batches) == 1
    run_to_done(runner, 1)
    assert store.get(1)["state"] == "done" and store.get(1)["cursor"] == 3
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
    runner = JobRunner(store, send, itertools.count(1).__next__)
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
