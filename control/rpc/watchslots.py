"""Admission and idle reaping of Watch streams.

A Watch stream holds a server worker for its whole life, so the slots are few:
at most `total` at once, at most `per_client` from one client (its host, not
its port: a client opening a new connection per stream is still one client),
and a stream that has sent nothing for `idle_s` is closed so a slot is never
held by a client that has gone quiet. One reaper thread, alive while streams
are open, does the closing through the callback each stream registered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from control.errors import ControlError


class Busy(ControlError):
    """No slot for this client now; the message says which limit."""


def client_of(peer: str) -> str:
    """The client's host from a gRPC peer ('ipv4:10.0.0.5:51234',
    'ipv6:[::1]:51234'); other kinds of peer (unix sockets) stay whole."""
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return address.rpartition(":")[0] or address
    return peer


class Slot:
    """One open stream: touch() whenever it sends, release() when it ends."""

    def __init__(self, slots: WatchSlots, client: str, on_idle: Callable[[], None]) -> None:
        self.client = client
        self.idle = False  # set once the reaper closed it for idleness
        self._slots = slots
        self._on_idle = on_idle
        self.last_sent = slots.clock()

    def touch(self) -> None:
        self.last_sent = self._slots.clock()

    def release(self) -> None:
        self._slots._release(self)


class WatchSlots:
    def __init__(
        self,
        total: int,
        per_client: int,
        idle_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.per_client = per_client
        self.idle_s = idle_s
        self.clock = clock
        self._lock = threading.Lock()
        self._open: list[Slot] = []
        self._wake = threading.Condition(self._lock)
        self._reaper: threading.Thread | None = None

    def acquire(self, client: str, on_idle: Callable[[], None]) -> Slot:
        """A slot for `client`, or Busy; on_idle() is called (from the reaper)
        to end the stream once it has been idle for idle_s."""
        with self._lock:
            if len(self._open) >= self.total:
                raise Busy(f"{self.total} watch streams are open already; close one and retry")
            mine = sum(1 for s in self._open if s.client == client)
            if mine >= self.per_client:
                raise Busy(
                    f"{client} has {mine} watch streams open already, the most one client "
                    f"may hold; close one and retry"
                )
            slot = Slot(self, client, on_idle)
            self._open.append(slot)
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="watch-reaper", daemon=True)
                self._reaper.start()
            return slot

    def open_count(self, client: str | None = None) -> int:
        with self._lock:
            return sum(1 for s in self._open if client is None or s.client == client)

    def _release(self, slot: Slot) -> None:
        with self._lock:
            if slot in self._open:
                self._open.remove(slot)
                self._wake.notify()

    def reap_once(self) -> list[Slot]:
        """Close the streams idle for idle_s; returns them."""
        now = self.clock()
        with self._lock:
            idle = [s for s in self._open if not s.idle and now - s.last_sent >= self.idle_s]
            for s in idle:
                s.idle = True
        for s in idle:
            s._on_idle()
        return idle

    def _reap(self) -> None:
        # checks a few times per idle period: a stream lives at most idle_s plus a quarter
        interval = min(max(self.idle_s / 4, 0.01), 5.0)
        while True:
            with self._lock:
                if not self._open:
                    self._reaper = None
                    return
                self._wake.wait(interval)
            self.reap_once()
