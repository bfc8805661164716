"""This node's pysyncobj member: its configuration, and the two things
pysyncobj lacks that a primary/standby cluster needs.

- Only an eligible node campaigns: a witness, or a node whose RT is not
  healthy, never starts an election (it still votes), so the leader is always
  a node that can drive the outputs.
- A campaign starts only after a pre-vote majority, and no node votes (or
  pre-votes) while it hears from a leader that still leads: a node cut off
  and healed, or one whose log is behind, cannot depose a healthy leader by
  its inflated term. A handover's target is exempt.
- A leader whose TCP connection closes (its process died) is a hint: the
  remaining eligible nodes campaign at once, staggered by rank so that one
  wins the first round, instead of waiting out the election timeout. A
  partition closes nothing, and still takes the timeout.

pysyncobj 0.3.17 persists currentTerm and votedFor in its journal's meta
file (written before a vote is sent; renamed into place without fsync: it
survives a process kill, not a power cut). The agent holds a node that has
just started out of voting for one election timeout (`vote_hold`), which
covers the power cut: every candidate of a term it may have voted in before
has given up that term by then.

Reaches into pysyncobj's private attributes in three places (the election
deadline, vote handling, the raft state); the version is pinned in
pyproject.toml and a test checks each.
"""

from __future__ import annotations

import collections
import math
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from loguru import logger
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf
from pysyncobj.monotonic import monotonic as raft_clock
from pysyncobj.syncobj import _RAFT_STATE

from control.cluster.state import ClusterState

PING_S = 0.1  # keeps every connection read from (followers do not talk to each other)
HINT_STAGGER_S = 0.03  # between the campaigns of the ranked survivors of a crashed leader
START_TOLERANCE_S = 1.0  # start times closer than this do not decide who leads
PEER_INFO_S = 0.35  # a member's ping older than this says nothing of it any more
HINT_RETRY_S = 0.005  # a pre-vote after a crash hint that got no majority is asked again
TICK_S = 0.002  # pysyncobj's poll timeout: bounds how late a deadline is noticed
PING = "rtcore_ping"
PREVOTE = "rtcore_prevote"
PREVOTE_REPLY = "rtcore_prevote_reply"
ACK_AGE = "rtcore_ack_age"  # added to vote responses: seconds since the voter acked a leader


class Timings:
    def __init__(self, election_ms: int, heartbeat_ms: int, lease_ms: int) -> None:
        self.election_min_s = election_ms / 1000
        self.election_max_s = 2 * election_ms / 1000
        self.heartbeat_s = heartbeat_ms / 1000
        self.lease_ms = lease_ms


class RaftNode(SyncObj):
    """A pysyncobj member whose replicated state is `state` (ClusterState)."""

    def __init__(
        self,
        self_addr: str,
        peers: list[str],
        data_dir: str,
        timings: Timings,
        state: ClusterState,
        eligible: Callable[[], bool],
        on_leader_change: Callable[[], None] = lambda: None,
        priority: int = 0,
        abstain: Callable[[], bool] = lambda: False,
    ) -> None:
        # attributes set before SyncObj.__init__ are not replicated state
        self.state = state
        self.timings = timings
        self._eligible = eligible
        self.priority = priority
        self._abstain = abstain
        self.started_wall = time.time()  # "first started" is compared across machines
        # addr -> ((priority, -started), eligible, (last term, last index), when heard)
        self._peer_info: dict[str, tuple[tuple[int, float], bool, tuple[int, int], float]] = {}
        self._on_leader_change = on_leader_change
        self._hint_for: Any = None  # the leader whose disconnection was acted on
        # pysyncobj's deadlines are on its own clock (not time.monotonic's)
        self._started = raft_clock()
        self.vote_hold_until = self._started + timings.election_max_s
        self.elections = 0  # leader changes seen
        self._last_leader: Any = None
        self._next_ping = 0.0
        self._heard_leader = 0.0  # when an append from a current leader came last
        # leader: the lowest index each follower rejected since its last success
        self._rejected: dict[str, int] = {}
        self._led_until = 0.0  # the last tick at which this node was leader
        # per term: when each vote's sender (and this node) last acknowledged a
        # leader; the newest bounds the old primary's lease (see ack_age_ns)
        self._vote_acks: dict[int, list[float]] = {}
        self._ack_bound: dict[int, float] = {}
        self._timer = self._started + timings.election_max_s  # this node's election timer
        self._prevote: tuple[int, float, set[str]] | None = None  # (term, until, granted by)
        self._soon: collections.deque[Callable[[], None]] = collections.deque()
        self._rank_peers = sorted(peers + [self_addr])
        self.self_addr = self_addr
        os.makedirs(os.path.join(data_dir, "raft"), exist_ok=True)
        conf = SyncObjConf(
            journalFile=os.path.join(data_dir, "raft", "journal"),
            fullDumpFile=os.path.join(data_dir, "raft", "snapshot"),
            # one entry goes out as soon as it is submitted: a synchronous write
            # takes one round trip, not the ~200 ms of batched appends
            appendEntriesUseBatch=False,
            appendEntriesPeriod=timings.heartbeat_s,
            raftMinTimeout=timings.election_min_s,
            raftMaxTimeout=timings.election_max_s,
            # the default (5 s) delays reconnecting followers to each other after
            # a crash, and so the election (measured: ~3.9 s)
            connectionRetryTime=0.1,
            connectionTimeout=max(0.5, 4 * timings.election_max_s),
            # the lease, not this, decides whether a cut-off leader may act
            leaderFallbackTimeout=timings.election_max_s,
            autoTickPeriod=TICK_S,
            logCompactionMinEntries=5000,
            logCompactionMinTime=30,
            # the agent has threads and gRPC: a fork would copy them mid-call
            useFork=False,
            dynamicMembershipChange=False,
            tcp_keepalive=(1, 1, 2),
        )
        super().__init__(self_addr, peers, conf, consumers=[state])
        transport = self._SyncObj__transport  # type: ignore[attr-defined]
        send = transport.send

        def send_with_ack_age(node: Any, message: dict[str, Any]) -> bool:
            if message.get("type") == "response_vote":
                message = dict(message, **{ACK_AGE: self._ack_age()})
            return bool(send(node, message))

        transport.send = send_with_ack_age
        self.addOnTickCallback(self._on_tick)

    # ---- what the agent reads ------------------------------------------------

    @property
    def term(self) -> int:
        return int(self._getTerm())

    def is_leader(self) -> bool:
        return bool(self._isLeader())

    def is_candidate(self) -> bool:
        return self._SyncObj__raftState == _RAFT_STATE.CANDIDATE  # type: ignore[attr-defined]

    def leader_addr(self) -> str:
        leader = self._getLeader()
        return leader.id if leader is not None else ""

    def connected(self, addr: str) -> bool:
        return any(n.id == addr and self.isNodeConnected(n) for n in self.otherNodes)

    def match_index(self) -> dict[str, int]:
        for _ in range(10):
            try:
                status = self.getStatus()  # read while pysyncobj's thread may change it
                break
            except RuntimeError:
                continue
        else:
            return {}
        return {
            k.removeprefix("match_idx_server_"): int(v)
            for k, v in status.items()
            if k.startswith("match_idx_server_")
        }

    def last_index(self) -> int:
        log = self._SyncObj__raftLog  # type: ignore[attr-defined]
        return int(log[-1][1])

    # ---- pysyncobj hooks -----------------------------------------------------

    def _on_tick(self) -> None:
        """On pysyncobj's thread, after its election check of this tick.
        Elections are this node's, not pysyncobj's timer's: pysyncobj's
        deadline is kept past every tick (except when a TimeoutNow asked for
        an election), and a campaign starts only after a pre-vote."""
        while self._soon:
            self._soon.popleft()()
        self._ping()
        leader = self._getLeader()
        if leader is not self._last_leader:
            if leader is not None:
                self.elections += 1
            if leader is not None and leader.id == self.self_addr:
                term = self.term
                own = self._last_ack()
                self._ack_bound[term] = max([own, *self._vote_acks.pop(term, [])])
                for old in [t for t in self._ack_bound if t < term - 2]:
                    del self._ack_bound[old]
            self._last_leader = leader
            self._on_leader_change()
        if self.is_leader():
            self._led_until = raft_clock()
        if not self._SyncObj__transferInProgress:  # type: ignore[attr-defined]
            # a leader too: stepping down must not find a stale deadline to fire
            self._SyncObj__raftElectionDeadline = math.inf  # type: ignore[attr-defined]
        if self.is_leader():
            return
        now = raft_clock()
        if not self._eligible():
            self._prevote = None
            self._timer = max(self._timer, now + self.timings.election_min_s)
            return
        self._crash_hint(leader, now)
        if self._prevote is not None and now > self._prevote[1]:
            self._prevote = None  # no majority in time: the timer tries again
            if self._hint_for is not None:
                # after a crash the others may not have seen the connection
                # close yet when asked: ask again soon, not a timeout later
                self._timer = min(self._timer, now + HINT_RETRY_S)
        if now >= self._timer and self._prevote is None:
            self._start_prevote(now)

    def _crash_hint(self, leader: Any, now: float) -> None:
        """The leader's connection closed: its process is gone (or restarting).
        The first-ranked survivor asks for votes now, the next after a stagger."""
        if leader is None or leader.id == self.self_addr or self.isNodeConnected(leader):
            self._hint_for = None
            return
        if self._hint_for is leader:
            return
        self._hint_for = leader
        # the survivor the others would prefer goes first (see _someone_preferred)
        survivors = sorted(
            (a for a in self._rank_peers if a != leader.id),
            key=lambda a: (self._key_of(a), a),
            reverse=True,
        )
        rank = survivors.index(self.self_addr) if self.self_addr in survivors else 0
        self._timer = min(self._timer, now + rank * HINT_STAGGER_S)
        logger.info(
            "raft: connection to leader {} closed; campaigning in {:.0f} ms",
            leader.id,
            rank * HINT_STAGGER_S * 1000,
        )

    def _reset_timer(self) -> None:
        t = self.timings
        self._timer = raft_clock() + random.uniform(t.election_min_s, t.election_max_s)

    def _start_prevote(self, now: float) -> None:
        """Ask the others whether they would vote for this node in the next
        term, without raising any term (Raft's pre-vote, section 9.6 of
        Ongaro's thesis): a node cut off from the majority, or one whose
        log is behind, keeps its term and cannot depose a healthy leader
        when it comes back."""
        self._reset_timer()
        term = self.term + 1
        window = HINT_RETRY_S if self._hint_for is not None else self.timings.election_min_s
        self._prevote = (term, now + window, {self.self_addr})
        transport = self._SyncObj__transport  # type: ignore[attr-defined]
        last_index, last_term = self._last_log()
        for node in self.otherNodes:
            if self.isNodeConnected(node):
                transport.send(
                    node,
                    {
                        "type": PREVOTE,
                        "term": term,
                        "last_index": last_index,
                        "last_term": last_term,
                        "priority": self.priority,
                        "started": self.started_wall,
                    },
                )

    def _last_log(self) -> tuple[int, int]:
        log = self._SyncObj__raftLog  # type: ignore[attr-defined]
        return int(log[-1][1]), int(log[-1][2])

    def _leader_is_alive(self, asker: Any) -> bool:
        """This node hears from a leader that still leads (Raft's check against
        disruptive servers): it grants no vote, real or pre-, meanwhile. A
        leader counts itself while a majority answered it lately. The target
        of a handover is exempt: the leader asked for it."""
        if self._is_handover_target(asker):
            return False
        now = raft_clock()
        window = self.timings.election_min_s
        if self.is_leader():
            return self.quorum_contact(window)
        leader = self._getLeader()
        return (
            leader is not None
            and self.isNodeConnected(leader)
            and now - self._heard_leader < window
        )

    def _is_handover_target(self, node: Any) -> bool:
        member = self.state.members.get(node.id)
        return bool(member is not None and member.node_id == self.state.transfer_to)

    def quorum_contact(self, within_s: float) -> bool:
        """Leader: a majority (itself included) answered within within_s."""
        times = self._SyncObj__lastResponseTime  # type: ignore[attr-defined]
        now = raft_clock()
        recent = sum(1 for n in self.otherNodes if now - times.get(n, 0.0) < within_s)
        return recent + 1 > (len(self.otherNodes) + 1) / 2

    def _on_prevote(self, node: Any, message: dict[str, Any]) -> None:
        last_index, last_term = self._last_log()
        up_to_date = (message["last_term"], message["last_index"]) >= (last_term, last_index)
        granted = (
            message["term"] > self.term
            and up_to_date
            and raft_clock() >= self.vote_hold_until
            and not self._abstain()
            and not self._leader_is_alive(node)
            and not self._someone_preferred(node.id, message)
        )
        transport = self._SyncObj__transport  # type: ignore[attr-defined]
        transport.send(node, {"type": PREVOTE_REPLY, "term": message["term"], "granted": granted})

    # ---- who should lead: an explicit priority, else the first started ----------

    def _key_of(self, addr: str) -> tuple[int, float]:
        """(priority, -start time) of a member, as its pings said; higher leads."""
        if addr == self.self_addr:
            return self.priority, -self.started_wall
        info = self._peer_info.get(addr)
        return info[0] if info is not None else (-1, -math.inf)

    def _someone_preferred(self, candidate: str, message: dict[str, Any]) -> bool:
        """Deny a pre-vote to a candidate while a member that should lead before
        it could win instead: one with a higher --raft-priority, or the same
        and started START_TOLERANCE_S earlier, that may campaign (healthy,
        not a witness), is heard from, and whose log is as complete. The
        requirement: the primary is the first started, or chosen by priority."""
        key = (int(message.get("priority", 0)), -float(message.get("started", math.inf)))
        log = (message["last_term"], message["last_index"])
        now = raft_clock()
        rivals = [(self._key_of(self.self_addr), self._eligible(), self._last_log_term_first())]
        leader = self._getLeader()
        connected = {n.id for n in self.otherNodes if self.isNodeConnected(n)}
        for addr, (k, eligible, their_log, when) in self._peer_info.items():
            # not the leader whose loss this election replaces (a dead one's last
            # ping said it was the best for PEER_INFO_S: measured, 360 ms lost)
            if (
                addr != candidate
                and addr in connected
                and (leader is None or addr != leader.id)
                and now - when < PEER_INFO_S
            ):
                rivals.append((k, eligible, their_log))
        return any(
            eligible and their_log >= log and _leads_before(k, key)
            for k, eligible, their_log in rivals
        )

    def _last_log_term_first(self) -> tuple[int, int]:
        index, term = self._last_log()
        return term, index

    def _on_prevote_reply(self, node: Any, message: dict[str, Any]) -> None:
        pv = self._prevote
        if pv is None or message["term"] != pv[0] or not message["granted"]:
            return
        pv[2].add(node.id)
        if len(pv[2]) > (len(self.otherNodes) + 1) / 2 and self.term + 1 == pv[0]:
            self._prevote = None
            # a majority would vote: campaign on pysyncobj's next tick
            self._SyncObj__raftElectionDeadline = 0  # type: ignore[attr-defined]

    def _ack_age(self) -> float:
        """Seconds since this node last acknowledged a leader's entries (or led,
        or started: what it acknowledged before a restart is forgotten, and it
        votes for nobody in its first maximum election timeout)."""
        return raft_clock() - self._last_ack()

    def _last_ack(self) -> float:
        """When this node last acknowledged a leader's entries, led, or started."""
        return max(self._heard_leader, self._started, self._led_until)

    def ack_age_ns(self, term: int) -> int | None:
        """For a leader of `term`: how long ago the last acknowledgement any
        node of its winning majority gave to an earlier leader was. The old
        primary's lease rested on an acknowledgement by one of them (any two
        majorities share a node), so it ended at most lease_ms after that --
        not lease_ms after this win. None: not known (wait the whole lease)."""
        bound = self._ack_bound.get(term)
        return None if bound is None else max(0, int((raft_clock() - bound) * 1e9))

    def transfer_to(self, addr: str) -> None:
        """Ask `addr` to take leadership now (Raft's TimeoutNow), on
        pysyncobj's thread: its state is not safe to touch from another."""
        self._soon.append(lambda: self.transferLeadership(addr))

    def _ping(self) -> None:
        """pysyncobj drops a connection nothing was read from for
        connectionTimeout, and followers never talk to each other: without
        this, the link two survivors need for a quick election was down half
        the time when their leader died (its vote request was lost)."""
        now = raft_clock()
        if now < self._next_ping:
            return
        self._next_ping = now + PING_S
        transport = self._SyncObj__transport  # type: ignore[attr-defined]
        last_term, last_index = self._last_log_term_first()
        # what the others need to tell who should lead (see _someone_preferred)
        ping = {
            "type": PING,
            "priority": self.priority,
            "started": self.started_wall,
            "eligible": self._eligible(),
            "last_term": last_term,
            "last_index": last_index,
        }
        for node in self.otherNodes:
            if self.isNodeConnected(node):
                transport.send(node, ping)

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:  # noqa: N802
        """pysyncobj's message handler (this name overrides its private one),
        with what this node adds: pings, pre-votes, no vote while the leader
        is alive, and none for one maximum election timeout after a start
        (a vote given before a power cut may not be on disk)."""
        kind = message.get("type")
        if kind == PING:
            if "priority" in message:
                self._peer_info[node.id] = (
                    (int(message["priority"]), -float(message["started"])),
                    bool(message["eligible"]),
                    (int(message["last_term"]), int(message["last_index"])),
                    raft_clock(),
                )
            return
        if kind == PREVOTE:
            self._on_prevote(node, message)
            return
        if kind == PREVOTE_REPLY:
            self._on_prevote_reply(node, message)
            return
        if kind == "response_vote" and "term" in message:
            # when the voter last acknowledged a leader (no field: now, the safe side)
            acks = self._vote_acks.setdefault(message["term"], [])
            acks.append(raft_clock() - float(message.get(ACK_AGE, 0.0)))
            for old in [t for t in self._vote_acks if t < message["term"] - 2]:
                del self._vote_acks[old]
        if kind == "request_vote":
            if raft_clock() < self.vote_hold_until or self._leader_is_alive(node):
                return
            self._reset_timer()
        elif kind == "append_entries" and message.get("term", -1) >= self.term:
            self._heard_leader = raft_clock()
            self._reset_timer()
            conflict = self._conflict(message)
            SyncObj._SyncObj__onMessageReceived(self, node, message)  # type: ignore[attr-defined]
            if conflict:
                self._send_backup(node)
            return
        elif kind == "next_node_idx" and self.is_leader():
            message = self._lowest_rejection(node, message)
        SyncObj._SyncObj__onMessageReceived(self, node, message)  # type: ignore[attr-defined]

    # ---- catching up a follower whose log diverged -----------------------------
    # pysyncobj steps a diverged follower back one entry per round trip, and
    # since the leader sends everything after nextIndex at once, the
    # rejections of the later messages push nextIndex up again: a node healed
    # after a partition took ~25 s to follow (until a log compaction), the
    # leader too busy resending to keep its lease meanwhile. The follower
    # names its commit index + 1 instead (committed entries are the leader's
    # too), and the leader keeps the lowest index rejected until a success.

    def _conflict(self, message: dict[str, Any]) -> bool:
        """The entry before the appended ones is there with another term."""
        if "prevLogIdx" not in message or message.get("transmission") is not None:
            return False
        found = self._SyncObj__getEntries(message["prevLogIdx"], 1)  # type: ignore[attr-defined]
        return bool(found) and found[0][2] != message["prevLogTerm"]

    def _send_backup(self, node: Any) -> None:
        commit = int(self._SyncObj__raftCommitIndex)  # type: ignore[attr-defined]
        transport = self._SyncObj__transport  # type: ignore[attr-defined]
        transport.send(
            node,
            {"type": "next_node_idx", "next_node_idx": commit + 1, "reset": True, "success": False},
        )

    def _lowest_rejection(self, node: Any, message: dict[str, Any]) -> dict[str, Any]:
        if message.get("success"):
            self._rejected.pop(node.id, None)
            return message
        if not message.get("reset"):
            return message
        lowest = min(
            self._rejected.get(node.id, message["next_node_idx"]), message["next_node_idx"]
        )
        self._rejected[node.id] = lowest
        return dict(message, next_node_idx=lowest)


def _leads_before(a: tuple[int, float], b: tuple[int, float]) -> bool:
    """Key a ((priority, -start time)) should lead before key b."""
    if a[0] != b[0]:
        return a[0] > b[0]
    return a[1] - b[1] > START_TOLERANCE_S


def call_sync(submit: Callable[..., None], *args: Any, timeout_s: float = 2.0) -> Any:
    """Run a replicated method and wait for its result on this node; raises
    RaftUnavailable if it did not commit (no leader, lost leadership, timeout)."""
    done = threading.Event()
    box: list[Any] = [None, None]

    def callback(result: Any, err: int) -> None:
        box[0], box[1] = result, err
        done.set()

    submit(*args, callback=callback)
    if not done.wait(timeout_s):
        raise RaftUnavailable(f"not committed within {timeout_s:.1f} s", maybe_applied=True)
    if box[1] != FAIL_REASON.SUCCESS:
        # appended, then the leader changed: a later leader may still commit it
        maybe = box[1] in (
            FAIL_REASON.LEADER_CHANGED,
            FAIL_REASON.NOT_LEADER,
            FAIL_REASON.UNKNOWN_OUTCOME,
        )
        raise RaftUnavailable(FAIL_NAMES.get(box[1], str(box[1])), maybe_applied=maybe)
    return box[0]


FAIL_NAMES = {
    FAIL_REASON.QUEUE_FULL: "the Raft queue is full",
    FAIL_REASON.MISSING_LEADER: "no leader",
    FAIL_REASON.DISCARDED: "discarded by a new leader",
    FAIL_REASON.NOT_LEADER: "not the leader",
    FAIL_REASON.LEADER_CHANGED: "the leader changed",
    FAIL_REASON.REQUEST_DENIED: "denied",
    FAIL_REASON.UNKNOWN_OUTCOME: "outcome unknown",
}


class RaftUnavailable(Exception):
    def __init__(self, message: str, maybe_applied: bool = False) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied  # a timeout: it may commit later
