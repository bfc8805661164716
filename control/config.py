"""Agent configuration: defaults, an optional TOML file, then flags on top."""

from __future__ import annotations

import argparse
import os
import socket
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any

from control.errors import InvalidArgument
from rtcore import topology

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
    lease_timeout_ms: int = 500  # the RT stops actuating when the agent's lease is older
    log_level: str = "INFO"
    es_url: str = ""
    otlp_endpoint: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    token: str = ""
    token_file: str = ""

    @property
    def shm_name(self) -> str:
        return f"rtcore-{self.node_id}"

    def finish(self) -> AgentConfig:
        """Fill derived defaults and check every value; InvalidArgument names the field."""
        if not self.node_id.replace("-", "").replace("_", "").isalnum():
            raise InvalidArgument("node_id", f"{self.node_id!r} must be letters, digits, '-', '_'")
        if not self.data_dir:
            self.data_dir = default_data_dir(self.node_id)
        for name in ("listen", "metrics_listen"):
            check_hostport(name, getattr(self, name), allow_empty=name == "metrics_listen")
        if self.raft:
            check_hostport("raft", self.raft)
        for i, peer in enumerate(self.peers):
            check_hostport(f"peer[{i}]", peer)
        if not 50 <= self.period_us <= 10_000_000:
            raise InvalidArgument("period_us", f"{self.period_us} is out of range 50..10000000")
        if not 1 <= self.priority <= 99:
            raise InvalidArgument("priority", f"{self.priority} is out of range 1..99")
        if self.cpus:
            try:
                topology.check_cpus(self.cpus)
            except topology.TopologyError as e:
                raise InvalidArgument("cpus", str(e)) from None
        if self.health_interval_ms < 10:
            raise InvalidArgument("health_interval_ms", "must be at least 10")
        if self.stall_checks < 1:
            raise InvalidArgument("stall_checks", "must be at least 1")
        if not 50 <= self.lease_timeout_ms <= 60_000:
            raise InvalidArgument(
                "lease_timeout_ms", f"{self.lease_timeout_ms} is out of range 50..60000"
            )
        if self.checkpoint_keep < 1:
            raise InvalidArgument("checkpoint_keep", "must be at least 1")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise InvalidArgument("tls_cert", "TLS needs both a certificate and a key")
        if self.tls_client_ca and not self.tls_cert:
            raise InvalidArgument("tls_client_ca", "mutual TLS needs tls_cert and tls_key too")
        if self.token_file:
            try:
                with open(self.token_file) as f:
                    self.token = f.read().strip()
            except OSError as e:
                raise InvalidArgument(
                    "token_file", f"cannot read {self.token_file}: {e.strerror}"
                ) from None
        return self


def check_hostport(name: str, value: str, allow_empty: bool = False) -> None:
    if allow_empty and not value:
        return
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidArgument(name, f"{value!r} is not HOST:PORT")


FLAG_HELP = {
    "config": "TOML file with any of the settings below (flags override it)",
    "node_id": "this node's name (default: the host name)",
    "listen": f"gRPC address (default {DEFAULT_LISTEN}: loopback only)",
    "metrics_listen": f"Prometheus /metrics address (default {DEFAULT_METRICS}; '' disables)",
    "data_dir": "checkpoints, jobs and logs (default ~/.local/state/rtcore/NODE_ID)",
    "raft": "this node's Raft address HOST:PORT (none: single node)",
    "peer": "another node's Raft address; repeat for each",
    "cpus": "CPUs for the RT thread, e.g. 1 or 2-3",
    "period_us": "RT cycle period in microseconds (default 1000)",
    "priority": "RT SCHED_FIFO priority 1..99 (default 80)",
    "numa_node": "NUMA node for RT memory and CPUs",
    "wake_mode": "sleep (default) or hybrid",
    "task": "control task library (default: built-in reference task)",
    "task_params": "task parameters 'key=value,...'",
    "es_url": "Elasticsearch URL for log export",
    "otlp_endpoint": "OTLP/gRPC HOST:PORT for trace export",
    "tls_cert": "server certificate (PEM) to serve gRPC over TLS",
    "tls_key": "server private key (PEM)",
    "tls_client_ca": "CA (PEM) that client certificates must chain to (mutual TLS)",
    "token_file": "file holding the bearer token every mutating RPC must carry",
    "log_level": "agent and RT log level (DEBUG, INFO, WARN, ERROR, CRITICAL)",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `rtctl agent` flags. Defaults are None so the file's values stand unless given."""
    p.add_argument("--config", help=FLAG_HELP["config"])
    p.add_argument("--node-id", dest="node_id", help=FLAG_HELP["node_id"])
    p.add_argument("--listen", help=FLAG_HELP["listen"])
    p.add_argument("--metrics-listen", dest="metrics_listen", help=FLAG_HELP["metrics_listen"])
    p.add_argument("--data-dir", dest="data_dir", help=FLAG_HELP["data_dir"])
    p.add_argument("--raft", help=FLAG_HELP["raft"])
    p.add_argument("--peer", dest="peers", action="append", help=FLAG_HELP["peer"])
    p.add_argument("--cpus", help=FLAG_HELP["cpus"])
    p.add_argument("--period-us", dest="period_us", type=int, help=FLAG_HELP["period_us"])
    p.add_argument("--priority", type=int, help=FLAG_HELP["priority"])
    p.add_argument("--numa-node", dest="numa_node", type=int, help=FLAG_HELP["numa_node"])
    p.add_argument(
        "--wake-mode", dest="wake_mode", choices=("sleep", "hybrid"), help=FLAG_HELP["wake_mode"]
    )
    p.add_argument("--task", help=FLAG_HELP["task"])
    p.add_argument("--task-params", dest="task_params", help=FLAG_HELP["task_params"])
    p.add_argument("--es-url", dest="es_url", help=FLAG_HELP["es_url"])
    p.add_argument("--otlp-endpoint", dest="otlp_endpoint", help=FLAG_HELP["otlp_endpoint"])
    p.add_argument("--tls-cert", dest="tls_cert", help=FLAG_HELP["tls_cert"])
    p.add_argument("--tls-key", dest="tls_key", help=FLAG_HELP["tls_key"])
    p.add_argument("--tls-client-ca", dest="tls_client_ca", help=FLAG_HELP["tls_client_ca"])
    p.add_argument("--token-file", dest="token_file", help=FLAG_HELP["token_file"])
    p.add_argument("--log-level", dest="log_level", help=FLAG_HELP["log_level"])
    p.add_argument(
        "--systemd-unit",
        dest="systemd_unit",
        metavar="PATH",
        help="write a systemd unit running this node with these settings to PATH "
        "('-' prints it) and exit; the agent keeps its CPUAffinity/NUMAPolicy matching "
        "the placement from then on",
    )


def load(args: argparse.Namespace) -> AgentConfig:
    """Defaults < TOML file (--config) < flags. Raises InvalidArgument."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(read_toml(args.config))
    for f in fields(AgentConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    if isinstance(values.get("cpus"), str):
        try:
            values["cpus"] = topology.parse_cpu_list(values["cpus"])
        except topology.TopologyError as e:
            raise InvalidArgument("cpus", str(e)) from None
    return AgentConfig(**values).finish()


def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise InvalidArgument("config", f"cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidArgument("config", f"{path} is not valid TOML: {e}") from None
    known = {f.name: f for f in fields(AgentConfig)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name == "peer":
            name = "peers"
        if name not in known:
            raise InvalidArgument(f"config.{key}", f"unknown setting in {path}")
        default = AgentConfig.__dataclass_fields__[name]
        expected = type(getattr(AgentConfig(), name)) if default else str
        if name == "cpus" and isinstance(value, str | list):
            out[name] = value if isinstance(value, str) else [int(c) for c in value]
            continue
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise InvalidArgument(f"config.{key}", f"expected {expected.__name__}, got {value!r}")
        out[name] = value
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
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
