"""`rtctl logs search --all-nodes` against real clusters: every member's own
store is asked, witnesses too, the answers merge newest first, and a member
whose agent is dead costs a line on stderr, not the others' records."""

from __future__ import annotations

import datetime
import json
import subprocess
import time

import pytest

from control.cli.logs import timestamp_ns
from tests.cluster.clusterproc import Member
from tests.cluster.test_failover import start
from tests.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

# every agent logs this once as it starts, with its own node name
STARTUP_WORD = "listening"


def search(m: Member, *args: str) -> dict:
    done = m.rtctl("logs", "search", "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def nodes_of(doc: dict) -> list[str]:
    return [r["service"]["node"]["name"] for r in doc["logs"]]


def test_all_nodes_merges_every_members_records_newest_first(make_cluster):
    c = make_cluster(witness=True)
    start(c)
    n1 = c.members[0]
    ids = sorted(m.node_id for m in c.members)

    def startup_records() -> dict | None:
        doc = search(n1, "--all-nodes", STARTUP_WORD)
        return doc if sorted(nodes_of(doc)) == ids else None

    doc = wait_for(startup_records, timeout=10, what="every node's startup record")
    assert isinstance(doc, dict)
    assert sorted(doc["answered"]) == ids and doc["not_answered"] == []
    assert doc["node_id"] == n1.node_id

    # a window that no longer grows: records stamped before `until` are in
    # their stores a moment later
    until = datetime.datetime.now(datetime.UTC).isoformat()
    time.sleep(1.0)
    full = search(n1, "--all-nodes", "--until", until, "--limit", "1000")
    stamps = [timestamp_ns(r) for r in full["logs"]]
    assert stamps == sorted(stamps, reverse=True), "not merged newest first"
    assert len(set(nodes_of(full))) == 3
    newest = [(r["service"]["node"]["name"], r["_seq"]) for r in full["logs"][:5]]
    limited = search(n1, "--all-nodes", "--until", until, "--limit", "5")
    assert [(r["service"]["node"]["name"], r["_seq"]) for r in limited["logs"]] == newest

    local = search(n1, "--until", until, "--limit", "1000")
    assert set(nodes_of(local)) == {n1.node_id}
    assert nodes_of(search(n1, STARTUP_WORD)) == [n1.node_id]


def test_a_member_with_a_dead_agent_is_named_and_the_others_still_print(make_cluster):
    c = make_cluster()
    primary = start(c)
    dead, survivor = [m for m in c.members if m is not primary]
    dead.kill_all()
    done: subprocess.CompletedProcess = survivor.rtctl(
        "logs", "search", "--all-nodes", STARTUP_WORD
    )
    assert done.returncode == 0, done.stderr
    # text output names each record's node
    printed = {line.split()[2] for line in done.stdout.splitlines()}
    assert printed == {primary.node_id, survivor.node_id}
    lines = done.stderr.splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith(
        f"rtctl: warning: node {dead.node_id} ({dead.target}) did not answer: cannot reach"
    )
    assert lines[1] == "rtctl: warning: 2 of 3 nodes answered"
