"""Which cgroup hierarchy holds the cpuset controller, and the file
operations on it.

Every kernel file and affinity operation of the isolation goes through
`CgroupFS`, so tests can stand a fake kernel in for it and say which kernel
behaviour they emulate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from control.errors import FailedPrecondition
from control.placement.procfs import read_or_empty, unescape

MOUNT_HINT = {
    "v1": "mount -t cgroup -o cpuset cpuset /sys/fs/cgroup/cpuset",
    "v2": "mount -t cgroup2 none /sys/fs/cgroup",
}
# the file listing a cgroup's members: thread ids under v1, process ids under v2
MEMBERS = {"v1": "tasks", "v2": "cgroup.procs"}
# a parent's CPUs and memory nodes (the v2 root has only the effective files)
PARENT_CPUS = {"v1": "cpuset.cpus", "v2": "cpuset.cpus.effective"}
PARENT_MEMS = {"v1": "cpuset.mems", "v2": "cpuset.mems.effective"}


@dataclass(frozen=True)
class CgroupInfo:
    version: str | None  # "v1", "v2", or None when no cpuset controller is mounted
    root: str  # mount point of the hierarchy holding cpuset ("" when version is None)
    read_only: bool = False
    reason: str = ""  # why version is None, and the fix


class CgroupFS:
    """The kernel file and affinity operations the Isolator makes."""

    def read(self, path: str) -> str:
        with open(path) as f:
            return f.read()

    def write(self, path: str, text: str) -> None:
        # one write(2) without O_CREAT: cgroupfs acts on each write, and its errno is the answer
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        except OSError as e:
            raise OSError(e.errno, e.strerror, path) from None
        finally:
            os.close(fd)

    def mkdir(self, path: str) -> None:
        os.mkdir(path)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def listdir(self, path: str) -> list[str]:
        return os.listdir(path)

    def set_affinity(self, tid: int, cpus: list[int]) -> None:
        os.sched_setaffinity(tid, cpus)


def detect_cgroup(mounts: str = "/proc/self/mounts") -> CgroupInfo:
    """The mounted hierarchy with the cpuset controller: v1 (a cgroup mount
    with the cpuset option) or v2 (a cgroup2 mount listing cpuset)."""
    try:
        with open(mounts) as f:
            lines = f.read().splitlines()
    except OSError as e:
        return CgroupInfo(None, "", reason=f"cannot read {mounts} ({e.strerror})")
    v2_without: list[str] = []
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        point, fstype, opts = unescape(fields[1]), fields[2], fields[3].split(",")
        if fstype == "cgroup" and "cpuset" in opts:
            return CgroupInfo("v1", point, read_only="ro" in opts)
        if fstype == "cgroup2":
            controllers = read_or_empty(os.path.join(point, "cgroup.controllers")).split()
            if "cpuset" in controllers:
                return CgroupInfo("v2", point, read_only="ro" in opts)
            v2_without.append(point)
    return CgroupInfo(None, "", reason=_no_cpuset_reason(v2_without))


def _no_cpuset_reason(v2_without: list[str]) -> str:
    if v2_without:
        return (
            f"no cpuset controller: the cgroup v2 hierarchy at {v2_without[0]} does not "
            "offer it (it is bound to a cgroup v1 hierarchy, or the kernel lacks "
            f"CONFIG_CPUSETS); mount it: {MOUNT_HINT['v1']}"
        )
    return (
        "no cgroup filesystem with the cpuset controller is mounted; mount one: "
        f"{MOUNT_HINT['v2']} (or for cgroup v1: {MOUNT_HINT['v1']})"
    )


def cpuset_paths(root: str, name: str) -> tuple[str, str]:
    """The RT cpuset and the (v1 only) housekeeping cpuset of an Isolator named name."""
    return os.path.join(root, f"{name}-rt"), os.path.join(root, f"{name}-housekeeping")


def members(fs: CgroupFS, path: str, version: str) -> list[int]:
    """Tasks (v1) or processes (v2) of a cgroup; [] once it is gone."""
    try:
        return [int(t) for t in fs.read(os.path.join(path, MEMBERS[version])).split()]
    except FileNotFoundError:
        return []


def must_read(fs: CgroupFS, path: str) -> str:
    try:
        return fs.read(path)
    except OSError as e:
        raise FailedPrecondition(f"cannot read {path}: {e.strerror}") from None


def must_write(fs: CgroupFS, path: str, text: str) -> None:
    try:
        fs.write(path, text)
    except OSError as e:
        raise FailedPrecondition(f"writing {text!r} to {path} failed: {e.strerror}") from None


def read_or_blank(fs: CgroupFS, path: str) -> str:
    try:
        return fs.read(path).strip()
    except OSError:
        return ""
