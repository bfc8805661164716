"""`rtctl cluster status|failover`: the Raft cluster as its members see it, and
a planned handover of the primary role."""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from control.cli.common import Formatter, Report, UsageError, add_client_command, connect, fmt
from control.errors import ControlError, FailedPrecondition, InvalidArgument

if TYPE_CHECKING:
    from control.rpc.client import Client

NAME = "cluster"
HELP = "the Raft cluster's members and roles; hand the primary role over"
# each other member gets this long at most: one that is down must not stall the table
PROBE_TIMEOUT_S = 1.0
# a wildcard listen address is where a node binds, not where others reach it
WILDCARD_HOSTS = ("0.0.0.0", "::", "[::]", "")


def add(commands: Any) -> None:
    cluster = commands.add_parser(
        NAME,
        help=HELP,
        description="The Raft cluster of rtcore nodes: one primary drives the outputs, "
        "standbys follow its checkpoints, witnesses only vote.",
        formatter_class=Formatter,
    )
    cmds = cluster.add_subparsers(dest="cluster_command", metavar="COMMAND", required=True)
    add_client_command(
        cmds,
        "status",
        _status,
        "every member's role, term, leader, lease and lags",
        "Ask the target for its view of the cluster, then ask every other member it "
        f"knows a gRPC address of (at most {PROBE_TIMEOUT_S:g} s each, same credentials). "
        "One row per member: node, role (or unreachable and why), term, the leader it "
        "follows, the age of its quorum lease, the age of the newest checkpoint it has "
        "applied, whether its RT is healthy, and whether the target is connected to it. "
        '--json: {"target": the target\'s cluster status, "members": [rows]}.',
        "  rtctl cluster status --target 10.0.0.5:7761",
    )
    failover = add_client_command(
        cmds,
        "failover",
        _failover,
        "hand the primary role over to a standby",
        "Planned failover: find the primary through the target and ask it to hand its "
        "role over to a standby that is healthy and caught up (--to, or the healthiest "
        "one), then print the new term and how long no primary drove the outputs. "
        "Needs the agent's token when it has one.",
        "  rtctl cluster failover --to n2 --token-file /etc/rtcore/token",
    )
    failover.add_argument(
        "--to", metavar="NODE", help="the standby's node id (default: the agent picks)"
    )


# ---- handlers ---------------------------------------------------------------------


def _status(args: argparse.Namespace) -> Report:
    with connect(args) as client:
        target = client.cluster_status()
    members = target.get("members") or []
    timeout = min(PROBE_TIMEOUT_S, args.timeout)
    with ThreadPoolExecutor(max_workers=max(len(members), 1)) as pool:
        rows = list(pool.map(lambda m: _row(args, target, m, timeout), members))
    return {"target": target, "members": rows}, render_status


def _failover(args: argparse.Namespace) -> Report:
    with connect(args) as client:
        view = client.cluster_status()
        leader = view.get("leader") or ""
        if not leader:
            raise FailedPrecondition(
                f"no primary is known to {client.target}: the cluster has no quorum"
            )
        members = view.get("members") or []
        known = [m["node_id"] for m in members if m.get("node_id")]
        # a typo is refused with the names it could have meant, before the primary is asked
        if args.to is not None and args.to not in known:
            raise InvalidArgument(
                "--to",
                f"{args.to!r} is no member of the cluster; its nodes: "
                f"{', '.join(known) or 'none known yet'}",
            )
        if leader == view.get("node_id"):
            return client.cluster_failover(args.to), render_failover
        entry = next((m for m in members if m.get("node_id") == leader), None)
        address = member_address(entry) if entry else ""
        if not address:
            raise FailedPrecondition(
                f"{client.target} names {leader} the primary but knows no gRPC address of "
                "it: run the failover with --target set to the primary's address"
            )
    with _connect_to(args, address, args.timeout) as primary:
        return primary.cluster_failover(args.to), render_failover


def _row(
    args: argparse.Namespace, target: dict[str, Any], member: dict[str, Any], timeout: float
) -> dict[str, Any]:
    """One member as it reports itself; `connected` is as the target sees it."""
    address = member_address(member)
    row: dict[str, Any] = {
        "node_id": member.get("node_id") or "",
        "listen": address,
        "witness": bool(member.get("witness")),
        "role": "unreachable",
        "term": None,
        "leader": None,
        "lease_age_ms": None,
        "checkpoint_lag_ms": None,
        "healthy": None,
        "connected": member.get("connected"),
        "error": None,
    }
    if member.get("self"):
        return {**row, **_reported(target)}
    if not address:
        return {**row, "error": "no gRPC address known for it yet"}
    try:
        with _connect_to(args, address, timeout) as client:
            return {**row, **_reported(client.cluster_status())}
    except (ControlError, UsageError) as e:
        return {**row, "error": str(e)}


def _reported(doc: dict[str, Any]) -> dict[str, Any]:
    """What a member says of itself; its node id only if it sent one."""
    keys = ("role", "term", "leader", "lease_age_ms", "checkpoint_lag_ms", "healthy")
    fields = {k: doc.get(k) for k in keys}
    if doc.get("node_id"):
        fields["node_id"] = doc["node_id"]
    return fields


def member_address(member: dict[str, Any]) -> str:
    """Where to reach a member's gRPC service: its listen address, with a
    wildcard host replaced by the host of its Raft address."""
    listen = member.get("listen") or ""
    host, sep, port = listen.rpartition(":")
    if listen and sep and host in WILDCARD_HOSTS:
        raft_host = (member.get("raft") or "").rpartition(":")[0]
        if raft_host and raft_host not in WILDCARD_HOSTS:
            return f"{raft_host}:{port}"
    return listen


def _connect_to(args: argparse.Namespace, address: str, timeout: float) -> Client:
    """A client for another member with the command's credentials and TLS options."""
    return connect(argparse.Namespace(**{**vars(args), "target": address, "timeout": timeout}))


# ---- renderings -------------------------------------------------------------------

COLUMNS = (
    ("NODE", "node_id"),
    ("ROLE", "role"),
    ("TERM", "term"),
    ("LEADER", "leader"),
    ("LEASE AGE ms", "lease_age_ms"),
    ("CKPT LAG ms", "checkpoint_lag_ms"),
    ("HEALTHY", "healthy"),
    ("CONNECTED", "connected"),
)


def render_status(doc: dict[str, Any]) -> str:
    t = doc["target"]
    head = (
        f"as seen by {fmt(t.get('node_id'))} ({fmt(t.get('role'))}): "
        f"leader {fmt(t.get('leader'))}  term {fmt(t.get('term'))}  "
        f"quorum {fmt(t.get('has_quorum'))}  commit {fmt(t.get('commit_index'))}  "
        f"applied {fmt(t.get('last_applied'))}"
    )
    rows = [tuple(title for title, _ in COLUMNS)]
    for r in doc["members"]:
        rows.append(tuple(_cell(r.get(key)) for _, key in COLUMNS))
    width = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)) for r in rows]
    for i, r in enumerate(doc["members"], start=1):
        if r.get("error"):
            lines[i] += f"  {r['error']}"
    return "\n".join([head, *(line.rstrip() for line in lines)])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return fmt(value)


def render_failover(doc: dict[str, Any]) -> str:
    gap = doc.get("gap_ms")
    gap_text = f"gap {gap:g} ms" if isinstance(gap, int | float) else "gap not measured"
    return f"failover: {doc.get('from')} -> {doc.get('to')} (term {doc.get('term')}, {gap_text})"
