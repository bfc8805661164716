"""Moving tasks between cpusets, and back to where they came from.

Each task is recorded (its cpuset, affinity and start time) before it moves,
so that undo can send it home and give it back the affinity it had.
"""

from __future__ import annotations

import contextlib
import errno
import os

from control.errors import FailedPrecondition
from control.placement.cgroups import MEMBERS, PARENT_CPUS, CgroupFS, members
from control.placement.journal import Journal, Record, TaskInfo
from control.placement.procfs import stat_fields, status_field, thread_ids
from rtcore.topology import TopologyError, parse_cpu_list

# task lists are read again this often, to catch tasks forked during a pass
MAX_PASSES = 5
# the kernel will not move PF_NO_SETAFFINITY kernel threads (EINVAL) nor a
# SCHED_DEADLINE task whose bandwidth does not fit (EBUSY)
_UNMOVABLE = (errno.EINVAL, errno.EBUSY)


class Tasks:
    """Tasks and processes as /proc (at proc_root) and the cpuset files show them."""

    def __init__(self, fs: CgroupFS, proc_root: str, journal: Journal) -> None:
        self.fs = fs
        self.proc_root = proc_root
        self.journal = journal

    # ---- moving in ---------------------------------------------------------------

    def move_process(self, rec: Record, cgroup: str, pid: int) -> int:
        """All threads of pid into cgroup at once (cgroup.procs); returns their number."""
        threads = self.threads(pid)
        self._record(rec, threads, None)
        self.journal.save(rec)
        try:
            self.fs.write(os.path.join(cgroup, "cgroup.procs"), str(pid))
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise FailedPrecondition(f"RT process {pid} exited while being isolated") from None
            raise FailedPrecondition(
                f"cannot move RT process {pid} into {cgroup}: {e.strerror}"
            ) from None
        return len(threads)

    def move_root_tasks(self, rec: Record, hk: str) -> tuple[int, int, int]:
        """Every task of the v1 root cpuset that the kernel lets move goes to hk;
        (moved, refused, vanished)."""
        moved = 0
        refused: set[int] = set()
        gone: set[int] = set()
        for _ in range(MAX_PASSES):
            pending = [t for t in members(self.fs, rec["root"], "v1") if t not in refused]
            if not pending:
                break
            self._record(rec, pending, "/")
            self.journal.save(rec)
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

    def _record(self, rec: Record, tids: list[int], home: str | None) -> None:
        """What undo needs per task (TaskInfo); home: where they all are, when known."""
        for tid in tids:
            with contextlib.suppress(OSError, IndexError, ValueError):
                where = home if home is not None else self.cgroup_of(tid, rec["version"])
                status = self.fs.read(self._proc(tid, "status"))
                rec["tasks"][str(tid)] = {
                    "from": where,
                    "cpus": status_field(status, "Cpus_allowed_list"),
                    "start": self._start_time(tid),
                }

    # ---- sending home ------------------------------------------------------------

    def send_home(self, rec: Record, path: str, counts: dict[str, int]) -> None:
        """Members of our cgroup go back where they came from, others to the parent."""
        version = rec["version"]
        for member in members(self.fs, path, version):
            info = self._recorded(rec, member)
            home = self._home(rec, info)
            try:
                self.fs.write(os.path.join(home, MEMBERS[version]), str(member))
            except OSError:
                continue  # gone; anything else shows as a busy cpuset
            # a task that came from one of our cpusets had our CPUs, not its own
            restored = info is not None and home == _from(rec, info)
            counts["tasks_restored" if restored else "tasks_to_parent"] += 1
            if not restored:
                continue
            # v2 moves whole processes: their threads get their affinities back too
            for tid in self.threads(member) if version == "v2" else [member]:
                counts["affinities_restored"] += self._restore_affinity(rec, tid, home)

    def _recorded(self, rec: Record, tid: int) -> TaskInfo | None:
        info = rec["tasks"].get(str(tid))
        # a task id reused by a new task is not the task we moved
        if info is None or info["start"] != self._start_time(tid):
            return None
        return info

    def _home(self, rec: Record, info: TaskInfo | None) -> str:
        home = _from(rec, info) if info else rec["root"]
        if home in rec["cgroups"] or not self.fs.exists(home):
            return str(rec["root"])
        return home

    def _restore_affinity(self, rec: Record, tid: int, home: str) -> int:
        # Kernels before 6.2 reset a moved task's affinity to all of its new cpuset's
        # CPUs; put back the one it had then, but leave an affinity chosen since.
        info = self._recorded(rec, tid)
        if info is None:
            return 0
        try:
            now = status_field(self.fs.read(self._proc(tid, "status")), "Cpus_allowed_list")
            home_cpus = self.fs.read(os.path.join(home, PARENT_CPUS[rec["version"]]))
            if now == info["cpus"] or parse_cpu_list(now) != parse_cpu_list(home_cpus):
                return 0
            self.fs.set_affinity(tid, parse_cpu_list(info["cpus"]))
        except (OSError, TopologyError):
            return 0
        return 1

    # ---- reading /proc -------------------------------------------------------------

    def threads(self, pid: int) -> list[int]:
        return thread_ids(pid, self.proc_root, self.fs.listdir)

    def cgroup_of(self, tid: int, version: str) -> str:
        """The task's cpuset (v1) or cgroup (v2), relative to the hierarchy's root."""
        if version == "v1":
            return self.fs.read(self._proc(tid, "cpuset")).strip()
        for line in self.fs.read(self._proc(tid, "cgroup")).splitlines():
            if line.startswith("0::"):
                return line[3:].strip()
        raise OSError(errno.ENOENT, "no cgroup v2 line", self._proc(tid, "cgroup"))

    def _start_time(self, tid: int) -> int | None:
        try:
            return int(stat_fields(self.fs.read(self._proc(tid, "stat")))[19])  # field 22
        except (OSError, IndexError, ValueError):
            return None

    def _proc(self, tid: int, *parts: str) -> str:
        return os.path.join(self.proc_root, str(tid), *parts)


def _from(rec: Record, info: TaskInfo) -> str:
    return os.path.normpath(os.path.join(rec["root"], info["from"].lstrip("/")))
