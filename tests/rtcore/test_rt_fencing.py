"""Fencing: commands of an older epoch are refused, and every actuated
interval is journaled with its epoch, across role flips and epoch changes."""

from __future__ import annotations

import errno
import os
import signal

from rtcore import _core, layout, reftask
from rtcore.records import Drainer, command
from rtcore.segment import Segment
from tests.conftest import wait_for
from tests.rtcore.rtproc import ACTUATE, collect, finish, open_when_ready, status

CPU = str(max(os.sched_getaffinity(0)))


def _acks(drainer: Drainer, seqs: set[int]) -> dict[int, int]:
    events = collect(
        drainer,
        "event",
        lambda got: seqs <= {e["a"] for e in got if e["kind"] == "command_ack"},
        timeout=5,
        what=f"acks of commands {sorted(seqs)}",
    )
    return {e["a"]: e["b"] for e in events if e["kind"] == "command_ack"}


def test_command_of_an_older_epoch_is_refused_a_current_one_applied(spawn, shm_name):
    proc = spawn.rt(shm_name, "--cpus", CPU, ACTUATE, "--epoch", "5", "--ckpt-every", "5")
    seg = open_when_ready(shm_name, proc, min_cycles=10)
    drainer = Drainer(seg.buf)
    drainer.drain("log")
    writer = _core.RingWriter(seg.buf, "cmd")
    gains = reftask.CMD_SET_GAINS
    assert writer.push(command(gains, seq=1, epoch=4, args=(1.0, 2.0, 3.0)))
    assert writer.push(command(gains, seq=2, epoch=5, args=(4.0, 5.0, 6.0)))
    assert writer.push(command(layout.CMD_NOP, seq=3, epoch=6))
    assert _acks(drainer, {1, 2, 3}) == {1: -errno.ESTALE, 2: 0, 3: 0}
    st = status(seg)
    assert (st["cmds_stale"], st["cmds_applied"], st["cmds_failed"]) == (1, 2, 1)
    refused = [r for r in drainer.drain("log") if "refused: sent in epoch" in r["message"]]
    assert [r["fields"] for r in refused] == [{"seq": 1, "cmd_epoch": 4, "epoch": 5}]
    assert refused[0]["level"] == "WARN"
    cycle = status(seg)["cycles"]
    meta, data = wait_for(
        lambda: (c := seg.newest_checkpoint()) and c[0]["cycle"] > cycle and c,
        timeout=5,
        what="a checkpoint after the commands",
    )
    state = reftask.decode_state(data)
    assert (state["kp"], state["ki"], state["kd"]) == (4.0, 5.0, 6.0), "only the current one"

    # the node moves on to epoch 6: epoch 5 is now the older one
    _core.write_control(seg.buf, epoch=6)
    wait_for(lambda: status(seg)["epoch"] == 6, timeout=5, what="epoch 6 in force")
    assert writer.push(command(gains, seq=4, epoch=5, args=(7.0, 8.0, 9.0)))
    assert writer.push(command(layout.CMD_NOP, seq=5, epoch=6))
    assert _acks(drainer, {4, 5}) == {4: -errno.ESTALE, 5: 0}
    assert status(seg)["cmds_stale"] == 2
    seg.close()


def test_journal_shows_every_actuated_interval_with_its_epoch(spawn, shm_name):
    proc = spawn.rt(shm_name, "--cpus", CPU, "--standby", "--keep-shm")
    seg = open_when_ready(shm_name, proc, min_cycles=10)

    def run_for(n: int, actuating: int) -> None:
        st = status(seg)
        wait_for(
            lambda: (
                status(seg)["actuating"] == actuating and status(seg)["cycles"] >= st["cycles"] + n
            ),
            timeout=5,
            what=f"{n} cycles with actuating == {actuating}",
        )

    run_for(10, 0)
    _core.write_control(seg.buf, active=1, epoch=1, lease_timeout_ns=0)
    run_for(30, 1)
    _core.write_control(seg.buf, active=0)
    run_for(20, 0)
    _core.write_control(seg.buf, active=1, epoch=2)
    run_for(30, 1)
    _core.write_control(seg.buf, epoch=3)
    wait_for(lambda: status(seg)["act_epoch"] == 3, timeout=5, what="epoch 3 interval")
    run_for(30, 1)
    proc.send_signal(signal.SIGTERM)
    rc, _, err = finish(proc, timeout=10)
    assert rc == 0, err
    seg.close()

    seg = Segment.open(shm_name)
    drainer = Drainer(seg.buf)
    journal = drainer.drain("journal")
    st = status(seg)
    assert [(j["kind"], j["epoch"]) for j in journal] == [
        ("start", 1),
        ("end", 1),
        ("start", 2),
        ("end", 2),
        ("start", 3),
        ("end", 3),
    ]
    starts, ends = journal[0::2], journal[1::2]
    offset = _core.read_clock(seg.buf)[1] - _core.read_clock(seg.buf)[0]
    for start, end in zip(starts, ends, strict=True):
        assert start["pid"] == end["pid"] == proc.pid
        assert end["cycles"] == end["cycle"] - start["cycle"] + 1 >= 30
        assert end["mono_ns"] >= start["mono_ns"]
        assert abs(start["real_ns"] - start["mono_ns"] - offset) < 1_000_000
        assert end["real_ns"] - start["real_ns"] == end["mono_ns"] - start["mono_ns"]
    assert starts[1]["cycle"] >= ends[0]["cycle"] + 20, "standby cycles between"
    assert starts[2]["cycle"] == ends[1]["cycle"] + 1, "an epoch change: a new interval at once"
    assert sum(e["cycles"] for e in ends) == st["actuated_cycles"], (journal, st["actuated_cycles"])
    assert (st["act_epoch"], st["act_first_cycle"], st["act_last_cycle"]) == (
        3,
        starts[2]["cycle"],
        ends[2]["cycle"],
    )
    assert st["act_interval_cycles"] == ends[2]["cycles"]
    assert st["act_last_mono_ns"] == ends[2]["mono_ns"]
    flips = [(e["a"], e["b"]) for e in drainer.drain("event") if e["kind"] == "actuating"]
    assert flips == [(1, 1), (0, 1), (1, 2), (0, 2), (1, 3), (0, 3)]
    seg.close()


def test_a_command_with_no_epoch_is_refused_by_a_fenced_node(spawn, shm_name):
    """Epoch 0 (a sender that never learnt an epoch) is older than any epoch."""
    proc = spawn.rt(shm_name, "--cpus", CPU, ACTUATE, "--epoch", "5")
    seg = open_when_ready(shm_name, proc, min_cycles=10)
    drainer = Drainer(seg.buf)
    writer = _core.RingWriter(seg.buf, "cmd")
    assert writer.push(command(reftask.CMD_SET_GAINS, seq=1, epoch=0, args=(1.0, 2.0, 3.0)))
    assert _acks(drainer, {1}) == {1: -errno.ESTALE}
    assert status(seg)["cmds_stale"] == 1
    seg.close()


def test_a_replicated_state_arriving_while_actuating_is_refused(spawn, shm_name):
    """A primary's state is its own: a checkpoint in the inbound slot, however
    new, is refused and counted, and the loop keeps its own state."""
    proc = spawn.rt(shm_name, "--cpus", CPU, ACTUATE, "--epoch", "2", "--ckpt-every", "5")
    seg = open_when_ready(shm_name, proc, min_cycles=10)
    drainer = Drainer(seg.buf)
    own = reftask.decode_state(seg.newest_checkpoint()[1])  # type: ignore[index]
    foreign = own.copy()
    foreign["kp"] = 12345.0
    task_id = seg.newest_checkpoint()[0]["task_id"]  # type: ignore[index]
    _core.write_checkpoint(
        seg.buf, _core.INBOUND, 10**6, 10**6, 99, task_id, foreign.tobytes(), origin=77
    )
    refused = collect(
        drainer,
        "log",
        lambda got: any("replicated checkpoint refused" in r["message"] for r in got),
        what="the refusal",
    )
    assert [r["fields"] for r in refused if "refused" in r["message"]] == [{"why": 3}]
    st = status(seg)
    assert st["inbound_refused"] == 1 and st["adopted_count"] == 0
    cycle = st["cycles"]
    meta, data = wait_for(
        lambda: (c := seg.newest_checkpoint()) and c[0]["cycle"] > cycle + 5 and c,
        what="a later checkpoint",
    )
    assert reftask.decode_state(data)["kp"] == own["kp"] != 12345.0
    assert meta["seq"] < 10**6 and not meta["flags"] & layout.CKPT_SHADOW
    seg.close()


def test_actuation_waits_for_room_for_both_ends_of_its_interval(spawn, shm_name):
    """The journal ring is never dropped from: with one free record the loop
    will not start an interval it could not close, and says so."""
    proc = spawn.rt(shm_name, "--cpus", CPU, "--standby", "--keep-shm")
    seg = open_when_ready(shm_name, proc, min_cycles=5)
    journal = _core.RingReader(seg.buf, "journal")
    cap = layout.JOURNAL_RING_CAP

    def flip(active: int) -> None:
        _core.write_control(seg.buf, active=active, epoch=1, lease_timeout_ns=0)
        wait_for(lambda: status(seg)["actuating"] == active, what=f"actuating == {active}")

    flip(1)
    assert len(journal.pop(cap)) == layout.JOURNAL_REC.itemsize, "the START, taken"
    flip(0)  # its END: one record in the ring
    for _ in range((cap - 2) // 2):
        flip(1)
        flip(0)
    head, tail = _core.ring_counters(seg.buf, "journal")[:2]
    assert head - tail == cap - 1, "one free record left"
    drainer = Drainer(seg.buf)
    drainer.drain("log")
    _core.write_control(seg.buf, active=1)
    held = collect(
        drainer,
        "log",
        lambda got: any(r["message"].startswith("actuation held") for r in got),
        what="the hold",
    )
    assert [r["fields"] for r in held if r["message"].startswith("actuation held")] == [{"room": 1}]
    assert status(seg)["actuating"] == 0
    assert _core.ring_counters(seg.buf, "journal")[3] == 0, "nothing dropped"
    recs = journal.pop(cap)
    assert len(recs) == (cap - 1) * layout.JOURNAL_REC.itemsize
    wait_for(lambda: status(seg)["actuating"] == 1, what="actuation once there is room")
    proc.send_signal(signal.SIGTERM)
    assert finish(proc)[0] == 0
    seg.close()
