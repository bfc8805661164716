"""`rtctl`: the operator's command line.

This module builds the parser and dispatches; each command's work lives with
its subject (benchmarks in bench/, the agent in control/agent.py, RPCs in
control/client.py). A command handler returns a report dict and a function
that renders it as text; `--json` prints the dict instead (a handler that
streams, like `watch`, prints as it goes and returns None).
Every failure is one line on stderr: exit 2 for bad usage, 1 for a command
that could not do its job, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

from bench.runner import BenchError
from control import config
from control.api import JOB_STATES, LOG_LEVELS
from control.errors import ControlError, InvalidArgument
from rtcore import topology
from rtcore.main import MAX_PERIOD_US, MIN_PERIOD_US

if TYPE_CHECKING:
    from control.rpc.client import Client

# (report, render); the report is a dict, or a list for `job list`
Handler = Callable[[argparse.Namespace], tuple[Any, Callable[[Any], str]] | None]

MAX_BENCH_CYCLES = 1_000_000
MAX_PUSH_COUNT = 2_000_000
MAX_LIST_LIMIT = 1000
MAX_JOB_ID = 2**63 - 1


class UsageError(Exception):
    """Options that parse one by one but do not fit together."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # one line, not usage + error: scripts parse stderr and people read it
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Formatter(argparse.HelpFormatter):
    """Wraps paragraphs like the default, but keeps lines that start with two
    spaces (examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        paragraph: list[str] = []

        def flush() -> None:
            if paragraph:
                # no break after a hyphen: "--token-file" stays one word
                out.append(
                    textwrap.fill(
                        " ".join(paragraph),
                        width,
                        initial_indent=indent,
                        subsequent_indent=indent,
                        break_on_hyphens=False,
                    )
                )
                paragraph.clear()

        for line in text.splitlines():
            if line.startswith("  ") or not line.strip():
                flush()
                out.append(indent + line)
            else:
                paragraph.append(line.strip())
        flush()
        return "\n".join(out)


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


def _non_negative(text: str) -> int:
    return _int_in(0, 2**63 - 1)(text)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and 0 < value <= 3600):
        raise argparse.ArgumentTypeError(f"{text} is out of range: use more than 0, up to 3600")
    return value


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:  # also false for nan
        raise argparse.ArgumentTypeError(f"{text} is out of range: use 0..1")
    return value


def _cpu(text: str) -> int:
    cpu = _int_in(0, 4095)(text)
    try:
        topology.check_cpus([cpu])
    except topology.TopologyError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return cpu


def _bench_flags(parser: argparse.ArgumentParser, cpu_help: str) -> None:
    parser.add_argument("--cpu", type=_cpu, help=cpu_help)
    parser.add_argument("--json", action="store_true", help="print one JSON document")


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
    _bench_flags(lat, "CPU to measure on (default: the highest-numbered online CPU)")
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
    lat.set_defaults(handler=_bench_latency)

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
        type=_int_in(1, MAX_PUSH_COUNT),
        default=1_000_000,
        help="pushes to time, per record kind, and calls of each baseline (default 1000000)",
    )
    _bench_flags(log, "CPU to push from (default: the highest-numbered online CPU)")
    log.set_defaults(handler=_bench_logging)

    rst = kinds.add_parser(
        "restart",
        help="restart gap: RT process killed -> first cycle of its replacement",
        description="Start a real agent, then SIGKILL its RT process --kills times and "
        "time each gap from the kill to the first cycle of the replacement running on "
        "the restored checkpoint. The baseline, measured in the same run, is a cold start "
        "of the RT process itself.",
    )
    rst.add_argument(
        "--kills", type=_int_in(1, 1000), default=20, help="RT processes to kill (default 20)"
    )
    rst.add_argument(
        "--period-us",
        type=_int_in(50, 10_000_000, "us"),
        default=1000,
        help="RT cycle period (default 1000)",
    )
    _bench_flags(rst, "CPU for the RT process (default: the highest-numbered)")
    rst.set_defaults(handler=_bench_restart)

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
        type=_int_in(100, MAX_BENCH_CYCLES),
        default=10_000,
        help="cycles measured on each side (default 10000)",
    )
    iso.add_argument(
        "--period-us",
        type=_int_in(50, 10_000_000, "us"),
        default=1000,
        help="RT cycle period (default 1000)",
    )
    _bench_flags(iso, "the RT CPU (default: the highest-numbered)")
    iso.set_defaults(handler=_bench_isolation)


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


def _bench_restart(args: argparse.Namespace) -> tuple[dict, Callable[[dict], str]]:
    from bench import restart

    opts = restart.RestartOptions(kills=args.kills, cpu=args.cpu, period_us=args.period_us)
    return restart.run(opts), restart.format_text


def _bench_isolation(args: argparse.Namespace) -> tuple[dict, Callable[[dict], str]]:
    from bench import isolation

    opts = isolation.IsolationOptions(cycles=args.cycles, period_us=args.period_us, cpu=args.cpu)
    return isolation.run(opts), isolation.format_text


def _bench_logging(args: argparse.Namespace) -> tuple[dict, Callable[[dict], str]]:
    from bench import logging as bench_logging

    opts = bench_logging.LoggingOptions(count=args.count, cpu=args.cpu)
    return bench_logging.run(opts), bench_logging.format_text


# ---- commands that talk to an agent ----------------------------------------

DEFAULT_TARGET = config.DEFAULT_LISTEN
CONNECTION_HELP = f"""\
Connection: --target HOST:PORT (else $RTCTL_TARGET, else {DEFAULT_TARGET}). Commands
that change the node need the agent's token when it has one: --token-file FILE,
or the token itself in $RTCTL_TOKEN. For an agent serving TLS give --tls-ca
(and --tls-cert/--tls-key if it requires client certificates). $TRACEPARENT,
when set, is sent so the agent's work joins the caller's trace."""


def _connection_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection and output")
    g.add_argument(
        "--target",
        metavar="HOST:PORT",
        help=f"the agent's gRPC address (default: $RTCTL_TARGET, else {DEFAULT_TARGET})",
    )
    g.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    g.add_argument(
        "--token-file",
        metavar="FILE",
        help="file holding the agent's bearer token, needed by commands that change the "
        "node when the agent has one (default: the token in $RTCTL_TOKEN)",
    )
    g.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="CA certificate (PEM) that signed the agent's certificate; connects over TLS",
    )
    g.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="this client's certificate (PEM), for an agent that requires mutual TLS",
    )
    g.add_argument("--tls-key", metavar="FILE", help="the private key (PEM) of --tls-cert")
    g.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="give up when the agent has not answered after this long (default 5)",
    )
    return p


def _add_client_command(
    group: Any,
    name: str,
    handler: Handler,
    help: str,
    description: str,
    example: str,
    connection: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    cmd: argparse.ArgumentParser = group.add_parser(
        name,
        help=help,
        description=f"{description}\n\n{CONNECTION_HELP}",
        epilog=f"example:\n{example}",
        parents=[connection],
        formatter_class=_Formatter,
    )
    cmd.set_defaults(handler=handler)
    return cmd


RT_ACTION_HELP = {
    "start": "spawn the RT process (the agent restarts it if it dies)",
    "stop": "stop the RT process (SAFE first) and keep it stopped",
    "run": "follow the trajectory of the running job (actuate)",
    "hold": "hold the current position",
    "safe": "go to the safe state",
}


def _add_client_commands(commands: Any) -> None:
    conn = _connection_flags()

    _add_client_command(
        commands,
        "status",
        _status,
        "the node's role, RT loop, checkpoint and cluster state",
        "Show the node's status: its role, the RT loop (state, pid, cycles, deadline "
        "misses, restarts, period, wake-up latency), the newest checkpoint and the "
        "cluster (leader, term, quorum). --json prints the agent's whole status "
        "document, which holds more than the text shows.",
        "  rtctl status --target 10.0.0.5:7761 --json",
        conn,
    )

    rt = commands.add_parser(
        "rt",
        help="start, stop, change the mode or the placement of the RT loop",
        description="The RT loop: start, stop and modes (then the node's status is "
        "shown), and where it runs: CPUs, isolation, NUMA node.",
        formatter_class=_Formatter,
    )
    rts = rt.add_subparsers(dest="rt_command", metavar="COMMAND", required=True)
    for action, what in RT_ACTION_HELP.items():
        _add_client_command(
            rts, action, _rt, what, what[0].upper() + what[1:] + ".", f"  rtctl rt {action}", conn
        ).set_defaults(action=action)
    aff = _add_client_command(
        rts,
        "set-affinity",
        _rt_set_affinity,
        "move the running RT loop to other CPUs, optionally with exclusive use",
        "Pin the running RT loop to --cpus within 5 s, without restarting it. "
        "--isolate also gives it exclusive use of them: a cpuset of its own (cgroup v1 "
        "exclusive cpuset, or a cgroup v2 isolated partition), every other movable task "
        "and IRQ moved to the remaining CPUs. --no-isolate removes that and restores what "
        "was there before, other processes' affinities included. Kept across restarts "
        "of the agent and the RT process. A change that fails is rolled back whole.",
        "  rtctl rt set-affinity --cpus 3 --isolate",
        conn,
    )
    aff.add_argument("--cpus", required=True, metavar="LIST", help="CPUs, e.g. 3 or 2-3,6")
    iso = aff.add_mutually_exclusive_group()
    iso.add_argument(
        "--isolate",
        dest="isolate",
        action="store_true",
        default=None,
        help="exclusive use of the CPUs",
    )
    iso.add_argument(
        "--no-isolate",
        dest="isolate",
        action="store_false",
        help="no exclusive use (undo isolation)",
    )
    numa = _add_client_command(
        rts,
        "set-numa",
        _rt_set_numa,
        "move the running RT process's memory to another NUMA node",
        "Bind the running RT process to NUMA node --node: its pages are migrated "
        "(migrate_pages) and, unless --cpus were set, it runs on the node's CPUs. Kept "
        "across restarts.",
        "  rtctl rt set-numa --node 1",
        conn,
    )
    numa.add_argument(
        "--node", required=True, type=_int_in(0, 1023), metavar="N", help="the NUMA node"
    )
    journal = _add_client_command(
        rts,
        "journal",
        _rt_journal,
        "every interval the RT drove outputs, with its epoch",
        "The actuation journal: each interval this node's RT drove outputs (epoch, first "
        "and last cycle, wall-clock times, cycles), persisted by the agent across RT and "
        "agent restarts. An interval the RT could not close (killed while actuating) is "
        "closed from its last status, marked 'agent'.",
        "  rtctl rt journal --json\n  rtctl rt journal --limit 5",
        conn,
    )
    journal.add_argument(
        "--limit", type=_int_in(0, 1_000_000), default=0, metavar="N", help="newest N (0: all)"
    )
    placement = rts.add_parser(
        "isolation",
        help="the CPU, isolation and NUMA placement in force",
        description="CPU isolation and placement of the RT loop.",
        formatter_class=_Formatter,
    )
    placements = placement.add_subparsers(
        dest="isolation_command", metavar="COMMAND", required=True
    )
    _add_client_command(
        placements,
        "show",
        _rt_placement,
        "what is in force",
        "Show the CPUs the RT loop runs on, the isolation in force (cgroup version, "
        "cpusets, tasks and IRQs moved), the kernel's own isolation (isolcpus, "
        "nohz_full), the NUMA node and its local-access ratio.",
        "  rtctl rt isolation show --json",
        conn,
    )

    job = commands.add_parser(
        "job",
        help="submit, inspect, list and cancel trajectory jobs",
        description="Trajectory jobs: the agent queues them and the RT loop follows them "
        "one after the other.",
        formatter_class=_Formatter,
    )
    jobs = job.add_subparsers(dest="job_command", metavar="COMMAND", required=True)
    submit = _add_client_command(
        jobs,
        "submit",
        _job_submit,
        "queue a trajectory job from a JSON or CSV file",
        "Queue the trajectory in FILE. JSON: "
        '{"name": "...", "waypoints": [{"t": 0.5, "q": [0.1, 0.2]}, ...]}. CSV: one '
        'waypoint per line, "t,q0,q1,..."; an optional header line of those names; "#" '
        "starts a comment. t is seconds from the job's start (> 0, increasing), q one "
        "target per joint (1..8 joints, |q| <= 1000); 1..64 waypoints. The file is "
        "checked here first, so an error names its line.",
        "  rtctl job submit pick.csv --name pick-1",
        conn,
    )
    submit.add_argument("file", metavar="FILE", help="the job file (.json or .csv)")
    submit.add_argument("--name", help="job name (default: the file's 'name', else its base name)")
    get = _add_client_command(
        jobs,
        "get",
        _job_get,
        "one job's state and progress",
        "Show one job: its name, state (queued, running, done, failed, cancelled) and "
        "whatever else the agent records about it.",
        "  rtctl job get 12 --json",
        conn,
    )
    get.add_argument("id", type=_int_in(1, MAX_JOB_ID), metavar="ID", help="the job's id")
    lst = _add_client_command(
        jobs,
        "list",
        _job_list,
        "the jobs the agent knows",
        "List jobs, optionally only those in one state. --json prints them as one JSON array.",
        "  rtctl job list --state queued --limit 10",
        conn,
    )
    lst.add_argument("--state", choices=JOB_STATES, help="only jobs in this state")
    lst.add_argument(
        "--limit",
        type=_int_in(1, MAX_LIST_LIMIT),
        help=f"at most this many jobs, 1..{MAX_LIST_LIMIT} (default: the agent's, 100)",
    )
    cancel = _add_client_command(
        jobs,
        "cancel",
        _job_cancel,
        "cancel a queued or running job",
        "Cancel a job: a queued one never runs; a running one stops where it is and "
        "the loop holds position.",
        "  rtctl job cancel 12",
        conn,
    )
    cancel.add_argument("id", type=_int_in(1, MAX_JOB_ID), metavar="ID", help="the job's id")

    ckpt = commands.add_parser(
        "checkpoint",
        help="the RT state checkpoints the node keeps",
        description="Checkpoints: snapshots of the RT task's state that a restarted or "
        "promoted RT loop resumes from.",
        formatter_class=_Formatter,
    )
    ckpts = ckpt.add_subparsers(dest="checkpoint_command", metavar="COMMAND", required=True)
    _add_client_command(
        ckpts,
        "info",
        _checkpoint_info,
        "newest checkpoint in shared memory and on disk, and the files kept",
        "Show the newest checkpoint the RT loop wrote to shared memory, the newest one "
        "saved to disk, and the checkpoint files the agent keeps.",
        "  rtctl checkpoint info --json",
        conn,
    )

    log = commands.add_parser(
        "log-level",
        help="show or change the RT and agent log levels at runtime",
        description="Log levels, changed at runtime without a restart. Levels: "
        f"{', '.join(LOG_LEVELS)}.",
        formatter_class=_Formatter,
    )
    logs = log.add_subparsers(dest="log_command", metavar="COMMAND", required=True)
    _add_client_command(
        logs,
        "get",
        _log_level_get,
        "the current levels",
        "Show the log level of the RT loop and of the agent.",
        "  rtctl log-level get",
        conn,
    )
    log_set = _add_client_command(
        logs,
        "set",
        _log_level_set,
        "change the level",
        "Change the log level of the RT loop, the agent, or both. Records below the "
        "level are dropped where they are made (on the RT side: never pushed).",
        "  rtctl log-level set debug --scope rt",
        conn,
    )
    log_set.add_argument(
        "level",
        type=str.upper,
        choices=LOG_LEVELS,
        metavar="LEVEL",
        help=f"{', '.join(LOG_LEVELS)} (any case)",
    )
    # not --target: every client command's --target is the agent's address
    log_set.add_argument(
        "--scope",
        choices=("rt", "agent", "all"),
        default="all",
        help="whose level: the RT loop, the agent, or all (default)",
    )

    trace = commands.add_parser(
        "trace-sampling",
        help="show or change trace sampling at runtime",
        description="Trace sampling: how often the RT loop records a cycle span, and "
        "which share of traces the agent keeps and exports.",
        formatter_class=_Formatter,
    )
    traces = trace.add_subparsers(dest="trace_command", metavar="COMMAND", required=True)
    _add_client_command(
        traces,
        "get",
        _trace_get,
        "the current sampling",
        "Show the RT span sampling (every N cycles, 0 = off) and the agent's ratio.",
        "  rtctl trace-sampling get --json",
        conn,
    )
    trace_set = _add_client_command(
        traces,
        "set",
        _trace_set,
        "change the sampling",
        "Change the RT span sampling, the agent's sampling ratio, or both; a setting "
        "not given stays as it is.",
        "  rtctl trace-sampling set --rt-every 100 --ratio 0.1",
        conn,
    )
    trace_set.add_argument(
        "--rt-every",
        type=_non_negative,
        metavar="N",
        help="record one RT cycle span every N cycles; 0 turns RT spans off "
        "(the agent accepts up to 1000000)",
    )
    trace_set.add_argument(
        "--ratio", type=_ratio, metavar="R", help="share of traces the agent keeps, 0..1"
    )

    watch = _add_client_command(
        commands,
        "watch",
        _watch,
        "follow the node's events and alerts as they happen",
        "Print the node's events and alerts (RT state changes, deadline misses, job "
        "progress, failovers, ...) as they happen, until --count events or Ctrl-C. "
        "Text: one line per event. --json: each event is one JSON document on its own "
        "line (JSON Lines), printed as it arrives. --timeout bounds opening the stream.",
        "  rtctl watch --kind deadline_miss --kind rt_state --count 10",
        conn,
    )
    watch.add_argument(
        "--kind",
        action="append",
        metavar="KIND",
        help="only events of this kind; repeat for several (default: every kind)",
    )
    watch.add_argument("--count", type=_int_in(1, 2**31), metavar="N", help="stop after N events")


def _add_agent(commands: Any) -> None:
    agent = commands.add_parser(
        "agent",
        help="run a node: the agent and its RT loop, in the foreground",
        description="Run this node's agent in the foreground until SIGTERM or Ctrl-C: it "
        "starts and supervises the RT process, serves gRPC for rtctl, keeps "
        "checkpoints, runs jobs, and exports logs, traces and metrics. Without --raft "
        "and --peer it runs as a single node. Settings come from the defaults, then "
        "--config FILE (TOML, the same names with '_'), then these flags.",
        epilog="examples:\n"
        "  rtctl agent --node-id n1 --cpus 3 --period-us 1000\n"
        "  rtctl agent --node-id n1 --raft 10.0.0.1:7771 --peer 10.0.0.2:7771 "
        "--peer 10.0.0.3:7771",
        formatter_class=_Formatter,
    )
    config.add_arguments(agent)


def _connect(args: argparse.Namespace) -> Client:
    from control.rpc.client import Client

    env_target = os.environ.get("RTCTL_TARGET")
    target = args.target or env_target or DEFAULT_TARGET
    try:
        config.check_hostport("target", target)
    except InvalidArgument:
        where = "--target" if args.target else "RTCTL_TARGET"
        raise UsageError(f"{where} {target!r} is not HOST:PORT (e.g. 127.0.0.1:7761)") from None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    return Client(
        target,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        token=_token(args),
        timeout=args.timeout,
        traceparent=os.environ.get("TRACEPARENT") or None,
    )


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()
        if not token:
            raise UsageError(f"--token-file {args.token_file} is empty")
        return token
    return os.environ.get("RTCTL_TOKEN", "").strip() or None


Report = tuple[Any, Callable[[Any], str]]


def _status(args: argparse.Namespace) -> Report:
    with _connect(args) as client:
        return client.status(), _render_status


def _rt(args: argparse.Namespace) -> Report:
    with _connect(args) as client:
        doc = client.rt_action(args.action)
    return doc, lambda d: f"rt {args.action}: requested\n{_render_status(d)}"


def _rt_set_affinity(args: argparse.Namespace) -> Report:
    with _connect(args) as client:
        return client.set_affinity(args.cpus, args.isolate), _render_placement


def _rt_set_numa(args: argparse.Namespace) -> Report:
    with _connect(args) as client:
        return client.set_numa_node(args.node), _render_placement


def _rt_journal(args: argparse.Namespace) -> Report:
    with _connect(args) as client:
        return client.journal(args.limit), _render_journal


def _render_journal(doc: dict) -> str:
    rows = [f"actuation journal of {doc.get('node_id')}:"]
    for i in doc.get("intervals") or []:
        start = _wall(i["start_time_ns"]) if i.get("start_time_ns") else "?"
        if i.get("end_cycle") is None:
            rows.append(f"  epoch {i['epoch']}: cycle {i['start_cycle']} ({start}) .. open")
            continue
        end = _wall(i["end_time_ns"])
        by = " (closed by agent)" if i.get("closed_by") == "agent" else ""
        rows.append(
            f"  epoch {i['epoch']}: cycles {i['start_cycle']}..{i['end_cycle']} "
            f"({i['cycles']} actuated), {start} .. {end}{by}"
        )
    if len(rows) == 1:
        rows.append("  (no actuation recorded)")
    return "\n".join(rows)


def _wall(ns: int) -> str:
    import datetime

    when = datetime.datetime.fromtimestamp(ns / 1e9, tz=datetime.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _rt_placement(args: argparse.Namespace) -> Report:
    with _connect(args) as client:
        return client.placement(), _render_placement


def _render_placement(doc: dict) -> str:
    iso = doc.get("isolation") or {}
    numa = doc.get("numa") or {}
    kernel = doc.get("kernel_isolation") or {}
    rows = [
        ("CPUs", doc.get("cpus") or "all"),
        ("isolated", "yes" if doc.get("isolated") else "no"),
        ("cgroup", iso.get("version") or "-"),
        ("housekeeping CPUs", ",".join(map(str, iso.get("housekeeping") or [])) or "-"),
        ("kernel isolcpus", ",".join(map(str, kernel.get("isolcpus") or [])) or "none"),
        ("kernel nohz_full", ",".join(map(str, kernel.get("nohz_full") or [])) or "none"),
        ("NUMA node", doc.get("numa_node") if doc.get("numa_node", -1) >= 0 else "unbound"),
        ("local pages", f"{numa['local_pages_pct']}%" if "local_pages_pct" in numa else "-"),
    ]
    if "elapsed_ms" in doc:
        rows.append(("applied in", f"{doc['elapsed_ms']} ms"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _job_submit(args: argparse.Namespace) -> Report:
    from control.jobs.trajectory import parse_job_file

    name, waypoints = parse_job_file(args.file)
    with _connect(args) as client:
        job = client.submit_job(args.name or name, waypoints)
    return job, lambda j: f"job {j.get('id')} {j.get('state', 'submitted')}: {j.get('name')}"


def _job_get(args: argparse.Namespace) -> Report:
    with _connect(args) as client:
        return client.get_job(args.id), _render_doc


def _job_list(args: argparse.Namespace) -> Report:
    with _connect(args) as client:
        return client.list_jobs(args.state, args.limit), _render_jobs


def _job_cancel(args: argparse.Namespace) -> Report:
    with _connect(args) as client:
        job = client.cancel_job(args.id)
    return job, lambda j: f"job {j.get('id')} {j.get('state')}: {j.get('name')}"


def _checkpoint_info(args: argparse.Namespace) -> Report:
    with _connect(args) as client:
        return client.checkpoint_info(), _render_doc


def _log_level_get(args: argparse.Namespace) -> Report:
    with _connect(args) as client:
        return client.get_log_level(), _render_doc


def _log_level_set(args: argparse.Namespace) -> Report:
    with _connect(args) as client:
        return client.set_log_level(args.level, args.scope), _render_doc


def _trace_get(args: argparse.Namespace) -> Report:
    with _connect(args) as client:
        return client.get_trace_sampling(), _render_sampling


def _trace_set(args: argparse.Namespace) -> Report:
    if args.rt_every is None and args.ratio is None:
        raise UsageError("give --rt-every, --ratio or both")
    with _connect(args) as client:
        return client.set_trace_sampling(args.rt_every, args.ratio), _render_sampling


def _watch(args: argparse.Namespace) -> None:
    with _connect(args) as client, client.watch(args.kind) as events:
        for n, event in enumerate(events, start=1):
            print(json.dumps(event) if args.json else _render_event(event), flush=True)
            if args.count is not None and n >= args.count:
                return
    raise ControlError(f"the agent at {client.target} ended the event stream (shutting down?)")


# ---- text renderings -----------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _render_status(doc: dict) -> str:
    rt = doc.get("rt") or {}
    lat = rt.get("latency_us") or {}
    ckpt = doc.get("checkpoint") or {}
    cluster = doc.get("cluster") or {}
    rows = [
        ("node", f"{_fmt(doc.get('node_id'))} ({_fmt(doc.get('role'))})"),
        (
            "rt",
            f"{_fmt(rt.get('state'))}  pid {_fmt(rt.get('pid'))}  "
            f"period {_fmt(rt.get('period_us'))} us  restarts {_fmt(rt.get('restarts'))}",
        ),
        ("cycles", f"{_fmt(rt.get('cycles'))}  misses {_fmt(rt.get('misses'))}"),
        (
            "latency",
            f"p50 {_fmt(lat.get('p50'))} us  p99 {_fmt(lat.get('p99'))} us  "
            f"max {_fmt(lat.get('max'))} us",
        ),
        ("checkpoint", f"seq {_fmt(ckpt.get('seq'))}  age {_fmt(ckpt.get('age_ms'))} ms"),
        (
            "cluster",
            f"leader {_fmt(cluster.get('leader'))}  term {_fmt(cluster.get('term'))}  "
            f"quorum {_fmt(cluster.get('has_quorum'))}",
        ),
    ]
    return "\n".join(f"{k:<11} {v}" for k, v in rows)


def _render_doc(doc: dict, indent: int = 0) -> str:
    pad = "  " * indent
    lines = []
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            lines.append(_render_doc(value, indent + 1))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key}:")
            for item in value:
                fields = "  ".join(f"{k} {_fmt(v)}" for k, v in item.items())
                lines.append(f"{pad}  - {fields}")
        else:
            lines.append(f"{pad}{key}: {_fmt(value)}")
    return "\n".join(lines)


def _render_jobs(jobs: list[dict]) -> str:
    if not jobs:
        return "no jobs"
    rows = [("ID", "STATE", "NAME")]
    rows += [(_fmt(j.get("id")), _fmt(j.get("state")), _fmt(j.get("name"))) for j in jobs]
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"{r[0]:>{width[0]}}  {r[1]:<{width[1]}}  {r[2]}" for r in rows)


def _render_sampling(doc: dict) -> str:
    every = doc.get("rt_every_cycles")
    rt = "off" if every == 0 else f"one cycle span every {_fmt(every)} cycles"
    return f"rt     {rt}\nagent  ratio {_fmt(doc.get('ratio'))}"


def _render_event(event: dict) -> str:
    ts = event.get("ts_ns") or 0
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts / 1e9))
    when += f".{ts // 1_000_000 % 1000:03d}"
    fields = " ".join(f"{k}={_fmt(v)}" for k, v in (event.get("fields") or {}).items())
    trace = f" trace={event['trace_id']}" if event.get("trace_id") else ""
    text = f"{when} {event.get('level', ''):<8} {event.get('kind', '')}: {event.get('message', '')}"
    return f"{text}  {fields}{trace}".rstrip()


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="rtctl",
        description="Operate rtcore, the runtime for hard-real-time control loops. "
        "`rtctl agent` runs a node; the other commands talk to a running agent over "
        "gRPC, except `bench`, which measures this machine. `rtctl COMMAND --help` "
        "describes each command.",
        epilog="environment:\n"
        f"  RTCTL_TARGET  the agent's HOST:PORT when --target is not given "
        f"(default {DEFAULT_TARGET})\n"
        "  RTCTL_TOKEN   the bearer token when --token-file is not given\n"
        "  TRACEPARENT   W3C trace context sent with every call\n"
        "examples:\n"
        "  rtctl agent --node-id n1 --cpus 3\n"
        "  rtctl status\n"
        "  rtctl job submit pick.csv && rtctl rt run\n"
        "  rtctl watch --json",
        formatter_class=_Formatter,
    )
    commands = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_agent(commands)
    _add_client_commands(commands)
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


def _run_agent(args: argparse.Namespace) -> int:
    try:
        from control.node import agent
    except ImportError as e:
        return _fail(f"cannot start the agent: {e}", 1)
    return agent.main(args)


def _silence_stdout() -> None:
    """The reader went away (`rtctl watch | head`): drop what is still buffered."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        # --help and usage errors end here; callers of main() get the code back
        return e.code if isinstance(e.code, int) else 2
    if args.command == "agent":
        return _run_agent(args)
    handler: Handler = args.handler
    try:
        with _sigterm_as_interrupt():
            done = handler(args)
    except UsageError as e:
        return _fail(str(e), 2)
    except (BenchError, ControlError) as e:
        return _fail(str(e), 1)
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except OSError as e:
        return _fail(f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}", 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as e:  # a bug still reaches the user as one line, never a traceback
        return _fail(f"internal error ({type(e).__name__}: {e})", 1)
    if done is None:
        return 0
    report, render = done
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return 0
