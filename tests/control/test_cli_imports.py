"""What a client command loads: `rtctl status` and its kin run start to
finish in well under 200 ms only while they leave numpy, the RT core, the
agent and the benchmarks unloaded. Each case runs in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from control import config
from control.cli import common
from tests.conftest import ROOT

# heavy, or the agent's own: none of these belongs in a client command
FORBIDDEN = ("numpy", "rtcore", "control.node", "control.config", "control.jobs", "bench")

PROBE = """
import json, sys
from control.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def loaded_by(*argv: str) -> tuple[int, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    last = done.stdout.strip().splitlines()[-1]
    report = json.loads(last)
    return report["code"], report["modules"]


def forbidden(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]


# port 1 on loopback: nobody listens, so each call fails fast after the whole
# client path (parser, connection, channel, RPC) has run
NOBODY = ("--target", "127.0.0.1:1", "--timeout", "2")


@pytest.mark.parametrize(
    "argv",
    [
        ("--help",),
        ("status", *NOBODY),
        ("status", "--json", *NOBODY),
        ("rt", "hold", *NOBODY),
        ("rt", "journal", *NOBODY),
        ("rt", "isolation", "show", *NOBODY),
        ("job", "list", *NOBODY),
        ("job", "get", "1", *NOBODY),
        ("checkpoint", "info", *NOBODY),
        ("log-level", "get", *NOBODY),
        ("logs", "search", "--event", "deadline_miss", "--since", "10m", *NOBODY),
        ("logs", "tail", "-f", *NOBODY),
        ("trace-sampling", "get", *NOBODY),
        ("trace", "get", "ab" * 16, *NOBODY),
        ("trace", "list", "--since", "10m", *NOBODY),
        ("trace", "sampling", *NOBODY),
        ("trace", "sampling", "0.5", *NOBODY),
        ("watch", "--count", "1", *NOBODY),
        ("alerts", "list", "--all", *NOBODY),
        ("alerts", "watch", "--count", "1", *NOBODY),
        ("diagnose", "--since", "1h", *NOBODY),
    ],
    ids=" ".join,
)
def test_a_client_command_loads_no_numpy_rt_core_or_agent(argv):
    code, modules = loaded_by(*argv)
    assert code == (0 if argv == ("--help",) else 1)
    assert forbidden(modules) == []
    if argv != ("--help",):
        assert "grpc" in modules, "the call really went through the client"


def test_the_probe_sees_what_agent_and_bench_load():
    """The check above can fail: the commands that need the RT core load it."""
    code, modules = loaded_by("agent", "--help")
    assert code == 0 and "control.config" in forbidden(modules)
    code, modules = loaded_by("bench", "latency", "--help")
    assert code == 0 and "rtcore.main" in forbidden(modules)


def test_the_default_target_is_the_agents_default_listen_address():
    assert common.DEFAULT_TARGET == config.DEFAULT_LISTEN
