"""The steady-state loop makes no system call but the clock's and allocates nothing.

Both are observed from outside on a real RT process: strace attached for a
few thousand cycles, and an LD_PRELOAD allocation counter read while it runs.
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

from tests.rtcore.rtproc import open_when_ready, status

CPU = str(max(os.sched_getaffinity(0)))
# clock_nanosleep is the loop's sleep; restart_syscall is the kernel resuming
# it after strace's attach interrupted it. clock_gettime is served by the vDSO.
CLOCK_CALLS = {"clock_nanosleep", "restart_syscall", "clock_gettime"}


def strace_summary(pid: int, seconds: float, out: str) -> dict[str, int]:
    tracer = subprocess.Popen(
        ["strace", "-f", "-c", "-q", "-o", out, "-p", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(seconds)
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
    return calls


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_steady_state_loop_only_calls_the_clock(spawn, shm_name, tmp_path):
    proc = spawn.rt(shm_name, "--cpus", CPU, "--trace-every", "10", "--log-level", "DEBUG")
    seg = open_when_ready(shm_name, proc, min_cycles=200)
    before = status(seg)["cycles"]
    calls = strace_summary(proc.pid, 3.0, str(tmp_path / "strace.txt"))
    after = status(seg)["cycles"]
    assert after - before >= 2000, "a few thousand cycles ran under strace"
    assert calls.get("clock_nanosleep", 0) >= 1000, f"strace saw the loop's sleeps: {calls}"
    assert set(calls) <= CLOCK_CALLS, f"unexpected system calls in the loop: {calls}"
    seg.close()


def test_steady_state_loop_allocates_nothing(spawn, shm_name, build_task, tmp_path):
    counter = tmp_path / "allocs"
    env = dict(os.environ, LD_PRELOAD=build_task("alloc_counter"), RTC_ALLOC_COUNTER=str(counter))
    proc = spawn.rt(shm_name, "--cpus", CPU, "--trace-every", "10", env=env)
    seg = open_when_ready(shm_name, proc, min_cycles=300)

    def allocations() -> int:
        return struct.unpack("<Q", counter.read_bytes()[:8])[0]

    first, cycles_first = allocations(), status(seg)["cycles"]
    time.sleep(2.0)
    second, cycles_second = allocations(), status(seg)["cycles"]
    assert first > 1000, "the interposer saw Python's start-up allocations"
    assert cycles_second - cycles_first >= 1000
    assert second == first, (
        f"{second - first} allocations during {cycles_second - cycles_first} cycles"
    )
    seg.close()
