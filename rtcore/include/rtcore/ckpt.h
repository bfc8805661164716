/*
 * Checkpoint slots (and the inbound slot a standby's agent fills with the
 * primary's replicated state): a seqlock guards each slot (odd = write in progress) and a
 * CRC-32C over the slot's metadata and data catches torn or corrupted copies
 * that the seqlock cannot (a writer killed mid-write leaves the count odd).
 * Each slot has one writer (the RT loop for its own slots, the agent for the
 * inbound one); readers retry or skip, never block it.
 */
#ifndef RTCORE_CKPT_H
#define RTCORE_CKPT_H

#include <stdint.h>
#include <string.h>

#include "rtcore/cpu.h"
#include "rtcore/crc32c.h"
#include "rtcore/layout.h"

#define RTC_CKPT_META_OFF offsetof(rtc_ckpt_slot, seq)
#define RTC_CKPT_META_LEN (offsetof(rtc_ckpt_slot, crc) - offsetof(rtc_ckpt_slot, seq))

static inline uint32_t rtc_ckpt_crc(const rtc_ckpt_slot *s, const void *data, uint32_t size)
{
    uint32_t crc = rtc_crc32c(0, (const uint8_t *)s + RTC_CKPT_META_OFF, RTC_CKPT_META_LEN);
    return rtc_crc32c(crc, data, size);
}

static inline void rtc_ckpt_write(rtc_ckpt_slot *s, uint64_t seq, uint64_t cycle, int64_t mono_ns,
                                  uint64_t epoch, uint64_t origin, uint32_t flags,
                                  uint32_t task_id, const void *state, uint32_t size)
{
    uint64_t lock = __atomic_load_n(&s->seqlock, __ATOMIC_RELAXED);
    __atomic_store_n(&s->seqlock, lock | 1u, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    s->seq = seq;
    s->cycle = cycle;
    s->mono_ns = mono_ns;
    s->epoch = epoch;
    s->origin = origin;
    s->flags = flags;
    s->task_id = task_id;
    s->state_size = size;
    memcpy(s->data, state, size);
    s->crc = rtc_ckpt_crc(s, s->data, size);
    __atomic_store_n(&s->seqlock, (lock | 1u) + 1u, __ATOMIC_RELEASE);
}

enum rtc_ckpt_read {
    RTC_CKPT_OK = 0,
    RTC_CKPT_EMPTY = 1,        /* never written */
    RTC_CKPT_BUSY = 2,         /* a write overlapped every attempt */
    RTC_CKPT_CORRUPT = 3,      /* stable but the CRC does not match */
};

/*
 * Copy a consistent slot into out (slot header + data) and verify it.
 * Returns enum rtc_ckpt_read.
 */
static inline int rtc_ckpt_read(const rtc_ckpt_slot *s, rtc_ckpt_slot *out, int attempts)
{
    for (int i = 0; i < attempts; i++) {
        if (i > 0) {
            /* a write takes about a microsecond: give it time to finish */
            for (int k = 0; k < 64; k++)
                rtc_cpu_relax();
        }
        uint64_t before = __atomic_load_n(&s->seqlock, __ATOMIC_ACQUIRE);
        if (before & 1u)
            continue;
        if (before == 0)
            return RTC_CKPT_EMPTY;
        memcpy(out, s, offsetof(rtc_ckpt_slot, data));
        uint32_t size = out->state_size <= RTC_CKPT_MAX ? out->state_size : RTC_CKPT_MAX;
        memcpy(out->data, s->data, size);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&s->seqlock, __ATOMIC_RELAXED) != before)
            continue;
        out->seqlock = before;
        if (out->state_size > RTC_CKPT_MAX || rtc_ckpt_crc(out, out->data, size) != out->crc)
            return RTC_CKPT_CORRUPT;
        return RTC_CKPT_OK;
    }
    return RTC_CKPT_BUSY;
}

#endif
