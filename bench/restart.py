"""`rtctl bench restart`: the gap from killing the RT process to the first
cycle of its replacement running on the restored state.

A real agent supervises a real RT process; each trial kills the RT process
with SIGKILL and watches the segment (mapped here) for the new process's
first cycle after its restore. The same-run baseline is a cold start of the
RT process itself — interpreter, imports, mlock, first cycle — the floor any
restart of a separate process pays.

Against the same agent it also times `rtctl status` and `rtctl --help` as
whole processes (start, call, print, exit), beside a bare interpreter start
and a bare `import grpc`, the floor of any Python gRPC client, run in turns so
that the machine's load falls on all four alike.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from bench import machine
from bench.runner import (
    BenchError,
    background_agent,
    last_line,
    percentile,
    run_bounded,
    segment_name,
    wait_until,
)
from rtcore.segment import Segment

GOAL_P50_MS = 200.0
GOAL_MAX_MS = 500.0
GOAL_STATUS_P99_MS = 20.0
GOAL_STATUS_OVER_HEALTH_P99 = 5.0
GOAL_IDLE_CPU_PCT = 3.0
GOAL_CLI_STATUS_MS = 200.0
TRIAL_TIMEOUT_S = 10.0
STATUS_CALLS = 300
IDLE_WINDOW_S = 5.0
CLI_RUNS = 20


@dataclass(frozen=True)
class RestartOptions:
    kills: int = 20
    cpu: int | None = None
    period_us: int = 1000


def _cold_start_ms(cpu: int, period_us: int) -> float:
    """Wall time of `python -m rtcore --cycles 1`: start-up to the first cycle and exit."""
    name = segment_name("cold")
    argv = [
        sys.executable,
        "-m",
        "rtcore",
        "--shm",
        name,
        "--cycles",
        "1",
        "--cpus",
        str(cpu),
        "--period-us",
        str(period_us),
        "--allow-degraded",
    ]
    t0 = time.monotonic()
    done = run_bounded(argv, timeout=30, what="the RT process (cold start)")
    took = (time.monotonic() - t0) * 1000
    if done.returncode != 0:
        raise BenchError(f"the RT process failed to start: {last_line(done.stderr)}")
    return took


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _idle_cpu(agent_pid: int, rt_pid: int) -> dict:
    """CPU use of the idle agent beside its 1 kHz loop, and of the RT process
    itself over the same window (the baseline: what the loop alone costs)."""
    a0, r0, t0 = _cpu_seconds(agent_pid), _cpu_seconds(rt_pid), time.monotonic()
    time.sleep(IDLE_WINDOW_S)
    a1, r1, t1 = _cpu_seconds(agent_pid), _cpu_seconds(rt_pid), time.monotonic()
    wall = t1 - t0
    return {
        "agent": round(100 * (a1 - a0) / wall, 2),
        "rt_process": round(100 * (r1 - r0) / wall, 2),
        "window_s": round(wall, 2),
        "unit": "percent of one CPU",
    }


def _status_round_trips(target: str) -> dict:
    """GetStatus round trips through the real client, and the gRPC health
    check on another channel to the same server as the transport's floor."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from control.rpc.client import Client

    def summary(samples: list[float]) -> dict:
        return {
            "p50": round(percentile(samples, 0.5), 3),
            "p99": round(percentile(samples, 0.99), 3),
            "max": round(max(samples), 3),
            "calls": len(samples),
        }

    status_ms, health_ms = [], []
    with Client(target, timeout=5) as client, grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(STATUS_CALLS):
            t0 = time.perf_counter()
            client.status()
            status_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            health_ms.append((time.perf_counter() - t0) * 1000)
    return {"status": summary(status_ms), "baseline_health_check": summary(health_ms)}


def _rtctl() -> list[str]:
    """The installed `rtctl` beside this interpreter, as a user runs it; else
    the module (a checkout that is not installed)."""
    script = os.path.join(os.path.dirname(sys.executable), "rtctl")
    return [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "control.cli"]


def _cli_runs(target: str) -> dict:
    """Wall time of whole processes: rtctl status and --help against their
    floors, CLI_RUNS of each, in turns."""
    rtctl = _rtctl()
    commands = {
        "rtctl_status": [*rtctl, "status", "--target", target],
        "rtctl_help": [*rtctl, "--help"],
        "python_pass": [sys.executable, "-c", "pass"],
        "python_import_grpc": [sys.executable, "-c", "import grpc"],
    }
    runs: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(CLI_RUNS):
        for name, argv in commands.items():
            t0 = time.perf_counter()
            done = run_bounded(argv, timeout=30, what=name)
            took = (time.perf_counter() - t0) * 1000
            if done.returncode != 0:
                raise BenchError(f"{' '.join(argv)} failed: {last_line(done.stderr)}")
            runs[name].append(took)
    report: dict = {
        name: {
            "p50": round(percentile(ms, 0.5), 1),
            "p90": round(percentile(ms, 0.9), 1),
            "runs": len(ms),
        }
        for name, ms in runs.items()
    }
    report["rtctl"] = " ".join(rtctl)
    report["unit"] = "ms, whole process"
    return report


def _trial(st: Any) -> dict:
    """Kill the RT process (st: its segment's live status) once a checkpoint
    landed since its start; the time until its replacement's first cycle on
    the restored state."""
    old = int(st["pid"])

    # let a checkpoint land after the previous restart, as in service
    def checkpointed() -> bool:
        return int(st["restored_seq"]) < int(st["ckpt_seq"]) and int(st["pid"]) == old

    wait_until(checkpointed, TRIAL_TIMEOUT_S, "a fresh checkpoint")
    t0 = time.monotonic_ns()
    os.kill(old, signal.SIGKILL)

    def replaced() -> bool:
        return (
            int(st["pid"]) not in (0, old)
            and int(st["heartbeat"]) >= 1
            and int(st["restored_seq"]) > 0
        )

    wait_until(replaced, TRIAL_TIMEOUT_S, "the replacement RT process's first cycle")
    return {
        "killed_pid": old,
        "new_pid": int(st["pid"]),
        "restored_seq": int(st["restored_seq"]),
        "restored_cycle": int(st["restored_cycle"]),
        "restart_ms": round((time.monotonic_ns() - t0) / 1e6, 2),
    }


def run(opts: RestartOptions) -> dict:
    cpu = machine.default_cpu() if opts.cpu is None else opts.cpu
    machine.check_cpu(cpu)
    config_dir = tempfile.mkdtemp(prefix="rtc-bench-restart-")
    config = os.path.join(config_dir, "agent.toml")
    with open(config, "w") as f:
        # a kill every second or so is the benchmark, not a crash loop: keep
        # the back-off out of the gap being measured
        f.write("restart_stable_ms = 100\n")
    cold = [_cold_start_ms(cpu, opts.period_us) for _ in range(3)]
    trials: list[dict] = []
    try:
        with background_agent(
            "restart", cpu, "--config", config, "--period-us", str(opts.period_us)
        ) as agent:
            seg = Segment.open(agent.shm)
            try:
                st = seg.view()["status"]
                idle = _idle_cpu(agent.proc.pid, int(st["pid"]))
                rtt = _status_round_trips(agent.target)
                cli = _cli_runs(agent.target)
                for _ in range(opts.kills):
                    trials.append(_trial(st))
                    time.sleep(0.15)
            finally:
                seg.close()
    finally:
        shutil.rmtree(config_dir, ignore_errors=True)
    gaps = [t["restart_ms"] for t in trials]
    cold_p50 = percentile(cold, 0.5)
    p50, worst = percentile(gaps, 0.5), max(gaps)
    over_health = rtt["status"]["p99"] / max(rtt["baseline_health_check"]["p99"], 1e-3)
    return {
        "kills": opts.kills,
        "cpu": cpu,
        "period_us": opts.period_us,
        "restart_ms": {
            "p50": round(p50, 2),
            "p90": round(percentile(gaps, 0.9), 2),
            "max": round(worst, 2),
            "min": round(min(gaps), 2),
        },
        "trials": trials,
        "baseline": {
            "what": "cold start of the RT process (python -m rtcore --cycles 1: interpreter, "
            "imports, mlock, first cycle, exit), measured 3 times in this run",
            "cold_start_ms": {"p50": round(cold_p50, 2), "runs": [round(c, 2) for c in cold]},
        },
        "ratio": {
            "p50_to_cold_start": round(p50 / cold_p50, 3),
            "rtctl_status_over_import_grpc_p50": round(
                cli["rtctl_status"]["p50"] / cli["python_import_grpc"]["p50"], 2
            ),
        },
        "status_rtt_ms": rtt,
        "status_p99_over_health_p99": round(over_health, 2),
        "cli_ms": cli,
        "agent_idle_cpu_pct": idle,
        "goals": {
            "p50_le_200ms": p50 <= GOAL_P50_MS,
            "max_le_500ms": worst <= GOAL_MAX_MS,
            "requirement_5s": worst <= 5000,
            "status_p99_le_20ms": rtt["status"]["p99"] <= GOAL_STATUS_P99_MS,
            "status_p99_le_5x_health_p99": over_health <= GOAL_STATUS_OVER_HEALTH_P99,
            "rtctl_status_p90_le_200ms": cli["rtctl_status"]["p90"] <= GOAL_CLI_STATUS_MS,
            "agent_idle_cpu_le_3pct": idle["agent"] <= GOAL_IDLE_CPU_PCT,
        },
        "machine": machine.describe(),
    }


def format_text(r: dict) -> str:
    g = r["restart_ms"]
    lines = [
        f"restart: {r['kills']} SIGKILLs of the RT process on CPU {r['cpu']} "
        f"({r['period_us']} us period), kill -> first restored cycle",
        f"gap (ms): p50 {g['p50']}  p90 {g['p90']}  max {g['max']}  min {g['min']}",
        f"baseline: cold start of the RT process p50 {r['baseline']['cold_start_ms']['p50']} ms "
        f"(ratio {r['ratio']['p50_to_cold_start']}x)",
        f"status round trip (ms): p50 {r['status_rtt_ms']['status']['p50']} "
        f"p99 {r['status_rtt_ms']['status']['p99']} (gRPC health check p50 "
        f"{r['status_rtt_ms']['baseline_health_check']['p50']} p99 "
        f"{r['status_rtt_ms']['baseline_health_check']['p99']}; "
        f"p99 ratio {r['status_p99_over_health_p99']}x)",
        f"whole processes (ms, {r['cli_ms']['rtctl_status']['runs']} runs each in turns): "
        + "; ".join(
            f"{name} p50 {c['p50']} p90 {c['p90']}"
            for name, c in r["cli_ms"].items()
            if isinstance(c, dict)
        ),
        f"idle agent CPU: {r['agent_idle_cpu_pct']['agent']}% of one CPU "
        f"(RT process itself: {r['agent_idle_cpu_pct']['rt_process']}%)",
        "goals: " + "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in r["goals"].items()),
    ]
    return "\n".join(lines)
