/*
 * Test task "bad": a valid task in every way but its ABI version, which no
 * loader accepts. The loader must refuse it before calling init().
 */
#include <stdint.h>

#include "rtcore/task.h"

static int bad_init(void *state, const char *params, const rtc_task_api *api)
{
    (void)params;
    (void)api;
    *(uint64_t *)state = 0;
    return 0;
}

static int bad_step(void *state, const rtc_cycle_info *info, const rtc_task_api *api)
{
    (void)info;
    (void)api;
    ++*(uint64_t *)state;
    return 0;
}

const rtc_task rtc_task_v2 = {
    .abi_version = 999,
    .state_size = sizeof(uint64_t),
    .name = "bad",
    .init = bad_init,
    .step = bad_step,
};
