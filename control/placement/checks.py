"""What is checked before the isolation changes anything: each refusal is
one clear error that says what to do, and leaves the machine untouched."""

from __future__ import annotations

import os
from typing import Any

from control.errors import FailedPrecondition, InvalidArgument
from control.placement.cgroups import MOUNT_HINT, CgroupFS, CgroupInfo
from control.placement.journal import Journal
from control.placement.procfs import status_field
from rtcore import topology
from rtcore.topology import TopologyError, format_cpu_list, online_cpus, parse_cpu_list

CAP_SYS_ADMIN = 21


def check_cpus(cpus: Any, sys_root: str) -> list[int]:
    """Online CPU numbers that leave at least one CPU online for housekeeping."""
    if not isinstance(cpus, list | tuple) or not cpus:
        raise InvalidArgument("cpus", "name at least one CPU for the RT process")
    bad = [c for c in cpus if isinstance(c, bool) or not isinstance(c, int) or c < 0]
    if bad:
        raise InvalidArgument("cpus", f"{bad[0]!r} is not a CPU number")
    system = os.path.join(sys_root, "devices", "system")
    try:
        topology.check_cpus(list(cpus), system)
    except TopologyError as e:
        raise InvalidArgument("cpus", str(e)) from None
    online = online_cpus(system)
    if not set(online) - set(cpus):
        raise InvalidArgument("cpus", no_housekeeping(list(cpus), online))
    return sorted(set(cpus))


def check_mems(mems: Any, parent: list[int]) -> list[int]:
    """Memory nodes of the parent cpuset; None means all of them."""
    if mems is None:
        return parent
    if not isinstance(mems, list | tuple) or not mems:
        raise InvalidArgument("mems", "name at least one memory node, or none for all")
    stray = [m for m in mems if isinstance(m, bool) or not isinstance(m, int) or m not in parent]
    if stray:
        raise InvalidArgument(
            "mems",
            f"memory node {stray[0]!r} is not available (nodes: {format_cpu_list(parent)})",
        )
    return sorted(set(mems))


def check_pid(fs: CgroupFS, proc_root: str, pid: Any) -> None:
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise InvalidArgument("rt_pid", f"{pid!r} is not a process id")
    if not fs.exists(os.path.join(proc_root, str(pid))):
        raise InvalidArgument("rt_pid", f"no process {pid}")


def check_cgroup(fs: CgroupFS, cg: CgroupInfo) -> str:
    """The version of a mounted, writable cpuset hierarchy."""
    if cg.version is None:
        raise FailedPrecondition(cg.reason)
    if not fs.exists(cg.root):
        raise FailedPrecondition(
            f"the cgroup {cg.version} cpuset hierarchy {cg.root} is not there; "
            f"mount it: {MOUNT_HINT[cg.version]}"
        )
    if cg.read_only or not os.access(cg.root, os.W_OK):
        raise FailedPrecondition(
            f"the cgroup filesystem at {cg.root} is read-only here (a container without "
            f"cgroup write access?); remount it read-write: mount -o remount,rw {cg.root}"
        )
    return cg.version


def check_privilege(fs: CgroupFS, proc_root: str) -> None:
    status = fs.read(os.path.join(proc_root, "self", "status"))
    caps = int(status_field(status, "CapEff") or "0", 16)
    if not caps >> CAP_SYS_ADMIN & 1:
        raise FailedPrecondition(
            "moving other processes and IRQs off the RT CPUs needs CAP_SYS_ADMIN; run "
            "the agent as root (or grant it: systemd AmbientCapabilities=CAP_SYS_ADMIN)"
        )


def check_not_applied(fs: CgroupFS, journal: Journal, paths: tuple[str, ...]) -> None:
    if journal.exists():
        raise FailedPrecondition(
            f"CPU isolation is already in force (record {journal.path}); remove() it first"
        )
    left = [p for p in paths if fs.exists(p)]
    if left:
        raise FailedPrecondition(
            f"cpuset {left[0]} is left from an earlier run; remove() cleans it up"
        )


def parent_list(fs: CgroupFS, root: str, file: str) -> list[int]:
    """The CPUs or memory nodes of the hierarchy's root, from file."""
    path = os.path.join(root, file)
    try:
        return parse_cpu_list(fs.read(path))
    except (OSError, TopologyError) as e:
        raise FailedPrecondition(f"cannot read {path}: {e}") from None


def housekeeping(cpus: list[int], parent_cpus: list[int], root: str) -> list[int]:
    """The root's CPUs that the RT process leaves to everything else."""
    absent = [c for c in cpus if c not in parent_cpus]
    if absent:
        raise InvalidArgument(
            "cpus",
            f"CPU {format_cpu_list(absent)} is not available in {root} "
            f"(it has {format_cpu_list(parent_cpus)}); another partition holds it",
        )
    rest = [c for c in parent_cpus if c not in cpus]
    if not rest:
        raise InvalidArgument("cpus", no_housekeeping(cpus, parent_cpus))
    return rest


def no_housekeeping(cpus: list[int], available: list[int]) -> str:
    return (
        f"isolating CPU {format_cpu_list(cpus)} would leave no housekeeping CPU (available: "
        f"{format_cpu_list(available)}); leave at least one for the rest of the system"
    )
