"""CPU affinity, isolation and NUMA placement of a running RT loop through a
real agent: applied without a restart, rolled back whole on bad input, kept
across restarts, undone when the agent stops."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from control.placement.isolation import detect_cgroup
from tests.control.agentproc import rtctl

pytestmark = pytest.mark.slow

CPUS = sorted(os.sched_getaffinity(0))
RT_CPU, HK_CPU = str(CPUS[-1]), str(CPUS[0])
needs_two_cpus = pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs")
needs_cpuset = pytest.mark.skipif(
    os.geteuid() != 0 or detect_cgroup().version is None,
    reason="needs root and a cpuset cgroup filesystem",
)


def allowed(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(ln.split()[1] for ln in f if ln.startswith("Cpus_allowed_list:"))


def cpuset_of(pid: int) -> str:
    with open(f"/proc/{pid}/cpuset") as f:
        return f.read().strip()


def call(agent, *args) -> subprocess.CompletedProcess:
    return rtctl(*args, "--target", agent.target)


@needs_two_cpus
def test_affinity_changes_on_the_running_loop_and_is_kept(agent_factory):
    agent = agent_factory().start()
    pid = agent.status()["rt"]["pid"]
    doc = agent.call("rt", "set-affinity", "--cpus", HK_CPU)
    assert doc["cpus"] == HK_CPU and doc["rt_affinity"] == HK_CPU
    assert allowed(pid) == HK_CPU
    st = agent.status()
    assert st["rt"]["pid"] == pid and st["rt"]["restarts"] == 0, "no restart"
    # kept: the next RT process, and the next agent, start there
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=15) == 0
    agent.start()
    new_pid = agent.status()["rt"]["pid"]
    assert new_pid != pid and allowed(new_pid) == HK_CPU
    assert agent.call("rt", "isolation", "show")["cpus"] == HK_CPU


@needs_two_cpus
@needs_cpuset
def test_isolation_applies_survives_an_rt_crash_and_is_undone(agent_factory):
    agent = agent_factory().start()
    pid = agent.status()["rt"]["pid"]
    doc = agent.call("rt", "set-affinity", "--cpus", RT_CPU, "--isolate")
    assert doc["isolated"] is True
    assert cpuset_of(pid).endswith("-rt")
    with subprocess.Popen(["sleep", "30"]) as other:
        try:
            assert allowed(other.pid) == HK_CPU, "other processes stay off the RT CPU"
        finally:
            other.kill()
    assert agent.status()["rt"]["pid"] == pid, "no restart"

    os.kill(pid, signal.SIGKILL)
    st = agent.wait_replaced(pid)
    new_pid = st["rt"]["pid"]
    assert cpuset_of(new_pid).endswith("-rt") and allowed(new_pid) == RT_CPU

    doc = agent.call("rt", "set-affinity", "--cpus", RT_CPU, "--no-isolate")
    assert doc["isolated"] is False
    assert cpuset_of(new_pid) == "/" and cpuset_of(os.getpid()) == "/"
    assert not doc["isolation"]["applied"]


@needs_two_cpus
@needs_cpuset
def test_agent_stop_undoes_isolation(agent_factory):
    agent = agent_factory().start()
    agent.call("rt", "set-affinity", "--cpus", RT_CPU, "--isolate")
    assert cpuset_of(os.getpid()) != "/"
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=20) == 0
    assert cpuset_of(os.getpid()) == "/"


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--cpus", ",".join(map(str, CPUS)), "--isolate"], "no housekeeping CPU"),
        (["--cpus", "999"], "CPU 999 does not exist"),
        (["--cpus", "1-x"], "malformed"),
    ],
)
def test_bad_placement_is_refused_and_changes_nothing(agent_factory, args, expect):
    agent = agent_factory().start()
    before = agent.call("rt", "isolation", "show")
    pid = agent.status()["rt"]["pid"]
    done = call(agent, "rt", "set-affinity", *args)
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    assert expect in done.stderr
    after = agent.call("rt", "isolation", "show")
    assert (after["cpus"], after["isolated"], after["rt_affinity"]) == (
        before["cpus"],
        before["isolated"],
        before["rt_affinity"],
    )
    assert agent.status()["rt"]["pid"] == pid


def test_numa_node_change_and_bad_node(agent_factory):
    agent = agent_factory().start()
    doc = agent.call("rt", "set-numa", "--node", "0")
    assert doc["numa_node"] == 0 and doc["migration"]["to_node"] == 0
    done = call(agent, "rt", "set-numa", "--node", "7")
    assert done.returncode != 0 and "NUMA node 7 does not exist" in done.stderr
    assert agent.call("rt", "isolation", "show")["numa_node"] == 0
