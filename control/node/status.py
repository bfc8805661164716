"""The node's status document (`rtctl status`), read from the RT's status
block and the agent's parts. The field names are the public contract in
DESIGN.md."""

from __future__ import annotations

from typing import Any

from rtcore import _core, layout, stats
from rtcore.segment import Segment

RINGS = ("log", "span", "event", "journal")


def rt_section(seg: Segment | None, sup: dict[str, Any], period_us: int) -> dict[str, Any]:
    rt: dict[str, Any] = {
        "state": sup["state"],
        "pid": sup["pid"],
        "restarts": sup["restarts"],
        "supervisor": sup,
        "period_us": period_us,
        "cycles": 0,
        "misses": 0,
        "latency_us": {"p50": 0.0, "p99": 0.0, "max": 0.0},
        "exec_us": {"p50": 0.0, "p99": 0.0, "max": 0.0},
        "actuating": False,
    }
    if seg is None:
        return rt
    st = seg.view()["status"]
    if sup["pid"] and int(st["pid"]) == sup["pid"]:
        loop_state = layout.STATE_NAMES.get(int(st["state"]), "?")
        rt["state"] = loop_state if sup["state"] == "running" else sup["state"]
        wake = stats.summary_us(st["wake_hist"], int(st["wake_max_ns"]))
        exe = stats.summary_us(st["exec_hist"], int(st["exec_max_ns"]))
        rt.update(
            {
                "cycles": int(st["cycles"]),
                "misses": int(st["misses"]),
                "heartbeat": int(st["heartbeat"]),
                "latency_us": {k: wake[k] for k in ("p50", "p99", "max")},
                "exec_us": {k: exe[k] for k in ("p50", "p99", "max")},
                "actuating": bool(st["actuating"]),
                "epoch": int(st["epoch"]),
                "actuated_cycles": int(st["actuated_cycles"]),
                "cmds_stale": int(st["cmds_stale"]),
                "faults_suppressed": int(st["faults_suppressed"]),
                "priority": int(st["priority"]),
                "degraded": [n for b, n in layout.DEGRADED_BITS.items() if int(st["degraded"]) & b],
                "task": st["task_name"].item().decode(errors="replace"),
            }
        )
    rt["ring_dropped"] = {r: _core.ring_counters(seg.buf, r)[3] for r in RINGS}
    return rt


def checkpoint_section(seg: Segment | None, disk_seq: int) -> dict[str, Any]:
    checkpoint: dict[str, Any] = {"seq": 0, "age_ms": None, "cycle": 0, "disk_seq": disk_seq}
    if seg is None:
        return checkpoint
    st = seg.view()["status"]
    checkpoint["seq"] = int(st["ckpt_seq"])
    checkpoint["cycle"] = int(st["ckpt_cycle"])
    if int(st["ckpt_ns"]):
        checkpoint["age_ms"] = round((_core.monotonic_ns() - int(st["ckpt_ns"])) / 1e6, 1)
    return checkpoint


def role(rt: dict[str, Any]) -> str:
    """A single node is its own primary while its RT runs and drives the
    outputs; otherwise it is fenced (nothing it sends is acted on)."""
    healthy = rt["state"] in ("run", "hold", "safe") and rt["actuating"]
    return "primary" if healthy else "fenced"
