"""The sink workers over a real spool: what a sink settled is acknowledged,
what it did not is handed to it again, in order, and a sink's bug or a
slow sink at stop loses nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from control.logs.pipeline import LogPipeline
from control.logs.sink import Delivery, Record
from control.logs.spool import Spool
from tests.conftest import wait_for


class ScriptedSink:
    """Answers deliveries from a script: ("settle", k, retry_s) settles the
    first k records of the batch, ("raise",) raises; then settles everything."""

    name = "scripted"

    def __init__(self, script: list[tuple[Any, ...]], hold_s: float = 0.0) -> None:
        self.script = list(script)
        self.hold_s = hold_s
        self.batches: list[list[int]] = []
        self.settled: list[int] = []
        self.closed = False

    def deliver(self, records: Sequence[Record]) -> Delivery:
        seqs = [r[0] for r in records]
        self.batches.append(seqs)
        time.sleep(self.hold_s)
        step = self.script.pop(0) if self.script else ("settle", len(records), None)
        if step[0] == "raise":
            raise RuntimeError("a bug in the sink")
        _, k, retry_s = step
        k = min(k, len(records))
        self.settled.extend(seqs[:k])
        return Delivery(k, retry_s)

    def stats(self) -> dict[str, Any]:
        return {"settled": len(self.settled)}

    def close(self) -> None:
        self.closed = True


def entries(n: int) -> list[tuple[int, int, bytes]]:
    return [(time.time_ns(), 20, b'{"message":"m%d"}' % i) for i in range(n)]


def test_a_partial_delivery_is_acknowledged_only_as_far_as_it_got(tmp_path: Path) -> None:
    sink = ScriptedSink([("settle", 3, 0.01), ("raise",), ("settle", 2, None)])
    spool = Spool(str(tmp_path / "spool"), [sink.name])
    pipe = LogPipeline(spool, [sink])
    spool.append(entries(10))
    pipe.start()
    try:
        wait_for(lambda: len(sink.settled) == 10, timeout=10, what="every record settled")
    finally:
        pipe.stop()
    first = sink.batches[0][0]
    expect = list(range(first, first + 10))
    # settled exactly once each, in order
    assert sink.settled == expect
    # after settling 3: the 4th first; after the sink's bug: the 4th again; after 2 more: the 6th
    assert [b[0] for b in sink.batches[:4]] == [first, first + 3, first + 3, first + 5]
    reopened = Spool(str(tmp_path / "spool"), [sink.name])
    assert reopened.stats()["sinks"][sink.name]["acked"] == expect[-1]
    assert reopened.read(sink.name, 100) == []
    reopened.close()


def test_what_was_acknowledged_survives_a_restart_and_the_rest_is_handed_again(
    tmp_path: Path,
) -> None:
    """The pipeline stops while its sink still owes records (it asked to wait
    a long time): a new pipeline on the same spool starts at the first record
    not settled, not before, not after."""
    sink = ScriptedSink([("settle", 4, 60.0)])
    pipe = LogPipeline(Spool(str(tmp_path / "spool"), [sink.name]), [sink])
    pipe.append(entries(10))
    pipe.start()
    wait_for(lambda: sink.batches, timeout=10, what="a first delivery")
    pipe.stop()
    assert sink.closed
    again = ScriptedSink([])
    pipe = LogPipeline(Spool(str(tmp_path / "spool"), [again.name]), [again])
    pipe.start()
    try:
        wait_for(lambda: len(again.settled) == 6, timeout=10, what="the rest settled")
    finally:
        pipe.stop()
    assert again.settled == [sink.batches[0][0] + i for i in range(4, 10)]


def test_a_sink_still_delivering_at_stop_keeps_the_spool_usable(tmp_path: Path) -> None:
    """A sink stuck in a delivery longer than the stop waits (a server that
    does not answer): stop returns, the spool is not closed under it, and its
    late answer is acknowledged without an error."""
    sink = ScriptedSink([], hold_s=7.0)
    spool = Spool(str(tmp_path / "spool"), [sink.name])
    pipe = LogPipeline(spool, [sink])
    pipe.append(entries(3))
    pipe.start()
    wait_for(lambda: sink.batches, timeout=10, what="the delivery to begin")
    errors: list[BaseException] = []
    threading.excepthook, old = (lambda args: errors.append(args.exc_value)), threading.excepthook
    try:
        t0 = time.monotonic()
        pipe.stop()
        assert time.monotonic() - t0 < 7.0
        assert not sink.closed
        worker = pipe.workers[0]
        wait_for(lambda: not worker._thread.is_alive(), timeout=10, what="the late answer")
    finally:
        threading.excepthook = old
    assert errors == []
    assert spool.stats()["sinks"][sink.name]["acked"] == sink.settled[-1]
    spool.close()
