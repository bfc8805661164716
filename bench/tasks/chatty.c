/*
 * Benchmark task "chatty" (task ABI 2): with params "mode=loud" it makes
 * LOGS log records (two typed fields each) and SPANS task spans (one
 * attribute each) per cycle and nothing else; with "mode=quiet" it makes
 * none. The two runs of the same library differ only by the recording, so
 * their difference in execution time is what recording costs a cycle.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "rtcore/task.h"

#define LOGS 10u
#define SPANS 3u

typedef struct chatty_state {
    uint64_t steps;
    uint32_t loud;
    uint32_t _pad;
} chatty_state;

static const char *const templates[] = {"record {index} of cycle {cycle_value:.0f}"};
static const char *const names[] = {"chatty.phase", "chatty.index"};

static int chatty_init(void *state, const char *params, const rtc_task_api *api)
{
    chatty_state *s = state;
    (void)api;
    if (strcmp(params, "mode=loud") == 0)
        s->loud = 1;
    else if (strcmp(params, "mode=quiet") == 0 || params[0] == '\0')
        s->loud = 0;
    else
        return -EINVAL;
    return 0;
}

static int chatty_step(void *state, const rtc_cycle_info *info, const rtc_task_api *api)
{
    chatty_state *s = state;
    s->steps++;
    if (!s->loud)
        return 0;
    rtc_arg args[2] = {rtc_int(0), rtc_float((double)info->cycle)};
    for (uint32_t i = 0; i < LOGS; i++) {
        args[0] = rtc_int(i);
        api->log(api->rt, RTC_LEVEL_INFO, 0, 2, args, 1u << 1);
    }
    for (uint32_t i = 0; i < SPANS; i++) {
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
    .n_log_templates = 1,
    .names = names,
    .n_names = 2,
    .init = chatty_init,
    .step = chatty_step,
    .output = NULL,
    .command = NULL,
};
