"""Records spooled but not yet settled in the embedded store, searchable
meanwhile.

The store commits its index once a batch, and a commit (segment files and
meta.json fsynced) takes tens of milliseconds: a record spooled during one
waited for it, then rode the next, so it became searchable 100-150 ms after
the RT pushed it. Now the spool hands every record it keeps to this buffer,
and a search of the store also scans the records here above the store's
settled seq: a record is searchable once the drainer has spooled it.

Bounded to the newest `capacity` records: when the store is further behind
than that (a burst larger than the buffer), the older unsettled records wait
for the index. The spool, not this buffer, is what keeps records: an agent
that dies loses the buffer, and its successor delivers them from the spool.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

# (seq, time_ns, level, document): what a store search scans
Fresh = tuple[int, int, int, bytes]

# Seconds of records at the rates the store keeps up with (it settles a batch
# within ~100 ms). The bound is also a search's worst case: a scan of all of
# them took 9-24 ms here (query.matching)
FRESH_RECORDS = 20_000


class FreshRecords:
    """The spool's newest records in seq order; thread-safe. `add` runs under
    the spool's append lock (so seqs arrive in order) on the drainer's thread:
    it only extends a deque."""

    def __init__(self, capacity: int = FRESH_RECORDS) -> None:
        self._lock = threading.Lock()
        self._records: deque[Fresh] = deque(maxlen=capacity)
        self._capacity = capacity
        # every record the spool kept above this seq is here (or was settled
        # and forgotten); at or below it, some never were: appended before the
        # first add (an agent restarted with a backlog), or pushed out by newer
        # ones (a store further behind than the capacity)
        self._complete_above: int | None = None

    def add(self, first_seq: int, records: Sequence[tuple[int, int, bytes]]) -> None:
        """Records (time_ns, level, doc) the spool kept, numbered from first_seq."""
        with self._lock:
            if self._complete_above is None:
                self._complete_above = first_seq - 1
            overflow = len(self._records) + len(records) > self._capacity
            self._records.extend(
                (first_seq + i, t, level, doc) for i, (t, level, doc) in enumerate(records)
            )
            if overflow:
                self._complete_above = max(self._complete_above, self._records[0][0] - 1)

    def settle(self, seq: int) -> None:
        """The store has settled every record up to seq: forget them."""
        with self._lock:
            while self._records and self._records[0][0] <= seq:
                self._records.popleft()

    def above(self, seq: int) -> tuple[list[Fresh], int]:
        """The records above seq, in seq order, and the seq above which the
        buffer holds every record (see _complete_above). Copied under the lock
        (the drainer waits for it: about a µs per hundred records)."""
        newer: list[Fresh] = []
        with self._lock:
            complete_above = self._complete_above or 0
            for rec in reversed(self._records):
                if rec[0] <= seq:
                    break
                newer.append(rec)
        newer.reverse()
        return newer, complete_above

    def __len__(self) -> int:
        return len(self._records)
