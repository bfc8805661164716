/*
 * Log-linear histogram buckets (HdrHistogram-style, 16 sub-buckets per power
 * of two): exact below 16 ns, relative width at most 1/16 above. A bucket
 * index costs one clz; rtcore/stats.py mirrors rtc_hist_lower() to read them.
 */
#ifndef RTCORE_HIST_H
#define RTCORE_HIST_H

#include <stdint.h>

#include "rtcore/layout.h"

static inline uint32_t rtc_hist_bucket(uint64_t v)
{
    if (v < 16)
        return (uint32_t)v;
    uint32_t msb = 63u - (uint32_t)__builtin_clzll(v);
    uint32_t idx = (msb - 3u) * 16u + (uint32_t)((v >> (msb - 4u)) & 15u);
    return idx < RTC_HIST_BUCKETS ? idx : RTC_HIST_BUCKETS - 1u;
}

/* Smallest value that falls into bucket idx. */
static inline uint64_t rtc_hist_lower(uint32_t idx)
{
    if (idx > RTC_HIST_BUCKETS)
        idx = RTC_HIST_BUCKETS;
    if (idx < 16)
        return idx;
    uint32_t msb = idx / 16u + 3u;
    return (uint64_t)(16u + idx % 16u) << (msb - 4u);
}

static inline void rtc_hist_add(uint64_t *hist, uint64_t v)
{
    uint64_t *b = &hist[rtc_hist_bucket(v)];
    __atomic_store_n(b, *b + 1, __ATOMIC_RELAXED);
}

#endif
