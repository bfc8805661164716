"""`rtctl diagnose`: what needs an operator's attention, on one screen."""

from __future__ import annotations

import argparse
import time
from typing import Any

from control.cli.common import Report, add_client_command, connect, duration_s

NAME = "diagnose"
HELP = "what needs attention on the node, each with the command that shows more"

MAX_SINCE_S = 30 * 86400


def add(commands: Any) -> None:
    cmd = add_client_command(
        commands,
        NAME,
        _diagnose,
        HELP,
        "Show what an operator looks at first: deadline misses, RT restarts and failures, "
        "records the RT or the agent dropped, NUMA and checkpoint warnings, the node's "
        "role, bottleneck alerts and the slowest spans, worst first. Each item names the "
        "rtctl command that shows more. Counters (misses, restarts, drops) are since the "
        "RT process or the agent started; alerts and spans are those of --since.",
        "  rtctl diagnose --since 1h",
    )
    cmd.add_argument(
        "--since",
        type=duration,
        default=15 * 60.0,
        metavar="DURATION",
        help="look back this far for alerts and slow spans: 90s, 15m, 2h, 1d "
        "(a bare number is seconds; default 15m, at most 30d)",
    )


def duration(text: str) -> float:
    """Seconds from `90s`, `15m`, `2h`, `1d` or a bare number of seconds."""
    seconds = duration_s(text, bare="s", units=("s", "m", "h", "d"))
    if seconds is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 15m, 2h or 1d")
    if not 0 < seconds <= MAX_SINCE_S:
        raise argparse.ArgumentTypeError(f"{text} is out of range: use more than 0, up to 30d")
    return seconds


def _diagnose(args: argparse.Namespace) -> Report:
    since_ns = time.time_ns() - int(args.since * 1e9)
    with connect(args) as client:
        return client.diagnose(since_ns), render_diagnosis


def render_diagnosis(doc: dict) -> str:
    lines = [str(doc.get("summary") or "")]
    for item in doc.get("items") or []:
        lines.append("")
        lines.append(f"{item.get('severity', ''):<9} {item.get('what', '')}")
        if item.get("detail"):
            lines.append(f"{'':<9} {item['detail']}")
        if item.get("more"):
            lines.append(f"{'':<9} more: {item['more']}")
    return "\n".join(lines)
