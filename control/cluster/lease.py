"""The primary's quorum lease, and how long a new primary waits before it acts.

The leader stamps a lease round with the monotonic time it is submitted (t0)
and holds the lease until t0 + lease_ms once a majority has stored it
(the round's Raft entry commits in the leader's term). A voter that has
granted a newer term rejects the old leader's entries from then on, so every
acknowledgement the old lease rests on came before the vote that elected the
new leader: the old lease ends before (the new leader's win + lease_ms). A new
primary therefore waits lease_ms, plus a margin for clock-rate differences,
before it actuates -- unless the previous primary handed over explicitly
(it stopped actuating and said so through the log first).

The same stamp goes into the RT's control block as its lease (lease_ns with
lease_timeout_ns = lease_ms), so an RT whose agent dies, freezes or is cut
off stops driving outputs at the instant the quorum lease ends, by itself.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

# clocks of different machines run at slightly different rates: a new primary
# waits this much longer than the lease (at least MIN_MARGIN_NS)
RATE_MARGIN = 0.05
MIN_MARGIN_NS = 2_000_000


@dataclass
class LeaseState:
    term: int = 0
    start_ns: int = 0  # t0 of the newest acknowledged round in `term`; 0: none


class QuorumLease:
    """Thread-safe. `acknowledged(term, t0)` is called when a round submitted at
    t0 committed in `term`; `valid(term, now)` says whether the lease holds."""

    def __init__(self, lease_ms: int) -> None:
        self.lease_ns = lease_ms * 1_000_000
        self.margin_ns = max(MIN_MARGIN_NS, int(self.lease_ns * RATE_MARGIN))
        self._lock = threading.Lock()
        self._state = LeaseState()
        self._won: dict[int, int] = {}  # term -> when this node became leader in it
        self._revoked = 0  # rounds of this term and older no longer count
        self.rounds = 0

    def acknowledged(self, term: int, t0: int) -> int:
        """Record a committed round; returns the lease start now held."""
        with self._lock:
            s = self._state
            if term <= self._revoked:
                return 0
            if term > s.term:
                self._state = LeaseState(term, t0)
            elif term == s.term and t0 > s.start_ns:
                s.start_ns = t0
            self.rounds += 1
            return self._state.start_ns

    def start_ns(self, term: int) -> int:
        """The lease start held in `term`, 0 if none."""
        with self._lock:
            return self._state.start_ns if self._state.term == term else 0

    def valid(self, term: int, now_ns: int) -> bool:
        start = self.start_ns(term)
        return start > 0 and now_ns - start < self.lease_ns

    def age_ns(self, term: int, now_ns: int) -> int | None:
        start = self.start_ns(term)
        return now_ns - start if start else None

    def won(self, term: int, now_ns: int, ack_age_ns: int | None = None) -> None:
        """This node became leader in `term` at now_ns (first call counts).
        ack_age_ns: how long ago a node of the winning majority last
        acknowledged an earlier leader (RaftNode.ack_age_ns); the old lease
        ends lease_ms after that at the latest. None: count from now."""
        with self._lock:
            if term not in self._won:
                self._won[term] = now_ns - max(0, ack_age_ns or 0)
            for old in [t for t in self._won if t < term - 1]:
                del self._won[old]

    def ready_at(self, term: int) -> int | None:
        """When a primary of `term` may first actuate without a handover: the
        lease (plus the rate margin) after the last acknowledgement the old
        lease could rest on."""
        with self._lock:
            won = self._won.get(term)
        return None if won is None else won + self.lease_ns + self.margin_ns

    def unrevoke(self, term: int) -> None:
        """A handover that did not happen: rounds of `term` count again (the
        lease itself starts over from the next acknowledged one)."""
        with self._lock:
            if self._revoked == term:
                self._revoked = term - 1

    def revoke(self, term: int) -> None:
        """Give up the lease of `term` and older (a handover, a step-down): no
        later round of those terms renews it, rounds in flight included."""
        with self._lock:
            self._revoked = max(self._revoked, term)
            if self._state.term <= term:
                self._state = LeaseState(term, 0)
