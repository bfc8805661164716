"""`rtctl bench logging`: what recording costs the RT path, against spdlog and
Python's logging measured in the same run, and what draining and promotion
cost the control plane.

- push cost: bench/harness/push_bench.c calls the loop's own inline record
  making (rtcore/emit.h) on a pinned SCHED_FIFO thread while a consumer
  thread on another CPU drains the rings; instructions per push are counted
  by callgrind, a figure that does not move with the machine.
- baselines: spdlog's async logger (same message, count and CPU) and
  Python's logging into a QueueHandler.
- drain: a full log ring of real records drained in bulk by
  rtcore.records.Drainer, then rendered into dicts.
- cycle cost: the real RT process running a task that records 10 logs and
  3 spans a cycle, against the same task recording nothing.
- promotion: a standby RT process made active; cycles until it actuates.
"""

from __future__ import annotations

import functools
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import log_pipeline, logs_search, machine
from bench.baselines import BaselineUnavailable
from bench.baselines.callgrind import instructions_per_call
from bench.baselines.pylogging import python_queue_logging_ns
from bench.baselines.spdlog import spdlog_async_binary, spdlog_async_call_ns
from bench.harness import push_bench_binary
from bench.latency import INTERFERENCE_NOTE, interference_warnings, run_rt
from bench.runner import (
    BenchError,
    background_rt,
    build_chatty,
    last_line,
    open_running,
    run_bounded,
    segment_name,
    sweep_segments,
    wait_until,
)
from rtcore import _core, stats

LOGS_PER_CYCLE = 10
SPANS_PER_CYCLE = 3
EXEC_CYCLES = 3000
EXEC_ROUNDS = 2
PERIOD_US = 1000
CALLGRIND_CALLS = 100_000
SPDLOG_WARMUP_MAX = 100_000  # spdlog_async.cpp's MAX_WARMUP: its calls before the timed batch
DRAIN_ROUNDS = 30
RENDER_ROUNDS = 5
PROMOTE_FLIPS = 20
PROMOTE_LEASE_TIMEOUT_MS = 200
PROMOTE_HOLD_S = 0.02
GOAL_SPDLOG_RATIO = 3.0
GOAL_ADDED_EXEC_NS = 1000.0
GOAL_DRAIN_PER_S = 1_000_000
GOAL_PROMOTE_CYCLES = 2


@dataclass(frozen=True)
class LoggingOptions:
    count: int = 1_000_000
    cpu: int | None = None
    priority: int = 80
    delivery_s: float = 20.0  # the log pipeline's delivery probe
    sustain_s: float = 60.0  # the log pipeline at 200,000 records a second
    search_records: int = 10_000_000  # the embedded store's search benchmark (0: skip)
    search_days: float = 10.0
    opensearch: bool = True  # the real OpenSearch as the same-run baseline


def _round(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(v, nd)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _unavailable(make: Callable[[], Any]) -> Any:
    """make(), or {"unavailable": reason} when the tool or library is missing
    or the baseline fails: a baseline never fails the benchmark."""
    try:
        return make()
    except (BaselineUnavailable, BenchError) as e:
        return {"unavailable": str(e)}


# ---- push cost (C harness) -------------------------------------------------


def _push_summary(k: dict, sub_batch: int) -> dict:
    return {
        "mean": _round(k["mean"], 2),
        "p50": _round(k["p50"], 2),
        "p99": _round(k["p99"], 2),
        "p999": _round(k["p999"], 2),
        "max": _round(k["max"], 2),
        "dropped": k["dropped"],
        "percentiles_of": f"means of {k['sub_batches']} sub-batches of {sub_batch} pushes",
    }


def _push_costs(binary: str, count: int, cpu: int, reader_cpu: int, priority: int) -> dict:
    watch = machine.Watch(cpu)
    done = run_bounded(
        [binary, "time", str(count), str(cpu), str(reader_cpu), str(priority)],
        timeout=60.0 + count / 20_000,
        what="the push harness",
        tick=watch.tick,
    )
    if done.returncode != 0:
        raise BenchError(f"the push harness failed: {last_line(done.stderr)}")
    r = json.loads(done.stdout)
    r["interference"] = watch.result()
    return r


def _instructions(binary: str, count: int) -> dict:
    """Instructions per call under callgrind: our two wrappers, spdlog's call."""
    n = min(count, CALLGRIND_CALLS)
    out: dict[str, Any] = {"calls": n}
    for key, fn in (
        ("log_push_instructions", "rtc_bench_log"),
        ("span_push_instructions", "rtc_bench_span"),
    ):
        out[key] = _unavailable(
            functools.partial(instructions_per_call, binary, ["count", str(n)], fn, n)
        )
    out["spdlog_call_instructions"] = _unavailable(
        lambda: instructions_per_call(
            spdlog_async_binary(),
            [str(n), "-1", "-1"],
            "rtc_spdlog_call",
            n + min(n, SPDLOG_WARMUP_MAX),
        )
    )
    return {k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}


# ---- draining --------------------------------------------------------------


def _drain_rates(binary: str) -> dict:
    """A log ring filled with real records (the harness's rtc_emit_log, on a
    real segment) drained whole by Drainer.drain_batch, DRAIN_ROUNDS times;
    the first RENDER_ROUNDS batches also turned into dicts."""
    from rtcore.records import Drainer
    from rtcore.segment import Segment

    seg = Segment.create(segment_name("drain"))
    try:
        drainer = Drainer(seg.buf)
        drain_ns: list[int] = []
        render_ns: list[int] = []
        records = 0
        message = ""
        for i in range(DRAIN_ROUNDS):
            done = run_bounded([binary, "fill", seg.name], timeout=30, what="the ring filler")
            if done.returncode != 0:
                raise BenchError(f"the ring filler failed: {last_line(done.stderr)}")
            filled = json.loads(done.stdout)["filled"]
            t0 = time.perf_counter_ns()
            batch = drainer.drain_batch("log")
            batch.wall_ns()
            t1 = time.perf_counter_ns()
            if len(batch) != filled:
                raise BenchError(f"drained {len(batch)} log records of the {filled} written")
            drain_ns.append(t1 - t0)
            records = filled
            if i < RENDER_ROUNDS:
                t0 = time.perf_counter_ns()
                dicts = drainer.decoder.logs(batch)
                render_ns.append(time.perf_counter_ns() - t0)
                message = dicts[-1]["message"]
        del drainer, batch
    finally:
        seg.unlink()
        seg.close()
    return {
        "records_per_drain": records,
        "rounds": DRAIN_ROUNDS,
        "drain_records_per_s": round(records * len(drain_ns) / (sum(drain_ns) / 1e9)),
        "drain_ns_per_record": round(sum(drain_ns) / (records * len(drain_ns)), 2),
        "render_rounds": RENDER_ROUNDS,
        "render_records_per_s": round(records * len(render_ns) / (sum(render_ns) / 1e9)),
        "render_us_per_record": round(sum(render_ns) / (records * len(render_ns)) / 1e3, 3),
        "sample_message": message,
        "method": "measured: a full log ring of real records (rtc_emit_log in the harness, "
        "on a POSIX shm segment) drained by Drainer.drain_batch('log') with wall times "
        "converted (columnar numpy batch); render = Drainer.decoder.logs(batch), dicts with "
        "rendered messages and typed fields, per record in Python",
    }


NODE_DRAIN_RECORDS = 2_000_000
NODE_DRAIN_RATE = 600_000  # records/s offered: 1.2 x the goal
SLOW_SUBSCRIBER_S = 0.02
GOAL_NODE_DRAIN_PER_S = 500_000


def _node_drainer_rate() -> dict:
    """The agent's drainer (control.node.drainer) with a fast subscriber and
    a slow one (sleeps per batch, small queue) attached, fed by a producer that
    offers NODE_DRAIN_RECORDS records at NODE_DRAIN_RATE a second and, like the
    RT, drops what does not fit the ring. The figures: the rate records reach
    the fast subscriber, what the ring dropped (the drainer fell behind), and
    what the slow subscriber lost (its queue was full)."""
    from control.node.drainer import Drainer, Subscriber
    from rtcore import _core, _testhooks
    from rtcore.segment import Segment

    seg = Segment.create(segment_name("nodedrain"))
    delivered = [0]

    def fast(batch: Any, decoder: Any) -> None:
        delivered[0] += len(batch)

    def slow(batch: Any, decoder: Any) -> None:
        time.sleep(SLOW_SUBSCRIBER_S)

    drainer = Drainer(lambda: seg, lambda: 1, interval_s=0.001)
    drainer.subscribe(Subscriber("fast", {"log"}, fast))
    slow_sub = drainer.subscribe(Subscriber("slow", {"log"}, slow, max_batches=4))
    writer = _testhooks.PatternWriter(seg.buf, "log")
    try:
        drainer.start()
        chunk = NODE_DRAIN_RATE // 1000  # one millisecond's worth
        t0 = time.perf_counter_ns()
        offered = accepted = 0
        while offered < NODE_DRAIN_RECORDS:
            n = min(chunk, NODE_DRAIN_RECORDS - offered)
            accepted += writer.push_sequence(offered, n)
            offered += n
            due = t0 + offered * 1_000_000_000 // NODE_DRAIN_RATE
            if (late := due - time.perf_counter_ns()) > 0:
                time.sleep(late / 1e9)
        while delivered[0] < accepted and time.perf_counter_ns() - t0 < 60e9:
            time.sleep(0.001)
        elapsed = time.perf_counter_ns() - t0
        ring_dropped = _core.ring_counters(seg.buf, "log")[3]
        if delivered[0] < accepted:
            raise BenchError("the drainer did not deliver every accepted record within 60 s")
    finally:
        drainer.stop()
        del writer, drainer
        seg.unlink()
        seg.close()
    return {
        "records": NODE_DRAIN_RECORDS,
        "offered_records_per_s": NODE_DRAIN_RATE,
        "node_drain_records_per_s": round(delivered[0] / (elapsed / 1e9)),
        "ring_dropped": ring_dropped,
        "subscriber_dropped": {"fast": 0, "slow": slow_sub.dropped},
        "slow_subscriber_s_per_batch": SLOW_SUBSCRIBER_S,
        "method": "measured: control.node.drainer.Drainer draining the log ring every 1 ms "
        "in bulk into numpy batches, fanned out to a counting subscriber and to one that "
        f"sleeps {SLOW_SUBSCRIBER_S * 1000:.0f} ms per batch with a 4-batch queue; a "
        f"producer (patterned records, C, no GIL) offers {NODE_DRAIN_RATE:,} records/s in "
        "1 ms chunks and drops what does not fit the 4096-record ring, as the RT does",
    }


# ---- cycle cost (real RT process) ------------------------------------------


def _cycle_cost(cpu: int, priority: int) -> dict:
    """Execution time of the chatty task recording nothing (quiet) and
    recording LOGS + SPANS a cycle (loud), alternating runs so drift hits
    both alike; the rings are drained while it runs, as the agent does."""
    runs: dict[str, list] = {"quiet": [], "loud": []}
    seen = []
    with tempfile.TemporaryDirectory(prefix="rtc-bench-") as tmp:
        lib = build_chatty(tmp)
        for _ in range(EXEC_ROUNDS):
            for kind in ("quiet", "loud"):
                watch = machine.Watch(cpu)
                args = ["--task", lib, "--task-params", f"mode={kind}", "--ckpt-every", "0"]
                args += ["--trace-ratio", "1", "--actuate-without-lease"]
                runs[kind].append(
                    run_rt(
                        EXEC_CYCLES,
                        PERIOD_US,
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
        rs = runs[kind]
        p50 = [stats.percentile(r.exec_hist, 0.5, r.exec_max_ns) for r in rs]
        mean = [stats.summary_us(r.exec_hist, r.exec_max_ns)["mean"] * 1000 for r in rs]
        return {"p50": round(sum(p50) / len(p50), 1), "mean": round(sum(mean) / len(mean), 1)}

    def per_cycle(kind: str) -> dict:
        rs = runs[kind]
        cycles = sum(r.cycles for r in rs)
        return {
            ring: round(sum(r.ring_pushed[ring] for r in rs) / cycles, 3)
            for ring in ("log", "span")
        }

    quiet, loud = exec_ns("quiet"), exec_ns("loud")
    counted = {"quiet": per_cycle("quiet"), "loud": per_cycle("loud")}
    added = {
        ring: round(counted["loud"][ring] - counted["quiet"][ring], 3) for ring in ("log", "span")
    }
    return {
        "method": f"measured: the chatty task run {EXEC_ROUNDS}x quiet and {EXEC_ROUNDS}x loud, "
        f"alternating, {EXEC_CYCLES} cycles each at {PERIOD_US} us on the same CPU, "
        "--trace-ratio 1 --actuate-without-lease in both; loud = the task's "
        f"{LOGS_PER_CYCLE} log records + {SPANS_PER_CYCLE} spans a cycle, quiet = none; rings "
        "drained concurrently; exec time from the loop's histogram (16 buckets per power of "
        "two); the loop's exec time includes pushing the cycle's spans into the "
        "ring, so added_exec_ns covers them",
        "quiet_exec_ns": quiet,
        "loud_exec_ns": loud,
        "added_exec_ns": round(loud["p50"] - quiet["p50"], 1),
        "added_exec_mean_ns": round(loud["mean"] - quiet["mean"], 1),
        "records_per_cycle": counted,
        "added_records_per_cycle": added,
        "overhead_pct_of_period": round(100 * (loud["p50"] - quiet["p50"]) / (PERIOD_US * 1000), 4),
        "ring_dropped": sum(r.ring_dropped for r in runs["loud"] + runs["quiet"]),
        "interference": seen,
    }


# ---- promotion -------------------------------------------------------------


def _promote(cpu: int, priority: int) -> dict:
    """Flip a standby RT process to active PROMOTE_FLIPS times: cycles from
    the flip (status.cycles read just before it) to the first actuated one."""
    deltas: list[int] = []
    delays_ns: list[int] = []
    with background_rt(
        "promote",
        "--standby",
        "--lease-timeout-ms",
        str(PROMOTE_LEASE_TIMEOUT_MS),
        "--epoch",
        "1",
        "--cpus",
        str(cpu),
        "--priority",
        str(priority),
        "--period-us",
        str(PERIOD_US),
        "--ckpt-every",
        "0",
    ) as (proc, name):
        seg = open_running(name, proc, 10)
        try:
            readers = [_core.RingReader(seg.buf, r) for r in ("log", "span", "event", "journal")]
            status = seg.view()["status"]

            def drain() -> None:
                for r in readers:
                    r.pop(4096)

            def actuating(epoch: int, on: bool) -> bool:
                _core.renew_lease(seg.buf)
                drain()
                if not on:
                    return int(status["actuating"]) == 0
                return int(status["actuating"]) == 1 and int(status["act_epoch"]) == epoch

            for i in range(PROMOTE_FLIPS):
                epoch = 2 + i
                drain()
                cycles = int(status["cycles"])
                flip_ns = _core.monotonic_ns()
                _core.write_control(seg.buf, active=True, epoch=epoch, lease_ns=flip_ns)
                _core.renew_lease(seg.buf)
                wait_until(
                    functools.partial(actuating, epoch, True), 10, "the standby to actuate", proc
                )
                deltas.append(int(status["act_first_cycle"]) - cycles)
                delays_ns.append(int(status["act_first_mono_ns"]) - flip_ns)
                end = time.monotonic() + PROMOTE_HOLD_S
                while time.monotonic() < end:
                    _core.renew_lease(seg.buf)
                    time.sleep(0.002)
                _core.write_control(seg.buf, active=False)
                wait_until(
                    functools.partial(actuating, epoch, False), 10, "the node to stand by", proc
                )
        finally:
            seg.close()
    d = np.array(deltas)
    ns = np.array(delays_ns) / 1e3
    return {
        "flips": PROMOTE_FLIPS,
        "p50": float(np.percentile(d, 50)),
        "max": int(d.max()),
        "all": deltas,
        "flip_to_first_actuated_wake_us": {
            "p50": round(float(np.percentile(ns, 50)), 1),
            "max": round(float(ns.max()), 1),
        },
        "period_us": PERIOD_US,
        "method": "measured: `python -m rtcore --standby --lease-timeout-ms "
        f"{PROMOTE_LEASE_TIMEOUT_MS} --epoch 1` on the bench CPU; each flip reads "
        "status.cycles, then publishes active=1 with a new epoch and a fresh lease in one "
        "control write; figure = status.act_first_cycle - that cycles count (1: the very "
        "next cycle); flipped back to standby between flips",
    }


# ---- the whole run ---------------------------------------------------------


def _search(opts: LoggingOptions) -> dict | None:
    """The embedded store's search benchmark (bench/logs_search.py) in a
    scratch directory, removed after."""
    if not opts.search_records:
        return None
    with tempfile.TemporaryDirectory(prefix="rtc-bench-logsearch-") as tmp:
        return logs_search.run(opts.search_records, opts.search_days, Path(tmp), opts.opensearch)


def run(opts: LoggingOptions) -> dict:
    cpu = machine.default_cpu() if opts.cpu is None else opts.cpu
    machine.check_cpu(cpu)
    others = machine.other_cpus(cpu)
    if not others:
        raise BenchError(
            f"the logging benchmark needs a second online CPU for the ring reader "
            f"(CPU {cpu} is the only one)"
        )
    reader_cpu = others[0]
    binary = push_bench_binary()
    sweep_segments()
    with machine.pm_qos_zero() as pm_qos, machine.kept_off(cpu):
        push = _push_costs(binary, opts.count, cpu, reader_cpu, opts.priority)
        spdlog = _unavailable(lambda: spdlog_async_call_ns(opts.count, cpu))
        pylog = python_queue_logging_ns(opts.count)
        instructions = _instructions(binary, opts.count)
        drain = _drain_rates(binary)
        node_drain = _node_drainer_rate()
        cycle_cost = _cycle_cost(cpu, opts.priority)
        promote = _promote(cpu, opts.priority)
    pipeline = log_pipeline.run(cpu, opts.delivery_s, opts.sustain_s, opts.opensearch)
    search = _search(opts)
    sub = push["sub_batch"]
    log = _push_summary(push["log"], sub)
    span = _push_summary(push["span"], sub)
    between = {
        "log_push_ns": _push_summary(push["log_consumer_between_bursts"], sub),
        "span_push_ns": _push_summary(push["span_consumer_between_bursts"], sub),
    }
    spdlog_mean = spdlog.get("mean_ns")
    ratio = _ratio(spdlog_mean, log["mean"])
    n_instr = instructions
    instr_ratio = (
        _ratio(n_instr["spdlog_call_instructions"], n_instr["log_push_instructions"])
        if all(
            isinstance(n_instr[k], float)
            for k in ("spdlog_call_instructions", "log_push_instructions")
        )
        else None
    )
    return {
        "count": opts.count,
        "cpu": cpu,
        "reader_cpu": reader_cpu,
        "priority": opts.priority,
        "log_push_ns": log,
        "span_push_ns": span,
        "push_method": f"measured by bench/harness/push_bench.c: rtc_emit_log (message of "
        "the spdlog baseline: one double, three ints) and rtc_emit_span of a ready 128-byte "
        "span record (what the scratch flush pushes per span), each through a noipa wrapper, "
        f"on CPU {cpu} at SCHED_FIFO {opts.priority} while a consumer thread on CPU "
        f"{reader_cpu} drains both rings continuously; the consumer catches up (untimed) "
        f"before each burst, so every push finds room; mean = clock_gettime around bursts "
        f"of {push['mean_burst']} pushes; percentiles = means of {sub}-push sub-batches "
        f"timed with {push['timer']} (timer overhead {push['timer_overhead_ns']:.1f} ns "
        "subtracted), so a single slow push is spread over its sub-batch",
        "timer": push["timer"],
        "timer_resolution_ns": round(push["timer_resolution_ns"], 3),
        "per_push_resolution_ns": round(push["timer_resolution_ns"] / sub, 4),
        "timer_overhead_ns": round(push["timer_overhead_ns"], 2),
        "tsc_ghz": round(push["ticks_per_ns"], 4),
        "push_consumer_between_bursts": between,
        "dropped": log["dropped"] + span["dropped"],
        "degraded": [d for d in push["degraded"].split("; ") if d],
        "log_push_instructions": n_instr["log_push_instructions"],
        "span_push_instructions": n_instr["span_push_instructions"],
        "spdlog_call_instructions": n_instr["spdlog_call_instructions"],
        "instructions_calls": n_instr["calls"],
        "baseline": {"spdlog": spdlog, "python_logging_queue": pylog},
        "spdlog_over_log_push": ratio,
        "spdlog_over_log_push_consumer_between_bursts": _ratio(
            spdlog_mean, between["log_push_ns"]["mean"]
        ),
        "spdlog_over_log_push_instructions": instr_ratio,
        "python_logging_over_log_push": _ratio(pylog["mean_ns"], log["mean"]),
        "spdlog_dropped": spdlog.get("dropped"),
        "drain": drain,
        "drain_records_per_s": drain["drain_records_per_s"],
        "render_records_per_s": drain["render_records_per_s"],
        "node_drainer": node_drain,
        "node_drain_records_per_s": node_drain["node_drain_records_per_s"],
        "subscriber_dropped": node_drain["subscriber_dropped"],
        "cycle_cost": cycle_cost,
        "added_exec_ns": cycle_cost["added_exec_ns"],
        "promote_cycles": promote,
        "pipeline": pipeline,
        "delivery_ms": pipeline["delivery"]["delivery_ms"],
        "bulk_delivery_ms": pipeline["delivery"]["bulk_delivery_ms"],
        "sustained_records_per_s": pipeline["sustained"]["stored_records_per_s"],
        "search": search,
        "search_ms": search.get("search_ms") if search else None,
        "goals": {
            **pipeline["goals"],
            "search_p95_le_50ms_every_shape": search["meets_goal"] if search else None,
            "spdlog_over_log_push_ge_3": None if ratio is None else ratio >= GOAL_SPDLOG_RATIO,
            "added_exec_le_1000ns": cycle_cost["added_exec_ns"] <= GOAL_ADDED_EXEC_NS,
            "drain_ge_1M_records_per_s": drain["drain_records_per_s"] >= GOAL_DRAIN_PER_S,
            "node_drain_ge_500k_records_per_s_with_a_slow_subscriber": (
                node_drain["node_drain_records_per_s"] >= GOAL_NODE_DRAIN_PER_S
                and node_drain["ring_dropped"] == 0
            ),
            "promote_within_one_period": promote["max"] <= GOAL_PROMOTE_CYCLES,
        },
        "interference": {
            "pushes": push["interference"],
            "exec_runs": cycle_cost.pop("interference"),
            "note": INTERFERENCE_NOTE,
        },
        "pm_qos": pm_qos,
        "machine": machine.describe(),
    }


def _num(v: Any, fmt: str = ".1f") -> str:
    return format(v, fmt) if isinstance(v, int | float) else "n/a"


def format_text(r: dict) -> str:
    cols = ("mean", "p50", "p99", "p999", "max")
    lines = [
        f"logging: {r['count']} pushes per kind on CPU {r['cpu']} (reader on CPU "
        f"{r['reader_cpu']}), {r['timer']} at {r['tsc_ghz']} GHz, one sub-batch resolved to "
        f"{r['timer_resolution_ns']} ns ({r['per_push_resolution_ns']} ns a push)",
        f"{'(ns per push)':<40}" + "".join(f"{c:>9}" for c in cols) + "  dropped",
    ]
    rows = [
        ("log push, reader draining all along", r["log_push_ns"]),
        ("span push, reader draining all along", r["span_push_ns"]),
        ("log push, reader between bursts", r["push_consumer_between_bursts"]["log_push_ns"]),
        ("span push, reader between bursts", r["push_consumer_between_bursts"]["span_push_ns"]),
    ]
    for label, s in rows:
        lines.append(
            f"{label:<40}" + "".join(f"{_num(s[c]):>9}" for c in cols) + f"  {s['dropped']:>7}"
        )
    sp = r["baseline"]["spdlog"]
    if "unavailable" in sp:
        lines.append(f"spdlog async: unavailable ({sp['unavailable']})")
    else:
        lines.append(
            f"spdlog {sp['spdlog_version']} async: {sp['mean_ns']:.1f} ns a call "
            f"({sp['dropped']} dropped) = {_num(r['spdlog_over_log_push'], '.2f')}x our log push "
            f"({_num(r['spdlog_over_log_push_consumer_between_bursts'], '.2f')}x with the reader "
            "between bursts)"
        )
    py = r["baseline"]["python_logging_queue"]
    lines.append(
        f"Python logging QueueHandler: {py['mean_ns']:.1f} ns a call = "
        f"{_num(r['python_logging_over_log_push'], '.1f')}x our log push"
    )
    lines.append(
        f"instructions per call (callgrind): log push {_num(r['log_push_instructions'])}, "
        f"span push {_num(r['span_push_instructions'])}, spdlog "
        f"{_num(r['spdlog_call_instructions'])} "
        f"({_num(r['spdlog_over_log_push_instructions'], '.1f')}x)"
    )
    lines.append(
        f"drain: {r['drain_records_per_s']:,} records/s as a numpy batch, "
        f"{r['render_records_per_s']:,} records/s rendered into dicts; the agent's drainer "
        f"{r['node_drain_records_per_s']:,} records/s to subscribers with a slow one attached "
        f"(it lost {r['subscriber_dropped']['slow']:,}; ring drops "
        f"{r['node_drainer']['ring_dropped']})"
    )
    c = r["cycle_cost"]
    lines.append(
        f"per cycle (+{c['added_records_per_cycle']['log']} logs, "
        f"+{c['added_records_per_cycle']['span']} spans, counted): exec p50 "
        f"{c['quiet_exec_ns']['p50']:.0f} -> {c['loud_exec_ns']['p50']:.0f} ns, "
        f"+{c['added_exec_ns']:.0f} ns (mean +{c['added_exec_mean_ns']:.0f} ns), "
        f"{c['overhead_pct_of_period']}% of the period"
    )
    p = r["promote_cycles"]
    lines.append(
        f"promotion: {p['flips']} flips, first actuated cycle after p50 {p['p50']:g}, max "
        f"{p['max']} cycles (p50 {p['flip_to_first_actuated_wake_us']['p50']} us, max "
        f"{p['flip_to_first_actuated_wake_us']['max']} us, period {p['period_us']} us)"
    )
    d = r["pipeline"]["delivery"]
    bulk = r["bulk_delivery_ms"]
    lines.append(
        f"delivery, RT push -> searchable: store p50/p99/max {d['delivery_ms']['p50']}/"
        f"{d['delivery_ms']['p99']}/{d['delivery_ms']['max']} ms (probe round trip p50 "
        f"{d['probe_rtt_ms']['p50']} ms); OpenSearch "
        + (
            f"p50/p99/max {bulk['p50']}/{bulk['p99']}/{bulk['max']} ms"
            if bulk
            else f"not measured: {d['opensearch']}"
        )
    )
    sus = r["pipeline"]["sustained"]
    lines.append(
        f"sustained: {sus['offered_records_per_s']:,} records/s offered for {sus['seconds']} s: "
        f"{sus['made_records_per_s']:,}/s made, {sus['spooled_records_per_s']:,}/s spooled, "
        f"{sus['stored_records_per_s']:,}/s stored; ring drops {sus['ring_dropped']:,}"
    )
    if r["search"]:
        lines.append(f"search: {json.dumps(r['search_ms'])}")
    lines.append(
        "goals: "
        + "; ".join(
            f"{k}: {'n/a' if v is None else 'yes' if v else 'NO'}" for k, v in r["goals"].items()
        )
    )
    if r["degraded"]:
        lines.append(f"degraded: {'; '.join(r['degraded'])}")
    lines += interference_warnings(r["cpu"], r["interference"]["pushes"], "the pushes")
    for seen in r["interference"]["exec_runs"]:
        lines += interference_warnings(r["cpu"], seen, "the exec runs")
    return "\n".join(lines)
