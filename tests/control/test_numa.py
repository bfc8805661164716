"""control.placement.numa: NUMA placement of the RT process.

Multi-node behaviour runs on copies of sysfs/procfs trees in the kernel's
formats (fixtures/numa/two_node, four_node), changed between samples the way
the kernel would change them. The rest runs against a real RT process on this
machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from control.errors import InvalidArgument, NotFound
from control.placement.numa import (
    MIN_ALLOCATIONS,
    NumaMonitor,
    choose_cpus,
    migrate,
    parse_numa_maps,
    read_numastat,
    validate_node,
)
from rtcore import topology
from rtcore.segment import Segment
from tests.conftest import ROOT, Spawner
from tests.rtcore.rtproc import open_when_ready, status

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "numa"
RT_PID = 4242  # the RT process in two_node, bound to node 1
KB4 = 4096


class Alerts(list[tuple[str, str, dict[str, Any]]]):
    def __call__(self, kind: str, severity: str, details: dict[str, Any]) -> None:
        self.append((kind, severity, details))

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self]


class Machine:
    """A writable copy of a fixture tree: sysfs at .sys, procfs at .proc."""

    def __init__(self, name: str, dest: Path) -> None:
        shutil.copytree(FIXTURES / name, dest)
        self.root = dest
        self.sys = str(dest / "sys")
        self.proc = str(dest / "proc")

    def numa_maps(self, pid: int, snapshot: str | None = None, text: str | None = None) -> None:
        """Replace /proc/pid/numa_maps with a stored snapshot or with text."""
        path = self.root / "proc" / str(pid) / "numa_maps"
        if snapshot is not None:
            text = (self.root / "snapshots" / f"numa_maps.{snapshot}").read_text()
        assert text is not None
        path.write_text(text)

    def read_maps(self, pid: int) -> str:
        return (self.root / "proc" / str(pid) / "numa_maps").read_text()

    def allocate(self, node: int, local: int = 0, other: int = 0, miss: int = 0) -> None:
        """Advance node's numastat as the kernel does for allocations from it:
        `local` by tasks on the node, `other` by tasks elsewhere, `miss` of them
        meant for another node."""
        path = self.root / "sys/devices/system/node" / f"node{node}" / "numastat"
        counters = dict(line.split() for line in path.read_text().splitlines())
        add = {
            "numa_hit": local + other - miss,
            "numa_miss": miss,
            "local_node": local,
            "other_node": other,
        }
        path.write_text("".join(f"{k} {int(v) + add.get(k, 0)}\n" for k, v in counters.items()))


@pytest.fixture
def two_node(tmp_path: Path) -> Machine:
    return Machine("two_node", tmp_path / "two_node")


@pytest.fixture
def four_node(tmp_path: Path) -> Machine:
    return Machine("four_node", tmp_path / "four_node")


def monitor(m: Machine, node: int | None = 1, pid: int = RT_PID) -> tuple[NumaMonitor, Alerts]:
    alerts = Alerts()
    mon = NumaMonitor(lambda: pid, node, on_alert=alerts, sysfs=m.sys, proc=m.proc)
    return mon, alerts


# -- parsing ---------------------------------------------------------------


def test_parse_numa_maps_counts_pages_per_node_and_per_mapping(two_node: Machine) -> None:
    maps = parse_numa_maps(two_node.read_maps(RT_PID))

    assert maps["pages_by_node"] == {0: 140, 1: 3887}
    assert maps["bytes_by_node"] == {0: 140 * KB4, 1: 3887 * KB4}
    assert maps["total_pages"] == 4027
    assert len(maps["mappings"]) == 36
    by_addr = {m["address"]: m for m in maps["mappings"]}
    shm = by_addr[0x7F3A40C13000]
    assert shm["policy"] == "bind:1"
    assert (shm["kind"], shm["file"]) == ("file", "/dev/shm/rtcore-cell1")
    assert shm["pages_by_node"] == {1: 241}
    assert shm["counts"] == {"dirty": 241}
    assert by_addr[0x55D0D41DF000]["kind"] == "heap"
    assert by_addr[0x7FFD45B94000]["kind"] == "stack"
    libc = by_addr[0x7F3A419E5000]
    assert libc["policy"] == "prefer:1"
    assert libc["pages_by_node"] == {0: 61, 1: 281}
    assert libc["counts"] == {"mapped": 342, "mapmax": 44}
    # a reserved range with nothing faulted in: no pages, no page size printed
    empty = by_addr[0x7F3A41BAC000]
    assert (empty["kind"], empty["pages_by_node"], empty["kernelpagesize_kB"]) == ("anon", {}, None)


def test_parse_numa_maps_policies_huge_pages_and_escaped_names(four_node: Machine) -> None:
    maps = parse_numa_maps(four_node.read_maps(5151))
    by_addr = {m["address"]: m for m in maps["mappings"]}

    assert by_addr[0x7F8C40000000]["policy"] == "prefer (many):2-3"
    assert by_addr[0x7F8C40000000]["pages_by_node"] == {2: 100, 3: 28}
    assert by_addr[0x7F8C3FA00000]["policy"] == "weighted interleave:0-3"
    assert by_addr[0x7F8C3FE00000]["policy"] == "interleave:0-3"
    assert by_addr[0x7F8C40200000]["policy"] == "bind=static:2"
    assert by_addr[0x7F8C40200000]["file"] == "/dev/shm/rtcore-arm left"
    huge = by_addr[0x7F8C00000000]
    assert huge["huge"] and huge["kernelpagesize_kB"] == 2048
    assert huge["file"] == "/anon_hugepage (deleted)"
    assert by_addr[0x7F8C41000000]["counts"]["active"] == 300
    # page counts stay in each mapping's page size; bytes weigh them
    assert maps["pages_by_node"] == {0: 534, 1: 80, 2: 2063, 3: 108}
    assert maps["bytes_by_node"][2] == 2059 * KB4 + 4 * 2048 * 1024


def test_parse_numa_maps_ignores_blank_and_foreign_lines() -> None:
    assert parse_numa_maps("")["pages_by_node"] == {}
    maps = parse_numa_maps(
        "\nnot a mapping\n7f00 default anon=3 dirty=3 N0=3 kernelpagesize_kB=4\n"
    )
    assert maps["pages_by_node"] == {0: 3}


def test_read_numastat_per_node(two_node: Machine, four_node: Machine) -> None:
    stats = read_numastat(two_node.sys)
    assert set(stats) == {0, 1}
    assert stats[1] == {
        "numa_hit": 1207784915,
        "numa_miss": 0,
        "numa_foreign": 0,
        "interleave_hit": 62894,
        "local_node": 1207601127,
        "other_node": 183788,
    }
    four = read_numastat(four_node.sys)
    assert sorted(four) == [0, 1, 2, 3]
    assert (four[2]["numa_miss"], four[2]["numa_foreign"]) == (12, 4096)


# -- local ratio -------------------------------------------------------------


def test_local_page_share_on_the_bound_node(two_node: Machine) -> None:
    mon, alerts = monitor(two_node, node=1)
    s = mon.sample()

    assert s["node"] == 1 and s["bound"]
    assert s["single_node"] is False
    assert s["pages_by_node"] == {0: 140, 1: 3887}
    assert s["local_pages_pct"] == pytest.approx(100 * 3887 / 4027, abs=1e-3)
    # the first sample has no interval for the node counters
    assert s["local_access_pct"] is None and s["remote_access_pct"] is None
    assert (s["migrated_pages"], s["samples"]) == (0, 1)
    assert alerts == []


def test_local_share_weighs_huge_pages_by_size(four_node: Machine) -> None:
    mon, _ = monitor(four_node, node=2, pid=5151)
    s = mon.sample()
    local = 2059 * KB4 + 4 * 2048 * 1024
    total = (534 + 80 + 2059 + 108) * KB4 + 4 * 2048 * 1024
    assert s["local_pages_pct"] == pytest.approx(100 * local / total, abs=1e-3)


def test_local_access_ratio_from_node_counter_deltas(two_node: Machine) -> None:
    mon, alerts = monitor(two_node, node=1)
    mon.sample()
    two_node.allocate(1, local=9800, other=200, miss=7)
    two_node.allocate(0, local=50_000, other=3)  # node 0's traffic is not node 1's
    s = mon.sample()

    assert s["local_access_pct"] == pytest.approx(98.0)
    assert s["remote_access_pct"] == pytest.approx(2.0)
    assert (s["allocations"], s["numa_miss"], s["numa_foreign"]) == (10_000, 7, 0)
    assert alerts == []


def test_unbound_process_is_judged_on_the_node_it_runs_on(two_node: Machine) -> None:
    mon, _ = monitor(two_node, node=None)
    s = mon.sample()  # /proc/4242/stat: last ran on CPU 9, node 1
    assert (s["node"], s["bound"]) == (1, False)
    assert s["local_pages_pct"] == pytest.approx(100 * 3887 / 4027, abs=1e-3)

    stat = two_node.root / "proc" / str(RT_PID) / "stat"
    fields = stat.read_text().split()
    fields[38] = "18"  # processor: CPU 18, node 0
    stat.write_text(" ".join(fields) + "\n")
    s = mon.sample()
    assert s["node"] == 0
    assert s["local_pages_pct"] == pytest.approx(100 * 140 / 4027, abs=1e-3)


def test_comm_with_spaces_and_parentheses(four_node: Machine) -> None:
    mon, _ = monitor(four_node, node=None, pid=5151)  # comm "rt cell (arm)", CPU 26
    assert mon.sample()["node"] == 2


def test_no_rt_process_reports_no_pages(two_node: Machine) -> None:
    for pid in (0, 999_999):
        mon, alerts = monitor(two_node, node=1, pid=pid)
        s = mon.sample()
        assert (s["pid"], s["pages_by_node"], s["local_pages_pct"]) == (None, {}, None)
        assert alerts == []


# -- remote warning ----------------------------------------------------------


def test_remote_pages_warn_once_per_episode_and_again_after_recovery(two_node: Machine) -> None:
    baseline = two_node.read_maps(RT_PID)
    mon, alerts = monitor(two_node, node=1)
    assert mon.sample()["remote_alert"] is False  # 3.5% off node: under 5%

    two_node.numa_maps(RT_PID, "remote")  # 512 new pages the kernel took from node 0
    s = mon.sample()
    assert s["local_pages_pct"] == pytest.approx(100 * 3887 / 4539, abs=1e-3)
    assert alerts.kinds() == ["numa_remote"]
    kind, severity, details = alerts[0]
    assert severity == "WARN"
    assert details["remote_pages_pct"] == pytest.approx(100 * 652 / 4539, abs=1e-3)
    assert details["threshold_pct"] == 5.0
    assert details["top_remote_mappings"][0]["address"] == "7f3a3c000000"
    assert details["top_remote_mappings"][0]["remote_pages"] == {0: 512}
    assert "node 1" in details["message"] and "14.4%" in details["message"]
    assert s["migrated_pages"] == 0  # new pages, not moved ones

    mon.sample()
    mon.sample()
    assert alerts.kinds() == ["numa_remote"]  # same episode: said once

    two_node.numa_maps(RT_PID, text=baseline)  # the region was freed
    assert mon.sample()["remote_alert"] is False
    assert alerts.kinds() == ["numa_remote"]

    two_node.numa_maps(RT_PID, "remote")
    assert mon.sample()["remote_alert"] is True
    assert alerts.kinds() == ["numa_remote", "numa_remote"]


def test_remote_allocations_on_the_node_warn(two_node: Machine) -> None:
    mon, alerts = monitor(two_node, node=1)
    mon.sample()
    two_node.allocate(1, local=900, other=100)
    s = mon.sample()
    assert s["remote_access_pct"] == pytest.approx(10.0)
    assert alerts.kinds() == ["numa_remote"]
    assert alerts[0][2]["remote_access_pct"] == pytest.approx(10.0)
    assert "allocations" in alerts[0][2]["message"]

    two_node.allocate(1, local=5000, other=10)
    mon.sample()  # recovered
    two_node.allocate(1, local=1000, other=500)
    mon.sample()
    assert alerts.kinds() == ["numa_remote", "numa_remote"]


def test_too_few_allocations_do_not_warn(two_node: Machine) -> None:
    mon, alerts = monitor(two_node, node=1)
    mon.sample()
    two_node.allocate(1, local=1, other=MIN_ALLOCATIONS - 2)
    s = mon.sample()
    assert s["remote_access_pct"] > 90  # reported ...
    assert alerts == []  # ... but too few pages to call it remote access


def test_threshold_is_configurable(two_node: Machine) -> None:
    alerts = Alerts()
    mon = NumaMonitor(
        lambda: RT_PID,
        1,
        on_alert=alerts,
        sysfs=two_node.sys,
        proc=two_node.proc,
        warn_remote_pct=3.0,
    )
    mon.sample()  # 3.48% of the pages are on node 0
    assert alerts.kinds() == ["numa_remote"]
    with pytest.raises(InvalidArgument) as e:
        NumaMonitor(lambda: RT_PID, 1, on_alert=alerts, sysfs=two_node.sys, warn_remote_pct=100)
    assert e.value.field == "warn_remote_pct"


# -- migration detection -----------------------------------------------------


def test_pages_moving_between_nodes_are_reported(two_node: Machine) -> None:
    mon, alerts = monitor(two_node, node=1)
    mon.sample()
    two_node.numa_maps(RT_PID, "migrated")  # heap (448) and segment (241) now on node 0
    s = mon.sample()

    assert s["migrated_pages"] == 689
    assert s["migrated_bytes"] == 689 * KB4
    assert s["pages_by_node"] == {0: 829, 1: 3198}
    migrations = [d for kind, _, d in alerts if kind == "numa_migration"]
    assert len(migrations) == 1
    assert (migrations[0]["from_nodes"], migrations[0]["to_nodes"]) == ({1: 689}, {0: 689})
    assert "689 pages" in migrations[0]["message"]
    assert "numa_remote" in alerts.kinds()  # 20.6% off node now

    assert mon.sample()["migrated_pages"] == 0  # nothing moved since
    assert alerts.kinds().count("numa_migration") == 1


def test_growth_and_new_mappings_are_not_migration(two_node: Machine) -> None:
    mon, alerts = monitor(two_node, node=1)
    mon.sample()
    text = two_node.read_maps(RT_PID).replace(
        "heap anon=448 dirty=448 N1=448", "heap anon=600 dirty=600 N1=600"
    )
    text += "7ffd50000000 prefer:1 anon=16 dirty=16 N0=16 kernelpagesize_kB=4\n"
    text = text.replace("7f3a41b94000 prefer:1 anon=13 dirty=13 N1=13 kernelpagesize_kB=4\n", "")
    two_node.numa_maps(RT_PID, text=text)
    assert mon.sample()["migrated_pages"] == 0
    assert "numa_migration" not in alerts.kinds()


def test_a_restarted_rt_process_is_not_compared_with_the_old_one(two_node: Machine) -> None:
    pids = iter([RT_PID, 4343])
    shutil.copytree(two_node.root / "proc" / str(RT_PID), two_node.root / "proc" / "4343")
    (two_node.root / "proc/4343/numa_maps").write_text(
        (two_node.root / "snapshots/numa_maps.migrated").read_text()
    )
    alerts = Alerts()
    mon = NumaMonitor(
        lambda: next(pids), 1, on_alert=alerts, sysfs=two_node.sys, proc=two_node.proc
    )
    mon.sample()
    s = mon.sample()
    assert (s["pid"], s["migrated_pages"]) == (4343, 0)
    assert "numa_migration" not in alerts.kinds()


# -- CPUs and nodes ----------------------------------------------------------


def test_choose_cpus_two_nodes(two_node: Machine) -> None:
    assert choose_cpus(0, two_node.sys) == [*range(0, 8), *range(16, 24)]
    assert choose_cpus(1, two_node.sys) == [*range(8, 16), *range(24, 32)]


def test_choose_cpus_four_nodes_non_contiguous(four_node: Machine) -> None:
    assert choose_cpus(0, four_node.sys) == [0, 1, 2, 3, 16, 17, 18, 19]
    assert choose_cpus(2, four_node.sys) == [8, 9, 10, 11, 24, 25, 26, 27]
    assert choose_cpus(3, four_node.sys) == [12, 13, 14, 15, 28, 29, 30, 31]
    every = sorted(c for n in range(4) for c in choose_cpus(n, four_node.sys))
    assert every == list(range(32))


def test_choose_cpus_refuses_a_memory_only_node(four_node: Machine) -> None:
    # a CXL or HBM node: memory, no CPUs; the kernel prints an empty list
    (four_node.root / "sys/devices/system/node/node3/cpulist").write_text("\n")
    with pytest.raises(InvalidArgument) as e:
        choose_cpus(3, four_node.sys)
    assert e.value.field == "node"
    assert "no CPUs" in str(e.value) and "0-2" in str(e.value)


@pytest.mark.parametrize(
    ("tree", "node", "nodes"), [("two_node", 2, "0-1"), ("four_node", 7, "0-3")]
)
def test_bad_node_is_invalid_argument(tree: str, node: int, nodes: str, tmp_path: Path) -> None:
    m = Machine(tree, tmp_path / tree)
    for call in (
        lambda: validate_node(node, m.sys),
        lambda: choose_cpus(node, m.sys),
        lambda: NumaMonitor(lambda: RT_PID, node, on_alert=Alerts(), sysfs=m.sys),
        lambda: migrate(os.getpid(), [0], node, sysfs=m.sys),
        lambda: migrate(os.getpid(), [node], 0, sysfs=m.sys),
    ):
        with pytest.raises(InvalidArgument) as e:
            call()
        assert e.value.field == "node"
        assert f"NUMA node {node} does not exist" in str(e.value)
        assert f"(nodes: {nodes})" in str(e.value)
    with pytest.raises(InvalidArgument):
        validate_node(-1, m.sys)


def test_migrate_checks_its_arguments(two_node: Machine) -> None:
    with pytest.raises(InvalidArgument) as e:
        migrate(os.getpid(), [], 0, sysfs=two_node.sys)
    assert e.value.field == "from_nodes"
    with pytest.raises(InvalidArgument) as e:
        migrate(0, [0], 1, sysfs=two_node.sys)
    assert e.value.field == "pid"


# -- this machine, a real RT process -----------------------------------------

needs_numa = pytest.mark.skipif(
    not os.path.exists("/proc/self/numa_maps"),
    reason="kernel built without NUMA support: no /proc/PID/numa_maps",
)


@pytest.fixture
def rt_on_node0(spawn: Spawner, shm_name: str) -> subprocess.Popen:
    if 0 not in topology.numa_nodes():
        pytest.skip("this machine has no NUMA node 0")
    proc = spawn.rt(shm_name, "--numa-node", "0")
    open_when_ready(shm_name, proc).close()
    return proc


def status_cycles(shm: str) -> int:
    seg = Segment.open(shm)
    try:
        return int(status(seg)["cycles"])
    finally:
        seg.close()


@needs_numa
@pytest.mark.timeout(60)
def test_real_rt_process_bound_to_node0(rt_on_node0: subprocess.Popen, shm_name: str) -> None:
    alerts = Alerts()
    mon = NumaMonitor(lambda: rt_on_node0.pid, 0, on_alert=alerts)
    first = mon.sample()
    second = mon.sample()

    single = len(topology.numa_nodes()) == 1
    assert second["pid"] == rt_on_node0.pid
    assert second["node"] == 0
    assert second["single_node"] is single
    assert second["pages_by_node"].get(0, 0) > 0
    assert (first["samples"], second["samples"]) == (1, 2)
    if single:
        assert second["local_pages_pct"] == 100.0
        assert second["local_access_pct"] == 100.0
        assert "single NUMA node" in second["note"]
        assert second["migrated_pages"] == 0
        assert alerts == []
    # the RT's own binding shows in its numa_maps: the segment bound, the rest preferred
    with open(f"/proc/{rt_on_node0.pid}/numa_maps") as f:
        maps = parse_numa_maps(f.read())
    segment = [m for m in maps["mappings"] if m["file"] == f"/dev/shm/{shm_name}"]
    assert segment and all(m["policy"] == "bind:0" for m in segment)
    assert any(m["policy"] == "prefer:0" for m in maps["mappings"])


@needs_numa
@pytest.mark.timeout(60)
def test_real_migrate_to_the_same_node_moves_nothing(
    rt_on_node0: subprocess.Popen, shm_name: str
) -> None:
    result = migrate(rt_on_node0.pid, [0], 0)

    assert result["pid"] == rt_on_node0.pid
    assert (result["from_nodes"], result["to_node"]) == ([0], 0)
    assert (result["pages_moved"], result["pages_not_moved"]) == (0, 0)
    assert result["pages_by_node_before"].get(0, 0) > 0
    assert result["elapsed_ms"] >= 0
    # the RT loop carried on through the call
    seg = open_when_ready(shm_name, rt_on_node0, min_cycles=status_cycles(shm_name) + 10)
    seg.close()
    assert rt_on_node0.poll() is None


@needs_numa
@pytest.mark.timeout(60)
def test_real_migrate_to_a_missing_node(rt_on_node0: subprocess.Popen) -> None:
    with pytest.raises(InvalidArgument) as e:
        migrate(rt_on_node0.pid, [0], 7)
    assert e.value.field == "node"
    nodes = topology.format_cpu_list(topology.numa_nodes())
    assert f"NUMA node 7 does not exist on this machine (nodes: {nodes})" in str(e.value)


@needs_numa
@pytest.mark.timeout(30)
def test_real_migrate_of_a_process_that_is_gone() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    with pytest.raises(NotFound):
        migrate(int(done.stdout), [0], 0)


@needs_numa
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
@pytest.mark.timeout(60)
def test_real_migrate_refused_without_privilege(rt_on_node0: subprocess.Popen) -> None:
    """As 'nobody', the agent may not touch a root RT process: the refusal names
    the capability to add."""
    script = textwrap.dedent(
        f"""
        import os, sys
        from control.placement import numa
        from control.errors import FailedPrecondition
        os.setgroups([]); os.setgid(65534); os.setuid(65534)
        try:
            numa.migrate({rt_on_node0.pid}, [0], 0)
        except FailedPrecondition as e:
            print(e)
            sys.exit(0)
        sys.exit("migrate was not refused")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    assert "CAP_SYS_PTRACE" in out.stdout or "CAP_SYS_NICE" in out.stdout
