"""`rtctl agent`: run this node's agent in the foreground. Its settings
(control.config) and the agent itself load the RT core, so both are imported
only when this command is chosen."""

from __future__ import annotations

import argparse
from typing import Any

from control.cli.common import Formatter, fail

NAME = "agent"
HELP = "run a node: the agent and its RT loop, in the foreground"


def add(commands: Any) -> None:
    from control import config

    agent = commands.add_parser(
        NAME,
        help=HELP,
        description="Run this node's agent in the foreground until SIGTERM or Ctrl-C: it "
        "starts and supervises the RT process, serves gRPC for rtctl, keeps "
        "checkpoints, runs jobs, and exports logs, traces and metrics. Without --raft "
        "and --peer it runs as a single node. Settings come from the defaults, then "
        "--config FILE (TOML, the same names with '_'), then these flags.",
        epilog="examples:\n"
        "  rtctl agent --node-id n1 --cpus 3 --period-us 1000\n"
        "  rtctl agent --node-id n1 --raft 10.0.0.1:7771 --peer 10.0.0.2:7771 "
        "--peer 10.0.0.3:7771",
        formatter_class=Formatter,
    )
    config.add_arguments(agent)


def run(args: argparse.Namespace) -> int:
    """The agent's own exit status."""
    try:
        from control.node import run as node
    except ImportError as e:
        return fail(f"cannot start the agent: {e}", 1)
    return node.main(args)
