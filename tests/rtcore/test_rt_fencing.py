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
