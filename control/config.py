"""Agent configuration: defaults, an optional TOML file, then flags on top."""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import json
import os
import re
import shlex
import socket
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any

from control import settings
from control.errors import InvalidArgument
from rtcore import topology
from rtcore.main import MAX_PERIOD_US, MIN_PERIOD_US

CREDENTIALS_RE = re.compile(r"(://)[^/@\s]*@")
DEFAULT_LISTEN = "127.0.0.1:7761"
DEFAULT_METRICS = "127.0.0.1:9761"


def default_data_dir(node_id: str) -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "rtcore", node_id)


@dataclass
class AgentConfig:
    node_id: str = field(default_factory=lambda: socket.gethostname().split(".")[0] or "node")
    listen: str = DEFAULT_LISTEN
    metrics_listen: str = DEFAULT_METRICS
    data_dir: str = ""
    raft: str = ""
    peers: list[str] = field(default_factory=list)
    witness: bool = False  # votes in the cluster, runs no RT loop
    raft_priority: int = 0  # who becomes primary: the highest, else the first started
    lease_ms: int = 60  # the primary's quorum lease (and its RT's lease) in a cluster
    election_timeout_ms: int = 150  # Raft's minimum election timeout (the maximum is twice it)
    heartbeat_ms: int = 20  # the leader's append-entries period
    cpus: list[int] = field(default_factory=list)
    period_us: int = 1000
    priority: int = 80
    numa_node: int = -1
    wake_mode: str = "sleep"
    task: str = ""
    task_params: str = ""
    joints: int = 6
    ckpt_every: int = 10
    allow_degraded: bool = True
    health_interval_ms: int = 100
    stall_checks: int = 3
    restart_backoff_max_ms: int = 5000
    restart_stable_ms: int = 5000  # a run this long resets the crash streak
    checkpoint_keep: int = 5
    checkpoint_interval_ms: int = 200
    trace_ratio: float = 0.01  # share of cycles and requests traced (late cycles always)
    trace_budget_pct: float = 5.0  # tracing may cost the loop this share of its period
    lease_timeout_ms: int = 500  # the RT stops actuating when the agent's lease is older
    log_level: str = "INFO"
    es_url: str = ""  # Elasticsearch/OpenSearch log export (credentials may be in the URL)
    es_api_key_file: str = ""  # file holding an API key (Authorization: ApiKey ...)
    es_ca_file: str = ""  # CA (PEM) the server's certificate must chain to
    es_index_prefix: str = "rtcore-logs"  # daily indices PREFIX-YYYY.MM.DD
    log_spool_mb: int = 256  # the durable log spool's bound
    log_store_mb: int = 2048  # the embedded log store's bound
    log_retention_days: float = 30.0  # the embedded log store keeps this long
    otlp_endpoint: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    token: str = ""
    token_file: str = ""
    auth: str = "mutations"  # which RPCs need the token: "mutations" or "all"
    insecure: bool = False  # serve a non-loopback address without TLS anyway
    watch_per_client: int = 4
    watch_idle_s: float = 300.0

    @property
    def shm_name(self) -> str:
        return f"rtcore-{self.node_id}"

    def finish(self, labels: dict[str, str] | None = None) -> AgentConfig:
        """Check every value and fill derived defaults. InvalidArgument names the
        setting by its label (how it was given: a flag, a file's key), else as
        `name = value`."""

        def label(name: str) -> str:
            return (labels or {}).get(name) or f"{name} = {_shown(getattr(self, name), False)}"

        for name, rule in settings.RULES.items():
            try:
                setattr(self, name, rule(getattr(self, name), False))
            except settings.Bad as e:
                raise InvalidArgument(label(name), str(e)) from None
        if not self.data_dir:
            self.data_dir = default_data_dir(self.node_id)
        if not self.task:
            try:
                settings.reftask_params(self.task_params)
            except settings.Bad as e:
                raise InvalidArgument(label("task_params"), str(e)) from None
        if bool(self.tls_cert) != bool(self.tls_key):
            which = "tls_cert" if self.tls_cert else "tls_key"
            raise InvalidArgument(label(which), "TLS needs both tls_cert and tls_key")
        if self.tls_client_ca and not self.tls_cert:
            raise InvalidArgument(
                label("tls_client_ca"), "mutual TLS needs tls_cert and tls_key too"
            )
        if self.token_file:
            with open(self.token_file) as f:  # readable: the rule opened it
                try:
                    self.token = settings.token(f.read().strip() or None, False)
                except settings.Bad as e:
                    raise InvalidArgument(
                        label("token_file"), f"the token in it: {e}; an empty file is refused"
                    ) from None
        if self.auth == "all" and not self.token:
            raise InvalidArgument(
                label("auth"), "'all' needs a bearer token: give token_file (--token-file)"
            )
        if self.es_url:
            from control.logs.elastic_settings import ElasticConfigError, ElasticSettings

            try:  # the exporter's own check of the combination (a key and a password, ...)
                ElasticSettings.from_url(
                    self.es_url,
                    index_prefix=self.es_index_prefix,
                    **({"api_key": "given"} if self.es_api_key_file else {}),
                )
            except ElasticConfigError as e:
                raise InvalidArgument(label("es_url"), str(e)) from None
        if self.raft or self.peers or self.witness:
            from control.cluster.members import check_membership

            check_membership(self, label)
        problem = plaintext_problem(self)
        if problem:
            raise InvalidArgument(label("listen"), problem)
        return self


def is_loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plaintext_problem(cfg: AgentConfig) -> str | None:
    """Why cfg may not serve gRPC as it is, or None: without TLS anyone on the
    network reads the calls, bearer token included, so only loopback, or an
    operator who said --insecure, gets clear text."""
    if cfg.tls_cert or cfg.insecure or is_loopback(cfg.listen):
        return None
    return (
        "not a loopback address and TLS is off; give tls_cert and tls_key "
        "(--tls-cert/--tls-key), listen on 127.0.0.1, or pass --insecure to serve clear text"
    )


def check_hostport(name: str, value: str, allow_empty: bool = False) -> None:
    try:
        settings.hostport(allow_empty)(value, False)
    except settings.Bad as e:
        raise InvalidArgument(name, f"{value!r} is {e}") from None


FLAG_HELP = {
    "config": "TOML file with any of the settings below (flags override it)",
    "node_id": "this node's name, 1..64 of letters, digits, '-', '_' (default: the host name)",
    "listen": f"gRPC address (default {DEFAULT_LISTEN}: loopback only; any other address "
    "needs TLS or --insecure)",
    "metrics_listen": f"Prometheus /metrics address (default {DEFAULT_METRICS}; '' disables)",
    "data_dir": "checkpoints, jobs and logs (default ~/.local/state/rtcore/NODE_ID)",
    "raft": "this node's Raft address HOST:PORT (none: single node)",
    "peer": "another node's Raft address; repeat for each",
    "witness": "vote in the cluster without running an RT loop (the third member of a "
    "primary/standby pair)",
    "raft_priority": "preference to become primary, 0..100 (default 0): the highest eligible "
    "node with a complete log wins an election; equal ones: the first started",
    "lease_ms": "the primary's quorum lease in ms (default 60; below election_timeout_ms): "
    "a cut-off primary's RT stops actuating within it",
    "election_timeout_ms": "Raft's minimum election timeout in ms (default 150)",
    "heartbeat_ms": "the Raft leader's heartbeat period in ms (default 20)",
    "cpus": "CPUs for the RT thread, e.g. 1 or 2-3",
    "period_us": f"RT cycle period in microseconds, {MIN_PERIOD_US}..{MAX_PERIOD_US} "
    "(default 1000)",
    "priority": "RT SCHED_FIFO priority 1..99 (default 80)",
    "numa_node": "NUMA node for RT memory and CPUs (default -1: none)",
    "wake_mode": "sleep (default) or hybrid",
    "task": "control task library (default: built-in reference task)",
    "task_params": "task parameters 'key=value,...'",
    "es_url": "Elasticsearch/OpenSearch URL for log export, http(s)://[USER:PASSWORD@]HOST:PORT",
    "es_api_key_file": "file holding an Elasticsearch API key (instead of a user and password)",
    "es_ca_file": "CA certificate (PEM) for an https --es-url",
    "es_index_prefix": "log indices are PREFIX-YYYY.MM.DD (default rtcore-logs)",
    "log_spool_mb": "size bound of the durable log spool in MiB (default 256; when full, "
    "DEBUG/INFO are dropped first, counted)",
    "log_store_mb": "size bound of the embedded log store in MiB (default 2048)",
    "log_retention_days": "days the embedded log store keeps logs (default 30)",
    "otlp_endpoint": "OTLP/gRPC HOST:PORT for trace export",
    "tls_cert": "server certificate (PEM) to serve gRPC over TLS",
    "tls_key": "server private key (PEM)",
    "tls_client_ca": "CA (PEM) that client certificates must chain to (mutual TLS)",
    "token_file": "file holding the bearer token RPCs must carry (see --auth)",
    "auth": "which RPCs need the token: mutations (default) or all (reads and watch too; "
    "the health check and reflection stay open)",
    "insecure": "serve a non-loopback --listen address without TLS (the calls and the token "
    "cross the network in clear text)",
    "log_level": "agent and RT log level: DEBUG, INFO, WARN (or WARNING), ERROR, CRITICAL, "
    "any case (default INFO)",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `rtctl agent` flags. Defaults are None so the file's values stand unless
    given; values stay text here and go through the same rules as the file's."""
    p.add_argument("--config", help=FLAG_HELP["config"])
    for name in FLAG_HELP:
        if name in ("config", "peer", "insecure", "witness"):
            continue
        flag = "--" + name.replace("_", "-")
        metavar = {"auth": "{mutations,all}", "wake_mode": "{sleep,hybrid}"}.get(name)
        p.add_argument(flag, dest=name, metavar=metavar, help=FLAG_HELP[name])
    p.add_argument("--peer", dest="peers", action="append", help=FLAG_HELP["peer"])
    p.add_argument("--insecure", action="store_true", default=None, help=FLAG_HELP["insecure"])
    p.add_argument("--witness", action="store_true", default=None, help=FLAG_HELP["witness"])
    p.add_argument(
        "--systemd-unit",
        dest="systemd_unit",
        metavar="PATH",
        help="write a systemd unit running this node with these settings to PATH "
        "('-' prints it) and exit; the agent keeps its CPUAffinity/NUMAPolicy matching "
        "the placement from then on",
    )


def load(args: argparse.Namespace) -> AgentConfig:
    """Defaults < TOML file (--config) < flags. Raises InvalidArgument naming
    the flag or the file's key, with the value given and what is accepted."""
    values: dict[str, Any] = {}
    labels: dict[str, str] = {}
    path = getattr(args, "config", None)
    if path:
        for name, (key, value) in read_toml(path).items():
            values[name] = value
            labels[name] = f"{key} = {_shown(value, False)} in {path}"
    for f in fields(AgentConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            flag = "--peer" if f.name == "peers" else "--" + f.name.replace("_", "-")
            values[f.name] = v
            labels[f.name] = flag if v is True else f"{flag} {_shown(v, True)}"
    checked: dict[str, Any] = {}
    for name, value in values.items():
        try:
            checked[name] = settings.RULES[name](value, labels[name].startswith("--"))
        except settings.Bad as e:
            raise InvalidArgument(labels[name], str(e)) from None
    return AgentConfig(**checked).finish(labels)


def _shown(value: Any, flag: bool) -> str:
    """A value for an error line: as typed when that is plain, else quoted
    with escapes, so a newline in it cannot split the line."""
    if flag:
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        text = text if text and shlex.quote(text) == text else json.dumps(text)
    else:
        text = _toml_value(value)
    # a URL's password never reaches a terminal or a log
    text = CREDENTIALS_RE.sub(r"\1***@", text)
    return text if len(text) <= 80 else text[:77] + "..."


def read_toml(path: str) -> dict[str, tuple[str, Any]]:
    """The file's settings: field name -> (key as written, value as read)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise InvalidArgument(f"--config {path}", f"cannot read it: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"--config {path}", f"not valid TOML: {e}") from None
    known = [f.name for f in fields(AgentConfig)]
    out: dict[str, tuple[str, Any]] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name == "peer":
            name = "peers"
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise InvalidArgument(
                f"{key} = {_shown(value, False)} in {path}",
                f"unknown setting; {hint}`rtctl agent --help` lists them (file keys use '_')",
            )
        out[name] = (key, value)
    return out


def to_toml(cfg: AgentConfig) -> str:
    """The settings that differ from the defaults, as a file `--config` reads."""
    default = AgentConfig(node_id=cfg.node_id)
    lines = []
    for f in fields(AgentConfig):
        value = getattr(cfg, f.name)
        if value == getattr(default, f.name) and f.name != "node_id":
            continue
        if f.name == "token":
            continue  # a secret stays in its token_file
        if f.name == "cpus":
            value = topology.format_cpu_list(value)
        lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # a JSON string is a TOML basic string: control characters come out escaped
    return json.dumps(value if isinstance(value, str) else str(value))
