"""One thread drains the RT's rings in bulk and hands the batches to
subscribers (the event bus, the job runner, the log sink, the actuation
journal, the log pipeline, the span pipeline).

Each subscriber has a bounded queue and its own thread, so the drainer never
waits on a subscriber's I/O (fsyncs, SQLite commits, network). A slow
subscriber loses the batches its queue cannot hold; the records lost are
counted per subscriber. A lossless subscriber (the actuation journal) is
never dropped from: while its queue is full the drainer leaves its ring
alone, and the RT, which will not start an interval without room in that
ring, fails closed rather than lose a record.

An inline subscriber (the log pipeline's spool) runs on the drainer's own
thread, between copying a batch out of the ring and taking it: records
leave the RT's ring only once it has them, so an agent killed at any moment
loses none (the next agent drains them from the shared ring). Its handler
must be quick and must not block (the spool appends to a file).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from loguru import logger

from rtcore.records import Batch, Decoder
from rtcore.records import Drainer as RingDrainer
from rtcore.segment import Segment

RINGS = ("log", "span", "event", "journal")
STOP_JOIN_S = 5.0


class Subscriber:
    """A consumer of batches from some rings, fed through a bounded queue."""

    def __init__(
        self,
        name: str,
        rings: set[str],
        handle: Callable[[Batch, Decoder], None],
        max_batches: int = 256,
        lossless: bool = False,
        inline: bool = False,
    ) -> None:
        self.name = name
        self.rings = rings
        self.lossless = lossless
        self.inline = inline
        self._handle = handle
        self._queue: queue.Queue[tuple[Batch, Decoder] | None] = queue.Queue(max_batches)
        self._thread = threading.Thread(target=self._run, name=f"sub-{name}", daemon=True)
        self.delivered = 0  # records handled
        self.dropped = 0  # records lost because the queue was full
        self.faults = 0  # batches whose handler raised

    def has_room(self) -> bool:
        return not self._queue.full()

    def offer(self, batch: Batch, decoder: Decoder) -> bool:
        try:
            self._queue.put_nowait((batch, decoder))
            return True
        except queue.Full:
            self.dropped += len(batch)
            return False

    def handle_now(self, batch: Batch, decoder: Decoder) -> None:
        """Run the handler on this thread (the drainer's, for an inline subscriber)."""
        try:
            self._handle(batch, decoder)
            self.delivered += len(batch)
        except Exception:  # noqa: BLE001 - one bad batch must not stop the drainer or the subscriber
            self.faults += 1
            logger.exception("subscriber {} failed on a {} batch", self.name, batch.ring)

    def start(self) -> None:
        if not self.inline:
            self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then end; bounded: a handler that hangs is
        left behind (its thread is a daemon) after STOP_JOIN_S."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(None, timeout=STOP_JOIN_S)
        except queue.Full:
            logger.error("subscriber {} is stuck; not waiting for it", self.name)
            return
        self._thread.join(STOP_JOIN_S)

    def flush(self, timeout_s: float) -> bool:
        """Wait until what was queued so far is handled; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline or not self._thread.is_alive():
                return False
            time.sleep(0.001)
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "dropped": self.dropped,
            "queued": self._queue.qsize(),
            "faults": self.faults,
        }

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self.handle_now(*item)
            finally:
                self._queue.task_done()
        self._queue.task_done()


class Drainer:
    """The node's single drainer of its RT segment."""

    def __init__(
        self,
        segment: Callable[[], Segment | None],
        generation: Callable[[], int],
        interval_s: float,
    ) -> None:
        self._segment = segment
        self._generation = generation
        self._interval = interval_s
        self._subs: list[Subscriber] = []
        self._rings: RingDrainer | None = None
        self._rings_gen = -1
        self._lock = threading.Lock()  # one drain at a time (thread, final drain, on demand)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drainer", daemon=True)
        self.batches = 0
        self.records = 0
        self.faults = 0

    def subscribe(self, sub: Subscriber) -> Subscriber:
        self._subs.append(sub)
        return sub

    @property
    def decoder(self) -> Decoder | None:
        return self._rings.decoder if self._rings is not None else None

    def start(self) -> None:
        for sub in self._subs:
            sub.start()
        self._thread.start()

    def stop(self) -> None:
        """Stop draining, drain what is left (the RT is stopped first, so its
        last records are kept), let the subscribers finish their queues."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_JOIN_S)
        try:
            self.drain_once()
        finally:
            for sub in self._subs:
                sub.stop()

    def drain_once(self) -> int:
        """Take everything pending in the rings now and fan it out; returns records taken."""
        with self._lock:
            rings = self._attach()
            if rings is None:
                return 0
            taken = 0
            for ring in RINGS:
                subs = [s for s in self._subs if ring in s.rings]
                if any(s.lossless and not s.has_room() for s in subs):
                    continue  # leave it in the ring: the RT holds back, nothing is lost
                if not rings.pending(ring):
                    continue
                inline = [s for s in subs if s.inline]
                if inline:
                    batch = rings.peek_batch(ring)
                    for sub in inline:
                        sub.handle_now(batch, rings.decoder)
                    rings.commit(ring, len(batch))
                else:
                    batch = rings.drain_batch(ring)
                taken += len(batch)
                self.batches += 1
                for sub in subs:
                    if not sub.inline:
                        sub.offer(batch, rings.decoder)
            self.records += taken
            return taken

    def stats(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "records": self.records,
            "faults": self.faults,
            "subscribers": {s.name: s.stats() for s in self._subs},
        }

    def _attach(self) -> RingDrainer | None:
        seg = self._segment()
        if seg is None:
            return None
        if self._rings is None or self._rings_gen != self._generation():
            self._rings = RingDrainer(seg.buf)
            self._rings_gen = self._generation()
        return self._rings

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.drain_once()
            except Exception:  # noqa: BLE001 - the drainer must outlive one bad batch
                self.faults += 1
                logger.exception("draining the RT rings failed")
                time.sleep(self._interval)
