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
    "rtc_journal_rec": sizeof(rtc_journal_rec),
    "rtc_clock": sizeof(rtc_clock),
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
    if name == "journal":
        return &seg.journal_ring.hdr
    raise ValueError(f"unknown ring {name!r} (log, span, event, cmd, journal)")


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
    rtc_ring_format(&seg.journal_ring.hdr, RTC_JOURNAL_RING_CAP, sizeof(rtc_journal_rec))
    rtc_clock_anchor(&seg.clock)
    seg.header.created_ns = seg.clock.real_ns
    # fail closed: nothing actuates until a control plane (or an explicit
    # standalone flag) makes it active
    seg.control.mode = RTC_MODE_RUN
    seg.control.active = 0
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

    def pop_into(self, out):
        """Take as many records as fit the writable buffer out (a numpy
        structured array of the ring's records, say) in at most two copies;
        returns how many."""
        return self._copy_into(out, True)

    def peek_into(self, out):
        """Copy as many records as fit out, like pop_into, but leave them in
        the ring (the producer cannot overwrite them) until commit(n): a
        consumer that dies between the two loses nothing."""
        return self._copy_into(out, False)

    cdef uint32_t _copy_into(self, out, bint take) except? 0:
        cdef uint8_t[::1] view = memoryview(out).cast("B")
        cdef uint32_t size = self.c.hdr.record_size
        cdef uint32_t room = <uint32_t>(view.shape[0] // size), n
        if room == 0:
            return 0
        with nogil:
            n = rtc_ring_peek_batch(&self.c, &view[0], room)
            if take:
                rtc_ring_commit(&self.c, n)
        return n

    def commit(self, uint32_t n):
        """Take the n oldest records, which a peek_into returned."""
        if n > rtc_ring_pending(self.c.hdr):
            raise ValueError(f"commit of {n} records, {rtc_ring_pending(self.c.hdr)} pending")
        rtc_ring_commit(&self.c, n)

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


def ring_counters(buf, str name):
    """(head, tail, pushed, dropped, capacity) of a ring."""
    cdef rtc_ring_hdr *hdr = ring_hdr(segment_ptr(buf), name)
    return (rtc_load_u64(&hdr.head), rtc_load_u64(&hdr.tail),
            rtc_load_u64(&hdr.pushed), rtc_load_u64(&hdr.dropped),
            hdr.capacity)


cdef extern from "rtcore/rtsys.h" nogil:
    uint64_t rtc_load_u64(const uint64_t *p)
    void rtc_store_u64(uint64_t *p, uint64_t v)


INBOUND = RTC_CKPT_SLOTS  # slot number naming the inbound (replicated) slot


cdef rtc_ckpt_slot *slot_ptr(rtc_segment *seg, uint32_t slot) except NULL:
    if slot == RTC_CKPT_SLOTS:
        return &seg.inbound
    if slot > RTC_CKPT_SLOTS:
        raise ValueError(f"slot {slot} out of range (0..{RTC_CKPT_SLOTS - 1}, "
                         f"or {RTC_CKPT_SLOTS} for the inbound slot)")
    return &seg.ckpt[slot]


def read_checkpoint(buf, uint32_t slot, int attempts=64):
    """Read one slot (INBOUND: the inbound slot) consistently. Returns
    (result, meta, state_bytes), result 'ok', 'empty', 'busy' or 'corrupt'."""
    cdef rtc_ckpt_slot *src = slot_ptr(segment_ptr(buf), slot)
    out = bytearray(sizeof(rtc_ckpt_slot))
    cdef uint8_t[::1] view = out
    cdef rtc_ckpt_slot *copy = <rtc_ckpt_slot *>&view[0]
    cdef int rc
    with nogil:
        rc = rtc_ckpt_read(src, copy, attempts)
    meta = {
        "slot": slot, "seq": copy.seq, "cycle": copy.cycle, "mono_ns": copy.mono_ns,
        "epoch": copy.epoch, "origin": copy.origin, "flags": copy.flags,
        "task_id": copy.task_id, "state_size": copy.state_size, "crc": copy.crc,
    }
    size = min(copy.state_size, RTC_CKPT_MAX)
    data = bytes(out[sizeof(rtc_ckpt_slot) - RTC_CKPT_MAX:][:size])
    del view
    return CKPT_RESULTS[rc], meta, data


def write_checkpoint(buf, uint32_t slot, uint64_t seq, uint64_t cycle, uint64_t epoch,
                     uint32_t task_id, state, uint64_t origin=0, uint32_t flags=0):
    """Write a slot the way the RT loop does: a restore file into a segment
    before start-up, or (slot INBOUND) a primary's replicated checkpoint for
    a standby's loop to adopt."""
    cdef rtc_ckpt_slot *dst = slot_ptr(segment_ptr(buf), slot)
    cdef const uint8_t[::1] view = memoryview(state).cast("B")
    if view.shape[0] > RTC_CKPT_MAX or view.shape[0] == 0:
        raise ValueError(f"state must be 1..{RTC_CKPT_MAX} bytes")
    with nogil:
        rtc_ckpt_write(dst, seq, cycle, mono_ns(), epoch, origin, flags, task_id,
                       &view[0], view.shape[0])


def header_info(buf):
    """Identity fields of a segment's header, without numpy."""
    cdef rtc_segment *seg = segment_ptr(buf)
    return {"magic": seg.header.magic, "abi_version": seg.header.abi_version,
            "segment_size": seg.header.segment_size, "owner_pid": seg.header.owner_pid}


CONTROL_FIELDS = ("mode", "active", "epoch", "lease_ns", "lease_timeout_ns", "log_level",
                  "sample_ppm", "node_id")


def write_control(buf, **fields):
    """Publish a change of the control-block fields given, as one: the loop
    sees all of them or none (seqlock). ValueError names a bad field."""
    cdef rtc_control *c = &segment_ptr(buf).control
    unknown = set(fields) - set(CONTROL_FIELDS)
    if unknown:
        raise ValueError(f"unknown control field(s) {', '.join(sorted(unknown))}")
    mode = fields.get("mode")
    if mode is not None and mode not in (RTC_MODE_RUN, RTC_MODE_HOLD, RTC_MODE_SAFE,
                                         RTC_MODE_STOP):
        raise ValueError(f"mode {mode} is not run, hold, safe or stop")
    ppm = fields.get("sample_ppm")
    if ppm is not None and not 0 <= ppm <= RTC_SAMPLE_PPM_ALL:
        raise ValueError(f"sample_ppm {ppm} is out of range 0..{RTC_SAMPLE_PPM_ALL}")
    # each field: given (bit set in `given`) and its value; applied in place
    # under the seqlock so a concurrent writer's change (the lease thread's
    # renewal) is never overwritten with a stale copy
    cdef uint32_t given = 0
    cdef uint32_t v_mode = 0, v_active = 0, v_level = 0, v_ppm = 0
    cdef uint64_t v_epoch = 0, v_node = 0
    cdef int64_t v_lease = 0, v_timeout = 0
    for name, value in fields.items():
        if value is None:
            continue
        given |= 1u << CONTROL_FIELDS.index(name)
        if name == "mode":
            v_mode = value
        elif name == "active":
            v_active = 1 if value else 0
        elif name == "epoch":
            v_epoch = value
        elif name == "lease_ns":
            v_lease = value
        elif name == "lease_timeout_ns":
            v_timeout = value
        elif name == "log_level":
            v_level = value
        elif name == "sample_ppm":
            v_ppm = value
        elif name == "node_id":
            v_node = value
    cdef uint64_t odd
    with nogil:
        odd = rtc_seq_begin(&c.seq)
        if given & (1u << 0):
            c.mode = v_mode
        if given & (1u << 1):
            c.active = v_active
        if given & (1u << 2):
            c.epoch = v_epoch
        if given & (1u << 3):
            c.lease_ns = v_lease
        if given & (1u << 4):
            c.lease_timeout_ns = v_timeout
        if given & (1u << 5):
            c.log_level = v_level
        if given & (1u << 6):
            c.sample_ppm = v_ppm
        if given & (1u << 7):
            c.node_id = v_node
        rtc_seq_end(&c.seq, odd)


def renew_lease(buf):
    """Stamp the lease with now (CLOCK_MONOTONIC); returns the stamp."""
    cdef rtc_control *c = &segment_ptr(buf).control
    cdef uint64_t odd
    cdef int64_t now
    with nogil:
        now = mono_ns()
        odd = rtc_seq_begin(&c.seq)
        c.lease_ns = now
        rtc_seq_end(&c.seq, odd)
    return now


def read_control(buf):
    """A consistent copy of the control block as a dict."""
    cdef rtc_control *c = &segment_ptr(buf).control
    cdef rtc_control copy
    cdef uint64_t seen
    cdef int rc = -1
    while rc != 0:
        with nogil:
            rc = rtc_seq_copy(c, &copy, sizeof(rtc_control), &seen)
    return {"seq": seen, "mode": copy.mode, "active": copy.active, "epoch": copy.epoch,
            "lease_ns": copy.lease_ns, "lease_timeout_ns": copy.lease_timeout_ns,
            "log_level": copy.log_level, "sample_ppm": copy.sample_ppm,
            "node_id": copy.node_id}


def anchor_clock(buf):
    """Refresh the segment's (monotonic, realtime) anchor from a tight bracket."""
    cdef rtc_clock *k = &segment_ptr(buf).clock
    with nogil:
        rtc_clock_anchor(k)


def read_clock(buf):
    """(mono_ns, real_ns, bracket_ns) of the segment's clock anchor."""
    cdef rtc_clock *k = &segment_ptr(buf).clock
    cdef rtc_clock copy
    cdef uint64_t seen
    cdef int rc = -1
    while rc != 0:
        with nogil:
            rc = rtc_seq_copy(k, &copy, sizeof(rtc_clock), &seen)
    return copy.mono_ns, copy.real_ns, copy.bracket_ns


def clock_sample():
    """A fresh (mono_ns, real_ns, bracket_ns) pair, as the anchor takes it."""
    cdef int64_t mono, real, width
    rtc_clock_sample(&mono, &real, &width)
    return mono, real, width
