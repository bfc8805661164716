/*
 * Small system shims for the RT process: a stop flag set from a signal
 * handler, acquire/release accessors for shared fields, a spin-wait hint,
 * stack pre-faulting and a cycle counter for benchmarks.
 */
#ifndef RTCORE_RTSYS_H
#define RTCORE_RTSYS_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "rtcore/cpu.h"

/* The loop polls this once per cycle; the handler does nothing else. */
static volatile sig_atomic_t rtc_stop_signal = 0;

static void rtc_on_stop_signal(int sig) { rtc_stop_signal = sig; }

static int rtc_install_stop_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = rtc_on_stop_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
        return -1;
    return 0;
}

static inline uint64_t rtc_load_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint32_t rtc_load_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline int64_t rtc_load_i64(const int64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void rtc_store_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void rtc_store_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void rtc_store_i64(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

/* Touch a stack region now so its page faults do not happen inside the loop. */
static __attribute__((noinline)) void rtc_prefault_stack(void)
{
    volatile unsigned char buf[256 * 1024];
    for (size_t i = 0; i < sizeof(buf); i += 4096)
        buf[i] = 0;
}

#if defined(__x86_64__)
#include <x86intrin.h>
/* rdtscp waits for earlier instructions, so a timed region is not cut short. */
static inline uint64_t rtc_tsc(void)
{
    unsigned int aux;
    return __rdtscp(&aux);
}
#else
static inline uint64_t rtc_tsc(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}
#endif

#endif
