"""What each `rtctl agent` setting accepts.

One rule per setting turns a flag's text or a TOML file's value into the
value the agent uses, or raises Bad saying what is accepted. Flags and the
file go through the same rules, so they accept the same values; control.config
puts the key and the value in front of the message.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from typing import Any

from control.api import LOG_LEVELS
from rtcore import reftask_limits as reftask
from rtcore import topology
from rtcore.main import MAX_PERIOD_US, MIN_PERIOD_US

AUTH_MODES = ("mutations", "all")
WAKE_MODES = ("sleep", "hybrid")
# Watch streams each hold a server worker; service.py sizes its pool around this
MAX_WATCHERS = 8
NODE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# gRPC metadata values are printable ASCII; a space would split "Bearer <token>"
TOKEN_RE = re.compile(r"[\x21-\x7e]{1,4096}")
# the built-in task's parameters (rtcore/src/reftask.c): each must be > 0 or >= 0
REFTASK_PARAMS = {
    "kp": False,
    "ki": False,
    "kd": False,
    "inertia": True,
    "damping": False,
    "umax": True,
    "errlim": True,
}


class Bad(ValueError):
    """The value does not fit; the message says what would."""


Rule = Callable[[Any, bool], Any]  # (value, from_flag) -> the value to use


def integer(lo: int, hi: int, unit: str = "") -> Rule:
    def check(value: Any, from_flag: bool) -> int:
        accepted = f"use an integer {lo}..{hi}{unit}"
        if from_flag and isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                raise Bad(f"not an integer; {accepted}") from None
        if not isinstance(value, int) or isinstance(value, bool):
            raise Bad(f"not an integer; {accepted}")
        if not lo <= value <= hi:
            raise Bad(f"out of range; {accepted}")
        return value

    return check


def number(lo: float, hi: float, accepted: str, lo_included: bool = False) -> Rule:
    """A finite number in (lo, hi], or [lo, hi] with lo_included."""

    def check(value: Any, from_flag: bool) -> float:
        if from_flag and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise Bad(f"not a number; {accepted}") from None
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise Bad(f"not a number; {accepted}")
        above = lo <= value if lo_included else lo < value
        if not (math.isfinite(value) and above and value <= hi):
            raise Bad(f"out of range; {accepted}")
        return float(value)

    return check


def seconds(lo: float, hi: float) -> Rule:
    return number(lo, hi, f"use a number of seconds above {lo:g}, up to {hi:g}")


ratio = number(0, 1, "use a number from 0 to 1", lo_included=True)
percent = number(0, 100, "use a percentage above 0, up to 100")


def choice(*names: str, aliases: dict[str, str] | None = None) -> Rule:
    """One of names, in any case; the value used is spelled as in names."""
    aliases = aliases or {}
    table = {n.lower(): n for n in names}
    table.update((a.lower(), n) for a, n in aliases.items())
    also = {n: a for a, n in aliases.items()}
    shown = ", ".join(f"{n} (or {also[n]})" if n in also else n for n in names)

    def check(value: Any, from_flag: bool) -> str:
        if not isinstance(value, str) or value.strip().lower() not in table:
            raise Bad(f"unknown; use one of {shown} (any case)")
        return table[value.strip().lower()]

    return check


def url(value: Any, from_flag: bool) -> str:
    """An http(s) URL with a host, or '' for none (credentials may be in it)."""
    from urllib.parse import urlsplit

    accepted = "use http(s)://[USER:PASSWORD@]HOST:PORT, or '' for none"
    if not isinstance(value, str):
        raise Bad(f"not a string; {accepted}")
    if not value:
        return value
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise Bad(f"not a URL; {accepted}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Bad(f"not an http(s) URL with a host; {accepted}")
    if port == 0:
        raise Bad(f"port 0; {accepted}")
    return value


INDEX_PREFIX_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,200}")


def index_prefix(value: Any, from_flag: bool) -> str:
    """Elasticsearch index names are lower case and start with a letter or digit."""
    if not isinstance(value, str) or not INDEX_PREFIX_RE.fullmatch(value):
        raise Bad(
            "use lower-case letters, digits, '-', '_' or '.', starting with a letter or digit"
        )
    return value


def text(value: Any, from_flag: bool) -> str:
    if not isinstance(value, str):
        raise Bad("not a string; use a quoted string")
    return value


def boolean(value: Any, from_flag: bool) -> bool:
    if not isinstance(value, bool):
        raise Bad("not a boolean; use true or false")
    return value


def node_id(value: Any, from_flag: bool) -> str:
    if not isinstance(value, str) or not NODE_ID_RE.fullmatch(value):
        raise Bad("use 1..64 letters, digits, '-' or '_'")
    return value


def hostport(allow_empty: bool = False) -> Rule:
    def check(value: Any, from_flag: bool) -> str:
        accepted = "use HOST:PORT with a port 0..65535" + (
            ", or '' for none" if allow_empty else ""
        )
        if not isinstance(value, str):
            raise Bad(f"not a string; {accepted}")
        if allow_empty and not value:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise Bad(f"not HOST:PORT; {accepted}")
        return value

    return check


def peers(value: Any, from_flag: bool) -> list[str]:
    if not isinstance(value, list):
        raise Bad('not a list; use a list of HOST:PORT strings, e.g. ["10.0.0.2:7771"]')
    for i, peer in enumerate(value):
        try:
            hostport()(peer, from_flag)
        except Bad as e:
            raise Bad(f"entry {i} ({peer!r}) is {e}") from None
    return list(value)


def cpus(value: Any, from_flag: bool) -> list[int]:
    accepted = 'use CPU numbers as a list like [2, 3] or a string like "2-3"'
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, str):
        try:
            value = topology.parse_cpu_list(value) if value.strip() else []
        except topology.TopologyError as e:
            raise Bad(f"{e}; {accepted}") from None
    if not isinstance(value, list):
        raise Bad(f"not a CPU list; {accepted}")
    for cpu in value:
        if not isinstance(cpu, int) or isinstance(cpu, bool) or cpu < 0:
            raise Bad(f"{cpu!r} is not a CPU number; {accepted}")
    try:
        topology.check_cpus(value)
    except topology.TopologyError as e:
        raise Bad(str(e)) from None
    return sorted(set(value))


def numa_node(value: Any, from_flag: bool) -> int:
    node = integer(-1, 1023, " (-1: no binding)")(value, from_flag)
    if node >= 0:
        try:
            topology.check_node(node)
        except topology.TopologyError as e:
            raise Bad(f"{e}; or -1 for no binding") from None
    return node


def readable_file(value: Any, from_flag: bool) -> str:
    if not isinstance(value, str):
        raise Bad("not a string; use the path of a readable file")
    if value:
        try:
            with open(value, "rb"):
                pass
        except OSError as e:
            raise Bad(f"cannot read it ({e.strerror}); use the path of a readable file") from None
        if not os.path.isfile(value):
            raise Bad("not a regular file; use the path of a readable file")
    return value


def token(value: Any, from_flag: bool) -> str:
    if not isinstance(value, str) or (value and not TOKEN_RE.fullmatch(value)):
        raise Bad("use 1..4096 printable ASCII characters without spaces")
    return value


def task_params(value: Any, from_flag: bool) -> str:
    accepted = "use 'key=value,...'"
    if not isinstance(value, str):
        raise Bad(f"not a string; {accepted}")
    for item in value.split(",") if value else ():
        key, sep, _ = item.partition("=")
        if not sep or not key:
            raise Bad(f"{item!r} is not key=value; {accepted}")
    return value


def reftask_params(params: str) -> None:
    """The built-in task's own checks, made before an RT process would fail them."""
    names = ", ".join(["joints", *REFTASK_PARAMS])
    for item in params.split(",") if params else ():
        key, _, raw = item.partition("=")
        if key == "joints":
            if raw not in {str(n) for n in range(1, reftask.MAX_JOINTS + 1)}:
                raise Bad(f"joints={raw} is out of range; use 1..{reftask.MAX_JOINTS}")
            continue
        if key not in REFTASK_PARAMS:
            raise Bad(f"the built-in task has no parameter {key!r}; it takes {names}")
        try:
            x = float(raw)
        except ValueError:
            x = math.nan
        positive = REFTASK_PARAMS[key]
        if not math.isfinite(x) or raw.strip() != raw or (x <= 0 if positive else x < 0):
            raise Bad(f"{key}={raw} is not a number {'above 0' if positive else '>= 0'}")


RULES: dict[str, Rule] = {
    "node_id": node_id,
    "listen": hostport(),
    "metrics_listen": hostport(allow_empty=True),
    "data_dir": text,
    "raft": hostport(allow_empty=True),
    "peers": peers,
    "witness": boolean,
    "raft_priority": integer(0, 100),
    "lease_ms": integer(5, 60_000, " ms"),
    "election_timeout_ms": integer(20, 600_000, " ms"),
    "heartbeat_ms": integer(1, 60_000, " ms"),
    "cpus": cpus,
    "period_us": integer(MIN_PERIOD_US, MAX_PERIOD_US, " microseconds"),
    "priority": integer(1, 99),
    "numa_node": numa_node,
    "wake_mode": choice(*WAKE_MODES),
    "task": readable_file,
    "task_params": task_params,
    "joints": integer(1, reftask.MAX_JOINTS),
    "ckpt_every": integer(0, 1_000_000, " cycles (0: off)"),
    "allow_degraded": boolean,
    "health_interval_ms": integer(10, 60_000, " ms"),
    "stall_checks": integer(1, 1000),
    "restart_backoff_max_ms": integer(0, 3_600_000, " ms"),
    "restart_stable_ms": integer(0, 86_400_000, " ms"),
    "checkpoint_keep": integer(1, 10_000),
    "checkpoint_interval_ms": integer(1, 3_600_000, " ms"),
    "lease_timeout_ms": integer(50, 60_000, " ms"),
    "trace_ratio": ratio,
    "trace_budget_pct": percent,
    "log_level": choice(*LOG_LEVELS, aliases={"WARNING": "WARN"}),
    "es_url": url,
    "es_api_key_file": readable_file,
    "es_ca_file": readable_file,
    "es_index_prefix": index_prefix,
    "log_spool_mb": integer(1, 1_000_000, " MiB"),
    "log_store_mb": integer(16, 10_000_000, " MiB"),
    "log_retention_days": number(0, 3650, "use a number of days above 0, up to 3650"),
    "otlp_endpoint": hostport(allow_empty=True),
    "tls_cert": readable_file,
    "tls_key": readable_file,
    "tls_client_ca": readable_file,
    "token": token,
    "token_file": readable_file,
    "auth": choice(*AUTH_MODES),
    "insecure": boolean,
    "watch_per_client": integer(1, MAX_WATCHERS),
    "watch_idle_s": seconds(0, 86_400),
}
