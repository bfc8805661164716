"""The durable ordered spool: every log record lands here before any sink sees
it, so a sink that was away (server down, agent killed) resumes from its own
acknowledged cursor, in order, with nothing lost.

The directory holds:
- `seg-<first seq>.log`: append-only segments of framed records (a CRC per
  record; control/logs/frames.py). A segment ends once it exceeds
  segment_bytes, and every open starts a new one, so a restart's gap in seqs
  never falls inside a segment.
- `cursor-<sink>`: the seq up to which that sink settled everything.
- `seq-reserved`: seqs below it may have been handed out. It is extended
  ahead of use and fsynced before use, so even a power cut that loses
  records a sink already delivered never lets their seqs come back: the
  Elasticsearch sink would take a new record with a reused seq for one it
  delivered (409 on `create`), and the store would skip it.
- `spool-id`: a random id made when the directory is first used.

Writes are batched: one pwrite per segment an append touches, fsync at most
every fsync_interval_s (in sync(), which a ticker
calls so that a quiet tail is synced too). Cursors and the reservation are
persisted in sync() and close() (temp file, fsync, rename, one directory
fsync), not per ack: a lagging cursor only redelivers, and sinks
de-duplicate by seq.

Bounded by max_bytes over the segments: those every sink acknowledged go
first; above (1 - reserve_fraction) * max_bytes DEBUG/INFO records are
dropped and WARN and above fill the reserve, then they drop too. A failed
write (ENOSPC, EIO) drops its batch. Every drop is counted by level; append
never raises for them.

On open every segment is checked: a torn or damaged tail is cut off (`torn`),
a damaged record followed by good ones is skipped (`corrupt`).
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import os
import re
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from control.logs.frames import FRAME, HDR, MAGIC, encode, frame_end, resync

WARN = 30
LEVEL_NAMES = {10: "DEBUG", 20: "INFO", 30: "WARN", 40: "ERROR", 50: "CRITICAL"}
RESERVE = 1 << 20  # seqs reserved per write of seq-reserved; sync() renews at half
INDEX_EVERY = 64 << 10  # bytes between index entries: bounds the scan behind a rewind
_SEGMENT = re.compile(r"seg-(\d{20})\.log")
_SINK = re.compile(r"[A-Za-z0-9_-]+")
_RESERVED = "seq-reserved"
_ID = "spool-id"


class SpoolError(OSError):
    """The spool directory cannot be used; the message says which and why."""


@dataclass(eq=False)
class _Segment:
    first: int  # seq in its name: its first record's
    path: str
    fd: int = -1  # write descriptor, while it is the active segment
    size: int = 0  # bytes of whole frames
    last: int = 0  # seq of its last record, first - 1 while empty
    index_seq: list[int] = field(default_factory=list)  # seq of the frame at index_off[i]
    index_off: list[int] = field(default_factory=list)
    holes: dict[int, int] = field(default_factory=dict)  # damaged frame -> next good one (open)
    deleted: bool = False


@dataclass(eq=False)
class _Cursor:
    path: str
    acked: int
    saved: int  # acked as last persisted
    seq: int  # next seq to read
    seg: _Segment | None = None  # where that seq is, or a frame before it
    off: int = 0
    fd: int = -1  # read descriptor on fd_seg
    fd_seg: _Segment | None = None


class Spool:
    def __init__(
        self,
        directory: str,
        sinks: Sequence[str],
        *,
        max_bytes: int = 256 << 20,
        segment_bytes: int = 8 << 20,
        fsync_interval_s: float = 0.1,
        reserve_fraction: float = 0.2,
        first_seq: int = 1,
    ) -> None:
        """first_seq numbers a new directory's first record; the agent passes
        the time in microseconds, so a spool made anew (its directory wiped)
        still numbers above every record its sinks already hold."""
        _check_args(sinks, max_bytes, segment_bytes, fsync_interval_s, reserve_fraction)
        self._first_seq = max(1, first_seq)
        self.directory = os.path.abspath(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync_interval_s = fsync_interval_s
        self._low = int(max_bytes * (1 - reserve_fraction))
        self.spool_id = ""
        # told (first seq, records) of every append, under the append lock, so
        # in seq order: the store's fresh buffer (control/logs/fresh.py)
        self.on_append: Callable[[int, Sequence[tuple[int, int, bytes]]], None] | None = None
        self._lock = threading.Lock()  # all state below; held briefly, never across I/O
        self._cond = threading.Condition(self._lock)
        self._append_lock = threading.Lock()  # one append at a time: seqs, the active segment
        self._sync_lock = threading.Lock()  # one sync at a time: fsyncs, persisted files
        self._segs: list[_Segment] = []
        self._cursors = {s: _Cursor(self._path(f"cursor-{s}"), 0, 0, 1) for s in sinks}
        self._next_seq = 1
        self._last_seq = 0  # highest seq written or acknowledged
        self._reserved = 0
        self._bytes = 0
        self._retired: list[int] = []  # write fds of rolled segments, fsynced then closed by sync
        self._dirty = False  # the active segment has unsynced writes
        self._dir_dirty = False  # a segment was created since the last directory fsync
        self._next_sync = 0.0
        self._closed = False
        self._appended = 0
        self._dropped = dict.fromkeys(LEVEL_NAMES.values(), 0)
        self._torn = 0
        self._corrupt = 0
        self._write_errors = 0
        self._last_error = ""
        self._fsyncs = 0
        try:
            self._open(sinks)
        except OSError as e:
            self._close_fds()
            if isinstance(e, SpoolError):
                raise
            where = f" ({e.filename})" if e.filename and e.filename != self.directory else ""
            raise SpoolError(
                f"spool directory {self.directory} is not usable: {e.strerror or e}{where}"
            ) from None

    # ---- opening ------------------------------------------------------------------

    def _open(self, sinks: Sequence[str]) -> None:
        os.makedirs(self.directory, exist_ok=True)
        names = sorted(os.listdir(self.directory))
        for name in names:
            if name.endswith(".tmp"):  # a persist a crash interrupted: the old file stands
                os.unlink(self._path(name))
        self.spool_id = self._load_id()
        # a new directory numbers from first_seq (see __init__)
        bound = _read_int(self._path(_RESERVED)) or self._first_seq
        last = 0
        for name in names:
            m = _SEGMENT.fullmatch(name)
            if m:
                seg = self._scan(self._path(name), int(m.group(1)), last)
                self._segs.append(seg)
                self._bytes += seg.size
                last = max(last, seg.last)
                bound = max(bound, seg.last + 1)
        for name in names:
            if name.startswith("cursor-") and not name.endswith(".tmp"):
                acked = _read_int(self._path(name))
                if acked is None:
                    self._last_error = f"unreadable cursor {self._path(name)}: redelivering"
                    acked = 0
                sink = name[len("cursor-") :]
                if sink in self._cursors:
                    c = self._cursors[sink]
                    c.acked = c.saved = acked
                    c.seq = acked + 1
                # a sink no longer configured still bounds the seqs
                bound = max(bound, acked + 1)
        self._next_seq = bound
        self._last_seq = max(
            [s.last for s in self._segs] + [c.acked for c in self._cursors.values()]
        )
        for seg in [s for s in self._segs if s.last < s.first and s.first != bound]:
            os.unlink(seg.path)
            self._segs.remove(seg)
        if not self._segs or self._segs[-1].first != bound:
            self._segs.append(_Segment(bound, self._segment_path(bound)))
        active = self._segs[-1]
        active.fd = os.open(active.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._reserve(bound + RESERVE)  # also proves the directory writable
        for seg in self._release():
            os.unlink(seg.path)
        for c in self._cursors.values():
            c.seg, c.off = self._locate(c.seq)
        self._next_sync = time.monotonic() + self.fsync_interval_s

    def _load_id(self) -> str:
        path = self._path(_ID)
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                text = f.read().strip()
        except FileNotFoundError:
            text = secrets.token_hex(8)
            self._put(path, text + "\n")
            return text
        if not re.fullmatch(r"[0-9a-f]{16}", text):
            raise SpoolError(f"{path} is damaged: remove it to start a new spool id")
        return text

    def _scan(self, path: str, first: int, after: int) -> _Segment:
        """Checks every frame of a segment (seqs must rise past `after`): cuts a bad
        tail, notes bad frames followed by good ones."""
        with open(path, "rb") as f:
            data = f.read()
        mv = memoryview(data)
        seg = _Segment(first, path, last=first - 1)
        off = 0
        while off < len(data):
            end = frame_end(mv, off, after)
            if end < 0:
                good = resync(data, mv, off, after)
                if good < 0:
                    self._torn += 1
                    os.truncate(path, off)
                    break
                self._corrupt += 1
                seg.holes[off] = good
                off = good
                continue
            seg.last = after = FRAME.unpack_from(mv, off)[3]
            if not seg.index_off or off - seg.index_off[-1] >= INDEX_EVERY:
                seg.index_seq.append(seg.last)
                seg.index_off.append(off)
            off = end
        seg.size = off
        return seg

    # ---- writing ------------------------------------------------------------------

    def append(self, records: Sequence[tuple[int, int, bytes]]) -> int:
        """Appends (time_ns, level, doc) records in order; returns how many were
        kept. What is not kept (spool full, write failed) is counted by level."""
        with self._append_lock:
            self._check_open()
            if not records:
                return 0
            try:
                if self._active.size >= self.segment_bytes:
                    self._roll()
                if self._next_seq + len(records) > self._reserved:
                    with self._sync_lock:  # only when the ticker fell behind by RESERVE / 2
                        self._reserve(self._next_seq + len(records) + RESERVE)
            except OSError as e:
                self._failed(e, records)
                return 0
            chunks = self._encode(records)
            if self._bytes + sum(len(c) for c, _ in chunks) > self._low:
                records = self._admit(records)
                chunks = self._encode(records)
            # no fsync here: append runs on the drainer's thread, and an fsync
            # can stall for tens of ms under write-back; the pipeline's ticker
            # calls sync() every fsync interval
            first = self._next_seq
            kept = self._write(chunks, records)
            if kept and self.on_append is not None:
                self.on_append(first, records[:kept])
            return kept

    @property
    def _active(self) -> _Segment:
        return self._segs[-1]

    def _encode(self, records: Sequence[tuple[int, int, bytes]]) -> list[tuple[bytes, int]]:
        return encode(
            records, self._next_seq, self.segment_bytes - self._active.size, self.segment_bytes
        )

    def keeps_below_warn(self) -> bool:
        """Whether a DEBUG or INFO record appended now would be kept: the
        spool is below its reserve, once what every sink acknowledged is
        freed. A writer asks before it makes a flood of records, so that what
        would be dropped costs no encoding (that CPU is what the sinks need
        to catch up)."""
        with self._lock:
            if self._bytes < self._low:
                return True
        with self._append_lock:
            self._check_open()
            self._free_settled()
            return self._bytes < self._low

    def count_dropped(self, levels: list[int]) -> None:
        """Records of these levels the writer dropped (keeps_below_warn said so)."""
        with self._lock:
            self._count_drops(levels)

    def _free_settled(self) -> None:
        """Frees the segments every sink acknowledged (under the append lock)."""
        acked = min(c.acked for c in self._cursors.values())
        if self._active.last >= self._active.first and self._active.last <= acked:
            # the active segment is settled too: start another so it can go
            with contextlib.suppress(OSError):  # the write that follows fails and counts
                self._roll()
        with self._lock:
            gone = self._release()
        self._unlink(gone)

    def _admit(self, records: Sequence[tuple[int, int, bytes]]) -> list[tuple[int, int, bytes]]:
        """The records the bound lets in, after freeing what every sink acknowledged."""
        self._free_settled()
        used = self._bytes
        kept = []
        drops: list[int] = []
        for rec in records:
            size = HDR + len(rec[2])
            if used + size <= self._low or (rec[1] >= WARN and used + size <= self.max_bytes):
                kept.append(rec)
                used += size
            else:
                drops.append(rec[1])
        with self._lock:
            self._count_drops(drops)
        return kept

    def _write(
        self, chunks: list[tuple[bytes, int]], records: Sequence[tuple[int, int, bytes]]
    ) -> int:
        kept = 0
        for k, (data, n) in enumerate(chunks):
            try:
                if k:
                    self._roll()
                seg = self._active
                _pwrite_all(seg.fd, data, seg.size)
            except OSError as e:
                try:
                    os.ftruncate(self._active.fd, self._active.size)
                except OSError:
                    # what the write left past the end stays: its seqs must never come back,
                    # so that on open they read as a stale tail (see frames.frame_end)
                    with self._lock:
                        self._next_seq += n
                self._failed(e, records[kept:])
                break
            with self._cond:
                if not seg.index_off or seg.size - seg.index_off[-1] >= INDEX_EVERY:
                    seg.index_seq.append(self._next_seq)
                    seg.index_off.append(seg.size)
                seg.size += len(data)
                self._bytes += len(data)
                self._next_seq += n
                seg.last = self._last_seq = self._next_seq - 1
                self._appended += n
                self._dirty = True
                self._cond.notify_all()
            kept += n
        return kept

    def _roll(self) -> None:
        """Starts a new active segment; sync() fsyncs and closes the old one."""
        seg = _Segment(self._next_seq, self._segment_path(self._next_seq), last=self._next_seq - 1)
        seg.fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        with self._lock:
            old = self._active
            self._retired.append(old.fd)
            old.fd = -1
            self._segs.append(seg)
            self._dir_dirty = True

    def _failed(self, e: OSError, records: Sequence[tuple[int, int, bytes]]) -> None:
        with self._lock:
            self._write_errors += 1
            self._last_error = (
                f"write to {e.filename or self._active.path} failed: {e.strerror or e}; "
                f"dropped {len(records)} records"
            )
            self._count_drops([r[1] for r in records])

    def _count_drops(self, levels: list[int]) -> None:
        for level in levels:
            name = LEVEL_NAMES.get(level, str(level))
            self._dropped[name] = self._dropped.get(name, 0) + 1

    # ---- syncing ------------------------------------------------------------------

    def sync(self) -> None:
        """Fsyncs written records, then persists cursors and the seq reservation.
        Does nothing once closed (close synced)."""
        self._sync(blocking=True)

    def _sync(self, blocking: bool) -> None:
        if not self._sync_lock.acquire(blocking=blocking):
            return  # the ticker is syncing right now
        try:
            with self._lock:
                if self._closed:
                    return
                self._next_sync = time.monotonic() + self.fsync_interval_s
                retired, self._retired = self._retired, []
                fds = retired + ([self._active.fd] if self._dirty else [])
                dir_dirty, self._dirty, self._dir_dirty = self._dir_dirty, False, False
                acks = [(c, c.acked) for c in self._cursors.values() if c.acked != c.saved]
                renew = self._reserved - self._next_seq < RESERVE // 2
                reserve = self._next_seq + RESERVE
            try:
                # records first: a persisted cursor never points past what is on disk
                for fd in fds:
                    self._fsync(fd)
                for c, acked in acks:
                    self._put(c.path, f"{acked}\n")
                if renew:
                    self._put(self._path(_RESERVED), f"{reserve}\n")
                if dir_dirty or acks or renew:
                    self._fsync_dir()
                for c, acked in acks:
                    c.saved = acked
                if renew:
                    self._reserved = reserve
            except OSError as e:
                with self._lock:
                    self._dirty = self._dir_dirty = True
                    self._write_errors += 1
                    self._last_error = f"sync of {self.directory} failed: {e.strerror or e}"
            finally:
                for fd in retired:
                    os.close(fd)
        finally:
            self._sync_lock.release()

    def _reserve(self, seq: int) -> None:
        """Makes seq-reserved durable, then lets append hand out seqs below it."""
        self._put(self._path(_RESERVED), f"{seq}\n")
        self._fsync_dir()
        self._reserved = seq

    def _put(self, path: str, text: str) -> None:
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            _pwrite_all(fd, text.encode(), 0)
            self._fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def _fsync(self, fd: int) -> None:
        self._fsyncs += 1
        os.fsync(fd)

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._fsync(fd)
        finally:
            os.close(fd)

    # ---- reading ------------------------------------------------------------------

    def read(
        self, sink: str, max_records: int, max_bytes: int = 4 << 20
    ) -> list[tuple[int, int, int, bytes]]:
        """(seq, time_ns, level, doc) records from the sink's read position on, at
        most max_records and about max_bytes (at least one). Raises SpoolError
        when the disk fails the read."""
        c = self._cursor(sink)
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, not {max_records}")
        with self._lock:
            self._check_open()
            if c.seg is None or c.seg.deleted:
                c.seg, c.off = self._locate(c.seq)
            plan = [(s, s.size) for s in self._segs[self._segs.index(c.seg) :]]
            last = self._last_seq
        out: list[tuple[int, int, int, bytes]] = []
        budget = max_bytes
        try:
            for k, (seg, end) in enumerate(plan):
                if k:
                    c.seg, c.off = seg, 0
                budget = self._read_segment(c, seg, end, max_records, budget, out)
                if len(out) >= max_records or budget <= 0:
                    return out
        except FileNotFoundError:
            return out  # settled by every sink and deleted under us: nothing left to read there
        except OSError as e:
            raise SpoolError(f"reading spool {self.directory} failed: {e.strerror or e}") from None
        c.seq = max(c.seq, last + 1)
        return out

    def _read_segment(
        self,
        c: _Cursor,
        seg: _Segment,
        end: int,
        max_records: int,
        budget: int,
        out: list[tuple[int, int, int, bytes]],
    ) -> int:
        """Reads frames of seg from c.off up to end into out; returns the byte budget left."""
        if c.fd_seg is not seg:
            if c.fd >= 0:
                os.close(c.fd)
                c.fd, c.fd_seg = -1, None
            c.fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
            c.fd_seg = seg
        crc32, unpack = zlib.crc32, FRAME.unpack_from
        want = c.seq
        while c.off < end and len(out) < max_records and budget > 0:
            data = os.pread(c.fd, min(end - c.off, budget + HDR), c.off)
            mv = memoryview(data)
            pos = 0
            damaged = False
            while pos + HDR <= len(data) and len(out) < max_records and budget > 0:
                magic, crc, n, seq, t, level = unpack(data, pos)
                stop = pos + HDR + n
                if magic != MAGIC or c.off + stop > end:
                    damaged = True
                    break
                if out and seq >= want and HDR + n > budget:
                    budget = 0  # the next record would go past max_bytes
                    break
                if stop > len(data):
                    if pos:
                        break  # the next read starts with it
                    data = os.pread(c.fd, HDR + n, c.off)  # one frame over the budget: whole
                    mv = memoryview(data)
                if crc32(mv[pos + 8 : stop]) != crc:
                    damaged = True
                    break
                if seq >= want:
                    out.append((seq, t, level, data[pos + HDR : stop]))
                    want = seq + 1
                    budget -= HDR + n
                pos = stop
            c.off += pos
            c.seq = want
            if damaged or (not pos and budget > 0):  # no progress: not a frame there
                self._skip_damage(c, seg, end)
        return budget

    def _skip_damage(self, c: _Cursor, seg: _Segment, end: int) -> None:
        """Moves c past a frame that does not check out at c.off."""
        if c.off in seg.holes:  # found and counted on open
            c.off = seg.holes[c.off]
            return
        with self._lock:  # damaged since open: the rest of the segment cannot be trusted
            self._corrupt += 1
            self._last_error = f"damaged record in {seg.path} at byte {c.off}: skipped to its end"
        c.off = end

    def ack(self, sink: str, seq: int) -> None:
        """The sink settled every record up to seq; segments every sink settled go."""
        c = self._cursor(sink)
        with self._lock:
            self._check_open()
            if seq > self._last_seq:
                raise ValueError(f"ack of seq {seq} past the last record {self._last_seq}")
            if seq <= c.acked:
                return
            c.acked = seq
            if c.seq <= seq:
                c.seq = seq + 1
                c.seg, c.off = self._locate(c.seq)
            gone = self._release()
        self._unlink(gone)

    def rewind(self, sink: str) -> None:
        """Read position back to the sink's acknowledged cursor + 1."""
        c = self._cursor(sink)
        with self._lock:
            self._check_open()
            c.seq = c.acked + 1
            c.seg, c.off = self._locate(c.seq)

    def wait(self, sink: str, timeout_s: float) -> bool:
        """True as soon as records past the sink's read position exist."""
        c = self._cursor(sink)
        with self._cond:
            self._cond.wait_for(lambda: self._closed or c.seq <= self._last_seq, timeout_s)
            return not self._closed and c.seq <= self._last_seq

    def _cursor(self, sink: str) -> _Cursor:
        c = self._cursors.get(sink)
        if c is None:
            raise ValueError(f"unknown spool sink {sink!r}; known: {', '.join(self._cursors)}")
        return c

    def _locate(self, seq: int) -> tuple[_Segment, int]:
        """The segment holding seq and the offset of an indexed frame at or before it."""
        i = max(bisect.bisect_right([s.first for s in self._segs], seq) - 1, 0)
        seg = self._segs[i]
        j = bisect.bisect_right(seg.index_seq, seq) - 1
        return seg, seg.index_off[j] if j >= 0 else 0

    def _release(self) -> list[_Segment]:
        """Takes out the segments every sink settled (never the active one); the
        caller unlinks them outside the lock."""
        acked = min(c.acked for c in self._cursors.values())
        gone = []
        while len(self._segs) > 1 and self._segs[0].last <= acked:
            seg = self._segs.pop(0)
            seg.deleted = True
            self._bytes -= seg.size
            gone.append(seg)
        return gone

    def _unlink(self, segs: list[_Segment]) -> None:
        for seg in segs:
            try:
                os.unlink(seg.path)
            except FileNotFoundError:
                pass
            except OSError as e:
                with self._lock:
                    self._last_error = f"cannot delete {seg.path}: {e.strerror or e}"

    # ---- the rest -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._lock:
            kept = [s for s in self._segs if s.last >= s.first]
            return {
                "spool_id": self.spool_id,
                "appended": self._appended,
                "bytes": self._bytes,
                "segments": len(self._segs),
                "first_seq": kept[0].first if kept else None,
                "last_seq": self._last_seq,
                "sinks": {
                    name: {
                        "acked": c.acked,
                        "read_pos": c.seq,
                        "lag_records": sum(
                            s.last - max(c.acked, s.first - 1) for s in kept if s.last > c.acked
                        ),
                    }
                    for name, c in self._cursors.items()
                },
                "dropped": dict(self._dropped),
                "torn": self._torn,
                "corrupt": self._corrupt,
                "write_errors": self._write_errors,
                "last_error": self._last_error,
                "fsyncs": self._fsyncs,
            }

    def close(self) -> None:
        """Syncs and closes; call after the threads that use the spool stopped."""
        with self._append_lock:
            if self._closed:
                return
            self._sync(blocking=True)
            with self._sync_lock:  # a ticker's sync never sees a closed descriptor
                try:
                    # seqs below next_seq were all handed out, none past it: a clean restart
                    # goes on without a gap
                    self._reserve(self._next_seq)
                except OSError as e:
                    self._last_error = f"closing {self.directory}: {e.strerror or e}"
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                self._close_fds()

    def _close_fds(self) -> None:
        fds = [s.fd for s in self._segs] + self._retired + [c.fd for c in self._cursors.values()]
        for fd in fds:
            if fd >= 0:
                os.close(fd)
        self._retired = []
        for s in self._segs:
            s.fd = -1
        for c in self._cursors.values():
            c.fd, c.fd_seg = -1, None

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"spool {self.directory} is closed")

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _segment_path(self, first: int) -> str:
        return self._path(f"seg-{first:020d}.log")


def _check_args(
    sinks: Sequence[str],
    max_bytes: int,
    segment_bytes: int,
    fsync_interval_s: float,
    reserve_fraction: float,
) -> None:
    if isinstance(sinks, str) or not sinks:
        raise ValueError(f"a spool needs a list of one or more sinks, not {sinks!r}")
    if len(set(sinks)) != len(sinks):
        raise ValueError(f"spool sinks must be distinct: {', '.join(sinks)}")
    for s in sinks:
        if not _SINK.fullmatch(s):
            raise ValueError(f"spool sink name {s!r} must be letters, digits, '_' or '-'")
    if max_bytes <= 0 or segment_bytes <= 0:
        raise ValueError(f"spool sizes must be positive: max {max_bytes}, segment {segment_bytes}")
    if fsync_interval_s < 0:
        raise ValueError(f"fsync interval must not be negative: {fsync_interval_s}")
    if not 0 <= reserve_fraction < 1:
        raise ValueError(f"reserve fraction must be in [0, 1): {reserve_fraction}")


def _pwrite_all(fd: int, data: bytes, off: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, off)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view, off = view[n:], off + n


def _read_int(path: str) -> int | None:
    """The number in a small file; None when missing or unreadable."""
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None
