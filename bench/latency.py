"""`rtctl bench latency`: the loop's wake-up latency against cyclictest.

The RT process runs first, then cyclictest on the same CPU with the same
period, cycle count and priority, never both at once. cyclictest's samples
are binned with the histogram the loop itself fills (rtcore.stats), so both
sides are read by the same code at the same resolution.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench import machine
from bench.runner import (
    SHM_DIR,
    BenchError,
    last_line,
    run_bounded,
    segment_name,
    sweep_segments,
)
from rtcore import _core, layout, stats
from rtcore.segment import Segment, SegmentError

SAMPLE = re.compile(r"^\s*\d+:\s*\d+:\s*(-?\d+)\s*$")
PERCENTILES = ("p50", "p99", "p999", "max")
INTERFERENCE_NOTE = (
    "rt_threads: other user-space SCHED_FIFO/RR threads allowed on the measured CPU, "
    "sampled every 0.25 s during the run; steal_ms: time the hypervisor took from that "
    "CPU during the run (10 ms resolution); when either is not empty or zero, the figures "
    "include that disturbance"
)


@dataclass(frozen=True)
class LatencyOptions:
    cycles: int = 10_000
    period_us: int = 1000
    cpu: int | None = None
    priority: int = 80
    wake_mode: str = "sleep"
    spin_us: int = 50


@dataclass
class RtRun:
    """What one RT process run left in its status block."""

    cycles: int
    wake_hist: list[int]
    wake_max_ns: int
    exec_hist: list[int]
    exec_max_ns: int
    misses: int
    skipped_periods: int
    degraded: list[str]
    degraded_text: str
    ring_dropped: int
    ring_pushed: dict[str, int]


def _timeout(cycles: int, period_us: int) -> float:
    # start-up (imports, mlock) plus three times the nominal run
    return 30.0 + 3.0 * cycles * period_us / 1e6


def run_rt(
    cycles: int,
    period_us: int,
    cpu: int,
    priority: int,
    wake_mode: str,
    spin_us: int,
    tick: Callable[[int], None] | None = None,
    extra_args: Sequence[str] = (),
    drain: bool = False,
) -> RtRun:
    """Run `python -m rtcore` for exactly `cycles` cycles and read its status block.
    With drain, a thread empties the RT→control-plane rings while it runs, as
    the agent does, so that pushes are not turned into cheap drops."""
    sweep_segments()
    name = segment_name("rt")
    argv = [
        sys.executable,
        "-m",
        "rtcore",
        "--shm",
        name,
        "--cycles",
        str(cycles),
        "--period-us",
        str(period_us),
        "--cpus",
        str(cpu),
        "--priority",
        str(priority),
        "--wake-mode",
        wake_mode,
        "--spin-us",
        str(spin_us),
        "--keep-shm",
        # an unprivileged run is still worth measuring; "degraded" says what was refused
        "--allow-degraded",
        *extra_args,
    ]
    drainer = RingDrainer(name) if drain else None
    try:
        if drainer:
            drainer.start()
        try:
            done = run_bounded(
                argv, timeout=_timeout(cycles, period_us), what="the RT process", tick=tick
            )
        finally:
            if drainer:
                drainer.stop()
        if done.returncode != 0:
            raise BenchError(f"the RT process failed: {last_line(done.stderr)}")
        try:
            seg = Segment.open(name)
        except SegmentError as e:
            raise BenchError(f"the RT process left no readable segment: {e}") from None
        try:
            status = _read_status(seg)
        finally:
            seg.close()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(SHM_DIR, name))
    if status.cycles != cycles:
        raise BenchError(f"the RT process stopped after {status.cycles} of {cycles} cycles")
    return status


class RingDrainer:
    """Empties the log, span and event rings of a segment until stopped."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.records = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        path = os.path.join(SHM_DIR, self._name)
        seg = None
        while not self._stop.is_set() and seg is None:
            try:
                seg = Segment.open(self._name) if os.path.exists(path) else None
            except SegmentError:
                seg = None
            if seg is None:
                time.sleep(0.002)
        if seg is None:
            return
        readers = [_core.RingReader(seg.buf, ring) for ring in ("log", "span", "event")]
        while not self._stop.is_set():
            for r in readers:
                self.records += len(r.pop(4096)) // r.record_size
            time.sleep(0.001)
        del readers
        seg.close()


def _read_status(seg: Segment) -> RtRun:
    st = seg.view()["status"]
    bits = int(st["degraded"])
    run = RtRun(
        cycles=int(st["cycles"]),
        wake_hist=[int(c) for c in st["wake_hist"]],
        wake_max_ns=int(st["wake_max_ns"]),
        exec_hist=[int(c) for c in st["exec_hist"]],
        exec_max_ns=int(st["exec_max_ns"]),
        misses=int(st["misses"]),
        skipped_periods=int(st["skipped_periods"]),
        degraded=[name for bit, name in layout.DEGRADED_BITS.items() if bits & bit],
        degraded_text=st["degraded_text"].item().decode(errors="replace"),
        ring_dropped=sum(_core.ring_counters(seg.buf, r)[3] for r in ("log", "span", "event")),
        ring_pushed={r: _core.ring_counters(seg.buf, r)[2] for r in ("log", "span", "event")},
    )
    del st
    return run


def cyclictest_version(exe: str) -> str:
    done = run_bounded([exe, "--help"], timeout=10, what="cyclictest --help")
    m = re.search(r"cyclictest V\s*(\S+)", done.stdout + done.stderr)
    return m.group(1) if m else "unknown version"


def run_cyclictest(
    cycles: int,
    period_us: int,
    cpu: int,
    priority: int,
    tick: Callable[[int], None] | None = None,
) -> tuple[dict | None, str | None]:
    """(baseline, None), or (None, why there is no baseline)."""
    exe = shutil.which("cyclictest")
    if exe is None:
        return None, "cyclictest is not installed (install rt-tests)"
    version = cyclictest_version(exe)
    argv = [exe, "-m", "-q", "-N", "-v"]
    argv += ["-p", str(priority), "-a", str(cpu), "-i", str(period_us), "-l", str(cycles)]
    others = machine.other_cpus(cpu)
    if others:
        # its main thread prints every sample: keep it off the measured CPU,
        # where the RT process has no second thread either
        argv += ["--mainaffinity", ",".join(map(str, others))]
    done = run_bounded(argv, timeout=_timeout(cycles, period_us), what="cyclictest", tick=tick)
    if done.returncode != 0:
        return None, f"cyclictest failed: {last_line(done.stderr)}"
    samples = [max(int(m.group(1)), 0) for m in map(SAMPLE.match, done.stdout.splitlines()) if m]
    if not samples:
        return None, "cyclictest printed no samples"
    hist = stats.histogram(samples, layout.HIST_BUCKETS)
    misses = sum(1 for v in samples if v >= period_us * 1000)
    return {
        "tool": f"cyclictest {version}",
        "cycles": len(samples),
        "wake_latency_us": stats.summary_us(hist, max(samples)),
        "exec_us": None,
        "misses": misses,
        "miss_rate": misses / len(samples),
        "miss_rule": "a sample with wake-up latency >= the period",
    }, None


def _ratio(ours: float, base: float) -> float | None:
    return round(ours / base, 3) if base > 0 else None


def run(opts: LatencyOptions) -> dict:
    cpu = machine.default_cpu() if opts.cpu is None else opts.cpu
    machine.check_cpu(cpu)
    spin_us = opts.spin_us if opts.wake_mode == "hybrid" else None
    with machine.pm_qos_zero() as pm_qos, machine.kept_off(cpu):
        watch = machine.Watch(cpu)
        ours = run_rt(
            opts.cycles,
            opts.period_us,
            cpu,
            opts.priority,
            opts.wake_mode,
            opts.spin_us,
            tick=watch.tick,
        )
        ours_seen = watch.result()
        watch = machine.Watch(cpu)
        baseline, why = run_cyclictest(
            opts.cycles, opts.period_us, cpu, opts.priority, tick=watch.tick
        )
        base_seen = watch.result()
    wake = stats.summary_us(ours.wake_hist, ours.wake_max_ns)
    report: dict = {
        "cycles": ours.cycles,
        "period_us": opts.period_us,
        "cpu": cpu,
        "priority": opts.priority,
        "wake_mode": opts.wake_mode,
        "spin_us": spin_us,
        "wake_latency_us": wake,
        "exec_us": stats.summary_us(ours.exec_hist, ours.exec_max_ns),
        "misses": ours.misses,
        "miss_rate": ours.misses / ours.cycles,
        "miss_rule": "a cycle that ends after the next period has started",
        "skipped_periods": ours.skipped_periods,
        "degraded": ours.degraded,
        "degraded_text": ours.degraded_text,
        "baseline": baseline,
        "baseline_reason": why,
        "ratio": None,
        "goals": {
            "p99_within_baseline_plus_5us": None,
            "misses_not_above_baseline": None,
            "hybrid_p50_le_5us": wake["p50"] <= 5.0 if opts.wake_mode == "hybrid" else None,
        },
        "interference": {"rtcore": ours_seen, "baseline": base_seen, "note": INTERFERENCE_NOTE},
        "pm_qos": pm_qos,
        "machine": machine.describe(),
    }
    if baseline is not None:
        base = baseline["wake_latency_us"]
        report["ratio"] = {k: _ratio(wake[k], base[k]) for k in PERCENTILES}
        report["goals"]["p99_within_baseline_plus_5us"] = wake["p99"] <= base["p99"] + 5.0
        report["goals"]["misses_not_above_baseline"] = ours.misses <= baseline["misses"]
    return report


def interference_warnings(cpu: int, seen: dict, during: str) -> list[str]:
    out = []
    if seen["rt_threads"]:
        out.append(
            f"warning: other RT threads on CPU {cpu} during {during}: "
            + ", ".join(seen["rt_threads"])
        )
    if seen["steal_ms"]:
        out.append(
            f"warning: the hypervisor stole {seen['steal_ms']} ms of CPU {cpu} during {during}"
        )
    return out


def _fmt(value: float | None, width: int = 9) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.1f}"


def _yes(value: bool | None) -> str:
    return "n/a" if value is None else ("yes" if value else "NO")


def format_text(r: dict) -> str:
    mode = r["wake_mode"] + (f" (spin {r['spin_us']} us)" if r["spin_us"] else "")
    lines = [
        f"latency: {r['cycles']} cycles at {r['period_us']} us on CPU {r['cpu']}, "
        f"SCHED_FIFO {r['priority']}, wake {mode}",
        f"{'(us)':<24}" + "".join(f"{k:>9}" for k in PERCENTILES) + "   misses",
    ]

    def row(label: str, s: dict | None, misses: str) -> str:
        vals = s or {}
        return f"{label:<24}" + "".join(_fmt(vals.get(k)) for k in PERCENTILES) + f"   {misses}"

    lines.append(row("wake   rtcore", r["wake_latency_us"], f"{r['misses']}"))
    b = r["baseline"]
    if b is not None:
        lines.append(row(f"wake   {b['tool']}", b["wake_latency_us"], f"{b['misses']}"))
        ratio = r["ratio"]
        lines.append(
            f"{'ratio  rtcore/baseline':<24}"
            + "".join(f"{'-' if ratio[k] is None else f'{ratio[k]:.2f}x':>9}" for k in PERCENTILES)
        )
    else:
        lines.append(f"baseline: none ({r['baseline_reason']})")
    lines.append(row("exec   rtcore", r["exec_us"], ""))
    g = r["goals"]
    lines.append(
        f"goals: p99 <= baseline + 5 us: {_yes(g['p99_within_baseline_plus_5us'])}; "
        f"misses <= baseline: {_yes(g['misses_not_above_baseline'])}; "
        f"hybrid p50 <= 5 us: {_yes(g['hybrid_p50_le_5us'])}"
    )
    if r["degraded"]:
        lines.append(f"degraded: {', '.join(r['degraded'])} ({r['degraded_text']})")
    lines += interference_warnings(r["cpu"], r["interference"]["rtcore"], "rtcore")
    if r["baseline"] is not None:
        lines += interference_warnings(r["cpu"], r["interference"]["baseline"], "cyclictest")
    m = r["machine"]
    lines.append(
        f"machine: {m['cpu_model']}, kernel {m['kernel']} {m['preempt']}, "
        f"isolcpus={m['isolcpus'] or 'none'}{', virtualized' if m['hypervisor'] else ''}"
    )
    return "\n".join(lines)
