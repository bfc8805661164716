"""`rtctl`: the operator's command line.

This module builds the parser and dispatches; each command's work lives with
its subject (benchmarks in bench/). A command handler returns a report dict
and a function that renders it as text; `--json` prints the dict instead.
Every failure is one line on stderr: exit 2 for bad usage, 1 for a command
that could not do its job, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from bench.runner import BenchError
from rtcore import layout, topology
from rtcore.main import MAX_PERIOD_US, MIN_PERIOD_US

Handler = Callable[[argparse.Namespace], tuple[dict, Callable[[dict], str]]]

MAX_BENCH_CYCLES = 1_000_000
MAX_PUSH_COUNT = 2_000_000


class UsageError(Exception):
    """Options that parse one by one but do not fit together."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # one line, not usage + error: scripts parse stderr and people read it
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_in(lo: int, hi: int, unit: str = "") -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range: use {lo}..{hi}{unit}")
        return value

    return parse


def _cpu(text: str) -> int:
    cpu = _int_in(0, 4095)(text)
    try:
        topology.check_cpus([cpu])
    except topology.TopologyError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return cpu


def _add_bench(commands: Any) -> None:
    bench = commands.add_parser(
        "bench",
        help="measure the runtime against same-run baselines",
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
        type=_int_in(1, MAX_BENCH_CYCLES),
        default=10_000,
        help="cycles to measure, for each side (default 10000)",
    )
    lat.add_argument(
        "--period-us",
        type=_int_in(MIN_PERIOD_US, MAX_PERIOD_US, " microseconds"),
        default=1000,
        help="cycle period in microseconds (default 1000)",
    )
    lat.add_argument(
        "--cpu", type=_cpu, help="CPU to measure on (default: the highest-numbered online CPU)"
    )
    lat.add_argument(
        "--priority", type=_int_in(1, 99), default=80, help="SCHED_FIFO priority (default 80)"
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
        type=_int_in(1, MAX_PERIOD_US - 1, " microseconds"),
        default=50,
        help="spin window of the hybrid wake mode, below the period (default 50)",
    )
    lat.add_argument("--json", action="store_true", help="print one JSON document")
    lat.set_defaults(handler=_bench_latency)

    log = kinds.add_parser(
        "logging",
        help="cost of one log or span push on the RT path",
        description="Time single pushes of the RT loop's own log and span records "
        "(rdtscp, timer overhead subtracted) in a child process pinned to one CPU at "
        "SCHED_FIFO while a reader on another CPU drains the ring; compare with "
        "Python's deque.append timed in the same run, and estimate the cost per cycle "
        "against the loop's execution time from a plain 5-second RT run.",
    )
    log.add_argument(
        "--count",
        type=_int_in(1, MAX_PUSH_COUNT),
        default=200_000,
        help="pushes to time, per record kind (default 200000)",
    )
    log.add_argument(
        "--batch",
        type=_int_in(1, layout.SPAN_RING_CAP // 2),
        default=16,
        help="pushes between two ring drains, a cycle's worth (default 16)",
    )
    log.add_argument(
        "--cpu", type=_cpu, help="CPU to push from (default: the highest-numbered online CPU)"
    )
    log.add_argument("--json", action="store_true", help="print one JSON document")
    log.set_defaults(handler=_bench_logging)


def _bench_latency(args: argparse.Namespace) -> tuple[dict, Callable[[dict], str]]:
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
    return latency.run(opts), latency.format_text


def _bench_logging(args: argparse.Namespace) -> tuple[dict, Callable[[dict], str]]:
    from bench import logging as bench_logging

    opts = bench_logging.LoggingOptions(count=args.count, batch=args.batch, cpu=args.cpu)
    return bench_logging.run(opts), bench_logging.format_text


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="rtctl",
        description="Operate rtcore, the runtime for hard-real-time control loops.",
    )
    commands = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_bench(commands)
    return p


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM unwind like Ctrl-C, so measured children are killed and
    shared memory is removed on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _fail(message: str, code: int) -> int:
    print(f"rtctl: error: {message}", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        # --help and usage errors end here; callers of main() get the code back
        return e.code if isinstance(e.code, int) else 2
    handler: Handler = args.handler
    try:
        with _sigterm_as_interrupt():
            report, render = handler(args)
    except UsageError as e:
        return _fail(str(e), 2)
    except BenchError as e:
        return _fail(str(e), 1)
    except OSError as e:
        return _fail(f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}", 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as e:  # a bug still reaches the user as one line, never a traceback
        return _fail(f"internal error ({type(e).__name__}: {e})", 1)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
