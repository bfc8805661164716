"""`rtctl logs search|tail`: the node's logs (RT and agent) from its embedded store,
or with --all-nodes every cluster member's, merged by time."""

from __future__ import annotations

import argparse
import calendar
import datetime
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from control.api import LOG_LEVELS
from control.cli.common import (
    Formatter,
    Report,
    add_client_command,
    connect,
    int_in,
    since_ns,
)
from control.errors import ControlError

if TYPE_CHECKING:
    from control.cli.fanout import Answer

NAME = "logs"
HELP = "search the node's logs, or follow them"
TAIL_POLL_S = 0.5
WHEN_HELP = "an age (30s, 10m, 2h, 1d) or an ISO time (local time unless it has a zone)"
ALL_NODES_HELP = (
    "With --all-nodes, ask the target for its cluster's members (witnesses too) and "
    "every member's agent at once, with the same filters and connection options, "
    "--timeout each; merge the records by @timestamp and apply the limit after the "
    "merge. A node that does not answer gets one line on stderr and the others' "
    "records are printed all the same: the exit status is 0 when at least one node "
    "answered, 1 when none did. On a node that is not part of a cluster, a note on "
    'stderr says so and only that node is asked. --json adds "answered" (node ids) '
    'and "not_answered" ([{node_id, listen, error}]).'
)


def add(commands: Any) -> None:
    logs = commands.add_parser(
        NAME,
        help=HELP,
        description="The node's logs, RT loop and agent alike, as the embedded log store "
        "keeps them (ECS documents). Every filter narrows the search.",
        formatter_class=Formatter,
    )
    cmds = logs.add_subparsers(dest="logs_command", metavar="COMMAND", required=True)
    search = add_client_command(
        cmds,
        "search",
        _search,
        "find log records, newest first",
        "Find log records, newest first: time, level, node, process[pid/thread], event "
        "and message, then the record's own fields. --json: one document with the ECS "
        f"records.\n\n{ALL_NODES_HELP}",
        "  rtctl logs search --event deadline_miss --since 10m\n"
        "  rtctl logs search --level error overrun\n"
        "  rtctl logs search --all-nodes --since 5m --limit 50",
    )
    search.add_argument("text", nargs="*", metavar="TEXT", help="words the message must contain")
    _add_level(search)
    search.add_argument(
        "--event", default="", metavar="EVENT", help="event.action, e.g. deadline_miss"
    )
    search.add_argument("--since", type=since_ns, default=0, metavar="WHEN", help=WHEN_HELP)
    search.add_argument("--until", type=since_ns, default=0, metavar="WHEN", help=WHEN_HELP)
    search.add_argument("--trace", default="", metavar="TRACE_ID", help="records of one trace")
    search.add_argument("--node", default="", metavar="NODE", help="records of one node")
    search.add_argument(
        "--limit", type=int_in(1, 1000), default=100, metavar="N", help="at most N (default 100)"
    )
    tail = add_client_command(
        cmds,
        "tail",
        _tail,
        "the latest records, oldest first; -f follows",
        "Show the latest records in time order; with -f keep printing new ones as the "
        "store gets them, until interrupted. With --all-nodes, -f follows every member: "
        "each poll's new records are merged by time, and a member that stops or starts "
        f"answering again is said once on stderr.\n\n{ALL_NODES_HELP}",
        "  rtctl logs tail -n 50 -f --level warn\n  rtctl logs tail --all-nodes -f -n 50",
    )
    tail.add_argument(
        "-n", dest="limit", type=int_in(1, 1000), default=20, metavar="N", help="last N (20)"
    )
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new records")
    _add_level(tail)
    for cmd in (search, tail):
        cmd.add_argument(
            "--all-nodes",
            action="store_true",
            help="ask every member of the target's cluster and merge by time",
        )


def _add_level(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--level",
        type=str.upper,
        choices=LOG_LEVELS,
        metavar="LEVEL",
        help=f"this level and worse: {', '.join(LOG_LEVELS)} (any case)",
    )


def _query(args: argparse.Namespace) -> dict[str, Any]:
    query: dict[str, Any] = {"limit": args.limit}
    if args.level:
        query["level"] = args.level
    for key, attr in (("event", "event"), ("trace_id", "trace"), ("node", "node")):
        if getattr(args, attr, ""):
            query[key] = getattr(args, attr)
    if getattr(args, "text", None):
        query["text"] = " ".join(args.text)
    if getattr(args, "since", 0):
        query["since_ns"] = args.since
    if getattr(args, "until", 0):
        query["until_ns"] = args.until
    return query


def _search(args: argparse.Namespace) -> Report:
    if args.all_nodes:
        return _search_all_nodes(args), render_logs
    with connect(args) as client:
        return client.search_logs(**_query(args)), render_logs


def _tail(args: argparse.Namespace) -> Report:
    if args.all_nodes:
        if args.follow:
            _follow_all_nodes(args)
        doc = _search_all_nodes(args)
        return {**doc, "logs": list(reversed(doc["logs"]))}, render_logs
    query = _query(args)
    with connect(args) as client:
        doc = client.search_logs(**query)
        records = list(reversed(doc["logs"]))
        if not args.follow:
            return {**doc, "logs": records}, render_logs
        last = _emit(records, args.json, 0)
        query.pop("limit")
        while True:
            time.sleep(TAIL_POLL_S)
            newer = client.search_logs(**query, after_seq=last, limit=1000)["logs"]
            last = _emit(newer, args.json, last)


def _emit(records: list[dict[str, Any]], as_json: bool, last: int) -> int:
    for rec in records:
        print(json.dumps(rec) if as_json else render_line(rec), flush=True)
        last = max(last, int(rec.get("_seq", 0)))
    return last


def _search_all_nodes(args: argparse.Namespace) -> dict[str, Any]:
    """The search on every member, merged newest first; unanswered members
    are named on stderr (all of them, then the error, when none answered)."""
    query = _query(args)
    members = _search_every_member(args, query)
    answered = [(a, a.doc) for a in members if a.doc is not None]
    return {
        "node_id": next((doc.get("node_id") for a, doc in answered if a.is_target), None),
        "logs": merge_newest_first([doc.get("logs") or [] for _, doc in answered], args.limit),
        "answered": [doc.get("node_id") or a.node_id for a, doc in answered],
        "not_answered": [
            {"node_id": a.node_id, "listen": a.address, "error": a.error}
            for a in members
            if a.doc is None
        ],
    }


def _search_every_member(args: argparse.Namespace, query: dict[str, Any]) -> list[Answer]:
    """Every member's answer to the search; those that did not answer are
    named on stderr, and none answering is the command's error."""
    # loaded here: it brings grpc, which `rtctl --help` need not pay for
    from control.cli.fanout import ask_every_member, report_unanswered

    fanout = ask_every_member(args, lambda client: client.search_logs(**query))
    report_unanswered(fanout)
    if all(a.doc is None for a in fanout.answers):
        raise ControlError(f"none of the {len(fanout.answers)} nodes answered")
    return fanout.answers


def _follow_all_nodes(args: argparse.Namespace) -> NoReturn:
    """The last N records of every member merged, then each poll's new ones,
    merged by time. A node's seqs number its own spool: each member has its
    own cursor. A member that stops answering is said once, and again when
    it answers; one that never answered yet starts from its newest N."""
    from control.cli.fanout import ask_each, warn

    query = _query(args)
    members = _search_every_member(args, query)
    cursor: dict[str, int | None] = {a.address: None for a in members}  # None: not heard yet
    answering = {a.address: a.doc is not None for a in members}
    newest = [_advance(cursor, a) for a in members if a.doc is not None]
    _emit(list(reversed(merge_newest_first(newest, args.limit))), args.json, 0)
    del query["limit"]

    def question(a: Answer) -> Callable[[Any], dict[str, Any]]:
        seq = cursor[a.address]
        if seq is None:
            return lambda client: client.search_logs(**query, limit=args.limit)
        return lambda client: client.search_logs(**query, after_seq=seq, limit=1000)

    while True:
        time.sleep(TAIL_POLL_S)
        new: list[dict[str, Any]] = []
        for a in ask_each(args, members, question):
            name = f"node {a.node_id or '?'} ({a.address})"
            if a.doc is None:
                if answering[a.address]:
                    warn(f"{name} stopped answering: {a.error}")
                answering[a.address] = False
                continue
            if not answering[a.address]:
                warn(f"{name} answers again")
                answering[a.address] = True
            new += _advance(cursor, a)
        _emit(sorted(new, key=lambda r: (timestamp_ns(r), r.get("_seq", 0))), args.json, 0)


def _advance(cursor: dict[str, int | None], answer: Any) -> list[dict[str, Any]]:
    """The member's records; its cursor moved to the highest seq among them."""
    records: list[dict[str, Any]] = answer.doc.get("logs") or []
    seqs = [int(r.get("_seq", 0)) for r in records]
    cursor[answer.address] = max([*seqs, cursor[answer.address] or 0])
    return records


def merge_newest_first(per_node: list[list[dict[str, Any]]], limit: int) -> list[dict[str, Any]]:
    """The newest `limit` records of all nodes' answers (each of them the
    node's newest `limit`, so none of the overall newest is missing)."""
    merged = sorted(
        (rec for records in per_node for rec in records), key=timestamp_ns, reverse=True
    )
    return merged[:limit]


def timestamp_ns(rec: dict[str, Any]) -> int:
    """The record's @timestamp in unix ns: ISO 8601 in UTC with up to nine
    fractional digits, as control.logs.ecs writes it. A record without a
    readable one sorts as the oldest."""
    text = str(rec.get("@timestamp", ""))
    whole, _, fraction = text.removesuffix("Z").partition(".")
    digits = fraction[:9]
    if digits and not digits.isdigit():
        return 0
    try:
        when = datetime.datetime.fromisoformat(whole)
    except ValueError:
        return 0
    seconds = calendar.timegm(when.utctimetuple())
    return seconds * 10**9 + int(digits.ljust(9, "0"))


def render_logs(doc: dict[str, Any]) -> str:
    if not doc["logs"]:
        return "no log records match"
    return "\n".join(render_line(rec) for rec in doc["logs"])


def render_line(rec: dict[str, Any]) -> str:
    """time level node process[pid/tid] event: message  field=value ..."""
    process = rec.get("process", {})
    rtcore = rec.get("rtcore", {})
    # the ECS field, which --node matches; merged output from several nodes needs it
    node = rec.get("service", {}).get("node", {}).get("name") or rtcore.get("node")
    thread = process.get("thread", {}).get("id", "?")
    where = f"{process.get('name', '?')}[{process.get('pid', '?')}/{thread}]"
    action = rec.get("event", {}).get("action")
    fields = dict(rtcore.get("fields") or {})
    if "cycle" in rtcore:
        fields = {"cycle": rtcore["cycle"], **fields}
    if trace := rec.get("trace", {}).get("id"):
        fields["trace"] = trace
    extra = "  " + " ".join(f"{k}={_value(v)}" for k, v in fields.items()) if fields else ""
    return (
        f"{rec.get('@timestamp', '?')} {rec.get('log', {}).get('level', '?'):<8} "
        f"{node or '?'} {where} {action + ': ' if action else ''}"
        f"{rec.get('message', '')}{extra}"
    )


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return json.dumps(v) if isinstance(v, dict | list) else str(v)
