"""Exclusive CPUs for the RT process.

`Isolator.apply` gives the RT process a cpuset of its own -- an exclusive
cpuset under cgroup v1, an isolated partition under cgroup v2 -- and moves
what else can move to the remaining ("housekeeping") CPUs: under v1 every
task of the root cpuset, under v2 nothing (the partition takes its CPUs away
from the rest of the hierarchy), and under both every IRQ that allows it.

Every change is written to a JSON record before it is made, so the isolation
of a crashed agent is undone by the next one (`recover`). Undo steps act only
on what is still ours (tasks still in our cpusets, cpusets we created), so
undoing a change that was recorded but never made is harmless.

Tasks in other v1 cpusets (containers, slices) stay where they are even when
those cpusets share the RT CPUs: moving them would break their owners' limits,
and the owners may move them back at any time. Such cpusets are reported as
`overlapping`; they are also why cpuset.cpu_exclusive may be refused.

Every kernel file and affinity operation goes through `CgroupFS`, so tests can
stand a fake kernel in for it and say which kernel behaviour they emulate.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from typing import Any, NoReturn

from control.errors import ControlError, FailedPrecondition, InvalidArgument
from rtcore.topology import (
    TopologyError,
    check_cpus,
    format_cpu_list,
    online_cpus,
    parse_cpu_list,
)

CAP_SYS_ADMIN = 21
RECORD_FORMAT = 1
# task lists are read again this often, to catch tasks forked during a pass
MAX_PASSES = 5
RMDIR_TRIES = 20
RMDIR_WAIT_S = 0.05
# the kernel will not move PF_NO_SETAFFINITY kernel threads (EINVAL) nor a
# SCHED_DEADLINE task whose bandwidth does not fit (EBUSY)
_UNMOVABLE = (errno.EINVAL, errno.EBUSY)
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_MOUNT_HINT = {
    "v1": "mount -t cgroup -o cpuset cpuset /sys/fs/cgroup/cpuset",
    "v2": "mount -t cgroup2 none /sys/fs/cgroup",
}
# the file listing a cgroup's members: thread ids under v1, process ids under v2
_MEMBERS = {"v1": "tasks", "v2": "cgroup.procs"}
# a parent's CPUs and memory nodes (the v2 root has only the effective files)
_PARENT_CPUS = {"v1": "cpuset.cpus", "v2": "cpuset.cpus.effective"}
_PARENT_MEMS = {"v1": "cpuset.mems", "v2": "cpuset.mems.effective"}


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


# ---- the kernel's own isolation ------------------------------------------


def detect_kernel_isolation(proc_root: str = "/proc", sys_root: str = "/sys") -> dict[str, Any]:
    """Boot parameters isolcpus, nohz_full, rcu_nocbs and what sysfs says is in force."""
    system = os.path.join(sys_root, "devices", "system")
    last = max(online_cpus(system))
    params = _boot_params(_read_or_empty(os.path.join(proc_root, "cmdline")))
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
    text = _read_or_empty(path).strip()
    return parse_cpu_list(text) if text else []


def _read_or_empty(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


# ---- which cgroup hierarchy holds cpuset ------------------------------------


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
        point, fstype, opts = _unescape(fields[1]), fields[2], fields[3].split(",")
        if fstype == "cgroup" and "cpuset" in opts:
            return CgroupInfo("v1", point, read_only="ro" in opts)
        if fstype == "cgroup2":
            controllers = _read_or_empty(os.path.join(point, "cgroup.controllers")).split()
            if "cpuset" in controllers:
                return CgroupInfo("v2", point, read_only="ro" in opts)
            v2_without.append(point)
    return CgroupInfo(None, "", reason=_no_cpuset_reason(v2_without))


def _unescape(field: str) -> str:
    # /proc/self/mounts writes space, tab, newline and backslash as octal escapes
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _no_cpuset_reason(v2_without: list[str]) -> str:
    if v2_without:
        return (
            f"no cpuset controller: the cgroup v2 hierarchy at {v2_without[0]} does not "
            "offer it (it is bound to a cgroup v1 hierarchy, or the kernel lacks "
            f"CONFIG_CPUSETS); mount it: {_MOUNT_HINT['v1']}"
        )
    return (
        "no cgroup filesystem with the cpuset controller is mounted; mount one: "
        f"{_MOUNT_HINT['v2']} (or for cgroup v1: {_MOUNT_HINT['v1']})"
    )


# ---- the isolator ---------------------------------------------------------


class Isolator:
    """Exclusive CPUs for one RT process; its cpusets are `<name>-rt` and
    (v1) `<name>-housekeeping`, its undo record is state_path."""

    def __init__(
        self,
        name: str,
        state_path: str,
        cgroup: CgroupInfo | None = None,
        proc_root: str = "/proc",
        irq_root: str = "/proc/irq",
        sys_root: str = "/sys",
        fs: CgroupFS | None = None,
    ) -> None:
        if not _NAME.match(name):
            raise InvalidArgument("name", f"{name!r} cannot name a cgroup (use [A-Za-z0-9_.-])")
        self.name = name
        self.state_path = state_path
        self.proc_root = proc_root
        self.irq_root = irq_root
        self.sys_root = sys_root
        self.fs = fs or CgroupFS()
        self._cgroup = cgroup

    @property
    def cgroup(self) -> CgroupInfo:
        if self._cgroup is None:
            self._cgroup = detect_cgroup(os.path.join(self.proc_root, "self", "mounts"))
        return self._cgroup

    # ---- public operations ---------------------------------------------------

    def apply(self, rt_pid: int, cpus: list[int], mems: list[int] | None = None) -> dict[str, Any]:
        """Give rt_pid exclusive use of cpus; all or nothing."""
        t0 = time.monotonic()
        rec = self._plan(rt_pid, cpus, mems)
        try:
            self._save(rec)
        except OSError as e:
            raise FailedPrecondition(
                f"cannot write the isolation record {self.state_path}: {e.strerror}"
            ) from None
        try:
            report = self._apply_v1(rec) if rec["version"] == "v1" else self._apply_v2(rec)
            report.update(self._move_irqs(rec))
            self._check_rt_inside(rec)
            rec["phase"] = "applied"
            self._save(rec)
        except BaseException as e:
            self._roll_back(rec, e)
        report.update(
            version=rec["version"],
            root=rec["root"],
            rt_pid=rt_pid,
            cpus=rec["cpus"],
            housekeeping=rec["housekeeping"],
            mems=rec["mems"],
            kernel_isolation=detect_kernel_isolation(self.proc_root, self.sys_root),
            elapsed_ms=_ms_since(t0),
        )
        return report

    def remove(self) -> dict[str, Any]:
        """Undo the isolation in force: from the record, or by name when the
        record is gone. Nothing in force: {'removed': False}."""
        t0 = time.monotonic()
        rec = self._load() or self._orphans()
        if rec is None:
            return {"removed": False, "elapsed_ms": _ms_since(t0)}
        report, problems = self._undo(rec)
        if problems:
            raise FailedPrecondition(
                f"isolation only partly undone: {'; '.join(problems)}; the record stays in "
                f"{self.state_path}, run remove() again"
            )
        self._forget()
        report.update(removed=True, elapsed_ms=_ms_since(t0))
        return report

    def recover(self) -> dict[str, Any] | None:
        """At start-up: undo what a previous (crashed) run left in force, if anything."""
        if self._load() is None and self._orphans() is None:
            return None
        return self.remove()

    def show(self) -> dict[str, Any]:
        """What is in force: our cpusets, the RT process, the IRQs still on the RT CPUs."""
        rec = self._load()
        cg = CgroupInfo(rec["version"], rec["root"]) if rec else self.cgroup
        out: dict[str, Any] = {
            "applied": bool(rec and rec["phase"] == "applied"),
            "version": cg.version,
            "root": cg.root,
            "reason": cg.reason,
            "cpus": rec["cpus"] if rec else [],
            "housekeeping": rec["housekeeping"] if rec else [],
            "rt_pid": rec["rt_pid"] if rec else None,
            "rt_pid_in_rt": False,
            "cpusets": [],
            "irqs_on_rt_cpus": [],
            "kernel_isolation": detect_kernel_isolation(self.proc_root, self.sys_root),
        }
        if cg.version is None:
            return out
        paths = [p for p in self._paths(cg.root) if self.fs.exists(p)]
        out["cpusets"] = [self._describe(p, cg.version) for p in paths]
        if rec:
            out["rt_pid_in_rt"] = self._in_rt(rec["rt_pid"], cg)
            out["irqs_on_rt_cpus"] = self._irqs_on(set(rec["cpus"]))
        return out

    def update_rt_pid(self, pid: int) -> dict[str, Any]:
        """Put a restarted RT process into the RT cpuset of the isolation in force."""
        t0 = time.monotonic()
        rec = self._load()
        if rec is None or rec["phase"] != "applied":
            raise FailedPrecondition("no CPU isolation is in force; apply() it first")
        self._check_pid(pid)
        rec["rt_pid"] = pid
        threads = self._move_process(rec, self._paths(rec["root"])[0], pid)
        self._check_rt_inside(rec)
        self._save(rec)
        return {"rt_pid": pid, "rt_threads_moved": threads, "elapsed_ms": _ms_since(t0)}

    def rt_procs_file(self) -> str | None:
        """cgroup.procs of the RT cpuset while isolation is in force, else None.

        A restarted RT process must write 0 there (joining it) before it pins
        itself: outside the RT cpuset its own sched_setaffinity to the RT CPUs
        fails, and update_rt_pid comes too late for that."""
        rec = self._load()
        if rec is None or rec["phase"] != "applied":
            return None
        return os.path.join(self._paths(rec["root"])[0], "cgroup.procs")

    # ---- validation (no changes) -------------------------------------------

    def _plan(self, rt_pid: int, cpus: list[int], mems: list[int] | None) -> dict[str, Any]:
        cpus = self._check_cpus(cpus)
        self._check_pid(rt_pid)
        cg = self._check_cgroup()
        self._check_privilege()
        self._check_not_applied(cg)
        parent_cpus = self._parent_list(cg, _PARENT_CPUS)
        absent = [c for c in cpus if c not in parent_cpus]
        if absent:
            raise InvalidArgument(
                "cpus",
                f"CPU {format_cpu_list(absent)} is not available in {cg.root} "
                f"(it has {format_cpu_list(parent_cpus)}); another partition holds it",
            )
        housekeeping = [c for c in parent_cpus if c not in cpus]
        if not housekeeping:
            raise InvalidArgument("cpus", _no_housekeeping(cpus, parent_cpus))
        return {
            "format": RECORD_FORMAT,
            "name": self.name,
            "version": cg.version,
            "root": cg.root,
            "phase": "applying",
            "rt_pid": rt_pid,
            "cpus": cpus,
            "housekeeping": housekeeping,
            "mems": self._check_mems(mems, self._parent_list(cg, _PARENT_MEMS)),
            "cgroups": [],
            "tasks": {},
            "irqs": {},
            "load_balance": None,
            "subtree_enabled": False,
        }

    def _check_cpus(self, cpus: list[int]) -> list[int]:
        if not isinstance(cpus, list | tuple) or not cpus:
            raise InvalidArgument("cpus", "name at least one CPU for the RT process")
        bad = [c for c in cpus if isinstance(c, bool) or not isinstance(c, int) or c < 0]
        if bad:
            raise InvalidArgument("cpus", f"{bad[0]!r} is not a CPU number")
        system = os.path.join(self.sys_root, "devices", "system")
        try:
            check_cpus(list(cpus), system)
        except TopologyError as e:
            raise InvalidArgument("cpus", str(e)) from None
        online = online_cpus(system)
        if not set(online) - set(cpus):
            raise InvalidArgument("cpus", _no_housekeeping(list(cpus), online))
        return sorted(set(cpus))

    def _check_mems(self, mems: list[int] | None, parent: list[int]) -> list[int]:
        if mems is None:
            return parent
        if not isinstance(mems, list | tuple) or not mems:
            raise InvalidArgument("mems", "name at least one memory node, or none for all")
        stray = [
            m for m in mems if isinstance(m, bool) or not isinstance(m, int) or m not in parent
        ]
        if stray:
            raise InvalidArgument(
                "mems",
                f"memory node {stray[0]!r} is not available (nodes: {format_cpu_list(parent)})",
            )
        return sorted(set(mems))

    def _check_pid(self, pid: int) -> None:
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise InvalidArgument("rt_pid", f"{pid!r} is not a process id")
        if not self.fs.exists(os.path.join(self.proc_root, str(pid))):
            raise InvalidArgument("rt_pid", f"no process {pid}")

    def _check_cgroup(self) -> CgroupInfo:
        cg = self.cgroup
        if cg.version is None:
            raise FailedPrecondition(cg.reason)
        if not self.fs.exists(cg.root):
            raise FailedPrecondition(
                f"the cgroup {cg.version} cpuset hierarchy {cg.root} is not there; "
                f"mount it: {_MOUNT_HINT[cg.version]}"
            )
        if cg.read_only or not os.access(cg.root, os.W_OK):
            raise FailedPrecondition(
                f"the cgroup filesystem at {cg.root} is read-only here (a container without "
                f"cgroup write access?); remount it read-write: mount -o remount,rw {cg.root}"
            )
        return cg

    def _check_privilege(self) -> None:
        status = self.fs.read(os.path.join(self.proc_root, "self", "status"))
        caps = int(_status_field(status, "CapEff") or "0", 16)
        if not caps >> CAP_SYS_ADMIN & 1:
            raise FailedPrecondition(
                "moving other processes and IRQs off the RT CPUs needs CAP_SYS_ADMIN; run "
                "the agent as root (or grant it: systemd AmbientCapabilities=CAP_SYS_ADMIN)"
            )

    def _check_not_applied(self, cg: CgroupInfo) -> None:
        if os.path.exists(self.state_path):
            raise FailedPrecondition(
                f"CPU isolation is already in force (record {self.state_path}); remove() it first"
            )
        left = [p for p in self._paths(cg.root) if self.fs.exists(p)]
        if left:
            raise FailedPrecondition(
                f"cpuset {left[0]} is left from an earlier run; remove() cleans it up"
            )

    def _parent_list(self, cg: CgroupInfo, files: dict[str, str]) -> list[int]:
        assert cg.version is not None
        path = os.path.join(cg.root, files[cg.version])
        try:
            return parse_cpu_list(self.fs.read(path))
        except (OSError, TopologyError) as e:
            raise FailedPrecondition(f"cannot read {path}: {e}") from None

    # ---- cgroup v1 -----------------------------------------------------------

    def _apply_v1(self, rec: dict[str, Any]) -> dict[str, Any]:
        rt, hk = self._paths(rec["root"])
        self._make_cpuset(rec, rt, rec["cpus"])
        exclusive, note = self._make_exclusive(rt, rec["cpus"])
        self._make_cpuset(rec, hk, rec["housekeeping"])
        threads = self._move_process(rec, rt, rec["rt_pid"])
        split = self._split_load_balance(rec, rt)
        moved, skipped, vanished = self._move_root_tasks(rec, hk)
        return {
            "rt_cgroup": rt,
            "housekeeping_cgroup": hk,
            "rt_threads_moved": threads,
            "tasks_moved": moved,
            "tasks_skipped": skipped,
            "tasks_vanished": vanished,
            "exclusive": exclusive,
            "exclusive_note": note,
            "partition": None,
            "load_balance_split": split,
            "overlapping": self._overlapping(rec),
        }

    def _make_exclusive(self, rt: str, cpus: list[int]) -> tuple[bool, str]:
        try:
            self.fs.write(os.path.join(rt, "cpuset.cpu_exclusive"), "1")
        except OSError as e:
            # EINVAL: a sibling cpuset shares these CPUs (see `overlapping`)
            return False, (
                f"cpuset.cpu_exclusive refused ({e.strerror}): another cpuset shares "
                f"CPU {format_cpu_list(cpus)}"
            )
        return True, ""

    def _split_load_balance(self, rec: dict[str, Any], rt: str) -> bool:
        # While the root cpuset balances load over all CPUs the scheduler keeps one
        # domain spanning the RT CPUs too; turned off there, the housekeeping cpuset
        # is the only balanced domain and the RT CPUs are in none (as isolcpus=domain).
        root_file = os.path.join(rec["root"], "cpuset.sched_load_balance")
        try:
            self.fs.write(os.path.join(rt, "cpuset.sched_load_balance"), "0")
            rec["load_balance"] = self.fs.read(root_file).strip()
            self._save(rec)
            self.fs.write(root_file, "0")
        except OSError:
            return False
        return True

    def _move_root_tasks(self, rec: dict[str, Any], hk: str) -> tuple[int, int, int]:
        """Every task of the root cpuset that the kernel lets move goes to hk."""
        moved = 0
        refused: set[int] = set()
        gone: set[int] = set()
        for _ in range(MAX_PASSES):
            pending = [t for t in self._members(rec["root"], "v1") if t not in refused]
            if not pending:
                break
            self._record(rec, pending, "/")
            self._save(rec)
            for tid in pending:
                outcome = self._move_task(hk, tid)
                if outcome == "moved":
                    moved += 1
                elif outcome == "refused":
                    refused.add(tid)
                else:
                    gone.add(tid)
        for tid in refused | gone:
            rec["tasks"].pop(str(tid), None)
        return moved, len(refused), len(gone)

    def _move_task(self, cgroup: str, tid: int) -> str:
        try:
            self.fs.write(os.path.join(cgroup, "tasks"), str(tid))
        except OSError as e:
            if e.errno == errno.ESRCH:
                return "gone"
            if e.errno in _UNMOVABLE:
                return "refused"
            raise FailedPrecondition(
                f"cannot move task {tid} into {cgroup}: {e.strerror}"
            ) from None
        return "moved"

    def _overlapping(self, rec: dict[str, Any]) -> list[dict[str, Any]]:
        """Other cpusets sharing the RT CPUs; their tasks are left alone (module doc)."""
        out = []
        for entry in sorted(self.fs.listdir(rec["root"])):
            path = os.path.join(rec["root"], entry)
            if path in rec["cgroups"]:
                continue
            try:
                cpus = parse_cpu_list(self.fs.read(os.path.join(path, "cpuset.cpus")))
            except (OSError, TopologyError):
                continue  # a control file, or a cpuset with no CPUs
            if set(cpus) & set(rec["cpus"]):
                tasks = len(self._members(path, "v1"))
                out.append({"path": path, "cpus": format_cpu_list(cpus), "tasks": tasks})
        return out

    # ---- cgroup v2 -----------------------------------------------------------

    def _apply_v2(self, rec: dict[str, Any]) -> dict[str, Any]:
        rt = self._paths(rec["root"])[0]
        self._enable_controller(rec)
        self._make_cpuset(rec, rt, rec["cpus"])
        partition = self._make_partition(rt, rec["cpus"])
        threads = self._move_process(rec, rt, rec["rt_pid"])
        return {
            "rt_cgroup": rt,
            "housekeeping_cgroup": None,
            "rt_threads_moved": threads,
            "tasks_moved": 0,
            "tasks_skipped": 0,
            "tasks_vanished": 0,
            "exclusive": True,
            "exclusive_note": "",
            "partition": partition,
            "load_balance_split": partition == "isolated",
            "overlapping": [],
        }

    def _enable_controller(self, rec: dict[str, Any]) -> None:
        path = os.path.join(rec["root"], "cgroup.subtree_control")
        if "cpuset" in self._must_read(path).split():
            return
        rec["subtree_enabled"] = True
        self._save(rec)
        self._must_write(path, "+cpuset")

    def _make_partition(self, rt: str, cpus: list[int]) -> str:
        path = os.path.join(rt, "cpuset.cpus.partition")
        wanted = "isolated"
        try:
            self.fs.write(path, wanted)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise FailedPrecondition(
                    f"writing 'isolated' to {path} failed: {e.strerror}"
                ) from None
            # older kernels know only "root": a partition, but still load-balanced
            wanted = "root"
            self._must_write(path, wanted)
        got = self._must_read(path).strip()
        if got != wanted:
            # the kernel takes the write and then says why it cannot honour it
            raise FailedPrecondition(
                f"the kernel refused a cpuset partition for CPU {format_cpu_list(cpus)}: "
                f"{path} reads {got!r}"
            )
        return wanted

    def _controller_in_use(self, rec: dict[str, Any]) -> bool:
        """Does a cgroup other than ours use cpuset (then it must stay enabled)?"""
        for entry in self.fs.listdir(rec["root"]):
            path = os.path.join(rec["root"], entry)
            if path in rec["cgroups"]:
                continue
            with contextlib.suppress(OSError):
                if self.fs.read(os.path.join(path, "cpuset.cpus")).strip():
                    return True
        return False

    # ---- both versions ---------------------------------------------------------

    def _paths(self, root: str) -> tuple[str, str]:
        return (
            os.path.join(root, f"{self.name}-rt"),
            os.path.join(root, f"{self.name}-housekeeping"),
        )

    def _make_cpuset(self, rec: dict[str, Any], path: str, cpus: list[int]) -> None:
        rec["cgroups"].append(path)
        self._save(rec)
        try:
            self.fs.mkdir(path)
        except OSError as e:
            raise FailedPrecondition(f"cannot create cpuset {path}: {e.strerror}") from None
        # cpus and mems before any task: the kernel refuses tasks into an empty cpuset
        self._must_write(os.path.join(path, "cpuset.cpus"), format_cpu_list(cpus))
        self._must_write(os.path.join(path, "cpuset.mems"), format_cpu_list(rec["mems"]))

    def _move_process(self, rec: dict[str, Any], cgroup: str, pid: int) -> int:
        """All threads of pid into cgroup at once (cgroup.procs); returns their number."""
        threads = self._threads(pid)
        self._record(rec, threads, None)
        self._save(rec)
        try:
            self.fs.write(os.path.join(cgroup, "cgroup.procs"), str(pid))
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise FailedPrecondition(f"RT process {pid} exited while being isolated") from None
            raise FailedPrecondition(
                f"cannot move RT process {pid} into {cgroup}: {e.strerror}"
            ) from None
        return len(threads)

    def _check_rt_inside(self, rec: dict[str, Any]) -> None:
        cg = CgroupInfo(rec["version"], rec["root"])
        if not self._in_rt(rec["rt_pid"], cg):
            raise FailedPrecondition(
                f"RT process {rec['rt_pid']} is not in {self._paths(rec['root'])[0]} after the move"
            )

    def _in_rt(self, pid: int, cg: CgroupInfo) -> bool:
        assert cg.version is not None
        try:
            where = self._cgroup_of(pid, cg.version)
        except OSError:
            return False
        return where == "/" + os.path.basename(self._paths(cg.root)[0])

    def _move_irqs(self, rec: dict[str, Any]) -> dict[str, Any]:
        """IRQs allowed on RT CPUs keep only their housekeeping CPUs (all of them
        when they had none); the kernel refuses per-CPU and managed ones."""
        rt = set(rec["cpus"])
        todo = {irq: old for irq, old in self._irq_affinities().items() if set(old) & rt}
        rec["irqs"] = {irq: format_cpu_list(old) for irq, old in todo.items()}
        self._save(rec)
        refused = []
        for irq, old in todo.items():
            target = [c for c in old if c not in rt] or rec["housekeeping"]
            try:
                self.fs.write(self._irq_file(irq), format_cpu_list(target))
            except OSError:
                refused.append(irq)
        for irq in refused:
            del rec["irqs"][irq]
        return {
            "irqs_moved": len(todo) - len(refused),
            "irqs_skipped": len(refused),
            "irqs_unmovable": sorted(refused, key=int),
        }

    def _irq_affinities(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        try:
            entries = self.fs.listdir(self.irq_root)
        except OSError:
            return out  # no /proc/irq (a container): nothing to move
        for entry in sorted((e for e in entries if e.isdigit()), key=int):
            with contextlib.suppress(OSError, TopologyError):
                out[entry] = parse_cpu_list(self.fs.read(self._irq_file(entry)))
        return out

    def _irqs_on(self, cpus: set[int]) -> list[int]:
        return sorted(int(irq) for irq, aff in self._irq_affinities().items() if set(aff) & cpus)

    def _irq_file(self, irq: str) -> str:
        return os.path.join(self.irq_root, irq, "smp_affinity_list")

    def _describe(self, path: str, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": path,
            "cpus": self._read_or_blank(os.path.join(path, "cpuset.cpus")),
            "mems": self._read_or_blank(os.path.join(path, "cpuset.mems")),
            "tasks": len(self._members(path, version)),
        }
        if version == "v1":
            out["exclusive"] = (
                self._read_or_blank(os.path.join(path, "cpuset.cpu_exclusive")) == "1"
            )
        else:
            out["partition"] = self._read_or_blank(os.path.join(path, "cpuset.cpus.partition"))
        return out

    # ---- undo ------------------------------------------------------------------

    def _roll_back(self, rec: dict[str, Any], err: BaseException) -> NoReturn:
        _, problems = self._undo(rec)
        what = _one_line(err)
        if problems:
            raise FailedPrecondition(
                f"{what}; undoing it failed too: {'; '.join(problems)}; the record stays in "
                f"{self.state_path}, run remove() again"
            ) from err
        self._forget()
        if isinstance(err, ControlError | OSError):
            raise FailedPrecondition(f"{what} (undone: nothing is left applied)") from err
        raise err

    def _undo(self, rec: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        problems: list[str] = []
        counts = {"tasks_restored": 0, "tasks_to_parent": 0, "affinities_restored": 0}
        irqs_restored, irqs_failed = self._restore_irqs(rec)
        self._restore_load_balance(rec, problems)
        for path in reversed(rec["cgroups"]):
            self._remove_cgroup(rec, path, counts, problems)
        left_enabled = self._restore_controller(rec)
        return {
            **counts,
            "irqs_restored": irqs_restored,
            "irqs_failed": irqs_failed,
            "cgroups_removed": [p for p in rec["cgroups"] if not self.fs.exists(p)],
            "controller_left_enabled": left_enabled,
        }, problems

    def _restore_irqs(self, rec: dict[str, Any]) -> tuple[int, int]:
        restored = failed = 0
        for irq, old in rec["irqs"].items():
            try:
                self.fs.write(self._irq_file(irq), old)
                restored += 1
            except OSError:
                failed += 1  # its device went away, or it refuses now
        return restored, failed

    def _restore_load_balance(self, rec: dict[str, Any], problems: list[str]) -> None:
        if rec["load_balance"] is None:
            return
        path = os.path.join(rec["root"], "cpuset.sched_load_balance")
        try:
            self.fs.write(path, rec["load_balance"])
        except OSError as e:
            problems.append(f"cannot restore {path}: {e.strerror}")

    def _restore_controller(self, rec: dict[str, Any]) -> bool:
        """Disable the cpuset controller we enabled, unless another cgroup uses it now."""
        if not rec["subtree_enabled"] or self._controller_in_use(rec):
            return bool(rec["subtree_enabled"])
        try:
            self.fs.write(os.path.join(rec["root"], "cgroup.subtree_control"), "-cpuset")
        except OSError:
            return True  # harmless: every cgroup without cpuset.cpus has all CPUs
        return False

    def _remove_cgroup(
        self, rec: dict[str, Any], path: str, counts: dict[str, int], problems: list[str]
    ) -> None:
        for _ in range(RMDIR_TRIES):
            if not self.fs.exists(path):
                return
            self._send_home(rec, path, counts)
            try:
                self.fs.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                if e.errno != errno.EBUSY:
                    problems.append(f"cannot remove cpuset {path}: {e.strerror}")
                    return
            # a task forked after the last read, or one still exiting, keeps it busy
            time.sleep(RMDIR_WAIT_S)
        problems.append(f"cpuset {path} stays busy (tasks keep arriving)")

    def _send_home(self, rec: dict[str, Any], path: str, counts: dict[str, int]) -> None:
        """Members of our cgroup go back where they came from, others to the parent."""
        version = rec["version"]
        for member in self._members(path, version):
            info = self._recorded(rec, member)
            home = self._home(rec, info)
            try:
                self.fs.write(os.path.join(home, _MEMBERS[version]), str(member))
            except OSError:
                continue  # gone; anything else shows as a busy cpuset
            # a task that came from one of our cpusets had our CPUs, not its own
            restored = info is not None and home == self._from(rec, info)
            counts["tasks_restored" if restored else "tasks_to_parent"] += 1
            if not restored:
                continue
            # v2 moves whole processes: their threads get their affinities back too
            for tid in self._threads(member) if version == "v2" else [member]:
                counts["affinities_restored"] += self._restore_affinity(rec, tid, home)

    def _recorded(self, rec: dict[str, Any], tid: int) -> dict[str, Any] | None:
        info = rec["tasks"].get(str(tid))
        # a task id reused by a new task is not the task we moved
        if info is None or info["start"] != self._start_time(tid):
            return None
        return info

    def _home(self, rec: dict[str, Any], info: dict[str, Any] | None) -> str:
        home = self._from(rec, info) if info else rec["root"]
        if home in rec["cgroups"] or not self.fs.exists(home):
            return str(rec["root"])
        return home

    def _from(self, rec: dict[str, Any], info: dict[str, Any]) -> str:
        return os.path.normpath(os.path.join(rec["root"], info["from"].lstrip("/")))

    def _restore_affinity(self, rec: dict[str, Any], tid: int, home: str) -> int:
        # Kernels before 6.2 reset a moved task's affinity to all of its new cpuset's
        # CPUs; put back the one it had then, but leave an affinity chosen since.
        info = self._recorded(rec, tid)
        if info is None:
            return 0
        try:
            now = _status_field(self.fs.read(self._proc(tid, "status")), "Cpus_allowed_list")
            home_cpus = self.fs.read(os.path.join(home, _PARENT_CPUS[rec["version"]]))
            if now == info["cpus"] or parse_cpu_list(now) != parse_cpu_list(home_cpus):
                return 0
            self.fs.set_affinity(tid, parse_cpu_list(info["cpus"]))
        except (OSError, TopologyError):
            return 0
        return 1

    # ---- tasks -------------------------------------------------------------------

    def _record(self, rec: dict[str, Any], tids: list[int], home: str | None) -> None:
        """What undo needs per task: where it was, its affinity, its start time."""
        for tid in tids:
            with contextlib.suppress(OSError, IndexError, ValueError):
                where = home if home is not None else self._cgroup_of(tid, rec["version"])
                status = self.fs.read(self._proc(tid, "status"))
                rec["tasks"][str(tid)] = {
                    "from": where,
                    "cpus": _status_field(status, "Cpus_allowed_list"),
                    "start": self._start_time(tid),
                }

    def _members(self, path: str, version: str) -> list[int]:
        try:
            return [int(t) for t in self.fs.read(os.path.join(path, _MEMBERS[version])).split()]
        except FileNotFoundError:
            return []

    def _threads(self, pid: int) -> list[int]:
        try:
            return sorted(int(t) for t in self.fs.listdir(self._proc(pid, "task")))
        except OSError:
            return []

    def _cgroup_of(self, tid: int, version: str) -> str:
        if version == "v1":
            return self.fs.read(self._proc(tid, "cpuset")).strip()
        for line in self.fs.read(self._proc(tid, "cgroup")).splitlines():
            if line.startswith("0::"):
                return line[3:].strip()
        raise OSError(errno.ENOENT, "no cgroup v2 line", self._proc(tid, "cgroup"))

    def _start_time(self, tid: int) -> int | None:
        try:
            stat = self.fs.read(self._proc(tid, "stat"))
            return int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime
        except (OSError, IndexError, ValueError):
            return None

    def _proc(self, tid: int, *parts: str) -> str:
        return os.path.join(self.proc_root, str(tid), *parts)

    # ---- the record --------------------------------------------------------------

    def _save(self, rec: dict[str, Any]) -> None:
        # write-ahead: on disk whole (temporary file, fsync, rename) before the change it names
        directory = os.path.dirname(os.path.abspath(self.state_path))
        prefix = f".{os.path.basename(self.state_path)}."
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(rec, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def _load(self) -> dict[str, Any] | None:
        try:
            with open(self.state_path) as f:
                rec = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise FailedPrecondition(
                f"the isolation record {self.state_path} is unreadable ({e}); move it aside "
                "and call remove() again to undo the isolation by name"
            ) from None
        if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT:
            raise FailedPrecondition(
                f"the isolation record {self.state_path} is not in format {RECORD_FORMAT}; "
                "move it aside and call remove() again to undo the isolation by name"
            )
        return rec

    def _orphans(self) -> dict[str, Any] | None:
        """A record for our cpusets when they exist without one: undone by name
        (tasks go to the parent; IRQ affinities are not known)."""
        cg = self.cgroup
        if cg.version is None:
            return None
        found = [p for p in self._paths(cg.root) if self.fs.exists(p)]
        if not found:
            return None
        return {
            "version": cg.version,
            "root": cg.root,
            "cgroups": found,
            "tasks": {},
            "irqs": {},
            "load_balance": None,
            "subtree_enabled": False,
        }

    def _forget(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.state_path)

    # ---- small reads ---------------------------------------------------------------

    def _must_read(self, path: str) -> str:
        try:
            return self.fs.read(path)
        except OSError as e:
            raise FailedPrecondition(f"cannot read {path}: {e.strerror}") from None

    def _must_write(self, path: str, text: str) -> None:
        try:
            self.fs.write(path, text)
        except OSError as e:
            raise FailedPrecondition(f"writing {text!r} to {path} failed: {e.strerror}") from None

    def _read_or_blank(self, path: str) -> str:
        try:
            return self.fs.read(path).strip()
        except OSError:
            return ""


def _status_field(status: str, name: str) -> str:
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return ""


def _no_housekeeping(cpus: list[int], available: list[int]) -> str:
    return (
        f"isolating CPU {format_cpu_list(cpus)} would leave no housekeeping CPU (available: "
        f"{format_cpu_list(available)}); leave at least one for the rest of the system"
    )


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _ms_since(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000, 1)
