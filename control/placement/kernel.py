"""The kernel's own CPU isolation: what the boot parameters isolcpus,
nohz_full and rcu_nocbs ask for, and what sysfs says is in force.

Reported next to the cpuset isolation: a cpuset keeps tasks off the RT CPUs,
but only the boot parameters also keep the scheduler tick and RCU callbacks
away from them.
"""

from __future__ import annotations

import os
from typing import Any

from control.placement.procfs import read_or_empty
from rtcore.topology import TopologyError, online_cpus, parse_cpu_list


def detect_kernel_isolation(proc_root: str = "/proc", sys_root: str = "/sys") -> dict[str, Any]:
    """Boot parameters isolcpus, nohz_full, rcu_nocbs and what sysfs says is in force."""
    system = os.path.join(sys_root, "devices", "system")
    last = max(online_cpus(system))
    params = _boot_params(read_or_empty(os.path.join(proc_root, "cmdline")))
    notes: list[str] = []
    flags, isolcpus = _split_isolcpus(params.get("isolcpus", ""))
    return {
        "isolcpus": _boot_cpus("isolcpus", isolcpus, last, notes),
        "isolcpus_flags": flags,
        "nohz_full": _boot_cpus("nohz_full", params.get("nohz_full", ""), last, notes),
        "rcu_nocbs": _boot_cpus("rcu_nocbs", params.get("rcu_nocbs", ""), last, notes),
        "isolated": _sysfs_cpus(os.path.join(system, "cpu", "isolated")),
        "nohz_full_active": _sysfs_cpus(os.path.join(system, "cpu", "nohz_full")),
        "notes": notes,
    }


def _boot_params(cmdline: str) -> dict[str, str]:
    """Kernel parameters as key -> value ('' for a bare flag); words after '--' are init's."""
    params: dict[str, str] = {}
    for word in cmdline.split():
        if word == "--":
            break
        key, _, value = word.partition("=")
        params[key] = value
    return params


def _split_isolcpus(value: str) -> tuple[list[str], str]:
    # as the kernel reads it: leading alphabetic words followed by ',' are flags
    flags: list[str] = []
    while value[:1].isalpha() and "," in value:
        flag, _, value = value.partition(",")
        flags.append(flag)
    return flags, value


def _boot_cpus(name: str, text: str, last: int, notes: list[str]) -> list[int]:
    # a list the kernel would reject must not stop the report: it becomes a note
    if not text:
        return []
    try:
        return _kernel_cpu_list(text, last)
    except (TopologyError, ValueError) as e:
        notes.append(f"{name}={text} not understood: {e}")
        return []


def _kernel_cpu_list(text: str, last: int) -> list[int]:
    """The boot-parameter CPU list: parse_cpu_list plus 'all', 'N' (the last
    CPU) and 'first-last:used/group' strides."""
    if text == "all":
        return list(range(last + 1))
    cpus: set[int] = set()
    for part in text.split(","):
        span, _, stride = part.partition(":")
        found = parse_cpu_list(span.replace("N", str(last)))
        if stride:
            used, _, size = stride.partition("/")
            group = int(size)
            if group <= 0:
                raise ValueError(f"group size {size!r} in {part!r}")
            found = [c for c in found if (c - found[0]) % group < int(used)]
        cpus.update(found)
    return sorted(cpus)


def _sysfs_cpus(path: str) -> list[int]:
    text = read_or_empty(path).strip()
    return parse_cpu_list(text) if text else []
