"""`rtctl status`: the node's role, RT loop, checkpoint and cluster state."""

from __future__ import annotations

import argparse
from typing import Any

from control.cli.common import Report, add_client_command, connect, fmt

NAME = "status"
HELP = "the node's role, RT loop, checkpoint and cluster state"


def add(commands: Any) -> None:
    add_client_command(
        commands,
        NAME,
        _status,
        HELP,
        "Show the node's status: its role, the RT loop (state, pid, cycles, deadline "
        "misses, restarts, period, wake-up latency), the newest checkpoint and the "
        "cluster (leader, term, quorum). --json prints the agent's whole status "
        "document, which holds more than the text shows.",
        "  rtctl status --target 10.0.0.5:7761 --json",
    )


def _status(args: argparse.Namespace) -> Report:
    with connect(args) as client:
        return client.status(), render_status


def render_status(doc: dict) -> str:
    rt = doc.get("rt") or {}
    lat = rt.get("latency_us") or {}
    ckpt = doc.get("checkpoint") or {}
    cluster = doc.get("cluster") or {}
    rows = [
        ("node", f"{fmt(doc.get('node_id'))} ({fmt(doc.get('role'))})"),
        (
            "rt",
            f"{fmt(rt.get('state'))}  pid {fmt(rt.get('pid'))}  "
            f"period {fmt(rt.get('period_us'))} us  restarts {fmt(rt.get('restarts'))}",
        ),
        ("cycles", f"{fmt(rt.get('cycles'))}  misses {fmt(rt.get('misses'))}"),
        (
            "latency",
            f"p50 {fmt(lat.get('p50'))} us  p99 {fmt(lat.get('p99'))} us  "
            f"max {fmt(lat.get('max'))} us",
        ),
        ("checkpoint", f"seq {fmt(ckpt.get('seq'))}  age {fmt(ckpt.get('age_ms'))} ms"),
        (
            "cluster",
            f"leader {fmt(cluster.get('leader'))}  term {fmt(cluster.get('term'))}  "
            f"quorum {fmt(cluster.get('has_quorum'))}",
        ),
    ]
    return "\n".join(f"{k:<11} {v}" for k, v in rows)
