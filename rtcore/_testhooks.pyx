# cython: language_level=3, boundscheck=False, wraparound=False
"""Test hooks: patterned ring producers and checkpoint writers that let tests
check the lock-free code for gaps, corruption and torn reads. Nothing in the
product imports this module."""

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from rtcore._rtc cimport *


cdef inline int64_t mono_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000000000 + ts.tv_nsec


cdef rtc_segment *segment_ptr(object buf) except NULL:
    cdef uint8_t[::1] view = memoryview(buf).cast("B")
    if view.shape[0] < <Py_ssize_t>sizeof(rtc_segment):
        raise ValueError("buffer is smaller than a segment")
    return <rtc_segment *>&view[0]


cdef class PatternWriter:
    """Producer side of one ring pushing a verifiable pattern (SPSC)."""
    cdef object _buf
    cdef rtc_producer p

    def __cinit__(self, buf, str name):
        self._buf = buf
        cdef rtc_segment *seg = segment_ptr(buf)
        cdef rtc_ring_hdr *hdr
        if name == "log":
            hdr = &seg.log_ring.hdr
        elif name == "span":
            hdr = &seg.span_ring.hdr
        elif name == "event":
            hdr = &seg.event_ring.hdr
        elif name == "cmd":
            hdr = &seg.cmd_ring.hdr
        elif name == "journal":
            hdr = &seg.journal_ring.hdr
        else:
            raise ValueError(f"unknown ring {name!r}")
        rtc_producer_attach(&self.p, hdr, <uint8_t *>hdr + sizeof(rtc_ring_hdr))

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
            rtc_ckpt_write(&seg.ckpt[slot], s, s, mono_ns(), 0, 0, 0, 0, state, size)


def control_reader(buf, double seconds):
    """Copy the control block the way the loop does (rtc_seq_copy) as fast as
    possible for `seconds`. The test's writer keeps epoch == node_id and
    lease_timeout_ns == 1000 * epoch in every change it publishes, so an
    accepted copy that breaks that was torn. Returns (accepted, rejected, torn)."""
    cdef rtc_control *c = &segment_ptr(buf).control
    cdef rtc_control copy
    cdef uint64_t seen, accepted = 0, rejected = 0, torn = 0
    cdef int64_t until = mono_ns() + <int64_t>(seconds * 1e9)
    with nogil:
        while mono_ns() < until:
            if rtc_seq_copy(c, &copy, sizeof(rtc_control), &seen) != 0:
                rejected += 1
                continue
            accepted += 1
            if copy.epoch != copy.node_id or copy.lease_timeout_ns != <int64_t>copy.epoch * 1000:
                torn += 1
    return accepted, rejected, torn
