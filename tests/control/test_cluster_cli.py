"""`rtctl cluster status|failover` as processes, through real gRPC servers over
fake agents that play the members of one cluster."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from control.cli.cluster import member_address
from control.config import AgentConfig
from control.proto_gen.rtcore.v1 import control_pb2 as pb
from control.proto_gen.rtcore.v1 import control_pb2_grpc as pb_grpc
from control.rpc import service
from control.rpc.client import Client, ClientError
from tests.control.fake_agent import FakeAgent, cluster_doc, member
from tests.control.test_service import TOKEN, assert_one_line_error, free_port, rtctl

pytestmark = pytest.mark.timeout(120)

ROW_KEYS = {
    "node_id",
    "listen",
    "witness",
    "role",
    "term",
    "leader",
    "lease_age_ms",
    "checkpoint_lag_ms",
    "healthy",
    "connected",
    "error",
}


@pytest.fixture
def serve() -> Iterator[Callable[[], tuple[FakeAgent, str]]]:
    """serve() starts the service, with a token, over a new fake agent."""
    servers: list[grpc.Server] = []

    def start() -> tuple[FakeAgent, str]:
        fake = FakeAgent()
        server, port = service.start(fake, AgentConfig(listen="127.0.0.1:0", token=TOKEN))
        servers.append(server)
        return fake, f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(None).wait(5)


@pytest.fixture
def token(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return ("--token-file", str(path))


@pytest.fixture
def cluster(serve) -> tuple[FakeAgent, str, FakeAgent, str, str]:
    """n1 the primary and n2 a standby, both served; the witness n3's address
    has nobody listening on it."""
    n1, at1 = serve()
    n2, at2 = serve()
    at3 = f"127.0.0.1:{free_port()}"
    members = [
        member("n1", "127.0.0.1:7001", at1),
        member("n2", "127.0.0.1:7002", at2),
        member("n3", "127.0.0.1:7003", at3, witness=True, connected=False),
    ]
    n1.cluster = cluster_doc("n1", "primary", "n1", members)
    n2.cluster = cluster_doc("n2", "standby", "n1", members)
    return n1, at1, n2, at2, at3


def called(fake: FakeAgent, method: str) -> list[tuple]:
    return [args for name, args, _ in fake.calls if name == method]


# ---- status ---------------------------------------------------------------------------


def test_status_json_asks_every_member_and_marks_the_unreachable(cluster):
    n1, at1, n2, at2, at3 = cluster
    done = rtctl("cluster", "status", "--target", at2, "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["target"] == n2.cluster
    rows = {r["node_id"]: r for r in doc["members"]}
    assert list(rows) == ["n1", "n2", "n3"]
    assert all(set(r) == ROW_KEYS for r in rows.values()), rows
    assert rows["n1"] == {
        "node_id": "n1",
        "listen": at1,
        "witness": False,
        "role": "primary",
        "term": 3,
        "leader": "n1",
        "lease_age_ms": 40.0,
        "checkpoint_lag_ms": None,
        "healthy": True,
        "connected": True,
        "error": None,
    }
    assert rows["n2"]["role"] == "standby" and rows["n2"]["checkpoint_lag_ms"] == 2.5
    n3 = rows["n3"]
    assert (n3["role"], n3["witness"], n3["connected"], n3["term"]) == (
        "unreachable",
        True,
        False,
        None,
    )
    assert "cannot reach the agent" in n3["error"] and at3 in n3["error"]
    # the target answers for itself once; each other member is asked once
    assert called(n2, "cluster_status") == [()] and called(n1, "cluster_status") == [()]


def test_status_text_is_an_aligned_table(cluster):
    _, _, _, at2, at3 = cluster
    done = rtctl("cluster", "status", "--target", at2)
    assert done.returncode == 0, done.stderr
    head, header, *rows = done.stdout.splitlines()
    assert head.startswith("as seen by n2 (standby): leader n1  term 3  quorum yes")
    assert header.split() == [
        "NODE",
        "ROLE",
        "TERM",
        "LEADER",
        "LEASE",
        "AGE",
        "ms",
        "CKPT",
        "LAG",
        "ms",
        "HEALTHY",
        "CONNECTED",
    ]
    assert rows[0].split() == ["n1", "primary", "3", "n1", "40.0", "-", "yes", "yes"]
    assert rows[1].split() == ["n2", "standby", "3", "n1", "-", "2.5", "yes", "yes"]
    assert rows[2].split()[:3] == ["n3", "unreachable", "-"]
    assert rows[2].endswith(f"cannot reach the agent at {at3}: is `rtctl agent` running?")
    for title in ("ROLE", "TERM", "CKPT LAG ms", "CONNECTED"):
        column = header.index(title)
        assert all(row[column - 2 : column] == "  " and row[column] != " " for row in rows), title


def test_status_of_members_without_an_address(serve):
    fake, target = serve()  # the fake's default cluster: no member has a listen address
    done = rtctl("cluster", "status", "--target", target, "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["members"]
    assert [(r["node_id"], r["role"]) for r in rows] == [
        ("fake-1", "primary"),
        ("fake-2", "unreachable"),
        ("fake-3", "unreachable"),
    ]
    assert rows[1]["error"] == "no gRPC address known for it yet"


def test_status_of_an_unreachable_target_is_one_line():
    target = f"127.0.0.1:{free_port()}"
    done = rtctl("cluster", "status", "--target", target, "--timeout", "2")
    assert_one_line_error(done, "cannot reach the agent", target)


@pytest.mark.parametrize(
    ("listen", "raft", "address"),
    [
        ("10.0.0.2:7761", "10.0.0.2:7001", "10.0.0.2:7761"),
        ("0.0.0.0:7761", "10.0.0.2:7001", "10.0.0.2:7761"),
        ("[::]:7761", "node2.lan:7001", "node2.lan:7761"),
        ("0.0.0.0:7761", "0.0.0.0:7001", "0.0.0.0:7761"),
        ("", "10.0.0.2:7001", ""),
    ],
)
def test_a_wildcard_listen_address_is_reached_on_the_raft_host(listen, raft, address):
    assert member_address({"listen": listen, "raft": raft}) == address


# ---- failover -------------------------------------------------------------------------


def test_failover_through_a_standby_reaches_the_primary(cluster, token):
    n1, _, n2, at2, _ = cluster
    done = rtctl("cluster", "failover", "--to", "n2", "--target", at2, *token, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"from": "n1", "to": "n2", "term": 4, "gap_ms": 3.5}
    assert called(n1, "cluster_failover") == [("n2",)]
    assert called(n2, "cluster_failover") == []
    assert n1.violations == n2.violations == []


def test_failover_on_the_primary_itself_prints_one_line(cluster, token):
    n1, at1, n2, _, _ = cluster
    done = rtctl("cluster", "failover", "--target", at1, *token)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "failover: n1 -> n2 (term 4, gap 3.5 ms)\n"
    assert called(n1, "cluster_failover") == [(None,)]
    assert n2.calls == [], "the primary was the target: nobody else was asked"


def test_failover_to_an_unknown_node_changes_nothing(cluster, token):
    n1, _, n2, at2, _ = cluster
    done = rtctl("cluster", "failover", "--to", "n9", "--target", at2, *token)
    assert done.returncode == 1
    assert_one_line_error(done, "--to", "'n9'", "n1, n2, n3")
    assert called(n1, "cluster_failover") == called(n2, "cluster_failover") == []
    assert n1.calls == [], "refused before the primary was contacted"


def test_failover_without_a_known_primary(cluster, token):
    n1, _, n2, at2, _ = cluster
    n2.cluster.update(leader="", has_quorum=False, role="candidate")
    done = rtctl("cluster", "failover", "--target", at2, *token)
    line = assert_one_line_error(done)
    assert line == f"rtctl: error: no primary is known to {at2}: the cluster has no quorum"
    assert n1.calls == [] and called(n2, "cluster_failover") == []


def test_failover_errors_of_the_primary_are_one_line(cluster, token):
    n1, _, _, at2, _ = cluster
    done = rtctl("cluster", "failover", "--to", "n3", "--target", at2, *token)
    assert_one_line_error(done, "to: n3 is a witness")
    # a mutation: the primary refuses it without the token
    done = rtctl("cluster", "failover", "--to", "n2", "--target", at2)
    assert_one_line_error(done, "ClusterFailover", "bearer token")
    assert called(n1, "cluster_failover") == [("n3",)]


def test_a_malformed_node_id_never_reaches_the_agent(cluster):
    n1, at1, _, _, _ = cluster
    with Client(at1, token=TOKEN) as client, pytest.raises(ClientError) as info:
        client.cluster_failover("n 1; drop")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert str(info.value).startswith("to: 'n 1; drop' is not a node id")
    assert n1.calls == []


def test_typed_fields_mirror_the_cluster_document(cluster):
    n1, at1, _, _, _ = cluster
    channel = grpc.insecure_channel(at1)
    try:
        stub = pb_grpc.ControlStub(channel)
        st = stub.ClusterStatus(pb.ClusterStatusRequest(), timeout=5)
        assert (st.node_id, st.role, st.term, st.leader) == ("n1", "primary", 3, "n1")
        assert st.HasField("lease_age_ms") and not st.HasField("checkpoint_lag_ms")
        assert st.replication_lag_ms.count == 120
        assert [(m.node_id, m.is_self, m.witness) for m in st.members] == [
            ("n1", True, False),
            ("n2", False, False),
            ("n3", False, True),
        ]
        assert json.loads(st.details_json) == n1.cluster
    finally:
        channel.close()
