"""Traces through a real agent and its RT: a caller's traceparent becomes the
parent of the job it submits and of the RT's work on its commands; the RT's
tracking-error event makes a round trip RT -> agent -> RT in one trace."""

from __future__ import annotations

import json
import os

import pytest

from control.proto_gen.rtcore.v1 import control_pb2 as pb
from control.rpc.client import Client
from tests.conftest import wait_for

pytestmark = pytest.mark.slow

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"


def trace(client: Client, trace_id: str) -> list[dict]:
    try:
        doc = client._document(
            client._call(client._stub.GetTrace, pb.GetTraceRequest(trace_id=trace_id))
        )
    except Exception:  # noqa: BLE001 - not there yet
        return []
    return doc["spans"]


def job_file(tmp_path, t: float = 0.3) -> str:
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"name": "traced", "waypoints": [{"t": t, "q": [0.4] * 6}]}))
    return str(path)


def test_a_callers_trace_reaches_the_rt_through_the_job(agent_factory, tmp_path):
    agent = agent_factory().start()
    agent.call("trace", "sampling", "1")
    env = dict(os.environ, TRACEPARENT=f"00-{CALLER_TRACE}-{CALLER_SPAN}-01")
    from tests.control.agentproc import rtctl

    done = rtctl("job", "submit", job_file(tmp_path), "--target", agent.target, "--json", env=env)
    assert done.returncode == 0, done.stderr
    client = Client(agent.target)
    spans = wait_for(
        lambda: (
            (s := trace(client, CALLER_TRACE))
            and sum(x["name"] == "rt.command" for x in s) >= 3
            and s
        ),
        timeout=15,
        what="the RT's command spans in the caller's trace",
    )
    by_id = {s["span_id"]: s for s in spans}
    submit = [s for s in spans if s["name"] == "agent.submit_job"]
    assert len(submit) == 1 and submit[0]["parent_span_id"] == CALLER_SPAN
    assert submit[0]["kind"] == "server" and submit[0]["process"] == "agent"
    command = [s for s in spans if s["name"] == "bus.command"]
    assert command and all(
        by_id[c["parent_span_id"]]["name"] == "agent.submit_job" for c in command
    )
    rt = [s for s in spans if s["name"] == "rt.command"]
    assert all(
        s["process"] == "rt" and by_id[s["parent_span_id"]]["name"] == "bus.command" for s in rt
    )
    assert all(s["trace_id"] == CALLER_TRACE for s in spans)
    client.close()


def test_a_tracking_error_makes_a_round_trip_in_one_trace(agent_factory, tmp_path):
    """The reference task reports a tracking error while it moves (errlim
    tiny: at most once every thousand cycles); the agent delivers, handles and
    answers it with a command the RT applies, all under the cycle's trace."""
    agent = agent_factory("--task-params", "errlim=0.000001").start()
    agent.call("trace", "sampling", "1")
    agent.call("job", "submit", job_file(tmp_path, t=10.0))
    client = Client(agent.target)

    def round_trip():
        doc = client._document(
            client._call(client._stub.ListTraces, pb.ListTracesRequest(name="bus.deliver", limit=5))
        )
        for t in doc["traces"]:
            spans = trace(client, t["trace_id"])
            names = {s["name"] for s in spans}
            wanted = {"rt.cycle", "rt.emit", "bus.deliver", "agent.handle", "bus.command"}
            if wanted | {"rt.command"} <= names:
                return spans
        return None

    spans = wait_for(round_trip, timeout=20, what="a round trip trace")
    by_id = {s["span_id"]: s for s in spans}
    chain = {s["name"]: s for s in spans}

    def parent(name: str) -> dict:
        return by_id[chain[name]["parent_span_id"]]

    # in the RT: rt.cycle > task.step > rt.emit (producer)
    assert parent("rt.emit")["name"] == "task.step" and chain["rt.emit"]["kind"] == "producer"
    # across to the agent: bus.deliver (consumer) > agent.handle > bus.command (producer)
    assert parent("bus.deliver")["name"] == "rt.emit" and chain["bus.deliver"]["kind"] == "consumer"
    assert parent("agent.handle")["name"] == "bus.deliver"
    assert parent("bus.command")["name"] == "agent.handle"
    # and back into the RT: rt.command (consumer)
    assert parent("rt.command")["name"] == "bus.command" and chain["rt.command"]["process"] == "rt"
    assert all(s["trace_id"] == chain["rt.cycle"]["trace_id"] for s in spans)
    # within a process, a child lies inside its parent
    for name in ("task.step", "rt.emit", "agent.handle", "bus.command"):
        child, up = chain[name], parent(name)
        assert up["start_time_ns"] <= child["start_time_ns"] <= child["end_time_ns"], name
        assert child["end_time_ns"] <= up["end_time_ns"], name
    # a hop starts after what it continues
    assert chain["bus.deliver"]["start_time_ns"] >= chain["rt.emit"]["start_time_ns"]
    assert chain["rt.command"]["start_time_ns"] >= chain["bus.command"]["start_time_ns"]
    client.close()


def test_a_malformed_traceparent_is_counted_and_starts_a_new_trace(agent_factory, tmp_path):
    agent = agent_factory().start()
    agent.call("trace", "sampling", "1")
    from tests.control.agentproc import rtctl

    env = dict(os.environ, TRACEPARENT="00-" + "0" * 32 + "-" + CALLER_SPAN + "-01")
    done = rtctl("job", "submit", job_file(tmp_path), "--target", agent.target, "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert agent.status()["tracing"]["bad_traceparents"] == 1
    listed = json.loads(
        rtctl(
            "trace", "list", "--name", "agent.submit_job", "--target", agent.target, "--json"
        ).stdout
    )
    (summary,) = listed["traces"]
    spans = json.loads(
        rtctl("trace", "get", summary["trace_id"], "--target", agent.target, "--json").stdout
    )["spans"]
    submit = [s for s in spans if s["name"] == "agent.submit_job"]
    assert submit[0]["parent_span_id"] is None, "a new root, not the malformed parent"


def test_a_slow_task_phase_raises_a_bottleneck_alert_that_diagnose_lists(agent_factory, build_task):
    """The burn task spends 15 ms in its `burn.step` span on cycles 3..60 of a
    50 ms loop: over the default 10 ms mean, the phase is named in an alert
    (with example traces) and in `rtctl diagnose`."""
    burn = ";".join(str(c) for c in range(3, 61))
    agent = agent_factory(
        "--task",
        build_task("burn_task"),
        "--task-params",
        f"burn={burn},burn_us=15000",
        "--period-us",
        "50000",
    ).start()
    agent.call("trace", "sampling", "1")

    def raised():
        alerts = agent.call("alerts", "list", "--all")["alerts"]
        return [a for a in alerts if a["subject"] == "burn.step"]

    (alert,) = wait_for(raised, timeout=20, what="a bottleneck alert on burn.step")
    assert alert["kind"] == "bottleneck" and alert["figures"]["mean_ms"] > 10
    assert alert["example_trace_ids"]
    example = agent.call("trace", "get", alert["example_trace_ids"][0])["spans"]
    assert any(s["name"] == "burn.step" for s in example)
    screen = agent.call("diagnose")
    assert any("burn.step" in (i["what"] + i["detail"]) for i in screen["items"])
    with open(os.path.join(agent.data_dir, "agent.log")) as f:
        assert any("CRITICAL" in line and "burn.step" in line for line in f)
