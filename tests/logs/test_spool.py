"""The durable spool on real files: order and cursors across reopen, two sinks,
a writer killed with SIGKILL, torn and damaged records, the level drop policy,
a really full disk (tmpfs), a read-only directory, seqs never reused, batched
fsyncs, and a model-checked property over random operation sequences."""

from __future__ import annotations

import errno
import functools
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from control.logs import spool as spool_mod
from control.logs.frames import HDR
from control.logs.spool import Spool, SpoolError
from tests.conftest import ROOT, Spawner, wait_for

pytestmark = pytest.mark.timeout(120)

DEBUG, INFO, WARN, ERROR, CRITICAL = 10, 20, 30, 40, 50


def doc(i: int, size: int = 0) -> bytes:
    return orjson.dumps({"i": i, "pad": "x" * size})


def batch(start: int, n: int, level: int = INFO, size: int = 0) -> list[tuple[int, int, bytes]]:
    return [(1_700_000_000_000_000_000 + i, level, doc(i, size)) for i in range(start, start + n)]


def read_all(sp: Spool, sink: str) -> list[tuple[int, int, int, bytes]]:
    out: list[tuple[int, int, int, bytes]] = []
    while chunk := sp.read(sink, 7):
        out += chunk
    return out


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("seg-*.log"))


def on_disk(d: Path) -> int:
    return sum(p.stat().st_size for p in segments(d))


@pytest.fixture
def sdir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts a tmpfs with the given options (skips when this machine cannot);
    unmounted at teardown."""
    mounted: list[Path] = []

    def do(options: str) -> Path:
        mnt = tmp_path / f"mnt{len(mounted)}"
        mnt.mkdir()
        cmd = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}): needs root")
        mounted.append(mnt)
        return mnt

    yield do
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], timeout=30, check=False)


# ---- order, cursors, segments ---------------------------------------------------------


def test_ordered_read_and_ack_survive_reopen(sdir: Path) -> None:
    sp = Spool(str(sdir), ["store"], segment_bytes=600)
    for start in range(0, 60, 20):
        assert sp.append(batch(start, 20, size=30)) == 20
    assert len(segments(sdir)) > 3
    got = sp.read("store", 25)
    assert [r[0] for r in got] == list(range(1, 26))
    assert [orjson.loads(r[3])["i"] for r in got] == list(range(25))
    sp.ack("store", 20)
    assert sp.stats()["sinks"]["store"] == {"acked": 20, "read_pos": 26, "lag_records": 40}
    spool_id = sp.spool_id
    sp.close()

    sp = Spool(str(sdir), ["store"], segment_bytes=600)
    assert sp.spool_id == spool_id
    got = read_all(sp, "store")
    assert [r[0] for r in got] == list(range(21, 61))
    assert [r[1:] for r in got] == batch(20, 40, size=30)
    sp.rewind("store")
    assert sp.read("store", 3)[0][0] == 21
    sp.close()


def test_read_limits_and_wait(sdir: Path) -> None:
    sp = Spool(str(sdir), ["s"], segment_bytes=140)
    assert sp.wait("s", 0.01) is False
    woke: list[bool] = []
    t = threading.Thread(target=lambda: woke.append(sp.wait("s", 120)))
    t.start()
    sp.append(batch(0, 3) + [(1, ERROR, doc(3, 5000))] + batch(4, 2))
    t.join(60)  # woken by the append, not by its timeout
    assert woke == [True]
    assert len(segments(sdir)) == 3  # 1-3 | 4 | 5-6
    assert [r[0] for r in sp.read("s", 2)] == [1, 2]
    # a record over max_bytes comes alone, never stuck
    assert [r[0] for r in sp.read("s", 10, max_bytes=100)] == [3]
    assert [r[0] for r in sp.read("s", 10, max_bytes=100)] == [4]
    assert [r[0] for r in sp.read("s", 10)] == [5, 6]
    assert sp.wait("s", 0.01) is False
    assert sp.stats()["corrupt"] == 0
    sp.close()


def test_two_sinks_keep_segments_until_both_acked(sdir: Path) -> None:
    sp = Spool(str(sdir), ["store", "elastic"], segment_bytes=500)
    sp.append(batch(0, 40, size=20))
    first = segments(sdir)
    assert len(first) >= 4
    assert [r[0] for r in read_all(sp, "store")] == list(range(1, 41))
    sp.ack("store", 40)
    assert segments(sdir) == first  # elastic has not settled any of them
    assert [r[0] for r in sp.read("elastic", 15)] == list(range(1, 16))
    sp.ack("elastic", 15)
    left = segments(sdir)
    assert first[0] not in left and left == [p for p in first if p in left]
    assert int(left[0].name[4:-4]) <= 16  # the segment holding 16 stays
    assert [r[0] for r in sp.read("elastic", 100)] == list(range(16, 41))
    sp.ack("elastic", 40)
    assert segments(sdir) == [first[-1]]  # only the active one
    assert sp.stats()["bytes"] == on_disk(sdir)
    sp.close()


def test_concurrent_drainer_sinks_and_ticker(sdir: Path) -> None:
    """The pipeline's threads at once: every sink settles every record once, in
    order, through partial deliveries and rewinds, while segments come and go."""
    n = 6000
    sp = Spool(str(sdir), ["store", "elastic"], segment_bytes=8 << 10, fsync_interval_s=0.005)
    settled: dict[str, list[tuple[int, bytes]]] = {"store": [], "elastic": []}
    stop = threading.Event()
    errors: list[BaseException] = []

    def guarded(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as e:
                errors.append(e)
                stop.set()

        return run

    def drainer() -> None:
        rng = random.Random(1)
        i = 0
        while i < n and not stop.is_set():
            k = min(rng.randint(1, 150), n - i)
            assert sp.append(batch(i, k, size=rng.randint(0, 80))) == k
            i += k

    def sink(name: str, seed: int) -> Callable[[], None]:
        def run() -> None:
            rng = random.Random(seed)
            while len(settled[name]) < n and not stop.is_set():
                if not sp.wait(name, 0.5):
                    continue
                recs = sp.read(name, rng.randint(1, 400))
                done = rng.randint(0, len(recs))  # the sink got this far, the rest retries
                settled[name] += [(r[0], r[3]) for r in recs[:done]]
                if done:
                    sp.ack(name, recs[done - 1][0])
                if done < len(recs):
                    sp.rewind(name)

        return run

    def ticker() -> None:
        while not stop.wait(0.002):
            sp.sync()

    threads = [
        threading.Thread(target=guarded(f))
        for f in (drainer, sink("store", 2), sink("elastic", 3), ticker)
    ]
    for t in threads:
        t.start()
    for t in threads[:3]:
        t.join(60)
    stop.set()
    threads[3].join(10)
    assert not errors and not any(t.is_alive() for t in threads)
    for name in settled:
        assert [s for s, _ in settled[name]] == list(range(1, n + 1))
        assert [orjson.loads(d)["i"] for _, d in settled[name]] == list(range(n))
    assert len(segments(sdir)) == 1 and sp.stats()["bytes"] == on_disk(sdir)
    sp.close()


def test_cursor_persists_at_sync_not_per_ack(sdir: Path) -> None:
    sp = Spool(str(sdir), ["s"], fsync_interval_s=60)
    sp.append(batch(0, 5))
    sp.read("s", 5)
    sp.ack("s", 3)
    assert not (sdir / "cursor-s").exists()
    sp.sync()
    assert (sdir / "cursor-s").read_text() == "3\n"
    sp.close()


# ---- crashes and damage ---------------------------------------------------------------

WRITER = """
import sys, time
from control.logs.spool import Spool
sp = Spool(sys.argv[1], ["s"], segment_bytes=64 << 10, fsync_interval_s=0.01)
r, i = int(sys.argv[2]), 0
while True:
    sp.append([(time.time_ns(), 20, b'{"r":%d,"i":%d,"pad":"%s"}' % (r, i + k, b"x" * (k * 7)))
               for k in range(100)])
    i += 100
    time.sleep(0.002)
"""


def test_writer_killed_mid_append_loses_nothing_before_the_cut(sdir: Path, spawn: Spawner) -> None:
    rng = random.Random(7)
    last = 0
    for rnd in range(3):
        before = on_disk(sdir) if sdir.exists() else 0
        w = spawn(
            [sys.executable, "-c", WRITER, str(sdir), str(rnd)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        wait_for(functools.partial(_grown, sdir, before + 300_000), timeout=60, what="writes")
        threading.Event().wait(rng.uniform(0, 0.05))
        w.send_signal(signal.SIGKILL)
        assert w.wait(10) == -signal.SIGKILL

        sp = Spool(str(sdir), ["s"])
        got = read_all(sp, "s")
        seqs = [r[0] for r in got]
        assert seqs == sorted(set(seqs))  # strictly increasing
        assert seqs[0] > last  # past the last round's, which were acknowledged
        docs = [orjson.loads(r[3]) for r in got]
        # every record of this writer up to where it was killed
        assert [(d["r"], d["i"]) for d in docs] == [(rnd, i) for i in range(len(docs))]
        assert len(docs) >= 500
        stats = sp.stats()
        assert stats["corrupt"] == 0 and stats["torn"] <= 1
        # settled: the segments before the restart's gap in seqs go, the reader is past it
        sp.ack("s", seqs[-1])
        assert len(segments(sdir)) == 1
        sp.append([(1, INFO, b'{"probe":1}')])
        (probe,) = sp.read("s", 10)
        assert probe[0] > seqs[-1]
        sp.rewind("s")  # to acked + 1: a seq in the gap
        assert sp.read("s", 10) == [probe]
        sp.ack("s", probe[0])
        last = probe[0]
        sp.close()


def _grown(d: Path, size: int) -> bool:
    return d.exists() and on_disk(d) > size


def frames(path: Path) -> list[int]:
    """Start offsets of the frames in a segment written without damage."""
    data, out, off = path.read_bytes(), [], 0
    while off < len(data):
        out.append(off)
        off += HDR + int.from_bytes(data[off + 8 : off + 12], "little")
    return out


def test_torn_last_record_is_cut_and_seq_moves_on(sdir: Path) -> None:
    sp = Spool(str(sdir), ["s"])
    sp.append(batch(0, 5, size=40))
    sp.close()
    (seg,) = segments(sdir)
    last = frames(seg)[4]
    os.truncate(seg, last + HDR + 10)  # inside the last doc

    sp = Spool(str(sdir), ["s"])
    assert sp.stats()["torn"] == 1
    assert seg.stat().st_size == last
    assert [orjson.loads(r[3])["i"] for r in read_all(sp, "s")] == [0, 1, 2, 3]
    sp.append(batch(9, 1))
    assert sp.read("s", 1)[0][0] > 5  # the torn record's seq is never handed out again
    sp.close()
    sp = Spool(str(sdir), ["s"])
    assert sp.stats()["torn"] == 0
    sp.close()


@pytest.mark.parametrize(
    ("record", "at", "counted"),
    [
        (2, HDR + 5, "corrupt"),  # a byte of the doc
        (2, 4, "corrupt"),  # the CRC
        (2, 8, "corrupt"),  # the length: the next frame is found by its magic
        (2, 0, "corrupt"),  # the magic
        (2, 14, "corrupt"),  # the seq
        (4, HDR + 1, "torn"),  # the last record
    ],
)
def test_damaged_record_is_skipped_and_the_rest_kept(
    sdir: Path, record: int, at: int, counted: str
) -> None:
    sp = Spool(str(sdir), ["s"])
    sp.append(batch(0, 5, size=40))
    sp.close()
    (seg,) = segments(sdir)
    data = bytearray(seg.read_bytes())
    data[frames(seg)[record] + at] ^= 0x5A
    seg.write_bytes(data)

    sp = Spool(str(sdir), ["s"])
    stats = sp.stats()
    assert (stats["corrupt"], stats["torn"]) == ((1, 0) if counted == "corrupt" else (0, 1))
    assert [orjson.loads(r[3])["i"] for r in read_all(sp, "s")] == [
        i for i in range(5) if i != record
    ]
    sp.close()


def test_damage_after_open_is_skipped_and_counted(sdir: Path) -> None:
    sp = Spool(str(sdir), ["s"], segment_bytes=600)
    sp.append(batch(0, 12, size=40))
    segs = segments(sdir)
    with open(segs[0], "r+b") as f:  # the disk rots under a running spool
        f.seek(HDR + 3)
        f.write(b"\xff")
    got = read_all(sp, "s")
    in_first = len(frames(segs[0]))
    assert [orjson.loads(r[3])["i"] for r in got] == list(range(in_first, 12))
    assert sp.stats()["corrupt"] == 1
    assert "damaged record" in sp.stats()["last_error"]
    sp.close()


# ---- bounds and failing disks ---------------------------------------------------------


@pytest.mark.parametrize("per_append", [30, 7, 1])
def test_full_spool_drops_debug_info_first_and_counts_by_level(sdir: Path, per_append: int) -> None:
    levels = [DEBUG, INFO, WARN, ERROR, CRITICAL] * 6
    records = [(i, lv, b"x" * 100) for i, lv in enumerate(levels)]  # frames of 132 bytes
    frame = HDR + 100
    sp = Spool(str(sdir), ["s"], max_bytes=20 * frame, reserve_fraction=0.5)
    kept = sum(sp.append(records[i : i + per_append]) for i in range(0, 30, per_append))
    # 10 frames of any level fill the 50 % below the reserve, 10 WARN+ ones the reserve
    assert kept == 20
    stats = sp.stats()
    assert stats["dropped"] == {"DEBUG": 4, "INFO": 4, "WARN": 0, "ERROR": 1, "CRITICAL": 1}
    assert stats["bytes"] == 20 * frame == on_disk(sdir)
    assert [r[2] for r in read_all(sp, "s")] == levels[:10] + [30, 40, 50] * 3 + [30]
    assert sp.append([(0, CRITICAL, b"x")]) == 0
    # what every sink settled makes room again, the active segment included
    sp.ack("s", 20)
    assert sp.append([(0, DEBUG, b"y")]) == 1
    assert sp.stats()["bytes"] == HDR + 1
    assert sp.stats()["dropped"]["CRITICAL"] == 2
    sp.close()


def test_a_writer_asks_whether_debug_and_info_would_be_kept(sdir: Path) -> None:
    frame = HDR + 100
    sp = Spool(str(sdir), ["a", "b"], max_bytes=20 * frame, reserve_fraction=0.5)
    assert sp.keeps_below_warn()
    assert sp.append([(i, INFO, b"x" * 100) for i in range(9)]) == 9
    assert sp.keeps_below_warn()  # one more frame fits below the reserve
    assert sp.append([(9, INFO, b"x" * 100)]) == 1
    assert not sp.keeps_below_warn()
    assert sp.append([(10, INFO, b"x" * 100)]) == 0  # what it said: dropped
    sp.count_dropped([DEBUG, INFO, INFO])  # what a writer did not make
    assert sp.stats()["dropped"] == {"DEBUG": 1, "INFO": 3, "WARN": 0, "ERROR": 0, "CRITICAL": 0}
    # settled by one sink only: still full; by both, freed by the question itself
    sp.ack("a", 10)
    assert not sp.keeps_below_warn()
    sp.ack("b", 10)
    assert sp.keeps_below_warn()
    assert sp.stats()["bytes"] == 0
    assert sp.append([(11, INFO, b"x" * 100)]) == 1
    sp.close()


def _fill(path: Path) -> None:
    """Writes path until the file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as e:
        assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_disk_full_drops_and_counts_then_recovers(mount: Callable[[str], Path]) -> None:
    mnt = mount("size=256k")
    sdir = mnt / "spool"
    sp = Spool(str(sdir), ["s"], fsync_interval_s=0)
    assert sp.append(batch(0, 10, size=50)) == 10
    _fill(mnt / "filler")
    os.truncate(mnt / "filler", (mnt / "filler").stat().st_size - (16 << 10))

    # 16 KiB free: the batch is written in part, then taken back
    assert sp.append(batch(10, 300, level=WARN, size=200)) == 0
    assert sp.stats()["bytes"] == on_disk(sdir)
    _fill(mnt / "filler2")
    # past the page the segment already has
    assert sp.append(batch(310, 3, level=DEBUG, size=2000) + batch(313, 2, ERROR, 2000)) == 0
    sp.read("s", 2)
    sp.ack("s", 2)
    sp.sync()  # the cursor cannot be saved either: counted, not raised
    stats = sp.stats()
    assert stats["dropped"] == {"DEBUG": 3, "INFO": 0, "WARN": 300, "ERROR": 2, "CRITICAL": 0}
    assert stats["write_errors"] >= 3
    assert "No space left on device" in stats["last_error"]
    assert not (sdir / "cursor-s").exists()

    os.unlink(mnt / "filler")
    os.unlink(mnt / "filler2")
    assert sp.append(batch(400, 5)) == 5
    sp.close()
    assert (sdir / "cursor-s").read_text() == "2\n"
    sp = Spool(str(sdir), ["s"])
    got = read_all(sp, "s")
    assert [orjson.loads(r[3])["i"] for r in got] == list(range(2, 10)) + list(range(400, 405))
    assert [r[0] for r in got] == list(range(3, 16))
    assert (sp.stats()["torn"], sp.stats()["corrupt"]) == (0, 0)
    sp.close()


def test_part_written_batch_that_cannot_be_taken_back_never_comes_back(
    mount: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    mnt = mount("size=256k")
    sdir = mnt / "spool"
    sp = Spool(str(sdir), ["s"])
    assert sp.append(batch(0, 10, size=50)) == 10
    _fill(mnt / "filler")
    os.truncate(mnt / "filler", (mnt / "filler").stat().st_size - (16 << 10))

    def failing_ftruncate(fd: int, size: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    with monkeypatch.context() as m:
        m.setattr(os, "ftruncate", failing_ftruncate)
        assert sp.append(batch(10, 300, level=WARN, size=200)) == 0
    os.unlink(mnt / "filler")
    # written over the start of what the failed write left
    assert sp.append(batch(400, 5)) == 5
    sp.close()

    sp = Spool(str(sdir), ["s"])
    stats = sp.stats()
    # the rest of it is cut: its frames carry seqs below those written after it
    assert (stats["torn"], stats["corrupt"], stats["last_seq"]) == (1, 0, 315)
    got = read_all(sp, "s")
    assert [orjson.loads(r[3])["i"] for r in got] == list(range(10)) + list(range(400, 405))
    seqs = [r[0] for r in got]
    assert seqs == sorted(set(seqs))
    sp.close()


def test_read_only_directory_is_one_line_at_start(mount: Callable[[str], Path]) -> None:
    ro = mount("ro,size=64k")
    for target in (ro, ro / "spool"):
        with pytest.raises(SpoolError) as e:
            Spool(str(target), ["s"])
        assert str(ro) in str(e.value) and "Read-only file system" in str(e.value)
        assert "\n" not in str(e.value)

    used = mount("size=256k")
    sp = Spool(str(used), ["s"])
    sp.append(batch(0, 3))
    sp.close()
    before = {p.name: p.read_bytes() for p in used.iterdir()}
    subprocess.run(["mount", "-o", "remount,ro", str(used)], check=True, timeout=30)
    with pytest.raises(SpoolError, match="Read-only file system"):
        Spool(str(used), ["s"])
    assert {p.name: p.read_bytes() for p in used.iterdir()} == before


def test_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(SpoolError, match=f"{tmp_path / 'file'}.*Not a directory"):
        Spool(str(tmp_path / "file" / "spool"), ["s"])
    for sinks in ([], "store", ["a", "a"], ["../x"]):
        with pytest.raises(ValueError):
            Spool(str(tmp_path / "s"), sinks)
    with pytest.raises(ValueError, match="reserve fraction"):
        Spool(str(tmp_path / "s"), ["s"], reserve_fraction=1.0)
    sp = Spool(str(tmp_path / "s"), ["store"])
    sp.append(batch(0, 2))
    with pytest.raises(ValueError, match="unknown spool sink 'elastic'"):
        sp.read("elastic", 1)
    with pytest.raises(ValueError, match="unknown spool sink"):
        sp.ack("elastic", 1)
    with pytest.raises(ValueError, match="past the last record"):
        sp.ack("store", 3)
    sp.close()
    with pytest.raises(ValueError, match="closed"):
        sp.append(batch(0, 1))


# ---- seqs, fsyncs -----------------------------------------------------------------------


@pytest.mark.parametrize("lose", [(), ("seq-reserved",)])
def test_seq_not_reused_after_every_segment_went(sdir: Path, lose: tuple[str, ...]) -> None:
    sp = Spool(str(sdir), ["a", "b"], segment_bytes=200)
    sp.append(batch(0, 10, size=30))
    for sink in ("a", "b"):
        read_all(sp, sink)
        sp.ack(sink, 10)
    sp.close()
    sp = Spool(str(sdir), ["a", "b"])  # the last run's active segment goes too
    assert sp.stats()["first_seq"] is None
    assert all(int(p.name[4:-4]) == 11 for p in segments(sdir))
    sp.close()
    for name in lose:  # then the cursors alone still know
        os.unlink(sdir / name)
    for p in segments(sdir):
        p.unlink()

    sp = Spool(str(sdir), ["a", "b"])
    sp.append(batch(20, 1))
    assert [r[0] for r in read_all(sp, "a")] == [11]
    sp.close()


def test_fsyncs_are_batched_by_the_interval(sdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sp = Spool(str(sdir), ["s"], fsync_interval_s=10)
    on_open = sp.stats()["fsyncs"]
    calls: list[int] = []
    real = os.fsync

    def counted(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counted)
    for i in range(1000):
        sp.append(batch(i, 1))
    assert len(calls) <= 2
    sp.sync()
    assert len(calls) >= 1
    synced = len(calls)
    sp.sync()  # nothing pending
    assert len(calls) == synced
    sp.read("s", 5)
    sp.ack("s", 5)
    sp.sync()  # the cursor: its temp file, then the directory
    assert len(calls) == synced + 2
    assert sp.stats()["fsyncs"] == on_open + len(calls)
    sp.close()

    # append never fsyncs (it runs on the drainer's thread): sync() does
    sp = Spool(str(sdir), ["s"], fsync_interval_s=0)
    calls.clear()
    for i in range(3):
        sp.append(batch(i, 2))
    assert calls == []
    sp.sync()
    assert len(calls) >= 1
    sp.close()


# ---- property: reads return exactly the unacknowledged records, in order -------------

SINKS = ["a", "b"]


class SpoolModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="spool-prop-")
        self.sp = self._open()
        self.docs: list[bytes] = []  # seq i + 1 holds docs[i]
        self.acked = dict.fromkeys(SINKS, 0)
        self.next = dict.fromkeys(SINKS, 1)

    def _open(self) -> Spool:
        return Spool(self.dir, SINKS, segment_bytes=400, fsync_interval_s=0.05)

    @rule(n=st.integers(1, 12), size=st.integers(0, 150))
    def append(self, n: int, size: int) -> None:
        recs = [(i, INFO, doc(len(self.docs) + i, size)) for i in range(n)]
        assert self.sp.append(recs) == n
        self.docs += [r[2] for r in recs]

    @rule(sink=st.sampled_from(SINKS), n=st.integers(1, 20))
    def read(self, sink: str, n: int) -> None:
        got = self.sp.read(sink, n)
        want = [(s, self.docs[s - 1]) for s in range(self.next[sink], len(self.docs) + 1)][:n]
        assert [(r[0], r[3]) for r in got] == want
        if got:
            self.next[sink] = got[-1][0] + 1

    @precondition(lambda self: any(self.next[s] - 1 > self.acked[s] for s in SINKS))
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        sink = data.draw(st.sampled_from([s for s in SINKS if self.next[s] - 1 > self.acked[s]]))
        seq = data.draw(st.integers(self.acked[sink] + 1, self.next[sink] - 1))
        self.sp.ack(sink, seq)
        self.acked[sink] = seq

    @rule(sink=st.sampled_from(SINKS))
    def rewind(self, sink: str) -> None:
        self.sp.rewind(sink)
        self.next[sink] = self.acked[sink] + 1

    @rule()
    def reopen(self) -> None:
        self.sp.close()
        self.sp = self._open()
        self.next = {s: self.acked[s] + 1 for s in SINKS}

    @invariant()
    def accounts(self) -> None:
        stats = self.sp.stats()
        for s in SINKS:
            assert stats["sinks"][s]["lag_records"] == len(self.docs) - self.acked[s]
        assert stats["bytes"] == on_disk(Path(self.dir))

    def teardown(self) -> None:
        self.sp.close()
        shutil.rmtree(self.dir)


TestSpoolModel = SpoolModel.TestCase
TestSpoolModel.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)


def test_on_append_is_told_exactly_the_records_kept_with_their_seqs(
    sdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the store's fresh buffer is given must be what the spool holds,
    numbered as the spool numbers it: not the records a full spool dropped,
    nor those of a chunk whose write failed."""
    frame = HDR + 100
    sp = Spool(
        str(sdir), ["s"], max_bytes=12 * frame, segment_bytes=4 * frame, reserve_fraction=0.5
    )
    told: list[tuple[int, int, int, bytes]] = []
    sp.on_append = lambda first, recs: told.extend(
        (first + i, t, lv, d) for i, (t, lv, d) in enumerate(recs)
    )
    # three chunks (segments of 4 frames); the second chunk's write fails
    writes = iter([None, OSError(errno.EIO, "I/O error"), None])
    real = spool_mod._pwrite_all

    def pwrite(fd: int, data: bytes, off: int) -> None:
        failure = next(writes, None)
        if failure is not None:
            raise failure
        real(fd, data, off)

    monkeypatch.setattr(spool_mod, "_pwrite_all", pwrite)
    assert sp.append([(i, INFO, b"x" * 100) for i in range(10)]) == 4
    monkeypatch.undo()
    # full below the reserve: of DEBUG, INFO and WARN only WARN is kept
    sp.append([(i, INFO, b"y" * 100) for i in range(10, 12)])
    sp.append([(12, DEBUG, b"z" * 100), (13, WARN, b"w" * 100), (14, INFO, b"z" * 100)])
    assert [(t, lv) for _, t, lv, _ in told] == [(0, 20), (1, 20), (2, 20), (3, 20)] + [
        (10, 20),
        (11, 20),
        (13, 30),
    ]
    assert told == read_all(sp, "s")
    sp.close()
