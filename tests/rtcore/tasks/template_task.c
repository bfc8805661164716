/*
 * Test task "tpl": a valid task whose only log template is TEMPLATE, given
 * at compile time (-DTEMPLATE='"..."'), so start-up's template checks can be
 * fed one bad template at a time.
 */
#include <stdint.h>

#include "rtcore/task.h"

#ifndef TEMPLATE
#error "compile with -DTEMPLATE='\"...\"'"
#endif

static const char *const templates[] = {TEMPLATE};

static int tpl_init(void *state, const char *params, const rtc_task_api *api)
{
    (void)params;
    (void)api;
    *(uint64_t *)state = 0;
    return 0;
}

static int tpl_step(void *state, const rtc_cycle_info *info, const rtc_task_api *api)
{
    (void)info;
    (void)api;
    ++*(uint64_t *)state;
    return 0;
}

const rtc_task rtc_task_v2 = {
    .abi_version = RTC_TASK_ABI_VERSION,
    .state_size = sizeof(uint64_t),
    .name = "tpl",
    .log_templates = templates,
    .n_log_templates = 1,
    .init = tpl_init,
    .step = tpl_step,
};
