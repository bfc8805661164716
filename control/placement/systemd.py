"""A systemd unit for the node's agent, matching its CPU and NUMA placement.

The service's CPUAffinity keeps the agent (and whatever it starts) on the
housekeeping CPUs, the RT process then pins itself to its own CPUs;
NUMAPolicy/NUMAMask put the memory on the RT's node. When the agent was asked
to write the unit, it rewrites it whenever the placement changes.
"""

from __future__ import annotations

import os
import shlex
import sys

from control.config import AgentConfig
from control.placement.atomicfile import write_atomic
from rtcore import topology

UNIT_PATH_FILE = "systemd-unit-path"


def unit_text(cfg: AgentConfig, argv: list[str], cpus: list[int], numa_node: int) -> str:
    online = topology.online_cpus()
    housekeeping = [c for c in online if c not in cpus] or online
    lines = [
        "[Unit]",
        f"Description=rtcore agent (node {cfg.node_id})",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        f"ExecStart={shlex.join([sys.executable, '-m', 'control.cli', 'agent', *argv])}",
        "Restart=always",
        "RestartSec=100ms",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=20",
        "LimitMEMLOCK=infinity",
        "LimitRTPRIO=99",
        f"CPUAffinity={' '.join(map(str, housekeeping))}",
    ]
    if numa_node >= 0:
        lines += ["NUMAPolicy=bind", f"NUMAMask={numa_node}"]
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def write_unit(path: str, text: str) -> None:
    write_atomic(path, text, mode=0o644)  # systemd reads it as another user


def remembered_path(data_dir: str) -> str | None:
    try:
        with open(os.path.join(data_dir, UNIT_PATH_FILE)) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def remember_path(data_dir: str, path: str) -> None:
    with open(os.path.join(data_dir, UNIT_PATH_FILE), "w") as f:
        f.write(os.path.abspath(path))
