/*
 * Benchmark task "chatty": logs `logs` records (two numeric args each) per
 * cycle and does nothing else, so the cost of recording is what differs
 * between a run that records them and one whose log level filters them out.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rtcore/task.h"

typedef struct chatty_state {
    uint64_t steps;
    uint32_t logs;
    uint32_t _pad;
} chatty_state;

static const char *const templates[] = {"record {:.0f} of cycle {:.0f}"};

static int chatty_init(void *state, const char *params, const rtc_task_api *api)
{
    chatty_state *s = state;
    (void)api;
    s->logs = 10;
    if (params[0] != '\0') {
        if (strncmp(params, "logs=", 5) != 0)
            return -EINVAL;
        char *end;
        long n = strtol(params + 5, &end, 10);
        if (*end != '\0' || n < 0 || n > 1000)
            return -EINVAL;
        s->logs = (uint32_t)n;
    }
    return 0;
}

static int chatty_step(void *state, const rtc_cycle_info *info, const rtc_task_api *api)
{
    chatty_state *s = state;
    double args[2] = {0, (double)info->cycle};
    for (uint32_t i = 0; i < s->logs; i++) {
        args[0] = i;
        api->log(api->rt, RTC_LEVEL_INFO, 0, 2, args);
    }
    s->steps++;
    return 0;
}

const rtc_task rtc_task_v1 = {
    .abi_version = RTC_TASK_ABI_VERSION,
    .state_size = sizeof(chatty_state),
    .name = "chatty",
    .log_templates = templates,
    .n_log_templates = 1,
    .init = chatty_init,
    .step = chatty_step,
    .command = NULL,
};
