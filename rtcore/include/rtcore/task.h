/*
 * rtcore control task ABI.
 *
 * A controller is a shared library exporting one symbol, RTC_TASK_SYMBOL, of
 * type `const rtc_task`. The RT process dlopen()s it by path before the loop
 * starts, checks abi_version, allocates state_size bytes of locked RT memory
 * for it and calls init() once. In the loop it calls command() for each
 * queued task command and step() once per cycle. state is everything the
 * task needs to resume: it is copied verbatim into checkpoints and restored
 * after a crash, so it must hold no pointers.
 *
 * step() and command() run in the RT loop: no allocation, no locks, no
 * system calls. They report through the api callbacks, which never block.
 */
#ifndef RTCORE_TASK_H
#define RTCORE_TASK_H

#include <stdint.h>

#include "rtcore/layout.h"

#define RTC_TASK_ABI_VERSION 1u
#define RTC_TASK_SYMBOL "rtc_task_v1"

/* What the loop tells the task each cycle. */
typedef struct rtc_cycle_info {
    uint64_t cycle;            /* cycle number, continues across restarts */
    int64_t now_ns;            /* CLOCK_MONOTONIC at wake-up */
    int64_t period_ns;
    double dt;                 /* period in seconds */
    uint32_t mode;             /* enum rtc_mode in force: RUN, HOLD or SAFE */
    uint32_t actuate;          /* 1: drive outputs; 0: shadow (standby or lease lost) */
} rtc_cycle_info;

/* Services the RT loop offers a task. All return 0, or -1 if the record was dropped. */
typedef struct rtc_task_api {
    void *rt;
    /* template: index into the task's log_templates; args are doubles */
    int (*log)(void *rt, uint32_t level, uint32_t template_index,
               uint32_t nargs, const double *args);
    /* kind >= RTC_EV_TASK */
    int (*event)(void *rt, uint32_t kind, int64_t a, int64_t b);
} rtc_task_api;

typedef struct rtc_task {
    uint32_t abi_version;      /* RTC_TASK_ABI_VERSION */
    uint32_t state_size;       /* bytes, at most RTC_CKPT_MAX */
    const char *name;          /* short, printable; identifies the state format */
    const char *const *log_templates; /* Python str.format templates, "{}" per arg */
    uint32_t n_log_templates;
    /* Fresh start (no checkpoint). params: "key=value,key=value" or "". 0 or -errno. */
    int (*init)(void *state, const char *params, const rtc_task_api *api);
    /* One cycle. 0, or a negative task-defined fault code (counted, logged). */
    int (*step)(void *state, const rtc_cycle_info *info, const rtc_task_api *api);
    /* One command of kind >= RTC_CMD_TASK. 0 or -errno; may be NULL. */
    int (*command)(void *state, const rtc_cmd_rec *cmd, const rtc_task_api *api);
} rtc_task;

#endif
