"""The steady-state loop makes no system call but the clock's and allocates nothing.

Both are observed from outside on a real RT process: strace attached for a
few thousand cycles, and an LD_PRELOAD allocation counter read while it runs.
Meanwhile the test drives every path a cycle can take: commands (the loop's
and the task's), replicated checkpoints adopted while standby and one of another
task refused, actuation intervals opened and closed (journal), a span
tree on every cycle (--trace-ratio 1), task logs, and missed deadlines.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import time

import pytest

from rtcore import _core, layout
from rtcore.records import Drainer, command
from rtcore.segment import Segment
from tests.rtcore.rtproc import open_when_ready, status

CPU = str(max(os.sched_getaffinity(0)))
# clock_nanosleep is the loop's sleep; restart_syscall is the kernel resuming
# it after strace's attach interrupted it. clock_gettime is served by the vDSO.
CLOCK_CALLS = {"clock_nanosleep", "restart_syscall", "clock_gettime"}


# Counters that show each path ran while the loop was observed.
EXERCISED = ("cmds_applied", "adopted_count", "inbound_refused", "misses", "actuated_cycles")


def rt_args(build_task) -> list[str]:
    return [
        "--cpus",
        CPU,
        "--task",
        build_task("burn_task"),
        "--trace-ratio",
        "1",
        "--log-level",
        "DEBUG",
        "--standby",
    ]


class Exerciser:
    """Drives a running burn-task RT through every kind of cycle, from the
    test process, and drains what it records."""

    def __init__(self, seg: Segment) -> None:
        self.seg = seg
        self.drainer = Drainer(seg.buf)
        self.cmds = _core.RingWriter(seg.buf, "cmd")
        self.task_id = _core.crc32c(b"burn")
        self.foreign_id = _core.crc32c(b"another task")
        self.seq = 1 << 20  # replicated checkpoints: above anything the RT wrote itself
        self.cmd_seq = 0
        self.records = 0

    def spans(self) -> int:
        return _core.ring_counters(self.seg.buf, "span")[2]

    def run(self, seconds: float) -> dict[str, int]:
        before = status(self.seg)
        spans = self.spans()
        start = time.monotonic()
        tick = 0
        while time.monotonic() - start < seconds:
            tick += 1
            self.cmd_seq += 1
            self.cmds.push(command(layout.CMD_NOP, seq=self.cmd_seq))
            if tick % 25 == 0:  # the task burns 3 ms on its next step: a missed deadline
                self.cmd_seq += 1
                self.cmds.push(command(layout.CMD_TASK, seq=self.cmd_seq))
            if tick % 15 == 0:  # actuate for a while, then back to standby
                _core.write_control(self.seg.buf, active=(tick // 15) % 2, lease_timeout_ns=0)
            own = self.seg.newest_checkpoint()
            if own is not None:
                # now and then one of another task, which is refused
                task_id = self.foreign_id if tick % 10 == 0 else self.task_id
                self.seq += 1
                cycle = status(self.seg)["cycles"]
                _core.write_checkpoint(
                    self.seg.buf, _core.INBOUND, self.seq, cycle, 0, task_id, own[1]
                )
            for ring in ("log", "span", "event", "journal"):
                self.records += len(self.drainer.drain_batch(ring))
            time.sleep(0.02)
        _core.write_control(self.seg.buf, active=0)
        after = status(self.seg)
        done = {k: after[k] - before[k] for k in EXERCISED}
        done["spans"] = self.spans() - spans
        done["cycles"] = after["cycles"] - before["cycles"]
        return done


def assert_exercised(done: dict[str, int]) -> None:
    for what, n in done.items():
        assert n > 0, f"no {what} while observed: {done}"


def strace_summary(pid: int, seconds: float, out: str, exercise: Exerciser) -> tuple:
    tracer = subprocess.Popen(
        ["strace", "-f", "-c", "-q", "-o", out, "-p", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.3)  # strace attached
        done = exercise.run(seconds)
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=10)
    finally:
        if tracer.poll() is None:
            tracer.kill()
            tracer.wait(timeout=5)
    calls: dict[str, int] = {}
    with open(out) as f:
        for line in f:
            m = re.match(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
            if m and m.group(2) != "total":
                calls[m.group(2)] = int(m.group(1))
    return calls, done


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_steady_state_loop_only_calls_the_clock(spawn, shm_name, tmp_path, build_task):
    proc = spawn.rt(shm_name, *rt_args(build_task))
    seg = open_when_ready(shm_name, proc, min_cycles=200)
    calls, done = strace_summary(proc.pid, 3.0, str(tmp_path / "strace.txt"), Exerciser(seg))
    assert_exercised(done)
    assert done["cycles"] >= 2000, "a few thousand cycles ran under strace"
    assert calls.get("clock_nanosleep", 0) >= 1000, f"strace saw the loop's sleeps: {calls}"
    assert set(calls) <= CLOCK_CALLS, f"unexpected system calls in the loop: {calls}"
    seg.close()


def test_steady_state_loop_allocates_nothing(spawn, shm_name, build_task, tmp_path):
    counter = tmp_path / "allocs"
    env = dict(os.environ, LD_PRELOAD=build_task("alloc_counter"), RTC_ALLOC_COUNTER=str(counter))
    proc = spawn.rt(shm_name, *rt_args(build_task), env=env)
    seg = open_when_ready(shm_name, proc, min_cycles=300)
    exercise = Exerciser(seg)

    def allocations() -> int:
        return struct.unpack("<Q", counter.read_bytes()[:8])[0]

    first = allocations()
    done = exercise.run(2.0)
    second = allocations()
    assert first > 1000, "the interposer saw Python's start-up allocations"
    assert_exercised(done)
    assert done["cycles"] >= 1000
    assert second == first, f"{second - first} allocations during {done}"
    seg.close()
