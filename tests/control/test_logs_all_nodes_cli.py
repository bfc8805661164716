"""`rtctl logs search|tail --all-nodes` as processes, through real gRPC servers
over fake agents that play the members of one cluster, each with its own
records."""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from control.cli.logs import merge_newest_first, timestamp_ns
from control.config import AgentConfig
from control.errors import FailedPrecondition
from control.rpc import service
from tests.control.fake_agent import FakeAgent, cluster_doc, member
from tests.control.test_service import assert_one_line_error, free_port, rtctl

pytestmark = pytest.mark.timeout(120)


def record(node: str, stamp: str, seq: int) -> dict[str, Any]:
    return {
        "@timestamp": stamp,
        "log": {"level": "INFO"},
        "message": f"{node} record {seq}",
        "service": {"name": "rtcore", "node": {"name": node}},
        "process": {"pid": 42, "name": "rtcore-agent", "thread": {"id": 43}},
        "rtcore": {"node": node},
        "_seq": seq,
    }


class NodeAgent(FakeAgent):
    """A fake agent that answers searches with its own records, newest first."""

    def __init__(self, node_id: str, stamps: list[str]) -> None:
        super().__init__()
        self.node_id = node_id
        self.records = [
            record(node_id, s, seq) for seq, s in sorted(enumerate(stamps, 1), reverse=True)
        ]

    def search_logs(self, query: dict[str, Any]) -> dict[str, Any]:
        self._enter("search_logs", query)
        after = query.get("after_seq")
        if after is None:
            return {"node_id": self.node_id, "logs": self.records[: query["limit"]]}
        newer = sorted((r for r in self.records if r["_seq"] > after), key=lambda r: r["_seq"])
        return {"node_id": self.node_id, "logs": newer[: query["limit"]]}

    def log(self, stamp: str) -> None:
        """A new record, as the node's store would get it."""
        self.records.insert(0, record(self.node_id, stamp, len(self.records) + 1))


# interleaved in time, and apart only in the nanoseconds where it matters
STAMPS = {
    "n1": ["2026-05-01T12:00:01.000000001Z", "2026-05-01T12:00:03.000000000Z"],
    "n2": [
        "2026-05-01T12:00:01.000000002Z",
        "2026-05-01T12:00:02.500000000Z",
        "2026-05-01T12:00:04.000000000Z",
    ],
}


@pytest.fixture
def cluster() -> Iterator[tuple[NodeAgent, str, NodeAgent, str, str]]:
    """n1 and n2 served; the witness n3's address has nobody listening on it."""
    servers: list[grpc.Server] = []
    agents: list[NodeAgent] = []
    addresses: list[str] = []
    for node in ("n1", "n2"):
        agent = NodeAgent(node, STAMPS[node])
        server, port = service.start(agent, AgentConfig(listen="127.0.0.1:0"))
        servers.append(server)
        agents.append(agent)
        addresses.append(f"127.0.0.1:{port}")
    at3 = f"127.0.0.1:{free_port()}"
    members = [
        member("n1", "127.0.0.1:7001", addresses[0]),
        member("n2", "127.0.0.1:7002", addresses[1]),
        member("n3", "127.0.0.1:7003", at3, witness=True, connected=False),
    ]
    for agent in agents:
        agent.cluster = cluster_doc(agent.node_id, "primary", "n1", members)
    yield agents[0], addresses[0], agents[1], addresses[1], at3
    for server in servers:
        server.stop(None).wait(5)


def searched(agent: FakeAgent) -> list[dict[str, Any]]:
    return [args[0] for name, args, _ in agent.calls if name == "search_logs"]


def test_search_merges_every_node_newest_first_and_names_the_silent_one(cluster):
    n1, at1, n2, _, at3 = cluster
    done = rtctl("logs", "search", "--all-nodes", "--json", "--target", at1, "--limit", "4")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert [r["message"] for r in doc["logs"]] == [
        "n2 record 3",
        "n1 record 2",
        "n2 record 2",
        "n2 record 1",  # .000000002 after n1's .000000001: the limit falls after the merge
    ]
    assert doc["node_id"] == "n1"
    assert doc["answered"] == ["n1", "n2"]
    assert doc["not_answered"] == [
        {"node_id": "n3", "listen": at3, "error": doc["not_answered"][0]["error"]}
    ]
    assert "cannot reach the agent" in doc["not_answered"][0]["error"]
    assert done.stderr.splitlines() == [
        f"rtctl: warning: node n3 ({at3}) did not answer: {doc['not_answered'][0]['error']}",
        "rtctl: warning: 2 of 3 nodes answered",
    ]
    # every node got the user's filters, the limit whole
    assert searched(n1) == searched(n2) == [searched(n1)[0]]
    assert searched(n1)[0]["limit"] == 4


def test_filters_reach_every_node(cluster):
    n1, at1, n2, _, _ = cluster
    done = rtctl(
        "logs", "search", "--all-nodes", "--target", at1, "--node", "n2", "--level", "warn", "x"
    )
    assert done.returncode == 0, done.stderr
    for agent in (n1, n2):
        (query,) = searched(agent)
        assert (query["node"], query["text"], query["level_min"]) == ("n2", "x", 30), query


def test_text_shows_each_records_node(cluster):
    _, at1, _, _, _ = cluster
    done = rtctl("logs", "search", "--all-nodes", "--target", at1)
    assert done.returncode == 0, done.stderr
    nodes = [line.split()[2] for line in done.stdout.splitlines()]
    assert nodes == ["n2", "n1", "n2", "n2", "n1"]


def test_tail_prints_the_last_merged_oldest_first(cluster):
    _, at1, _, _, _ = cluster
    done = rtctl("logs", "tail", "--all-nodes", "--json", "--target", at1, "-n", "3")
    assert done.returncode == 0, done.stderr
    logs = json.loads(done.stdout)["logs"]
    assert [r["message"] for r in logs] == ["n2 record 2", "n1 record 2", "n2 record 3"]


def lines_of(stream: Any) -> queue.Queue[str]:
    """The stream's lines as they come (a thread reads them: select() on a
    buffered text stream misses lines already in its buffer)."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(x.rstrip("\n")) for x in stream], daemon=True
    ).start()
    return lines


def read_line(lines: queue.Queue[str], what: str, timeout: float = 15) -> str:
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no {what} line in {timeout} s") from None


@contextlib.contextmanager
def following(target: str) -> Iterator[tuple[queue.Queue[str], queue.Queue[str]]]:
    """`rtctl logs tail -f --all-nodes -n 2 --json` running: its stdout and
    stderr lines; stopped afterwards."""
    follow = subprocess.Popen(
        [sys.executable, "-m", "control.cli", "logs", "tail", "-f", "--all-nodes", "--json"]
        + ["-n", "2", "--target", target],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield lines_of(follow.stdout), lines_of(follow.stderr)
    finally:
        follow.terminate()
        follow.wait(10)
        follow.stdout.close()  # type: ignore[union-attr]
        follow.stderr.close()  # type: ignore[union-attr]


def test_tail_follow_merges_every_nodes_new_records_and_says_who_stops(cluster):
    n1, at1, n2, at2, at3 = cluster
    with following(at1) as (out, err):

        def messages(n: int) -> list[str]:
            return [json.loads(read_line(out, "record"))["message"] for _ in range(n)]

        assert messages(2) == ["n1 record 2", "n2 record 3"]
        assert read_line(err, "warning").startswith(f"rtctl: warning: node n3 ({at3})")
        assert read_line(err, "warning") == "rtctl: warning: 2 of 3 nodes answered"
        # new records on both nodes: each printed once, nothing older again
        # (each node has its own cursor); within a poll they are merged by
        # time, and a poll may come between two of these lines
        n2.log("2026-05-01T12:00:06.000000000Z")
        n1.log("2026-05-01T12:00:05.000000000Z")
        n1.log("2026-05-01T12:00:07.000000000Z")
        got = messages(3)
        assert sorted(got) == ["n1 record 3", "n1 record 4", "n2 record 4"]
        assert got.index("n1 record 3") < got.index("n1 record 4")
        assert searched(n1)[0].get("after_seq") is None  # the first: the last N
        assert {q.get("after_seq") for q in searched(n1)[1:]} <= {2, 3, 4}
        # n2 fails: said once, the rest still follows; said again when it is back
        n2.fail["search_logs"] = FailedPrecondition("the store is closing")
        assert read_line(err, "warning") == (
            f"rtctl: warning: node n2 ({at2}) stopped answering: the store is closing"
        )
        n1.log("2026-05-01T12:00:08.000000000Z")
        assert messages(1) == ["n1 record 5"]
        n2.log("2026-05-01T12:00:09.000000000Z")
        del n2.fail["search_logs"]
        assert read_line(err, "warning") == f"rtctl: warning: node n2 ({at2}) answers again"
        assert messages(1) == ["n2 record 5"]
        # back for good: said once, not at every poll
        n1.log("2026-05-01T12:00:10.000000000Z")
        assert messages(1) == ["n1 record 6"]
        n1.log("2026-05-01T12:00:11.000000000Z")
        assert messages(1) == ["n1 record 7"]
        assert err.empty(), err.get()


def test_tail_follow_starts_a_member_first_heard_late_from_its_newest(cluster):
    """A member that did not answer at start prints its newest N when it
    first does, not its whole history from seq 0."""
    n1, at1, n2, _, _ = cluster
    n2.fail["search_logs"] = FailedPrecondition("the store is opening")
    with following(at1) as (out, _):
        got = [json.loads(read_line(out, "record"))["message"] for _ in range(2)]
        assert got == ["n1 record 1", "n1 record 2"]
        for _ in range(3):
            n2.log("2026-05-01T12:00:30.000000000Z")
        del n2.fail["search_logs"]
        got = [json.loads(read_line(out, "record"))["message"] for _ in range(2)]
        assert got == ["n2 record 5", "n2 record 6"]
        time.sleep(1.5)  # a few more polls: nothing older comes
        assert out.empty(), out.get()


def test_a_lone_node_is_asked_alone_with_a_note(cluster):
    n1, at1, n2, _, _ = cluster
    n1.fail["cluster_status"] = FailedPrecondition("this node runs alone")
    done = rtctl("logs", "search", "--all-nodes", "--json", "--target", at1)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert {r["rtcore"]["node"] for r in doc["logs"]} == {"n1"}
    assert (doc["answered"], doc["not_answered"]) == (["n1"], [])
    assert done.stderr == f"rtctl: warning: {at1} is not part of a cluster: asked it alone\n"
    assert searched(n2) == []


@pytest.mark.parametrize("argv", [("search",), ("tail", "-f")])
def test_no_node_answering_is_an_error_after_naming_each(cluster, argv):
    n1, at1, n2, at2, at3 = cluster
    for agent in (n1, n2):
        agent.fail["search_logs"] = FailedPrecondition("this node has no log store")
    done = rtctl("logs", *argv, "--all-nodes", "--target", at1)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines[0] == f"rtctl: warning: node n1 ({at1}) did not answer: this node has no log store"
    assert lines[1] == f"rtctl: warning: node n2 ({at2}) did not answer: this node has no log store"
    assert lines[2].startswith(f"rtctl: warning: node n3 ({at3}) did not answer: cannot reach")
    assert lines[3:] == [
        "rtctl: warning: 0 of 3 nodes answered",
        "rtctl: error: none of the 3 nodes answered",
    ]


@pytest.mark.parametrize(
    "argv, words",
    [
        (("search", "--trace", "xyz"), ("trace_id",)),
        (("search", "--limit", "0"), ("--limit",)),
        (("search", "--since", "yesterday"), ("--since",)),
    ],
)
def test_bad_input_is_one_line(cluster, argv, words):
    _, at1, _, _, _ = cluster
    done = rtctl("logs", *argv, "--all-nodes", "--target", at1)
    assert_one_line_error(done, *words)


def test_an_unreachable_target_is_the_usual_error():
    done = rtctl("logs", "search", "--all-nodes", "--target", f"127.0.0.1:{free_port()}")
    assert done.returncode == 1
    assert_one_line_error(done, "cannot reach the agent")


# ---- the merge itself -------------------------------------------------------------------


def test_timestamp_ns_reads_nanoseconds_and_sorts_the_unreadable_oldest():
    assert timestamp_ns({"@timestamp": "1970-01-01T00:00:01.000000005Z"}) == 1_000_000_005
    assert timestamp_ns({"@timestamp": "1970-01-01T00:00:02.5Z"}) == 2_500_000_000
    assert timestamp_ns({"@timestamp": "1970-01-01T00:00:03Z"}) == 3_000_000_000
    for bad in ({}, {"@timestamp": "soon"}, {"@timestamp": "1970-01-01T00:00:03.x5Z"}):
        assert timestamp_ns(bad) == 0


def test_merge_keeps_the_newest_of_all_nodes():
    a = [record("a", f"2026-05-01T12:00:0{s}Z", s) for s in (9, 5, 1)]
    b = [record("b", f"2026-05-01T12:00:0{s}Z", s) for s in (8, 7, 6)]

    def merged(limit: int) -> list[int]:
        return [r["_seq"] for r in merge_newest_first([a, b], limit)]

    assert merged(4) == [9, 8, 7, 6]
    assert merged(10) == [9, 8, 7, 6, 5, 1]
