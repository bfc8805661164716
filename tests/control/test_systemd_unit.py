"""The generated systemd unit carries the node's settings and placement."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from control import config
from tests.control.agentproc import CPU

CPUS = sorted(os.sched_getaffinity(0))


def agent_cmd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "control.cli", "agent", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_unit_runs_the_same_settings(tmp_path):
    unit = tmp_path / "rtcore-n1.service"
    done = agent_cmd(
        "--node-id",
        "n1",
        "--data-dir",
        str(tmp_path / "d"),
        "--cpus",
        CPU,
        "--period-us",
        "500",
        "--numa-node",
        "0",
        "--systemd-unit",
        str(unit),
    )
    assert done.returncode == 0, done.stderr
    text = unit.read_text()
    housekeeping = [c for c in CPUS if str(c) != CPU] or CPUS
    assert f"CPUAffinity={' '.join(map(str, housekeeping))}" in text
    assert "NUMAPolicy=bind\nNUMAMask=0" in text
    assert "LimitMEMLOCK=infinity" in text and "Restart=always" in text
    exec_line = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    toml = exec_line.split("--config ", 1)[1]
    p = argparse.ArgumentParser()
    config.add_arguments(p)
    cfg = config.load(p.parse_args(["--config", toml]))
    assert (cfg.node_id, cfg.cpus, cfg.period_us, cfg.numa_node) == ("n1", [int(CPU)], 500, 0)


def test_bad_unit_path_is_one_line(tmp_path):
    done = agent_cmd(
        "--node-id",
        "n2",
        "--data-dir",
        str(tmp_path / "d"),
        "--systemd-unit",
        str(tmp_path / "missing" / "x.service"),
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "cannot write" in done.stderr


@pytest.mark.slow
@pytest.mark.skipif(len(CPUS) < 2, reason="needs two CPUs")
def test_placement_change_rewrites_the_unit(agent_factory, tmp_path):
    agent = agent_factory()
    unit = tmp_path / "rtcore.service"
    done = agent_cmd(
        "--node-id",
        agent.node_id,
        "--data-dir",
        agent.data_dir,
        "--cpus",
        CPU,
        "--systemd-unit",
        str(unit),
    )
    assert done.returncode == 0, done.stderr
    agent.start()
    other = str(CPUS[0])
    agent.call("rt", "set-affinity", "--cpus", other)
    text = unit.read_text()
    rest = [c for c in CPUS if str(c) != other]
    assert f"CPUAffinity={' '.join(map(str, rest))}" in text
