# cython: language_level=3, boundscheck=False, wraparound=False
"""C-level access to a segment for the control plane, tests and benchmarks.

The RT process itself runs in rtcore._rt; this module gives everyone else the
same ring, checkpoint, CRC and histogram code the loop uses, so both sides of
a ring run one implementation.
"""

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from rtcore._rtc cimport *

ABI_VERSION = RTC_ABI_VERSION
SEGMENT_SIZE = sizeof(rtc_segment)
CKPT_SLOTS = RTC_CKPT_SLOTS
STRUCT_SIZES = {
    "rtc_header": sizeof(rtc_header),
    "rtc_control": sizeof(rtc_control),
    "rtc_status": sizeof(rtc_status),
    "rtc_strings": sizeof(rtc_strings),
    "rtc_ckpt_slot": sizeof(rtc_ckpt_slot),
    "rtc_ring_hdr": sizeof(rtc_ring_hdr),
    "rtc_log_rec": sizeof(rtc_log_rec),
    "rtc_span_rec": sizeof(rtc_span_rec),
    "rtc_event_rec": sizeof(rtc_event_rec),
    "rtc_cmd_rec": sizeof(rtc_cmd_rec),
    "rtc_segment": sizeof(rtc_segment),
}
CKPT_RESULTS = {RTC_CKPT_OK: "ok", RTC_CKPT_EMPTY: "empty", RTC_CKPT_BUSY: "busy",
                RTC_CKPT_CORRUPT: "corrupt"}


def crc32c(data, uint32_t crc=0):
    """CRC-32C of a bytes-like object (the checkpoint checksum)."""
    cdef const uint8_t[::1] view = memoryview(data).cast("B")
    if view.shape[0] == 0:
        return rtc_crc32c(crc, NULL, 0)
    return rtc_crc32c(crc, &view[0], view.shape[0])


def hist_bucket(uint64_t value):
    return rtc_hist_bucket(value)


def hist_lower(uint32_t idx):
    return rtc_hist_lower(idx)


cdef inline int64_t mono_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000000000 + ts.tv_nsec


def monotonic_ns():
    return mono_ns()


cdef rtc_segment *segment_ptr(object buf) except NULL:
    cdef uint8_t[::1] view = memoryview(buf).cast("B")
    if view.shape[0] < <Py_ssize_t>sizeof(rtc_segment):
        raise ValueError(f"buffer of {view.shape[0]} bytes is smaller than a segment "
                         f"({sizeof(rtc_segment)} bytes)")
    return <rtc_segment *>&view[0]


cdef rtc_ring_hdr *ring_hdr(rtc_segment *seg, str name) except NULL:
    if name == "log":
        return &seg.log_ring.hdr
    if name == "span":
        return &seg.span_ring.hdr
    if name == "event":
        return &seg.event_ring.hdr
    if name == "cmd":
        return &seg.cmd_ring.hdr
    raise ValueError(f"unknown ring {name!r} (log, span, event, cmd)")


cdef void *ring_recs(rtc_ring_hdr *hdr) noexcept nogil:
    # every ring struct is {hdr; recs[]} with recs right after the header
    return <void *>(<uint8_t *>hdr + sizeof(rtc_ring_hdr))


def format_segment(buf):
    """Lay out a fresh segment in buf: header, empty rings, default control."""
    cdef rtc_segment *seg = segment_ptr(buf)
    memset(seg, 0, sizeof(rtc_segment))
    seg.header.magic = RTC_MAGIC
    seg.header.abi_version = RTC_ABI_VERSION
    seg.header.header_size = sizeof(rtc_header)
    seg.header.segment_size = sizeof(rtc_segment)
    seg.header.ckpt_slots = RTC_CKPT_SLOTS
    seg.header.ckpt_max = RTC_CKPT_MAX
    seg.header.strings_max = RTC_STRINGS_MAX
    rtc_ring_format(&seg.log_ring.hdr, RTC_LOG_RING_CAP, sizeof(rtc_log_rec))
    rtc_ring_format(&seg.span_ring.hdr, RTC_SPAN_RING_CAP, sizeof(rtc_span_rec))
    rtc_ring_format(&seg.event_ring.hdr, RTC_EVENT_RING_CAP, sizeof(rtc_event_rec))
    rtc_ring_format(&seg.cmd_ring.hdr, RTC_CMD_RING_CAP, sizeof(rtc_cmd_rec))
    seg.control.mode = RTC_MODE_RUN
    seg.control.active = 1
    seg.control.log_level = RTC_LEVEL_INFO
    seg.status.numa_node = -1


def check_segment(buf):
    """Raise ValueError with the reason if buf does not hold a segment of this ABI."""
    cdef rtc_segment *seg = segment_ptr(buf)
    if seg.header.magic != RTC_MAGIC:
        raise ValueError("not an rtcore segment (bad magic)")
    if seg.header.abi_version != RTC_ABI_VERSION:
        raise ValueError(f"segment has ABI version {seg.header.abi_version}, "
                         f"this build speaks {RTC_ABI_VERSION}")
    if seg.header.segment_size != sizeof(rtc_segment):
        raise ValueError(f"segment size {seg.header.segment_size} does not match "
                         f"this build ({sizeof(rtc_segment)})")


cdef class RingReader:
    """Consumer side of one ring. One reader per ring at a time (SPSC)."""
    cdef object _buf
    cdef rtc_consumer c

    def __cinit__(self, buf, str name):
        self._buf = buf
        cdef rtc_ring_hdr *hdr = ring_hdr(segment_ptr(buf), name)
        rtc_consumer_attach(&self.c, hdr, ring_recs(hdr))

    @property
    def record_size(self):
        return self.c.hdr.record_size

    def pending(self):
        return rtc_ring_pending(self.c.hdr)

    def pop(self, uint32_t max_records=1024):
        """Take up to max_records records; returns their bytes back to back."""
        cdef uint32_t size = self.c.hdr.record_size
        out = bytearray(<Py_ssize_t>max_records * size)
        cdef uint8_t[::1] view = out
        cdef uint32_t n
        if max_records == 0:
            return b""
        with nogil:
            n = rtc_ring_pop_batch(&self.c, &view[0], max_records)
        del view
        del out[<Py_ssize_t>n * size:]
        return bytes(out)


cdef class RingWriter:
    """Producer side of one ring. One writer per ring at a time (SPSC)."""
    cdef object _buf
    cdef rtc_producer p

    def __cinit__(self, buf, str name):
        self._buf = buf
        cdef rtc_ring_hdr *hdr = ring_hdr(segment_ptr(buf), name)
        rtc_producer_attach(&self.p, hdr, ring_recs(hdr))

    def push(self, rec):
        """Push one record (exactly record_size bytes); False if the ring was full."""
        cdef const uint8_t[::1] view = memoryview(rec).cast("B")
        if view.shape[0] != self.p.hdr.record_size:
            raise ValueError(f"record is {view.shape[0]} bytes, ring takes "
                             f"{self.p.hdr.record_size}")
        return rtc_ring_push(&self.p, &view[0]) == 0

    def push_many(self, records, Py_ssize_t count):
        """Push count records stored back to back; returns how many were accepted."""
        cdef const uint8_t[::1] view = memoryview(records).cast("B")
        cdef uint32_t size = self.p.hdr.record_size
        cdef Py_ssize_t i, ok = 0
        if view.shape[0] < count * size:
            raise ValueError("buffer holds fewer records than count")
        with nogil:
            for i in range(count):
                if rtc_ring_push(&self.p, &view[i * size]) == 0:
                    ok += 1
        return ok

    def push_sequence(self, uint64_t first, uint64_t count, int64_t spin_limit=0):
        """Push records whose first 8 bytes are first, first+1, ... and whose
        remaining 8-byte words are derived from that number (a test pattern
        the reader can verify). If spin_limit > 0, retry a full ring up to
        spin_limit times per record instead of dropping at once. Returns the
        number accepted."""
        cdef uint32_t size = self.p.hdr.record_size
        cdef uint64_t i, n, ok = 0
        cdef uint64_t *slot
        cdef uint32_t w
        cdef int64_t tries
        with nogil:
            for i in range(count):
                n = first + i
                tries = 0
                while tries < spin_limit and not rtc_ring_has_room(&self.p):
                    tries += 1
                slot = <uint64_t *>rtc_ring_claim(&self.p)
                if slot == NULL:
                    continue
                slot[0] = n
                for w in range(1, size // 8):
                    slot[w] = n * 0x9E3779B97F4A7C15ULL + w
                rtc_ring_publish(&self.p)
                ok += 1
        return ok


def verify_sequence(data, uint32_t record_size, uint64_t expect_first):
    """Check records made by push_sequence: numbers strictly increasing from
    expect_first with no gap (when nothing was dropped) and every word intact.
    Returns (count, last_number or None, gaps, corrupt)."""
    cdef const uint8_t[::1] view = memoryview(data).cast("B")
    cdef Py_ssize_t count = view.shape[0] // record_size, i
    cdef const uint64_t *rec
    cdef uint64_t expect = expect_first, gaps = 0, corrupt = 0, n = 0
    cdef uint32_t w
    with nogil:
        for i in range(count):
            rec = <const uint64_t *>&view[i * record_size]
            n = rec[0]
            if n != expect:
                if n < expect:
                    corrupt += 1
                else:
                    gaps += 1
            for w in range(1, record_size // 8):
                if rec[w] != n * 0x9E3779B97F4A7C15ULL + w:
                    corrupt += 1
                    break
            expect = n + 1
    return count, (expect - 1 if count else None), gaps, corrupt


def ring_counters(buf, str name):
    """(head, tail, pushed, dropped, capacity) of a ring."""
    cdef rtc_ring_hdr *hdr = ring_hdr(segment_ptr(buf), name)
    return (rtc_load_u64(&hdr.head), rtc_load_u64(&hdr.tail),
            rtc_load_u64(&hdr.pushed), rtc_load_u64(&hdr.dropped),
            hdr.capacity)


cdef extern from "rtcore/rtsys.h" nogil:
    uint64_t rtc_load_u64(const uint64_t *p)
    void rtc_store_u64(uint64_t *p, uint64_t v)
    void rtc_store_u32(uint32_t *p, uint32_t v)
    void rtc_store_i64(int64_t *p, int64_t v)


def read_checkpoint(buf, uint32_t slot, int attempts=64):
    """Read one slot consistently. Returns (result, meta, state_bytes) where
    result is 'ok', 'empty', 'busy' or 'corrupt'."""
    cdef rtc_segment *seg = segment_ptr(buf)
    if slot >= RTC_CKPT_SLOTS:
        raise ValueError(f"slot {slot} out of range (0..{RTC_CKPT_SLOTS - 1})")
    out = bytearray(sizeof(rtc_ckpt_slot))
    cdef uint8_t[::1] view = out
    cdef rtc_ckpt_slot *copy = <rtc_ckpt_slot *>&view[0]
    cdef int rc
    with nogil:
        rc = rtc_ckpt_read(&seg.ckpt[slot], copy, attempts)
    meta = {
        "slot": slot, "seq": copy.seq, "cycle": copy.cycle, "mono_ns": copy.mono_ns,
        "epoch": copy.epoch, "task_id": copy.task_id, "state_size": copy.state_size,
        "crc": copy.crc,
    }
    size = min(copy.state_size, RTC_CKPT_MAX)
    data = bytes(out[sizeof(rtc_ckpt_slot) - RTC_CKPT_MAX:][:size])
    del view
    return CKPT_RESULTS[rc], meta, data


def write_checkpoint(buf, uint32_t slot, uint64_t seq, uint64_t cycle, uint64_t epoch,
                     uint32_t task_id, state):
    """Write a slot the way the RT loop does (tests and standbys' shadow copies)."""
    cdef rtc_segment *seg = segment_ptr(buf)
    cdef const uint8_t[::1] view = memoryview(state).cast("B")
    if slot >= RTC_CKPT_SLOTS:
        raise ValueError(f"slot {slot} out of range (0..{RTC_CKPT_SLOTS - 1})")
    if view.shape[0] > RTC_CKPT_MAX or view.shape[0] == 0:
        raise ValueError(f"state must be 1..{RTC_CKPT_MAX} bytes")
    with nogil:
        rtc_ckpt_write(&seg.ckpt[slot], seq, cycle, mono_ns(), epoch, task_id,
                       &view[0], view.shape[0])


def hammer_checkpoint(buf, uint32_t slot, uint64_t first_seq, uint64_t count, uint32_t size):
    """Rewrite one slot count times with a state whose every byte derives
    from the sequence number, as fast as possible (torn-read tests)."""
    cdef rtc_segment *seg = segment_ptr(buf)
    cdef uint8_t state[16384]
    cdef uint64_t i, s
    cdef uint32_t b
    if slot >= RTC_CKPT_SLOTS:
        raise ValueError(f"slot {slot} out of range (0..{RTC_CKPT_SLOTS - 1})")
    if size == 0 or size > RTC_CKPT_MAX:
        raise ValueError(f"size must be 1..{RTC_CKPT_MAX}")
    with nogil:
        for i in range(count):
            s = first_seq + i
            for b in range(size):
                state[b] = <uint8_t>(s + b)
            rtc_ckpt_write(&seg.ckpt[slot], s, s, mono_ns(), 0, 0, state, size)


def header_info(buf):
    """Identity fields of a segment's header, without numpy."""
    cdef rtc_segment *seg = segment_ptr(buf)
    return {"magic": seg.header.magic, "abi_version": seg.header.abi_version,
            "segment_size": seg.header.segment_size, "owner_pid": seg.header.owner_pid}


def write_control(buf, *, mode=None, active=None, epoch=None, lease_ns=None,
                  lease_timeout_ns=None, log_level=None, trace_every=None):
    """Set control-block fields (those given) and bump its generation. The
    loop reads each field once per cycle; no field depends on another."""
    cdef rtc_control *c = &segment_ptr(buf).control
    if mode is not None:
        if mode not in (RTC_MODE_RUN, RTC_MODE_HOLD, RTC_MODE_SAFE, RTC_MODE_STOP):
            raise ValueError(f"mode {mode} is not run, hold, safe or stop")
        rtc_store_u32(&c.mode, mode)
    if active is not None:
        rtc_store_u32(&c.active, 1 if active else 0)
    if epoch is not None:
        rtc_store_u64(&c.epoch, epoch)
    if lease_timeout_ns is not None:
        rtc_store_i64(&c.lease_timeout_ns, lease_timeout_ns)
    if lease_ns is not None:
        rtc_store_i64(&c.lease_ns, lease_ns)
    if log_level is not None:
        rtc_store_u32(&c.log_level, log_level)
    if trace_every is not None:
        rtc_store_u32(&c.trace_every, trace_every)
    rtc_store_u64(&c.generation, c.generation + 1)
