"""The cluster's parts on their own: the quorum lease, the replicated state
machine, and the pysyncobj internals the raft node relies on."""

from __future__ import annotations

import pickle
import time

import pytest
from pysyncobj import SyncObj
from pysyncobj.monotonic import monotonic as raft_clock

from control.cluster.lease import QuorumLease
from control.cluster.raft import RaftNode, Timings
from control.cluster.state import Checkpoint, ClusterState, Member, NullListener
from control.jobs import machine
from tests.conftest import wait_for
from tests.control.agentproc import free_port

MS = 1_000_000


def test_the_lease_holds_lease_ms_from_the_acknowledged_round():
    lease = QuorumLease(60)
    assert not lease.valid(3, 1000 * MS)
    lease.acknowledged(3, 1000 * MS)
    assert lease.valid(3, 1059 * MS)
    assert not lease.valid(3, 1060 * MS)
    assert not lease.valid(4, 1001 * MS)  # another term holds nothing
    lease.acknowledged(3, 990 * MS)  # an older round acknowledged late moves nothing back
    assert lease.start_ns(3) == 1000 * MS


def test_a_revoked_lease_is_not_renewed_by_rounds_in_flight():
    lease = QuorumLease(60)
    lease.acknowledged(5, 100 * MS)
    lease.revoke(5)
    assert not lease.valid(5, 101 * MS)
    assert lease.acknowledged(5, 102 * MS) == 0
    assert not lease.valid(5, 103 * MS)
    lease.acknowledged(6, 200 * MS)  # a later term is a new lease
    assert lease.valid(6, 201 * MS)


def test_a_new_primary_waits_out_the_lease_plus_a_margin():
    lease = QuorumLease(60)
    assert lease.ready_at(7) is None
    lease.won(7, 1000 * MS)
    lease.won(7, 1500 * MS)  # the first win counts
    ready = lease.ready_at(7)
    assert ready is not None and ready >= 1060 * MS + lease.margin_ns
    assert lease.margin_ns >= 2 * MS


def _events() -> list[tuple[str, tuple]]:
    wps = ((0.1, (0.0,) * 6), (0.2, (0.1,) * 6))
    return [
        ("join", (Member("a", "h:1", "h:2", False), ("h:1", "h:3", "h:5"))),
        ("job_submit", ("j", wps, 10)),
        ("job_submit", ("k", wps, 11)),
        ("job_event", (machine.Started(1, 12, 1, 5),)),
        ("job_event", (machine.WaypointReached(1, 13, 0, 1, 6),)),
        ("job_event", (machine.Done(1, 14, 1, 7),)),
        ("job_event", (machine.Cancelled(1, 15),)),  # illegal: an error, no change
        ("lease_round", ("a", 2)),
        ("checkpoint", (Checkpoint("a", 2, 9, 90, 2, 77, 5, 123, b"x" * 64),)),
        ("set_setting", ("log_level", ("DEBUG", "all"))),
    ]


def _apply_all(state: ClusterState) -> list:
    return [getattr(state, name)(*args, _doApply=True) for name, args in _events()]


def test_the_replicated_state_is_deterministic_and_snapshots_whole():
    a, b = ClusterState(NullListener), ClusterState(NullListener)
    ra, rb = _apply_all(a), _apply_all(b)
    assert ra == rb
    assert pickle.dumps(a._serialize()) == pickle.dumps(b._serialize())
    assert "_listener" not in a._serialize()
    assert a.jobs[1].state == "done" and a.jobs[2].state == "queued"
    assert ra[6][0] == "error" and ra[6][1] == "IllegalTransition"
    restored = ClusterState(NullListener)
    restored._deserialize(a._serialize())
    assert restored.jobs == a.jobs and restored.ckpt == a.ckpt and restored.last_job_id == 2


def test_a_handover_lets_only_its_target_skip_the_wait_once():
    s = ClusterState(NullListener)
    assert s.lease_round("old", 4, _doApply=True) is False
    s.handover("old", "new", 4, _doApply=True)
    assert s.lease_round("new", 5, _doApply=True) is True
    assert s.lease_round("new", 6, _doApply=True) is False  # used once
    s.handover("someone", "x", 6, _doApply=True)  # not the lease holder: ignored
    assert s.lease_round("x", 7, _doApply=True) is False
    s.handover("new", "c", 6, _doApply=True)
    s.lease_round("new", 6, _doApply=True)  # the old primary acted again: void
    assert s.lease_round("c", 7, _doApply=True) is False


def test_membership_refuses_a_node_id_twice_and_another_peer_list():
    s = ClusterState(NullListener)
    voters = ("h:1", "h:2", "h:3")
    assert s.join(Member("a", "h:1", "", False), voters, _doApply=True) == ("ok", "")
    verdict, why = s.join(Member("a", "h:2", "", False), voters, _doApply=True)
    assert verdict == "refused" and "already used" in why
    verdict, why = s.join(Member("b", "h:2", "", False), ("h:1", "h:2", "h:9"), _doApply=True)
    assert verdict == "refused" and "h:9" in why
    assert set(s.members) == {"h:1"}


@pytest.fixture
def quiet_node(tmp_path):
    made = []

    def make(eligible=lambda: True) -> RaftNode:
        node = RaftNode(
            f"127.0.0.1:{free_port()}",
            [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"],
            str(tmp_path / str(len(made))),
            Timings(150, 20, 60),
            ClusterState(NullListener),
            eligible,
        )
        made.append(node)
        return node

    yield make
    for n in made:
        n.destroy()


def test_pysyncobj_internals_the_raft_node_uses_are_there(quiet_node):
    """The raft node reaches into pysyncobj 0.3.17's private names: a new
    version that renames one must fail here, not in a failover."""
    assert hasattr(SyncObj, "_SyncObj__onMessageReceived")
    node = quiet_node()
    for attr in (
        "_SyncObj__raftElectionDeadline",
        "_SyncObj__raftState",
        "_SyncObj__raftLog",
        "_SyncObj__transport",
    ):
        assert hasattr(node, attr), attr
    # the election deadline is on pysyncobj's clock, not time.monotonic's
    assert abs(node._SyncObj__raftElectionDeadline - raft_clock()) < 5  # type: ignore[attr-defined]
    assert node.last_index() >= 1


def test_a_just_started_node_grants_no_vote(quiet_node):
    node = quiet_node()
    request = {"type": "request_vote", "term": 99, "last_log_index": 10, "last_log_term": 98}
    other = next(iter(node.otherNodes))
    node._SyncObj__onMessageReceived(other, request)  # type: ignore[attr-defined]
    assert node.term < 99  # held out: not even the term moved
    node.vote_hold_until = 0
    node._SyncObj__onMessageReceived(other, request)  # type: ignore[attr-defined]
    assert node.term == 99


def test_an_ineligible_node_never_campaigns(quiet_node):
    node = quiet_node(eligible=lambda: False)
    wait_for(
        lambda: node._SyncObj__raftElectionDeadline == float("inf"),  # type: ignore[attr-defined]
        timeout=5,
        what="the deadline pushed past every tick",
    )
    time.sleep(0.5)  # past any election timeout: still a follower
    assert not node.is_candidate() and not node.is_leader()


def test_the_wait_counts_from_the_last_acknowledgement_of_the_old_leader():
    """The old lease rested on an acknowledgement by a node of the winning
    majority: it ended lease_ms after the newest such one, at the latest."""
    lease = QuorumLease(60)
    lease.won(8, 1000 * MS, ack_age_ns=25 * MS)
    assert lease.ready_at(8) == 975 * MS + 60 * MS + lease.margin_ns
    lease.won(9, 2000 * MS, ack_age_ns=None)  # unknown: the whole lease from the win
    assert lease.ready_at(9) == 2060 * MS + lease.margin_ns


def test_a_node_reports_no_acknowledgement_older_than_its_start(quiet_node):
    """What a restarted node acknowledged before is forgotten: its age is at
    most its uptime (and it votes for nobody in its first election timeout,
    by when any lease it acknowledged has run out)."""
    started = time.monotonic()
    node = quiet_node()
    time.sleep(0.05)
    assert node._ack_age() <= time.monotonic() - started  # type: ignore[attr-defined]
    assert node.vote_hold_until - raft_clock() <= node.timings.election_max_s
    assert node.timings.election_max_s * 1000 > node.timings.lease_ms


def test_a_snapshot_loaded_mirrors_every_job_it_holds():
    """A node that catches up from the leader's snapshot (it fell behind the
    compacted log) gets the snapshot's jobs in its local database too."""
    a = ClusterState(NullListener)
    _apply_all(a)
    seen: list[int] = []

    class Mirror(NullListener):
        def job_changed(self, job: machine.Job) -> None:
            seen.append(job.id)

    b = ClusterState(Mirror)
    b._deserialize(a._serialize())
    assert seen == sorted(a.jobs)


def test_any_round_ends_a_transfer():
    s = ClusterState(NullListener)
    s.lease_round("old", 4, _doApply=True)
    s.handover("old", "new", 4, _doApply=True)
    assert s.transfer_to == "new"
    s.lease_round("old", 4, _doApply=True)  # the handover was given up
    assert s.transfer_to == ""
