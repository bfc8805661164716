"""The supervisor survives its own faults with real RT processes: a listener
that raises, a watcher that raises, a segment file that disappears."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from control.config import AgentConfig
from control.rt.link import SegmentLink
from control.rt.supervisor import Supervisor
from tests.conftest import wait_for
from tests.control.agentproc import CPU

pytestmark = pytest.mark.slow

STANDBY = ["--standby", "--epoch", "1", "--lease-timeout-ms", "200", "--node-id", "1"]


@pytest.fixture
def make_supervisor(tmp_path: Path):
    made: list[Supervisor] = []

    def make(on_event) -> Supervisor:
        cfg = AgentConfig(
            node_id=f"sf{os.getpid()}x{len(made)}",
            data_dir=str(tmp_path / f"d{len(made)}"),
            cpus=[int(CPU)],
        )
        sup = Supervisor(
            cfg, on_event, control_args=lambda: STANDBY, link=SegmentLink(cfg.shm_name)
        )
        made.append(sup)
        return sup

    yield make
    for sup in made:
        sup.close(stop_rt=True)
        path = f"/dev/shm/{sup.cfg.shm_name}"
        if os.path.exists(path):
            os.unlink(path)


def running_pid(sup: Supervisor, not_pid: int = 0) -> int:
    def ok():
        seg = sup.segment
        if sup.state != "running" or sup.pid in (0, not_pid) or seg is None:
            return 0
        st = seg.view()["status"]
        return sup.pid if int(st["pid"]) == sup.pid and int(st["cycles"]) > 10 else 0

    return wait_for(ok, timeout=20, what="a running RT process")


def test_a_listener_that_raises_does_not_stop_supervision(make_supervisor):
    seen: list[str] = []

    def on_event(kind, level, fields):
        seen.append(kind)
        if kind == "rt_running":
            raise RuntimeError("a bug in the agent's handler")

    sup = make_supervisor(on_event)
    sup.start()
    first = running_pid(sup)
    assert sup.callback_faults >= 1, "the fault happened and was counted"
    os.kill(first, signal.SIGKILL)
    second = running_pid(sup, not_pid=first)
    assert sup.restarts == 1 and second != first
    assert seen.count("rt_running") == 2 and "rt_crashed" in seen


def test_a_watcher_that_raises_is_restarted_and_still_notices_a_kill(make_supervisor):
    sup = make_supervisor(lambda *a: None)
    real = sup._attach_segment
    calls = {"n": 0}

    def fail_once() -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("a transient fault while watching")
        return real()

    sup._attach_segment = fail_once  # type: ignore[method-assign]
    sup.start()
    first = running_pid(sup)
    assert sup.watcher_faults == 1 and sup.info()["watcher_faults"] == 1
    os.kill(first, signal.SIGKILL)
    assert running_pid(sup, not_pid=first) != first
    assert sup.restarts == 1


def test_a_removed_segment_file_is_mapped_anew_when_the_rt_makes_a_new_one(make_supervisor):
    """systemd's RemoveIPC (or an operator) deletes /dev/shm/NAME under a running
    RT: its replacement makes a new segment, which must be the one watched."""
    sup = make_supervisor(lambda *a: None)
    sup.start()
    first = running_pid(sup)
    generation = sup._link.generation
    os.unlink(f"/dev/shm/{sup.cfg.shm_name}")
    os.kill(first, signal.SIGKILL)
    second = running_pid(sup, not_pid=first)
    seg = sup.segment
    assert seg is not None and not seg.replaced()
    beat = int(seg.view()["status"]["heartbeat"])
    wait_for(lambda: int(seg.view()["status"]["heartbeat"]) > beat + 100, what="heartbeats")
    assert sup.info()["segment_remaps"] >= 1
    # holders of ring readers and writers (drainer, command writer) rebuild on this
    assert sup._link.generation > generation
    assert sup.pid == second and sup.restarts == 1, "not killed as hung"
