"""A real agent shipping its logs to a real OpenSearch: an outage of minutes
and an agent killed mid-delivery lose nothing and duplicate nothing."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bench.opensearch import OpenSearch
from tests.conftest import wait_for
from tests.control.agentproc import AgentProc

INDEX = "rtcore-logs-*"
OUTAGE_S = 120.0
PERIOD_US = 2000  # 500 DEBUG records a second: 60,000 wait out the outage


def rt_records(opensearch: OpenSearch) -> list[dict[str, Any]]:
    """The chatty task's records in OpenSearch, in spool order (the _id's
    last part), each once per _id."""
    opensearch.refresh(INDEX)
    docs: list[dict[str, Any]] = []
    after: list[Any] | None = None
    while True:
        body: dict[str, Any] = {
            "size": 5000,
            "query": {"prefix": {"rtcore.template": "record"}},
            "sort": [{"rtcore.time_ns": "asc"}, {"_id": "asc"}],
            "_source": ["rtcore.cycle", "process", "rtcore.time_ns"],
        }
        if after:
            body["search_after"] = after
        status, page = opensearch.request("POST", f"/{INDEX}/_search", body)
        assert status == 200, page
        hits = page["hits"]["hits"]
        if not hits:
            break
        docs.extend({**h["_source"], "_id": h["_id"]} for h in hits)
        after = hits[-1]["sort"]
    return sorted(docs, key=lambda d: int(d["_id"].rsplit("-", 1)[1]))


def assert_complete_and_ordered(docs: list[dict[str, Any]]) -> None:
    """One record per cycle, none missing between the first and the last, and
    in spool order each thread's cycles only go forward."""
    cycles = Counter(d["rtcore"]["cycle"] for d in docs)
    assert cycles and max(cycles.values()) == 1, "a cycle's record is in OpenSearch twice"
    first, last = min(cycles), max(cycles)
    missing = sorted(set(range(first, last + 1)) - set(cycles))
    assert not missing, f"{len(missing)} records lost, e.g. cycles {missing[:5]}"
    by_thread: dict[tuple[int, int], list[int]] = {}
    for d in docs:
        key = (d["process"]["pid"], d["process"]["thread"]["id"])
        by_thread.setdefault(key, []).append(d["rtcore"]["cycle"])
    for key, seen in by_thread.items():
        assert seen == sorted(seen), f"records of thread {key} out of order"


def count_in(opensearch: OpenSearch) -> int:
    opensearch.refresh(INDEX)
    return opensearch.count(INDEX)


@pytest.mark.slow
def test_an_outage_of_minutes_while_the_rt_logs_at_debug_loses_nothing(
    agent_factory, chatty, opensearch: OpenSearch
):
    agent = agent_factory(
        "--task",
        chatty,
        "--task-params",
        "mode=loud,logs=1,spans=0,level=10",
        "--period-us",
        str(PERIOD_US),
        "--log-level",
        "debug",
        "--es-url",
        opensearch.url,
    ).start()
    wait_for(lambda: count_in(opensearch) > 1000, timeout=60, what="documents in OpenSearch")
    opensearch.stop()
    t0 = time.monotonic()
    while time.monotonic() - t0 < OUTAGE_S:
        st = agent.status()
        assert st["rt"]["state"] == "run"
        time.sleep(5)
    sink = agent.status()["logs"]["sinks"]["elastic"]
    assert sink["errors"].get("connection", 0) > 0 and sink["last_error"]
    lag = agent.status()["logs"]["spool"]["sinks"]["elastic"]["lag_records"]
    per_s = 1e6 / PERIOD_US
    assert lag > 0.8 * OUTAGE_S * per_s, "the RT's records of the outage are not waiting"
    opensearch.start()
    spooled = agent.status()["logs"]["spool"]["last_seq"]

    def delivered():
        acked = agent.status()["logs"]["spool"]["sinks"]["elastic"]["acked"]
        return acked >= spooled or None

    wait_for(delivered, timeout=300, interval=2, what="the backlog delivered")
    agent.call("rt", "stop")
    docs = rt_records(opensearch)
    assert len(docs) > OUTAGE_S * per_s
    assert max(opensearch.ids(INDEX).values()) == 1
    assert_complete_and_ordered(docs)
    st = agent.status()
    assert st["rt"]["ring_dropped"]["log"] == 0
    assert all(v == 0 for v in st["logs"]["spool"]["dropped"].values())


@pytest.mark.slow
def test_an_agent_killed_while_a_bulk_request_is_in_flight_duplicates_nothing(
    agent_factory, chatty, opensearch: OpenSearch, fault_proxy
):
    """kill -9 while OpenSearch has indexed a batch but the agent has not got
    the answer (the proxy holds it): the restarted agent sends it again from
    its spool cursor, OpenSearch answers 409 for what it has, and every
    document is there exactly once."""
    proxy = fault_proxy(opensearch.url)
    args = (
        "--task",
        chatty,
        "--task-params",
        "mode=loud,logs=1,spans=0",
        "--period-us",
        "2000",
        "--es-url",
        proxy.url,
    )
    agent = agent_factory(*args).start()
    wait_for(lambda: count_in(opensearch) > 500, timeout=60, what="documents in OpenSearch")
    proxy.hold_responses(3.0)
    wait_for(lambda: proxy.holding > 0, timeout=10, what="a bulk request in flight")
    indexed_before = count_in(opensearch)
    agent.kill()
    again = AgentProc(agent.spawn, Path(agent.data_dir).parent, agent.node_id, *args)
    again.port, again.target = agent.port, agent.target
    proxy.hold_responses(0)
    try:
        again.start()
        wait_for(
            lambda: again.status()["logs"]["sinks"]["elastic"]["duplicates"] > 0,
            timeout=30,
            what="the replayed batch answered with 409",
        )
        again.call("rt", "stop")

        def caught_up():
            spool = again.status()["logs"]["spool"]
            return spool["sinks"]["elastic"]["acked"] >= spool["last_seq"] or None

        wait_for(caught_up, timeout=60, interval=0.5, what="the rest delivered")
        ids = opensearch.ids(INDEX)
        assert max(ids.values()) == 1, "a document indexed twice"
        assert len(ids) > indexed_before
        assert_complete_and_ordered(rt_records(opensearch))
    finally:
        again.cleanup()  # a second agent of the node: the fixture knows only the first
