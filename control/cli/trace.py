"""`rtctl trace-sampling`: how much the RT loop and the agent trace."""

from __future__ import annotations

import argparse
from typing import Any

from control.cli.common import (
    Formatter,
    Report,
    UsageError,
    add_client_command,
    connect,
    fmt,
    non_negative,
    ratio,
)

NAME = "trace-sampling"
HELP = "show or change trace sampling at runtime"


def add(commands: Any) -> None:
    trace = commands.add_parser(
        NAME,
        help=HELP,
        description="Trace sampling: how often the RT loop records a cycle span, and "
        "which share of traces the agent keeps and exports.",
        formatter_class=Formatter,
    )
    traces = trace.add_subparsers(dest="trace_command", metavar="COMMAND", required=True)
    add_client_command(
        traces,
        "get",
        _get,
        "the current sampling",
        "Show the RT span sampling (every N cycles, 0 = off) and the agent's ratio.",
        "  rtctl trace-sampling get --json",
    )
    trace_set = add_client_command(
        traces,
        "set",
        _set,
        "change the sampling",
        "Change the RT span sampling, the agent's sampling ratio, or both; a setting "
        "not given stays as it is.",
        "  rtctl trace-sampling set --rt-every 100 --ratio 0.1",
    )
    trace_set.add_argument(
        "--rt-every",
        type=non_negative,
        metavar="N",
        help="record one RT cycle span every N cycles; 0 turns RT spans off "
        "(the agent accepts up to 1000000)",
    )
    trace_set.add_argument(
        "--ratio", type=ratio, metavar="R", help="share of traces the agent keeps, 0..1"
    )


def _get(args: argparse.Namespace) -> Report:
    with connect(args) as client:
        return client.get_trace_sampling(), _render_sampling


def _set(args: argparse.Namespace) -> Report:
    if args.rt_every is None and args.ratio is None:
        raise UsageError("give --rt-every, --ratio or both")
    with connect(args) as client:
        return client.set_trace_sampling(args.rt_every, args.ratio), _render_sampling


def _render_sampling(doc: dict) -> str:
    every = doc.get("rt_every_cycles")
    rt = "off" if every == 0 else f"one cycle span every {fmt(every)} cycles"
    return f"rt     {rt}\nagent  ratio {fmt(doc.get('ratio'))}"
