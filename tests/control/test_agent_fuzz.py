"""Arbitrary requests at a real running agent (real RT process behind it):
every answer is a success or a clean refusal, the agent keeps serving, and
its state stays consistent."""

from __future__ import annotations

import math
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control.api import JOB_STATES
from control.rpc.client import Client, ClientError
from tests.conftest import Spawner
from tests.control.agentproc import AgentProc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CLEAN_REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
}

floats = st.floats(allow_nan=True, allow_infinity=True) | st.floats(-2, 2)
waypoint = st.tuples(floats, st.lists(floats, min_size=0, max_size=9))
requests = st.one_of(
    st.tuples(st.just("submit_job"), st.text(max_size=250), st.lists(waypoint, max_size=70)),
    st.tuples(
        st.just("submit_job"),
        st.just("ok"),
        st.lists(st.floats(-1, 1), min_size=6, max_size=6).map(lambda q: [(0.05, q), (0.1, q)]),
    ),
    st.tuples(st.just("get_job"), st.integers(-5, 10**12)),
    st.tuples(st.just("cancel_job"), st.integers(-5, 50)),
    st.tuples(
        st.just("list_jobs"), st.sampled_from([None, *JOB_STATES, "bogus"]), st.integers(-5, 2000)
    ),
    st.tuples(st.just("rt_action"), st.sampled_from(["run", "hold", "safe", "start", "bogus"])),
    st.tuples(
        st.just("set_log_level"),
        st.sampled_from(["DEBUG", "INFO", "warn", "LOUD", ""]),
        st.sampled_from(["rt", "agent", "all", "nobody"]),
    ),
    st.tuples(
        st.just("set_trace_sampling"), st.none() | st.integers(-10, 2_000_000), st.none() | floats
    ),
)


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Iterator[AgentProc]:
    spawn = Spawner()
    a = AgentProc(spawn, tmp_path_factory.mktemp("fuzz"), "fuzz")
    try:
        a.start()
        yield a
    finally:
        spawn.stop_all()
        a.cleanup()


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=requests)
def test_agent_stays_up_and_consistent(agent, request):
    method, *args = request
    with Client(agent.target, timeout=10) as client:
        try:
            getattr(client, method)(*args)
        except ClientError as e:
            assert e.code in CLEAN_REFUSALS, f"{method}{tuple(args)!r} -> {e.code}: {e}"
        status = client.status()
        assert status["rt"]["state"] in ("run", "hold", "safe"), status["rt"]
        jobs = client.list_jobs(None, 1000)
        assert all(j["state"] in JOB_STATES for j in jobs)
        assert sum(j["state"] == "running" for j in jobs) <= 1
        for j in jobs:
            assert 0 <= j["cursor"] <= j["n_waypoints"] and not math.isnan(j["progress"])
