"""`rtctl bench isolation`: wake-up jitter of the RT loop on its CPU without
and with CPU isolation, both under the same stress-ng load on every CPU.

Each side runs the RT process pinned to the CPU; the "with" side gets its
isolation applied to the running process (as `rtctl rt set-affinity
--isolate` does), which also times that change and counts the misses in its
window. Only the cycles after a warm-up (and after the change) are compared,
read from the loop's own histograms.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from bench import machine
from bench.runner import BenchError, background_rt, last_line, open_running, sweep_segments
from control.errors import ControlError
from control.placement import numa
from control.placement.isolation import Isolator, detect_cgroup, detect_kernel_isolation
from rtcore import stats, topology
from rtcore.segment import Segment

WARMUP_CYCLES = 500
GOAL_REDUCTION_PCT = 50.0
GOAL_CHANGE_MS = 1000.0


@dataclass(frozen=True)
class IsolationOptions:
    cycles: int = 10_000
    period_us: int = 1000
    cpu: int | None = None
    priority: int = 80
    load_workers: int | None = None  # default: one per online CPU


@dataclass
class Side:
    wake_us: dict
    misses: int
    change: dict | None


def _status(seg: Segment) -> tuple[np.ndarray, int, int]:
    st = seg.view()["status"]
    return np.array(st["wake_hist"], dtype=np.int64), int(st["cycles"]), int(st["misses"])


def _run_side(opts: IsolationOptions, cpu: int, isolate: bool, state_dir: str) -> Side:
    total = WARMUP_CYCLES + opts.cycles
    args = [
        "--cycles",
        str(total),
        "--period-us",
        str(opts.period_us),
        "--cpus",
        str(cpu),
        "--priority",
        str(opts.priority),
        "--keep-shm",
    ]
    isolator = Isolator(f"rtc-bench-{os.getpid()}", os.path.join(state_dir, "isolation.json"))
    change = None
    with background_rt("iso" if isolate else "plain", *args) as (proc, name):
        seg = open_running(name, proc, WARMUP_CYCLES)
        try:
            start_hist, _, start_misses = _status(seg)
            if isolate:
                t0 = time.monotonic()
                report = isolator.apply(proc.pid, [cpu])
                took = (time.monotonic() - t0) * 1000
                # the change's own window: the cycles that ran while it was applied
                time.sleep(0.05)
                _, _, misses_after = _status(seg)
                change = {
                    "apply_ms": round(took, 2),
                    "misses_in_window": misses_after - start_misses,
                    "tasks_moved": report.get("tasks_moved"),
                    "irqs_moved": report.get("irqs_moved"),
                    "cgroup": report.get("version"),
                }
                start_hist, _, start_misses = _status(seg)
            if proc.wait(timeout=60 + 3 * total * opts.period_us / 1e6) != 0:
                err = proc.stderr.read() if proc.stderr else ""
                raise BenchError(f"the RT process failed: {last_line(err)}")
            end_hist, _, end_misses = _status(seg)
            hist = (end_hist - start_hist).tolist()
            top = max(i for i, c in enumerate(hist) if c) if any(hist) else 0
            # the run's exact maximum may predate the window: bound it by the window's histogram
            window_max = min(int(seg.view()["status"]["wake_max_ns"]), stats.bucket_upper(top))
            return Side(stats.summary_us(hist, window_max), end_misses - start_misses, change)
        finally:
            if isolate:
                with contextlib.suppress(ControlError):
                    isolator.remove()
            seg.close()


def _numa_change(cpu: int) -> dict:
    """Time a NUMA change (page migration) applied to a running RT process."""
    node = next(n for n in topology.numa_nodes() if cpu in topology.node_cpus(n))
    with background_rt("numa", "--cpus", str(cpu), "--numa-node", str(node)) as (proc, name):
        seg = open_running(name, proc, 200)
        try:
            _, _, misses0 = _status(seg)
            # every page the process has on other nodes comes to its own: a
            # no-op on a one-node machine, which the report says
            report = numa.migrate(proc.pid, topology.numa_nodes(), node)
            time.sleep(0.05)
            _, _, misses1 = _status(seg)
        finally:
            seg.close()
    single = len(topology.numa_nodes()) == 1
    return {
        "migrate_ms": report["elapsed_ms"],
        "pages_moved": report["pages_moved"],
        "misses_in_window": misses1 - misses0,
        "to_node": node,
        "note": "one NUMA node here: the real migrate_pages call moves no page" if single else "",
    }


def _stop_load(load: subprocess.Popen) -> None:
    """SIGINT lets stress-ng reap its workers (nothing is left as a zombie);
    the whole group is killed if it does not comply."""
    with contextlib.suppress(ProcessLookupError):
        load.send_signal(signal.SIGINT)
    try:
        load.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(load.pid, signal.SIGKILL)
        load.wait(timeout=10)


def _reduction(before: float, after: float) -> float | None:
    return round(100 * (1 - after / before), 1) if before > 0 else None


def run(opts: IsolationOptions) -> dict:
    cpu = machine.default_cpu() if opts.cpu is None else opts.cpu
    machine.check_cpu(cpu)
    if not machine.other_cpus(cpu):
        raise BenchError("isolation needs a second online CPU to keep the other tasks on")
    cgroup = detect_cgroup()
    if cgroup.version is None:
        raise BenchError(f"no cpuset cgroup filesystem: {cgroup.reason}")
    if os.geteuid() != 0:
        raise BenchError("isolation moves other processes' tasks and IRQs: run as root")
    stress = shutil.which("stress-ng")
    if stress is None:
        raise BenchError("stress-ng is not installed (apt-get install stress-ng)")
    workers = opts.load_workers or len(topology.online_cpus())
    sweep_segments()
    state_dir = tempfile.mkdtemp(prefix="rtc-bench-iso-")
    load_argv = [stress, "--cpu", str(workers), "--cpu-method", "matrixprod", "--quiet"]
    load = subprocess.Popen(
        load_argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(0.5)
        if load.poll() is not None:
            raise BenchError("stress-ng exited at once")
        with machine.pm_qos_zero(), machine.kept_off(cpu):
            without = _run_side(opts, cpu, False, state_dir)
            with_iso = _run_side(opts, cpu, True, state_dir)
            numa_change = _numa_change(cpu)
    finally:
        _stop_load(load)
        shutil.rmtree(state_dir, ignore_errors=True)
    w, i = without.wake_us, with_iso.wake_us
    change = with_iso.change or {}
    return {
        "cycles": opts.cycles,
        "period_us": opts.period_us,
        "cpu": cpu,
        "housekeeping_cpus": machine.other_cpus(cpu),
        "load": {
            "tool": "stress-ng",
            "argv": load_argv[1:],
            "workers": workers,
            "cpus": "all online",
        },
        "without": {
            "wake_latency_us": {k: w[k] for k in ("p50", "p99", "max", "stddev")},
            "misses": without.misses,
        },
        "with": {
            "wake_latency_us": {k: i[k] for k in ("p50", "p99", "max", "stddev")},
            "misses": with_iso.misses,
        },
        "jitter_reduction_pct": _reduction(w["p99"], i["p99"]),
        "stddev_reduction_pct": _reduction(w["stddev"], i["stddev"]),
        "change": {"isolation": change, "numa": numa_change},
        "goals": {
            "jitter_reduction_ge_50pct": (_reduction(w["p99"], i["p99"]) or 0)
            >= GOAL_REDUCTION_PCT,
            "isolation_change_le_1s": change.get("apply_ms", 1e9) <= GOAL_CHANGE_MS,
            "numa_change_le_1s": numa_change["migrate_ms"] <= GOAL_CHANGE_MS,
            "no_miss_from_changes": change.get("misses_in_window") == 0
            and numa_change["misses_in_window"] == 0,
        },
        "kernel": {"cgroup": cgroup.version, **detect_kernel_isolation()},
        "machine": machine.describe(),
    }


def format_text(r: dict) -> str:
    w, i = r["without"]["wake_latency_us"], r["with"]["wake_latency_us"]
    c = r["change"]
    lines = [
        f"isolation: {r['cycles']} cycles at {r['period_us']} us on CPU {r['cpu']} "
        f"(housekeeping {','.join(map(str, r['housekeeping_cpus']))}), load: stress-ng "
        f"{r['load']['workers']} CPU workers on all CPUs",
        f"{'wake (us)':<18}{'p50':>9}{'p99':>9}{'max':>10}{'stddev':>9}{'misses':>8}",
        f"{'without':<18}{w['p50']:>9}{w['p99']:>9}{w['max']:>10}{w['stddev']:>9}"
        f"{r['without']['misses']:>8}",
        f"{'with isolation':<18}{i['p50']:>9}{i['p99']:>9}{i['max']:>10}{i['stddev']:>9}"
        f"{r['with']['misses']:>8}",
        f"jitter reduction: p99 {r['jitter_reduction_pct']}%, stddev {r['stddev_reduction_pct']}%",
        f"changes on the running loop: isolation {c['isolation'].get('apply_ms')} ms "
        f"({c['isolation'].get('misses_in_window')} misses), NUMA {c['numa']['migrate_ms']} ms "
        f"({c['numa']['misses_in_window']} misses)",
        "goals: " + "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in r["goals"].items()),
        f"kernel: cgroup {r['kernel']['cgroup']}, "
        f"isolcpus {r['kernel'].get('isolcpus') or 'none'}, "
        f"nohz_full {r['kernel'].get('nohz_full') or 'none'}",
    ]
    return "\n".join(lines)
