"""`rtctl checkpoint`: the RT state checkpoints the node keeps."""

from __future__ import annotations

import argparse
from typing import Any

from control.cli.common import Formatter, Report, add_client_command, connect, render_doc

NAME = "checkpoint"
HELP = "the RT state checkpoints the node keeps"


def add(commands: Any) -> None:
    ckpt = commands.add_parser(
        NAME,
        help=HELP,
        description="Checkpoints: snapshots of the RT task's state that a restarted or "
        "promoted RT loop resumes from.",
        formatter_class=Formatter,
    )
    ckpts = ckpt.add_subparsers(dest="checkpoint_command", metavar="COMMAND", required=True)
    add_client_command(
        ckpts,
        "info",
        _info,
        "newest checkpoint in shared memory and on disk, and the files kept",
        "Show the newest checkpoint the RT loop wrote to shared memory, the newest one "
        "saved to disk, and the checkpoint files the agent keeps.",
        "  rtctl checkpoint info --json",
    )


def _info(args: argparse.Namespace) -> Report:
    with connect(args) as client:
        return client.checkpoint_info(), render_doc
