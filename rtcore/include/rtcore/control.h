/*
 * The control block and the clock anchor are written by the control plane
 * and read by the RT loop under seqlocks: the writer makes seq odd (a
 * compare-and-swap, so two writers never interleave), changes the fields and
 * makes seq even again; a reader copies the block and keeps the copy only if
 * seq was even and unchanged across it. The loop never waits: a torn copy is
 * retried on its next cycle with the previous snapshot still in force.
 */
#ifndef RTCORE_CONTROL_H
#define RTCORE_CONTROL_H

#include <stdint.h>
#include <string.h>
#include <time.h>

#include "rtcore/cpu.h"
#include "rtcore/layout.h"

/* Writer: returns the odd seq the change runs under; finish with rtc_seq_end. */
static inline uint64_t rtc_seq_begin(uint64_t *seq)
{
    for (;;) {
        uint64_t s = __atomic_load_n(seq, __ATOMIC_RELAXED);
        if (!(s & 1u) &&
            __atomic_compare_exchange_n(seq, &s, s + 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            __atomic_thread_fence(__ATOMIC_RELEASE);
            return s + 1;
        }
        rtc_cpu_relax();
    }
}

static inline void rtc_seq_end(uint64_t *seq, uint64_t odd)
{
    __atomic_store_n(seq, odd + 1, __ATOMIC_RELEASE);
}

/*
 * Reader: copy size bytes of a seqlocked block whose first field is seq.
 * 0 and *seen = the block's seq if the copy is consistent; -1 if a write
 * was in progress or overlapped the copy.
 */
static inline int rtc_seq_copy(const void *block, void *out, size_t size, uint64_t *seen)
{
    const uint64_t *seq = (const uint64_t *)block;
    uint64_t before = __atomic_load_n(seq, __ATOMIC_ACQUIRE);
    if (before & 1u)
        return -1;
    memcpy(out, block, size);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(seq, __ATOMIC_RELAXED) != before)
        return -1;
    *seen = before;
    return 0;
}

static inline int64_t rtc_clock_ns(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/*
 * Take a (monotonic, realtime) pair: the narrowest of a few brackets
 * mono-real-mono, the pair's monotonic time being the bracket's middle.
 */
static inline void rtc_clock_sample(int64_t *mono, int64_t *real, int64_t *width)
{
    *width = INT64_MAX;
    *mono = 0;
    *real = 0;
    for (int i = 0; i < 8; i++) {
        int64_t a = rtc_clock_ns(CLOCK_MONOTONIC);
        int64_t r = rtc_clock_ns(CLOCK_REALTIME);
        int64_t b = rtc_clock_ns(CLOCK_MONOTONIC);
        if (b - a < *width) {
            *width = b - a;
            *mono = a + (b - a) / 2;
            *real = r;
        }
    }
}

static inline void rtc_clock_anchor(rtc_clock *c)
{
    int64_t mono, real, width;
    rtc_clock_sample(&mono, &real, &width);
    uint64_t odd = rtc_seq_begin(&c->seq);
    c->mono_ns = mono;
    c->real_ns = real;
    c->bracket_ns = width;
    rtc_seq_end(&c->seq, odd);
}

#endif
