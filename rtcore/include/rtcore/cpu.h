/* A spin-wait hint for busy loops (hybrid wake, seqlock retries, benchmarks). */
#ifndef RTCORE_CPU_H
#define RTCORE_CPU_H

static inline void rtc_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

#endif
