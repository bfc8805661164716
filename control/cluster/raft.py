"""This node's pysyncobj member: its configuration, and the two things
pysyncobj lacks that a primary/standby cluster needs.

- Only an eligible node campaigns: a witness, or a node whose RT is not
  healthy, never starts an election (it still votes), so the leader is always
  a node that can drive the outputs.
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

import math
import os
import threading
from collections.abc import Callable
from typing import Any

from loguru import logger
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf
from pysyncobj.monotonic import monotonic as raft_clock
from pysyncobj.syncobj import _RAFT_STATE

from control.cluster.state import ClusterState

PING_S = 0.1  # keeps every connection read from (followers do not talk to each other)
HINT_STAGGER_S = 0.03  # between the campaigns of the ranked survivors of a crashed leader
TICK_S = 0.002
PING = "rtcore_ping"  # pysyncobj's poll timeout: bounds how late a deadline is noticed


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
    ) -> None:
        # attributes set before SyncObj.__init__ are not replicated state
        self.state = state
        self.timings = timings
        self._eligible = eligible
        self._hint_for: Any = None  # the leader whose disconnection was acted on
        # pysyncobj's deadlines are on its own clock (not time.monotonic's)
        self._started = raft_clock()
        self.vote_hold_until = self._started + timings.election_max_s
        self.elections = 0  # leader changes seen
        self._last_leader: Any = None
        self._next_ping = 0.0
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
        status = self.getStatus()
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
        """On pysyncobj's thread, after its election check of this tick."""
        self._ping()
        leader = self._getLeader()
        if leader is not self._last_leader:
            if leader is not None:
                self.elections += 1
            self._last_leader = leader
        if not self._eligible():
            # votes, never campaigns: pushed past every deadline, each tick
            self._SyncObj__raftElectionDeadline = math.inf  # type: ignore[attr-defined]
            return
        if self._SyncObj__raftElectionDeadline == math.inf:  # type: ignore[attr-defined]
            # eligible again: the usual timeout from now
            self._SyncObj__raftElectionDeadline = (  # type: ignore[attr-defined]
                raft_clock() + self.timings.election_min_s
            )
        if leader is None or leader.id == self.self_addr:
            self._hint_for = None
            return
        if self.isNodeConnected(leader):
            self._hint_for = None
            return
        if self._hint_for is leader:
            return
        # the leader's connection closed: its process is gone (or restarting);
        # the first-ranked survivor campaigns now, the next after a stagger
        self._hint_for = leader
        survivors = [a for a in self._rank_peers if a != leader.id]
        rank = survivors.index(self.self_addr) if self.self_addr in survivors else 0
        deadline = raft_clock() + rank * HINT_STAGGER_S
        if deadline < self._SyncObj__raftElectionDeadline:  # type: ignore[attr-defined]
            self._SyncObj__raftElectionDeadline = deadline  # type: ignore[attr-defined]
            logger.info(
                "raft: connection to leader {} closed; campaigning in {:.0f} ms",
                leader.id,
                rank * HINT_STAGGER_S * 1000,
            )

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
        for node in self.otherNodes:
            if self.isNodeConnected(node):
                transport.send(node, {"type": PING})

    def _SyncObj__onMessageReceived(self, node: Any, message: dict[str, Any]) -> None:  # noqa: N802
        """pysyncobj's message handler (this name overrides its private one): a
        node that has just started grants no vote for one maximum election
        timeout, since a vote it gave before a power cut may not be on disk."""
        kind = message.get("type")
        if kind == PING or (kind == "request_vote" and raft_clock() < self.vote_hold_until):
            return
        SyncObj._SyncObj__onMessageReceived(self, node, message)  # type: ignore[attr-defined]


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
        raise RaftUnavailable(f"not committed within {timeout_s:.1f} s")
    if box[1] != FAIL_REASON.SUCCESS:
        raise RaftUnavailable(FAIL_NAMES.get(box[1], str(box[1])))
    return box[0]


FAIL_NAMES = {
    FAIL_REASON.QUEUE_FULL: "the Raft queue is full",
    FAIL_REASON.MISSING_LEADER: "no leader",
    FAIL_REASON.DISCARDED: "discarded by a new leader",
    FAIL_REASON.NOT_LEADER: "not the leader",
    FAIL_REASON.LEADER_CHANGED: "the leader changed",
    FAIL_REASON.REQUEST_DENIED: "denied",
}


class RaftUnavailable(Exception):
    pass
