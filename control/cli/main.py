"""`rtctl`: the operator's command line.

This module builds the parser and dispatches; each command group is a module
of this package (status, rt, job, checkpoint, cluster, logs, log-level, trace, watch,
alerts, diagnose, bench, agent) and each command's work lives with its subject
(benchmarks in bench/, the agent in control/node/, RPCs in control/rpc/client.py). A command handler
returns a report dict and a function that renders it as text; `--json` prints
the dict instead (a handler that streams, like `watch`, prints as it goes and
returns None).
Every failure is one line on stderr: exit 2 for bad usage, 1 for a command
that could not do its job, 130 when interrupted.

Only the chosen group's parser is built: the agent's and the benchmarks'
flags need the RT core (numpy), which a client command never loads.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

from control.cli import (
    agent,
    alerts,
    bench,
    checkpoint,
    cluster,
    diagnose,
    job,
    log_level,
    logs,
    rt,
    status,
    trace,
    watch,
)
from control.cli.common import DEFAULT_TARGET, Formatter, Handler, UsageError, fail
from control.errors import ControlError

# in the order `rtctl --help` lists them
GROUPS = (
    agent,
    status,
    rt,
    job,
    checkpoint,
    cluster,
    logs,
    log_level,
    trace,
    watch,
    alerts,
    diagnose,
    bench,
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # one line, not usage + error: scripts parse stderr and people read it
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: the group argv names is built whole, the others
    only as far as `rtctl --help` shows them. No argv: every group whole."""
    chosen = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    p = _Parser(
        prog="rtctl",
        description="Operate rtcore, the runtime for hard-real-time control loops. "
        "`rtctl agent` runs a node; the other commands talk to a running agent over "
        "gRPC, except `bench`, which measures this machine. `rtctl COMMAND --help` "
        "describes each command.",
        epilog="environment:\n"
        f"  RTCTL_TARGET  the agent's HOST:PORT when --target is not given "
        f"(default {DEFAULT_TARGET})\n"
        "  RTCTL_TOKEN   the bearer token when --token-file is not given\n"
        "  TRACEPARENT   W3C trace context sent with every call\n"
        "examples:\n"
        "  rtctl agent --node-id n1 --cpus 3\n"
        "  rtctl status\n"
        "  rtctl job submit pick.csv && rtctl rt run\n"
        "  rtctl watch --json",
        formatter_class=Formatter,
    )
    commands = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        if argv is None or chosen in (group.NAME, *getattr(group, "ALIASES", ())):
            group.add(commands)
        else:
            commands.add_parser(group.NAME, help=group.HELP)
    return p


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Let SIGTERM unwind like Ctrl-C, so measured children are killed and
    shared memory is removed on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _silence_stdout() -> None:
    """The reader went away (`rtctl watch | head`): drop what is still buffered."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    try:
        args = build_parser(argv).parse_args(argv)
    except SystemExit as e:
        # --help and usage errors end here; callers of main() get the code back
        return e.code if isinstance(e.code, int) else 2
    if args.command == agent.NAME:
        return agent.run(args)
    handler: Handler = args.handler
    try:
        with _sigterm_as_interrupt():
            done = handler(args)
    except UsageError as e:
        return fail(str(e), 2)
    except ControlError as e:
        return fail(str(e), 1)
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except OSError as e:
        return fail(f"{e.strerror or e}{f': {e.filename}' if e.filename else ''}", 1)
    except KeyboardInterrupt:
        return fail("interrupted", 130)
    except Exception as e:  # a bug still reaches the user as one line, never a traceback
        return fail(f"internal error ({type(e).__name__}: {e})", 1)
    if done is None:
        return 0
    report, render = done
    try:
        print(json.dumps(report, indent=2) if args.json else render(report), flush=True)
    except BrokenPipeError:  # `rtctl ... | head`: the reader has what it wanted
        _silence_stdout()
    return 0
