"""What every command group shares: argument types, the connection flags, the
client, text rendering and the errors main() turns into exit codes.

Only the standard library and cheap control modules at import time: a client
command's whole run (start, call, print) is paid for by every `rtctl status`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import sys
import textwrap
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from control.errors import ControlError

if TYPE_CHECKING:
    from control.rpc.client import Client

# (report, render); the report is a dict, or a list for `job list`
Report = tuple[Any, Callable[[Any], str]]
Handler = Callable[[argparse.Namespace], Report | None]

# control.config.DEFAULT_LISTEN, which a test holds equal: importing
# control.config would load the RT core (numpy) into every client command
DEFAULT_TARGET = "127.0.0.1:7761"


class UsageError(Exception):
    """Options that parse one by one but do not fit together."""


def fail(message: str, code: int) -> int:
    """Every failure: one line on stderr, then exit status `code`."""
    print(f"rtctl: error: {message}", file=sys.stderr, flush=True)
    return code


class Formatter(argparse.HelpFormatter):
    """Wraps paragraphs like the default, but keeps lines that start with two
    spaces (examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        paragraph: list[str] = []

        def flush() -> None:
            if paragraph:
                # no break after a hyphen: "--token-file" stays one word
                out.append(
                    textwrap.fill(
                        " ".join(paragraph),
                        width,
                        initial_indent=indent,
                        subsequent_indent=indent,
                        break_on_hyphens=False,
                    )
                )
                paragraph.clear()

        for line in text.splitlines():
            if line.startswith("  ") or not line.strip():
                flush()
                out.append(indent + line)
            else:
                paragraph.append(line.strip())
        flush()
        return "\n".join(out)


# ---- argument types -------------------------------------------------------------


def int_in(lo: int, hi: int, unit: str = "") -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range: use {lo}..{hi}{unit}")
        return value

    return parse


def non_negative(text: str) -> int:
    return int_in(0, 2**63 - 1)(text)


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and 0 < value <= 3600):
        raise argparse.ArgumentTypeError(f"{text} is out of range: use more than 0, up to 3600")
    return value


def ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:  # also false for nan
        raise argparse.ArgumentTypeError(f"{text} is out of range: use 0..1")
    return value


# ---- the connection to an agent ---------------------------------------------------

CONNECTION_HELP = f"""\
Connection: --target HOST:PORT (else $RTCTL_TARGET, else {DEFAULT_TARGET}). Commands
that change the node need the agent's token when it has one: --token-file FILE,
or the token itself in $RTCTL_TOKEN. For an agent serving TLS give --tls-ca
(and --tls-cert/--tls-key if it requires client certificates). $TRACEPARENT,
when set, is sent so the agent's work joins the caller's trace."""


def connection_flags() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("connection and output")
    g.add_argument(
        "--target",
        metavar="HOST:PORT",
        help=f"the agent's gRPC address (default: $RTCTL_TARGET, else {DEFAULT_TARGET})",
    )
    g.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    g.add_argument(
        "--token-file",
        metavar="FILE",
        help="file holding the agent's bearer token, needed by commands that change the "
        "node when the agent has one (default: the token in $RTCTL_TOKEN)",
    )
    g.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="CA certificate (PEM) that signed the agent's certificate; connects over TLS",
    )
    g.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="this client's certificate (PEM), for an agent that requires mutual TLS",
    )
    g.add_argument("--tls-key", metavar="FILE", help="the private key (PEM) of --tls-cert")
    g.add_argument(
        "--timeout",
        type=positive_seconds,
        default=5.0,
        metavar="SECONDS",
        help="give up when the agent has not answered after this long (default 5)",
    )
    return p


def add_client_command(
    group: Any,
    name: str,
    handler: Handler,
    help: str,
    description: str,
    example: str,
) -> argparse.ArgumentParser:
    cmd: argparse.ArgumentParser = group.add_parser(
        name,
        help=help,
        description=f"{description}\n\n{CONNECTION_HELP}",
        epilog=f"example:\n{example}",
        parents=[connection_flags()],
        formatter_class=Formatter,
    )
    cmd.set_defaults(handler=handler)
    return cmd


def _is_hostport(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    return bool(sep and host and port.isdigit() and int(port) <= 65535)


def connect(args: argparse.Namespace) -> Client:
    from control.rpc.client import Client

    target = args.target or os.environ.get("RTCTL_TARGET") or DEFAULT_TARGET
    if not _is_hostport(target):
        where = "--target" if args.target else "RTCTL_TARGET"
        raise UsageError(f"{where} {target!r} is not HOST:PORT (e.g. 127.0.0.1:7761)")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    return Client(
        target,
        tls_ca=args.tls_ca,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        token=_token(args),
        timeout=args.timeout,
        traceparent=os.environ.get("TRACEPARENT") or None,
    )


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()
        if not token:
            raise UsageError(f"--token-file {args.token_file} is empty")
        return token
    return os.environ.get("RTCTL_TOKEN", "").strip() or None


# ---- text renderings ---------------------------------------------------------------


def fmt(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def render_doc(doc: dict, indent: int = 0) -> str:
    pad = "  " * indent
    lines = []
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{key}:")
            lines.append(render_doc(value, indent + 1))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key}:")
            for item in value:
                fields = "  ".join(f"{k} {fmt(v)}" for k, v in item.items())
                lines.append(f"{pad}  - {fields}")
        else:
            lines.append(f"{pad}{key}: {fmt(value)}")
    return "\n".join(lines)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?")
_UNIT_S = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_s(
    text: str, bare: str | None = None, units: tuple[str, ...] = tuple(_UNIT_S)
) -> float | None:
    """Seconds of `90s`, `15m`, `2h`, `1d`, `500ms` (a unit among `units`); a
    bare number counts in the unit `bare` (None: a bare number is not a
    duration). None if `text` is not a duration."""
    m = _DURATION.fullmatch(text.strip())
    if not m or (m.group(2) is None and bare is None) or (m.group(2) or bare) not in units:
        return None
    return float(m.group(1)) * _UNIT_S[m.group(2) or bare or "s"]


def since_ns(text: str) -> int:
    """Unix ns of an age (before now) or an ISO time."""
    age = duration_s(text)
    if age is not None:
        return time.time_ns() - int(age * 1e9)
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an age (30s, 10m, 2h, 1d) nor an ISO time (2026-05-01T12:00:00)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # a time without a zone is the local time
    ns = int(when.timestamp()) * 10**9 + when.microsecond * 1000
    if ns <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is before 1970")
    return ns


def print_events(
    client: Client,
    kinds: list[str] | None,
    count: int | None,
    as_json: bool,
    render: Callable[[dict], str],
) -> None:
    """Print a Watch stream as it arrives, until `count` events; an agent that
    ends the stream is an error."""
    with client.watch(kinds) as events:
        for n, event in enumerate(events, start=1):
            print(json.dumps(event) if as_json else render(event), flush=True)
            if count is not None and n >= count:
                return
    raise ControlError(f"the agent at {client.target} ended the event stream (shutting down?)")
