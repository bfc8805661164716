"""The gRPC service end to end: a real server on a loopback port over the fake
agent, called through control.rpc.client, raw stubs and `rtctl` subprocesses."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from control.config import AgentConfig
from control.errors import ControlError, InvalidArgument
from control.proto_gen.rtcore.v1 import control_pb2 as pb
from control.proto_gen.rtcore.v1 import control_pb2_grpc as pb_grpc
from control.rpc import service
from control.rpc.client import Client, ClientError
from tests.conftest import ROOT, Spawner, wait_for
from tests.control.fake_agent import BIG_INT, NODE_ID, FakeAgent

pytestmark = pytest.mark.timeout(120)

TOKEN = "s3cret-token"
BAD_TOKEN = (("authorization", "Bearer wrong"),)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CODE = grpc.StatusCode


@dataclass
class Served:
    fake: FakeAgent
    server: grpc.Server
    target: str
    opened: list[Any] = field(default_factory=list)

    def client(self, **kw: Any) -> Client:
        c = Client(self.target, **kw)
        self.opened.append(c)
        return c

    def stub(self, credentials: grpc.ChannelCredentials | None = None) -> pb_grpc.ControlStub:
        return pb_grpc.ControlStub(self.channel(credentials))

    def channel(self, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
        if credentials is None:
            ch = grpc.insecure_channel(self.target)
        else:
            ch = grpc.secure_channel(self.target, credentials)
        self.opened.append(ch)
        return ch


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """serve(**AgentConfig fields) starts the service over a new fake agent."""
    started: list[Served] = []

    def start(**settings: Any) -> Served:
        fake = FakeAgent()
        server, port = service.start(fake, AgentConfig(listen="127.0.0.1:0", **settings))
        s = Served(fake, server, f"127.0.0.1:{port}")
        started.append(s)
        return s

    yield start
    for s in started:
        for c in s.opened:
            c.close()
        s.server.stop(None).wait(5)


@pytest.fixture
def served(serve: Callable[..., Served]) -> Served:
    return serve()


def rtctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RTCTL_TARGET", "RTCTL_TOKEN", "TRACEPARENT")
    }
    return subprocess.run(
        [sys.executable, "-m", "control.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**clean, **(env or {})},
    )


def assert_one_line_error(done: subprocess.CompletedProcess, *words: str) -> str:
    assert done.returncode != 0, done.stdout
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("rtctl") and "error" in lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def code_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_csv(tmp_path: Path, name: str = "pick.csv") -> Path:
    path = tmp_path / name
    path.write_text("t,q0,q1\n0.5,0.1,0.2\n1.0,0.3,0.4\n1.5,0.5,0.6\n")
    return path


# ---- every RPC -------------------------------------------------------------------


def test_every_rpc_through_the_client(served):
    c = served.client(token=None)
    st = c.status()
    assert st["node_id"] == NODE_ID and st["rt"]["state"] == "run"
    assert st["agent"]["big"] == BIG_INT, "integers beyond 2**53 come through exactly"
    assert st["rt"]["latency_us"] == {"p50": 3.5, "p99": 12.25, "max": 40.0}
    assert c.rt_action("hold")["rt"]["state"] == "hold"

    job = c.submit_job("pick", [(0.5, [0.1, 0.2]), (1.0, [0.3, 0.4])])
    assert job == {
        "id": 1,
        "name": "pick",
        "state": "queued",
        "waypoints": 2,
        "joints": 2,
        "duration_s": 1.0,
    }
    assert served.fake.calls[-1][1] == ("pick", [(0.5, [0.1, 0.2]), (1.0, [0.3, 0.4])])
    c.submit_job("place", [(1.0, [0.0])])
    assert c.get_job(1)["name"] == "pick"
    assert [j["id"] for j in c.list_jobs()] == [2, 1]
    assert [j["id"] for j in c.list_jobs(limit=1)] == [2]
    assert c.cancel_job(2)["state"] == "cancelled"
    assert [j["id"] for j in c.list_jobs("cancelled", 10)] == [2]
    assert c.checkpoint_info()["disk"]["files"] == ["ckpt-000006.bin", "ckpt-000005.bin"]
    assert c.get_log_level() == {"rt": "INFO", "agent": "INFO"}
    assert c.set_log_level("debug", "rt") == {"rt": "DEBUG", "agent": "INFO"}
    assert c.set_log_level("ERROR") == {"rt": "ERROR", "agent": "ERROR"}
    assert c.get_trace_sampling() == {"rt_every_cycles": 0, "ratio": 1.0}
    assert c.set_trace_sampling(100) == {"rt_every_cycles": 100, "ratio": 1.0}
    assert c.set_trace_sampling(ratio=0.25) == {"rt_every_cycles": 100, "ratio": 0.25}
    assert served.fake.calls[-1][1] == (None, 0.25)
    assert served.fake.violations == []


def test_list_jobs_defaults_to_100_and_sends_the_state_filter(served):
    c = served.client()
    c.list_jobs()
    c.list_jobs("QUEUED", 1000)
    assert [args for name, args, _ in served.fake.calls] == [(None, 100), ("queued", 1000)]


def test_typed_fields_mirror_the_document(served):
    stub = served.stub()
    st = stub.GetStatus(pb.GetStatusRequest(), timeout=5)
    assert (st.node_id, st.role, st.rt.state, st.rt.pid) == (NODE_ID, "primary", "run", 4242)
    assert (st.rt.misses, st.rt.period_us, st.rt.latency_us.p99) == (2, 1000, 12.25)
    assert (st.checkpoint.seq, st.checkpoint.age_ms) == (7, 12.5)
    assert (st.cluster.leader, st.cluster.term, st.cluster.has_quorum) == (NODE_ID, 3, True)
    assert json.loads(st.details_json)["agent"]["big"] == BIG_INT

    served.fake.rt_state = "stopped"
    st = stub.GetStatus(pb.GetStatusRequest(), timeout=5)
    assert st.rt.pid == 0 and json.loads(st.details_json)["rt"]["pid"] is None

    levels = stub.GetLogLevel(pb.GetLogLevelRequest(), timeout=5)
    assert (levels.rt, levels.agent) == ("INFO", "INFO")
    job = stub.SubmitJob(
        pb.SubmitJobRequest(name="j", waypoints=[pb.Waypoint(t=1.0, q=[1.0])]),
        timeout=5,
    )
    assert (job.id, job.name, job.state) == (1, "j", "queued")


def test_a_document_that_does_not_fit_the_typed_fields_still_reaches_rtctl(served):
    original = served.fake.status

    def odd_status() -> dict:
        doc = original()
        doc["cluster"]["leader"] = 3  # a number where the mirror wants a node id
        return doc

    served.fake.status = odd_status  # type: ignore[method-assign]
    st = served.stub().GetStatus(pb.GetStatusRequest(), timeout=5)
    assert st.node_id == "" and json.loads(st.details_json)["cluster"]["leader"] == 3
    assert served.client().status()["cluster"]["leader"] == 3


def test_rtctl_status_json_has_the_contract_fields(served):
    done = rtctl("status", "--target", served.target, "--json")
    assert done.returncode == 0, done.stderr
    st = json.loads(done.stdout)
    for path in (
        "node_id",
        "role",
        "rt.state",
        "rt.pid",
        "rt.cycles",
        "rt.misses",
        "rt.restarts",
        "rt.period_us",
        "rt.latency_us.p50",
        "rt.latency_us.p99",
        "rt.latency_us.max",
        "checkpoint.seq",
        "checkpoint.age_ms",
        "cluster.leader",
        "cluster.term",
        "cluster.has_quorum",
    ):
        node: Any = st
        for key in path.split("."):
            node = node[key]
        assert node is not None, path
    assert st["agent"]["big"] == BIG_INT

    text = rtctl("status", env={"RTCTL_TARGET": served.target})
    assert text.returncode == 0, text.stderr
    assert "run" in text.stdout and "p99 12.25 us" in text.stdout and NODE_ID in text.stdout


def test_every_rtctl_command(serve, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    steps: list[tuple[tuple[str, ...], Callable[[Any], bool], str]] = [
        (("rt", "hold"), lambda d: d["rt"]["state"] == "hold", "rt hold: requested"),
        (("job", "submit", str(write_csv(tmp_path))), lambda d: d["id"] == 1, "job 1 queued"),
        (
            ("job", "submit", str(write_csv(tmp_path, "b.csv")), "--name", "other"),
            lambda d: d["name"] == "other",
            "job 2 queued: other",
        ),
        (("job", "get", "1"), lambda d: d["name"] == "pick", "name: pick"),
        (("job", "list", "--state", "queued", "--limit", "5"), lambda d: len(d) == 2, "other"),
        (("job", "cancel", "2"), lambda d: d["state"] == "cancelled", "job 2 cancelled"),
        (("checkpoint", "info"), lambda d: d["shm"]["seq"] == 7, "seq: 7"),
        (("log-level", "get"), lambda d: d == {"rt": "INFO", "agent": "INFO"}, "rt: INFO"),
        (
            ("log-level", "set", "warn", "--scope", "agent"),
            lambda d: d == {"rt": "INFO", "agent": "WARN"},
            "agent: WARN",
        ),
        (
            ("logs", "search", "--level", "warn", "--event", "deadline_miss", "late", "wake"),
            lambda d: (
                d["query"]["level_min"] == 30
                and d["query"]["event"] == "deadline_miss"
                and d["query"]["text"] == "late wake"
                and d["query"]["after_seq"] is None
                and d["query"]["limit"] == 100
            ),
            "rtcore-rt[42/43] deadline_miss: deadline miss: woke 512.0 us late  cycle=7",
        ),
        (
            ("logs", "search", "--since", "10m", "--trace", "AB" * 16, "--node", "n2"),
            lambda d: (
                0 < time.time_ns() - d["query"]["since_ns"] < 11 * 60 * 10**9
                and d["query"]["trace_id"] == "ab" * 16
                and d["query"]["node"] == "n2"
            ),
            "late_us=512",
        ),
        (("logs", "tail", "-n", "5"), lambda d: d["query"]["limit"] == 5, "deadline_miss"),
        (("trace-sampling", "get"), lambda d: d["ratio"] == 1.0, "rt     off"),
        (
            ("trace-sampling", "set", "--rt-every", "50", "--ratio", "0.5"),
            lambda d: d == {"rt_every_cycles": 50, "ratio": 0.5},
            "every 50 cycles",
        ),
        (
            ("rt", "set-affinity", "--cpus", "1-3,5", "--isolate"),
            lambda d: d["cpus"] == "1,2,3,5" and d["isolated"] is True,
            "isolated           yes",
        ),
        (("rt", "set-numa", "--node", "1"), lambda d: d["numa_node"] == 1, "NUMA node          1"),
        (("rt", "isolation", "show"), lambda d: d["numa_node"] == 1, "CPUs               1,2,3,5"),
    ]
    # the fake's state carries from step to step
    s = serve(token=TOKEN)
    for args, check, _ in steps:
        done = rtctl(*args, "--target", s.target, "--token-file", str(token), "--json")
        assert done.returncode == 0, (args, done.stderr)
        assert check(json.loads(done.stdout)), (args, done.stdout)
    assert s.fake.violations == []
    s = serve(token=TOKEN)
    for args, _, text in steps:
        done = rtctl(*args, env={"RTCTL_TARGET": s.target, "RTCTL_TOKEN": TOKEN})
        assert done.returncode == 0, (args, done.stderr)
        assert text in done.stdout, (args, done.stdout)
    assert s.fake.violations == []


def test_rtctl_job_list_prints_a_table(served, tmp_path):
    assert rtctl("job", "list", "--target", served.target).stdout.strip() == "no jobs"
    served.client().submit_job("first job", [(1.0, [0.0])])
    lines = rtctl("job", "list", "--target", served.target).stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "NAME"]
    assert lines[1].split() == ["1", "queued", "first", "job"]


# ---- invalid requests ---------------------------------------------------------------

NAN, INF = math.nan, math.inf


def _wps(n: int, joints: int = 2) -> list[pb.Waypoint]:
    return [pb.Waypoint(t=float(i + 1), q=[0.0] * joints) for i in range(n)]


def _bad_q() -> list[pb.Waypoint]:
    wps = _wps(5, 3)
    wps[3].q[2] = NAN
    return wps


INVALID = [
    ("RtAction", pb.RtActionRequest(action=0), "action"),  # type: ignore[arg-type]
    ("RtAction", pb.RtActionRequest(action=99), "action"),  # type: ignore[arg-type]
    ("SubmitJob", pb.SubmitJobRequest(name="j"), "waypoints"),
    ("SubmitJob", pb.SubmitJobRequest(name="j", waypoints=_wps(65)), "waypoints"),
    ("SubmitJob", pb.SubmitJobRequest(name="", waypoints=_wps(1)), "name"),
    ("SubmitJob", pb.SubmitJobRequest(name=" ", waypoints=_wps(1)), "name"),
    ("SubmitJob", pb.SubmitJobRequest(name="x" * 201, waypoints=_wps(1)), "name"),
    ("SubmitJob", pb.SubmitJobRequest(name="j", waypoints=_bad_q()), "waypoints[3].q[2]"),
    (
        "SubmitJob",
        pb.SubmitJobRequest(name="j", waypoints=[pb.Waypoint(t=INF, q=[1.0])]),
        "waypoints[0].t",
    ),
    (
        "SubmitJob",
        pb.SubmitJobRequest(name="j", waypoints=[pb.Waypoint(t=1.0, q=[])]),
        "waypoints[0].q",
    ),
    (
        "SubmitJob",
        pb.SubmitJobRequest(name="j", waypoints=[pb.Waypoint(t=1.0, q=[0.0] * 9)]),
        "waypoints[0].q",
    ),
    (
        "SubmitJob",
        pb.SubmitJobRequest(name="j", waypoints=[*_wps(1, 2), pb.Waypoint(t=2.0, q=[0.0])]),
        "waypoints[1].q",
    ),
    (
        "SubmitJob",
        pb.SubmitJobRequest(name="j", waypoints=[pb.Waypoint(t=2.0, q=[0]), *_wps(1, 1)]),
        "waypoints[1].t",
    ),
    ("GetJob", pb.GetJobRequest(id=0), "id"),
    ("GetJob", pb.GetJobRequest(id=-5), "id"),
    ("CancelJob", pb.CancelJobRequest(id=0), "id"),
    ("ListJobs", pb.ListJobsRequest(limit=0), "limit"),
    ("ListJobs", pb.ListJobsRequest(limit=1001), "limit"),
    ("ListJobs", pb.ListJobsRequest(limit=-1), "limit"),
    ("ListJobs", pb.ListJobsRequest(state="sleeping"), "state"),
    ("SetLogLevel", pb.SetLogLevelRequest(level="LOUD"), "level"),
    ("SetLogLevel", pb.SetLogLevelRequest(level=""), "level"),
    ("SetLogLevel", pb.SetLogLevelRequest(level="INFO", target="gpu"), "target"),
    ("SetTraceSampling", pb.SetTraceSamplingRequest(), "rt_every_cycles"),
    ("SetTraceSampling", pb.SetTraceSamplingRequest(rt_every_cycles=-1), "rt_every_cycles"),
    (
        "SetTraceSampling",
        pb.SetTraceSamplingRequest(rt_every_cycles=1_000_001),
        "rt_every_cycles",
    ),
    ("SetTraceSampling", pb.SetTraceSamplingRequest(ratio=NAN), "ratio"),
    ("SetTraceSampling", pb.SetTraceSamplingRequest(ratio=1.5), "ratio"),
    ("SetTraceSampling", pb.SetTraceSamplingRequest(ratio=-INF), "ratio"),
    ("SetAffinity", pb.SetAffinityRequest(cpus=""), "cpus"),
    ("SetAffinity", pb.SetAffinityRequest(cpus="1-x"), "cpus"),
    ("SetAffinity", pb.SetAffinityRequest(cpus="3-1"), "cpus"),
    ("SetAffinity", pb.SetAffinityRequest(cpus="99999"), "cpus"),
    ("SetNumaNode", pb.SetNumaNodeRequest(node=-1), "node"),
    ("SetNumaNode", pb.SetNumaNodeRequest(node=5000), "node"),
]


@pytest.mark.parametrize(
    ("method", "request_", "field_"), INVALID, ids=[f"{m}-{f}" for m, _, f in INVALID]
)
def test_invalid_field_is_named_and_never_reaches_the_agent(served, method, request_, field_):
    stub = served.stub()
    code, details = code_of(
        lambda: getattr(stub, method)(
            request_, timeout=5, metadata=(("authorization", "Bearer x"),)
        )
    )
    assert code == CODE.INVALID_ARGUMENT
    assert details.startswith(f"{field_}: "), details
    assert served.fake.calls == []


@pytest.mark.parametrize(
    "kinds", [[""], ["a b"], ["x" * 65], ["ok", "bad\n"], [f"k{i}" for i in range(33)]]
)
def test_invalid_watch_kinds_are_refused(served, kinds):
    with pytest.raises(ClientError) as info:
        served.client().watch(kinds)
    assert info.value.code == CODE.INVALID_ARGUMENT
    assert str(info.value).startswith("kinds"), str(info.value)
    assert served.fake.calls == []


def test_errors_of_the_agent_keep_their_codes(served):
    c = served.client()
    with pytest.raises(ClientError) as info:
        c.get_job(99)
    assert (info.value.code, str(info.value)) == (CODE.NOT_FOUND, "no job 99")
    c.submit_job("j", [(1.0, [0.0])])
    c.cancel_job(1)
    with pytest.raises(ClientError) as info:
        c.cancel_job(1)
    assert info.value.code == CODE.FAILED_PRECONDITION
    served.fake.fail["checkpoint_info"] = ControlError("the checkpoint store is unreadable")
    with pytest.raises(ClientError) as info:
        c.checkpoint_info()
    assert info.value.code == CODE.INTERNAL
    assert str(info.value) == "the checkpoint store is unreadable"


def test_rtctl_errors_are_one_line(served, tmp_path):
    t = ("--target", served.target)
    line = assert_one_line_error(rtctl("job", "get", "99", *t), "no job 99")
    assert line == "rtctl: error: no job 99"
    # refused by the agent, not by rtctl's own checks
    done = rtctl("trace-sampling", "set", "--rt-every", "2000000", *t)
    assert done.returncode == 1
    assert_one_line_error(done, "rt_every_cycles: ")
    bad = tmp_path / "bad.csv"
    bad.write_text("t,q0\n0.5,0.1\n1.0,nan\n")
    assert_one_line_error(rtctl("job", "submit", str(bad), *t), "bad.csv:3", "q0")
    # refused by the agent: a trace id that is not one, a time range backwards
    assert_one_line_error(rtctl("logs", "search", "--trace", "xyz", *t), "trace_id: ")
    backwards = rtctl("logs", "search", "--since", "1m", "--until", "10m", *t)
    assert_one_line_error(backwards, "until_ns: ")
    missing = rtctl("job", "submit", str(tmp_path / "none.csv"), *t)
    assert_one_line_error(missing, "none.csv", "no such file")
    # rtctl's own checks: bad usage exits 2
    for args in (
        ("job", "get", "0"),
        ("log-level", "set", "LOUD"),
        ("trace-sampling", "set"),
        ("trace-sampling", "set", "--ratio", "nan"),
        ("job", "list", "--limit", "1001"),
        ("status", "--timeout", "0"),
        ("rt", "jump"),
        ("rt", "set-affinity"),
        ("rt", "set-affinity", "--cpus", "1", "--isolate", "--no-isolate"),
        ("rt", "set-numa", "--node", "-1"),
        ("logs", "search", "--level", "loud"),
        ("logs", "search", "--since", "yesterday"),
        ("logs", "search", "--limit", "0"),
        ("logs", "tail", "-n", "1001"),
    ):
        done = rtctl(*args, *t)
        assert done.returncode == 2, (args, done.stderr)
        assert_one_line_error(done)
    for args in (("status", "--target", "no-port"), ("status", "--target", "host:99999")):
        done = rtctl(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert_one_line_error(done)
    env_target = rtctl("status", env={"RTCTL_TARGET": "nowhere"})
    assert env_target.returncode == 2
    assert_one_line_error(env_target, "RTCTL_TARGET")
    assert served.fake.violations == []


def test_unreachable_agent(tmp_path):
    target = f"127.0.0.1:{free_port()}"
    with Client(target, timeout=2) as c, pytest.raises(ClientError) as info:
        c.status()
    assert info.value.code == CODE.UNAVAILABLE
    assert str(info.value) == (f"cannot reach the agent at {target}: is `rtctl agent` running?")
    with Client(target, timeout=2) as c, pytest.raises(ClientError):
        c.watch()
    done = rtctl("status", "--target", target, "--timeout", "2")
    assert done.returncode == 1
    assert_one_line_error(done, "cannot reach the agent", target)


def test_a_second_server_on_the_same_port_fails(served):
    with pytest.raises(ControlError, match="cannot listen on"):
        service.start(FakeAgent(), AgentConfig(listen=served.target))
    assert served.client().status()["node_id"] == NODE_ID


# ---- authentication -----------------------------------------------------------------

MUTATING = [
    ("RtAction", pb.RtActionRequest(action=pb.RT_ACTION_HOLD)),
    ("SubmitJob", pb.SubmitJobRequest(name="j", waypoints=_wps(1))),
    ("CancelJob", pb.CancelJobRequest(id=1)),
    ("SetLogLevel", pb.SetLogLevelRequest(level="DEBUG")),
    ("SetTraceSampling", pb.SetTraceSamplingRequest(ratio=0.5)),
    ("SetAffinity", pb.SetAffinityRequest(cpus="1")),
    ("SetNumaNode", pb.SetNumaNodeRequest(node=0)),
]


@pytest.mark.parametrize(("method", "request_"), MUTATING, ids=[m for m, _ in MUTATING])
def test_mutating_rpcs_need_the_token(serve, method, request_):
    s = serve(token=TOKEN)
    s.fake.submit_job("existing", [(1.0, [0.0])])
    s.fake.calls.clear()
    stub = s.stub()
    call = getattr(stub, method)
    for metadata, word in (
        ((), "needs a bearer token"),
        ((("authorization", "Bearer wrong"),), "invalid bearer token"),
        ((("authorization", f"Bearer {TOKEN}x"),), "invalid bearer token"),
        ((("authorization", TOKEN),), "malformed"),
        ((("authorization", f"Basic {TOKEN}"),), "malformed"),
    ):
        code, details = code_of(lambda md=metadata: call(request_, timeout=5, metadata=md))
        assert code == CODE.UNAUTHENTICATED, metadata
        assert word in details, details
    assert s.fake.calls == [], "a refused call never reaches the agent"
    call(request_, timeout=5, metadata=(("authorization", f"Bearer {TOKEN}"),))
    assert len(s.fake.calls) == 1


def test_reads_need_no_token(serve):
    s = serve(token=TOKEN)
    c = s.client()
    c.status()
    c.list_jobs()
    c.get_log_level()
    c.get_trace_sampling()
    c.checkpoint_info()
    with c.watch():
        pass
    with pytest.raises(ClientError) as info:
        c.get_job(1)
    assert info.value.code == CODE.NOT_FOUND


def test_auth_all_guards_reads_and_watch_but_not_health_or_reflection(serve):
    s = serve(token=TOKEN, auth="all")
    stub = s.stub()
    for call in (
        lambda md: stub.GetStatus(pb.GetStatusRequest(), timeout=5, metadata=md),
        lambda md: stub.ListJobs(pb.ListJobsRequest(), timeout=5, metadata=md),
        lambda md: next(stub.Watch(pb.WatchRequest(), timeout=5, metadata=md)),
    ):
        for md, word in (((), "needs, on this agent, a bearer token"), (BAD_TOKEN, "invalid")):
            code, details = code_of(lambda c=call, m=md: c(m))
            assert code == CODE.UNAUTHENTICATED and word in details, details
    assert s.fake.calls == [], "a refused call never reaches the agent"
    health = health_pb2_grpc.HealthStub(s.channel())
    reply = health.Check(health_pb2.HealthCheckRequest(service=service.SERVICE_NAME), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(s.channel())
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    assert next(reflect.ServerReflectionInfo(iter([request]), timeout=5)).list_services_response
    c = s.client(token=TOKEN)
    assert c.status()["node_id"] == NODE_ID
    with c.watch():
        pass
    with pytest.raises(ClientError) as info:
        s.client().watch()
    assert info.value.code == CODE.UNAUTHENTICATED


def test_clear_text_off_loopback_needs_insecure():
    with pytest.raises(InvalidArgument, match="--insecure"):
        service.start(FakeAgent(), AgentConfig(listen="0.0.0.0:0"))
    with pytest.raises(InvalidArgument, match="needs a token"):
        service.start(FakeAgent(), AgentConfig(listen="127.0.0.1:0", auth="all"))
    server, port = service.start(FakeAgent(), AgentConfig(listen="0.0.0.0:0", insecure=True))
    try:
        with Client(f"127.0.0.1:{port}") as c:
            assert c.status()["node_id"] == NODE_ID
    finally:
        server.stop(None).wait(5)


def test_rtctl_with_and_without_the_token(serve, tmp_path):
    s = serve(token=TOKEN)
    t = ("--target", s.target)
    done = rtctl("rt", "hold", *t)
    assert done.returncode == 1
    assert_one_line_error(done, "bearer token", "--token-file")
    assert_one_line_error(rtctl("rt", "hold", *t, env={"RTCTL_TOKEN": "nope"}), "invalid")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert_one_line_error(rtctl("rt", "hold", *t, "--token-file", str(empty)), "is empty")
    token = tmp_path / "token"
    token.write_text(f"{TOKEN}\n")
    done = rtctl("rt", "hold", *t, "--token-file", str(token))
    assert done.returncode == 0, done.stderr
    assert s.fake.rt_state == "hold"


# ---- TLS ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed: TLS tests need it to make certificates")
    d = tmp_path_factory.mktemp("certs")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True, timeout=60)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=rtcore test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{name}.ext").write_text(ext)
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
            "-extfile", f"{name}.ext")  # fmt: skip
    return {
        n: str(d / n) for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")
    }


def test_tls(serve, certs):
    s = serve(tls_cert=certs["server.pem"], tls_key=certs["server.key"])
    assert s.client(tls_ca=certs["ca.pem"]).status()["node_id"] == NODE_ID
    with pytest.raises(ClientError) as info:
        s.client(timeout=2).status()
    assert info.value.code == CODE.UNAVAILABLE
    assert "--tls-ca" in str(info.value)
    with pytest.raises(ClientError) as info:
        s.client(tls_ca=certs["client.pem"], timeout=2).status()
    assert "TLS failed" in str(info.value)
    done = rtctl("status", "--target", s.target, "--tls-ca", certs["ca.pem"], "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["node_id"] == NODE_ID
    assert rtctl("status", "--target", s.target, "--timeout", "2").returncode == 1


def test_mutual_tls_refuses_a_client_without_a_certificate(serve, certs):
    s = serve(
        tls_cert=certs["server.pem"], tls_key=certs["server.key"], tls_client_ca=certs["ca.pem"]
    )
    with pytest.raises(ClientError) as info:
        s.client(tls_ca=certs["ca.pem"], timeout=2).status()
    assert info.value.code == CODE.UNAVAILABLE
    assert "client certificate" in str(info.value)
    assert s.fake.calls == []
    c = s.client(tls_ca=certs["ca.pem"], tls_cert=certs["client.pem"], tls_key=certs["client.key"])
    assert c.status()["node_id"] == NODE_ID
    flags = ("--tls-ca", certs["ca.pem"])
    done = rtctl("status", "--target", s.target, *flags, "--timeout", "2")
    assert_one_line_error(done, "cannot reach the agent")
    done = rtctl(
        "status", "--target", s.target, *flags,
        "--tls-cert", certs["client.pem"], "--tls-key", certs["client.key"],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert_one_line_error(
        rtctl("status", "--target", s.target, *flags, "--tls-cert", certs["client.pem"]),
        "--tls-key",
    )


def test_unreadable_tls_files_are_named(tmp_path):
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ControlError, match="tls_key: cannot read"):
        service.start(
            FakeAgent(), AgentConfig(listen="127.0.0.1:0", tls_cert=missing, tls_key=missing)
        )


# ---- health, reflection ------------------------------------------------------------------


def test_health_reports_serving(served):
    stub = health_pb2_grpc.HealthStub(served.channel())
    for name in ("", service.SERVICE_NAME):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name


def test_reflection_lists_the_control_service(served):
    stub = reflection_pb2_grpc.ServerReflectionStub(served.channel())
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="rtcore.v1.Control"),
    ]
    listed, found = list(stub.ServerReflectionInfo(iter(requests), timeout=5))
    names = {s.name for s in listed.list_services_response.service}
    assert {"rtcore.v1.Control", "grpc.health.v1.Health"} <= names
    assert found.file_descriptor_response.file_descriptor_proto


# ---- failures inside the agent ---------------------------------------------------------------


def test_an_agent_bug_is_internal_and_the_server_keeps_serving(served):
    c = served.client()
    served.fake.fail["status"] = RuntimeError("boom")
    for _ in range(3):
        with pytest.raises(ClientError) as info:
            c.status()
        assert info.value.code == CODE.INTERNAL
        assert "RuntimeError" in str(info.value) and "\n" not in str(info.value)
    served.fake.fail["list_jobs"] = KeyError("state")
    with pytest.raises(ClientError) as info:
        c.list_jobs()
    assert info.value.code == CODE.INTERNAL
    assert c.get_log_level()["rt"] == "INFO"
    assert_one_line_error(rtctl("status", "--target", served.target), "internal error")
    del served.fake.fail["status"]
    assert c.status()["node_id"] == NODE_ID


def test_an_agent_returning_a_non_document_is_internal(served):
    served.fake.get_log_level = lambda: None  # type: ignore[assignment,return-value]
    with pytest.raises(ClientError) as info:
        served.client().get_log_level()
    assert info.value.code == CODE.INTERNAL and "not a dict" in str(info.value)


# ---- trace context -------------------------------------------------------------------------


def test_traceparent_reaches_the_agent(served):
    served.client(traceparent=TRACEPARENT).status()
    served.client(traceparent="00-zz-not-valid").status()
    served.client().status()
    seen = [tp for _, _, tp in served.fake.calls]
    assert seen == [TRACEPARENT, None, None]
    done = rtctl("status", "--target", served.target, env={"TRACEPARENT": TRACEPARENT})
    assert done.returncode == 0, done.stderr
    assert served.fake.calls[-1][2] == TRACEPARENT
    assert service.current_traceparent() is None


@pytest.mark.parametrize(
    "value",
    [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "",
    ],
)
def test_invalid_traceparents_are_ignored(value):
    assert service.parse_traceparent(value) is None


def test_a_later_traceparent_version_may_carry_more_fields():
    tp = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more"
    assert service.parse_traceparent(tp) == tp


# ---- watch ---------------------------------------------------------------------------------


def test_watch_streams_the_events_the_agent_publishes(served):
    c = served.client(traceparent=TRACEPARENT)
    with c.watch(["deadline_miss", "job_done"]) as events:
        assert len(served.fake.subscriptions) == 1, "subscribed before watch() returns"
        assert served.fake.calls[-1] == ("subscribe", (["deadline_miss", "job_done"],), TRACEPARENT)
        served.fake.publish("deadline_miss", "cycle 17 late", "ERROR", cycle=17, late_us=12.5)
        served.fake.publish("rt_state", "not watched")
        served.fake.publish(
            "job_done", "job 1 done", job_id=1, trace_id="ab" * 16, span_id="cd" * 8
        )
        first, second = next(events), next(events)
    assert first["kind"] == "deadline_miss" and first["level"] == "ERROR"
    assert first["fields"] == {"cycle": 17, "late_us": 12.5}
    assert first["node_id"] == NODE_ID and first["message"] == "cycle 17 late"
    assert abs(first["ts_ns"] / 1e9 - time.time()) < 60
    assert (second["trace_id"], second["span_id"]) == ("ab" * 16, "cd" * 8)
    assert second["fields"] == {"job_id": 1}
    wait_for(lambda: not served.fake.subscriptions, timeout=5, what="the subscription to close")


def test_watch_streams_are_capped_and_unary_calls_still_work(serve):
    served = serve(watch_per_client=service.MAX_WATCHERS)  # the total cap, not the client's
    c = served.client()
    streams = [c.watch() for _ in range(service.MAX_WATCHERS)]
    try:
        with pytest.raises(ClientError) as info:
            c.watch()
        assert info.value.code == CODE.RESOURCE_EXHAUSTED
        assert c.status()["node_id"] == NODE_ID
    finally:
        for s in streams:
            s.close()
    wait_for(lambda: not served.fake.subscriptions, timeout=5, what="the subscriptions to close")
    with c.watch():
        pass


def test_one_client_holds_at_most_watch_per_client_streams(serve):
    s = serve(watch_per_client=2)
    c = s.client()
    first, second = c.watch(), c.watch()
    with pytest.raises(ClientError) as info:
        s.client().watch()  # another connection from the same host is the same client
    assert info.value.code == CODE.RESOURCE_EXHAUSTED
    assert "127.0.0.1 has 2 watch streams open already" in str(info.value)
    assert c.status()["node_id"] == NODE_ID
    first.close()
    wait_for(lambda: len(s.fake.subscriptions) == 1, timeout=5, what="the first to close")
    with c.watch():
        pass
    second.close()


def test_an_idle_watch_stream_is_closed_and_frees_its_slot(serve):
    s = serve(watch_idle_s=0.5, watch_per_client=1)
    c = s.client()
    events = c.watch()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # a stream that sends is never idle
        s.fake.publish("tick")
        assert next(events)["kind"] == "tick"
        time.sleep(0.1)
    started = time.monotonic()
    with pytest.raises(ClientError) as info:
        next(events)
    assert info.value.code == CODE.RESOURCE_EXHAUSTED
    assert "closed after 0.5 s without events" in str(info.value)
    assert time.monotonic() - started < 2.0
    wait_for(lambda: not s.fake.subscriptions, timeout=5, what="the subscription to close")
    with c.watch():  # the one slot of this client is free again
        pass


def test_stopping_the_server_ends_watch_streams(serve):
    s = serve()
    events = s.client().watch()
    s.server.stop(0.5).wait(5)
    with pytest.raises(ClientError):
        next(events)
    assert not s.fake.subscriptions


def test_rtctl_watch(served, spawn: Spawner):
    for args, parse in (
        (("--json",), json.loads),
        ((), lambda line: line),
    ):
        proc = spawn(
            [sys.executable, "-m", "control.cli", "watch", "--target", served.target,
             "--count", "2", "--kind", "a", "--kind", "b", *args],
            cwd=ROOT,
        )  # fmt: skip
        wait_for(lambda: served.fake.subscriptions, timeout=15, what="rtctl watch to subscribe")
        served.fake.publish("a", "first", x=1)
        served.fake.publish("c", "filtered out")
        served.fake.publish("b", "second", trace_id="ab" * 16)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        lines = [parse(line) for line in out.splitlines()]
        assert len(lines) == 2, out
        if args:
            assert [e["kind"] for e in lines] == ["a", "b"]
            assert lines[0]["fields"] == {"x": 1}
        else:
            assert "INFO" in lines[0] and "a: first" in lines[0] and "x=1" in lines[0]
            assert "b: second" in lines[1] and f"trace={'ab' * 16}" in lines[1]
        wait_for(lambda: not served.fake.subscriptions, timeout=5, what="unsubscribe")


def test_rtctl_watch_interrupted(served, spawn: Spawner):
    proc = spawn(
        [sys.executable, "-m", "control.cli", "watch", "--target", served.target], cwd=ROOT
    )
    wait_for(lambda: served.fake.subscriptions, timeout=15, what="rtctl watch to subscribe")
    proc.terminate()
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 130 and err.strip() == "rtctl: error: interrupted"
    wait_for(lambda: not served.fake.subscriptions, timeout=5, what="unsubscribe")


def test_rtctl_help_describes_every_command():
    done = rtctl("--help")
    assert done.returncode == 0
    for command in ("agent", "status", "rt", "job", "checkpoint", "logs", "log-level", "watch"):
        assert f"\n    {command}" in done.stdout, command
    for args in (
        ("agent",),
        ("status",),
        ("rt", "hold"),
        ("rt", "set-affinity"),
        ("rt", "set-numa"),
        ("rt", "isolation", "show"),
        ("job", "submit"),
        ("job", "list"),
        ("log-level", "set"),
        ("logs", "search"),
        ("logs", "tail"),
        ("trace-sampling", "set"),
        ("watch",),
    ):
        out = rtctl(*args, "--help").stdout
        assert "example" in out, args
        if args != ("agent",):
            assert "--target HOST:PORT" in out and "--json" in out and "--token-file" in out
