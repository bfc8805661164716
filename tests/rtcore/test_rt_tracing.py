"""Trace context and spans from a real RT process: a traced command's trace
reaches the span that applies it and every event it causes; cycles are
sampled at the control block's ratio from their trace ids; a late cycle is
always recorded; task spans nest under the step that made them."""

from __future__ import annotations

import os
import secrets

from rtcore import _core, reftask
from rtcore.records import Drainer, command
from tests.rtcore.rtproc import ACTUATE, collect, finish, open_when_ready

CPU = str(max(os.sched_getaffinity(0)))


def test_a_traced_commands_context_reaches_its_span_and_the_events_it_causes(spawn, shm_name):
    proc = spawn.rt(shm_name, "--cpus", CPU, ACTUATE, "--trace-ratio", "0", "--keep-shm")
    seg = open_when_ready(shm_name, proc)
    drainer = Drainer(seg.buf)
    writer = _core.RingWriter(seg.buf, "cmd")
    trace, parent = secrets.token_bytes(16), secrets.token_bytes(8)
    cmds = reftask.trajectory_commands(7, [(0.01, [0.1] * 6)], first_seq=1)
    sampled = [
        command(
            k,
            seq=s,
            args=tuple(a[: int(n)]),
            job_id=7,
            trace_id=trace,
            span_id=parent,
        )
        for k, s, a, n in (_fields(c) for c in cmds)
    ]
    unsampled = command(0, seq=99, trace_id=secrets.token_bytes(16), span_id=parent, sampled=False)
    for rec in [*sampled, unsampled]:
        assert writer.push(rec)
    events = collect(
        drainer,
        "event",
        lambda evs: (
            any(e["kind"] == "command_ack" and e["a"] == 99 for e in evs)
            and any(e["kind_id"] == reftask.EV_TRAJ_DONE for e in evs)
        ),
        what="the acks and the job's end",
    )
    spans = drainer.drain("span")
    proc.terminate()
    finish(proc)
    seg.close()

    acks = {e["a"]: e for e in events if e["kind"] == "command_ack"}
    assert {s: acks[s]["b"] for s in range(1, len(cmds) + 1)} == dict.fromkeys(
        range(1, len(cmds) + 1), 0
    )
    for s in range(1, len(cmds) + 1):
        assert acks[s]["trace_id"] == trace.hex() and acks[s]["sampled"]
    started = [e for e in events if e["kind_id"] == reftask.EV_TRAJ_STARTED]
    assert started and started[0]["trace_id"] == trace.hex(), "emitted while the command applied"
    command_spans = [s for s in spans if s["name"] == "rt.command"]
    assert len(command_spans) == len(cmds), "one span per sampled command, none for the other"
    for sp in command_spans:
        assert sp["trace_id"] == trace.hex() and sp["parent_span_id"] == parent.hex()
        assert sp["kind"] == "consumer" and sp["status"] == "ok"
        assert sp["attributes"]["command.result"] == 0
        assert acks[sp["attributes"]["command.seq"]]["span_id"] == sp["span_id"]
    assert acks[99]["trace_id"] is not None and not acks[99]["sampled"]
    assert not [s for s in spans if s["name"] == "rt.cycle"], "ratio 0: no cycle sampled"


def _fields(rec: bytes) -> tuple[int, int, list[float], int]:
    import numpy as np

    from rtcore import layout

    r = np.frombuffer(rec, dtype=layout.CMD_REC)[0]
    return int(r["kind"]), int(r["seq"]), [float(x) for x in r["args"]], int(r["nargs"])


def test_cycles_are_sampled_at_the_ratio_and_spans_nest(spawn, shm_name, build_task):
    cycles = 3000
    proc = spawn.rt(
        shm_name,
        "--cpus",
        CPU,
        "--task",
        build_task("burn_task"),
        "--trace-ratio",
        "0.5",
        "--cycles",
        str(cycles),
        "--keep-shm",
        "--ckpt-every",
        "0",
    )
    seg = open_when_ready(shm_name, proc)
    drainer = Drainer(seg.buf)
    spans = collect(
        drainer,
        "span",
        lambda got: proc.poll() is not None,
        timeout=30,
        what="the run to end",
    )
    spans += drainer.drain_all("span")
    assert finish(proc)[0] == 0
    dropped = _core.ring_counters(seg.buf, "span")[3]
    seg.close()
    assert dropped == 0
    roots = [s for s in spans if s["name"] == "rt.cycle"]
    assert all(r["parent_span_id"] is None for r in roots), "a root has no parent (not zeros)"
    # binomial(3000, 0.5): 6 standard deviations is +-164
    assert abs(len(roots) - cycles / 2) < 164, len(roots)
    by_id = {s["span_id"]: s for s in spans}
    for name, parent in (("task.step", "rt.cycle"), ("burn.step", "task.step")):
        children = [s for s in spans if s["name"] == name]
        assert len(children) >= len(roots) - 1, name  # the last cycle may end the run
        for c in children:
            p = by_id[c["parent_span_id"]]
            assert p["name"] == parent and p["trace_id"] == c["trace_id"]
            assert p["start_ns"] <= c["start_ns"] <= c["end_ns"] <= p["end_ns"]
    attrs = [s["attributes"] for s in spans if s["name"] == "burn.step"]
    assert all(isinstance(a["cycle"], int) for a in attrs)


def test_a_late_cycle_is_always_recorded(spawn, shm_name, build_task):
    late_cycles = (200, 400)
    proc = spawn.rt(
        shm_name,
        "--cpus",
        CPU,
        "--task",
        build_task("burn_task"),
        "--task-params",
        "burn=" + ";".join(map(str, late_cycles)) + ",burn_us=3000",
        "--trace-ratio",
        "0",
        "--cycles",
        "600",
        "--keep-shm",
    )
    seg = open_when_ready(shm_name, proc)
    drainer = Drainer(seg.buf)
    spans = collect(drainer, "span", lambda got: proc.poll() is not None, timeout=30, what="end")
    spans += drainer.drain_all("span")
    assert finish(proc)[0] == 0
    seg.close()
    roots = [s for s in spans if s["name"] == "rt.cycle"]
    # at ratio 0 only late cycles are recorded: the burnt ones, and any the
    # machine made late by itself (a VM can stall for milliseconds)
    assert set(late_cycles) <= {s["cycle"] for s in roots}
    for r in roots:
        assert r["status"] == "error" and r["attributes"]["late"] == 1
        assert r["attributes"]["skipped_periods"] >= 1 and r["flags"] & 1
        burn = [s for s in spans if s["name"] == "burn.step" and s["trace_id"] == r["trace_id"]]
        assert burn, "the late cycle's own spans came with it"
        if r["cycle"] in late_cycles:
            assert burn[0]["end_ns"] - burn[0]["start_ns"] >= 3_000_000
