"""The log pipeline in a real agent: RT records found with `rtctl logs`,
levels changed at runtime, a full spool, an agent killed mid-delivery."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.control.agentproc import AgentProc, free_port, rtctl


def search(agent: AgentProc, *args: str) -> list[dict]:
    return agent.call("logs", "search", *args)["logs"]


def test_deadline_misses_are_found_by_event_with_cycle_latency_process_and_thread(
    agent_factory, build_task
):
    """The issue's acceptance: `rtctl logs search --event deadline_miss
    --since 10m` finds a burn task's misses."""
    burns = [400, 800, 1200]
    agent = agent_factory(
        "--task",
        build_task("burn_task"),
        "--task-params",
        f"burn={';'.join(map(str, burns))},burn_us=4000",
    ).start()
    pid = agent.status()["rt"]["pid"]

    def misses():
        docs = search(agent, "--event", "deadline_miss", "--since", "10m", "--limit", "1000")
        found = {d["rtcore"]["cycle"] for d in docs} & set(burns)
        return docs if found == set(burns) else None

    docs = wait_for(misses, timeout=20, what="the burn cycles' misses in the log store")
    for d in docs:
        assert d["event"]["action"] == "deadline_miss" and d["log"]["level"] == "ERROR"
        assert d["process"] == {"pid": pid, "name": "rtcore-rt", "thread": d["process"]["thread"]}
        assert d["process"]["thread"]["id"] > 0
        assert set(d["rtcore"]["fields"]) == {"late_us", "exec_us", "period_us", "skipped"}
    # the burning cycle's own record: it ran 4 ms, over the next periods
    for d in (d for d in docs if d["rtcore"]["cycle"] in burns):
        assert d["rtcore"]["fields"]["exec_us"] > 3500 and d["rtcore"]["fields"]["skipped"] >= 3
    # the text form names the event, the cycle and the latency
    done = rtctl("logs", "search", "--event", "deadline_miss", "--target", agent.target)
    assert done.returncode == 0, done.stderr
    assert "deadline_miss" in done.stdout and "late_us=" in done.stdout and "cycle=" in done.stdout


def test_the_rt_level_changes_at_runtime_and_the_rt_filters_before_pushing(agent_factory, chatty):
    """DEBUG records the task makes every cycle are not in the store while the
    RT's level is INFO (never pushed: the RT's ring counters say so), appear
    after `log-level set debug --scope rt`, stop again after `set info`, all
    without a restart."""
    agent = agent_factory(
        "--task", chatty, "--task-params", "mode=loud,logs=1,spans=0,level=10"
    ).start()
    pid = agent.status()["rt"]["pid"]
    before = agent.status()["rt"]["ring_dropped"]["log"]
    assert search(agent, "record") == []
    assert agent.call("log-level", "set", "debug", "--scope", "rt")["rt"] == "DEBUG"
    debug = wait_for(lambda: search(agent, "record", "--limit", "20") or None, timeout=10)
    assert all(d["log"]["level"] == "DEBUG" for d in debug)
    assert agent.call("log-level", "set", "INFO", "--scope", "rt")["rt"] == "INFO"
    st = agent.status()
    assert st["rt"]["pid"] == pid
    assert st["rt"]["ring_dropped"]["log"] == before

    def settled():
        newest = search(agent, "record", "--limit", "1")[0]["_seq"]
        return newest if newest == search(agent, "record", "--limit", "1")[0]["_seq"] else None

    newest = wait_for(settled, timeout=10)
    time.sleep(0.5)
    assert search(agent, "record", "--limit", "1")[0]["_seq"] == newest


def test_the_level_set_at_runtime_outlives_an_rt_restart_and_an_agent_restart(
    agent_factory, chatty
):
    """`set debug --scope rt`, then the RT is killed (the supervisor starts a
    new one), then the agent is killed and started again beside that RT: the
    new RT logs at DEBUG from its start, and the new agent reports DEBUG."""
    args = ("--task", chatty, "--task-params", "mode=loud,logs=1,spans=0,level=10")
    agent = agent_factory(*args).start()
    agent.call("log-level", "set", "debug", "--scope", "rt")
    old = agent.status()["rt"]["pid"]
    os.kill(old, signal.SIGKILL)
    new = agent.wait_replaced(old)["rt"]["pid"]

    def from_new_rt():
        docs = search(agent, "record", "--limit", "5")
        return docs if docs and docs[0]["process"]["pid"] == new else None

    wait_for(from_new_rt, timeout=10, what="DEBUG records of the restarted RT")
    agent.kill()
    again = AgentProc(agent.spawn, Path(agent.data_dir).parent, agent.node_id, *args)
    again.port, again.target = agent.port, agent.target
    try:
        again.start()
        assert again.status()["rt"]["pid"] == new, "the RT was restarted, not adopted"
        assert again.call("log-level", "get")["rt"] == "DEBUG"
    finally:
        again.cleanup()  # a second agent of the node: the fixture knows only the first


@pytest.mark.slow
def test_a_full_spool_keeps_warnings_drops_debug_counted_and_the_loop_keeps_up(
    agent_factory, chatty
):
    """A 1 MiB spool that a sink cannot empty (an Elasticsearch URL where
    nothing listens: one line at start, the agent runs on): DEBUG records are
    dropped and counted by level, the WARN records (one every 50 cycles) are
    all kept, and neither the RT's log ring nor the drainer lost anything."""
    dead = f"http://127.0.0.1:{free_port()}"
    agent = agent_factory(
        "--task",
        chatty,
        "--task-params",
        "mode=loud,logs=5,spans=0,level=10,warn_every=50",
        "--log-level",
        "debug",
        "--log-spool-mb",
        "1",
        "--es-url",
        dead,
    ).start()

    def full():
        logs = agent.status()["logs"]
        return logs if logs["spool"]["dropped"]["DEBUG"] > 20_000 else None

    logs = wait_for(full, timeout=60, what="the spool to fill and drop DEBUG records")
    st = agent.status()
    assert logs["spool"]["dropped"]["WARN"] == 0
    assert logs["spool"]["dropped"]["ERROR"] == logs["spool"]["dropped"]["CRITICAL"] == 0
    assert st["rt"]["ring_dropped"]["log"] == 0
    assert st["drainer"]["subscribers"]["logs"]["dropped"] == 0
    assert logs["sinks"]["elastic"]["last_error"]
    assert logs["spool"]["sinks"]["elastic"]["lag_records"] > 0, "acknowledged, not delivered"
    # every WARN record the RT made while the spool was full is in the store
    warns = [d["rtcore"]["fields"]["cycle"] for d in search(agent, "warning", "--limit", "1000")]
    assert len(warns) >= 20
    first, last = min(warns), max(warns)
    assert sorted(warns) == list(range(first, last + 1, 50)), "a WARN record was lost"
    with open(Path(agent.data_dir) / "agent.log") as f:
        assert any("Elasticsearch" in line and dead.split("//")[1] in line for line in f)


def all_records(agent: AgentProc) -> list[dict]:
    """Every record in the node's store, in spool order."""
    from control.rpc.client import Client

    out: list[dict] = []
    with Client(agent.target, timeout=10) as client:
        while batch := client.search_logs(after_seq=out[-1]["_seq"] if out else 0, limit=1000)[
            "logs"
        ]:  # after_seq=0: from the first
            out.extend(batch)
    return out


@pytest.mark.slow
def test_an_agent_killed_mid_delivery_resumes_without_loss_or_duplicate(agent_factory, chatty):
    """kill -9 of the agent while the RT logs a record every cycle: the RT runs
    on, its records wait in the shared ring (the drainer takes them only once
    the spool has them), the restarted agent adopts the RT and drains them.
    The store then holds every cycle's record exactly once, across the crash."""
    args = ("--task", chatty, "--task-params", "mode=loud,logs=1,spans=0", "--period-us", "2000")
    agent = agent_factory(*args).start()
    wait_for(
        lambda: agent.status()["logs"]["spool"]["appended"] > 2000,
        timeout=30,
        what="records flowing",
    )
    rt_pid = agent.status()["rt"]["pid"]
    agent.kill()
    again = AgentProc(agent.spawn, Path(agent.data_dir).parent, agent.node_id, *args)
    again.port, again.target = agent.port, agent.target
    try:
        again.start()
        st = again.status()
        assert st["rt"]["pid"] == rt_pid, "the RT was restarted, not adopted"
        wait_for(
            lambda: again.status()["logs"]["spool"]["appended"] > 1000,
            timeout=30,
            what="records flowing again",
        )
        again.call("rt", "stop")
        wait_for(
            lambda: again.status()["logs"]["spool"]["sinks"]["store"]["lag_records"] == 0 or None,
            timeout=30,
            what="the store to catch up",
        )
        assert again.status()["rt"]["ring_dropped"]["log"] == 0, "the ring overflowed: too slow"
        docs = all_records(again)
        seqs = Counter(d["_seq"] for d in docs)
        assert max(seqs.values()) == 1, "a record stored twice"
        assert len(docs) == again.status()["logs"]["sinks"]["store"]["docs"]
        cycles = Counter(
            d["rtcore"]["cycle"]
            for d in docs
            if d["rtcore"].get("template", "").startswith("record")
        )
        assert max(cycles.values()) == 1, "a cycle's record stored twice"
        first, last = min(cycles), max(cycles)
        missing = sorted(set(range(first, last + 1)) - set(cycles))
        assert not missing, f"{len(missing)} cycles' records lost, e.g. {missing[:5]}"
    finally:
        again.cleanup()  # a second agent of the node: the fixture knows only the first


def test_logs_tail_follow_prints_every_new_record_once_in_order(agent_factory, chatty):
    """`rtctl logs tail -f` while the RT logs 100 records a second: what it
    prints has the spool's sequence numbers with no repeat and no gap."""
    import json
    import select
    import sys

    agent = agent_factory(
        "--task", chatty, "--task-params", "mode=loud,logs=1,spans=0", "--period-us", "10000"
    ).start()
    follow = agent.spawn(
        [sys.executable, "-m", "control.cli", "logs", "tail", "-f", "-n", "5", "--json"]
        + ["--target", agent.target]
    )
    lines: list[str] = []
    deadline = time.monotonic() + 30
    try:
        while len(lines) < 150 and time.monotonic() < deadline:
            ready, _, _ = select.select([follow.stdout], [], [], 1.0)
            if ready:
                lines.append(follow.stdout.readline())
    finally:
        follow.terminate()
        follow.wait(timeout=10)
    assert len(lines) == 150, f"only {len(lines)} lines in 30 s"
    seqs = [json.loads(line)["_seq"] for line in lines]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_a_read_only_spool_is_one_line_at_start_and_the_node_runs_on(agent_factory, tmp_path):
    """The spool directory is a read-only mount: the agent says so in one
    line, runs its RT, serves, and counts the logs it could not keep."""
    agent = agent_factory()
    spool = Path(agent.data_dir) / "spool"
    spool.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(spool)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {mounted.stderr.strip()}")
    try:
        agent.start()
        st = agent.status()
        assert st["rt"]["state"] == "run"
        assert "spool" in st["logs"]["spool_error"] and "Read-only" in st["logs"]["spool_error"]
        wait_for(lambda: sum(agent.status()["logs"]["unspooled"].values()) > 0, timeout=10)
        with open(Path(agent.data_dir) / "agent.log") as f:
            lines = [line for line in f if "log spool unavailable" in line]
        assert len(lines) == 1 and str(spool) in lines[0]
    finally:
        agent.cleanup()
        subprocess.run(["umount", str(spool)], check=False)
