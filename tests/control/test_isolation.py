"""control/placement/isolation.py and its pieces: CPU isolation of the RT process.

The first part runs against fake trees in tmp_path. A fake tree is plain
files; FakeKernel emulates only the kernel behaviour its docstring lists, so
those tests check the Isolator's sequence of writes and its undo, not the
kernel. The tests at the end ("real") isolate a CPU of this machine through
its real cgroup hierarchy and always undo it, even when they fail.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from control.errors import ControlError, FailedPrecondition, InvalidArgument
from control.placement.atomicfile import write_atomic
from control.placement.isolation import (
    CgroupFS,
    CgroupInfo,
    Isolator,
    detect_cgroup,
    detect_kernel_isolation,
)
from control.placement.journal import Journal, orphan
from control.placement.procfs import stat_fields, unescape
from rtcore.topology import format_cpu_list, online_cpus, parse_cpu_list
from tests.conftest import ROOT, Spawner, wait_for
from tests.rtcore.rtproc import open_when_ready, status

NAME = "x"
ALL_CAPS = "000001ffffffffff"
_ids = itertools.count()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# ---- a fake machine ---------------------------------------------------------------


class Tree:
    """A fake machine under tmp_path: cgroup/ (v1 cpuset or v2 root), proc/,
    sys/, irq/; 4 CPUs online, memory node 0."""

    def __init__(self, base: Path, version: str, cap_eff: str = ALL_CAPS) -> None:
        self.base, self.version = base, version
        self.cg, self.proc, self.sys, self.irq = (
            base / d for d in ("cgroup", "proc", "sys", "irq")
        )
        self.state = base / "state" / "isolation.json"
        self.state.parent.mkdir(parents=True)
        _write(self.sys / "devices/system/cpu/online", "0-3\n")
        _write(self.proc / "cmdline", "quiet isolcpus=3 -- init-arg\n")
        _write(self.proc / "self/status", f"Name:\tpytest\nCapEff:\t{cap_eff}\n")
        if version == "v1":
            for name, text in [
                ("cpuset.cpus", "0-3\n"),
                ("cpuset.mems", "0\n"),
                ("cpuset.cpu_exclusive", "1\n"),
                ("cpuset.sched_load_balance", "1\n"),
                ("tasks", ""),
                ("cgroup.procs", ""),
            ]:
                _write(self.cg / name, text)
        else:
            for name, text in [
                ("cgroup.controllers", "cpuset cpu io memory pids\n"),
                ("cgroup.subtree_control", "\n"),
                ("cpuset.cpus.effective", "0-3\n"),
                ("cpuset.mems.effective", "0\n"),
                ("cgroup.procs", ""),
            ]:
                _write(self.cg / name, text)
        # 10: everywhere; 11: pinned to an RT CPU; 12: housekeeping only; 13: refuses
        for irq, aff in [("10", "0-3"), ("11", "2"), ("12", "0"), ("13", "0-3")]:
            _write(self.irq / irq / "smp_affinity_list", aff + "\n")
        _write(self.irq / "default_smp_affinity", "f\n")

    def add_process(
        self, pid: int, threads: tuple[int, ...] = (), cpus: str = "0-3", where: str = "/"
    ) -> None:
        for tid in (pid, *threads):
            _write(self.proc / str(tid) / "status", f"Name:\tt{tid}\nCpus_allowed_list:\t{cpus}\n")
            _write(self.proc / str(tid) / "stat", f"{tid} (t {tid}) S {'0 ' * 18}{1000 + tid} 0\n")
            (self.proc / str(pid) / "task" / str(tid)).mkdir(parents=True, exist_ok=True)
            if self.version == "v1":
                _write(self.proc / str(tid) / "cpuset", where + "\n")
                _append(self.cg / where.lstrip("/") / "tasks", tid)
            else:
                _write(self.proc / str(tid) / "cgroup", f"0::{where}\n")
        if self.version == "v2":
            _append(self.cg / where.lstrip("/") / "cgroup.procs", pid)

    def snapshot(self) -> dict[str, str]:
        """Every file of the fake machine but the isolation record, with its content."""
        return {
            str(p.relative_to(self.base)): p.read_text()
            for p in sorted(self.base.rglob("*"))
            if p.is_file() and self.state.parent not in p.parents
        }

    def isolator(self, fs: CgroupFS | None = None, **kw) -> Isolator:
        return Isolator(
            NAME,
            str(self.state),
            cgroup=kw.pop("cgroup", CgroupInfo(self.version, str(self.cg))),
            proc_root=str(self.proc),
            irq_root=str(self.irq),
            sys_root=str(self.sys),
            fs=fs or FakeKernel(self),
        )


def _append(path: Path, n: int) -> None:
    ids = path.read_text().split() if path.exists() else []
    _write(path, "".join(f"{i}\n" for i in sorted({*map(int, ids), n})))


class FakeKernel(CgroupFS):
    """Plain files standing in for cgroupfs and procfs. Emulated, and only this:
    - mkdir creates a cgroup's control files (v2: the cpuset ones only when the
      parent's cgroup.subtree_control enables cpuset);
    - a control file reads back what was written, with one newline;
    - a write to tasks (v1, one thread) or cgroup.procs (all threads) moves the
      task out of every other cgroup, refused (ENOSPC) while the target has no
      CPUs or memory nodes; member lists stay sorted; /proc/TID/cpuset or
      /proc/TID/cgroup follows, and Cpus_allowed_list becomes the target's
      CPUs, as kernels before 6.2 do;
    - "+cpuset" / "-cpuset" edits cgroup.subtree_control's word list;
    - cpuset.cpus.partition reads back `partition.get(written, written)`;
    - rmdir of a cgroup with members is EBUSY;
    - writes to a path (or a (path, text) pair) in `fail` raise that errno, and
      when it is `CRASH` the process dies there (os._exit), as an agent killed -9.
    Every mkdir, rmdir, write and set_affinity is logged in `ops`."""

    CRASH = -1

    def __init__(
        self, tree: Tree, fail: dict | None = None, partition: dict[str, str] | None = None
    ) -> None:
        self.tree = tree
        self.fail = fail or {}
        self.partition = partition or {}
        self.ops: list[tuple[str, ...]] = []

    def _rel(self, path: str) -> str:
        return str(Path(path).relative_to(self.tree.base))

    def write(self, path: str, text: str) -> None:
        rel = self._rel(path)
        self.ops.append(("write", rel, text))
        code = self.fail.get((rel, text), self.fail.get(rel))
        if code == self.CRASH:
            os._exit(9)
        if code:
            raise OSError(code, os.strerror(code), path)
        name = os.path.basename(path)
        if name in ("tasks", "cgroup.procs") and rel.startswith("cgroup"):
            self._move(Path(path).parent, int(text), whole=name == "cgroup.procs")
        elif name == "cgroup.subtree_control":
            words = Path(path).read_text().split()
            words = [w for w in words if w != text[1:]] + ([text[1:]] if text[0] == "+" else [])
            self._overwrite(path, " ".join(words))
        elif name == "cpuset.cpus.partition":
            self._overwrite(path, self.partition.get(text, text))
        else:
            self._overwrite(path, text)

    def _overwrite(self, path: str, text: str) -> None:
        # no O_CREAT: a control file the kernel did not make cannot be written
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        with os.fdopen(fd, "w") as f:
            f.write(text.rstrip("\n") + "\n")

    def _move(self, target: Path, pid: int, whole: bool) -> None:
        proc = self.tree.proc
        if not (proc / str(pid)).exists():
            raise OSError(errno.ESRCH, "No such process")
        if target == self.tree.cg:
            cpus_file = "cpuset.cpus" if self.tree.version == "v1" else "cpuset.cpus.effective"
            cpus = (target / cpus_file).read_text().strip()
        else:
            cpus = (target / "cpuset.cpus").read_text().strip()
            if not (cpus and (target / "cpuset.mems").read_text().strip()):
                raise OSError(errno.ENOSPC, "No space left on device")
        tids = sorted(int(t) for t in os.listdir(proc / str(pid) / "task")) if whole else [pid]
        unit = "tasks" if self.tree.version == "v1" else "cgroup.procs"
        ids = tids if unit == "tasks" else [pid]
        for members in self.tree.cg.rglob(unit):
            kept = [n for n in map(int, members.read_text().split()) if n not in ids]
            members.write_text("".join(f"{n}\n" for n in sorted(kept)))
        for n in ids:
            _append(target / unit, n)
        rel = str(target.relative_to(self.tree.cg))
        where = "/" if rel == "." else "/" + rel
        for tid in tids:
            if self.tree.version == "v1":
                (proc / str(tid) / "cpuset").write_text(where + "\n")
            else:
                (proc / str(tid) / "cgroup").write_text(f"0::{where}\n")
            self._set_cpus(tid, cpus)

    def _set_cpus(self, tid: int, cpus: str) -> None:
        status = self.tree.proc / str(tid) / "status"
        lines = [
            f"Cpus_allowed_list:\t{cpus}" if line.startswith("Cpus_allowed_list:") else line
            for line in status.read_text().splitlines()
        ]
        status.write_text("\n".join(lines) + "\n")

    def mkdir(self, path: str) -> None:
        self.ops.append(("mkdir", self._rel(path)))
        os.mkdir(path)
        parent = Path(path).parent
        if self.tree.version == "v1":
            files = {
                "cpuset.cpus": "\n",
                "cpuset.mems": "\n",
                "cpuset.cpu_exclusive": "0\n",
                "cpuset.sched_load_balance": "1\n",
                "tasks": "",
                "cgroup.procs": "",
            }
        else:
            files = {"cgroup.procs": "", "cgroup.subtree_control": "\n"}
            if "cpuset" in (parent / "cgroup.subtree_control").read_text().split():
                files.update(
                    {"cpuset.cpus": "\n", "cpuset.mems": "\n", "cpuset.cpus.partition": "member\n"}
                )
        for name, text in files.items():
            (Path(path) / name).write_text(text)

    def rmdir(self, path: str) -> None:
        self.ops.append(("rmdir", self._rel(path)))
        unit = "tasks" if self.tree.version == "v1" else "cgroup.procs"
        if (Path(path) / unit).read_text().split():
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        shutil.rmtree(path)

    def set_affinity(self, tid: int, cpus: list[int]) -> None:
        self.ops.append(("set_affinity", str(tid), format_cpu_list(cpus)))
        self._set_cpus(tid, format_cpu_list(cpus))


def _changes(fs: FakeKernel) -> list[tuple[str, ...]]:
    return [op for op in fs.ops if op[0] in ("write", "mkdir", "rmdir", "set_affinity")]


@pytest.fixture
def v1(tmp_path: Path) -> Tree:
    t = Tree(tmp_path, "v1")
    t.add_process(1)
    t.add_process(2)  # kthreadd: the kernel refuses to move it
    t.add_process(50, cpus="2")  # a user task pinned to what becomes an RT CPU
    t.add_process(100, threads=(101,), cpus="2-3")  # the RT process
    t.add_process(200, threads=(201,))
    return t


@pytest.fixture
def v2(tmp_path: Path) -> Tree:
    t = Tree(tmp_path, "v2")
    t.add_process(1)
    t.add_process(100, threads=(101,), cpus="2-3")
    return t


def _v1_kernel(tree: Tree, **kw) -> FakeKernel:
    fail = {
        "irq/13/smp_affinity_list": errno.EIO,
        ("cgroup/x-housekeeping/tasks", "2"): errno.EINVAL,
    }
    fail.update(kw.pop("fail", {}))
    return FakeKernel(tree, fail=fail, **kw)


# ---- the kernel's own isolation --------------------------------------------------


@pytest.mark.parametrize(
    ("cmdline", "want"),
    [
        (
            "ro isolcpus=domain,managed_irq,2-3 nohz_full=2-3 rcu_nocbs=2-3",
            {
                "isolcpus": [2, 3],
                "isolcpus_flags": ["domain", "managed_irq"],
                "nohz_full": [2, 3],
                "rcu_nocbs": [2, 3],
            },
        ),
        ("isolcpus=1,3", {"isolcpus": [1, 3], "isolcpus_flags": []}),
        ("isolcpus=nohz,domain,1-N", {"isolcpus": [1, 2, 3], "isolcpus_flags": ["nohz", "domain"]}),
        ("nohz_full=1-N rcu_nocbs=all", {"nohz_full": [1, 2, 3], "rcu_nocbs": [0, 1, 2, 3]}),
        ("isolcpus=0-3:1/2", {"isolcpus": [0, 2]}),
        ("rcu_nocbs", {"rcu_nocbs": []}),
        ("quiet -- isolcpus=1 nohz_full=1", {"isolcpus": [], "nohz_full": []}),
        ("", {"isolcpus": [], "nohz_full": [], "rcu_nocbs": [], "isolcpus_flags": []}),
    ],
)
def test_kernel_isolation_from_the_command_line(tmp_path, cmdline, want):
    _write(tmp_path / "proc/cmdline", cmdline + "\n")
    _write(tmp_path / "sys/devices/system/cpu/online", "0-3\n")
    found = detect_kernel_isolation(str(tmp_path / "proc"), str(tmp_path / "sys"))
    assert {k: found[k] for k in want} == want
    assert found["notes"] == []


@pytest.mark.parametrize("value", ["domain", "2-x", "3-1", "0-3:1/0"])
def test_malformed_boot_cpu_list_is_a_note_not_an_error(tmp_path, value):
    _write(tmp_path / "proc/cmdline", f"isolcpus={value}\n")
    _write(tmp_path / "sys/devices/system/cpu/online", "0-3\n")
    found = detect_kernel_isolation(str(tmp_path / "proc"), str(tmp_path / "sys"))
    assert found["isolcpus"] == []
    assert len(found["notes"]) == 1 and value in found["notes"][0]


def test_kernel_isolation_in_force_from_sysfs(tmp_path):
    _write(tmp_path / "proc/cmdline", "isolcpus=2-3\n")
    _write(tmp_path / "sys/devices/system/cpu/online", "0-3\n")
    _write(tmp_path / "sys/devices/system/cpu/isolated", "2-3\n")
    found = detect_kernel_isolation(str(tmp_path / "proc"), str(tmp_path / "sys"))
    assert found["isolated"] == [2, 3]
    assert found["nohz_full_active"] == []  # no file: a kernel without NO_HZ_FULL
    _write(tmp_path / "sys/devices/system/cpu/nohz_full", "\n")  # NO_HZ_FULL, none given
    found = detect_kernel_isolation(str(tmp_path / "proc"), str(tmp_path / "sys"))
    assert found["nohz_full_active"] == []


# ---- which cgroup hierarchy ---------------------------------------------------------


def _mounts(tmp_path: Path, *lines: str) -> str:
    path = tmp_path / "mounts"
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_detect_cgroup_v1_cpuset(tmp_path):
    mounts = _mounts(
        tmp_path,
        "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0",
        "cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0",
        "cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0",
        f"cgroup2 {tmp_path}/unified cgroup2 rw,relatime 0 0",
    )
    assert detect_cgroup(mounts) == CgroupInfo("v1", "/sys/fs/cgroup/cpuset")


def test_detect_cgroup_v2_with_cpuset(tmp_path):
    _write(tmp_path / "my cg/cgroup.controllers", "cpuset cpu io memory pids\n")
    mounts = _mounts(tmp_path, f"cgroup2 {tmp_path}/my\\040cg cgroup2 rw,nosuid 0 0")
    assert detect_cgroup(mounts) == CgroupInfo("v2", f"{tmp_path}/my cg")


def test_detect_cgroup_read_only(tmp_path):
    _write(tmp_path / "cg/cgroup.controllers", "cpuset\n")
    mounts = _mounts(tmp_path, f"cgroup2 {tmp_path}/cg cgroup2 ro,nosuid 0 0")
    assert detect_cgroup(mounts) == CgroupInfo("v2", f"{tmp_path}/cg", read_only=True)


def test_detect_cgroup_v2_without_cpuset_says_why(tmp_path):
    _write(tmp_path / "unified/cgroup.controllers", "cpu io memory pids\n")
    info = detect_cgroup(_mounts(tmp_path, f"cgroup2 {tmp_path}/unified cgroup2 rw 0 0"))
    assert info.version is None
    assert "does not offer it" in info.reason and "mount -t cgroup -o cpuset" in info.reason


def test_detect_cgroup_none(tmp_path):
    info = detect_cgroup(_mounts(tmp_path, "proc /proc proc rw 0 0"))
    assert info.version is None and "mount -t cgroup2" in info.reason
    missing = detect_cgroup(str(tmp_path / "nope"))
    assert missing.version is None and "cannot read" in missing.reason


# ---- cgroup v1 on a fake tree --------------------------------------------------------


def test_v1_apply_sequence_and_remove_restores_the_tree(v1):
    before = v1.snapshot()
    fs = _v1_kernel(v1)
    report = v1.isolator(fs).apply(100, [2, 3])

    assert _changes(fs) == [
        ("mkdir", "cgroup/x-rt"),
        ("write", "cgroup/x-rt/cpuset.cpus", "2-3"),
        ("write", "cgroup/x-rt/cpuset.mems", "0"),
        ("write", "cgroup/x-rt/cpuset.cpu_exclusive", "1"),
        ("mkdir", "cgroup/x-housekeeping"),
        ("write", "cgroup/x-housekeeping/cpuset.cpus", "0-1"),
        ("write", "cgroup/x-housekeeping/cpuset.mems", "0"),
        ("write", "cgroup/x-rt/cgroup.procs", "100"),
        ("write", "cgroup/x-rt/cpuset.sched_load_balance", "0"),
        ("write", "cgroup/cpuset.sched_load_balance", "0"),
        ("write", "cgroup/x-housekeeping/tasks", "1"),
        ("write", "cgroup/x-housekeeping/tasks", "2"),
        ("write", "cgroup/x-housekeeping/tasks", "50"),
        ("write", "cgroup/x-housekeeping/tasks", "200"),
        ("write", "cgroup/x-housekeeping/tasks", "201"),
        ("write", "irq/10/smp_affinity_list", "0-1"),
        ("write", "irq/11/smp_affinity_list", "0-1"),
        ("write", "irq/13/smp_affinity_list", "0-1"),
    ]
    assert (v1.cg / "x-rt/tasks").read_text().split() == ["100", "101"]
    assert (v1.cg / "tasks").read_text().split() == ["2"]
    assert (v1.irq / "12/smp_affinity_list").read_text().strip() == "0", "not on an RT CPU"
    assert {k: report[k] for k in ("version", "cpus", "housekeeping", "mems", "exclusive")} == {
        "version": "v1",
        "cpus": [2, 3],
        "housekeeping": [0, 1],
        "mems": [0],
        "exclusive": True,
    }
    assert (report["rt_threads_moved"], report["tasks_moved"], report["tasks_skipped"]) == (2, 4, 1)
    assert (report["irqs_moved"], report["irqs_skipped"], report["irqs_unmovable"]) == (
        2,
        1,
        ["13"],
    )
    assert report["load_balance_split"] is True and report["partition"] is None
    assert report["kernel_isolation"]["isolcpus"] == [3]
    record = json.loads(v1.state.read_text())
    assert record["phase"] == "applied"
    assert record["irqs"] == {"10": "0-3", "11": "2"}
    assert record["tasks"]["50"] == {"from": "/", "cpus": "2", "start": 1050}
    assert record["tasks"]["100"]["from"] == "/"
    assert "2" not in record["tasks"], "tasks that did not move are not kept"

    fs.ops.clear()
    undone = v1.isolator(fs).remove()
    assert v1.snapshot() == before
    assert not v1.state.exists()
    assert ("set_affinity", "50", "2") in fs.ops, "the pinned task got its affinity back"
    assert undone["removed"] and undone["tasks_restored"] == 6 and undone["irqs_restored"] == 2
    assert v1.isolator(fs).remove() == {"removed": False, "elapsed_ms": pytest.approx(0, abs=50)}


def test_v1_exclusive_refused_by_an_overlapping_cpuset_is_reported(v1):
    fs = _v1_kernel(v1, fail={"cgroup/x-rt/cpuset.cpu_exclusive": errno.EINVAL})
    fs.mkdir(str(v1.cg / "docker"))
    (v1.cg / "docker/cpuset.cpus").write_text("0-3\n")
    v1.add_process(300, where="/docker")
    report = v1.isolator(fs).apply(100, [3])
    assert report["exclusive"] is False
    assert "cpuset.cpu_exclusive refused" in report["exclusive_note"]
    assert report["overlapping"] == [{"path": str(v1.cg / "docker"), "cpus": "0-3", "tasks": 1}]
    assert (v1.cg / "docker/tasks").read_text().split() == ["300"], "left to its owner"
    v1.isolator(fs).remove()
    assert (v1.cg / "docker/tasks").read_text().split() == ["300"]


@pytest.mark.parametrize(
    "fail",
    [
        {"cgroup/x-housekeeping/cpuset.mems": errno.EACCES},
        {("cgroup/x-housekeeping/tasks", "200"): errno.EACCES},
        {"cgroup/x-rt/cgroup.procs": errno.ESRCH},
        {"cgroup/cpuset.sched_load_balance": errno.EACCES, "cgroup/x-rt/cpuset.mems": errno.EIO},
    ],
    ids=["mems", "task-move", "rt-exited", "rt-mems"],
)
def test_v1_failed_step_is_undone_whole(v1, fail):
    before = v1.snapshot()
    fs = _v1_kernel(v1, fail=fail)
    with pytest.raises(FailedPrecondition) as e:
        v1.isolator(fs).apply(100, [2, 3])
    assert "\n" not in str(e.value) and "undone: nothing is left applied" in str(e.value)
    assert v1.snapshot() == before
    assert not v1.state.exists()


def test_v1_remove_touches_only_what_is_still_ours(v1):
    fs = _v1_kernel(v1)
    iso = v1.isolator(fs)
    iso.apply(100, [2, 3])
    fs.mkdir(str(v1.cg / "other"))
    (v1.cg / "other/cpuset.cpus").write_text("0-1\n")
    (v1.cg / "other/cpuset.mems").write_text("0\n")
    fs.write(str(v1.cg / "other/tasks"), "200")  # its owner moved it meanwhile
    v1.add_process(500, where="/x-housekeeping")  # forked after apply
    undone = iso.remove()
    assert (v1.cg / "other/tasks").read_text().split() == ["200"]
    assert "500" in (v1.cg / "tasks").read_text().split()
    assert undone["tasks_to_parent"] == 1


def test_v1_update_rt_pid_and_the_restart_path(v1):
    fs = _v1_kernel(v1)
    iso = v1.isolator(fs)
    assert iso.rt_procs_file() is None
    iso.apply(100, [2, 3])
    assert iso.rt_procs_file() == str(v1.cg / "x-rt/cgroup.procs")
    v1.add_process(400, threads=(401,), where="/x-housekeeping")  # the restarted RT process
    report = iso.update_rt_pid(400)
    assert report["rt_threads_moved"] == 2
    assert (v1.cg / "x-rt/tasks").read_text().split() == ["100", "101", "400", "401"]
    assert iso.show()["rt_pid_in_rt"] is True
    iso.remove()
    assert {"400", "401"} <= set((v1.cg / "tasks").read_text().split())
    with pytest.raises(FailedPrecondition, match="no CPU isolation is in force"):
        iso.update_rt_pid(400)


def test_v1_show(v1):
    fs = _v1_kernel(v1)
    iso = v1.isolator(fs)
    idle = iso.show()
    assert (idle["applied"], idle["cpusets"], idle["version"]) == (False, [], "v1")
    iso.apply(100, [2, 3])
    shown = iso.show()
    assert shown["applied"] and shown["rt_pid"] == 100 and shown["rt_pid_in_rt"]
    assert shown["cpusets"] == [
        {"path": str(v1.cg / "x-rt"), "cpus": "2-3", "mems": "0", "tasks": 2, "exclusive": True},
        {
            "path": str(v1.cg / "x-housekeeping"),
            "cpus": "0-1",
            "mems": "0",
            "tasks": 4,
            "exclusive": False,
        },
    ]
    assert shown["irqs_on_rt_cpus"] == [13], "the IRQ that refused to move"
    assert shown["kernel_isolation"]["isolcpus"] == [3]


def test_v1_cpusets_left_without_a_record_are_removed_by_name(v1):
    fs = _v1_kernel(v1)
    fs.mkdir(str(v1.cg / "x-rt"))
    (v1.cg / "x-rt/cpuset.cpus").write_text("3\n")
    (v1.cg / "x-rt/cpuset.mems").write_text("0\n")
    fs.write(str(v1.cg / "x-rt/tasks"), "200")
    iso = v1.isolator(fs)
    with pytest.raises(FailedPrecondition, match="left from an earlier run; remove"):
        iso.apply(100, [3])
    report = iso.recover()
    assert report is not None and report["tasks_to_parent"] == 1
    assert not (v1.cg / "x-rt").exists() and "200" in (v1.cg / "tasks").read_text().split()
    assert iso.recover() is None


@pytest.mark.parametrize(
    "crash_at",
    [
        "cgroup/x-housekeeping/cpuset.cpus",
        ("cgroup/x-housekeeping/tasks", "50"),
        "irq/11/smp_affinity_list",
    ],
    ids=["making-cpusets", "moving-tasks", "moving-irqs"],
)
def test_v1_agent_killed_mid_apply_is_recovered(v1, crash_at):
    before = v1.snapshot()
    pid = os.fork()
    if pid == 0:  # the agent, killed at crash_at
        try:
            v1.isolator(_v1_kernel(v1, fail={crash_at: FakeKernel.CRASH})).apply(100, [2, 3])
        finally:
            os._exit(0)
    _, code = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(code) == 9
    assert v1.state.exists() and v1.snapshot() != before
    report = v1.isolator(_v1_kernel(v1)).recover()
    assert report is not None and report["removed"]
    assert v1.snapshot() == before
    assert v1.isolator(_v1_kernel(v1)).recover() is None


# ---- cgroup v2 on a fake tree ----------------------------------------------------------


def test_v2_apply_sequence_and_remove_restores_the_tree(v2):
    before = v2.snapshot()
    fs = FakeKernel(v2, fail={"irq/13/smp_affinity_list": errno.EIO})
    report = v2.isolator(fs).apply(100, [2, 3])
    assert _changes(fs) == [
        ("write", "cgroup/cgroup.subtree_control", "+cpuset"),
        ("mkdir", "cgroup/x-rt"),
        ("write", "cgroup/x-rt/cpuset.cpus", "2-3"),
        ("write", "cgroup/x-rt/cpuset.mems", "0"),
        ("write", "cgroup/x-rt/cpuset.cpus.partition", "isolated"),
        ("write", "cgroup/x-rt/cgroup.procs", "100"),
        ("write", "irq/10/smp_affinity_list", "0-1"),
        ("write", "irq/11/smp_affinity_list", "0-1"),
        ("write", "irq/13/smp_affinity_list", "0-1"),
    ]
    assert report["partition"] == "isolated" and report["exclusive"] is True
    assert report["housekeeping_cgroup"] is None and report["tasks_moved"] == 0
    assert (v2.cg / "x-rt/cgroup.procs").read_text().split() == ["100"]
    assert (v2.proc / "101/cgroup").read_text() == "0::/x-rt\n"
    shown = v2.isolator(fs).show()
    assert shown["cpusets"][0]["partition"] == "isolated" and shown["rt_pid_in_rt"]

    fs.ops.clear()
    v2.isolator(fs).remove()
    assert v2.snapshot() == before
    assert ("write", "cgroup/cgroup.subtree_control", "-cpuset") in fs.ops


def test_v2_keeps_a_controller_it_did_not_enable(v2):
    (v2.cg / "cgroup.subtree_control").write_text("cpuset memory\n")
    fs = FakeKernel(v2)
    v2.isolator(fs).apply(100, [3])
    v2.isolator(fs).remove()
    assert not [op for op in fs.ops if "subtree_control" in op[1]]
    assert (v2.cg / "cgroup.subtree_control").read_text() == "cpuset memory\n"


def test_v2_falls_back_to_a_root_partition(v2):
    fs = FakeKernel(v2, fail={("cgroup/x-rt/cpuset.cpus.partition", "isolated"): errno.EINVAL})
    report = v2.isolator(fs).apply(100, [3])
    assert report["partition"] == "root" and report["load_balance_split"] is False
    assert (v2.cg / "x-rt/cpuset.cpus.partition").read_text() == "root\n"
    v2.isolator(fs).remove()


def test_v2_invalid_partition_is_rolled_back(v2):
    before = v2.snapshot()
    invalid = "isolated invalid (Cpu list in cpuset.cpus not exclusive)"
    fs = FakeKernel(v2, partition={"isolated": invalid})
    with pytest.raises(FailedPrecondition) as e:
        v2.isolator(fs).apply(100, [2, 3])
    assert "\n" not in str(e.value) and invalid in str(e.value) and "undone" in str(e.value)
    assert v2.snapshot() == before
    assert not v2.state.exists()
    assert ("rmdir", "cgroup/x-rt") in fs.ops
    assert not [op for op in fs.ops if op[1].endswith("cgroup.procs")], "RT process never moved"


def test_v2_controller_refused_is_undone_cleanly(v2):
    before = v2.snapshot()
    fs = FakeKernel(v2, fail={"cgroup/cgroup.subtree_control": errno.ENOENT})
    with pytest.raises(FailedPrecondition, match="subtree_control failed"):
        v2.isolator(fs).apply(100, [3])
    assert v2.snapshot() == before


# ---- bad input: one clear error, nothing changed ------------------------------------------


@pytest.mark.parametrize(
    ("kw", "error", "field", "text"),
    [
        ({"cpus": []}, InvalidArgument, "cpus", "at least one CPU"),
        ({"cpus": [9]}, InvalidArgument, "cpus", "CPU 9 does not exist or is offline"),
        ({"cpus": [-1]}, InvalidArgument, "cpus", "-1 is not a CPU number"),
        ({"cpus": ["1"]}, InvalidArgument, "cpus", "'1' is not a CPU number"),
        ({"cpus": [True]}, InvalidArgument, "cpus", "True is not a CPU number"),
        ({"cpus": [0, 1, 2, 3]}, InvalidArgument, "cpus", "would leave no housekeeping CPU"),
        ({"mems": [5]}, InvalidArgument, "mems", "memory node 5 is not available"),
        ({"rt_pid": 99999}, InvalidArgument, "rt_pid", "no process 99999"),
        ({"rt_pid": 0}, InvalidArgument, "rt_pid", "0 is not a process id"),
    ],
)
def test_bad_arguments(v1, kw, error, field, text):
    before = v1.snapshot()
    fs = _v1_kernel(v1)
    args = {"rt_pid": 100, "cpus": [3], "mems": None} | kw
    with pytest.raises(error) as e:
        v1.isolator(fs).apply(args["rt_pid"], args["cpus"], args["mems"])
    assert e.value.field == field and text in str(e.value) and "\n" not in str(e.value)
    assert _changes(fs) == [] and v1.snapshot() == before and not v1.state.exists()


@pytest.mark.parametrize(
    ("cgroup", "text"),
    [
        (lambda t: CgroupInfo("v1", str(t.base / "nope")), "is not there; mount it: mount -t"),
        (lambda t: CgroupInfo("v1", str(t.cg), read_only=True), "read-only here"),
        (lambda t: CgroupInfo(None, "", reason="no cgroup filesystem ..."), "no cgroup filesystem"),
    ],
    ids=["missing", "read-only", "none"],
)
def test_missing_or_read_only_cgroup_fs(v1, cgroup, text):
    before = v1.snapshot()
    fs = _v1_kernel(v1)
    with pytest.raises(FailedPrecondition, match=text) as e:
        v1.isolator(fs, cgroup=cgroup(v1)).apply(100, [3])
    assert "\n" not in str(e.value)
    assert _changes(fs) == [] and v1.snapshot() == before and not v1.state.exists()


def test_without_cap_sys_admin(tmp_path):
    tree = Tree(tmp_path, "v1", cap_eff="0000000000000000")
    tree.add_process(100)
    before = tree.snapshot()
    with pytest.raises(FailedPrecondition, match="needs CAP_SYS_ADMIN; run the agent as root"):
        tree.isolator().apply(100, [3])
    assert tree.snapshot() == before and not tree.state.exists()


def test_cgroup_detected_from_proc_mounts(v1):
    _write(v1.proc / "self/mounts", f"cgroup {v1.cg} cgroup rw,cpuset 0 0\n")
    iso = Isolator(
        NAME,
        str(v1.state),
        proc_root=str(v1.proc),
        irq_root=str(v1.irq),
        sys_root=str(v1.sys),
        fs=_v1_kernel(v1),
    )
    assert iso.cgroup == CgroupInfo("v1", str(v1.cg))
    iso.apply(100, [3])
    iso.remove()


def test_apply_twice_and_bad_names(v1):
    iso = v1.isolator(_v1_kernel(v1))
    iso.apply(100, [3])
    with pytest.raises(FailedPrecondition, match="already in force"):
        iso.apply(100, [2])
    iso.remove()
    with pytest.raises(InvalidArgument, match="cannot name a cgroup"):
        Isolator("../etc", str(v1.state))


# ---- the pieces alone ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [("{not json", "is unreadable"), ('{"format": 99}', "is not in format 1"), ("[]", "format")],
)
def test_unusable_record_says_how_to_undo_by_name(v1, text, reason):
    v1.state.write_text(text)
    with pytest.raises(FailedPrecondition, match=reason) as e:
        v1.isolator(_v1_kernel(v1)).remove()
    assert "move it aside and call remove() again" in str(e.value)
    assert v1.state.read_text() == text, "the record is the operator's evidence: left alone"


def test_record_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "isolation.json"
    journal = Journal(str(path))
    journal.save(orphan("v1", "/cg", ["/cg/x-rt"]))
    saved = path.read_text()

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError):
        journal.save(orphan("v1", "/cg", []))
    assert path.read_text() == saved and os.listdir(tmp_path) == ["isolation.json"]
    monkeypatch.undo()
    write_atomic(str(tmp_path / "unit"), "[Unit]\n", mode=0o644)
    assert (tmp_path / "unit").stat().st_mode & 0o777 == 0o644


def test_proc_text_helpers():
    stat = "77 (a) b (c)) S 1 2 3\n"  # comm may hold ") "
    assert stat_fields(stat)[:2] == ["S", "1"] and stat_fields("garbage") == []
    assert unescape("/mnt/my\\040cg\\134x") == "/mnt/my cg\\x"


# ---- real: this machine's cgroup hierarchy ------------------------------------------------


def _real(version: str) -> CgroupInfo:
    if os.geteuid() != 0:
        pytest.skip("real CPU isolation needs root")
    cg = detect_cgroup()
    if cg.version != version:
        pytest.skip(f"needs a cgroup {version} cpuset hierarchy; here: {cg.version or cg.reason}")
    if len(online_cpus()) < 2:
        pytest.skip("needs 2 CPUs: one to isolate, one for housekeeping")
    return cg


@pytest.fixture
def real_isolator(tmp_path: Path) -> Iterator[Callable[..., Isolator]]:
    """Isolators with unique names; whatever a test leaves is undone here,
    failed test or not: a machine left shielded breaks every test after it."""
    made: list[Isolator] = []

    def make(name: str | None = None, state: str | None = None) -> Isolator:
        iso = Isolator(
            name or f"rtc-test-{os.getpid()}-{next(_ids)}",
            state or str(tmp_path / f"isolation-{len(made)}.json"),
        )
        made.append(iso)
        return iso

    yield make
    for iso in made:
        for _ in range(3):
            try:
                iso.remove()
                break
            except ControlError as e:
                print(f"undoing the isolation of {iso.name} failed, retrying: {e}")
                time.sleep(0.5)


def _placement(pid: int | str) -> tuple[str, str]:
    """(Cpus_allowed_list, cpuset) of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    allowed = next(line for line in status.splitlines() if line.startswith("Cpus_allowed_list:"))
    return allowed.split(":", 1)[1].strip(), Path(f"/proc/{pid}/cpuset").read_text().strip()


def _irq_snapshot() -> dict[str, str]:
    out = {}
    for irq in os.listdir("/proc/irq"):
        path = Path("/proc/irq") / irq / "smp_affinity_list"
        if path.exists():
            out[irq] = path.read_text().strip()
    return out


def _start_rt(spawn: Spawner, shm: str, *extra: str, **kw) -> subprocess.Popen:
    proc = spawn.rt(shm, "--cpus", "1", *extra, **kw)
    open_when_ready(shm, proc, min_cycles=5).close()
    return proc


def _cycles(shm: str, proc: subprocess.Popen) -> int:
    seg = open_when_ready(shm, proc)
    try:
        return int(status(seg)["cycles"])
    finally:
        seg.close()


def test_real_v1_isolates_cpu_1_and_undoes_it(spawn, shm_name, real_isolator):
    cg = _real("v1")
    irqs_before, me_before = _irq_snapshot(), _placement("self")
    rt = _start_rt(spawn, shm_name)
    rt_before = _placement(rt.pid)
    iso = real_isolator()
    rt_cg, hk_cg = (f"{cg.root}/{iso.name}-{s}" for s in ("rt", "housekeeping"))

    report = iso.apply(rt.pid, [1])
    sleeper = spawn(["sleep", "30"])
    assert str(rt.pid) in Path(rt_cg, "tasks").read_text().split()
    assert _placement(rt.pid) == ("1", f"/{iso.name}-rt")
    assert _placement(sleeper.pid) == ("0", f"/{iso.name}-housekeeping")
    assert _placement("self") == ("0", f"/{iso.name}-housekeeping")
    assert (report["cpus"], report["housekeeping"]) == ([1], [0])
    assert report["exclusive"] and report["load_balance_split"], report
    assert report["tasks_moved"] > 0 and report["tasks_skipped"] > 0  # kernel threads stay
    assert report["irqs_moved"] + report["irqs_skipped"] > 0, report
    for irq, aff in _irq_snapshot().items():
        if 1 in parse_cpu_list(irqs_before[irq]) and irq not in report["irqs_unmovable"]:
            assert aff == "0", f"IRQ {irq} still allowed on CPU 1"
    shown = iso.show()
    assert shown["applied"] and shown["rt_pid_in_rt"] and len(shown["cpusets"]) == 2
    assert sorted(shown["irqs_on_rt_cpus"]) == sorted(int(i) for i in report["irqs_unmovable"])
    first = _cycles(shm_name, rt)
    wait_for(lambda: _cycles(shm_name, rt) > first + 10, timeout=5, what="the RT loop to run on")

    undone = iso.remove()
    assert not os.path.exists(rt_cg) and not os.path.exists(hk_cg)
    assert _placement("self") == me_before
    assert _placement(rt.pid) == rt_before == ("1", "/")
    assert _placement(sleeper.pid) == (me_before[0], "/")
    assert _irq_snapshot() == irqs_before
    assert iso.remove()["removed"] is False
    print(
        f"\nreal v1: apply {report['elapsed_ms']} ms ({report['tasks_moved']} tasks moved, "
        f"{report['tasks_skipped']} skipped, {report['irqs_moved']} IRQs moved, "
        f"{report['irqs_skipped']} skipped), remove {undone['elapsed_ms']} ms"
    )


CRASHING_AGENT = """
import os, sys
from control.placement.isolation import Isolator
Isolator(sys.argv[1], sys.argv[2]).apply(int(sys.argv[3]), [1])
os.kill(os.getpid(), 9)
"""


def test_real_v1_recover_after_agent_crash(spawn, shm_name, real_isolator, tmp_path):
    cg = _real("v1")
    irqs_before, me_before = _irq_snapshot(), _placement("self")
    rt = _start_rt(spawn, shm_name)
    name, state = f"rtc-test-{os.getpid()}-{next(_ids)}", str(tmp_path / "crashed.json")
    iso = real_isolator(name, state)  # registered first: undone whatever happens below
    agent = spawn([sys.executable, "-c", CRASHING_AGENT, name, state, str(rt.pid)], cwd=ROOT)
    assert agent.wait(timeout=30) == -signal.SIGKILL, agent.stderr.read() if agent.stderr else ""
    assert os.path.exists(state)
    assert _placement("self") == ("0", f"/{name}-housekeeping"), "the dead agent's isolation"

    report = iso.recover()
    assert report is not None and report["removed"]
    assert not os.path.exists(f"{cg.root}/{name}-rt") and not os.path.exists(state)
    assert _placement("self") == me_before and _placement(rt.pid) == ("1", "/")
    assert _irq_snapshot() == irqs_before
    assert iso.recover() is None


def test_real_v1_restarted_rt_process(spawn, shm_name, real_isolator):
    _real("v1")
    rt = _start_rt(spawn, shm_name)
    iso = real_isolator()
    iso.apply(rt.pid, [1])
    rt.kill()
    rt.wait(timeout=5)
    # started plainly it lands in the housekeeping cpuset, where pinning to CPU 1 fails
    plain = spawn.rt(shm_name, "--cpus", "1", "--resume")
    assert plain.wait(timeout=15) != 0
    assert "outside this process's cpuset" in (plain.stderr.read() if plain.stderr else "")
    # joining the RT cpuset first (what a supervisor should do) it runs
    join = ["sh", "-c", 'echo 0 > "$0" && exec "$@"', str(iso.rt_procs_file())]
    joined = _start_rt(spawn, shm_name, "--resume", prefix=join)
    assert _placement(joined.pid) == ("1", f"/{iso.name}-rt")
    assert iso.update_rt_pid(joined.pid)["rt_threads_moved"] >= 1
    assert iso.show()["rt_pid_in_rt"]
    joined.terminate()
    joined.wait(timeout=5)
    # an unpinned restart is brought in by update_rt_pid
    unpinned = spawn.rt(shm_name, "--resume")
    open_when_ready(shm_name, unpinned, min_cycles=5).close()
    assert _placement(unpinned.pid)[1] == f"/{iso.name}-housekeeping"
    iso.update_rt_pid(unpinned.pid)
    assert _placement(unpinned.pid) == ("1", f"/{iso.name}-rt")
    iso.remove()
    assert _placement(unpinned.pid)[1] == "/"


def test_real_v2_isolated_partition(spawn, shm_name, real_isolator):
    cg = _real("v2")
    cpu = max(online_cpus())
    irqs_before, me_before = _irq_snapshot(), _placement("self")
    rt = spawn.rt(shm_name, "--cpus", str(cpu))
    open_when_ready(shm_name, rt, min_cycles=5).close()
    iso = real_isolator()
    report = iso.apply(rt.pid, [cpu])
    partition = Path(cg.root, f"{iso.name}-rt", "cpuset.cpus.partition").read_text().strip()
    assert partition == report["partition"] in ("isolated", "root")
    assert cpu not in parse_cpu_list(_placement("self")[0]), "the partition took the CPU away"
    assert iso.show()["rt_pid_in_rt"]
    undone = iso.remove()
    assert not os.path.exists(f"{cg.root}/{iso.name}-rt")
    assert _placement("self")[0] == me_before[0]
    assert _irq_snapshot() == irqs_before
    print(f"\nreal v2: apply {report['elapsed_ms']} ms, remove {undone['elapsed_ms']} ms")
