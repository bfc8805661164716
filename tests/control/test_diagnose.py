"""`diagnose`: the operator's screen built from a status document shaped by the
agent's own status code, alerts and slow spans; then `rtctl diagnose`
through a real gRPC server over a fake agent."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from control.config import AgentConfig
from control.node import status as node_status
from control.rpc import service
from control.tracing.diagnose import diagnose
from tests.control.fake_agent import FakeAgent
from tests.control.test_service import assert_one_line_error, rtctl

pytestmark = pytest.mark.timeout(120)

S = 10**9
NOW = 1_700_000_000 * S
SINCE = NOW - 15 * 60 * S


def supervisor(**changes: Any) -> dict[str, Any]:
    """control.rt.supervisor.Supervisor.info() of a running RT."""
    info = {
        "state": "running",
        "pid": 4242,
        "restarts": 0,
        "adopted": False,
        "crash_streak": 0,
        "backoff_ms": 0,
        "last_exit": "",
        "last_error": "",
        "watcher_faults": 0,
        "callback_faults": 0,
        "segment_remaps": 0,
    }
    return info | changes


def status_doc(sup: dict[str, Any] | None = None, **rt: Any) -> dict[str, Any]:
    """A status document as the agent builds it (rt from node.status.rt_section)."""
    section = node_status.rt_section(None, sup or supervisor(), 1000)
    section.update(
        {"state": "run", "cycles": 100_000, "actuating": True, "degraded": []},
        ring_dropped={"log": 0, "span": 0, "event": 0, "journal": 0},
    )
    section.update(rt)
    return {
        "node_id": "n1",
        "role": node_status.role(section),
        "rt": section,
        "checkpoint": {"seq": 40, "age_ms": 80.0, "cycle": 39_990, "disk_seq": 40},
        "cluster": {"leader": "n1", "term": 0, "has_quorum": True, "members": ["n1"]},
        "placement": {
            "cpus": "3",
            "isolated": True,
            "numa_node": 0,
            "numa_single_node": True,
            "numa_local_pages_pct": 100.0,
            "numa_local_access_pct": 100.0,
        },
        "drainer": {
            "batches": 10,
            "records": 1000,
            "faults": 0,
            "subscribers": {
                "spans": {"delivered": 10, "dropped": 0, "queued": 0, "faults": 0},
                "logs": {"delivered": 10, "dropped": 0, "queued": 0, "faults": 0},
            },
        },
        "agent": {"pid": 1, "lease": {"timeout_ms": 200, "renewals": 50, "failures": 0}},
    }


def alert(subject: str, active: bool = True, cleared_at: int | None = None) -> dict[str, Any]:
    return {
        "id": 1,
        "kind": "bottleneck",
        "subject": subject,
        "active": active,
        "message": f"bottleneck: span {subject} mean 25 ms over 10 ms",
        "figures": {"mean_ms": 25.0, "p99_ms": 60.0, "count": 40},
        "threshold": {"mean_ms": 10.0, "p99_ms": None},
        "exceeded": ["mean_ms"],
        "example_trace_ids": ["aa" * 16, "bb" * 16],
        "raised_at": NOW - 60 * S,
        "cleared_at": cleared_at,
        "cleared_figures": None,
    }


def by_what(doc: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {item["what"]: item for item in doc["items"]}


def test_a_healthy_node_has_nothing_to_show():
    doc = diagnose(status_doc(), [], SINCE, [], now_ns=NOW)
    assert doc["items"] == []
    assert doc["summary"].startswith("node n1 (primary): nothing needs attention")
    assert "last 15m" in doc["summary"] and "RT run, 100000 cycles" in doc["summary"]
    assert (doc["node_id"], doc["role"], doc["since_ns"], doc["now_ns"]) == (
        "n1",
        "primary",
        SINCE,
        NOW,
    )


def test_misses_restarts_drops_and_alerts_each_name_the_command_that_shows_more():
    sup = supervisor(restarts=3, crash_streak=2, last_exit="killed by SIGSEGV", watcher_faults=1)
    st = status_doc(
        sup,
        restarts=3,
        misses=25,
        actuating=False,
        ring_dropped={"log": 3, "span": 12, "event": 0, "journal": 0},
    )
    st["drainer"]["subscribers"]["spans"]["dropped"] = 7
    alerts = [
        alert("agent.save"),
        alert("plan", active=False, cleared_at=NOW - 60 * S),
        alert("old", active=False, cleared_at=SINCE - S),  # cleared before the window
    ]
    doc = diagnose(st, alerts, SINCE, now_ns=NOW)
    items = by_what(doc)

    miss = items["25 deadline misses"]
    assert miss["severity"] == "ERROR"
    assert miss["more"] == "rtctl logs search --event deadline_miss --since 15m"
    assert "25 of 100000 cycles (0.025%)" in miss["detail"]

    restarts = items["the RT process restarted 3 times"]
    assert restarts["severity"] == "ERROR" and restarts["more"] == "rtctl status"
    assert "killed by SIGSEGV" in restarts["detail"] and "2 crashes in a row" in restarts["detail"]
    assert items["the supervisor hit 1 fault"]["more"] == "rtctl status --json"

    drops = items["the RT dropped 15 records (ring full)"]
    assert drops["severity"] == "WARN" and drops["detail"].startswith("log 3, span 12;")
    lost = items["the agent's spans pipeline lost records"]
    assert "7 batches dropped" in lost["detail"]

    fenced = items["this node is fenced: its RT loop drives no outputs"]
    assert fenced["severity"] == "WARN" and fenced["more"] == "rtctl rt journal"

    bottleneck = items["bottleneck in agent.save"]
    assert bottleneck["severity"] == "CRITICAL"
    assert bottleneck["more"] == f"rtctl trace get {'aa' * 16}"
    assert "mean 25.0 ms (limit 10.0)" in bottleneck["detail"]
    cleared = items["bottleneck in plan cleared"]
    assert cleared["severity"] == "INFO" and cleared["more"] == "rtctl alerts list --all"
    assert cleared["detail"].startswith("cleared 1m ago; raised as: bottleneck: span plan")
    assert not any("old" in what for what in items)

    assert [i["severity"] for i in doc["items"]] == sorted(
        (i["severity"] for i in doc["items"]),
        key=["CRITICAL", "ERROR", "WARN", "INFO"].index,
    )
    assert doc["items"][0]["what"] == "bottleneck in agent.save"
    assert doc["counts"] == {"CRITICAL": 1, "ERROR": 2, "WARN": 4, "INFO": 1}
    assert doc["summary"] == (
        "node n1 (fenced): 1 critical, 2 errors, 4 warnings; worst: bottleneck in "
        "agent.save (alerts and spans of the last 15m)"
    )


def test_the_log_pipeline_spool_drops_malformed_records_and_a_failing_sink():
    st = status_doc()
    st["logs"] = {
        "spool": {
            "dropped": {"DEBUG": 40, "INFO": 0, "WARN": 2},
            "last_error": "",
            "sinks": {"store": {"lag_records": 0}, "elastic": {"lag_records": 900}},
        },
        "rt_malformed": {"unknown_template": 3},
        "sinks": {
            "store": {"error": None},
            "elastic": {"last_error": "cannot reach Elasticsearch at es:9200: refused"},
        },
    }
    items = by_what(diagnose(st, [], SINCE, now_ns=NOW))
    drops = items["the log spool dropped 42 records"]
    assert drops["severity"] == "ERROR" and drops["detail"].startswith("DEBUG 40, WARN 2")
    assert items["the RT wrote 3 malformed log records"]["detail"] == "unknown_template 3"
    behind = items["log sink elastic is 900 records behind"]
    assert behind["severity"] == "WARN" and "cannot reach" in behind["detail"]
    assert not any("store" in what for what in items)
    st["logs"] = {"spool": None, "spool_error": "spool directory /x is not usable: Read-only"}
    items = by_what(diagnose(st, [], SINCE, now_ns=NOW))
    assert items["the log spool is unavailable: logs are not kept"]["severity"] == "ERROR"


def test_a_failed_rt_a_lost_journal_and_no_quorum_are_critical():
    sup = supervisor(state="failed", pid=0, last_error="task init returned -22")
    st = status_doc(sup, ring_dropped={"log": 0, "span": 0, "event": 0, "journal": 1})
    st["rt"]["state"] = "failed"
    st["cluster"]["has_quorum"] = False
    items = by_what(diagnose(st, [], SINCE, now_ns=NOW))
    failed = items["the RT loop is failed"]
    assert failed["severity"] == "CRITICAL" and "task init returned -22" in failed["detail"]
    assert items["the RT dropped actuation journal records"]["more"] == "rtctl rt journal"
    assert items["the cluster has no quorum"]["severity"] == "CRITICAL"
    assert not any("checkpoint" in what for what in items), "no RT, no checkpoint to expect"


def test_placement_checkpoint_and_lease_warnings():
    st = status_doc(degraded=["sched_fifo"])
    st["placement"]["numa_local_pages_pct"] = 60.0
    st["checkpoint"]["age_ms"] = 45_000.0
    st["agent"]["lease"]["failures"] = 2
    items = by_what(diagnose(st, [], SINCE, now_ns=NOW))
    assert items["the RT memory is not all on its NUMA node"]["more"] == "rtctl rt isolation show"
    assert (
        "60.0% of its pages local" in items["the RT memory is not all on its NUMA node"]["detail"]
    )
    assert items["the newest checkpoint is 45 s old"]["more"] == "rtctl checkpoint info"
    assert "sched_fifo" in items["the RT loop runs degraded"]["detail"]
    assert items["renewing the RT's lease failed 2 times"]["severity"] == "WARN"


def test_the_slowest_spans_of_the_window_are_shown_slowest_first():
    def sp(name: str, dur_ms: int, trace: str, end_ns: int) -> dict[str, Any]:
        return {
            "name": name,
            "trace_id": trace * 16,
            "start_time_ns": end_ns - dur_ms * 10**6,
            "end_time_ns": end_ns,
            "status": "ok",
            "node": "n1",
            "process": "agent",
        }

    spans = [
        sp("a", 5, "01", NOW),
        sp("b", 50, "02", NOW),
        sp("c", 500, "03", SINCE - S),  # before the window
        sp("d", 20, "04", NOW),
        sp("e", 30, "05", NOW),
    ]
    items = diagnose(status_doc(), [], SINCE, spans, now_ns=NOW)["items"]
    assert [i["what"] for i in items] == [
        "slow span b: 50 ms",
        "slow span e: 30 ms",
        "slow span d: 20 ms",
    ]
    assert items[0]["more"] == f"rtctl trace get {'02' * 16}" and items[0]["severity"] == "INFO"
    assert items[0]["detail"] == f"trace {'02' * 16}, agent on n1, status ok"


def test_trace_summaries_from_the_store_stand_for_their_root_spans():
    summaries = [  # control.tracing.store.TraceStore.list rows
        {"trace_id": "0a" * 16, "name": "rpc.Diagnose", "start_time_ns": NOW - S,
         "duration_ms": 12.5, "spans": 3, "error": True, "nodes": ["n1", "n2"]},
        {"trace_id": "0b" * 16, "name": "rt.cycle", "start_time_ns": NOW - 2 * S,
         "duration_ms": 40.0, "spans": 1, "error": False, "nodes": ["n1"]},
    ]  # fmt: skip
    items = diagnose(status_doc(), [], SINCE, summaries, now_ns=NOW)["items"]
    assert [i["what"] for i in items] == [
        "slow span rt.cycle: 40 ms",
        "slow span rpc.Diagnose: 12.5 ms",
    ]
    assert items[1]["detail"] == f"trace {'0a' * 16}, n1, n2, status error"


# ---- rtctl diagnose through the service ---------------------------------------------


class DiagnosedAgent(FakeAgent):
    """The fake agent answering Diagnose with the real diagnosis of its status."""

    def __init__(self) -> None:
        super().__init__()
        self.alert_docs: list[dict[str, Any]] = []

    def diagnose(self, since_ns: int = 0) -> dict[str, Any]:
        self._enter("diagnose", since_ns)
        return diagnose(self._status(), self.alert_docs, since_ns or time.time_ns() - 900 * S)


@pytest.fixture
def agent() -> Iterator[tuple[DiagnosedAgent, str]]:
    fake = DiagnosedAgent()
    server, port = service.start(fake, AgentConfig(listen="127.0.0.1:0"))
    yield fake, f"127.0.0.1:{port}"
    server.stop(None).wait(5)


def test_rtctl_diagnose(agent):
    fake, target = agent
    fake.alert_docs = [alert("agent.save")]
    before = time.time_ns()
    done = rtctl("diagnose", "--target", target, "--since", "1h", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    [(method, (since_ns,), _)] = [c for c in fake.calls if c[0] == "diagnose"]
    assert before - 3600 * S - 5 * S < since_ns <= before - 3600 * S + 5 * S
    assert doc["since_ns"] == since_ns
    items = by_what(doc)
    assert (
        items["2 deadline misses"]["more"] == "rtctl logs search --event deadline_miss --since 1h"
    )
    assert items["bottleneck in agent.save"]["severity"] == "CRITICAL"

    text = rtctl("diagnose", "--target", target).stdout.splitlines()
    assert text[0].startswith("node fake-1 (primary): 1 critical, 1 error;")
    assert text[0].endswith("(alerts and spans of the last 15m)")
    assert text[2].split() == ["CRITICAL", "bottleneck", "in", "agent.save"]
    assert text[4].strip() == f"more: rtctl trace get {'aa' * 16}"
    assert "ERROR     2 deadline misses" in text


def test_the_client_diagnoses(agent):
    from control.rpc.client import Client

    _, target = agent
    with Client(target) as client:
        doc = client.diagnose()
    assert doc["node_id"] == "fake-1" and doc["counts"]["ERROR"] == 1


@pytest.mark.parametrize("since", ["0", "-5m", "15x", "31d", "m"])
def test_rtctl_diagnose_refuses_a_bad_since(agent, since):
    _, target = agent
    done = rtctl("diagnose", "--target", target, f"--since={since}")
    assert done.returncode == 2
    assert_one_line_error(done, "--since")
