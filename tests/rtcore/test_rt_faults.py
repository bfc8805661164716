"""What a task sees and what is recorded when things go wrong: a failing
step is logged once, then at most once a second with a repeat count; the
step after a missed deadline is told how many periods were skipped."""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from rtcore import layout
from rtcore.records import Drainer
from rtcore.segment import Segment
from tests.rtcore.rtproc import finish, open_when_ready, status

CPU = str(max(os.sched_getaffinity(0)))
EIO = 5
# tests/rtcore/tasks/burn_task.c, burn_state
SKIP = np.dtype([("cycle", "<u8"), ("skipped", "<u8"), ("dt", "<f8")])
BURN_STATE = np.dtype(
    [
        ("steps", "<u8"),
        ("checksum", "<u8"),
        ("outputs", "<u8"),
        ("fails", "<u8"),
        ("fail_from", "<u8"),
        ("dt_wrong", "<u8"),
        ("burn_next", "<u8"),
        ("burn_us", "<u4"),
        ("n_burn", "<u4"),
        ("n_skips", "<u4"),
        ("_pad0", "<u4"),
        ("skips", SKIP, (16,)),
        ("burn", "<u8", (64,)),
    ]
)


def burn_state(seg: Segment) -> np.void:
    meta, data = seg.newest_checkpoint()
    assert len(data) == BURN_STATE.itemsize, "burn_state and BURN_STATE differ"
    return np.frombuffer(data, dtype=BURN_STATE)[0]


def test_failing_step_is_logged_once_then_at_most_once_a_second(spawn, shm_name, build_task):
    fail_from = 50
    proc = spawn.rt(
        shm_name,
        "--cpus",
        CPU,
        "--task",
        build_task("burn_task"),
        "--task-params",
        f"fail={fail_from}",
        "--keep-shm",
    )
    seg = open_when_ready(shm_name, proc, min_cycles=fail_from)
    drainer = Drainer(seg.buf)
    logs: list[dict] = []
    until = time.monotonic() + 2.3
    while time.monotonic() < until:
        st = status(seg)
        assert layout.STATE_NAMES[st["state"]] == "fault" and st["task_rc"] == -EIO
        logs.extend(drainer.drain("log"))
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    rc, _, err = finish(proc, timeout=10)
    assert rc == 0, err
    seg.close()

    seg = Segment.open(shm_name)
    logs.extend(Drainer(seg.buf).drain("log"))
    st, state = status(seg), burn_state(seg)
    faults = [r for r in logs if r["message"].startswith("task step failed")]
    assert faults[0]["fields"] == {"code": -EIO, "fault_cycle": fail_from}
    assert faults[0]["repeats"] == 0 and faults[0]["level"] == "ERROR"
    assert len(faults) >= 2, "failing for over two seconds: logged again"
    for prev, rec in zip(faults, faults[1:], strict=False):
        assert rec["ts_ns"] - prev["ts_ns"] >= 1_000_000_000, "at most once per second"
        assert rec["repeats"] > 0 and rec["fields"]["code"] == -EIO
    # every failed step is either logged or counted as suppressed
    assert state["fails"] == st["cycles"] - fail_from + 1
    assert len(faults) + st["faults_suppressed"] == state["fails"]
    assert sum(r["repeats"] for r in faults) <= st["faults_suppressed"]
    entered = [r for r in logs if r["message"].startswith("state changed to FAULT")]
    assert len(entered) == 1 and entered[0]["level"] == "CRITICAL"
    seg.close()


def test_step_after_a_miss_sees_the_skipped_periods_in_dt(spawn, shm_name, build_task):
    period_ns = 2_000_000
    burn = [100, 200, 300]
    proc = spawn.rt(
        shm_name,
        "--cpus",
        CPU,
        "--task",
        build_task("burn_task"),
        "--task-params",
        f"burn={';'.join(map(str, burn))},burn_us=5000",
        "--period-us",
        str(period_ns // 1000),
        "--cycles",
        "350",
        "--keep-shm",
    )
    rc, _, err = finish(proc, timeout=20)
    assert rc == 0, err
    seg = Segment.open(shm_name)
    misses = [e for e in Drainer(seg.buf).drain("event") if e["kind"] == "deadline_miss"]
    assert {e["cycle"] for e in misses} >= set(burn)
    state = burn_state(seg)
    seen = state["skips"][: state["n_skips"]]
    told = {int(s["cycle"]): (int(s["skipped"]), float(s["dt"])) for s in seen}
    # the step after each late cycle: skipped periods as the miss reported, dt spanning them
    expected = {e["cycle"] + 1: (e["b"], (1 + e["b"]) * period_ns / 1e9) for e in misses}
    assert told == expected
    assert all(skipped >= 1 for skipped, _ in told.values())
    assert state["dt_wrong"] == 0, "every other step saw dt == one period"
    assert status(seg)["skipped_periods"] == sum(e["b"] for e in misses)
    seg.close()


def test_burn_state_mirror_matches_the_task(spawn, shm_name, build_task):
    rc, _, err = finish(
        spawn.rt(shm_name, "--task", build_task("burn_task"), "--cycles", "3", "--keep-shm")
    )
    assert rc == 0, err
    seg = Segment.open(shm_name)
    state = burn_state(seg)
    assert state["steps"] == 3 and state["burn_us"] == 3000 and state["outputs"] == 0
    seg.close()
