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
    ctl = seg.view()["control"]
    drainer = Drainer(seg.buf)
    for mode, name in (
        (layout.MODE_HOLD, "hold"),
        (layout.MODE_SAFE, "safe"),
        (layout.MODE_RUN, "run"),
    ):
        ctl["mode"] = mode
        wait_for(
            lambda name=name: layout.STATE_NAMES[status(seg)["state"]] == name,
            timeout=5,
            what=f"state {name}",
        )
    logs = drainer.drain_all("log")
    changes = [(r["level"], r["message"]) for r in logs if r["message"].startswith("state changed")]
    assert changes == [
        ("ERROR", "state changed to RUN"),
        ("ERROR", "state changed to HOLD"),
        ("CRITICAL", "state changed to SAFE"),
        ("ERROR", "state changed to RUN"),
    ]
    ctl["mode"] = layout.MODE_STOP
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
    seg.view()["control"]["log_level"] = layout.LEVELS["CRITICAL"]
    time.sleep(0.05)
    drainer.drain_all("log")
    quiet_from = status(seg)["misses"]
    wait_for(lambda: status(seg)["misses"] >= quiet_from + 5, timeout=10, what="more misses")
    assert drainer.drain_all("log") == [], "nothing below CRITICAL is recorded"
    dropped_before = _core.ring_counters(seg.buf, "log")[3]
    seg.view()["control"]["log_level"] = layout.LEVELS["INFO"]
    wait_for(
        lambda: any(r["message"].startswith("deadline miss") for r in drainer.drain_all("log")),
        timeout=10,
        what="ERROR records again",
    )
    assert _core.ring_counters(seg.buf, "log")[3] == dropped_before
    seg.close()


def test_expired_lease_stops_actuation(spawn, shm_name):
    proc = spawn.rt(shm_name, "--cpus", CPU, "--lease-timeout-ms", "50")
    seg = open_when_ready(shm_name, proc, min_cycles=5)
    ctl = seg.view()["control"]
    drainer = Drainer(seg.buf)
    # no lease was ever given: the loop must not actuate
    time.sleep(0.1)
    assert status(seg)["actuating"] == 0
    ctl["epoch"] = 3
    renew_until = time.monotonic() + 0.5
    while time.monotonic() < renew_until:
        ctl["lease_ns"] = _core.monotonic_ns()
        time.sleep(0.01)
        if status(seg)["actuating"]:
            break
    assert status(seg)["actuating"] == 1
    wait_for(lambda: status(seg)["actuating"] == 0, timeout=2, what="lease expiry to stop outputs")
    messages = [(r["level"], r["message"]) for r in drainer.drain_all("log")]
    assert ("ERROR", "actuation enabled (epoch 3)") in messages
    assert any(
        level == "CRITICAL" and m.startswith("actuation stopped: control-plane lease expired")
        for level, m in messages
    )
    seg.close()


def test_standby_does_not_actuate(spawn, shm_name):
    proc = spawn.rt(shm_name, "--cpus", CPU, "--standby")
    seg = open_when_ready(shm_name, proc, min_cycles=50)
    assert status(seg)["actuating"] == 0
    seg.view()["control"]["active"] = 1
    wait_for(lambda: status(seg)["actuating"] == 1, timeout=2, what="promotion to actuate")
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
    first = spawn.rt(shm_name, "--cpus", CPU, "--trace-every", "7")
    open_when_ready(shm_name, first, min_cycles=20).close()
    first.kill()
    first.wait(timeout=5)
    resumed = spawn.rt(shm_name, "--cpus", CPU, "--resume", "--standby")
    seg = open_when_ready(shm_name, resumed, min_cycles=10)
    ctl = seg.view()["control"]
    assert int(ctl["active"]) == 0, "--standby given: applied to the resumed segment"
    assert int(ctl["trace_every"]) == 7, "--trace-every not given: the segment's value stays"
    assert status(seg)["actuating"] == 0
    seg.close()
