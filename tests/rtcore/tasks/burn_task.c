/*
 * Test task "burn": spends CPU time on chosen cycles to provoke deadline
 * misses, and records what the loop told it so tests can read it back from a
 * checkpoint.
 *
 * params "burn=C1;C2;...,burn_us=N,fail=F", any subset:
 *   burn     cycles (info->cycle, at most 64) on which step() spins for
 *            burn_us microseconds (default 3000);
 *   fail     from cycle F on, step() fails with -EIO every cycle (0: never).
 * Spinning uses clock_gettime(CLOCK_MONOTONIC), which the vDSO serves, so the
 * loop sees pure CPU time and no system call. Burns happen in shadow cycles
 * too: the cost being tested is the loop's, not the outputs'.
 *
 * Command BURN_CMD_BURN_NEXT (RTC_CMD_TASK): burn on the next step.
 * Every step is in a span "burn.step" with attribute "cycle".
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "rtcore/task.h"

#define BURN_MAX 64u
#define SKIPS_MAX 16u
#define FNV_OFFSET 14695981039346656037ull
#define FNV_PRIME 1099511628211ull
#define BURN_CMD_BURN_NEXT RTC_CMD_TASK

/* A step that followed a missed deadline: what the loop told it. */
typedef struct burn_skip {
    uint64_t cycle;
    uint64_t skipped;          /* info->skipped */
    double dt;                 /* info->dt */
} burn_skip;

typedef struct burn_state {
    uint64_t steps;
    uint64_t checksum;         /* FNV-1a over the cycle numbers stepped: a restore is checkable */
    uint64_t outputs;          /* output stages run */
    uint64_t fails;            /* steps that returned an error */
    uint64_t fail_from;        /* 0: never fail */
    uint64_t dt_wrong;         /* steps with skipped == 0 whose dt was not one period */
    uint64_t burn_next;        /* a command asked to burn on the next step */
    uint32_t burn_us;
    uint32_t n_burn;
    uint32_t n_skips;
    uint32_t _pad0;
    burn_skip skips[SKIPS_MAX];
    uint64_t burn[BURN_MAX];   /* cycles to burn on */
} burn_state;

enum { TPL_BURNING = 0 };
enum { NAME_STEP = 0, NAME_CYCLE = 1 };

static const char *const templates[] = {
    [TPL_BURNING] = "burning {burn_us} us on cycle {burn_cycle}",
};

static const char *const names[] = {
    [NAME_STEP] = "burn.step",
    [NAME_CYCLE] = "cycle",
};

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
    if (klen == 4 && memcmp(key, "fail", 4) == 0)
        return parse_u64(val, vlen, &s->fail_from);
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

static void burn(burn_state *s, const rtc_cycle_info *info, const rtc_task_api *api)
{
    const rtc_arg args[2] = {rtc_int(s->burn_us), rtc_int((int64_t)info->cycle)};
    api->log(api->rt, RTC_LEVEL_INFO, TPL_BURNING, 2, args, 0);
    int64_t end = mono_ns() + (int64_t)s->burn_us * 1000;
    while (mono_ns() < end) {
    }
}

static void record_info(burn_state *s, const rtc_cycle_info *info)
{
    if (info->skipped != 0) {
        if (s->n_skips < SKIPS_MAX)
            s->skips[s->n_skips++] =
                (burn_skip){.cycle = info->cycle, .skipped = info->skipped, .dt = info->dt};
    } else if (info->dt != (double)info->period_ns / 1e9) {
        s->dt_wrong++;
    }
}

static int burn_step(void *state, const rtc_cycle_info *info, const rtc_task_api *api)
{
    burn_state *s = state;
    int span = api->span_begin(api->rt, NAME_STEP);

    api->span_attr(api->rt, span, NAME_CYCLE, rtc_int((int64_t)info->cycle), 0);
    s->steps++;
    s->checksum = (s->checksum ^ info->cycle) * FNV_PRIME;
    record_info(s, info);
    if (s->burn_next) {
        s->burn_next = 0;
        burn(s, info, api);
    } else {
        for (uint32_t i = 0; i < s->n_burn && i < BURN_MAX; i++) {
            if (s->burn[i] == info->cycle) {
                burn(s, info, api);
                break;
            }
        }
    }
    if (s->fail_from != 0 && info->cycle >= s->fail_from) {
        s->fails++;
        api->span_end(api->rt, span, RTC_STATUS_ERROR, -1);
        return -EIO;
    }
    api->span_end(api->rt, span, RTC_STATUS_OK, -1);
    return 0;
}

static int burn_output(void *state, const rtc_cycle_info *info, const rtc_task_api *api)
{
    burn_state *s = state;

    (void)info;
    (void)api;
    s->outputs++;
    return 0;
}

static int burn_command(void *state, const rtc_cmd_rec *cmd, const rtc_task_api *api)
{
    burn_state *s = state;

    (void)api;
    if (cmd->kind != BURN_CMD_BURN_NEXT)
        return -ENOTSUP;
    s->burn_next = 1;
    return 0;
}

const rtc_task rtc_task_v2 = {
    .abi_version = RTC_TASK_ABI_VERSION,
    .state_size = sizeof(burn_state),
    .name = "burn",
    .log_templates = templates,
    .n_log_templates = sizeof templates / sizeof templates[0],
    .names = names,
    .n_names = sizeof names / sizeof names[0],
    .init = burn_init,
    .step = burn_step,
    .output = burn_output,
    .command = burn_command,
};
