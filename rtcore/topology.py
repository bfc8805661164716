"""CPU and NUMA topology as the kernel reports it in sysfs."""

from __future__ import annotations

import os

SYSFS = "/sys/devices/system"


class TopologyError(ValueError):
    """A CPU list is malformed or names CPUs or nodes this machine lacks."""


def parse_cpu_list(text: str) -> list[int]:
    """Parse the kernel's list format ('0-3,6,8-9') into sorted CPU numbers."""
    cpus: set[int] = set()
    text = text.strip()
    if not text:
        raise TopologyError("CPU list is empty")
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            first = int(lo)
            last = int(hi) if sep else first
        except ValueError:
            raise TopologyError(f"CPU list {text!r} is malformed at {part!r}") from None
        if first < 0 or last < first:
            raise TopologyError(f"CPU list {text!r} is malformed at {part!r}")
        cpus.update(range(first, last + 1))
    return sorted(cpus)


def format_cpu_list(cpus: list[int]) -> str:
    """Inverse of parse_cpu_list, with runs collapsed into ranges."""
    items = sorted(set(cpus))
    out: list[str] = []
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        out.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ",".join(out)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def online_cpus(sysfs: str = SYSFS) -> list[int]:
    try:
        return parse_cpu_list(_read(os.path.join(sysfs, "cpu", "online")))
    except OSError:
        return list(range(os.cpu_count() or 1))


def numa_nodes(sysfs: str = SYSFS) -> list[int]:
    """Online NUMA nodes; [0] on a kernel without NUMA sysfs."""
    try:
        return parse_cpu_list(_read(os.path.join(sysfs, "node", "online")))
    except OSError:
        return [0]


def node_cpus(node: int, sysfs: str = SYSFS) -> list[int]:
    try:
        return parse_cpu_list(_read(os.path.join(sysfs, "node", f"node{node}", "cpulist")))
    except OSError:
        if node == 0 and numa_nodes(sysfs) == [0]:
            return online_cpus(sysfs)
        raise TopologyError(f"NUMA node {node} does not exist") from None


def check_cpus(cpus: list[int], sysfs: str = SYSFS) -> None:
    online = set(online_cpus(sysfs))
    absent = [c for c in cpus if c not in online]
    if absent:
        raise TopologyError(
            f"CPU {format_cpu_list(absent)} does not exist or is offline "
            f"(online CPUs: {format_cpu_list(sorted(online))})"
        )


def check_node(node: int, sysfs: str = SYSFS) -> None:
    nodes = numa_nodes(sysfs)
    if node not in nodes:
        raise TopologyError(f"NUMA node {node} does not exist (nodes: {format_cpu_list(nodes)})")
