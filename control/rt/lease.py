"""The agent's lease on its RT: renewed while the agent is alive and says so.

The RT actuates only while control.lease_ns is younger than
control.lease_timeout_ns, so an agent that dies, hangs or is stopped
(SIGSTOP) leaves an RT that stops driving outputs by itself within the
timeout. The same thread refreshes the segment's clock anchor, so wall-clock
conversion follows NTP.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from loguru import logger

from rtcore import _core

CLOCK_REFRESH_S = 1.0


class LeaseKeeper:
    """`stamp` gives the lease to write (a monotonic time), None for none (the
    RT's lease then runs out); without it the lease is stamped with now. A
    cluster's primary passes its quorum lease (control.cluster.lease)."""

    def __init__(
        self,
        segment_buf: Callable[[], Any],
        timeout_ms: int,
        stamp: Callable[[], int | None] | None = None,
    ) -> None:
        self._buf = segment_buf
        self._stamp = stamp
        self.timeout_ms = timeout_ms
        # several renewals per timeout: one late wake-up of this thread must not lapse it
        self._interval = timeout_ms / 5000
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewals = 0
        self.failures = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def renew_now(self) -> None:
        buf = self._buf()
        if buf is not None:
            self._renew(buf)

    def _renew(self, buf: Any) -> None:
        if self._stamp is None:
            _core.renew_lease(buf)
        else:
            stamp = self._stamp()
            if stamp is None:
                return
            _core.write_control(buf, lease_ns=stamp)
        self.renewals += 1

    def _run(self) -> None:
        next_clock = 0.0
        while not self._stop.wait(self._interval):
            try:
                buf = self._buf()
                if buf is None:
                    continue
                self._renew(buf)
                now = time.monotonic()
                if now >= next_clock:
                    _core.anchor_clock(buf)
                    next_clock = now + CLOCK_REFRESH_S
            except Exception:  # noqa: BLE001 - a lapse fails safe; the thread must go on
                self.failures += 1
                logger.exception("lease renewal failed")
