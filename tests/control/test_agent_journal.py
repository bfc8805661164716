"""Fencing and the actuation journal with real agents, RT processes and
signals: an RT only drives outputs while its agent's lease is fresh, a
supervised RT restarted as a standby never actuates, and the journal keeps
every actuated interval across RT kills, a frozen agent and a clean stop."""

from __future__ import annotations

import os
import signal
import time

import pytest

from control.config import AgentConfig
from control.rt.journal import ActuationJournal
from control.rt.supervisor import Supervisor, proc_state
from rtcore import _core
from tests.conftest import wait_for
from tests.control.agentproc import CPU

pytestmark = pytest.mark.slow

LEASE_MS = 200


def rt_status(agent) -> dict:
    seg = agent.segment()
    try:
        st = seg.view()["status"]
        ctl = _core.read_control(seg.buf)
        return {
            k: int(st[k]) for k in st.dtype.names if st[k].dtype.kind in "iu" and st[k].ndim == 0
        } | {
            "lease_ns": ctl["lease_ns"],
            "lease_timeout_ns": ctl["lease_timeout_ns"],
        }
    finally:
        seg.close()


def wait_actuating(agent, pid: int | None = None) -> dict:
    def ok():
        st = rt_status(agent)
        return st if st["actuating"] and (pid is None or st["pid"] == pid) else None

    return wait_for(ok, timeout=15, what="the RT to actuate")


def test_journal_keeps_every_interval_across_kills_a_frozen_agent_and_a_stop(
    agent_factory, tmp_path
):
    config = tmp_path / "agent.toml"
    config.write_text(f"lease_timeout_ms = {LEASE_MS}\n")
    agent = agent_factory("--config", str(config)).start()
    first = wait_actuating(agent)
    assert first["lease_timeout_ns"] == LEASE_MS * 1_000_000

    # 1: the RT is killed while actuating: it cannot close its interval
    os.kill(first["pid"], signal.SIGKILL)
    second = agent.wait_replaced(first["pid"])
    wait_actuating(agent, second["rt"]["pid"])

    # 2: the agent freezes: its lease lapses and the RT stops by itself
    agent.proc.send_signal(signal.SIGSTOP)
    try:
        frozen = wait_for(
            lambda: (st := rt_status(agent))["actuating"] == 0 and st,
            timeout=5,
            what="the RT to stop actuating without its agent",
        )
        period_ns = frozen["period_ns"]
        expiry = frozen["lease_ns"] + frozen["lease_timeout_ns"]
        assert frozen["act_last_mono_ns"] <= expiry + period_ns, "stopped within one cycle"
        time.sleep(0.2)
        assert rt_status(agent)["actuated_cycles"] == frozen["actuated_cycles"], "still stopped"
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    wait_actuating(agent)

    # 3: killed again, then 4: a clean stop closes the last interval itself
    third = rt_status(agent)
    os.kill(third["pid"], signal.SIGKILL)
    fourth = agent.wait_replaced(third["pid"])
    wait_actuating(agent, fourth["rt"]["pid"])
    served = agent.call("rt", "journal")
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=15) == 0

    intervals = ActuationJournal(os.path.join(agent.data_dir, "journal.jsonl"), "").intervals()
    assert [i["closed_by"] for i in intervals] == ["agent", "rt", "agent", "rt"], intervals
    assert {i["epoch"] for i in intervals} == {1}
    assert served["intervals"][:3] == intervals[:3], "rtctl rt journal serves the same file"
    pids = [i["pid"] for i in intervals]
    assert pids == [first["pid"], second["rt"]["pid"], second["rt"]["pid"], fourth["rt"]["pid"]]
    for i in intervals:
        # one record per actuated cycle: the count matches the cycle span
        assert i["cycles"] == i["end_cycle"] - i["start_cycle"] + 1, i
        assert i["end_time_ns"] >= i["start_time_ns"]
    for before, after in zip(intervals, intervals[1:], strict=False):
        assert before["end_time_ns"] < after["start_time_ns"], "intervals never overlap"
        if before["closed_by"] == "rt":
            assert before["end_cycle"] < after["start_cycle"], "the same RT went on"
        else:
            # a killed RT's replacement resumes from its last checkpoint (every
            # 10 cycles): the cycles after it run again, nothing earlier
            assert before["end_cycle"] - 10 < after["start_cycle"] <= before["end_cycle"] + 1


def test_supervised_rt_restarted_as_standby_never_actuates(tmp_path):
    """The supervisor always passes the role: an RT restarted on a segment a
    primary left active (fresh lease, epoch 1) starts as the standby it is told."""
    cfg = AgentConfig(node_id=f"sb{os.getpid()}", data_dir=str(tmp_path / "data"), cpus=[int(CPU)])
    shm_name = cfg.shm_name
    events: list[str] = []
    standby = ["--standby", "--epoch", "3", "--lease-timeout-ms", "200", "--node-id", "7"]
    sup = Supervisor(
        cfg, lambda kind, level, fields: events.append(kind), control_args=lambda: standby
    )
    sup.start()
    try:
        wait_for(lambda: sup.state == "running" and sup.segment, what="the RT to run")
        seg = sup.segment
        old_pid = sup.pid
        # the segment now looks like a primary's: active with a fresh lease
        _core.write_control(seg.buf, active=1, epoch=1, lease_timeout_ns=10**9)
        _core.renew_lease(seg.buf)
        wait_for(lambda: int(seg.view()["status"]["actuating"]), what="the old RT to actuate")
        os.kill(old_pid, signal.SIGKILL)
        wait_for(
            lambda: sup.pid not in (0, old_pid) and sup.state == "running",
            what="the RT to be restarted",
        )
        st = seg.view()["status"]
        wait_for(lambda: int(st["pid"]) == sup.pid and int(st["cycles"]) > 200, what="cycles")
        _core.renew_lease(seg.buf)
        time.sleep(0.1)
        assert int(st["actuating"]) == 0 and int(st["actuated_cycles"]) == 0
        ctl = _core.read_control(seg.buf)
        assert (ctl["active"], ctl["epoch"], ctl["node_id"]) == (0, 3, 7)
        assert "rt_crashed" in events
    finally:
        sup.close(stop_rt=True)
        if os.path.exists(f"/dev/shm/{shm_name}"):
            os.unlink(f"/dev/shm/{shm_name}")


def test_the_rt_stops_before_its_lease_and_its_drainer(tmp_path):
    """Stop order is the reverse of start: the supervisor (RT) stops before the
    lease keeper (else a slow stop would lapse the lease mid-SAFE) and before
    the drainer (else the RT's last records would be lost), and the log
    pipeline stops after the drainer and every part that logs."""
    from control.node.agent import Agent

    agent = Agent(AgentConfig(node_id=f"order{os.getpid()}", data_dir=str(tmp_path)))
    try:
        names = [c.name for c in agent.lifecycle._components]
        stop = list(reversed(names))
        assert stop.index("supervisor") < stop.index("lease") < stop.index("drainer")
        assert stop.index("drainer") < stop.index("final checkpoint") < stop.index("lock")
        assert stop.index("log pipeline") == max(
            stop.index(n) for n in names if n not in ("lock", "jobs database", "trace store")
        )
    finally:
        agent.logs.stop()
        agent.jobs.close()
        agent.traces.close()
        agent._lock_file.close()


def test_an_agent_restarted_after_both_were_killed_closes_the_interval(agent_factory, tmp_path):
    """A machine's agent and RT killed together: the next agent finds the
    interval open in the journal and the dead RT's status block in the
    segment, and closes the interval from it, exactly."""
    agent = agent_factory().start()
    first = wait_actuating(agent)
    journal = ActuationJournal(os.path.join(agent.data_dir, "journal.jsonl"), "")
    wait_for(lambda: journal.open_interval(), timeout=5, what="the START persisted")
    agent.proc.kill()
    agent.proc.wait(timeout=5)
    os.kill(first["pid"], signal.SIGKILL)
    # dead, perhaps not reaped yet (its parent is gone; init reaps when it will)
    wait_for(lambda: proc_state(first["pid"]) in (None, "Z", "X"), timeout=5, what="RT dead")
    dead = rt_status(agent)
    agent.start()
    wait_for(lambda: len(journal.intervals()) >= 2, timeout=20, what="a second interval")
    closed = journal.intervals()[0]
    assert closed["closed_by"] == "agent" and closed["pid"] == first["pid"]
    assert closed["end_cycle"] == dead["act_last_cycle"]
    assert closed.get("end_bound") != "upper"
