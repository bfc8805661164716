"""`rtctl rt`: start, stop and modes of the RT loop, and where it runs."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from control.cli.common import Formatter, Report, add_client_command, connect, int_in
from control.cli.status import render_status

NAME = "rt"
HELP = "start, stop, change the mode or the placement of the RT loop"

ACTION_HELP = {
    "start": "spawn the RT process (the agent restarts it if it dies)",
    "stop": "stop the RT process (SAFE first) and keep it stopped",
    "run": "follow the trajectory of the running job (actuate)",
    "hold": "hold the current position",
    "safe": "go to the safe state",
}


def add(commands: Any) -> None:
    rt = commands.add_parser(
        NAME,
        help=HELP,
        description="The RT loop: start, stop and modes (then the node's status is "
        "shown), and where it runs: CPUs, isolation, NUMA node.",
        formatter_class=Formatter,
    )
    rts = rt.add_subparsers(dest="rt_command", metavar="COMMAND", required=True)
    for action, what in ACTION_HELP.items():
        add_client_command(
            rts, action, _action, what, what[0].upper() + what[1:] + ".", f"  rtctl rt {action}"
        ).set_defaults(action=action)
    aff = add_client_command(
        rts,
        "set-affinity",
        _set_affinity,
        "move the running RT loop to other CPUs, optionally with exclusive use",
        "Pin the running RT loop to --cpus within 5 s, without restarting it. "
        "--isolate also gives it exclusive use of them: a cpuset of its own (cgroup v1 "
        "exclusive cpuset, or a cgroup v2 isolated partition), every other movable task "
        "and IRQ moved to the remaining CPUs. --no-isolate removes that and restores what "
        "was there before, other processes' affinities included. Kept across restarts "
        "of the agent and the RT process. A change that fails is rolled back whole.",
        "  rtctl rt set-affinity --cpus 3 --isolate",
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
    numa = add_client_command(
        rts,
        "set-numa",
        _set_numa,
        "move the running RT process's memory to another NUMA node",
        "Bind the running RT process to NUMA node --node: its pages are migrated "
        "(migrate_pages) and, unless --cpus were set, it runs on the node's CPUs. Kept "
        "across restarts.",
        "  rtctl rt set-numa --node 1",
    )
    numa.add_argument(
        "--node", required=True, type=int_in(0, 1023), metavar="N", help="the NUMA node"
    )
    journal = add_client_command(
        rts,
        "journal",
        _journal,
        "every interval the RT drove outputs, with its epoch",
        "The actuation journal: each interval this node's RT drove outputs (epoch, first "
        "and last cycle, wall-clock times, cycles), persisted by the agent across RT and "
        "agent restarts. An interval the RT could not close (killed while actuating) is "
        "closed from its last status, marked 'agent'.",
        "  rtctl rt journal --json\n  rtctl rt journal --limit 5",
    )
    journal.add_argument(
        "--limit", type=int_in(0, 1_000_000), default=0, metavar="N", help="newest N (0: all)"
    )
    placement = rts.add_parser(
        "isolation",
        help="the CPU, isolation and NUMA placement in force",
        description="CPU isolation and placement of the RT loop.",
        formatter_class=Formatter,
    )
    placements = placement.add_subparsers(
        dest="isolation_command", metavar="COMMAND", required=True
    )
    add_client_command(
        placements,
        "show",
        _placement,
        "what is in force",
        "Show the CPUs the RT loop runs on, the isolation in force (cgroup version, "
        "cpusets, tasks and IRQs moved), the kernel's own isolation (isolcpus, "
        "nohz_full), the NUMA node and its local-access ratio.",
        "  rtctl rt isolation show --json",
    )


def _action(args: argparse.Namespace) -> Report:
    with connect(args) as client:
        doc = client.rt_action(args.action)
    return doc, lambda d: f"rt {args.action}: requested\n{render_status(d)}"


def _set_affinity(args: argparse.Namespace) -> Report:
    with connect(args) as client:
        return client.set_affinity(args.cpus, args.isolate), _render_placement


def _set_numa(args: argparse.Namespace) -> Report:
    with connect(args) as client:
        return client.set_numa_node(args.node), _render_placement


def _placement(args: argparse.Namespace) -> Report:
    with connect(args) as client:
        return client.placement(), _render_placement


def _journal(args: argparse.Namespace) -> Report:
    with connect(args) as client:
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
    when = datetime.datetime.fromtimestamp(ns / 1e9, tz=datetime.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


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
