/*
 * rtcore control task ABI, version 2.
 *
 * A controller is a shared library exporting one symbol, RTC_TASK_SYMBOL, of
 * type `const rtc_task`. The RT process dlopen()s it by path before the loop
 * starts, checks abi_version, allocates state_size bytes of locked RT memory
 * for it and calls init() once. In the loop it calls command() for each
 * queued task command, step() once per cycle and, only while this node
 * drives the outputs, output() right after step(). state is everything the
 * task needs to resume: it is copied verbatim into checkpoints, restored
 * after a crash and replaced by a primary's replicated state on a standby,
 * so it must hold no pointers.
 *
 * Computing and actuating are separate: step() computes (it runs on a
 * standby too, on the newest replicated state: shadow mode); output() is
 * the only place that drives actuators. A task with no outputs leaves it
 * NULL.
 *
 * step(), output() and command() run in the RT loop: no allocation, no
 * locks, no system calls. They report through the api callbacks, which never
 * block: a full ring drops the record and counts it.
 *
 * Log templates use named fields in Python str.format syntax, one argument
 * per field in order: "woke {late_us:.1f} us late, {skipped} periods skipped".
 * A field name appears once; the agent turns a record into the rendered
 * message plus a dict of typed fields.
 */
#ifndef RTCORE_TASK_H
#define RTCORE_TASK_H

#include <stdint.h>

#include "rtcore/layout.h"

#define RTC_TASK_ABI_VERSION 2u
#define RTC_TASK_SYMBOL "rtc_task_v2"

/* What the loop tells the task each cycle. */
typedef struct rtc_cycle_info {
    uint64_t cycle;            /* cycle number, continues across restarts and failovers */
    int64_t now_ns;            /* CLOCK_MONOTONIC at wake-up */
    int64_t period_ns;
    double dt;                 /* seconds since the previous step: (1 + skipped) periods */
    uint32_t skipped;          /* periods skipped since the previous step (a missed deadline) */
    uint32_t mode;             /* enum rtc_mode in force: RUN, HOLD or SAFE */
    uint32_t actuate;          /* 1: output() follows this step; 0: shadow (standby, lease lost) */
    uint32_t _pad0;
} rtc_cycle_info;

/* Services the RT loop offers a task. Indices refer to the task's own tables. */
typedef struct rtc_task_api {
    void *rt;
    /* template: index into log_templates; args[i] is a double where bit i of
     * float_mask is set, else an int64. 0, or -1 if filtered or dropped. */
    int (*log)(void *rt, uint32_t level, uint32_t template_index, uint32_t nargs,
               const rtc_arg *args, uint32_t float_mask);
    /* kind >= RTC_EV_TASK. 0, or -1 if dropped. */
    int (*event)(void *rt, uint32_t kind, int64_t a, int64_t b);
    /* A named phase inside step()/output(): name is an index into names.
     * Returns a handle for span_attr/span_end, or -1 (no room this cycle). */
    int (*span_begin)(void *rt, uint32_t name_index);
    /* An attribute of an open span: key is an index into names. */
    int (*span_attr)(void *rt, int handle, uint32_t key_index, rtc_arg value, int is_float);
    /* status: enum rtc_span_status; message_index: index into names, or -1. */
    int (*span_end)(void *rt, int handle, uint32_t status, int message_index);
} rtc_task_api;

typedef struct rtc_task {
    uint32_t abi_version;      /* RTC_TASK_ABI_VERSION */
    uint32_t state_size;       /* bytes, at most RTC_CKPT_MAX */
    const char *name;          /* short, printable; identifies the state format */
    const char *const *log_templates; /* named-field templates, see above */
    uint32_t n_log_templates;
    uint32_t n_names;
    const char *const *names;  /* span names, attribute keys, status messages */
    /* Fresh start (no checkpoint). params: "key=value,key=value" or "". 0 or -errno. */
    int (*init)(void *state, const char *params, const rtc_task_api *api);
    /* Compute one cycle. 0, or a negative task-defined fault code (counted, logged). */
    int (*step)(void *state, const rtc_cycle_info *info, const rtc_task_api *api);
    /* Drive the outputs from what step() computed; only while actuating. May be NULL. */
    int (*output)(void *state, const rtc_cycle_info *info, const rtc_task_api *api);
    /* One command of kind >= RTC_CMD_TASK. 0 or -errno; may be NULL. */
    int (*command)(void *state, const rtc_cmd_rec *cmd, const rtc_task_api *api);
} rtc_task;

/* Typed arguments: rtc_arg args[2] = {rtc_int(job_id), rtc_float(err)};
 * api->log(api->rt, RTC_LEVEL_INFO, TPL, 2, args, 1u << 1); */
static inline rtc_arg rtc_int(int64_t v)
{
    rtc_arg a;
    a.i = v;
    return a;
}

static inline rtc_arg rtc_float(double v)
{
    rtc_arg a;
    a.f = v;
    return a;
}

#endif
