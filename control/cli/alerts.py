"""`rtctl alerts`: the node's bottleneck alerts, listed or followed."""

from __future__ import annotations

import argparse
import time
from typing import Any

from control.cli.common import (
    Formatter,
    Report,
    add_client_command,
    connect,
    fmt,
    int_in,
    print_events,
)

NAME = "alerts"
HELP = "list or follow the node's alerts (bottlenecks)"
KINDS = ("alert_raised", "alert_cleared")


def add(commands: Any) -> None:
    alerts = commands.add_parser(
        NAME,
        help=HELP,
        description="Alerts the agent raises when a span name becomes a bottleneck (its "
        "mean or p99 duration over the window crosses its threshold) and clears once it "
        "has stayed well under it for a whole window.",
        formatter_class=Formatter,
    )
    cmds = alerts.add_subparsers(dest="alerts_command", metavar="COMMAND", required=True)
    listing = add_client_command(
        cmds,
        "list",
        _list,
        "the active alerts (--all: also those cleared)",
        "List the active alerts, newest first: the span name, its mean and p99 duration "
        "and span count when raised, the threshold it crossed, and the slowest traces "
        "(`rtctl trace get ID` shows one). --all adds the alerts that have cleared.",
        "  rtctl alerts list --all --json",
    )
    listing.add_argument("--all", action="store_true", help="also the alerts that have cleared")
    watch = add_client_command(
        cmds,
        "watch",
        _watch,
        "follow alerts as they are raised and cleared",
        "Print each alert as it is raised or cleared, until --count alerts or Ctrl-C. "
        "Text: one line per alert. --json: each is one JSON document on its own line "
        "(JSON Lines), printed as it arrives. --timeout bounds opening the stream.",
        "  rtctl alerts watch --count 1 --json",
    )
    watch.add_argument("--count", type=int_in(1, 2**31), metavar="N", help="stop after N alerts")


def _list(args: argparse.Namespace) -> Report:
    with connect(args) as client:
        doc = client.list_alerts(all=args.all)
    return doc, render_alerts if args.all else _render_active


def _watch(args: argparse.Namespace) -> None:
    """Prints as alerts arrive, so returns no report."""
    with connect(args) as client:
        print_events(client, list(KINDS), args.count, args.json, render_event)


def _when(ns: int | None) -> str:
    if not ns:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))


def _render_active(doc: dict) -> str:
    return render_alerts(doc) if doc.get("alerts") else "no active alerts"


def render_alerts(doc: dict) -> str:
    alerts = doc.get("alerts") or []
    if not alerts:
        return "no alerts"
    rows = [
        ("ID", "STATE", "SUBJECT", "MEAN ms", "P99 ms", "SPANS", "LIMIT ms", "SINCE", "SLOWEST")
    ]
    for a in alerts:
        figures, limits = a.get("figures") or {}, a.get("threshold") or {}
        limit = " ".join(f"{k.split('_')[0]}<{fmt(v)}" for k, v in limits.items() if v is not None)
        examples = a.get("example_trace_ids") or []
        rows.append(
            (
                fmt(a.get("id")),
                "active" if a.get("active") else "cleared",
                fmt(a.get("subject")),
                fmt(figures.get("mean_ms")),
                fmt(figures.get("p99_ms")),
                fmt(figures.get("count")),
                limit or "-",
                _when(a.get("raised_at") if a.get("active") else a.get("cleared_at")),
                examples[0] if examples else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows
    )


def render_event(event: dict) -> str:
    what = "RAISED " if event.get("kind") == "alert_raised" else "CLEARED"
    trace = f"  trace={event['trace_id']}" if event.get("trace_id") else ""
    return f"{_when(event.get('ts_ns'))} {what} {event.get('message', '')}{trace}"
