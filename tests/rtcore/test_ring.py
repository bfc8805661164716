"""SPSC rings over real POSIX shared memory: wrap-around, overflow accounting,
and millions of records between two separate processes."""

from __future__ import annotations

import collections
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from rtcore import _core, _testhooks, layout
from rtcore.segment import Segment
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]

CROSS_PROCESS_RECORDS = 10_000_000
LOSSY_RECORDS = 2_000_000
PROCESS_TIMEOUT = 40.0


@pytest.fixture
def segment(shm_name: str):
    seg = Segment.create(shm_name)
    yield seg
    seg.close()
    seg.unlink()


def _records(rng: random.Random, count: int, size: int) -> list[bytes]:
    return [rng.randbytes(size) for _ in range(count)]


# --------------------------------------------------------------------------- (a) wrap-around


def test_cmd_ring_wraps_many_times_in_order(segment: Segment) -> None:
    """Push/pop through the 256-slot cmd ring ~60 times round, with batch sizes
    that put head and tail at every phase of the index mask, through two
    separate mappings of the same shm object (writer / reader)."""
    reader_seg = Segment.open(segment.name)
    try:
        cap = layout.CMD_RING_CAP
        size = layout.CMD_REC.itemsize
        writer = _core.RingWriter(segment.buf, "cmd")
        reader = _core.RingReader(reader_seg.buf, "cmd")
        view = segment.view()
        assert reader.record_size == size

        rng = random.Random(1234)
        batch_sizes = [1, 2, 3, 7, 31, 64, 100, 127, 128, 129, 200, 255, 256]
        expected: collections.deque[bytes] = collections.deque()
        pushed = popped = 0
        use_many = False
        while pushed < 60 * cap:
            free = cap - len(expected)
            n = min(rng.choice(batch_sizes), free)
            recs = _records(rng, n, size)
            if use_many:
                assert writer.push_many(b"".join(recs), n) == n
            else:
                for r in recs:
                    assert writer.push(r) is True
            use_many = not use_many
            for r in recs:
                # each record sits at slot index & (cap - 1) of the shared array
                assert view["cmd_ring"]["recs"][pushed % cap].tobytes() == r
                pushed += 1
            expected.extend(recs)
            assert reader.pending() == len(expected)

            # pop a random amount: sometimes less than available, sometimes more
            want = rng.choice([0, 1, 5, 50, 128, 255, 256, 1000])
            data = reader.pop(want)
            got = len(data) // size
            assert len(data) == got * size
            assert got == min(want, len(expected))
            for i in range(got):
                assert data[i * size : (i + 1) * size] == expected.popleft(), (
                    f"record {popped + i} differs"
                )
            popped += got

            head, tail, c_pushed, dropped, capacity = _core.ring_counters(segment.buf, "cmd")
            assert (head, tail, c_pushed, dropped, capacity) == (pushed, popped, pushed, 0, cap)

        # drain what is left
        data = reader.pop(cap)
        assert [data[i * size : (i + 1) * size] for i in range(len(data) // size)] == list(expected)
        popped += len(expected)
        assert reader.pending() == 0
        assert reader.pop(cap) == b""
        assert popped == pushed >= 60 * cap
        del view
    finally:
        reader_seg.close()


# --------------------------------------------------------------------------- (b) overflow


def test_event_ring_overflow_refuses_and_counts(segment: Segment) -> None:
    cap = layout.EVENT_RING_CAP
    size = layout.EVENT_REC.itemsize
    extra = 777
    rng = random.Random(99)
    writer = _core.RingWriter(segment.buf, "event")
    reader = _core.RingReader(segment.buf, "event")

    first = _records(rng, cap, size)
    for r in first:
        assert writer.push(r) is True
    refused = _records(rng, extra, size)
    for r in refused:
        assert writer.push(r) is False
    # push_many on a full ring accepts nothing and counts each refusal
    assert writer.push_many(b"".join(refused[:10]), 10) == 0

    head, tail, pushed, dropped, capacity = _core.ring_counters(segment.buf, "event")
    assert capacity == cap
    assert pushed == head == cap
    assert tail == 0
    assert dropped == extra + 10
    assert reader.pending() == cap

    data = reader.pop(cap + extra)
    assert len(data) == cap * size
    got = [data[i * size : (i + 1) * size] for i in range(cap)]
    assert got == first, "the oldest records must survive; nothing is overwritten"
    assert reader.pop(10) == b""

    # space again: pushes succeed (the producer re-reads the consumer's tail)
    again = _records(rng, cap, size)
    assert writer.push_many(b"".join(again), cap) == cap
    assert writer.push(again[0]) is False
    head, tail, pushed, dropped, _ = _core.ring_counters(segment.buf, "event")
    assert (head, tail, pushed, dropped) == (2 * cap, cap, 2 * cap, extra + 11)
    assert reader.pop(cap) == b"".join(again)


def test_new_writer_and_reader_resume_from_shared_indices(segment: Segment) -> None:
    """Producer/consumer state lives in the segment: a writer or reader
    attached later (e.g. after a control-plane restart) continues where the
    previous one stopped instead of re-reading or overwriting."""
    size = layout.LOG_REC.itemsize
    rng = random.Random(5)
    recs = _records(rng, 30, size)
    w1 = _core.RingWriter(segment.buf, "log")
    assert w1.push_many(b"".join(recs[:20]), 20) == 20
    r1 = _core.RingReader(segment.buf, "log")
    assert r1.pop(5) == b"".join(recs[:5])
    del w1, r1
    w2 = _core.RingWriter(segment.buf, "log")
    assert w2.push_many(b"".join(recs[20:]), 10) == 10
    r2 = _core.RingReader(segment.buf, "log")
    assert r2.pop(100) == b"".join(recs[5:])


def test_push_rejects_wrong_record_size(segment: Segment) -> None:
    writer = _core.RingWriter(segment.buf, "span")
    with pytest.raises(ValueError):
        writer.push(bytes(layout.SPAN_REC.itemsize + 1))
    with pytest.raises(ValueError):
        writer.push_many(bytes(layout.SPAN_REC.itemsize * 2), 3)
    with pytest.raises(ValueError):
        _core.RingReader(segment.buf, "nope")
    assert _core.ring_counters(segment.buf, "span")[:4] == (0, 0, 0, 0)


def test_verify_sequence_detects_damage() -> None:
    """The checker used below must itself catch gaps, reordering and torn records."""
    rec_size = layout.LOG_REC.itemsize
    buf = bytearray(_core.SEGMENT_SIZE)
    _core.format_segment(buf)
    w = _testhooks.PatternWriter(buf, "log")
    r = _core.RingReader(buf, "log")
    assert w.push_sequence(10, 100) == 100
    data = bytearray(r.pop(100))
    assert _testhooks.verify_sequence(data, rec_size, 10) == (100, 109, 0, 0)

    rec = [bytes(data[i * rec_size : (i + 1) * rec_size]) for i in range(100)]
    gap = b"".join(rec[:40] + rec[41:])
    assert _testhooks.verify_sequence(gap, rec_size, 10) == (99, 109, 1, 0)
    swapped = b"".join(rec[:40] + [rec[41], rec[40]] + rec[42:])
    count, _, _, corrupt = _testhooks.verify_sequence(swapped, rec_size, 10)
    assert count == 100 and corrupt >= 1
    torn = bytearray(data)
    torn[50 * rec_size + 77] ^= 0x01
    assert _testhooks.verify_sequence(torn, rec_size, 10) == (100, 109, 0, 1)


def test_push_sequence_spin_does_not_count_retries_as_drops() -> None:
    """Drops are records refused, not retry attempts."""
    buf = bytearray(_core.SEGMENT_SIZE)
    _core.format_segment(buf)
    w = _testhooks.PatternWriter(buf, "event")
    assert w.push_sequence(1, layout.EVENT_RING_CAP) == layout.EVENT_RING_CAP
    assert _core.ring_counters(buf, "event")[3] == 0
    # ring full, no consumer: one record is refused after 10 retries
    assert w.push_sequence(5000, 1, spin_limit=10) == 0
    assert _core.ring_counters(buf, "event")[3] == 1


# --------------------------------------------------------------------------- (c) two processes

CONSUMER = r"""
import json, os, sys, time
from rtcore import _core, _testhooks
from rtcore.segment import Segment

name, expect_total, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ready_path, done_path = sys.argv[4], sys.argv[5]
seg = Segment.open(name)
reader = _core.RingReader(seg.buf, "log")
size = reader.record_size
expect = 1
received = gaps = corrupt = batches = 0
deadline = time.monotonic() + timeout
open(ready_path, "w").close()
timed_out = False
while True:
    data = reader.pop(4096)
    if data:
        n, last, g, c = _testhooks.verify_sequence(data, size, expect)
        received += n
        gaps += g
        corrupt += c
        expect = last + 1
        batches += 1
        if expect_total and received >= expect_total:
            break
        continue
    if not expect_total and os.path.exists(done_path) and reader.pending() == 0:
        break  # the producer finished before this final empty pop: all drained
    if time.monotonic() > deadline:
        timed_out = True
        break
print(json.dumps({"received": received, "last": expect - 1, "gaps": gaps, "corrupt": corrupt,
                  "batches": batches, "timed_out": timed_out}), flush=True)
"""

PRODUCER = r"""
import json, random, sys, time
from rtcore import _testhooks
from rtcore.segment import Segment

name, total, spin_limit, done_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
seg = Segment.open(name)
writer = _testhooks.PatternWriter(seg.buf, "log")
if spin_limit > 0:
    accepted = writer.push_sequence(1, total, spin_limit)
else:
    # lossy: bursts of random length (some larger than the ring) with pauses,
    # so drops and deliveries interleave many times instead of one overflow
    rng = random.Random(7)
    accepted, first = 0, 1
    while first <= total:
        n = min(rng.randint(1, 3 * 4096), total - first + 1)
        accepted += writer.push_sequence(first, n, 0)
        first += n
        time.sleep(rng.choice((0, 0, 0.0001, 0.0005)))
with open(done_path, "w") as f:
    f.write(str(accepted))
print(json.dumps({"accepted": accepted}), flush=True)
"""


def _python(spawn, code: str, *args: object) -> subprocess.Popen:
    return spawn([sys.executable, "-c", code, *map(str, args)], cwd=str(ROOT))


def _result(proc: subprocess.Popen, what: str) -> dict:
    try:
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT + 20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"{what} did not finish:\n{err}")
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{err}"
    return json.loads(out.strip().splitlines()[-1])


def _run_pair(
    spawn,
    shm_name: str,
    tmp_path: Path,
    total: int,
    spin_limit: int,
    lossless: bool,
    producer_code: str = PRODUCER,
) -> tuple[dict, dict, tuple]:
    seg = Segment.create(shm_name)
    try:
        ready = tmp_path / "consumer.ready"
        done = tmp_path / "producer.done"
        consumer = _python(
            spawn, CONSUMER, shm_name, total if lossless else 0, PROCESS_TIMEOUT, ready, done
        )
        # start producing only once the consumer is attached and polling
        wait_for(
            lambda: ready.exists() or consumer.poll() is not None,
            timeout=30,
            what="consumer to attach",
        )
        assert consumer.poll() is None, (
            f"consumer exited early:\n{consumer.communicate(timeout=10)[1]}"
        )
        producer = _python(spawn, producer_code, shm_name, total, spin_limit, done)
        prod = _result(producer, "producer")
        cons = _result(consumer, "consumer")
        counters = _core.ring_counters(seg.buf, "log")
    finally:
        seg.close()
    return prod, cons, counters


def test_two_processes_lossless_10m_records(spawn, shm_name: str, tmp_path: Path) -> None:
    total = CROSS_PROCESS_RECORDS
    prod, cons, (head, tail, pushed, dropped, cap) = _run_pair(
        spawn, shm_name, tmp_path, total, spin_limit=1 << 62, lossless=True
    )
    assert not cons["timed_out"], cons
    assert prod["accepted"] == total
    assert cons["corrupt"] == 0, cons  # no torn record, no reordering / duplicate
    assert cons["gaps"] == 0, cons  # nothing lost
    assert cons["received"] == total
    assert cons["last"] == total
    assert cons["batches"] > total // cap  # the ring really wrapped (>1200 times)
    assert head == tail == pushed == total
    assert dropped == 0


def test_two_processes_lossy_drops_are_counted(spawn, shm_name: str, tmp_path: Path) -> None:
    total = LOSSY_RECORDS
    prod, cons, (head, tail, pushed, dropped, _) = _run_pair(
        spawn, shm_name, tmp_path, total, spin_limit=0, lossless=False
    )
    assert not cons["timed_out"], cons
    assert cons["corrupt"] == 0, cons  # strictly increasing numbers, every word intact
    assert cons["received"] == prod["accepted"] == pushed == head == tail
    assert cons["received"] + dropped == total
    assert cons["received"] > 0
    if dropped:
        # a drop is a hole in the sequence or a missing tail of it
        assert cons["gaps"] > 0 or cons["last"] < total
    else:
        assert cons["gaps"] == 0 and cons["last"] == total


PRODUCER_COPYING = r"""
import json, sys, time
import numpy as np
from rtcore import _core
from rtcore.segment import Segment

name, total, spin_limit, done_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
seg = Segment.open(name)
writer = _core.RingWriter(seg.buf, "log")
words = 128 // 8  # a log record, in 8-byte words
accepted, first = 0, 1
while first <= total:
    n = min(2048, total - first + 1)
    nums = np.arange(first, first + n, dtype=np.uint64)
    recs = np.empty((n, words), dtype=np.uint64)
    recs[:, 0] = nums
    for w in range(1, words):
        recs[:, w] = nums * np.uint64(0x9E3779B97F4A7C15) + np.uint64(w)
    accepted += writer.push_many(recs.tobytes(), n)
    first += n
    time.sleep(0.0002)
with open(done_path, "w") as f:
    f.write(str(accepted))
print(json.dumps({"accepted": accepted}), flush=True)
"""


def test_two_processes_copying_push_is_never_torn(spawn, shm_name: str, tmp_path: Path) -> None:
    """rtc_ring_push (a whole record copied in, then published), the path
    spans and commands take: the reader never sees a record before its bytes."""
    total = LOSSY_RECORDS
    prod, cons, (head, tail, pushed, dropped, _) = _run_pair(
        spawn,
        shm_name,
        tmp_path,
        total,
        spin_limit=0,
        lossless=False,
        producer_code=PRODUCER_COPYING,
    )
    assert not cons["timed_out"], cons
    assert cons["corrupt"] == 0, cons
    assert cons["received"] == prod["accepted"] == pushed == head == tail
    assert cons["received"] + dropped == total and cons["received"] > 0


def test_peeked_records_stay_until_committed(segment: Segment) -> None:
    """A consumer that dies between peek and commit loses nothing: the next
    reader (another agent) gets the same records, and the producer cannot
    overwrite them meanwhile."""
    size = layout.LOG_REC.itemsize
    cap = layout.LOG_RING_CAP
    recs = _records(random.Random(9), cap, size)
    writer = _core.RingWriter(segment.buf, "log")
    assert writer.push_many(b"".join(recs), cap) == cap
    out = bytearray(10 * size)
    first = _core.RingReader(segment.buf, "log")
    assert first.peek_into(out) == 10 and bytes(out) == b"".join(recs[:10])
    del first  # died before committing
    assert not writer.push(recs[0]), "a peeked slot was handed back to the producer"
    second = _core.RingReader(segment.buf, "log")
    assert second.peek_into(out) == 10 and bytes(out) == b"".join(recs[:10])
    second.commit(4)
    assert writer.push(recs[0])
    assert second.pop(6) == b"".join(recs[4:10])
    with pytest.raises(ValueError, match="commit of"):
        second.commit(cap)
