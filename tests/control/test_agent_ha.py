"""Single-node high availability with real processes and real signals:
RT crash and hang, agent crash and adoption, damaged checkpoints, clean stop."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from control.logs.store import LogStore
from control.rt.supervisor import proc_state
from rtcore import _core, reftask
from rtcore.ckptfile import read_checkpoint_file
from tests.conftest import wait_for
from tests.control.agentproc import rtctl

pytestmark = pytest.mark.slow


def write_job(tmp_path, n=5, step=0.3, joints=6) -> str:
    path = tmp_path / "job.json"
    path.write_text(
        json.dumps(
            {
                "name": "sweep",
                "waypoints": [
                    {"t": step * (i + 1), "q": [0.1 * (i + 1)] * joints} for i in range(n)
                ],
            }
        )
    )
    return str(path)


def events_of(agent, kinds, count, timeout=20):
    done = rtctl(
        "watch",
        "--target",
        agent.target,
        "--json",
        "--count",
        str(count),
        *sum((["--kind", k] for k in kinds), []),
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def rt_job(seg) -> tuple[int, str, int]:
    """(job id, trajectory state, cursor) in the RT's newest checkpoint."""
    newest = seg.newest_checkpoint()
    if newest is None:
        return 0, "idle", 0
    state = reftask.decode_state(newest[1])
    return int(state["job_id"]), reftask.TRAJ_STATES[int(state["traj_state"])], int(state["cursor"])


def wait_rt_cursor(seg, job_id: int, cursor: int) -> None:
    """Until the RT's own checkpoints show the job running past `cursor`
    waypoints (read from shared memory: no rtctl round trip in the way)."""
    wait_for(
        lambda: (j := rt_job(seg))[0] == job_id and j[1] == "running" and j[2] >= cursor,
        timeout=15,
        interval=0.005,
        what=f"the RT to pass waypoint {cursor} of job {job_id}",
    )


def test_kill_9_rt_during_job_restores_and_finishes_once(agent_factory, tmp_path):
    n = 8
    agent = agent_factory().start()
    seg = agent.segment()
    job = agent.call("job", "submit", write_job(tmp_path, n=n, step=0.5))
    wait_rt_cursor(seg, job["id"], 2)
    before = agent.status()
    recorded = agent.call("job", "get", str(job["id"]))
    old_pid = before["rt"]["pid"]
    rt_before_kill = rt_job(seg)
    os.kill(old_pid, signal.SIGKILL)
    seg.close()
    # killed mid-job: the agent has it running past its first waypoint, and
    # the RT's last checkpoint before the kill is short of the last one
    assert recorded["state"] == "running" and 1 <= recorded["cursor"] < n - 1, recorded
    assert rt_before_kill[:2] == (job["id"], "running"), rt_before_kill
    assert 1 <= rt_before_kill[2] < n - 1, rt_before_kill
    after = agent.wait_replaced(old_pid)
    assert after["rt"]["restarts"] == 1
    assert after["rt"]["cycles"] >= before["checkpoint"]["cycle"], "cycle count resumed"
    done = wait_for(
        lambda: (j := agent.call("job", "get", str(job["id"])))["state"] == "done" and j,
        timeout=20,
        what="the job to finish",
    )
    assert done["cursor"] == n and done["attempts"] == 1, "finished from its cursor, sent once"
    assert done["epoch"] >= 1 and done["ckpt_seq"] > 0, "progress carries its checkpoint"
    jobs = agent.call("job", "list")
    assert [j["state"] for j in jobs if j["id"] == job["id"]] == ["done"]


def test_sigstop_rt_is_detected_as_hung_and_restarted(agent_factory):
    agent = agent_factory().start()
    pid = agent.status()["rt"]["pid"]
    stopped_at = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    new = agent.wait_replaced(pid)
    took = time.monotonic() - stopped_at
    assert new["rt"]["restarts"] == 1
    assert "hung" in new["rt"]["supervisor"]["last_exit"]
    # 3 checks at 100 ms: detected after 0.3-0.4 s, never on the first missed check
    assert took >= 0.3
    assert proc_state(pid) in (None, "Z")


def test_kill_9_agent_then_restart_adopts_running_rt(agent_factory):
    agent = agent_factory().start()
    first = agent.status()
    pid = first["rt"]["pid"]
    agent.kill()
    seg = agent.segment()
    cycles_at_kill = int(seg.view()["status"]["cycles"])
    time.sleep(0.3)
    assert int(seg.view()["status"]["cycles"]) > cycles_at_kill, "the RT kept running alone"
    agent.start()
    st = agent.status()
    assert st["rt"]["pid"] == pid, "the same RT process was adopted"
    assert st["rt"]["supervisor"]["adopted"] is True
    assert st["rt"]["restarts"] == 0
    assert st["rt"]["cycles"] > cycles_at_kill, "the loop went on through the agent's death"
    seg.close()


def test_damaged_newest_checkpoint_file_falls_back_to_previous(agent_factory):
    agent = agent_factory().start()
    wait_for(
        lambda: len(os.listdir(os.path.join(agent.data_dir, "checkpoints"))) >= 3,
        timeout=10,
        what="three durable checkpoints",
    )
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=15) == 0
    os.unlink(f"/dev/shm/{agent.shm}")  # a reboot: only the disk copies remain
    ckdir = os.path.join(agent.data_dir, "checkpoints")
    files = sorted(f for f in os.listdir(ckdir) if f.endswith(".bin"))
    newest, previous = files[-1], files[-2]
    with open(os.path.join(ckdir, newest), "r+b") as f:
        f.seek(-10, os.SEEK_END)
        f.write(b"\xff" * 10)
    agent.start()
    st = agent.status()
    previous_seq = read_checkpoint_file(os.path.join(ckdir, previous))[0]["seq"]
    seg = agent.segment()
    assert int(seg.view()["status"]["restored_seq"]) == previous_seq
    seg.close()
    assert os.path.exists(os.path.join(ckdir, newest + ".corrupt"))
    with open(os.path.join(agent.data_dir, "agent.log")) as f:
        assert any("damaged" in line and newest in line for line in f)
    assert st["rt"]["state"] == "run"


def test_sigterm_brings_rt_to_safe_then_stops_it(agent_factory):
    """SIGTERM: the RT goes to SAFE, then stops, and its last records (the
    SAFE change, the stop) reach the node's log store: the RT is stopped
    before the drainer, which drains once more."""
    agent = agent_factory().start()
    pid = agent.status()["rt"]["pid"]
    seg = agent.segment()
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(timeout=15) == 0
    assert proc_state(pid) in (None, "Z")
    head, tail = _core.ring_counters(seg.buf, "log")[:2]
    seg.close()
    assert head == tail, "the RT's last records were left in the ring"
    store = LogStore(os.path.join(agent.data_dir, "logs"))
    try:
        docs = store.search(limit=1000)
    finally:
        store.close()
    ordered = sorted(docs, key=lambda d: d["_seq"])
    rt_lines = [d["message"] for d in ordered if d["process"]["name"] == "rtcore-rt"]
    safe = [i for i, line in enumerate(rt_lines) if line.startswith("state changed to SAFE")]
    stop = [i for i, line in enumerate(rt_lines) if line.startswith("RT loop stopping")]
    assert safe and stop, rt_lines[-5:]
    assert safe[-1] < stop[-1] == len(rt_lines) - 1


def test_new_user_needs_no_configuration(spawn, tmp_path):
    """`rtctl agent` in one terminal, `rtctl status` in another: no flags, no file.

    The defaults are machine-wide names: 127.0.0.1:7761, 127.0.0.1:9761 and a
    segment named after the host. Any other agent on the machine holding them
    (this test run at the same time from another checkout or session, someone's
    `rtctl agent`) makes this agent refuse to start while `rtctl status`, asked
    with no --target, answers from that other agent. So the agent and rtctl
    run in a network and host-name namespace of their own: loopback and host
    name are theirs, the defaults are exercised as they are."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("nsenter"):
        pytest.skip("needs root, unshare and nsenter for a private loopback and host name")
    env = dict(os.environ, HOME=str(tmp_path), XDG_STATE_HOME="")
    env.pop("RTCTL_TARGET", None)
    host = f"newuser{os.getpid()}"
    agent = spawn(
        [
            "unshare",
            "--net",
            "--uts",
            "--",
            "sh",
            "-c",
            f'ip link set lo up && hostname {host} && exec "$0" -m control.cli agent',
            sys.executable,
        ],
        env=env,
    )
    inside = ["nsenter", f"--target={agent.pid}", "--net", "--uts", "--"]

    def rtctl_inside(*args: str) -> subprocess.CompletedProcess:
        if agent.poll() is not None:
            pytest.fail(f"the agent exited ({agent.returncode}): {agent.stderr.read()}")
        return subprocess.run(
            [*inside, sys.executable, "-m", "control.cli", *args],
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
        )

    try:
        st = wait_for(
            lambda: (
                (d := rtctl_inside("status", "--json")).returncode == 0
                and json.loads(d.stdout)["rt"]["state"] == "run"
                and json.loads(d.stdout)
            ),
            timeout=20,
            what="`rtctl status` with no flags",
        )
        assert st["agent"]["pid"] == agent.pid, "the agent this test started answered"
        assert st["node_id"] == host and st["role"] == "primary"
        assert st["agent"]["data_dir"].startswith(str(tmp_path))
        human = rtctl_inside("status")
        assert human.returncode == 0 and "run" in human.stdout
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=15)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/dev/shm/rtcore-{host}")


@pytest.mark.parametrize(
    ("down_s", "n", "step"),
    [(0.2, 8, 0.5), (3.0, 4, 0.4)],
    ids=["back-mid-job", "back-after-job-ended"],
)
def test_job_survives_agent_kill_9(agent_factory, tmp_path, down_s, n, step):
    agent = agent_factory().start()
    seg = agent.segment()
    job = agent.call("job", "submit", write_job(tmp_path, n=n, step=step))
    wait_rt_cursor(seg, job["id"], 1)
    rt_pid = agent.status()["rt"]["pid"]
    recorded = agent.call("job", "get", str(job["id"]))
    rt_before_kill = rt_job(seg)
    agent.kill()
    # killed mid-job, both variants
    assert recorded["state"] == "running" and 1 <= recorded["cursor"] < n - 1, recorded
    assert rt_before_kill[:2] == (job["id"], "running"), rt_before_kill
    assert 1 <= rt_before_kill[2] < n - 1, rt_before_kill
    time.sleep(down_s)
    if down_s > 1:
        assert rt_job(seg)[:2] == (job["id"], "done"), "the job ended while the agent was down"
    agent.start()
    if down_s < 1:
        assert rt_job(seg)[:2] == (job["id"], "running"), "the agent came back mid-job"
    seg.close()
    done = wait_for(
        lambda: (j := agent.call("job", "get", str(job["id"])))["state"] == "done" and j,
        timeout=20,
        what="the job to be done",
    )
    assert done["attempts"] == 1 and done["cursor"] == n, "not run twice, not lost"
    assert agent.status()["rt"]["pid"] == rt_pid


def test_real_status_has_the_contract_fields(agent_factory):
    """DESIGN.md's `rtctl status --json` contract, on a real agent."""
    st = agent_factory().start().status()
    assert isinstance(st["node_id"], str) and st["role"] == "primary"
    rt = st["rt"]
    assert rt["state"] == "run" and rt["pid"] > 0 and rt["period_us"] == 1000
    for key in ("cycles", "misses", "restarts"):
        assert isinstance(rt[key], int) and rt[key] >= 0
    assert all(isinstance(rt["latency_us"][k], float) for k in ("p50", "p99", "max"))
    assert isinstance(st["checkpoint"]["seq"], int)
    age = st["checkpoint"]["age_ms"]
    assert age is None or isinstance(age, float)
    cluster = st["cluster"]
    assert cluster["leader"] == st["node_id"] and isinstance(cluster["term"], int)
    assert cluster["has_quorum"] is True
