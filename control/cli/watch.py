"""`rtctl watch`: the node's events and alerts as they happen."""

from __future__ import annotations

import argparse
import time
from typing import Any

from control.cli.common import add_client_command, connect, fmt, int_in, print_events

NAME = "watch"
HELP = "follow the node's events and alerts as they happen"


def add(commands: Any) -> None:
    watch = add_client_command(
        commands,
        NAME,
        _watch,
        HELP,
        "Print the node's events and alerts (RT state changes, deadline misses, job "
        "progress, failovers, ...) as they happen, until --count events or Ctrl-C. "
        "Text: one line per event. --json: each event is one JSON document on its own "
        "line (JSON Lines), printed as it arrives. --timeout bounds opening the stream.",
        "  rtctl watch --kind deadline_miss --kind rt_state --count 10",
    )
    watch.add_argument(
        "--kind",
        action="append",
        metavar="KIND",
        help="only events of this kind; repeat for several (default: every kind)",
    )
    watch.add_argument("--count", type=int_in(1, 2**31), metavar="N", help="stop after N events")


def _watch(args: argparse.Namespace) -> None:
    """Prints as events arrive, so returns no report."""
    with connect(args) as client:
        print_events(client, args.kind, args.count, args.json, _render_event)


def _render_event(event: dict) -> str:
    ts = event.get("ts_ns") or 0
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts / 1e9))
    when += f".{ts // 1_000_000 % 1000:03d}"
    fields = " ".join(f"{k}={fmt(v)}" for k, v in (event.get("fields") or {}).items())
    trace = f" trace={event['trace_id']}" if event.get("trace_id") else ""
    text = f"{when} {event.get('level', ''):<8} {event.get('kind', '')}: {event.get('message', '')}"
    return f"{text}  {fields}{trace}".rstrip()
