"""`rtctl log-level`: the RT and agent log levels, changed at runtime."""

from __future__ import annotations

import argparse
from typing import Any

from control.api import LOG_LEVELS
from control.cli.common import Formatter, Report, add_client_command, connect, render_doc

NAME = "log-level"
HELP = "show or change the RT and agent log levels at runtime"


def add(commands: Any) -> None:
    log = commands.add_parser(
        NAME,
        help=HELP,
        description="Log levels, changed at runtime without a restart. Levels: "
        f"{', '.join(LOG_LEVELS)}.",
        formatter_class=Formatter,
    )
    logs = log.add_subparsers(dest="log_command", metavar="COMMAND", required=True)
    add_client_command(
        logs,
        "get",
        _get,
        "the current levels",
        "Show the log level of the RT loop and of the agent.",
        "  rtctl log-level get",
    )
    log_set = add_client_command(
        logs,
        "set",
        _set,
        "change the level",
        "Change the log level of the RT loop, the agent, or both. Records below the "
        "level are dropped where they are made (on the RT side: never pushed).",
        "  rtctl log-level set debug --scope rt",
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


def _get(args: argparse.Namespace) -> Report:
    with connect(args) as client:
        return client.get_log_level(), render_doc


def _set(args: argparse.Namespace) -> Report:
    with connect(args) as client:
        return client.set_log_level(args.level, args.scope), render_doc
