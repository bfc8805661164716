"""The cpuset writes of the isolation, v1 and v2, each read back or checked
by the kernel's answer, and their undo.

Under v1 the RT cpuset is made exclusive and the root stops balancing load
over all CPUs; under v2 the RT cgroup becomes a partition. What is changed
outside our own cpusets (the root's sched_load_balance, its subtree_control)
is recorded before it changes, so undo can put exactly that back.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable
from typing import Any

from control.errors import FailedPrecondition
from control.placement.cgroups import CgroupFS, members, must_read, must_write, read_or_blank
from control.placement.journal import Journal, Record
from rtcore.topology import TopologyError, format_cpu_list, parse_cpu_list

RMDIR_TRIES = 20
RMDIR_WAIT_S = 0.05


class Cpusets:
    def __init__(self, fs: CgroupFS, journal: Journal) -> None:
        self.fs = fs
        self.journal = journal

    # ---- both versions -------------------------------------------------------------

    def make(self, rec: Record, path: str, cpus: list[int]) -> None:
        rec["cgroups"].append(path)
        self.journal.save(rec)
        try:
            self.fs.mkdir(path)
        except OSError as e:
            raise FailedPrecondition(f"cannot create cpuset {path}: {e.strerror}") from None
        # cpus and mems before any task: the kernel refuses tasks into an empty cpuset
        must_write(self.fs, os.path.join(path, "cpuset.cpus"), format_cpu_list(cpus))
        must_write(self.fs, os.path.join(path, "cpuset.mems"), format_cpu_list(rec["mems"]))

    def remove(self, path: str, evict: Callable[[], None], problems: list[str]) -> None:
        """rmdir path once evict() has emptied it; what fails goes to problems."""
        for _ in range(RMDIR_TRIES):
            if not self.fs.exists(path):
                return
            evict()
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

    def describe(self, path: str, version: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": path,
            "cpus": read_or_blank(self.fs, os.path.join(path, "cpuset.cpus")),
            "mems": read_or_blank(self.fs, os.path.join(path, "cpuset.mems")),
            "tasks": len(members(self.fs, path, version)),
        }
        if version == "v1":
            exclusive = read_or_blank(self.fs, os.path.join(path, "cpuset.cpu_exclusive"))
            out["exclusive"] = exclusive == "1"
        else:
            partition = os.path.join(path, "cpuset.cpus.partition")
            out["partition"] = read_or_blank(self.fs, partition)
        return out

    # ---- cgroup v1 -------------------------------------------------------------------

    def make_exclusive(self, rt: str, cpus: list[int]) -> tuple[bool, str]:
        try:
            self.fs.write(os.path.join(rt, "cpuset.cpu_exclusive"), "1")
        except OSError as e:
            # EINVAL: a sibling cpuset shares these CPUs (see `overlapping`)
            return False, (
                f"cpuset.cpu_exclusive refused ({e.strerror}): another cpuset shares "
                f"CPU {format_cpu_list(cpus)}"
            )
        return True, ""

    def split_load_balance(self, rec: Record, rt: str) -> bool:
        # While the root cpuset balances load over all CPUs the scheduler keeps one
        # domain spanning the RT CPUs too; turned off there, the housekeeping cpuset
        # is the only balanced domain and the RT CPUs are in none (as isolcpus=domain).
        root_file = os.path.join(rec["root"], "cpuset.sched_load_balance")
        try:
            self.fs.write(os.path.join(rt, "cpuset.sched_load_balance"), "0")
            rec["load_balance"] = self.fs.read(root_file).strip()
            self.journal.save(rec)
            self.fs.write(root_file, "0")
        except OSError:
            return False
        return True

    def restore_load_balance(self, rec: Record, problems: list[str]) -> None:
        if rec["load_balance"] is None:
            return
        path = os.path.join(rec["root"], "cpuset.sched_load_balance")
        try:
            self.fs.write(path, rec["load_balance"])
        except OSError as e:
            problems.append(f"cannot restore {path}: {e.strerror}")

    def overlapping(self, rec: Record) -> list[dict[str, Any]]:
        """Other cpusets sharing the RT CPUs; their tasks are left alone (see isolation)."""
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
                tasks = len(members(self.fs, path, "v1"))
                out.append({"path": path, "cpus": format_cpu_list(cpus), "tasks": tasks})
        return out

    # ---- cgroup v2 -------------------------------------------------------------------

    def enable_controller(self, rec: Record) -> None:
        path = os.path.join(rec["root"], "cgroup.subtree_control")
        if "cpuset" in must_read(self.fs, path).split():
            return
        rec["subtree_enabled"] = True
        self.journal.save(rec)
        must_write(self.fs, path, "+cpuset")

    def make_partition(self, rt: str, cpus: list[int]) -> str:
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
            must_write(self.fs, path, wanted)
        got = must_read(self.fs, path).strip()
        if got != wanted:
            # the kernel takes the write and then says why it cannot honour it
            raise FailedPrecondition(
                f"the kernel refused a cpuset partition for CPU {format_cpu_list(cpus)}: "
                f"{path} reads {got!r}"
            )
        return wanted

    def restore_controller(self, rec: Record) -> bool:
        """Disable the cpuset controller we enabled, unless another cgroup uses it
        now; True when it stays enabled."""
        if not rec["subtree_enabled"] or self._controller_in_use(rec):
            return bool(rec["subtree_enabled"])
        try:
            self.fs.write(os.path.join(rec["root"], "cgroup.subtree_control"), "-cpuset")
        except OSError:
            return True  # harmless: every cgroup without cpuset.cpus has all CPUs
        return False

    def _controller_in_use(self, rec: Record) -> bool:
        """Does a cgroup other than ours use cpuset (then it must stay enabled)?"""
        for entry in self.fs.listdir(rec["root"]):
            path = os.path.join(rec["root"], entry)
            if path in rec["cgroups"]:
                continue
            with contextlib.suppress(OSError):
                if self.fs.read(os.path.join(path, "cpuset.cpus")).strip():
                    return True
        return False
