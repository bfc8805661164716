"""Exclusive CPUs for the RT process.

`Isolator.apply` gives the RT process a cpuset of its own -- an exclusive
cpuset under cgroup v1, an isolated partition under cgroup v2 -- and moves
what else can move to the remaining ("housekeeping") CPUs: under v1 every
task of the root cpuset, under v2 nothing (the partition takes its CPUs away
from the rest of the hierarchy), and under both every IRQ that allows it.

Every change is written to a JSON record before it is made (`journal`), so
the isolation of a crashed agent is undone by the next one (`recover`). Undo
steps act only on what is still ours (tasks still in our cpusets, cpusets we
created), so undoing a change that was recorded but never made is harmless.

Tasks in other v1 cpusets (containers, slices) stay where they are even when
those cpusets share the RT CPUs: moving them would break their owners' limits,
and the owners may move them back at any time. Such cpusets are reported as
`overlapping`; they are also why cpuset.cpu_exclusive may be refused.

This module only composes the steps: `checks` (before any change),
`cpusets` (the cgroup files), `tasks`, `irqs`, `journal`, and `kernel` (the
boot-time isolation reported alongside). Every kernel file and affinity
operation goes through one `CgroupFS`, which tests replace with a fake kernel.
"""

from __future__ import annotations

import functools
import os
import re
import time
from typing import Any, NoReturn

from control.errors import ControlError, FailedPrecondition, InvalidArgument
from control.placement import checks
from control.placement.cgroups import (
    PARENT_CPUS,
    PARENT_MEMS,
    CgroupFS,
    CgroupInfo,
    cpuset_paths,
    detect_cgroup,
)
from control.placement.cpusets import Cpusets
from control.placement.irqs import Irqs
from control.placement.journal import Journal, Record, new_record, orphan
from control.placement.kernel import detect_kernel_isolation
from control.placement.tasks import Tasks

# bench/ and tests import these from here; they live in cgroups.py and kernel.py
__all__ = ["CgroupFS", "CgroupInfo", "Isolator", "detect_cgroup", "detect_kernel_isolation"]

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


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
        self.journal = Journal(state_path)
        self.cpusets = Cpusets(self.fs, self.journal)
        self.tasks = Tasks(self.fs, proc_root, self.journal)
        self.irqs = Irqs(self.fs, irq_root, self.journal)

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
            self.journal.save(rec)
        except OSError as e:
            raise FailedPrecondition(
                f"cannot write the isolation record {self.state_path}: {e.strerror}"
            ) from None
        try:
            report = self._apply_v1(rec) if rec["version"] == "v1" else self._apply_v2(rec)
            report.update(self.irqs.move(rec))
            self._check_rt_inside(rec)
            rec["phase"] = "applied"
            self.journal.save(rec)
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
        rec = self.journal.load() or self._orphans()
        if rec is None:
            return {"removed": False, "elapsed_ms": _ms_since(t0)}
        report, problems = self._undo(rec)
        if problems:
            raise FailedPrecondition(
                f"isolation only partly undone: {'; '.join(problems)}; the record stays in "
                f"{self.state_path}, run remove() again"
            )
        self.journal.forget()
        report.update(removed=True, elapsed_ms=_ms_since(t0))
        return report

    def recover(self) -> dict[str, Any] | None:
        """At start-up: undo what a previous (crashed) run left in force, if anything."""
        if self.journal.load() is None and self._orphans() is None:
            return None
        return self.remove()

    def show(self) -> dict[str, Any]:
        """What is in force: our cpusets, the RT process, the IRQs still on the RT CPUs."""
        rec = self.journal.load()
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
        out["cpusets"] = [self.cpusets.describe(p, cg.version) for p in paths]
        if rec:
            out["rt_pid_in_rt"] = self._in_rt(rec["rt_pid"], cg.version, cg.root)
            out["irqs_on_rt_cpus"] = self.irqs.on(set(rec["cpus"]))
        return out

    def update_rt_pid(self, pid: int) -> dict[str, Any]:
        """Put a restarted RT process into the RT cpuset of the isolation in force."""
        t0 = time.monotonic()
        rec = self.journal.load()
        if rec is None or rec["phase"] != "applied":
            raise FailedPrecondition("no CPU isolation is in force; apply() it first")
        checks.check_pid(self.fs, self.proc_root, pid)
        rec["rt_pid"] = pid
        threads = self.tasks.move_process(rec, self._paths(rec["root"])[0], pid)
        self._check_rt_inside(rec)
        self.journal.save(rec)
        return {"rt_pid": pid, "rt_threads_moved": threads, "elapsed_ms": _ms_since(t0)}

    def rt_procs_file(self) -> str | None:
        """cgroup.procs of the RT cpuset while isolation is in force, else None.

        A restarted RT process must write 0 there (joining it) before it pins
        itself: outside the RT cpuset its own sched_setaffinity to the RT CPUs
        fails, and update_rt_pid comes too late for that."""
        rec = self.journal.load()
        if rec is None or rec["phase"] != "applied":
            return None
        return os.path.join(self._paths(rec["root"])[0], "cgroup.procs")

    # ---- the steps -------------------------------------------------------------

    def _plan(self, rt_pid: int, cpus: list[int], mems: list[int] | None) -> Record:
        """The record of an isolation not applied yet; raises, changing nothing,
        when it cannot be applied."""
        cpus = checks.check_cpus(cpus, self.sys_root)
        checks.check_pid(self.fs, self.proc_root, rt_pid)
        cg = self.cgroup
        version = checks.check_cgroup(self.fs, cg)
        checks.check_privilege(self.fs, self.proc_root)
        checks.check_not_applied(self.fs, self.journal, self._paths(cg.root))
        parent_cpus = checks.parent_list(self.fs, cg.root, PARENT_CPUS[version])
        housekeeping = checks.housekeeping(cpus, parent_cpus, cg.root)
        parent_mems = checks.parent_list(self.fs, cg.root, PARENT_MEMS[version])
        mems = checks.check_mems(mems, parent_mems)
        return new_record(self.name, version, cg.root, rt_pid, cpus, housekeeping, mems)

    def _apply_v1(self, rec: Record) -> dict[str, Any]:
        rt, hk = self._paths(rec["root"])
        self.cpusets.make(rec, rt, rec["cpus"])
        exclusive, note = self.cpusets.make_exclusive(rt, rec["cpus"])
        self.cpusets.make(rec, hk, rec["housekeeping"])
        threads = self.tasks.move_process(rec, rt, rec["rt_pid"])
        split = self.cpusets.split_load_balance(rec, rt)
        moved, skipped, vanished = self.tasks.move_root_tasks(rec, hk)
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
            "overlapping": self.cpusets.overlapping(rec),
        }

    def _apply_v2(self, rec: Record) -> dict[str, Any]:
        rt = self._paths(rec["root"])[0]
        self.cpusets.enable_controller(rec)
        self.cpusets.make(rec, rt, rec["cpus"])
        partition = self.cpusets.make_partition(rt, rec["cpus"])
        threads = self.tasks.move_process(rec, rt, rec["rt_pid"])
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

    def _check_rt_inside(self, rec: Record) -> None:
        if not self._in_rt(rec["rt_pid"], rec["version"], rec["root"]):
            raise FailedPrecondition(
                f"RT process {rec['rt_pid']} is not in {self._paths(rec['root'])[0]} after the move"
            )

    def _in_rt(self, pid: int, version: str, root: str) -> bool:
        try:
            where = self.tasks.cgroup_of(pid, version)
        except OSError:
            return False
        return where == "/" + os.path.basename(self._paths(root)[0])

    def _paths(self, root: str) -> tuple[str, str]:
        return cpuset_paths(root, self.name)

    # ---- undo ------------------------------------------------------------------

    def _roll_back(self, rec: Record, err: BaseException) -> NoReturn:
        _, problems = self._undo(rec)
        what = _one_line(err)
        if problems:
            raise FailedPrecondition(
                f"{what}; undoing it failed too: {'; '.join(problems)}; the record stays in "
                f"{self.state_path}, run remove() again"
            ) from err
        self.journal.forget()
        if isinstance(err, ControlError | OSError):
            raise FailedPrecondition(f"{what} (undone: nothing is left applied)") from err
        raise err

    def _undo(self, rec: Record) -> tuple[dict[str, Any], list[str]]:
        # IRQs first and cpusets last: the reverse of apply, so each step finds
        # the state the matching apply step left
        problems: list[str] = []
        counts = {"tasks_restored": 0, "tasks_to_parent": 0, "affinities_restored": 0}
        irqs_restored, irqs_failed = self.irqs.restore(rec)
        self.cpusets.restore_load_balance(rec, problems)
        for path in reversed(rec["cgroups"]):
            evict = functools.partial(self.tasks.send_home, rec, path, counts)
            self.cpusets.remove(path, evict, problems)
        left_enabled = self.cpusets.restore_controller(rec)
        return {
            **counts,
            "irqs_restored": irqs_restored,
            "irqs_failed": irqs_failed,
            "cgroups_removed": [p for p in rec["cgroups"] if not self.fs.exists(p)],
            "controller_left_enabled": left_enabled,
        }, problems

    def _orphans(self) -> Record | None:
        """A record for our cpusets when they exist without one (see journal.orphan)."""
        cg = self.cgroup
        if cg.version is None:
            return None
        found = [p for p in self._paths(cg.root) if self.fs.exists(p)]
        return orphan(cg.version, cg.root, found) if found else None


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _ms_since(t0: float) -> float:
    return round((time.monotonic() - t0) * 1000, 1)
