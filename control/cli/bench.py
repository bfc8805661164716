"""`rtctl bench`: measurements of the runtime on this machine, each against a
baseline measured in the same run. The measuring code lives in bench/; it and
the RT core load only when a benchmark is chosen."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from control.cli.common import Report, UsageError, int_in, positive_seconds
from control.errors import ControlError

NAME = "bench"
HELP = "measure the runtime against same-run baselines"

MAX_BENCH_CYCLES = 1_000_000
MAX_PUSH_COUNT = 2_000_000


def _cpu(text: str) -> int:
    from rtcore import topology

    cpu = int_in(0, 4095)(text)
    try:
        topology.check_cpus([cpu])
    except topology.TopologyError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return cpu


def _bench_flags(parser: argparse.ArgumentParser, cpu_help: str) -> None:
    parser.add_argument("--cpu", type=_cpu, help=cpu_help)
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def add(commands: Any) -> None:
    from rtcore.main import MAX_PERIOD_US, MIN_PERIOD_US

    bench = commands.add_parser(
        NAME,
        help=HELP,
        description="Measure the runtime on this machine. Each benchmark runs its own "
        "baseline in the same invocation and reports ratios against it.",
    )
    kinds = bench.add_subparsers(dest="kind", metavar="BENCHMARK", required=True)

    lat = kinds.add_parser(
        "latency",
        help="wake-up latency and execution time of the RT loop vs cyclictest",
        description="Run the RT process for a number of cycles pinned to one CPU at "
        "SCHED_FIFO, then cyclictest on the same CPU with the same period, count and "
        "priority (never both at once), and compare their wake-up latency read through "
        "the same histogram. Needs root (or CAP_SYS_NICE and CAP_IPC_LOCK) for "
        "meaningful figures; refused steps are listed under 'degraded'.",
    )
    lat.add_argument(
        "--cycles",
        type=int_in(1, MAX_BENCH_CYCLES),
        default=10_000,
        help="cycles to measure, for each side (default 10000)",
    )
    lat.add_argument(
        "--period-us",
        type=int_in(MIN_PERIOD_US, MAX_PERIOD_US, " microseconds"),
        default=1000,
        help="cycle period in microseconds (default 1000)",
    )
    _bench_flags(lat, "CPU to measure on (default: the highest-numbered online CPU)")
    lat.add_argument(
        "--priority", type=int_in(1, 99), default=80, help="SCHED_FIFO priority (default 80)"
    )
    lat.add_argument(
        "--wake-mode",
        choices=("sleep", "hybrid"),
        default="sleep",
        help="sleep: clock_nanosleep to the deadline (default); hybrid: sleep, then spin "
        "the last --spin-us",
    )
    lat.add_argument(
        "--spin-us",
        type=int_in(1, MAX_PERIOD_US - 1, " microseconds"),
        default=50,
        help="spin window of the hybrid wake mode, below the period (default 50)",
    )
    lat.set_defaults(handler=_latency)

    log = kinds.add_parser(
        "logging",
        help="cost of recording on the RT path, against spdlog and Python logging",
        description="Time the RT loop's own log and span pushes (a C harness on one CPU at "
        "SCHED_FIFO while a reader on another CPU drains the rings) against spdlog's async "
        "logger and Python's logging measured in the same run; count instructions per call "
        "with callgrind; measure bulk draining, the added execution time of 10 logs + 3 "
        "spans a cycle in the real RT process, and how many cycles a standby takes to "
        "actuate once promoted.",
    )
    log.add_argument(
        "--count",
        type=int_in(1, MAX_PUSH_COUNT),
        default=1_000_000,
        help="pushes to time, per record kind, and calls of each baseline (default 1000000)",
    )
    log.add_argument(
        "--delivery-seconds",
        type=positive_seconds,
        default=20.0,
        metavar="S",
        help="how long to probe RT push -> searchable in the store and OpenSearch (20)",
    )
    log.add_argument(
        "--sustain-seconds",
        type=positive_seconds,
        default=60.0,
        metavar="S",
        help="how long the RT logs 200,000 records a second into a real agent (60)",
    )
    log.add_argument(
        "--search-records",
        type=int_in(0, 100_000_000),
        default=10_000_000,
        metavar="N",
        help="records in the embedded store's search benchmark (10000000; 0 skips it)",
    )
    log.add_argument(
        "--no-opensearch",
        dest="opensearch",
        action="store_false",
        help="leave out the real OpenSearch (delivery to it, and the search baseline)",
    )
    _bench_flags(log, "CPU to push from (default: the highest-numbered online CPU)")
    log.set_defaults(handler=_logging)

    trc = kinds.add_parser(
        "tracing",
        help="what tracing costs the loop, against the OpenTelemetry SDK",
        description="Run the reference task with tracing off and at 100 %% sampling, "
        "alternating, and compare its mean execution time; time the RT's span push against "
        "the OpenTelemetry Python SDK creating and ending spans, in the same run; time a "
        "span from export to retrievable in a local Jaeger, when `make jaeger` built one.",
    )
    trc.add_argument(
        "--rounds", type=int_in(1, 20), default=3, help="runs of each kind (default 3)"
    )
    trc.add_argument(
        "--cycles", type=int_in(500, 1_000_000), default=5000, help="cycles a run (5000)"
    )
    trc.add_argument(
        "--store-spans",
        type=int_in(1000, 10_000_000),
        default=1_000_000,
        help="spans in the trace store the look-ups run against (1000000)",
    )
    trc.add_argument(
        "--export-spans",
        type=int_in(1, 10_000),
        default=50,
        help="spans timed from export to retrievable in a local Jaeger (50)",
    )
    _bench_flags(trc, "CPU to run the loop on (default: the highest-numbered online CPU)")
    trc.set_defaults(handler=_tracing)

    rst = kinds.add_parser(
        "restart",
        help="restart gap: RT process killed -> first cycle of its replacement",
        description="Start a real agent, then SIGKILL its RT process --kills times and "
        "time each gap from the kill to the first cycle of the replacement running on "
        "the restored checkpoint. The baseline, measured in the same run, is a cold start "
        "of the RT process itself. Also times whole `rtctl status` and `rtctl --help` "
        "runs against a bare interpreter start and a bare `import grpc`.",
    )
    rst.add_argument(
        "--kills", type=int_in(1, 1000), default=20, help="RT processes to kill (default 20)"
    )
    rst.add_argument(
        "--period-us",
        type=int_in(50, 10_000_000, "us"),
        default=1000,
        help="RT cycle period (default 1000)",
    )
    _bench_flags(rst, "CPU for the RT process (default: the highest-numbered)")
    rst.set_defaults(handler=_restart)

    fo = kinds.add_parser(
        "failover",
        help="failover gap of a 3-node cluster: primary killed -> new primary actuating",
        description="Start three real nodes on loopback (agents and RT loops on this "
        "machine), run a long job, and kill the primary (agent and RT, SIGKILL) --kills "
        "times, restarting it each time; then hand over --planned times with `cluster "
        "failover`. Reports the gaps from the nodes' actuation journals, jobs lost, "
        "waypoints run twice, checkpoint replication lag, elections, and the primary's "
        "misses against one node alone. The same-run baseline is pysyncobj with its "
        "default configuration (3 bare processes, leader killed).",
    )
    fo.add_argument(
        "--kills", type=int_in(1, 1000), default=10, help="primaries to kill (default 10)"
    )
    fo.add_argument(
        "--planned", type=int_in(0, 1000), default=5, help="planned handovers (default 5)"
    )
    fo.add_argument(
        "--baseline-kills",
        type=int_in(1, 100),
        default=3,
        help="leader kills of the bare pysyncobj baseline (default 3; ~4 s each)",
    )
    fo.add_argument(
        "--misses-seconds",
        type=positive_seconds,
        default=20.0,
        help="window for the misses with and without replication (default 20)",
    )
    _bench_flags(fo, "CPU for the RT loops (default: the highest-numbered)")
    fo.set_defaults(handler=_failover)

    iso = kinds.add_parser(
        "isolation",
        help="wake-up jitter without and with CPU isolation, under load",
        description="Load every CPU with stress-ng, then run the RT loop on --cpu twice: "
        "once as it is, once with CPU isolation applied to the running process (its own "
        "cpuset; other tasks and IRQs moved to the remaining CPUs). Compares wake-up "
        "latency p50/p99/max/stddev, and times the isolation change and a NUMA page "
        "migration on the running loop. Needs root, a second CPU and a cpuset cgroup.",
    )
    iso.add_argument(
        "--cycles",
        type=int_in(100, MAX_BENCH_CYCLES),
        default=10_000,
        help="cycles measured on each side (default 10000)",
    )
    iso.add_argument(
        "--period-us",
        type=int_in(50, 10_000_000, "us"),
        default=1000,
        help="RT cycle period (default 1000)",
    )
    _bench_flags(iso, "the RT CPU (default: the highest-numbered)")
    iso.set_defaults(handler=_isolation)


def _measure(run: Callable[[Any], dict], opts: Any, render: Callable[[dict], str]) -> Report:
    from bench.runner import BenchError

    try:
        return run(opts), render
    except BenchError as e:
        raise ControlError(str(e)) from None


def _latency(args: argparse.Namespace) -> Report:
    from bench import latency

    if args.wake_mode == "hybrid" and args.spin_us >= args.period_us:
        raise UsageError(
            f"--spin-us {args.spin_us} must be below --period-us {args.period_us} "
            f"in hybrid wake mode"
        )
    opts = latency.LatencyOptions(
        cycles=args.cycles,
        period_us=args.period_us,
        cpu=args.cpu,
        priority=args.priority,
        wake_mode=args.wake_mode,
        spin_us=args.spin_us,
    )
    return _measure(latency.run, opts, latency.format_text)


def _restart(args: argparse.Namespace) -> Report:
    from bench import restart

    opts = restart.RestartOptions(kills=args.kills, cpu=args.cpu, period_us=args.period_us)
    return _measure(restart.run, opts, restart.format_text)


def _failover(args: argparse.Namespace) -> Report:
    from bench import failover

    opts = failover.FailoverOptions(
        kills=args.kills,
        planned=args.planned,
        cpu=args.cpu,
        baseline_kills=args.baseline_kills,
        misses_seconds=args.misses_seconds,
    )
    return _measure(failover.run, opts, failover.format_text)


def _isolation(args: argparse.Namespace) -> Report:
    from bench import isolation

    opts = isolation.IsolationOptions(cycles=args.cycles, period_us=args.period_us, cpu=args.cpu)
    return _measure(isolation.run, opts, isolation.format_text)


def _tracing(args: argparse.Namespace) -> Report:
    from bench import tracing

    opts = tracing.TracingOptions(
        cpu=args.cpu,
        rounds=args.rounds,
        cycles=args.cycles,
        store_spans=args.store_spans,
        export_spans=args.export_spans,
    )
    return _measure(tracing.run, opts, tracing.format_text)


def _logging(args: argparse.Namespace) -> Report:
    from bench import logging as bench_logging

    opts = bench_logging.LoggingOptions(
        count=args.count,
        cpu=args.cpu,
        delivery_s=args.delivery_seconds,
        sustain_s=args.sustain_seconds,
        search_records=args.search_records,
        opensearch=args.opensearch,
    )
    return _measure(bench_logging.run, opts, bench_logging.format_text)
