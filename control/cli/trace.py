"""`rtctl trace`: traces from the node's trace store, and trace sampling.

`rtctl trace-sampling get|set` is the older spelling of `rtctl trace sampling`,
kept for scripts that use it.
"""

from __future__ import annotations

import argparse
import datetime
import math
from typing import Any

from control.cli.common import (
    Formatter,
    Report,
    UsageError,
    add_client_command,
    connect,
    fmt,
    int_in,
    non_negative,
    ratio,
    since_ns,
)

NAME = "trace"
ALIASES = ("trace-sampling",)
HELP = "look up traces, list recent ones, show or change trace sampling"
BAR_WIDTH = 40
NAME_WIDTH = 48  # a deeper or longer span name is cut to keep the bars in one column


def add(commands: Any) -> None:
    _add_trace(commands)
    _add_legacy(commands)


def _add_trace(commands: Any) -> None:
    trace = commands.add_parser(
        NAME,
        help=HELP,
        description="Traces the agent keeps in its embedded trace store (RT and agent "
        "spans of one node), and how much the RT loop and the agent trace.",
        formatter_class=Formatter,
    )
    cmds = trace.add_subparsers(dest="trace_command", metavar="COMMAND", required=True)
    get = add_client_command(
        cmds,
        "get",
        _get,
        "one trace as a waterfall",
        "Show every span of a trace, one line each: indented under its parent, a bar "
        "placed and scaled on the trace's whole duration, the span's duration, its "
        "status (errors marked with !), node and process. --json: the spans as stored.",
        "  rtctl trace get 4bf92f3577b34da6a3ce929d0e0e4736",
    )
    get.add_argument("trace_id", metavar="TRACE_ID", help="the trace id: 32 hex digits")
    listing = add_client_command(
        cmds,
        "list",
        _list,
        "recent traces, newest first",
        "List the traces in the store, newest first: start, duration, span count, "
        "errors, root span name, nodes and trace id. The filters combine.",
        "  rtctl trace list --slow-ms 2 --since 10m --errors",
    )
    listing.add_argument(
        "--slow-ms", type=_slow_ms, default=0.0, metavar="MS", help="only traces lasting >= MS"
    )
    listing.add_argument(
        "--since",
        type=since_ns,
        default=0,
        metavar="WHEN",
        help="only traces that started since WHEN: an age (30s, 10m, 2h, 1d) or an ISO "
        "time (2026-05-01T12:00:00, local time unless it has a zone)",
    )
    listing.add_argument("--name", default="", metavar="NAME", help="only traces with a span NAME")
    listing.add_argument("--errors", action="store_true", help="only traces with an error span")
    listing.add_argument(
        "--limit",
        type=int_in(1, 1000),
        default=None,
        metavar="N",
        help="at most N traces, 1..1000 (default: the agent's, 50)",
    )
    sampling = add_client_command(
        cmds,
        "sampling",
        _sampling,
        "show or change the sampling ratio",
        "Without RATIO: show the sampling. With RATIO: keep that share of traces, in "
        "the RT loop and in the agent.",
        "  rtctl trace sampling 0.1",
    )
    sampling.add_argument(
        "ratio", type=ratio, nargs="?", metavar="RATIO", help="share of traces kept, 0..1"
    )


def _add_legacy(commands: Any) -> None:
    legacy = commands.add_parser(
        ALIASES[0],
        help="the older form of `rtctl trace sampling`",
        description="Trace sampling: how often the RT loop records a cycle span, and "
        "which share of traces the agent keeps and exports. `rtctl trace sampling` "
        "is the newer form.",
        formatter_class=Formatter,
    )
    cmds = legacy.add_subparsers(dest="trace_command", metavar="COMMAND", required=True)
    add_client_command(
        cmds,
        "get",
        _get_sampling,
        "the current sampling",
        "Show the RT span sampling (every N cycles, 0 = off) and the agent's ratio.",
        "  rtctl trace-sampling get --json",
    )
    legacy_set = add_client_command(
        cmds,
        "set",
        _set_sampling,
        "change the sampling",
        "Change the RT span sampling, the agent's sampling ratio, or both; a setting "
        "not given stays as it is.",
        "  rtctl trace-sampling set --rt-every 100 --ratio 0.1",
    )
    legacy_set.add_argument(
        "--rt-every",
        type=non_negative,
        metavar="N",
        help="record one RT cycle span every N cycles; 0 turns RT spans off "
        "(the agent accepts up to 1000000)",
    )
    legacy_set.add_argument(
        "--ratio", type=ratio, metavar="R", help="share of traces the agent keeps, 0..1"
    )


# ---- argument types ---------------------------------------------------------------


def _slow_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of milliseconds") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text} is out of range: use 0 or more")
    return value


# ---- handlers ---------------------------------------------------------------------


def _get(args: argparse.Namespace) -> Report:
    with connect(args) as client:
        return client.get_trace(args.trace_id), render_waterfall


def _list(args: argparse.Namespace) -> Report:
    with connect(args) as client:
        doc = client.list_traces(
            slow_ms=args.slow_ms,
            since_ns=args.since,
            name=args.name,
            errors=args.errors,
            limit=args.limit or 0,
        )
    return doc, render_traces


def _sampling(args: argparse.Namespace) -> Report:
    with connect(args) as client:
        if args.ratio is None:
            return client.get_trace_sampling(), _render_sampling
        return client.set_trace_sampling(ratio=args.ratio), _render_sampling


def _get_sampling(args: argparse.Namespace) -> Report:
    with connect(args) as client:
        return client.get_trace_sampling(), _render_sampling


def _set_sampling(args: argparse.Namespace) -> Report:
    if args.rt_every is None and args.ratio is None:
        raise UsageError("give --rt-every, --ratio or both")
    with connect(args) as client:
        return client.set_trace_sampling(args.rt_every, args.ratio), _render_sampling


# ---- renderings -------------------------------------------------------------------


def render_waterfall(doc: dict) -> str:
    spans = doc.get("spans") or []
    if not spans:
        return f"trace {doc.get('trace_id')}: no spans"
    t0 = min(s["start_time_ns"] for s in spans)
    t1 = max(s["end_time_ns"] for s in spans)
    total = max(t1 - t0, 1)
    nodes = sorted({str(s.get("node")) for s in spans if s.get("node")})
    errors = sum(1 for s in spans if s.get("status") == "error")
    head = (
        f"trace {doc.get('trace_id')}  {len(spans)} spans  {duration(total)}"
        f"  {_wall(t0)}  nodes {','.join(nodes) or '-'}"
        + (f"  {errors} error{'s' if errors > 1 else ''}" if errors else "")
    )
    ordered = _tree_order(spans)
    labels = [("  " * depth + str(s.get("name")))[:NAME_WIDTH] for s, depth in ordered]
    width = max(len(label) for label in labels)
    lines = [head]
    for (s, _), label in zip(ordered, labels, strict=True):
        bar = _bar(s["start_time_ns"] - t0, s["end_time_ns"] - t0, total)
        status = str(s.get("status") or "unset")
        mark = f"{status.upper()}!" if status == "error" else status
        where = f"{s.get('node') or '-'}/{s.get('process') or '-'}"
        line = f"{label:<{width}}  |{bar}| {duration(s['end_time_ns'] - s['start_time_ns']):>9}"
        line += f"  {mark:<6}  {where}"
        if status == "error" and s.get("status_message"):
            line += f"  {s['status_message']}"
        lines.append(line)
    return "\n".join(lines)


def _tree_order(spans: list[dict]) -> list[tuple[dict, int]]:
    """Depth-first, children by start time; a span whose parent is not in the
    trace (not sampled, not yet drained) starts a tree of its own."""
    by_start = sorted(spans, key=lambda s: s["start_time_ns"])
    ids = {s.get("span_id") for s in by_start}
    children: dict[Any, list[dict]] = {}
    roots = []
    for s in by_start:
        parent = s.get("parent_span_id")
        if parent and parent in ids and parent != s.get("span_id"):
            children.setdefault(parent, []).append(s)
        else:
            roots.append(s)
    out: list[tuple[dict, int]] = []
    seen: set[int] = set()

    def visit(s: dict, depth: int) -> None:
        if id(s) in seen:
            return
        seen.add(id(s))
        out.append((s, depth))
        for child in children.get(s.get("span_id"), ()):
            visit(child, depth + 1)

    for s in roots:
        visit(s, 0)
    for s in by_start:  # spans in a parent loop reach no root: show them anyway
        visit(s, 0)
    return out


def _bar(start: int, end: int, total: int) -> str:
    """BAR_WIDTH characters: '#' where the span ran, at least one."""
    a = min(BAR_WIDTH - 1, int(start * BAR_WIDTH / total))
    b = max(a + 1, min(BAR_WIDTH, round(end * BAR_WIDTH / total)))
    return " " * a + "#" * (b - a) + " " * (BAR_WIDTH - b)


def duration(ns: float) -> str:
    if ns < 1000:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.1f} us"
    if ns < 1e9:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


def render_traces(doc: dict) -> str:
    traces = doc.get("traces") or []
    if not traces:
        return "no traces"
    rows = [("STARTED", "DURATION", "SPANS", "ERR", "NAME", "NODES", "TRACE ID")]
    for t in traces:
        rows.append(
            (
                _wall(t.get("start_time_ns")),
                duration((t.get("duration_ms") or 0.0) * 1e6),
                fmt(t.get("spans")),
                "!" if t.get("error") else "",
                fmt(t.get("name")),
                ",".join(t.get("nodes") or []) or "-",
                fmt(t.get("trace_id")),
            )
        )
    width = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            f"{c:>{w}}" if i in (1, 2) else f"{c:<{w}}"
            for i, (c, w) in enumerate(zip(r, width, strict=True))
        ).rstrip()
        for r in rows
    )


def _wall(ns: int | None) -> str:
    if not ns:
        return "-"
    when = datetime.datetime.fromtimestamp(ns / 1e9).astimezone()
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _render_sampling(doc: dict) -> str:
    every = doc.get("rt_every_cycles")
    rt = "off" if every == 0 else f"one cycle span every {fmt(every)} cycles"
    return f"rt     {rt}\nagent  ratio {fmt(doc.get('ratio'))}"
