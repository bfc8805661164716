"""The built-in reference task driven through the command ring, across a crash."""

from __future__ import annotations

import os

from rtcore import _core, reftask
from rtcore.records import Drainer
from rtcore.segment import Segment
from tests.conftest import wait_for
from tests.rtcore.rtproc import ACTUATE, open_when_ready, status

CPU = str(max(os.sched_getaffinity(0)))
JOINTS = 6


def test_state_dtype_matches_the_task(spawn, shm_name):
    proc = spawn.rt(shm_name, "--cycles", "20", "--keep-shm", "--cpus", CPU)
    assert proc.wait(timeout=30) == 0
    meta, data = Segment.open(shm_name).newest_checkpoint()
    assert meta["cycle"] == 20
    state = reftask.decode_state(data)
    assert state["version"] == 2 and state["n_joints"] == JOINTS
    assert state["steps"] == 20 and state["outputs"] == 0, "standby by default: no outputs"
    assert state["kp"] == 400.0 and state["inertia"] == 1.0


def test_job_runs_through_commands_and_survives_kill_9(spawn, shm_name):
    proc = spawn.rt(shm_name, "--cpus", CPU, "--ckpt-every", "5", ACTUATE)
    seg = open_when_ready(shm_name, proc, min_cycles=5)
    drainer = Drainer(seg.buf)
    waypoints = [(0.4 * (i + 1), [0.1 * (i + 1)] * JOINTS) for i in range(5)]
    cmds = reftask.trajectory_commands(7, waypoints, first_seq=1)
    writer = _core.RingWriter(seg.buf, "cmd")
    assert all(writer.push(c) for c in cmds)

    events: list[dict] = []

    def reached(index: int):
        events.extend(drainer.drain("event"))
        return any(e["kind_id"] == reftask.EV_WAYPOINT_REACHED and e["b"] == index for e in events)

    wait_for(lambda: reached(1), timeout=10, what="waypoint 1")
    acks = [e for e in events if e["kind"] == "command_ack"]
    assert [(e["a"], e["b"]) for e in acks] == [(s, 0) for s in range(1, len(cmds) + 1)]
    assert status(seg)["cmds_applied"] == len(cmds)
    at = next(
        e["cycle"] for e in events if e["kind_id"] == reftask.EV_WAYPOINT_REACHED and e["b"] == 1
    )
    wait_for(lambda: status(seg)["ckpt_cycle"] > at, timeout=5, what="a checkpoint after it")

    proc.kill()
    proc.wait(timeout=5)
    ckpt_seq = status(seg)["ckpt_seq"]
    saved = reftask.decode_state(seg.newest_checkpoint()[1])
    assert reftask.TRAJ_STATES[int(saved["traj_state"])] == "running"
    assert saved["job_id"] == 7 and saved["cursor"] >= 2

    resumed = spawn.rt(shm_name, "--cpus", CPU, "--resume", ACTUATE)
    seg2 = open_when_ready(shm_name, resumed, min_cycles=int(status(seg)["ckpt_cycle"]) + 1)
    assert status(seg2)["restored_seq"] == ckpt_seq
    drainer2 = Drainer(seg2.buf)
    after: list[dict] = []

    def done():
        after.extend(drainer2.drain("event"))
        return [e for e in after if e["kind_id"] == reftask.EV_TRAJ_DONE]

    finished = wait_for(done, timeout=15, what="the job to finish after the restart")
    assert len(finished) == 1 and finished[0]["a"] == 7
    reached_after = {e["b"] for e in after if e["kind_id"] == reftask.EV_WAYPOINT_REACHED}
    assert reached_after >= {2, 3, 4}, "the job went on from its cursor, not from the start"
    assert 0 not in reached_after
    resumed.terminate()
    assert resumed.wait(timeout=5) == 0
    final = reftask.decode_state(seg2.newest_checkpoint()[1])
    assert abs(final["q"][:JOINTS] - 0.5).max() < 0.05, "joints reached the last waypoint"
    seg.close()
    seg2.close()


def test_numpy_free_limits_match_the_header():
    """rtcore.reftask_limits (what clients check trajectories against) says
    what reftask.h says."""
    import re
    from pathlib import Path

    from rtcore import reftask_limits

    header = (Path(__file__).parents[2] / "rtcore/include/rtcore/reftask.h").read_text()
    defines = dict(re.findall(r"#define RTC_REFTASK_(\w+) (\S+)", header))
    assert int(defines["MAX_JOINTS"].rstrip("u")) == reftask_limits.MAX_JOINTS
    assert int(defines["MAX_WAYPOINTS"].rstrip("u")) == reftask_limits.MAX_WAYPOINTS
    assert defines["NAME"].strip('"') == reftask_limits.NAME
