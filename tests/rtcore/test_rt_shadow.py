"""Shadow mode: a standby RT computes on the primary's replicated state and
drives nothing; promoted, it actuates from exactly where that state left off.

The primary is played by a writer process that puts reference-task
checkpoints into the standby's inbound slot, as the agent does with the
checkpoints it replicates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from rtcore import _core, enums, reftask
from rtcore.records import Drainer
from rtcore.segment import Segment
from tests.conftest import wait_for
from tests.rtcore.rtproc import open_when_ready, status

ROOT = Path(__file__).resolve().parents[2]
CPU = str(max(os.sched_getaffinity(0)))
JOINTS = 6
FEEDS = 8
CYCLE_BASE = 1_000_000  # far from the standby's own count: adoption is visible in the cycle
PRIMARY_NODE, STANDBY_NODE = 1, 2

# Feeds FEEDS checkpoints of the reference task, each waiting until the
# standby adopted it; halfway, one of another task, which must be refused.
WRITER = r"""
import json, sys
import numpy as np
from rtcore import _core, reftask
from rtcore.segment import Segment
from tests.conftest import wait_for

name, base_path, feeds, cycle_base, origin = sys.argv[1:6]
feeds, cycle_base, origin = int(feeds), int(cycle_base), int(origin)
seg = Segment.open(name)
st = seg.view()["status"]
state = np.frombuffer(open(base_path, "rb").read(), dtype=reftask.STATE)[0].copy()
task_id = _core.crc32c(reftask.NAME.encode())
fed = []
for i in range(1, feeds + 1):
    seq, cycle = 10 * i, cycle_base + 100 * i
    state["job_id"] = 1000 + i
    state["steps"] = cycle
    state["outputs"] = 0
    state["q"][:] = 0.25 + 0.001 * i + 0.01 * np.arange(reftask.MAX_JOINTS)
    state["dq"][:] = 0.0
    state["setpoint"][:] = state["q"] + 0.05
    _core.write_checkpoint(seg.buf, _core.INBOUND, seq, cycle, 1, task_id, state.tobytes(),
                           origin=origin)
    wait_for(lambda: int(st["adopted_seq"]) == seq, timeout=5, what=f"adoption of {seq}")
    fed.append({"seq": seq, "cycle": cycle, "q": state["q"].tolist(),
                "setpoint": state["setpoint"].tolist(), "job_id": int(state["job_id"])})
    if i == feeds // 2:
        refused = int(st["inbound_refused"])
        foreign = _core.crc32c(b"another task")
        _core.write_checkpoint(seg.buf, _core.INBOUND, seq + 5, cycle + 50, 1, foreign,
                               state.tobytes(), origin=origin)
        wait_for(lambda: int(st["inbound_refused"]) == refused + 1, timeout=5,
                 what="the foreign checkpoint to be refused")
        fed[-1]["foreign_seq"] = seq + 5
del st
print(json.dumps(fed), flush=True)
"""


def _own_checkpoint(seg: Segment, after_seq: int, flags: int) -> tuple[dict, np.void]:
    """The standby's newest own checkpoint once one past after_seq with these flags exists."""

    def newest():
        found = seg.newest_checkpoint()
        if found and found[0]["seq"] > after_seq and found[0]["flags"] == flags:
            return found
        return None

    meta, data = wait_for(newest, timeout=5, what=f"a checkpoint after {after_seq}")
    return meta, reftask.decode_state(data)


def test_standby_adopts_replicated_state_drives_nothing_then_continues_it(
    spawn, shm_name, tmp_path
):
    proc = spawn.rt(
        shm_name, "--cpus", CPU, "--standby", "--node-id", str(STANDBY_NODE), "--ckpt-every", "5"
    )
    seg = open_when_ready(shm_name, proc, min_cycles=20)
    drainer = Drainer(seg.buf)
    meta, base = seg.newest_checkpoint()
    assert meta["flags"] == enums.CKPT_SHADOW and meta["origin"] == STANDBY_NODE
    base_path = tmp_path / "base.state"
    base_path.write_bytes(base)

    writer = spawn(
        [sys.executable, "-c", WRITER, shm_name, str(base_path), str(FEEDS), str(CYCLE_BASE)]
        + [str(PRIMARY_NODE)],
        cwd=str(ROOT),
    )
    try:
        out, err = writer.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        writer.kill()
        raise
    assert writer.returncode == 0, err
    fed = json.loads(out.strip().splitlines()[-1])
    last = fed[-1]

    # adopted, every one, in order; the other task's refused and counted
    st = status(seg)
    assert (st["adopted_seq"], st["adopted_cycle"]) == (last["seq"], last["cycle"])
    assert st["adopted_count"] == FEEDS
    assert st["inbound_refused"] == 1
    assert proc.poll() is None
    adopted_events = [e for e in drainer.drain("event") if e["kind"] == "adopted"]
    adopted = [(e["a"], e["b"]) for e in adopted_events]
    assert adopted == [(f["seq"], f["cycle"]) for f in fed]
    # the state is after cycle b's step: the cycle that adopts it is b + 1
    assert all(e["cycle"] == e["b"] + 1 for e in adopted_events)
    refusals = [r for r in drainer.drain("log") if r["message"].startswith("replicated checkpoint")]
    assert [r["fields"] for r in refusals] == [{"why": 1}]

    # the standby's own state follows the fed one, marked shadow; no output stage ran
    meta, state = _own_checkpoint(seg, last["seq"], enums.CKPT_SHADOW)
    assert meta["origin"] == STANDBY_NODE and meta["cycle"] > last["cycle"]
    assert state["job_id"] == last["job_id"]
    assert state["outputs"] == 0, "a standby never runs the output stage"
    assert state["q"].tolist() == last["q"], "a standby never moves the joints"
    assert state["setpoint"].tolist() == last["setpoint"]
    assert state["steps"] > last["cycle"], "it kept computing on the adopted state"
    assert status(seg)["actuated_cycles"] == 0 and status(seg)["actuating"] == 0

    # promoted: the first actuated cycle continues the adopted state's numbering
    before = status(seg)["cycles"]
    _core.write_control(
        seg.buf,
        active=1,
        epoch=7,
        lease_timeout_ns=500_000_000,
        lease_ns=_core.monotonic_ns(),
    )

    def actuating():
        _core.renew_lease(seg.buf)
        return status(seg)["actuating"] == 1

    wait_for(actuating, timeout=5, what="promotion to actuate")
    st = status(seg)
    assert last["cycle"] < before < st["act_first_cycle"] <= st["cycles"]
    assert before - last["cycle"] < 5000, "the standby counted on from the adopted cycle"
    assert st["act_epoch"] == 7

    # the output stage now counts, and moves the joints on from the fed position
    def actuated_checkpoint():
        _core.renew_lease(seg.buf)
        found = seg.newest_checkpoint()
        if found and found[0]["flags"] == 0 and found[0]["epoch"] == 7:
            return found
        return None

    meta, data = wait_for(actuated_checkpoint, timeout=5, what="an actuated checkpoint")
    state = reftask.decode_state(data)
    assert meta["origin"] == STANDBY_NODE
    assert 0 < state["outputs"] <= status(seg)["actuated_cycles"]
    assert state["outputs"] == meta["cycle"] - st["act_first_cycle"] + 1
    q, q_fed, target = state["q"][:JOINTS], np.array(last["q"][:JOINTS]), last["setpoint"][:JOINTS]
    assert (q > q_fed).all() and (q < target).all(), "moving from the fed q toward its setpoint"
    seg.close()


def test_standby_adopts_consecutive_checkpoints_while_writing_its_own(spawn, shm_name):
    """The primary numbers its checkpoints one by one, and the standby's own
    shadow checkpoints count on from the adopted seq at the same pace: each
    replicated one must still be adopted (it is newer in the primary's
    numbering), not taken for one the standby already has."""
    proc = spawn.rt(shm_name, "--cpus", CPU, "--standby", "--ckpt-every", "1")
    seg = open_when_ready(shm_name, proc, min_cycles=20)
    _, base = seg.newest_checkpoint()
    task_id = _core.crc32c(reftask.NAME.encode())
    for seq in range(100, 106):
        _core.write_checkpoint(seg.buf, _core.INBOUND, seq, 10 * seq, 1, task_id, base, origin=9)
        wait_for(
            lambda s=seq: status(seg)["adopted_seq"] == s, timeout=5, what=f"adoption of {seq}"
        )
        # its own shadow checkpoints move past the next replicated seq first
        wait_for(lambda s=seq: status(seg)["ckpt_seq"] >= s + 3, timeout=5, what="own checkpoints")
    assert status(seg)["adopted_count"] == 6
    assert proc.poll() is None
