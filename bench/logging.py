"""`rtctl bench logging`: the cost of one log or span push on the RT path.

The pushes are timed by the RT core itself (Runtime.bench_push: rdtscp around
the loop's own push code) in a child process, so that memory locking, CPU
affinity and SCHED_FIFO stay out of the caller; a reader thread on another
CPU drains the ring as the agent's drainer does. The same child times
collections.deque.append from Python as a same-machine reference.

Run as `python -m bench.logging PARAMS_JSON` it is that child: it prints one
JSON document with the per-push figures.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from bench import machine
from bench.latency import INTERFERENCE_NOTE, interference_warnings, run_rt
from bench.runner import BenchError, last_line, run_bounded, segment_name, sweep_segments
from rtcore import stats

LOGS_PER_CYCLE = 10
SPANS_PER_CYCLE = 3
EXEC_CYCLES = 3000
EXEC_ROUNDS = 2
EXEC_PERIOD_US = 1000
GOAL_P50_NS = 30.0
GOAL_P999_NS = 150.0
QUILL = {
    "quill_p50_ns": 118,
    "quill_p999_ns": 363,
    "note": "published figures of the C++ logger Quill on a machine of this class, "
    "not measured here",
}


@dataclass(frozen=True)
class LoggingOptions:
    count: int = 200_000
    batch: int = 16
    cpu: int | None = None
    priority: int = 80


@dataclass(frozen=True)
class _WorkerParams:
    count: int
    batch: int
    cpu: int
    reader_cpu: int
    priority: int


def _summary(values: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    p50, p99, p999 = np.percentile(v, [50, 99, 99.9])
    return {
        "p50": round(float(p50), 1),
        "p99": round(float(p99), 1),
        "p999": round(float(p999), 1),
        "max": round(float(v.max()), 1),
        "mean": round(float(v.mean()), 1),
    }


class _Drainer(threading.Thread):
    """Empties the log and span rings from another CPU until stopped."""

    def __init__(self, buf: object, cpu: int) -> None:
        super().__init__(name="bench-drainer", daemon=True)
        from rtcore._core import RingReader

        self.readers = [RingReader(buf, "log"), RingReader(buf, "span")]
        self.cpu = cpu
        self.stop = threading.Event()
        self.pinned: str | None = None

    def run(self) -> None:
        try:
            os.sched_setaffinity(0, {self.cpu})
        except OSError as e:
            self.pinned = f"cannot pin the ring reader to CPU {self.cpu}: {e.strerror}"
        while not self.stop.is_set():
            for r in self.readers:
                r.pop(64)


def _push_ns(push: bytes, empty: bytes, ticks_per_ns: float) -> tuple[np.ndarray, float]:
    """Per-push ns with the timer's own cost (median empty interval) removed."""
    pushes = np.frombuffer(push, dtype=np.uint64).astype(np.float64)
    overhead = float(np.median(np.frombuffer(empty, dtype=np.uint64)))
    return np.maximum((pushes - overhead) / ticks_per_ns, 0.0), overhead / ticks_per_ns


def _deque_append_ns(count: int) -> dict[str, float]:
    d: deque[int] = deque(maxlen=4096)
    append = d.append
    clock = time.perf_counter_ns
    pushes = np.empty(count, dtype=np.int64)
    empties = np.empty(count, dtype=np.int64)
    for i in range(count):
        t0 = clock()
        append(i)
        t1 = clock()
        pushes[i] = t1 - t0
        t0 = clock()
        t1 = clock()
        empties[i] = t1 - t0
    ns = np.maximum(pushes - float(np.median(empties)), 0.0)
    out = _summary(ns)
    out["timer_overhead_ns"] = round(float(np.median(empties)), 1)
    return out


def _measure(p: _WorkerParams) -> dict:
    """The child's work. SCHED_FIFO and affinity apply to this thread only and
    end with the child."""
    from rtcore._core import ring_counters
    from rtcore._rt import Runtime
    from rtcore.main import builtin_task_path
    from rtcore.segment import Segment

    seg = Segment.create(segment_name("push"))
    try:
        rt = Runtime(seg.buf)
        rt.load_task(builtin_task_path())
        rt.alloc_state(-1)
        rt.init_task("")
        rt.intern_strings()
        # started before this thread pins itself and turns SCHED_FIFO, so the
        # reader does not inherit either
        drainer = _Drainer(seg.buf, p.reader_cpu)
        drainer.start()
        degraded: list[str] = []
        notes: list[str] = []
        steps: list[tuple[str, Callable[[], tuple[bool, str]]]] = [
            ("mlock", rt.lock_memory),
            ("affinity", lambda: rt.set_affinity([p.cpu])),
            ("sched_fifo", lambda: rt.set_fifo(p.priority)),
        ]
        for name, step in steps:
            ok, msg = step()
            if not ok:
                degraded.append(name)
                notes.append(msg)
        try:
            log = rt.bench_push("log", p.count, p.batch)
            span = rt.bench_push("span", p.count, p.batch)
        finally:
            drainer.stop.set()
            drainer.join()
        if drainer.pinned:
            degraded.append("reader_affinity")
            notes.append(drainer.pinned)
        # after the drainer stopped: it would hold the GIL this loop needs
        reference = _deque_append_ns(p.count)
        dropped = sum(ring_counters(seg.buf, ring)[3] for ring in ("log", "span"))
    finally:
        seg.unlink()
        seg.close()
    log_ns, log_timer = _push_ns(*log)
    span_ns, span_timer = _push_ns(*span)
    return {
        "log_push_ns": _summary(log_ns),
        "span_push_ns": _summary(span_ns),
        "timer_overhead_ns": round((log_timer + span_timer) / 2, 1),
        "tsc_ghz": round((log[2] + span[2]) / 2, 4),
        "dropped": int(dropped),
        "degraded": degraded,
        "degraded_text": "; ".join(notes),
        "python_deque_append_ns": reference,
    }


def _worker_timeout(count: int) -> float:
    # a push is tens of ns; the budget is for start-up and a slow drainer
    return 60.0 + count / 2000


def _build_chatty(out_dir: str) -> str:
    """Compile the benchmark task that logs LOGS_PER_CYCLE records a cycle."""
    src = os.path.join(os.path.dirname(__file__), "tasks", "chatty.c")
    include = os.path.join(os.path.dirname(os.path.dirname(__file__)), "rtcore", "include")
    lib = os.path.join(out_dir, "libchatty.so")
    done = run_bounded(
        ["gcc", "-shared", "-fPIC", "-O2", f"-I{include}", "-o", lib, src],
        timeout=120,
        what="gcc building the benchmark task",
    )
    if done.returncode != 0:
        raise BenchError(f"cannot build the benchmark task: {last_line(done.stderr)}")
    return lib


def _measure_cycle_cost(cpu: int, priority: int) -> dict:
    """Execution time of the same task with its records filtered out (quiet)
    and recorded with spans on every cycle (loud), alternating runs so drift
    hits both alike; the rings are drained while it runs, as the agent does."""
    with tempfile.TemporaryDirectory(prefix="rtc-bench-") as tmp:
        task = [
            "--task",
            _build_chatty(tmp),
            "--task-params",
            f"logs={LOGS_PER_CYCLE}",
            "--ckpt-every",
            "0",
        ]
        quiet_args = [*task, "--log-level", "ERROR", "--trace-every", "0"]
        loud_args = [*task, "--log-level", "INFO", "--trace-every", "1"]
        runs: dict[str, list] = {"quiet": [], "loud": []}
        seen = []
        for _ in range(EXEC_ROUNDS):
            for kind, args in (("quiet", quiet_args), ("loud", loud_args)):
                watch = machine.Watch(cpu)
                runs[kind].append(
                    run_rt(
                        EXEC_CYCLES,
                        EXEC_PERIOD_US,
                        cpu,
                        priority,
                        "sleep",
                        50,
                        tick=watch.tick,
                        extra_args=args,
                        drain=True,
                    )
                )
                seen.append(watch.result())

    def exec_ns(kind: str) -> dict:
        p50 = [stats.percentile(r.exec_hist, 0.5, r.exec_max_ns) for r in runs[kind]]
        mean = [stats.summary_us(r.exec_hist, r.exec_max_ns)["mean"] * 1000 for r in runs[kind]]
        return {"p50": round(sum(p50) / len(p50), 1), "mean": round(sum(mean) / len(mean), 1)}

    quiet, loud = exec_ns("quiet"), exec_ns("loud")
    added = loud["p50"] - quiet["p50"]
    return {
        "method": f"measured: the same task run {EXEC_ROUNDS}x quiet and {EXEC_ROUNDS}x loud, "
        f"alternating, {EXEC_CYCLES} cycles each at {EXEC_PERIOD_US} us on the same CPU; "
        f"loud = {LOGS_PER_CYCLE} log records + {SPANS_PER_CYCLE} spans a cycle, quiet = "
        "the same calls filtered by log level with tracing off; rings drained concurrently",
        "logs_per_cycle": LOGS_PER_CYCLE,
        "spans_per_cycle": SPANS_PER_CYCLE,
        "quiet_exec_ns": quiet,
        "loud_exec_ns": loud,
        "added_ns": round(added, 1),
        "overhead_pct_of_exec": round(100 * added / quiet["p50"], 2) if quiet["p50"] else None,
        "overhead_pct_of_period": round(100 * added / (EXEC_PERIOD_US * 1000), 4),
        "ring_dropped": sum(r.ring_dropped for r in runs["loud"]),
        # what the loud runs really recorded, counted by the rings themselves
        "measured_per_cycle": {
            kind: round(
                sum(r.ring_pushed[kind] for r in runs["loud"])
                / sum(r.cycles for r in runs["loud"]),
                2,
            )
            for kind in ("log", "span")
        },
        "interference": seen,
    }


def run(opts: LoggingOptions) -> dict:
    cpu = machine.default_cpu() if opts.cpu is None else opts.cpu
    machine.check_cpu(cpu)
    others = machine.other_cpus(cpu)
    if not others:
        raise BenchError(
            f"the logging benchmark needs a second online CPU for the ring reader "
            f"(CPU {cpu} is the only one)"
        )
    params = _WorkerParams(opts.count, opts.batch, cpu, others[0], opts.priority)
    sweep_segments()
    with machine.pm_qos_zero() as pm_qos, machine.kept_off(cpu):
        watch = machine.Watch(cpu)
        try:
            done = run_bounded(
                [sys.executable, "-m", "bench.logging", json.dumps(asdict(params))],
                timeout=_worker_timeout(opts.count),
                what="the push-timing child",
                tick=watch.tick,
            )
        finally:
            # the child is gone by now; if it was killed, its segment is left
            sweep_segments()
        pushes_seen = watch.result()
        if done.returncode != 0:
            raise BenchError(f"the push-timing child failed: {last_line(done.stderr)}")
        child = json.loads(done.stdout)
        cycle_cost = _measure_cycle_cost(cpu, opts.priority)
    log, span = child["log_push_ns"], child["span_push_ns"]
    return {
        "log_push_ns": log,
        "span_push_ns": span,
        "timer_overhead_ns": child["timer_overhead_ns"],
        "tsc_ghz": child["tsc_ghz"],
        "count": opts.count,
        "batch": opts.batch,
        "cpu": cpu,
        "reader_cpu": params.reader_cpu,
        "priority": opts.priority,
        "dropped": child["dropped"],
        "degraded": child["degraded"],
        "degraded_text": child["degraded_text"],
        "cycle_overhead": cycle_cost,
        "baseline": {"python_deque_append_ns": child["python_deque_append_ns"]},
        "reference": QUILL,
        "goals": {
            "log_p50_le_30ns": log["p50"] <= GOAL_P50_NS,
            "log_p999_le_150ns": log["p999"] <= GOAL_P999_NS,
            "cycle_exec_growth_under_1pct": cycle_cost["overhead_pct_of_exec"] is not None
            and cycle_cost["overhead_pct_of_exec"] < 1.0,
            "span_p50_le_30ns": span["p50"] <= GOAL_P50_NS,
            "span_p999_le_150ns": span["p999"] <= GOAL_P999_NS,
        },
        "interference": {
            "pushes": pushes_seen,
            "exec_runs": cycle_cost.pop("interference"),
            "note": INTERFERENCE_NOTE,
        },
        "pm_qos": pm_qos,
        "machine": machine.describe(),
    }


def format_text(r: dict) -> str:
    cols = ("p50", "p99", "p999", "max", "mean")
    lines = [
        f"logging: {r['count']} pushes per kind in batches of {r['batch']} on CPU {r['cpu']} "
        f"(reader on CPU {r['reader_cpu']}), TSC {r['tsc_ghz']} GHz, "
        f"timer overhead {r['timer_overhead_ns']} ns subtracted",
        f"{'(ns)':<26}" + "".join(f"{c:>9}" for c in cols),
    ]
    rows = [
        ("log push (rtcore)", r["log_push_ns"]),
        ("span push (rtcore)", r["span_push_ns"]),
        ("deque.append (Python)", r["baseline"]["python_deque_append_ns"]),
    ]
    for label, s in rows:
        lines.append(f"{label:<26}" + "".join(f"{s[c]:>9.1f}" for c in cols))
    q = r["reference"]
    lines.append(
        f"reference (not measured): Quill p50 {q['quill_p50_ns']} ns, p999 {q['quill_p999_ns']} ns"
    )
    c = r["cycle_overhead"]
    lines.append(
        f"per cycle ({c['logs_per_cycle']} logs + {c['spans_per_cycle']} spans, measured): "
        f"exec p50 {c['quiet_exec_ns']['p50']:.0f} -> {c['loud_exec_ns']['p50']:.0f} ns, "
        f"+{c['added_ns']:.0f} ns = {c['overhead_pct_of_exec']}% of exec, "
        f"{c['overhead_pct_of_period']}% of the period"
    )
    g = r["goals"]
    lines.append(
        "goals: "
        + "; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in g.items())
        + f"; dropped {r['dropped']}"
    )
    if r["degraded"]:
        lines.append(f"degraded: {', '.join(r['degraded'])} ({r['degraded_text']})")
    lines += interference_warnings(r["cpu"], r["interference"]["pushes"], "the pushes")
    for seen in r["interference"]["exec_runs"]:
        lines += interference_warnings(r["cpu"], seen, "the exec runs")
    return "\n".join(lines)


def _worker_main(argv: list[str]) -> int:
    from rtcore._rt import SetupError
    from rtcore.main import ConfigError
    from rtcore.segment import SegmentError

    try:
        params = _WorkerParams(**json.loads(argv[0]))
        report = _measure(params)
    except (ConfigError, SegmentError, SetupError, OSError, ValueError) as e:
        print(f"bench.logging: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
