"""Checkpoint slots over real shared memory: the seqlock under a concurrent
writer process, CRC detection of corrupted slots, and CRC-32C itself."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rtcore import _core, _testhooks, layout
from rtcore.segment import Segment
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]

# The writer hammers slot 0 in blocks of BLOCK checkpoints; block b (seqs
# b*BLOCK+1 .. (b+1)*BLOCK) uses state size SIZES[b % len(SIZES)], so a reader
# knows from seq alone how big the state must be.
BLOCK = 64
SIZES = [16384, 1, 4000, 777, 8192, 64, 16383, 4096]
MIN_READS = 300_000
MIN_READ_SECONDS = 2.0
MAX_READ_SECONDS = 25.0

WRITER = r"""
import json, os, sys, time
from rtcore import _testhooks
from rtcore.segment import Segment

name, stop_path, block, sizes = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
seg = Segment.open(name)
seq, b = 1, 0
deadline = time.monotonic() + 60
while not os.path.exists(stop_path) and time.monotonic() < deadline:
    for _ in range(8):
        _testhooks.hammer_checkpoint(seg.buf, 0, seq, block, sizes[b % len(sizes)])
        seq += block
        b += 1
print(json.dumps({"writes": seq - 1}), flush=True)
"""

READER = r"""
import json, sys, time
from rtcore import _core
from rtcore.segment import Segment

name, block, sizes = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
min_reads, min_s, max_s = int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
# byte b of the state of checkpoint seq is (seq + b) & 0xff == PAT[(seq & 0xff) + b]
PAT = bytes(i & 0xFF for i in range(16384 + 256))
seg = Segment.open(name)
counts = {"ok": 0, "empty": 0, "busy": 0, "corrupt": 0}
single = {"ok": 0, "empty": 0, "busy": 0, "corrupt": 0}  # reads with attempts=1
bad, n_bad = [], 0
prev_seq = prev_ns = 0
first_seq = None
distinct = reads = 0
t0 = time.monotonic()
while True:
    attempts = 1 if reads & 1 else 64
    res, meta, data = _core.read_checkpoint(seg.buf, 0, attempts)
    reads += 1
    counts[res] += 1
    if attempts == 1:
        single[res] += 1
    if res == "ok":
        seq, size = meta["seq"], meta["state_size"]
        off = seq & 0xFF
        problems = []
        if seq < 1:
            problems.append("seq")
        elif size != sizes[((seq - 1) // block) % len(sizes)]:
            problems.append("size")
        if len(data) != size:
            problems.append("len")
        if meta["cycle"] != seq:
            problems.append("cycle")
        if meta["epoch"] != 0 or meta["task_id"] != 0:
            problems.append("meta")
        if data != PAT[off:off + size]:
            problems.append("data")
        if seq < prev_seq or meta["mono_ns"] < prev_ns:
            problems.append("went back")
        if problems:
            n_bad += 1
            if len(bad) < 5:
                bad.append({"problems": problems, "meta": meta, "prev_seq": prev_seq,
                            "head": data[:16].hex()})
        if first_seq is None:
            first_seq = seq
        if seq != prev_seq:
            distinct += 1
        prev_seq, prev_ns = seq, meta["mono_ns"]
    if reads % 4096 == 0:
        elapsed = time.monotonic() - t0
        if (reads >= min_reads and elapsed >= min_s) or elapsed >= max_s:
            break
print(json.dumps({"reads": reads, "counts": counts, "single": single, "n_bad": n_bad,
                  "bad": bad, "first_seq": first_seq, "last_seq": prev_seq,
                  "distinct": distinct, "seconds": time.monotonic() - t0}), flush=True)
"""


@pytest.fixture
def segment(shm_name: str):
    seg = Segment.create(shm_name)
    yield seg
    seg.close()
    seg.unlink()


def _python(spawn, code: str, *args: object) -> subprocess.Popen:
    return spawn([sys.executable, "-c", code, *map(str, args)], cwd=str(ROOT))


def _result(proc: subprocess.Popen, what: str, timeout: float) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"{what} did not finish in {timeout}s:\n{err}")
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{err}"
    return json.loads(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------- (a) seqlock


def test_seqlock_reader_never_sees_a_torn_checkpoint(
    segment: Segment, spawn, tmp_path: Path
) -> None:
    stop = tmp_path / "stop"
    sizes = json.dumps(SIZES)
    writer = _python(spawn, WRITER, segment.name, stop, BLOCK, sizes)
    wait_for(
        lambda: writer.poll() is not None or _core.read_checkpoint(segment.buf, 0)[0] != "empty",
        timeout=30,
        what="the writer's first checkpoint",
    )
    assert writer.poll() is None, writer.communicate(timeout=10)[1]
    reader = _python(
        spawn, READER, segment.name, BLOCK, sizes, MIN_READS, MIN_READ_SECONDS, MAX_READ_SECONDS
    )
    try:
        r = _result(reader, "reader", timeout=MAX_READ_SECONDS + 30)
    finally:
        stop.touch()
    w = _result(writer, "writer", timeout=30)

    counts, single = r["counts"], r["single"]
    summary = json.dumps({k: r[k] for k in ("reads", "counts", "single", "distinct", "seconds")})
    assert r["n_bad"] == 0, f"{r['n_bad']} inconsistent 'ok' reads, e.g. {r['bad']}; {summary}"
    assert counts["corrupt"] == 0, summary  # torn copies must be caught by the seqlock
    assert counts["empty"] == 0, summary
    assert r["reads"] >= MIN_READS, summary
    assert counts["ok"] >= MIN_READS // 4, summary
    # the writer really was writing throughout: the reader saw many different
    # checkpoints, and single-attempt reads did collide with writes in progress
    assert r["distinct"] >= 1000, summary
    assert single["busy"] > 0, summary
    assert r["first_seq"] <= r["last_seq"] <= w["writes"], summary


# --------------------------------------------------------------------------- (b) corruption


def _slot_crc(slot: np.ndarray, data: bytes) -> int:
    """The CRC the slot should carry: CRC-32C over seq..state_size, then the data."""
    raw = slot.tobytes()
    meta_off = layout.CKPT_SLOT.fields["seq"][1]
    crc_off = layout.CKPT_SLOT.fields["crc"][1]
    return _core.crc32c(data, _core.crc32c(raw[meta_off:crc_off]))


def test_write_then_read_roundtrip_across_mappings(segment: Segment) -> None:
    state = random.Random(3).randbytes(12345)
    _core.write_checkpoint(
        segment.buf, 2, seq=17, cycle=170, epoch=5, task_id=0xABCD, state=state, origin=9, flags=1
    )
    other = Segment.open(segment.name)  # a second mapping, as the control plane has
    try:
        res, meta, data = _core.read_checkpoint(other.buf, 2)
        assert res == "ok"
        assert data == state
        assert meta["slot"] == 2
        assert meta["seq"] == 17 and meta["cycle"] == 170 and meta["epoch"] == 5
        assert meta["origin"] == 9 and meta["flags"] == 1
        assert meta["task_id"] == 0xABCD and meta["state_size"] == len(state)
        assert 0 < meta["mono_ns"] <= _core.monotonic_ns()
        v = other.view()
        slot = v["ckpt"][2]
        assert int(slot["seqlock"]) % 2 == 0 and int(slot["seqlock"]) > 0
        assert int(slot["crc"]) == meta["crc"] == _slot_crc(slot, state)
        for s in (0, 1, 3, _core.INBOUND):
            assert _core.read_checkpoint(other.buf, s)[0] == "empty"
        del v, slot
    finally:
        other.close()


def test_inbound_slot_is_its_own_slot(segment: Segment) -> None:
    """The agent's replicated checkpoint goes to the inbound slot, after the
    RT's own slots, and is read back like them."""
    assert _core.INBOUND == layout.CKPT_SLOTS
    _core.write_checkpoint(segment.buf, _core.INBOUND, 3, 30, 2, 0x77, b"replica", origin=4)
    other = Segment.open(segment.name)
    try:
        res, meta, data = _core.read_checkpoint(other.buf, _core.INBOUND)
        assert (res, data, meta["seq"], meta["epoch"], meta["origin"]) == (
            "ok",
            b"replica",
            3,
            2,
            4,
        )
        v = other.view()
        assert int(v["inbound"]["seq"]) == 3 and int(v["inbound"]["origin"]) == 4
        assert all(_core.read_checkpoint(other.buf, s)[0] == "empty" for s in range(4))
        assert other.newest_checkpoint() is None, "the RT's own checkpoints only"
        del v
    finally:
        other.close()


@pytest.mark.parametrize(
    "where",
    [
        "data_first",
        "data_middle",
        "data_last",
        "seq",
        "cycle",
        "mono_ns",
        "epoch",
        "origin",
        "task_id",
        "state_size",
        "flags",
        "crc",
    ],
)
def test_flipped_byte_reads_as_corrupt(segment: Segment, where: str) -> None:
    slot_idx = 1
    state = bytes(range(256)) * 20
    _core.write_checkpoint(segment.buf, slot_idx, 9, 90, 1, 77, state)
    assert _core.read_checkpoint(segment.buf, slot_idx)[0] == "ok"

    v = segment.view()
    slot = v["ckpt"][slot_idx]
    if where.startswith("data"):
        pos = {"data_first": 0, "data_middle": len(state) // 2, "data_last": len(state) - 1}
        slot["data"][pos[where]] ^= 0x10
    else:
        # flip one byte of the field, through the raw mapping at its C offset
        off = layout.SEGMENT.fields["ckpt"][1] + slot_idx * layout.CKPT_SLOT.itemsize
        off += layout.CKPT_SLOT.fields[where][1]
        segment.buf[off] ^= 0x01
    res, meta, _ = _core.read_checkpoint(segment.buf, slot_idx)
    assert res == "corrupt"
    assert _core.read_checkpoint(segment.buf, slot_idx - 1)[0] == "empty"  # neighbours intact

    # bytes past state_size are not covered by the CRC (and not returned)
    if where == "data_first":
        slot["data"][0] ^= 0x10  # undo
        slot["data"][len(state)] ^= 0xFF
        res, _, data = _core.read_checkpoint(segment.buf, slot_idx)
        assert res == "ok" and data == state
    del v, slot


def test_oversized_state_size_is_corrupt_not_a_crash(segment: Segment) -> None:
    _core.write_checkpoint(segment.buf, 0, 1, 1, 0, 0, b"x" * 100)
    v = segment.view()
    v["ckpt"][0]["state_size"] = layout.CKPT_MAX + 1
    res, meta, data = _core.read_checkpoint(segment.buf, 0)
    assert res == "corrupt"
    assert len(data) <= layout.CKPT_MAX
    v["ckpt"][0]["state_size"] = 0xFFFFFFFF
    assert _core.read_checkpoint(segment.buf, 0)[0] == "corrupt"
    del v


def test_odd_seqlock_reads_busy_and_next_write_recovers(segment: Segment) -> None:
    """A writer killed mid-write leaves the seqlock odd: readers report 'busy'
    (they must not return the half-written state); the next write recovers."""
    _core.write_checkpoint(segment.buf, 3, 4, 40, 0, 1, b"old state")
    v = segment.view()
    lock = int(v["ckpt"][3]["seqlock"])
    assert lock % 2 == 0
    v["ckpt"][3]["seqlock"] = lock + 1
    for attempts in (1, 64, 1000):
        assert _core.read_checkpoint(segment.buf, 3, attempts)[0] == "busy"
    # a never-written slot left odd (crash during the very first write) is busy too
    v["ckpt"][0]["seqlock"] = 1
    assert _core.read_checkpoint(segment.buf, 0)[0] == "busy"

    _core.write_checkpoint(segment.buf, 3, 5, 50, 0, 1, b"new state")
    new_lock = int(v["ckpt"][3]["seqlock"])
    assert new_lock % 2 == 0 and new_lock > lock + 1
    res, meta, data = _core.read_checkpoint(segment.buf, 3)
    assert (res, meta["seq"], data) == ("ok", 5, b"new state")
    del v


def test_writer_killed_mid_hammer_leaves_busy_or_consistent(segment: Segment, spawn) -> None:
    """SIGKILL a real writer process at a random moment: the slot is either
    consistent ('ok' with the exact state of its seq) or 'busy' — never
    'corrupt' data passed off as good."""
    code = (
        "import sys\n"
        "from rtcore import _testhooks\n"
        "from rtcore.segment import Segment\n"
        "seg = Segment.open(sys.argv[1])\n"
        "_testhooks.hammer_checkpoint(seg.buf, 1, 1, 1 << 40, 16384)\n"
    )
    seen = set()
    for delay in (0.05, 0.11, 0.2):
        proc = _python(spawn, code, segment.name)
        wait_for(
            lambda proc=proc: (
                proc.poll() is not None or _core.read_checkpoint(segment.buf, 1)[0] != "empty"
            ),
            timeout=30,
            what="the writer's first checkpoint",
        )
        assert proc.poll() is None, proc.communicate(timeout=10)[1]
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        res, meta, data = _core.read_checkpoint(segment.buf, 1)
        seen.add(res)
        assert res in ("ok", "busy")
        if res == "ok":
            seq = meta["seq"]
            assert meta["state_size"] == 16384
            assert data == bytes((seq + b) & 0xFF for b in range(16384))
        # the slot is usable again afterwards (the restarted loop rewrites it)
        _core.write_checkpoint(segment.buf, 1, 1, 1, 0, 0, b"fresh")
        assert _core.read_checkpoint(segment.buf, 1)[:3:2] == ("ok", b"fresh")
        v = segment.view()
        v["ckpt"][1]["seqlock"] = 0  # back to never-written for the next round
        del v
    assert seen


def test_slot_and_size_are_validated(segment: Segment) -> None:
    # slot CKPT_SLOTS is the inbound slot; past it there is nothing
    with pytest.raises(ValueError):
        _core.read_checkpoint(segment.buf, layout.CKPT_SLOTS + 1)
    with pytest.raises(ValueError):
        _core.write_checkpoint(segment.buf, layout.CKPT_SLOTS + 1, 1, 1, 0, 0, b"x")
    with pytest.raises(ValueError):
        _core.write_checkpoint(segment.buf, 0, 1, 1, 0, 0, b"")
    with pytest.raises(ValueError):
        _core.write_checkpoint(segment.buf, 0, 1, 1, 0, 0, bytes(layout.CKPT_MAX + 1))
    _core.write_checkpoint(segment.buf, 0, 1, 1, 0, 0, bytes(layout.CKPT_MAX))
    assert _core.read_checkpoint(segment.buf, 0)[0] == "ok"
    with pytest.raises(ValueError):
        _testhooks.hammer_checkpoint(segment.buf, 0, 1, 1, 0)
    with pytest.raises(ValueError):
        _testhooks.hammer_checkpoint(segment.buf, 0, 1, 1, layout.CKPT_MAX + 1)


def test_hammer_checkpoint_rejects_out_of_range_slot() -> None:
    # a private buffer: if the slot is not checked, slot 4 is the log ring header
    buf = bytearray(_core.SEGMENT_SIZE)
    _core.format_segment(buf)
    before = _core.ring_counters(buf, "log")
    with pytest.raises(ValueError, match="out of range"):
        _testhooks.hammer_checkpoint(buf, layout.CKPT_SLOTS, 1, 1, 64)
    assert _core.ring_counters(buf, "log") == before


# --------------------------------------------------------------------------- (c) crc32c


def _crc32c_reference(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_check_value() -> None:
    assert _core.crc32c(b"123456789") == 0xE3069283
    assert _core.crc32c(b"") == 0
    assert _core.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros
    assert _core.crc32c(b"\xff" * 32) == 0x62A8AB43  # RFC 3720 B.4: 32 bytes of ones
    assert _core.crc32c(bytes(range(32))) == 0x46DD794E  # RFC 3720 B.4: incrementing


def test_crc32c_matches_bitwise_reference_for_every_length() -> None:
    rng = random.Random(11)
    for n in range(0, 80):  # every tail length around the 8-byte fast path
        data = rng.randbytes(n)
        assert _core.crc32c(data) == _crc32c_reference(data), n
    data = rng.randbytes(5000)
    assert _core.crc32c(data) == _crc32c_reference(data)
    # any bytes-like object, including a numpy array and a memoryview slice
    arr = np.frombuffer(data, dtype=np.uint8)
    assert _core.crc32c(arr) == _core.crc32c(memoryview(data)[:]) == _core.crc32c(data)


def test_crc32c_incremental_equals_whole() -> None:
    rng = random.Random(12)
    data = rng.randbytes(20000)
    whole = _core.crc32c(data)
    for _ in range(200):
        cuts = sorted(rng.sample(range(len(data) + 1), rng.randint(1, 6)))
        crc = 0
        last = 0
        for cut in [*cuts, len(data)]:
            crc = _core.crc32c(data[last:cut], crc)
            last = cut
        assert crc == whole, cuts
    assert _core.crc32c(b"6789", _core.crc32c(b"12345")) == 0xE3069283
    assert _core.crc32c(b"", whole) == whole
