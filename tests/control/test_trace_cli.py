"""`rtctl trace get|list|sampling` as processes, through a real gRPC server over
a fake agent whose traces live in a real TraceStore."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from control.cli.trace import render_waterfall
from control.config import AgentConfig
from control.rpc import service
from control.tracing.store import TraceStore
from tests.control.fake_agent import FakeAgent
from tests.control.test_service import assert_one_line_error, rtctl

pytestmark = pytest.mark.timeout(120)

T0 = 1_764_633_600_000_000_000  # a fixed wall time, so the waterfall is known exactly
US = 1000
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER = "0af7651916cd43dd8448eb211c80319c"


def sp(
    name: str,
    span_id: str,
    parent: str | None,
    start_us: int,
    end_us: int,
    process: str = "rt",
    status: str = "ok",
    message: str = "",
    trace_id: str = TRACE,
    base: int = T0,
) -> dict[str, Any]:
    return {
        "name": name,
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "start_time_ns": base + start_us * US,
        "end_time_ns": base + end_us * US,
        "kind": "internal",
        "status": status,
        "status_message": message,
        "attributes": {},
        "cycle": 7,
        "flags": 1,
        "node": "n1",
        "process": process,
        "pid": 4242,
    }


KNOWN = [
    sp("job.run", "a" * 16, None, 0, 1000, process="agent"),
    sp("rt.cycle", "b" * 16, "a" * 16, 100, 600),
    sp("rt.task_step", "c" * 16, "b" * 16, 200, 300, status="error", message="deadline missed"),
    sp("agent.export", "d" * 16, "a" * 16, 600, 1000, process="agent"),
]


class TraceAgent(FakeAgent):
    """The fake agent with its traces in a real store."""

    def __init__(self, store: TraceStore) -> None:
        super().__init__()
        self.store = store

    def get_trace(self, trace_id: str) -> dict[str, Any]:
        self._enter("get_trace", trace_id)
        return {"trace_id": trace_id, "spans": self.store.get(trace_id)}

    def list_traces(self, slow_ms=0.0, since_ns=0, name="", errors=False, limit=50):
        self._enter("list_traces", slow_ms, since_ns, name, errors, limit)
        return {"traces": self.store.list(slow_ms, since_ns, name, errors, limit)}


@pytest.fixture
def agent(tmp_path) -> Iterator[tuple[TraceAgent, tuple[str, str]]]:
    store = TraceStore(str(tmp_path / "traces"), retention_s=10 * 365 * 86400)
    fake = TraceAgent(store)
    server, port = service.start(fake, AgentConfig(listen="127.0.0.1:0"))
    try:
        yield fake, ("--target", f"127.0.0.1:{port}")
    finally:
        server.stop(None).wait(5)
        store.close()


def test_trace_get_prints_the_waterfall(agent):
    fake, t = agent
    fake.store.add(KNOWN)
    done = rtctl("trace", "get", TRACE, *t)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"trace {TRACE}  4 spans  1.00 ms  ")
    assert lines[0].endswith("  nodes n1  1 error")
    assert lines[1:] == [
        "job.run           |########################################|   1.00 ms  ok      n1/agent",
        "  rt.cycle        |    ####################                |  500.0 us  ok      n1/rt",
        "    rt.task_step  |        ####                            |  100.0 us  ERROR!  n1/rt"
        "  deadline missed",
        "  agent.export    |                        ################|  400.0 us  ok      n1/agent",
    ]


def test_trace_get_json_is_the_stored_spans(agent):
    fake, t = agent
    fake.store.add(KNOWN)
    done = rtctl("trace", "get", TRACE.upper(), "--json", *t)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc == {"trace_id": TRACE, "spans": KNOWN}


def test_trace_get_errors_are_one_line(agent):
    fake, t = agent
    fake.store.add(KNOWN)
    line = assert_one_line_error(rtctl("trace", "get", "not-a-trace", *t), "trace_id")
    assert "32 hex digits" in line
    assert_one_line_error(rtctl("trace", "get", OTHER, *t), f"no trace {OTHER}")
    assert [c[0] for c in fake.calls] == ["get_trace"], "the malformed id never reached the agent"


def test_trace_list_with_filters(agent):
    fake, t = agent
    now = time.time_ns()
    old = now - 3600 * 10**9
    fake.store.add([sp("job.run", "a" * 16, None, 0, 5000, base=old, trace_id=OTHER)])
    fake.store.add(
        [
            {
                **s,
                "start_time_ns": s["start_time_ns"] - T0 + now,
                "end_time_ns": s["end_time_ns"] - T0 + now,
            }
            for s in KNOWN
        ]
    )

    def listed(*args: str) -> list[str]:
        done = rtctl("trace", "list", *args, "--json", *t)
        assert done.returncode == 0, done.stderr
        return [tr["trace_id"] for tr in json.loads(done.stdout)["traces"]]

    assert listed() == [TRACE, OTHER]
    assert listed("--since", "10m") == [TRACE]
    assert listed("--since", "2h") == [TRACE, OTHER]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(old / 1e9 + 60))
    assert listed("--since", iso) == [TRACE]
    assert listed("--slow-ms", "2") == [OTHER]
    assert listed("--errors") == [TRACE]
    assert listed("--name", "rt.task_step") == [TRACE]
    assert listed("--limit", "1") == [TRACE]
    query = [c[1] for c in fake.calls if c[0] == "list_traces"]
    assert query[0] == (0.0, 0, "", False, 50), "no filters: the agent's default limit"
    assert query[-1][4] == 1

    text = rtctl("trace", "list", *t)
    assert text.returncode == 0, text.stderr
    header, first, second = text.stdout.splitlines()
    assert header.split() == ["STARTED", "DURATION", "SPANS", "ERR", "NAME", "NODES", "TRACE", "ID"]
    assert first.split()[2:] == ["1.00", "ms", "4", "!", "job.run", "n1", TRACE]
    assert second.split()[2:] == ["5.00", "ms", "1", "job.run", "n1", OTHER]
    assert rtctl("trace", "list", "--name", "none", *t).stdout.strip() == "no traces"


@pytest.mark.parametrize(
    "args",
    [
        ("list", "--since", "yesterday"),
        ("list", "--slow-ms", "-1"),
        ("list", "--slow-ms", "nan"),
        ("list", "--limit", "0"),
        ("sampling", "1.5"),
        ("get",),
    ],
    ids=" ".join,
)
def test_bad_usage_exits_2_with_one_line(agent, args):
    _, t = agent
    done = rtctl("trace", *args, *t)
    assert done.returncode == 2, done.stderr
    assert_one_line_error(done)


def test_trace_sampling_shows_and_sets_the_ratio(agent):
    fake, t = agent
    done = rtctl("trace", "sampling", *t)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["rt     off", "agent  ratio 1"]
    done = rtctl("trace", "sampling", "0.25", "--json", *t)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ratio"] == 0.25
    assert ("set_trace_sampling", (None, 0.25)) in [(c[0], c[1]) for c in fake.calls]
    done = rtctl("trace-sampling", "get", "--json", *t)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ratio"] == 0.25, "the older spelling still works"
    assert fake.violations == []


def test_a_span_whose_parent_is_missing_starts_its_own_tree():
    orphan = sp("rt.late", "e" * 16, "f" * 16, 500, 1000)
    text = render_waterfall({"trace_id": TRACE, "spans": [KNOWN[0], orphan, KNOWN[3]]})
    names = [line.split("|")[0].rstrip() for line in text.splitlines()[1:]]
    assert names == ["job.run", "  agent.export", "rt.late"]
    looped = [sp("x", "1" * 16, "2" * 16, 0, 10), sp("y", "2" * 16, "1" * 16, 5, 10)]
    assert len(render_waterfall({"trace_id": TRACE, "spans": looped}).splitlines()) == 3
