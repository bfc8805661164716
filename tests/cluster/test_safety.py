"""The cluster's safety rules, each on its own and without processes.

- The roles thread, tick by tick: a `Cluster` with a stand-in Raft node (the
  test says who leads, in which term, and whether a majority answered) and
  a stand-in log (the test commits a lease round when it likes), writing
  into a real RT segment. The RT's own decision is read back from the
  control block the way its loop makes it (`rt_would_actuate`).
- Raft's vote rules: a pysyncobj member with no tick thread, fed crafted
  messages; what it would send is recorded, not sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pysyncobj import SyncObjConf
from pysyncobj.monotonic import monotonic as raft_clock

from control.cluster import raft as raft_module
from control.cluster.cluster import Cluster, Hooks
from control.cluster.raft import PREVOTE, PREVOTE_REPLY, RaftNode, Timings
from control.cluster.state import ClusterState, NullListener
from control.rt.lease import LeaseKeeper
from rtcore import _core
from rtcore.segment import Segment
from tests.control.agentproc import free_port

MS = 1_000_000
LEASE_MS = 60
ELECTION_MS = 150
HEARTBEAT_MS = 20
# the vote tests' members: a stall of the test process (a loaded CI machine)
# shorter than this cannot make a heard leader look silent
VOTER_ELECTION_MS = 1000


# ---- the roles thread, driven by hand ---------------------------------------


class FakeRaft:
    """What `Cluster` reads of its Raft node, as the test sets it."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.term = 1
        self.leading = False
        self.leader = ""  # another member's address while this one follows
        self.contact = True  # a majority answered within the window asked about
        # the winning majority's last acknowledgement of an earlier leader
        # was long ago: a new primary owes no wait (that rule is tested apart)
        self.ack_age = 10 * 1_000_000_000

    def is_leader(self) -> bool:
        return self.leading

    def is_candidate(self) -> bool:
        return False

    def leader_addr(self) -> str:
        return self.addr if self.leading else self.leader

    def connected(self, addr: str) -> bool:
        return True

    def ack_age_ns(self, term: int) -> int:
        return self.ack_age

    def quorum_contact(self, within_s: float) -> bool:
        return self.contact

    def match_index(self) -> dict[str, int]:
        return {}


class FakeLog:
    """Stands in for ClusterState's replicated calls: it records what the
    node submits; the test commits a round by calling its callback."""

    def __init__(self) -> None:
        self.rounds: list[tuple[int, int, Callable[[Any, int], None]]] = []  # (term, when, cb)
        self.checkpoints = 0

    def lease_round(self, node_id: str, term: int, callback: Callable[[Any, int], None]) -> None:
        self.rounds.append((term, time.monotonic_ns(), callback))

    def checkpoint(self, ckpt: Any, callback: Callable[[Any, int], None]) -> None:
        self.checkpoints += 1

    def report_health(self, node_id: str, healthy: bool) -> None:
        pass

    def commit_all(self) -> int:
        """The quorum acknowledges every round submitted so far; how many."""
        done, self.rounds = self.rounds, []
        for _, _, cb in done:
            cb(False, 0)
        return len(done)


def rt_would_actuate(ctl: dict[str, int], now_ns: int) -> bool:
    """The RT loop's test (decide_actuation in rtcore/_rt_loop.pxi): active,
    and a lease no older than its timeout (0: none required)."""
    lease_ok = ctl["lease_timeout_ns"] == 0 or now_ns - ctl["lease_ns"] <= ctl["lease_timeout_ns"]
    return bool(ctl["active"]) and lease_ok


class Node:
    """One member's Cluster, its stand-ins and its RT's segment."""

    def __init__(self, seg: Segment, node_id: str) -> None:
        self.seg = seg
        self.healthy = True
        self.roles: list[tuple[str, str, int]] = []
        addr = f"{node_id}.invalid:7771"  # never bound: the Raft node is a stand-in
        cfg = SimpleNamespace(
            node_id=node_id,
            witness=False,
            election_timeout_ms=ELECTION_MS,
            heartbeat_ms=HEARTBEAT_MS,
            lease_ms=LEASE_MS,
            raft=addr,
            peers=["x.invalid:7771", "y.invalid:7771"],
            data_dir="",
            raft_priority=0,
            stall_checks=3,
            health_interval_ms=1000,
        )
        hooks = Hooks(
            segment_buf=lambda: seg.buf,
            rt_healthy=lambda: self.healthy,
            rt_crash_streak=lambda: 0,
            job_changed=lambda job: None,
            setting_changed=lambda name, value: None,
            on_role=lambda old, new, term: self.roles.append((old, new, term)),
            announce=lambda *args, **fields: None,
        )
        self.cluster = Cluster(cfg, hooks)
        self.raft = FakeRaft(addr)
        self.log = FakeLog()
        self.cluster.raft = self.raft  # type: ignore[assignment]
        self.cluster.state = self.log  # type: ignore[assignment]
        # as the RT starts in a cluster (Cluster.control_args): in shadow
        _core.write_control(seg.buf, active=0, epoch=1, lease_timeout_ns=LEASE_MS * MS)

    @property
    def role(self) -> str:
        return self.cluster.role

    def tick(self) -> str:
        self.cluster._tick()
        return self.role

    def control(self) -> dict[str, int]:
        return _core.read_control(self.seg.buf)

    def actuates(self) -> bool:
        """Whether the RT would drive the outputs now."""
        return rt_would_actuate(self.control(), _core.monotonic_ns())

    def promote(self, term: int) -> int:
        """Lead in `term`, a majority acknowledges a round: primary. Returns the
        round's stamp (the quorum lease's start)."""
        self.raft.term, self.raft.leading, self.raft.contact = term, True, True
        deadline = time.monotonic() + 2
        while not self.log.rounds:  # one is due every lease_ms / 6
            assert self.tick() != "primary"  # nothing acknowledged in this term yet
            assert time.monotonic() < deadline, "no lease round sent"
            time.sleep(0.001)
        self.log.commit_all()
        assert self.tick() == "primary"
        start = self.cluster.lease.start_ns(term)
        assert start > 0
        return start


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[[], Node]]:
    made: list[Segment] = []

    def make() -> Node:
        seg = Segment.create(f"rtc-safety-{tmp_path.name[-20:]}-{len(made)}")
        made.append(seg)
        return Node(seg, f"n{len(made)}")

    yield make
    for seg in made:
        seg.close()
        seg.unlink()


def test_a_leader_is_primary_only_while_its_quorum_lease_holds(make_node):
    """DESIGN.md: PRIMARY only while the Raft leader holds a fresh quorum
    lease. Not before a round is acknowledged, not on a round acknowledged
    after its lease ran out, and not once the last one has."""
    n = make_node()
    n.raft.term, n.raft.leading = 4, True
    for _ in range(3):
        assert n.tick() == "candidate"
    assert not n.control()["active"]
    # a round that took longer than the lease to commit grants nothing
    time.sleep((LEASE_MS + 5) / 1000)
    assert n.log.commit_all() >= 1
    assert not n.cluster.lease.valid(4, _core.monotonic_ns())
    assert n.tick() != "primary"
    assert not n.control()["active"]

    start = n.promote(4)
    assert n.control()["active"] and n.actuates()
    # cut off: no answer from a majority, so no round commits any more
    n.raft.contact = False
    n.log.commit_all()
    end = start + LEASE_MS * MS
    while _core.monotonic_ns() < end:
        role = n.tick()
        if _core.monotonic_ns() < end:  # the tick read the time before this
            assert role == "primary"
        time.sleep(0.002)
    assert n.tick() == "fenced"
    assert not n.control()["active"] and not n.actuates()
    assert n.roles[-1] == ("primary", "fenced", 4)


def test_the_rts_lease_ends_with_the_quorum_lease_whatever_the_roles_thread_does(make_node):
    """lease.py: the RT's lease is the quorum lease's stamp, so a primary cut
    off from the quorum stops by itself lease_ms after the last round a
    majority acknowledged -- the agent's lease thread, renewing meanwhile,
    must not carry it further (and the roles thread that would fence the
    node may be late, stuck, or failing on every tick)."""
    n = make_node()
    keeper = LeaseKeeper(lambda: n.seg.buf, LEASE_MS, stamp=n.cluster.rt_lease_stamp)
    start = n.promote(6)
    keeper.renew_now()
    assert n.actuates()  # actuating when the cut comes
    n.raft.contact = False  # cut off: nothing is acknowledged from here on
    deadline = start + LEASE_MS * MS
    while _core.monotonic_ns() < deadline + 5 * MS:
        keeper.renew_now()  # what the lease thread does every lease_ms / 5
        time.sleep(LEASE_MS / 5000)
    keeper.renew_now()
    ctl = n.control()
    now = _core.monotonic_ns()
    assert n.role == "primary"  # the roles thread has not run since
    assert not rt_would_actuate(ctl, now), (
        f"the RT still actuates {(now - deadline) / 1e6:.1f} ms after the quorum lease ended "
        f"(its lease stamped {(ctl['lease_ns'] - start) / 1e6:.1f} ms after the last round "
        "a majority acknowledged)"
    )
    assert ctl["lease_ns"] == start


def test_a_leader_cut_off_from_the_majority_appends_no_rounds(make_node):
    """A leader that no majority answered within CONTACT_HEARTBEATS
    heartbeats appends nothing: each entry it appends alone must be undone
    one by one when it is back."""
    n = make_node()
    n.promote(3)
    time.sleep(LEASE_MS / 6 / 1000 + 0.002)  # a round is due
    n.raft.contact = False
    for _ in range(5):
        n.tick()
        time.sleep(LEASE_MS / 6 / 1000 + 0.002)
    assert n.log.rounds == [], f"{len(n.log.rounds)} round(s) appended while cut off"
    n.raft.contact = True  # the control: in contact, a due round goes out
    n.tick()
    assert len(n.log.rounds) == 1


def test_a_new_primary_acts_in_its_term_a_later_one_in_a_higher_epoch(make_node):
    """The epoch is the Raft term at promotion: what the new primary's RT
    writes (checkpoints) and what its agent sends (commands) carry a higher
    epoch than anything of the old primary's."""
    a, b = make_node(), make_node()
    a.promote(3)
    assert a.control()["epoch"] == 3 and a.cluster.epoch == 3
    # a loses the leadership to b in term 5
    a.raft.term, a.raft.leading, a.raft.leader = 5, False, b.raft.addr
    assert a.tick() == "standby"
    b.promote(5)
    assert b.control()["epoch"] == 5 and b.cluster.epoch == 5
    assert b.control()["epoch"] > 3
    # and a, primary again later, in a higher epoch still
    a.raft.leader = ""
    a.promote(7)
    assert a.control()["epoch"] == 7 and a.cluster.epoch == 7
    assert a.cluster.control_args()[a.cluster.control_args().index("--epoch") + 1] == "7"


@pytest.mark.parametrize("cause", ["leadership lost", "RT unhealthy"])
def test_a_demoted_primary_stops_its_rt_at_once_not_at_lease_expiry(make_node, cause):
    """A primary that loses its role clears `active` in the control block
    on the same tick: its RT must not drive the outputs for what is left of
    a lease that is still fresh."""
    n = make_node()
    n.promote(4)
    assert n.actuates()
    if cause == "leadership lost":
        n.raft.leading, n.raft.leader = False, "x.invalid:7771"  # same term: a transfer
        expected = "standby"
    else:
        n.healthy = False
        expected = "fenced"
    assert n.tick() == expected
    ctl = n.control()
    now = _core.monotonic_ns()
    assert now - ctl["lease_ns"] < ctl["lease_timeout_ns"]  # the lease alone would not stop it
    assert ctl["active"] == 0
    assert not rt_would_actuate(ctl, now)


# ---- Raft's vote rules, on a member without a tick thread --------------------


class Voter:
    """A RaftNode whose messages are recorded, not sent."""

    def __init__(self, node: RaftNode) -> None:
        self.node = node
        self.sent: list[tuple[Any, dict[str, Any]]] = []
        transport = node._SyncObj__transport  # type: ignore[attr-defined]
        transport.send = lambda to, message: self.sent.append((to, message)) or True
        node.vote_hold_until = 0  # past its start-up hold
        self.peers = sorted(node.otherNodes, key=lambda p: p.id)

    def receive(self, sender: Any, message: dict[str, Any]) -> None:
        self.node._SyncObj__onMessageReceived(sender, message)  # type: ignore[attr-defined]

    def connect(self, peer: Any) -> None:
        self.node._SyncObj__connectedNodes.add(peer)  # type: ignore[attr-defined]

    def disconnect(self, peer: Any) -> None:
        self.node._SyncObj__connectedNodes.discard(peer)  # type: ignore[attr-defined]

    def replies(self, kind: str) -> list[dict[str, Any]]:
        return [m for _, m in self.sent if m.get("type") == kind]

    def heartbeat_from(self, leader: Any, term: int) -> None:
        last_index, last_term = self.node._last_log()  # type: ignore[attr-defined]
        self.receive(
            leader,
            {
                "type": "append_entries",
                "term": term,
                "commit_index": self.node.raftCommitIndex,
                "entries": [],
                "prevLogIdx": last_index,
                "prevLogTerm": last_term,
            },
        )

    def prevote(self, candidate: Any) -> bool:
        """Ask for a pre-vote from a candidate as up to date as this node, and
        started well before it (so that nothing but the leader rule denies)."""
        last_index, last_term = self.node._last_log()  # type: ignore[attr-defined]
        self.sent.clear()
        self.receive(
            candidate,
            {
                "type": PREVOTE,
                "term": self.node.term + 1,
                "last_index": last_index,
                "last_term": last_term,
                "priority": 0,
                "started": self.node.started_wall - 60,
            },
        )
        (reply,) = self.replies(PREVOTE_REPLY)
        return bool(reply["granted"])

    def vote(self, candidate: Any) -> bool:
        """Ask for a real vote in the next term, from an up-to-date candidate."""
        last_index, last_term = self.node._last_log()  # type: ignore[attr-defined]
        self.sent.clear()
        self.receive(
            candidate,
            {
                "type": "request_vote",
                "term": self.node.term + 1,
                "last_log_index": last_index,
                "last_log_term": last_term,
            },
        )
        return bool(self.replies("response_vote"))


@pytest.fixture
def voter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], Voter]]:
    """pysyncobj with autoTick off: nothing happens but what the test feeds."""
    monkeypatch.setattr(
        raft_module, "SyncObjConf", lambda **kw: SyncObjConf(**dict(kw, autoTick=False))
    )
    made: list[RaftNode] = []

    def make() -> Voter:
        ports: set[int] = set()
        while len(ports) < 3:  # free_port may hand out a port twice
            ports.add(free_port())
        me, *peers = (f"127.0.0.1:{p}" for p in ports)
        node = RaftNode(
            me,
            peers,
            str(tmp_path / f"m{len(made)}"),
            Timings(VOTER_ELECTION_MS, HEARTBEAT_MS, LEASE_MS),
            ClusterState(NullListener),
            lambda: True,
        )
        made.append(node)
        return Voter(node)

    yield make
    for node in made:
        node.destroy()


def test_a_follower_that_hears_its_leader_grants_no_vote(voter):
    """Raft's check against disruptive servers: while a follower hears from a
    leader that still leads, an up-to-date candidate gets neither its
    pre-vote nor its vote (and its term raises nothing here)."""
    m = voter()
    leader, candidate = m.peers
    m.connect(leader)
    m.connect(candidate)
    m.heartbeat_from(leader, term=3)
    assert m.node.leader_addr() == leader.id and m.node.term == 3
    assert not m.prevote(candidate), "pre-vote granted while the leader is heard"
    assert not m.vote(candidate), "vote granted while the leader is heard"
    assert m.node.term == 3 and m.node.leader_addr() == leader.id
    # the control: the leader's connection gone, the same requests are granted
    m.disconnect(leader)
    assert m.prevote(candidate)
    assert m.vote(candidate) and m.node.term == 4


def test_a_follower_whose_leader_fell_silent_grants_its_vote(voter):
    m = voter()
    leader, candidate = m.peers
    m.connect(leader)
    m.connect(candidate)
    m.heartbeat_from(leader, term=2)
    assert not m.prevote(candidate), "pre-vote granted while the leader is heard"
    time.sleep(VOTER_ELECTION_MS / 1000 + 0.01)  # no heartbeat for an election timeout
    assert m.prevote(candidate)


def test_an_idle_leader_in_contact_with_a_majority_grants_no_vote(voter):
    """A leader answered lately by a majority neither pre-votes for nor is
    deposed by a candidate whose log is as complete as its own (an idle
    leader: nothing appended since)."""
    m = voter()
    follower, candidate = m.peers
    m.connect(follower)
    m.connect(candidate)
    m.node._SyncObj__onBecomeLeader()  # type: ignore[attr-defined]
    assert m.node.is_leader()
    term = m.node.term
    assert not m.prevote(candidate), "pre-vote granted by a leader a majority answers"
    assert not m.vote(candidate), "a leader a majority answers was deposed"
    assert m.node.is_leader() and m.node.term == term
    # the control: no majority answered for an election timeout
    responses = m.node._SyncObj__lastResponseTime  # type: ignore[attr-defined]
    for peer in m.peers:
        responses[peer] = raft_clock() - 2 * VOTER_ELECTION_MS / 1000
    assert m.prevote(candidate)


def test_the_leader_backs_a_diverged_follower_up_to_its_lowest_rejection(voter):
    """A diverged follower names its commit index + 1; the later rejections
    of appends already in flight (pysyncobj sends everything after nextIndex
    at once) must not push nextIndex back up, or it is stepped back one
    entry per round trip. A success ends it: the next rejection counts anew."""
    m = voter()
    follower, _ = m.peers
    m.connect(follower)
    m.node._SyncObj__onBecomeLeader()  # type: ignore[attr-defined]
    next_index = m.node._SyncObj__raftNextIndex  # type: ignore[attr-defined]

    def answer(idx: int, success: bool = False) -> int:
        m.receive(
            follower,
            {"type": "next_node_idx", "next_node_idx": idx, "reset": True, "success": success},
        )
        return int(next_index[follower])

    assert answer(20) == 20  # pysyncobj's rejection of prevLogIdx 20
    assert answer(5) == 5  # the follower's backup: its commit index + 1
    assert answer(21) == 5  # rejections of appends already in flight
    assert answer(22) == 5
    assert answer(9, success=True) == 9  # caught up to 8
    assert answer(12) == 12  # a new divergence, after the success
