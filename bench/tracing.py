"""`rtctl bench tracing`: what tracing costs the loop, and the same-run baseline.

- overhead: the reference task with tracing off (ratio 0) and at 100 %
  sampling, alternating runs on the same CPU, rings drained as the agent does;
  the loop's own execution-time histogram, so span recording and pushing are
  inside what is measured.
- span_push vs the OpenTelemetry Python SDK: the RT's span push (the loop's
  emit.h code in the C harness, over a batch) against the SDK creating and
  ending the same number of spans in the agent's process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench import machine
from bench.latency import run_rt
from bench.runner import BenchError
from rtcore import stats

ROUNDS = 3
CYCLES = 5000
PERIOD_US = 1000
SDK_SPANS = 20_000
GOAL_OVERHEAD_PCT = 1.0


@dataclass
class TracingOptions:
    cpu: int | None = None
    priority: int = 80
    rounds: int = ROUNDS
    cycles: int = CYCLES
    store_spans: int = 1_000_000


def _overhead(opts: TracingOptions, cpu: int) -> dict[str, Any]:
    runs: dict[str, list] = {"off": [], "on": []}
    seen = []
    for _ in range(opts.rounds):
        for kind, ratio in (("off", "0"), ("on", "1")):
            watch = machine.Watch(cpu)
            runs[kind].append(
                run_rt(
                    opts.cycles,
                    PERIOD_US,
                    cpu,
                    opts.priority,
                    "sleep",
                    50,
                    tick=watch.tick,
                    extra_args=["--trace-ratio", ratio, "--actuate-without-lease"],
                    drain=True,
                )
            )
            seen.append(watch.result())

    def exec_ns(kind: str) -> dict[str, float]:
        rs = runs[kind]
        mean = [stats.summary_us(r.exec_hist, r.exec_max_ns)["mean"] * 1000 for r in rs]
        p50 = [stats.percentile(r.exec_hist, 0.5, r.exec_max_ns) for r in rs]
        return {"mean": round(sum(mean) / len(mean), 1), "p50": round(sum(p50) / len(p50), 1)}

    off, on = exec_ns("off"), exec_ns("on")
    spans = sum(r.ring_pushed["span"] for r in runs["on"]) / sum(r.cycles for r in runs["on"])
    return {
        "off_exec_ns": off,
        "on_exec_ns": on,
        "added_ns_per_cycle": round(on["mean"] - off["mean"], 1),
        "overhead_pct": round(100 * (on["mean"] - off["mean"]) / off["mean"], 2),
        "overhead_pct_of_period": round(100 * (on["mean"] - off["mean"]) / (PERIOD_US * 1e3), 4),
        "spans_per_cycle_on": round(spans, 2),
        "ring_dropped": sum(r.ring_dropped for r in runs["on"] + runs["off"]),
        "method": f"measured: the built-in reference task, {opts.rounds} runs each with "
        f"--trace-ratio 0 and 1, alternating, {opts.cycles} cycles at {PERIOD_US} us on CPU "
        f"{cpu}, rings drained concurrently; mean execution time from the loop's histogram "
        "(16 buckets per power of two), span recording and pushing included",
        "interference": seen,
    }


def _sdk_span_ns(count: int) -> dict[str, Any]:
    """The OpenTelemetry Python SDK creating and ending `count` spans (a
    tracer provider with no processor: the cheapest the SDK does it)."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError as e:
        raise BenchError(f"the OpenTelemetry SDK baseline needs opentelemetry-sdk: {e}") from None

    tracer = TracerProvider().get_tracer("rtcore.bench")
    for _ in range(1000):  # warm-up
        tracer.start_span("warm").end()
    t0 = time.perf_counter_ns()
    for _ in range(count):
        span = tracer.start_span("task.step")
        span.set_attribute("cycle", 1)
        span.end()
    elapsed = time.perf_counter_ns() - t0
    return {"spans": count, "mean_ns": round(elapsed / count, 1)}


def _rt_span_push_ns(cpu: int, reader_cpu: int, priority: int) -> dict[str, Any]:
    from bench.harness import push_bench_binary
    from bench.logging import _push_costs

    push = _push_costs(push_bench_binary(), 200_000, cpu, reader_cpu, priority)
    between = push["span_consumer_between_bursts"]
    return {
        "mean_ns": round(between["mean"], 2),
        "mean_ns_reader_spinning": round(push["span"]["mean"], 2),
        "method": "measured: rtc_emit_span of a ready record (bench/harness/push_bench.c), "
        "200,000 pushes; the reader empties the ring between bursts, as the agent's "
        "periodic drainer does",
    }


def run(opts: TracingOptions) -> dict[str, Any]:
    cpu = machine.default_cpu() if opts.cpu is None else opts.cpu
    machine.check_cpu(cpu)
    others = machine.other_cpus(cpu)
    if not others:
        raise BenchError("the tracing benchmark needs a second online CPU for the ring reader")
    with machine.pm_qos_zero(), machine.kept_off(cpu):
        overhead = _overhead(opts, cpu)
        rt_push = _rt_span_push_ns(cpu, others[0], opts.priority)
    sdk = _sdk_span_ns(SDK_SPANS)
    import tempfile

    from bench.tracing_store import trace_get_ms

    with tempfile.TemporaryDirectory(prefix="rtc-bench-traces-") as tmp:
        store = trace_get_ms(tmp, n_spans=opts.store_spans)
    return {
        "cpu": cpu,
        "overhead": overhead,
        "overhead_pct": overhead["overhead_pct"],
        "added_ns_per_cycle": overhead["added_ns_per_cycle"],
        "span_push_ns": rt_push,
        "baseline": {"opentelemetry_sdk_span_ns": sdk},
        "sdk_over_rt_span_push": round(sdk["mean_ns"] / rt_push["mean_ns"], 1)
        if rt_push["mean_ns"]
        else None,
        "trace_store": store,
        "trace_get_ms": store["get_ms"],
        "goals": {
            "overhead_lt_1pct": overhead["overhead_pct"] < GOAL_OVERHEAD_PCT,
            "trace_get_p99_le_50ms": bool(store["goal_met"]),
        },
        "machine": machine.describe(),
    }


def format_text(r: dict[str, Any]) -> str:
    o = r["overhead"]
    return "\n".join(
        [
            f"tracing on CPU {r['cpu']}: reference task exec mean {o['off_exec_ns']['mean']:.0f} "
            f"ns off -> {o['on_exec_ns']['mean']:.0f} ns at 100 % sampling "
            f"({o['spans_per_cycle_on']} spans a cycle): +{o['added_ns_per_cycle']:.0f} ns, "
            f"{o['overhead_pct']:.2f} % of the task's exec, "
            f"{o['overhead_pct_of_period']:.4f} % of the period",
            f"span push {r['span_push_ns']['mean_ns']:.1f} ns vs the OpenTelemetry SDK "
            f"{r['baseline']['opentelemetry_sdk_span_ns']['mean_ns']:.0f} ns a span "
            f"({r['sdk_over_rt_span_push']}x)",
            f"trace store: {r['trace_store']['spans']:,} spans, get p50/p99 "
            f"{r['trace_get_ms']['p50']}/{r['trace_get_ms']['p99']} ms (unindexed scan "
            f"{r['trace_store']['baseline']['get_ms']['p50']} ms p50)",
            "goals: " + "; ".join(f"{k}: {'yes' if v else 'no'}" for k, v in r["goals"].items()),
        ]
    )
