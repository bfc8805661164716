"""The control block steers a running loop: mode, stop, log level, lease, NUMA."""

from __future__ import annotations

import os
import time

from rtcore import _core, layout, topology
from rtcore.records import Drainer
from rtcore.segment import Segment
from tests.conftest import wait_for
from tests.rtcore.rtproc import finish, open_when_ready, status

CPU = str(max(os.sched_getaffinity(0)))


def test_mode_changes_are_reported_and_stop_ends_the_loop(spawn, shm_name):
    proc = spawn.rt(shm_name, "--cpus", CPU, "--keep-shm")
    seg = open_when_ready(shm_name, proc, min_cycles=20)
    drainer = Drainer(seg.buf)
    for mode, name in (
        (layout.MODE_HOLD, "hold"),
        (layout.MODE_SAFE, "safe"),
        (layout.MODE_RUN, "run"),
    ):
        _core.write_control(seg.buf, mode=mode)
        wait_for(
            lambda name=name: layout.STATE_NAMES[status(seg)["state"]] == name,
            timeout=5,
            what=f"state {name}",
        )
    logs = drainer.drain("log")
    changes = [(r["level"], r["message"]) for r in logs if r["message"].startswith("state changed")]
    assert changes == [
        ("ERROR", "state changed to RUN"),
        ("ERROR", "state changed to HOLD"),
        ("CRITICAL", "state changed to SAFE"),
        ("ERROR", "state changed to RUN"),
    ]
    _core.write_control(seg.buf, mode=layout.MODE_STOP)
    rc, out, err = finish(proc, timeout=5)
    assert rc == 0, err
    assert layout.STATE_NAMES[status(seg)["state"]] == "stopped"
    # the cycle that saw STOP did not run: the final checkpoint is of the last one that did
    assert seg.newest_checkpoint()[0]["cycle"] == status(seg)["cycles"]
    assert f"stopped after cycle {status(seg)['cycles']}" in out
    seg.close()


def test_log_level_applies_at_runtime(spawn, shm_name, build_task):
    # burn 1 ms on many cycles at a 500 us period: each is a miss logged at ERROR
    cycles = ";".join(str(c) for c in range(100, 3000, 50))
    proc = spawn.rt(
        shm_name,
        "--cpus",
        CPU,
        "--period-us",
        "500",
        "--task",
        build_task("burn_task"),
        "--task-params",
        f"burn={cycles},burn_us=1000",
    )
    seg = open_when_ready(shm_name, proc, min_cycles=10)
    drainer = Drainer(seg.buf)
    wait_for(lambda: status(seg)["misses"] >= 3, timeout=10, what="three misses")
    _core.write_control(seg.buf, log_level=layout.LEVELS["CRITICAL"])
    time.sleep(0.05)
    drainer.drain("log")
    quiet_from = status(seg)["misses"]
    wait_for(lambda: status(seg)["misses"] >= quiet_from + 5, timeout=10, what="more misses")
    assert drainer.drain("log") == [], "nothing below CRITICAL is recorded"
    dropped_before = _core.ring_counters(seg.buf, "log")[3]
    _core.write_control(seg.buf, log_level=layout.LEVELS["INFO"])
    wait_for(
        lambda: any(r["message"].startswith("deadline miss") for r in drainer.drain("log")),
        timeout=10,
        what="ERROR records again",
    )
    assert _core.ring_counters(seg.buf, "log")[3] == dropped_before
    seg.close()


def _stops_within_a_cycle_of(seg: Segment, lease: int, timeout_ns: int) -> dict:
    wait_for(lambda: status(seg)["actuating"] == 0, timeout=2, what="lease expiry to stop outputs")
    st = status(seg)
    assert st["act_last_mono_ns"] >= lease, "it actuated under the lease"
    assert st["act_last_mono_ns"] <= lease + timeout_ns + st["period_ns"]
    return st


def test_expired_lease_stops_actuation_within_one_cycle(spawn, shm_name):
    """An active RT whose lease is not renewed drives its outputs on no cycle
    that woke later than lease + timeout + one period: neither the first
    lease (given at start) nor a renewed one."""
    timeout_ns = 50_000_000
    proc = spawn.rt(shm_name, "--cpus", CPU, "--active", "--lease-timeout-ms", "50", "--epoch", "3")
    seg = open_when_ready(shm_name, proc, min_cycles=1)
    drainer = Drainer(seg.buf)
    first = _stops_within_a_cycle_of(seg, _core.read_control(seg.buf)["lease_ns"], timeout_ns)
    assert first["actuated_cycles"] > 0
    deadline = time.monotonic() + 2
    while status(seg)["actuated_cycles"] < first["actuated_cycles"] + 100:
        assert time.monotonic() < deadline, "a renewed lease did not restart actuation"
        _core.renew_lease(seg.buf)
        time.sleep(0.01)
    lease = _core.renew_lease(seg.buf)  # the last renewal: from here on the lease only ages
    st = _stops_within_a_cycle_of(seg, lease, timeout_ns)
    assert st["act_epoch"] == 3
    time.sleep(0.05)
    assert status(seg)["actuated_cycles"] == st["actuated_cycles"], "and stays stopped"
    logs = drainer.drain("log")
    messages = [(r["level"], r["message"]) for r in logs]
    assert messages.count(("ERROR", "actuation started in epoch 3")) == 2
    expired = [r for r in logs if r["message"].startswith("actuation stopped: control-plane lease")]
    assert len(expired) == 2 and all(r["level"] == "CRITICAL" for r in expired)
    for r in expired:
        assert r["fields"]["timeout_ms"] == 50.0
        # noticed on the first cycle after expiry: a period plus that cycle's wake-up latency
        slack_ms = (st["period_ns"] + st["wake_max_ns"]) / 1e6
        assert 50.0 < r["fields"]["lease_age_ms"] <= 50.0 + slack_ms
    end = [j for j in drainer.drain("journal") if j["kind"] == "end"]
    assert end[-1]["mono_ns"] == st["act_last_mono_ns"] and end[-1]["epoch"] == 3
    seg.close()


def test_standby_does_not_actuate(spawn, shm_name):
    proc = spawn.rt(shm_name, "--cpus", CPU, "--standby")
    seg = open_when_ready(shm_name, proc, min_cycles=50)
    assert status(seg)["actuating"] == 0
    _core.write_control(seg.buf, active=1)
    wait_for(lambda: status(seg)["actuating"] == 1, timeout=2, what="promotion to actuate")
    assert status(seg)["act_first_cycle"] > 50
    seg.close()


def test_hybrid_wake_mode_runs(spawn, shm_name):
    proc = spawn.rt(
        shm_name,
        "--cpus",
        CPU,
        "--wake-mode",
        "hybrid",
        "--spin-us",
        "30",
        "--cycles",
        "300",
        "--keep-shm",
    )
    rc, _, err = finish(proc)
    assert rc == 0, err
    st = status(Segment.open(shm_name))
    assert st["wake_mode"] == layout.WAKE_MODES["hybrid"] and st["spin_ns"] == 30_000
    assert st["cycles"] == 300


def test_numa_node_binds_the_segment(spawn, shm_name):
    proc = spawn.rt(shm_name, "--numa-node", "0")
    seg = open_when_ready(shm_name, proc, min_cycles=10)
    st = status(seg)
    assert st["numa_node"] == 0
    node0 = topology.node_cpus(0)
    assert st["cpu_mask"] == sum(1 << c for c in node0), "runs on the node's CPUs"
    with open(f"/proc/{proc.pid}/numa_maps") as f:
        maps = [line for line in f if f"/dev/shm/{shm_name}" in line]
    assert maps and all("bind:0" in line for line in maps), maps
    seg.close()


def test_resume_applies_control_flags_that_are_given(spawn, shm_name):
    first = spawn.rt(
        shm_name, "--cpus", CPU, "--trace-ratio", "0.25", "--epoch", "4", "--actuate-without-lease"
    )
    seg = open_when_ready(shm_name, first, min_cycles=20)
    wait_for(lambda: status(seg)["actuating"] == 1, timeout=2, what="actuation")
    seg.close()
    first.kill()
    first.wait(timeout=5)
    resumed = spawn.rt(shm_name, "--cpus", CPU, "--resume", "--standby")
    seg = open_when_ready(shm_name, resumed, min_cycles=10)
    ctl = _core.read_control(seg.buf)
    assert ctl["active"] == 0, "--standby given: applied to the resumed segment"
    assert ctl["sample_ppm"] == 250_000, "--trace-ratio not given: the segment's value stays"
    assert ctl["epoch"] == 4
    assert status(seg)["actuating"] == 0
    seg.close()
