"""The machine around a measurement: settings both sides of a comparison
share, what else ran on the measured CPU, and what the machine is.

The power-management latency target cyclictest sets for itself is held for
our runs too, so neither side gets shallower idle states than the other; the
harness keeps off the measured CPU; and a Watch records other RT threads and
hypervisor steal there, since on a shared or virtual machine those, not the
code under test, often set the tail.
"""

from __future__ import annotations

import glob
import os
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from bench.runner import BenchError
from control.placement.isolation import detect_kernel_isolation
from rtcore import topology

PM_QOS_PATH = "/dev/cpu_dma_latency"
_PF_KTHREAD = 0x00200000
_RT_POLICIES = {1: "FIFO", 2: "RR"}


def default_cpu() -> int:
    """The highest-numbered online CPU: the one least likely to take housekeeping."""
    return max(topology.online_cpus())


def check_cpu(cpu: int) -> None:
    try:
        topology.check_cpus([cpu])
    except topology.TopologyError as e:
        raise BenchError(str(e)) from None


def other_cpus(cpu: int) -> list[int]:
    return [c for c in topology.online_cpus() if c != cpu]


@contextmanager
def pm_qos_zero() -> Iterator[dict]:
    """Hold /dev/cpu_dma_latency at 0 us (no deep C-states), as cyclictest does
    by default, for as long as the block runs. Yields what was applied."""
    try:
        fd = os.open(PM_QOS_PATH, os.O_WRONLY)
    except OSError as e:
        yield {"cpu_dma_latency_us": None, "note": f"cannot open {PM_QOS_PATH}: {e.strerror}"}
        return
    try:
        os.write(fd, struct.pack("i", 0))
        yield {"cpu_dma_latency_us": 0, "note": "held at 0 for every measured run"}
    finally:
        # the kernel drops the request when the file is closed
        os.close(fd)


def rt_threads_on(cpu: int, exclude_pid: int = 0) -> list[str]:
    """User-space SCHED_FIFO/RR threads allowed on cpu right now, other than
    those of exclude_pid, as 'pid/tid comm FIFO:prio': they compete with a
    measured run on that CPU."""
    found = []
    for stat_path in glob.glob("/proc/[0-9]*/task/[0-9]*/stat"):
        text = _read(stat_path)
        if not text:
            continue
        comm = text[text.find("(") + 1 : text.rfind(")")]
        f = text[text.rfind(")") + 2 :].split()
        flags, prio, policy = int(f[6]), int(f[37]), int(f[38])
        if policy not in _RT_POLICIES or flags & _PF_KTHREAD:
            continue
        pid, tid = stat_path.split("/")[2], stat_path.split("/")[4]
        if int(pid) == exclude_pid:
            continue
        try:
            if cpu not in os.sched_getaffinity(int(tid)):
                continue
        except OSError:
            continue
        found.append(f"{pid}/{tid} {comm} {_RT_POLICIES[policy]}:{prio}")
    return sorted(found)


def _steal_ticks(cpu: int) -> int | None:
    for line in (_read("/proc/stat") or "").splitlines():
        f = line.split()
        if f and f[0] == f"cpu{cpu}" and len(f) > 8:
            return int(f[8])
    return None


class Watch:
    """What else happened on a CPU while a measured program ran: other
    user-space RT threads (sampled on every tick) and the time the hypervisor
    stole from it (/proc/stat, in ticks of 1/CLK_TCK s)."""

    def __init__(self, cpu: int) -> None:
        self.cpu = cpu
        self.threads: set[str] = set()
        self._steal0 = _steal_ticks(cpu)
        self.tick()

    def tick(self, measured_pid: int = 0) -> None:
        self.threads.update(rt_threads_on(self.cpu, measured_pid))

    def result(self) -> dict:
        """Call right after the measured program ended."""
        self.tick()
        steal1 = _steal_ticks(self.cpu)
        steal_ms = None
        if self._steal0 is not None and steal1 is not None:
            steal_ms = (steal1 - self._steal0) * 1000 // os.sysconf("SC_CLK_TCK")
        return {"rt_threads": sorted(self.threads), "steal_ms": steal_ms}


@contextmanager
def kept_off(cpu: int) -> Iterator[None]:
    """Keep this thread (the harness, waiting and reading pipes) off the
    measured CPU. Children inherit the mask; the measured ones pin themselves."""
    old = os.sched_getaffinity(0)
    rest = set(other_cpus(cpu)) & old
    if not rest:
        yield
        return
    os.sched_setaffinity(0, rest)
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cpu_model() -> str | None:
    text = _read("/proc/cpuinfo") or ""
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return m.group(1).strip() if m else None


def _hypervisor() -> bool:
    text = _read("/proc/cpuinfo") or ""
    m = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    return bool(m and "hypervisor" in m.group(1).split())


def _preempt() -> str:
    if _read("/sys/kernel/realtime") == "1":
        return "PREEMPT_RT"
    # with debugfs mounted, a PREEMPT_DYNAMIC kernel names its current mode
    dyn = _read("/sys/kernel/debug/sched/preempt")
    if dyn:
        m = re.search(r"\((\w+)\)", dyn)
        if m:
            return f"PREEMPT_DYNAMIC ({m.group(1)})"
    version = os.uname().version.split()
    for name in ("PREEMPT_RT", "PREEMPT_DYNAMIC", "PREEMPT"):
        if name in version:
            return name
    return "none"


def describe() -> dict:
    isolated = detect_kernel_isolation()["isolcpus"]
    return {
        "kernel": os.uname().release,
        "cpu_model": _cpu_model(),
        "online_cpus": topology.format_cpu_list(topology.online_cpus()),
        "preempt": _preempt(),
        "isolcpus": topology.format_cpu_list(isolated) if isolated else None,
        "hypervisor": _hypervisor(),
    }
