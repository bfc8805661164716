"""Arbitrary requests at a running server: random field values (huge, NaN,
infinite, odd strings), random metadata and raw bytes. The server must answer
each with an expected status code, keep serving (GetStatus works after every
example) and never hand the agent a value outside what the service promises
(the fake agent records any such call in `violations`)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from control.api import JOB_STATES, LOG_LEVELS
from control.config import AgentConfig
from control.proto_gen.rtcore.v1 import control_pb2 as pb
from control.proto_gen.rtcore.v1 import control_pb2_grpc as pb_grpc
from control.rpc import service
from tests.control.fake_agent import FakeAgent

pytestmark = pytest.mark.timeout(120)

TOKEN = "fuzz-token"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CODE = grpc.StatusCode
FIELDS = (
    "action",
    "name",
    "waypoints",
    "id",
    "state",
    "limit",
    "level",
    "target",
    "rt_every_cycles",
    "ratio",
    "kinds",
    "cpus",
    "node",
)
RESERVED_KEYS = {"content-type", "te", "user-agent", "host", "connection", "authorization"}


@dataclass
class Fuzzed:
    fake: FakeAgent
    channel: grpc.Channel
    stub: pb_grpc.ControlStub


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Fuzzed]:
    fake = FakeAgent()
    fake.rt_state = "hold"
    for i in range(4):  # jobs for GetJob and CancelJob to find
        fake.submit_job(f"job {i}", [(1.0, [0.0])])
    server, port = service.start(fake, AgentConfig(listen="127.0.0.1:0", token=TOKEN))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Fuzzed(fake, channel, pb_grpc.ControlStub(channel))
    finally:
        channel.close()
        server.stop(None).wait(5)


# ---- strategies -------------------------------------------------------------------

int64s = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 1, -1, 100, 1000, 1001, 1_000_000, 1_000_001, 2**32, 2**63 - 1]),
)
doubles = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 0.5, 1.0, 1.5, 1e308, -1e308, 5e-324, math.nan, math.inf]),
)
texts = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=300),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
    st.sampled_from(
        ["", " ", "INFO", "debug", "Warn", "rt", "agent", "all", "queued", "DONE", "x" * 201]
    ),
)
any_waypoints = st.lists(
    st.builds(
        lambda t, q: pb.Waypoint(t=t, q=q),
        st.one_of(doubles, st.integers(1, 64).map(float)),
        st.lists(st.one_of(doubles, st.floats(-1000, 1000)), max_size=10),
    ),
    max_size=70,
)


@st.composite
def near_valid_waypoints(draw: st.DrawFn) -> list[pb.Waypoint]:
    """A valid trajectory, then maybe one value replaced: most reach the agent,
    the rest probe one rule at a time."""
    n = draw(st.integers(1, 64))
    joints = draw(st.integers(1, 8))
    steps = draw(st.lists(st.floats(1e-3, 10.0), min_size=n, max_size=n))
    q = st.floats(-1000, 1000)
    wps, t = [], 0.0
    for step in steps:
        t += step
        wps.append(pb.Waypoint(t=t, q=draw(st.lists(q, min_size=joints, max_size=joints))))
    if draw(st.booleans()):
        i = draw(st.integers(0, n - 1))
        if draw(st.booleans()):
            wps[i].t = draw(doubles)
        else:
            wps[i].q[draw(st.integers(0, joints - 1))] = draw(doubles)
    return wps


waypoints = st.one_of(any_waypoints, near_valid_waypoints())


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def mostly(valid: st.SearchStrategy[Any], anything: st.SearchStrategy[Any]) -> Any:
    """Valid values half the time, so requests also get past validation."""
    return st.one_of(valid, anything)


ids = mostly(st.integers(1, 8), int64s)
no_fields = st.just(pb.GetStatusRequest())  # the read-only requests are all empty
REQUESTS: dict[str, st.SearchStrategy[Any]] = {
    "GetStatus": no_fields,
    "GetCheckpointInfo": no_fields,
    "GetLogLevel": no_fields,
    "GetTraceSampling": no_fields,
    "GetPlacement": no_fields,
    "RtAction": st.builds(
        lambda a: pb.RtActionRequest(action=a),
        mostly(st.integers(0, 6), st.integers(-(2**31), 2**31 - 1)),
    ),
    "SubmitJob": st.builds(
        lambda n, w: pb.SubmitJobRequest(name=n, waypoints=w),
        mostly(st.text(st.characters(codec="utf-8"), min_size=1, max_size=20), texts),
        waypoints,
    ),
    "GetJob": st.builds(lambda i: pb.GetJobRequest(id=i), ids),
    "CancelJob": st.builds(lambda i: pb.CancelJobRequest(id=i), ids),
    "ListJobs": st.builds(
        lambda s, n: pb.ListJobsRequest(state=s, limit=n),
        mostly(st.sampled_from(["", *JOB_STATES]), texts),
        optional(mostly(st.integers(1, 1000), int64s)),
    ),
    "SetLogLevel": st.builds(
        lambda lv, t: pb.SetLogLevelRequest(level=lv, target=t),
        mostly(st.sampled_from(LOG_LEVELS).map(str.lower) | st.sampled_from(LOG_LEVELS), texts),
        mostly(st.sampled_from(["", "rt", "agent", "all", "RT"]), texts),
    ),
    "SetTraceSampling": st.builds(
        lambda e, r: pb.SetTraceSamplingRequest(rt_every_cycles=e, ratio=r),
        optional(mostly(st.integers(0, 1_000_000), int64s)),
        optional(mostly(st.floats(0, 1), doubles)),
    ),
    "SetAffinity": st.builds(
        lambda c, i: pb.SetAffinityRequest(cpus=c, isolate=i),
        mostly(st.from_regex(r"[0-9]{1,2}(-[0-9]{1,2})?(,[0-9]{1,2})*", fullmatch=True), texts),
        optional(st.booleans()),
    ),
    "SetNumaNode": st.builds(
        lambda n: pb.SetNumaNodeRequest(node=n),
        mostly(st.integers(0, 7), st.integers(-(2**31), 2**31 - 1)),
    ),
    "Watch": st.builds(
        lambda k: pb.WatchRequest(kinds=k),
        mostly(
            st.lists(st.from_regex(r"[a-z_]{1,20}", fullmatch=True), max_size=5),
            st.lists(texts, max_size=40),
        ),
    ),
}


ascii_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)
metadata_keys = st.from_regex(r"[a-z][a-z0-9_.-]{0,20}", fullmatch=True).filter(
    lambda k: not k.startswith("grpc-") and not k.endswith("-bin") and k not in RESERVED_KEYS
)
metadata = st.builds(
    lambda auth, tp, extra: [
        *((("authorization", auth),) if auth is not None else ()),
        *((("traceparent", tp),) if tp is not None else ()),
        *extra,
    ],
    # mostly the right token, so most mutating requests get past it to validation
    st.integers(0, 9).flatmap(
        lambda i: (
            st.just(f"Bearer {TOKEN}")
            if i < 8
            else optional(st.one_of(st.just(f"Bearer {TOKEN}x"), ascii_values))
        )
    ),
    optional(st.one_of(st.just(TRACEPARENT), ascii_values)),
    st.lists(st.tuples(metadata_keys, ascii_values), max_size=5),
)


# ---- the checks -------------------------------------------------------------------


def watch_code(stub: pb_grpc.ControlStub, request: Any, md: list) -> tuple[Any, str]:
    call = stub.Watch(request, timeout=5, metadata=md)
    call.initial_metadata()  # headers once subscribed, or the call's end
    call.cancel()
    code = call.code()
    return (CODE.OK if code == CODE.CANCELLED else code), call.details() or ""


def unary_code(stub: pb_grpc.ControlStub, method: str, request: Any, md: list) -> tuple[Any, str]:
    try:
        getattr(stub, method)(request, timeout=5, metadata=md)
    except grpc.RpcError as e:
        return e.code(), e.details() or ""
    return CODE.OK, ""


def assert_still_serving(f: Fuzzed) -> None:
    reply = f.stub.GetStatus(pb.GetStatusRequest(), timeout=5)
    assert reply.node_id
    assert f.fake.violations == []


@settings(
    max_examples=20,  # per method: 240 in all
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@pytest.mark.parametrize("method", sorted(REQUESTS))
@given(data=st.data())
def test_arbitrary_requests(fuzzed: Fuzzed, method: str, data: st.DataObject) -> None:
    request = data.draw(REQUESTS[method], label="request")
    md = data.draw(metadata, label="metadata")
    calls_before = len(fuzzed.fake.calls)
    if method == "Watch":
        code, details = watch_code(fuzzed.stub, request, md)
    else:
        code, details = unary_code(fuzzed.stub, method, request, md)

    event(f"{method} {code.name}")  # see the spread: pytest --hypothesis-show-statistics
    authorized = ("authorization", f"Bearer {TOKEN}") in md
    if method in service.MUTATING and not authorized:
        assert code == CODE.UNAUTHENTICATED, (code, details)
        assert len(fuzzed.fake.calls) == calls_before, "refused, yet the agent was called"
    else:
        assert code in (
            CODE.OK,
            CODE.INVALID_ARGUMENT,
            CODE.NOT_FOUND,
            CODE.FAILED_PRECONDITION,
        ), (code, details)
    if code == CODE.INVALID_ARGUMENT:
        assert details.split(":")[0].split("[")[0] in FIELDS, details
        assert len(fuzzed.fake.calls) == calls_before, "invalid, yet the agent was called"
    assert "\n" not in details
    assert_still_serving(fuzzed)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    method=st.sampled_from(sorted(pb.DESCRIPTOR.services_by_name["Control"].methods_by_name)),
    payload=st.binary(max_size=2000),
    authorized=st.booleans(),
)
def test_raw_bytes(fuzzed: Fuzzed, method: str, payload: bytes, authorized: bool) -> None:
    md = [("authorization", f"Bearer {TOKEN}")] if authorized else []
    path = f"/{service.SERVICE_NAME}/{method}"
    if method == "Watch":
        call = fuzzed.channel.unary_stream(path)(payload, timeout=5, metadata=md)
        call.initial_metadata()
        call.cancel()
        code = call.code()
    else:
        try:
            fuzzed.channel.unary_unary(path)(payload, timeout=5, metadata=md)
            code = CODE.OK
        except grpc.RpcError as e:
            code = e.code()
    assert code in (
        CODE.OK,
        CODE.CANCELLED,
        CODE.INVALID_ARGUMENT,
        CODE.NOT_FOUND,
        CODE.FAILED_PRECONDITION,
        CODE.UNAUTHENTICATED,
        CODE.INTERNAL,  # only what grpc itself says of bytes that do not parse
    ), code
    if code == CODE.UNAUTHENTICATED:
        assert method in service.MUTATING and not authorized
    assert_still_serving(fuzzed)


def test_an_oversized_request_is_refused_and_the_server_keeps_serving(fuzzed: Fuzzed) -> None:
    md = [("authorization", f"Bearer {TOKEN}")]
    request = pb.SubmitJobRequest(name="x" * (2 << 20), waypoints=[pb.Waypoint(t=1.0, q=[0])])
    code, _ = unary_code(fuzzed.stub, "SubmitJob", request, md)
    assert code == CODE.RESOURCE_EXHAUSTED
    assert_still_serving(fuzzed)
