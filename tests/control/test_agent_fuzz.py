"""Arbitrary requests at a real running agent (real RT process behind it):
every answer is a success or a clean refusal, the agent keeps serving, and
its state stays consistent. Placement requests really move the RT process
(and, isolated, every other task on the machine), so an isolation is undone
at the end of the example that made it, and the placement the agent started
with is restored at the end."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import grpc
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from control.api import JOB_STATES
from control.placement.isolation import detect_cgroup
from control.rpc.client import Client, ClientError
from tests.conftest import Spawner, wait_for
from tests.control.agentproc import CPU, AgentProc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CLEAN_REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
}
# a watcher over the agent's per-client limit is refused by design
WATCH_REFUSALS = CLEAN_REFUSALS | {grpc.StatusCode.RESOURCE_EXHAUSTED}
# the supervisor's states while no loop state is known, and the loop's own
RT_STATES = {"stopped", "starting", "running", "restarting", "backoff", "stopping", "hung"}
RT_STATES |= {"init", "run", "hold", "safe"}

CPUS = sorted(os.sched_getaffinity(0))
floats = st.floats(allow_nan=True, allow_infinity=True) | st.floats(-2, 2)
waypoint = st.tuples(floats, st.lists(floats, min_size=0, max_size=9))
cpu_lists = st.sampled_from(
    [CPU, str(CPUS[0]), ",".join(map(str, CPUS)), "", " ", "999", "1-x", "-1", "0-4095", "3-1"]
) | st.text(max_size=12)
kinds = st.none() | st.lists(
    st.sampled_from(["rt_state", "deadline_miss", "job_queued", "rt_action", "", "no such"])
    | st.text(max_size=70),
    max_size=40,
)
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
# what moves or restarts the RT process, and event streams: drawn on their own
# so that they are not crowded out by the many shapes of a job
control_requests = st.one_of(
    st.tuples(st.just("set_affinity"), cpu_lists, st.sampled_from([None, False, True])),
    st.tuples(st.just("set_numa_node"), st.sampled_from([0, 1, -1, 1023, 1024]) | st.integers()),
    st.tuples(st.just("placement")),
    st.tuples(st.just("watch"), kinds),
    st.tuples(st.just("rt_action"), st.sampled_from(["stop", "start"])),
)


@pytest.fixture(scope="module")
def agent(tmp_path_factory) -> Iterator[AgentProc]:
    spawn = Spawner()
    a = AgentProc(spawn, tmp_path_factory.mktemp("fuzz"), "fuzz")
    cgroup = detect_cgroup()
    try:
        a.start()
        with Client(a.target, timeout=10) as client:
            started = client.placement()
        yield a
        # the agent survived every request: it still serves and still runs its loop
        with Client(a.target, timeout=30) as client:
            client.set_affinity(started["cpus"], False)
            if client.status()["rt"]["pid"] == 0:
                client.rt_action("start")
            wait_for(
                lambda: client.status()["rt"]["state"] in ("run", "hold", "safe"),
                timeout=30,
                what="the RT loop running again",
            )
            after = client.placement()
        assert (after["cpus"], after["isolated"]) == (started["cpus"], started["isolated"])
    finally:
        spawn.stop_all()
        a.cleanup()
    with open("/proc/self/cpuset") as f:
        assert f.read().strip() == "/", "this process was moved by an isolation left in force"
    if cgroup.version is not None:
        assert not [n for n in os.listdir(cgroup.root) if n.startswith(f"rtcore-{a.node_id}")]


def _send(client: Client, method: str, args: list) -> None:
    refusals = WATCH_REFUSALS if method == "watch" else CLEAN_REFUSALS
    try:
        if method == "watch":
            client.watch(*args).close()
        else:
            getattr(client, method)(*args)
    except ClientError as e:
        assert e.code in refusals, f"{method}{tuple(args)!r} -> {e.code}: {e}"
        outcome = f"refused ({e.code.name})"
    else:
        isolated = method == "set_affinity" and args[1] is True
        outcome = "done" + (" (isolated)" if isolated else "")
    if currently_in_test_context():
        # --hypothesis-show-statistics: which requests were carried out
        event(f"{method}: {outcome}")


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=requests)
def test_agent_stays_up_and_consistent(agent, request):
    _check(agent, request)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=control_requests)
def test_placement_watch_and_rt_restarts_leave_the_agent_serving(agent, request):
    _check(agent, request)


def _check(agent: AgentProc, request: tuple) -> None:
    method, *args = request
    with Client(agent.target, timeout=20) as client:
        try:
            _send(client, method, args)
        finally:
            # an isolation confines every other task on this shared machine: not
            # past the example that made it. Asked for while no RT runs, it is
            # not in force yet ("isolated" false) but kept ("isolate"), and the
            # next RT start applies it when the loop runs, after rt_action
            # returned: in whatever example is going on then
            placement = client.placement()
            if placement["isolate"] or placement["isolated"]:
                client.set_affinity(placement["cpus"], False)
        status = client.status()
        assert status["rt"]["state"] in RT_STATES, status["rt"]
        placement = client.placement()
        assert not placement["isolate"] and not placement["isolated"], placement
        jobs = client.list_jobs(None, 1000)
        assert all(j["state"] in JOB_STATES for j in jobs)
        assert sum(j["state"] == "running" for j in jobs) <= 1
        for j in jobs:
            assert 0 <= j["cursor"] <= j["n_waypoints"] and not math.isnan(j["progress"])


def test_an_isolation_asked_for_while_the_rt_is_stopped_is_undone_too(agent):
    """With no RT process the isolation is only kept for the next one; the next
    start applies it a moment after rt_action returns (on rt_running), inside
    some later example, so the example that asked for it must undo it."""
    for request in [("rt_action", "stop"), ("set_affinity", CPU, True), ("rt_action", "start")]:
        _check(agent, request)
    with Client(agent.target, timeout=20) as client:
        wait_for(
            lambda: client.status()["rt"]["state"] in ("run", "hold", "safe"),
            timeout=30,
            what="the RT loop running again",
        )
        assert not client.placement()["isolated"]
