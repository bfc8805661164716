"""The node's plumbing with real shared memory and threads: the drainer and
its subscribers, the lifecycle's ordered and bounded stop, one logging
configuration."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from loguru import logger

from control.node import logsetup
from control.node.drainer import Drainer, Subscriber
from control.node.lifecycle import Component, Lifecycle
from rtcore import _core, _testhooks
from rtcore.segment import Segment
from tests.conftest import wait_for


@pytest.fixture
def seg(shm_name: str):
    s = Segment.create(shm_name)
    yield s
    s.close()
    s.unlink()


def counting(into: list[int], delay_s: float = 0.0):
    def handle(batch, decoder) -> None:
        if delay_s:
            time.sleep(delay_s)
        into.append(len(batch))

    return handle


def test_a_slow_subscriber_loses_and_counts_while_the_others_and_the_rings_lose_nothing(seg):
    fast: list[int] = []
    slow: list[int] = []
    journal: list[int] = []
    drainer = Drainer(lambda: seg, lambda: 1, interval_s=0.001)
    drainer.subscribe(Subscriber("fast", {"log", "event"}, counting(fast)))
    slow_sub = drainer.subscribe(Subscriber("slow", {"log"}, counting(slow, 0.05), max_batches=2))
    drainer.subscribe(Subscriber("journal", {"journal"}, counting(journal), lossless=True))
    drainer.start()
    try:
        log = _testhooks.PatternWriter(seg.buf, "log")
        produced = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            # paced so the ring never fills: what is lost is the subscriber's alone
            produced += log.push_sequence(produced, 500, spin_limit=10_000)
            time.sleep(0.002)
        _testhooks.PatternWriter(seg.buf, "journal").push_sequence(0, 10)
    finally:
        drainer.stop()
    assert _core.ring_counters(seg.buf, "log")[3] == 0, "the RT side never dropped"
    assert sum(fast) == produced, "a fast subscriber got every record"
    stats = drainer.stats()["subscribers"]
    assert stats["slow"]["dropped"] > 0, "the slow one lost what its queue could not hold"
    assert sum(slow) + stats["slow"]["dropped"] == produced, "and every loss is counted"
    assert slow_sub.dropped == stats["slow"]["dropped"]
    assert sum(journal) == 10 and stats["journal"]["dropped"] == 0


def test_a_full_lossless_subscriber_leaves_its_ring_alone(seg):
    release = threading.Event()
    got: list[int] = []

    def stuck(batch, decoder) -> None:
        release.wait(10)
        got.append(len(batch))

    drainer = Drainer(lambda: seg, lambda: 1, interval_s=0.001)
    drainer.subscribe(Subscriber("journal", {"journal"}, stuck, max_batches=1, lossless=True))
    drainer.start()
    writer = _testhooks.PatternWriter(seg.buf, "journal")
    try:
        total = 0
        for _ in range(5):
            total += writer.push_sequence(total, 3)
            time.sleep(0.02)
        head, tail = _core.ring_counters(seg.buf, "journal")[:2]
        assert head - tail > 0, "records wait in the ring while the subscriber is full"
        release.set()
    finally:
        release.set()
        drainer.stop()
    assert sum(got) == total and drainer.stats()["subscribers"]["journal"]["dropped"] == 0


def test_a_failing_subscriber_is_counted_and_keeps_going(seg):
    calls: list[int] = []

    def flaky(batch, decoder) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("boom")

    drainer = Drainer(lambda: seg, lambda: 1, interval_s=0.001)
    drainer.subscribe(Subscriber("flaky", {"event"}, flaky))
    drainer.start()
    try:
        w = _testhooks.PatternWriter(seg.buf, "event")
        w.push_sequence(0, 5)
        wait_for(lambda: calls, what="a first batch")
        w.push_sequence(5, 5)
        wait_for(lambda: sum(calls) == 10, what="the next batch after the fault")
    finally:
        drainer.stop()
    assert drainer.stats()["subscribers"]["flaky"]["faults"] == 1


def test_lifecycle_stops_in_reverse_each_bounded_and_independent():
    order: list[str] = []

    def record(name: str):
        return lambda: order.append(name)

    def fail():
        order.append("failing")
        raise OSError("cannot undo")

    def hang():
        order.append("hanging")
        time.sleep(30)

    life = Lifecycle()
    life.add(Component("lock", start=record("+lock"), stop=record("-lock")))
    life.add(Component("failing", stop=fail))
    life.add(Component("hanging", stop=hang, stop_timeout_s=0.2))
    life.add(Component("rt", start=record("+rt"), stop=record("-rt")))
    life.start()
    started = time.monotonic()
    report = life.stop()
    assert time.monotonic() - started < 5, "a hanging stop is bounded"
    assert order == ["+lock", "+rt", "-rt", "hanging", "failing", "-lock"]
    assert report.stopped == ["rt", "lock"]
    assert report.timed_out == ["hanging"] and "cannot undo" in report.failed["failing"]


def test_a_failed_start_stops_what_had_started():
    order: list[str] = []

    def boom():
        raise RuntimeError("port taken")

    life = Lifecycle()
    life.add(Component("a", start=lambda: order.append("+a"), stop=lambda: order.append("-a")))
    life.add(Component("b", start=boom, stop=lambda: order.append("-b")))
    with pytest.raises(RuntimeError):
        life.start()
    assert order == ["+a", "-a"]


def test_standard_logging_reaches_the_agent_log_and_reconfiguring_never_duplicates(
    tmp_path: Path,
):
    try:
        threads = [
            threading.Thread(target=logsetup.configure, args=(str(tmp_path), level))
            for level in ("INFO", "DEBUG", "INFO", "WARN", "INFO") * 4
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        logsetup.configure(str(tmp_path), "INFO")
        logging.getLogger("control.state.checkpoint").warning("from the standard library")
        logger.info("from loguru")
        logger.complete()
        text = (tmp_path / "agent.log").read_text()
        assert text.count("from the standard library") == 1
        assert text.count("from loguru") == 1, "one sink per destination, however configured"
    finally:
        logger.remove()
        logger.add(__import__("sys").stderr)
        logging.getLogger().handlers = []


INLINE_DIES = """
import os, sys
from control.node.drainer import Drainer, Subscriber
from rtcore.segment import Segment

seg = Segment.open(sys.argv[1])

def die(batch, decoder):
    os._exit(3)  # killed while it has the batch: like kill -9 mid-append

drainer = Drainer(lambda: seg, lambda: 1, interval_s=0.001)
drainer.subscribe(Subscriber("spool", {"log"}, die, inline=True))
drainer.drain_once()
"""


def test_records_leave_the_ring_only_once_an_inline_subscriber_has_them(seg, spawn, shm_name):
    """A drainer whose process dies inside an inline subscriber's handler
    (the agent killed while spooling) takes nothing from the ring: the next
    drainer gets every record."""
    import subprocess
    import sys

    _testhooks.PatternWriter(seg.buf, "log").push_sequence(0, 1000)
    child = spawn([sys.executable, "-c", INLINE_DIES, shm_name], stdout=subprocess.DEVNULL)
    assert child.wait(timeout=30) == 3
    got: list[int] = []
    drainer = Drainer(lambda: seg, lambda: 1, interval_s=0.001)
    drainer.subscribe(Subscriber("spool", {"log"}, counting(got), inline=True))
    assert drainer.drain_once() == 1000
    assert got == [1000]
    assert _core.ring_counters(seg.buf, "log")[:2] == (1000, 1000)
