/*
 * CRC-32C (Castagnoli). Uses the SSE4.2 instruction when the CPU has it —
 * checkpoints are checksummed inside the RT cycle, so speed matters — and a
 * table otherwise. Both give the same value.
 */
#ifndef RTCORE_CRC32C_H
#define RTCORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t rtc_crc32c(uint32_t crc, const void *data, size_t len);
/* Resolve the implementation once, before the loop (cpuid is not free). */
void rtc_crc32c_init(void);

#endif
