"""`rtctl agent` settings: every malformed flag or file key is one line on
stderr naming it, its value and what is accepted, exit 2, and nothing started
or written. Each bad case runs the real CLI in a subprocess."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from control import config
from control.config import AgentConfig
from control.errors import InvalidArgument
from tests.conftest import ROOT, Spawner, wait_for
from tests.control.agentproc import AgentProc, free_port

pytestmark = pytest.mark.timeout(600)


@dataclass(frozen=True)
class Case:
    given: str  # a TOML line, or flags separated by spaces
    key: str  # what the error line must name
    value: str  # the bad value, as the error line must show it

    @property
    def flags(self) -> bool:
        return self.given.startswith("--")


# one or more cases for every setting (test_every_setting_has_a_bad_case checks)
FILE_CASES = [
    Case('node_id = "bad id!"', "node_id", '"bad id!"'),
    Case('node_id = ""', "node_id", '""'),
    Case('listen = "nohost"', "listen", '"nohost"'),
    Case('listen = "10.0.0.1:7761"', "listen", '"10.0.0.1:7761"'),
    Case("metrics_listen = 9761", "metrics_listen", "9761"),
    Case("data_dir = 3", "data_dir", "3"),
    Case('raft = "10.0.0.1"', "raft", '"10.0.0.1"'),
    Case("peers = [1]", "peers", "[1]"),
    Case('peer = "10.0.0.2:7771"', "peer", '"10.0.0.2:7771"'),
    Case('witness = "yes"', "witness", '"yes"'),
    Case("raft_priority = 101", "raft_priority", "101"),
    Case("lease_ms = 2", "lease_ms", "2"),
    Case("election_timeout_ms = 5", "election_timeout_ms", "5"),
    Case("heartbeat_ms = 0", "heartbeat_ms", "0"),
    Case('cpus = ["x"]', "cpus", '["x"]'),
    Case('cpus = "0-a"', "cpus", '"0-a"'),
    Case("cpus = [4095]", "cpus", "[4095]"),
    Case("cpus = true", "cpus", "true"),
    Case("period_us = 10", "period_us", "10"),
    Case('period_us = "1000"', "period_us", '"1000"'),
    Case("period_us = 1000.5", "period_us", "1000.5"),
    Case("priority = 100", "priority", "100"),
    Case("numa_node = 999", "numa_node", "999"),
    Case("numa_node = -2", "numa_node", "-2"),
    Case('wake_mode = "fast"', "wake_mode", '"fast"'),
    Case('task = "/nonexistent/task.so"', "task", '"/nonexistent/task.so"'),
    Case('task_params = "kp"', "task_params", '"kp"'),
    Case('task_params = "kp=-1"', "task_params", '"kp=-1"'),
    Case('task_params = "speed=3"', "task_params", '"speed=3"'),
    Case("joints = 0", "joints", "0"),
    Case("ckpt_every = -1", "ckpt_every", "-1"),
    Case('allow_degraded = "yes"', "allow_degraded", '"yes"'),
    Case("health_interval_ms = 1", "health_interval_ms", "1"),
    Case("stall_checks = 0", "stall_checks", "0"),
    Case("restart_backoff_max_ms = -5", "restart_backoff_max_ms", "-5"),
    Case("restart_stable_ms = -1", "restart_stable_ms", "-1"),
    Case("checkpoint_keep = 0", "checkpoint_keep", "0"),
    Case("checkpoint_interval_ms = 0", "checkpoint_interval_ms", "0"),
    Case("lease_timeout_ms = 10", "lease_timeout_ms", "10"),
    Case("trace_ratio = 1.5", "trace_ratio", "1.5"),
    Case("trace_budget_pct = 0", "trace_budget_pct", "0"),
    Case('log_level = "verbose"', "log_level", '"verbose"'),
    Case("es_url = 5", "es_url", "5"),
    Case('es_url = "ftp://logs:21"', "es_url", '"ftp://logs:21"'),
    Case('es_url = "http://:9200"', "es_url", '"http://:9200"'),
    Case('es_url = "http://es:99999"', "es_url", '"http://es:99999"'),
    Case('es_url = "http://es:9200/?x=1"', "es_url", '"http://es:9200/?x=1"'),
    Case('es_url = "http://u:secret@es:0"', "es_url", '"http://***@es:0"'),
    Case('es_api_key_file = "/nonexistent"', "es_api_key_file", '"/nonexistent"'),
    Case('es_ca_file = "{tmp}"', "es_ca_file", '"{tmp}"'),  # a directory
    Case('es_index_prefix = "Logs"', "es_index_prefix", '"Logs"'),
    Case('es_index_prefix = "-x"', "es_index_prefix", '"-x"'),
    Case("log_spool_mb = 0", "log_spool_mb", "0"),
    Case("log_store_mb = 1", "log_store_mb", "1"),
    Case("log_retention_days = 0", "log_retention_days", "0"),
    Case('otlp_endpoint = "collector"', "otlp_endpoint", '"collector"'),
    Case('tls_cert = "/nonexistent.pem"', "tls_cert", '"/nonexistent.pem"'),
    Case('tls_cert = "{tmp}/file"', "tls_cert", '"{tmp}/file"'),  # without tls_key
    Case('tls_key = "{tmp}"', "tls_key", '"{tmp}"'),  # a directory
    Case('tls_client_ca = "{tmp}/file"', "tls_client_ca", '"{tmp}/file"'),  # without a cert
    Case('token = "two words"', "token", '"two words"'),
    Case('token_file = "{tmp}/empty"', "token_file", '"{tmp}/empty"'),
    Case('token_file = "/nonexistent"', "token_file", '"/nonexistent"'),
    Case('auth = "everyone"', "auth", '"everyone"'),
    Case('auth = "all"', "auth", '"all"'),  # without a token
    Case('insecure = "yes"', "insecure", '"yes"'),
    Case("watch_per_client = 0", "watch_per_client", "0"),
    Case("watch_per_client = 9", "watch_per_client", "9"),
    Case("watch_idle_s = 0", "watch_idle_s", "0"),
    Case('watch_idle_s = "5m"', "watch_idle_s", '"5m"'),
    Case("perio_us = 1000", "perio_us", "1000"),  # unknown
    Case("[period]", "period", "{}"),  # a table where a value belongs
    Case("period_us = ", "--config", "{file}"),  # not TOML
]

RAFT = "--raft 127.0.0.1:17001"
TWO_PEERS = f"{RAFT} --peer 127.0.0.1:17002 --peer 127.0.0.1:17003"
FLAG_CASES = [
    Case("--log-level verbose", "--log-level", "verbose"),
    Case("--period-us abc", "--period-us", "abc"),
    Case("--period-us 10", "--period-us", "10"),
    Case("--priority 0", "--priority", "0"),
    Case("--cpus x", "--cpus", "x"),
    Case("--numa-node one", "--numa-node", "one"),
    Case("--wake-mode fast", "--wake-mode", "fast"),
    Case("--auth everyone", "--auth", "everyone"),
    Case("--auth all", "--auth", "all"),
    Case("--listen 0.0.0.0:7761", "--listen", "0.0.0.0:7761"),
    Case("--metrics-listen 9761", "--metrics-listen", "9761"),
    Case("--peer 10.0.0.2", "--peer", "10.0.0.2"),
    # cluster membership: refused before anything starts
    Case("--peer 127.0.0.1:17002 --peer 127.0.0.1:17003", "raft", '""'),
    Case(RAFT, "peers", "[]"),
    Case(f"{RAFT} --peer 127.0.0.1:17002", "--peer", "127.0.0.1:17002"),  # 2 voters
    Case(f"{RAFT} --peer 127.0.0.1:17002 --peer 127.0.0.1:17002", "--peer", "127.0.0.1:17002"),
    Case(f"{RAFT} --peer 127.0.0.1:17001 --peer 127.0.0.1:17002", "--peer", "127.0.0.1:17001"),
    Case(
        f"{RAFT} --peer no-such-host.invalid:17002 --peer 127.0.0.1:17003", "--peer", "no-such-host"
    ),
    Case(
        "--raft 192.0.2.1:17001 --peer 127.0.0.1:17002 --peer 127.0.0.1:17003",
        "--raft",
        "192.0.2.1",
    ),
    Case(f"{TWO_PEERS} --witness --cpus 0", "--cpus", "0"),
    Case(f"{TWO_PEERS} --lease-ms 150", "--lease-ms", "150"),
    Case(
        f"{TWO_PEERS} --heartbeat-ms 100",
        "--heartbeat-ms",
        "100",
    ),
    Case("--node-id a.b", "--node-id", "a.b"),
    Case("--token-file /nonexistent", "--token-file", "/nonexistent"),
    Case("--tls-cert {tmp}/file --tls-key /nonexistent", "--tls-key", "/nonexistent"),
    Case("--task-params kp=1,", "--task-params", "kp=1,"),
    Case("--config /nonexistent.toml", "--config", "/nonexistent.toml"),
]


@pytest.fixture
def node(spawn: Spawner, tmp_path: Path):
    """An agent's name, ports and data directory, and a check that nothing of
    it exists afterwards (an RT process left behind is killed all the same)."""
    a = AgentProc(spawn, tmp_path, f"cfg{os.getpid()}x{free_port()}")
    yield a
    left = os.path.exists(f"/dev/shm/{a.shm}")
    a.cleanup()
    assert not left, f"an RT segment /dev/shm/{a.shm} was created"


def run_agent(a: AgentProc, tmp: Path, case: Case) -> subprocess.CompletedProcess:
    (tmp / "file").write_text("x\n")
    (tmp / "empty").write_text("\n")
    base = {
        "node_id": f'"{a.node_id}"',
        "listen": f'"{a.target}"',
        "metrics_listen": '""',
        "data_dir": f'"{a.data_dir}"',
    }
    given = case.given.replace("{tmp}", str(tmp))
    if case.flags:
        # the case's flags last: where they name a base setting, theirs stands
        base_flags = [(f"--{k.replace('_', '-')}", v.strip('"')) for k, v in base.items()]
        args = [*(part for pair in base_flags for part in pair), *given.split()]
    else:
        key = given.split("=")[0].strip().strip("[]")
        path = tmp / "agent.toml"
        path.write_text("".join(f"{k} = {v}\n" for k, v in base.items() if k != key) + given)
        args = ["--config", str(path)]
    return subprocess.run(
        [sys.executable, "-m", "control.cli", "agent", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("case", FILE_CASES + FLAG_CASES, ids=lambda c: c.given)
def test_a_bad_setting_is_one_line_and_starts_nothing(node, tmp_path, case):
    done = run_agent(node, tmp_path, case)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert line.startswith("rtctl agent: error: "), line
    value = case.value.replace("{tmp}", str(tmp_path))
    value = value.replace("{file}", str(tmp_path / "agent.toml"))
    assert case.key in line and value in line, line
    assert not os.path.exists(node.data_dir), "the data directory was created"


def test_every_setting_has_a_bad_case():
    named = {c.given.split("=")[0].strip() for c in FILE_CASES}
    assert {f.name for f in fields(AgentConfig)} <= named


def _load(*argv: str) -> AgentConfig:
    p = argparse.ArgumentParser()
    config.add_arguments(p)
    return config.load(p.parse_args(["--listen", "127.0.0.1:1", "--node-id", "n", *argv]))


@pytest.mark.parametrize(
    ("given", "level"),
    [("info", "INFO"), ("Debug", "DEBUG"), ("warn", "WARN"), ("WARNING", "WARN")],
)
def test_log_levels_are_names_in_any_case(given, level):
    assert _load("--log-level", given).log_level == level


def test_a_non_loopback_address_needs_tls_or_insecure(tmp_path):
    assert _load("--listen", "[::1]:7761").listen == "[::1]:7761"
    assert _load("--listen", "localhost:7761").listen == "localhost:7761"
    with pytest.raises(InvalidArgument, match="--insecure"):
        _load("--listen", "0.0.0.0:7761")
    assert _load("--listen", "0.0.0.0:7761", "--insecure").insecure
    pem = tmp_path / "x.pem"
    pem.write_text("x")
    cfg = _load("--listen", "0.0.0.0:7761", "--tls-cert", str(pem), "--tls-key", str(pem))
    assert cfg.tls_cert == str(pem)


def test_flags_override_the_file_and_text_is_converted(tmp_path):
    toml = tmp_path / "a.toml"
    toml.write_text('period_us = 500\nwake_mode = "HYBRID"\ncpus = "0"\nwatch_idle_s = 2\n')
    cfg = _load("--config", str(toml), "--period-us", "2000", "--auth", "MUTATIONS")
    assert (cfg.period_us, cfg.wake_mode, cfg.cpus) == (2000, "hybrid", [0])
    assert (cfg.auth, cfg.watch_idle_s) == ("mutations", 2.0)


def test_a_saved_config_reads_back(tmp_path):
    token = tmp_path / "token"
    token.write_text("abc\n")
    cfg = _load("--auth", "all", "--token-file", str(token), "--log-level", "warning")
    toml = tmp_path / "saved.toml"
    toml.write_text(config.to_toml(cfg))
    again = _load("--config", str(toml))
    assert (again.auth, again.token, again.log_level) == ("all", "abc", "WARN")


def test_lower_case_log_level_starts_the_agent(agent_factory):
    a = agent_factory("--log-level", "info", "--period-us", "1000").start(wait_running=False)
    wait_for(a.status, timeout=30, what="rtctl status to answer")
    assert a.call("log-level", "get") == {"rt": "INFO", "agent": "INFO"}
    assert a.proc is not None
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(timeout=20) == 0
