/*
 * Benchmark task "chatty" (task ABI 2): with params "mode=loud" it makes
 * LOGS log records (two typed fields each) and SPANS task spans (one
 * attribute each) per cycle and nothing else; with "mode=quiet" it makes
 * none. The two runs of the same library differ only by the recording, so
 * their difference in execution time is what recording costs a cycle.
 * "mode=loud,logs=N,spans=M,level=L,warn_every=K" sets the counts (N <=
 * 1000), the records' level (10 DEBUG .. 50 CRITICAL) and adds one WARN
 * record on every K-th cycle: the log pipeline's benchmarks and tests use it
 * as a source of a chosen rate and mix.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rtcore/task.h"

#define LOGS 10u
#define SPANS 3u

typedef struct chatty_state {
    uint64_t steps;
    uint32_t loud;
    uint32_t logs;
    uint32_t spans;
    uint32_t level;
    uint32_t warn_every;
    uint32_t _pad;
} chatty_state;

static const char *const templates[] = {
    "record {index} of cycle {cycle_value:.0f}",
    "warning of cycle {cycle}",
};
static const char *const names[] = {"chatty.phase", "chatty.index"};

/* "key=value" at the start of p: the value, or -1 when p is not that key */
static long param(const char *p, const char *key)
{
    size_t n = strlen(key);
    if (strncmp(p, key, n) != 0 || p[n] != '=')
        return -1;
    char *end;
    long v = strtol(p + n + 1, &end, 10);
    return (end == p + n + 1 || (*end != ',' && *end != '\0')) ? -2 : v;
}

static int chatty_init(void *state, const char *params, const rtc_task_api *api)
{
    chatty_state *s = state;
    (void)api;
    s->logs = LOGS;
    s->spans = SPANS;
    s->level = RTC_LEVEL_INFO;
    if (strncmp(params, "mode=loud", 9) == 0 && (params[9] == '\0' || params[9] == ','))
        s->loud = 1;
    else if (strcmp(params, "mode=quiet") == 0 || params[0] == '\0')
        return 0;
    else
        return -EINVAL;
    for (const char *p = strchr(params, ','); p != NULL; p = strchr(p, ',')) {
        p++;
        long v;
        if ((v = param(p, "logs")) >= 0 && v <= 1000)
            s->logs = (uint32_t)v;
        else if ((v = param(p, "spans")) >= 0 && v <= 100)
            s->spans = (uint32_t)v;
        else if ((v = param(p, "level")) >= RTC_LEVEL_DEBUG && v <= RTC_LEVEL_CRITICAL)
            s->level = (uint32_t)v;
        else if ((v = param(p, "warn_every")) >= 1)
            s->warn_every = (uint32_t)v;
        else
            return -EINVAL;
    }
    return 0;
}

static int chatty_step(void *state, const rtc_cycle_info *info, const rtc_task_api *api)
{
    chatty_state *s = state;
    s->steps++;
    if (!s->loud)
        return 0;
    rtc_arg args[2] = {rtc_int(0), rtc_float((double)info->cycle)};
    for (uint32_t i = 0; i < s->logs; i++) {
        args[0] = rtc_int(i);
        api->log(api->rt, s->level, 0, 2, args, 1u << 1);
    }
    if (s->warn_every && info->cycle % s->warn_every == 0) {
        rtc_arg cycle = rtc_int((int64_t)info->cycle);
        api->log(api->rt, RTC_LEVEL_WARN, 1, 1, &cycle, 0);
    }
    for (uint32_t i = 0; i < s->spans; i++) {
        int h = api->span_begin(api->rt, 0);
        api->span_attr(api->rt, h, 1, rtc_int(i), 0);
        api->span_end(api->rt, h, RTC_STATUS_OK, -1);
    }
    return 0;
}

const rtc_task rtc_task_v2 = {
    .abi_version = RTC_TASK_ABI_VERSION,
    .state_size = sizeof(chatty_state),
    .name = "chatty",
    .log_templates = templates,
    .n_log_templates = 2,
    .names = names,
    .n_names = 2,
    .init = chatty_init,
    .step = chatty_step,
    .output = NULL,
    .command = NULL,
};
