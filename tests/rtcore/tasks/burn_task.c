/*
 * Test task "burn": spends CPU time on chosen cycles to provoke deadline misses.
 *
 * params "burn=C1;C2;...,burn_us=N": on each listed cycle (info->cycle, at
 * most 64 of them) step() spins for N microseconds (default 3000). It spins
 * on clock_gettime(CLOCK_MONOTONIC), which the vDSO serves, so the loop sees
 * pure CPU time and no system call. Burns happen in shadow cycles too: the
 * cost being tested is the loop's, not the outputs'.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "rtcore/task.h"

#define BURN_MAX 64u
#define FNV_OFFSET 14695981039346656037ull
#define FNV_PRIME 1099511628211ull

typedef struct burn_state {
    uint64_t steps;
    uint64_t checksum;         /* FNV-1a over the cycle numbers stepped: a restore is checkable */
    uint32_t burn_us;
    uint32_t n_burn;
    uint64_t burn[BURN_MAX];   /* cycles to burn on */
} burn_state;

static const char *const templates[] = {"burning {:.0f} us on cycle {:.0f}"};

/* Decimal digits filling exactly v[0..n), no overflow. */
static int parse_u64(const char *v, size_t n, uint64_t *out)
{
    uint64_t x = 0;

    if (n == 0)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9' || x > (UINT64_MAX - (uint64_t)(v[i] - '0')) / 10)
            return -EINVAL;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return 0;
}

/* "C1;C2;..."; empty means no burns. */
static int parse_list(burn_state *s, const char *v, size_t n)
{
    const char *end = v + n;

    s->n_burn = 0;
    if (n == 0)
        return 0;
    for (;;) {
        const char *item = v;
        while (v < end && *v != ';')
            v++;
        if (s->n_burn == BURN_MAX || parse_u64(item, (size_t)(v - item), &s->burn[s->n_burn]) < 0)
            return -EINVAL;
        s->n_burn++;
        if (v == end)
            return 0;
        v++;
    }
}

static int apply_param(burn_state *s, const char *key, size_t klen, const char *val, size_t vlen)
{
    uint64_t us;

    if (klen == 4 && memcmp(key, "burn", 4) == 0)
        return parse_list(s, val, vlen);
    if (klen == 7 && memcmp(key, "burn_us", 7) == 0) {
        if (parse_u64(val, vlen, &us) < 0 || us == 0 || us > 1000000)
            return -EINVAL;
        s->burn_us = (uint32_t)us;
        return 0;
    }
    return -EINVAL;
}

static int burn_init(void *state, const char *params, const rtc_task_api *api)
{
    burn_state *s = state;
    const char *p = params;

    (void)api;
    *s = (burn_state){.checksum = FNV_OFFSET, .burn_us = 3000};
    if (p == NULL || *p == '\0')
        return 0;
    for (;;) {
        const char *key = p, *eq = NULL;
        for (; *p != ',' && *p != '\0'; p++)
            if (*p == '=' && eq == NULL)
                eq = p;
        if (eq == NULL ||
            apply_param(s, key, (size_t)(eq - key), eq + 1, (size_t)(p - eq - 1)) < 0)
            return -EINVAL;
        if (*p == '\0')
            return 0;
        p++;
    }
}

static int64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int burn_step(void *state, const rtc_cycle_info *info, const rtc_task_api *api)
{
    burn_state *s = state;

    s->steps++;
    s->checksum = (s->checksum ^ info->cycle) * FNV_PRIME;
    for (uint32_t i = 0; i < s->n_burn && i < BURN_MAX; i++) {
        if (s->burn[i] != info->cycle)
            continue;
        const double args[2] = {s->burn_us, (double)info->cycle};
        api->log(api->rt, RTC_LEVEL_INFO, 0, 2, args);
        int64_t end = mono_ns() + (int64_t)s->burn_us * 1000;
        while (mono_ns() < end) {
        }
        break;
    }
    return 0;
}

const rtc_task rtc_task_v1 = {
    .abi_version = RTC_TASK_ABI_VERSION,
    .state_size = sizeof(burn_state),
    .name = "burn",
    .log_templates = templates,
    .n_log_templates = 1,
    .init = burn_init,
    .step = burn_step,
    .command = NULL,
};
