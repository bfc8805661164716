"""RT records carry CLOCK_MONOTONIC; converted with the segment's anchor
they are wall-clock times within 1 ms of the wall clock beside them."""

from __future__ import annotations

import os
import time

from rtcore import _core, layout
from rtcore.records import Drainer, command
from tests.rtcore.rtproc import open_when_ready

CPU = str(max(os.sched_getaffinity(0)))
SLACK_NS = 1_000_000
BAD_KIND = 7  # neither NOP nor a task kind: refused with a WARN record


def test_record_wall_time_is_within_1ms_of_the_wall_clock(spawn, shm_name):
    proc = spawn.rt(shm_name, "--cpus", CPU, "--period-us", "1000")
    seg = open_when_ready(shm_name, proc, min_cycles=20)
    drainer = Drainer(seg.buf)
    drainer.drain("event")
    drainer.drain("log")
    writer = _core.RingWriter(seg.buf, "cmd")
    for seq in range(1, 41):
        kind = layout.CMD_NOP if seq % 2 else BAD_KIND
        before = time.time_ns()
        assert writer.push(command(kind, seq=seq))
        ack = log = None
        deadline = time.monotonic() + 2
        while ack is None or (kind == BAD_KIND and log is None):
            assert time.monotonic() < deadline, f"no ack of command {seq}"
            for e in drainer.drain("event"):
                if e["kind"] == "command_ack" and e["a"] == seq:
                    ack = e
            for r in drainer.drain("log"):
                if r["fields"].get("seq") == seq:
                    log = r
        after = time.time_ns()
        # the record was made between the push and its reception
        assert before - SLACK_NS <= ack["time_ns"] <= after + SLACK_NS, (before, ack, after)
        if log is not None:
            assert log["cycle"] == ack["cycle"]
            assert before - SLACK_NS <= log["time_ns"] <= after + SLACK_NS, (before, log, after)
    seg.close()
