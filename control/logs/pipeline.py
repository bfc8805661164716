"""Source -> durable spool -> one worker per sink, each acknowledging what
its sink settled (Vector's end-to-end acknowledgements, in small).

Appending never waits on a sink: the drainer and the agent's logging only
write to the spool. Each worker reads from its sink's cursor, delivers, and
acknowledges the settled prefix; what a sink could not take is read again
after the backoff the sink asks for, so an outage of any length ends with
everything delivered in order, and a crash resumes at the last
acknowledgement (sinks de-duplicate what is handed to them twice).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from loguru import logger

from control.logs.ecs import LEVEL_NAMES, Entry
from control.logs.sink import Sink
from control.logs.spool import Spool

BATCH_RECORDS = 20_000
IDLE_WAIT_S = 0.02
STOP_DRAIN_S = 3.0


class SinkWorker:
    """Feeds one sink from its spool cursor on a thread of its own."""

    def __init__(self, spool: Spool, sink: Sink, batch_records: int = BATCH_RECORDS) -> None:
        self.spool = spool
        self.sink = sink
        self._batch = batch_records
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"log-{sink.name}", daemon=True)
        self.batches = 0
        self.faults = 0
        self.retry_until = 0.0  # monotonic time before which the sink asked not to be called

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> bool:
        """Deliver what is spooled while the sink takes it (bounded), then end;
        False if the sink is still inside a delivery (a slow server)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(STOP_DRAIN_S + 2.0)
        return not self._thread.is_alive()

    def _run(self) -> None:
        deadline = None
        while True:
            if self._stop.is_set():
                deadline = deadline or time.monotonic() + STOP_DRAIN_S
                if time.monotonic() > deadline:
                    return
            try:
                records = self.spool.read(self.sink.name, self._batch)
            except OSError as e:  # the disk failed a read: try again, later
                self.faults += 1
                logger.error("log spool read for {} failed: {}", self.sink.name, e)
                self._stop.wait(1.0)
                continue
            if not records:
                if self._stop.is_set():
                    return
                self.spool.wait(self.sink.name, IDLE_WAIT_S)
                continue
            try:
                delivery = self.sink.deliver(records)
            except Exception:  # noqa: BLE001 - a sink's bug must not end its worker
                self.faults += 1
                logger.exception("log sink {} failed; retrying its batch", self.sink.name)
                self.spool.rewind(self.sink.name)
                self._stop.wait(1.0)
                continue
            self.batches += 1
            if delivery.done:
                self.spool.ack(self.sink.name, records[delivery.done - 1][0])
            if delivery.done < len(records):
                self.spool.rewind(self.sink.name)
            if delivery.retry_after_s:
                self.retry_until = time.monotonic() + delivery.retry_after_s
                if self._stop.wait(delivery.retry_after_s):
                    return  # stopping while the sink asked to wait: the rest waits in the spool

    def stats(self) -> dict[str, Any]:
        return {
            **self.sink.stats(),
            "batches": self.batches,
            "faults": self.faults,
            "waiting_s": round(max(0.0, self.retry_until - time.monotonic()), 3),
        }


class LogPipeline:
    """The node's logs: appended to the spool, delivered by the sink workers."""

    def __init__(self, spool: Spool | None, sinks: Sequence[Sink], spool_error: str = "") -> None:
        self.spool = spool
        self.spool_error = spool_error
        self.workers = [SinkWorker(spool, s) for s in sinks] if spool is not None else []
        # records that had nowhere to go: no usable spool
        self.unspooled: Counter[str] = Counter()
        self._local = threading.local()

    def append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        if self.spool is None:
            self.drop([level for _, level, _ in entries])
            return
        self.spool.append(entries)

    def keeps_below_warn(self) -> bool:
        """Whether DEBUG and INFO records appended now would be kept (see
        Spool.keeps_below_warn); without a spool nothing is."""
        return self.spool is not None and self.spool.keeps_below_warn()

    def drop(self, levels: list[int]) -> None:
        """Records the writer did not make, counted as the spool counts its drops."""
        if self.spool is None:
            self.unspooled.update(LEVEL_NAMES.get(level, "INFO") for level in levels)
        else:
            self.spool.count_dropped(levels)

    def append_agent_record(self, entry: Entry) -> None:
        """One record of the agent's own logging. A record logged while this
        thread is already inside append (the spool reporting its own trouble)
        is counted, not appended: no recursion into the spool's lock."""
        if getattr(self._local, "busy", False):
            self.unspooled["reentrant"] += 1
            return
        self._local.busy = True
        try:
            self.append([entry])
        finally:
            self._local.busy = False

    def start(self) -> None:
        for w in self.workers:
            w.start()

    def sync(self) -> None:
        if self.spool is not None:
            self.spool.sync()

    def stop(self) -> None:
        stuck = [w.sink.name for w in self.workers if not w.stop()]
        for w in self.workers:
            if w.sink.name not in stuck:
                w.sink.close()
        if self.spool is None:
            return
        if stuck:
            # the spool stays open under a delivery still in flight; its
            # cursors are persisted, the process's end closes the files
            logger.warning("log sink {} still delivering at stop; left to finish", stuck)
            self.spool.sync()
        else:
            self.spool.close()

    def stats(self) -> dict[str, Any]:
        return {
            "spool": self.spool.stats() if self.spool is not None else None,
            "spool_error": self.spool_error or None,
            "unspooled": dict(self.unspooled),
            "sinks": {w.sink.name: w.stats() for w in self.workers},
        }
