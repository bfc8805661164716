/*
 * Built-in reference task: multi-joint PID on a simulated second-order plant,
 * following a waypoint trajectory. Contract in rtcore/reftask.h.
 *
 * step() and command() touch only the state and the api callbacks: no
 * allocation, no system calls, no libc beyond what the compiler inlines
 * (fabs, isfinite). Only init() uses libc, to parse params.
 */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "rtcore/reftask.h"
#include "rtcore/task.h"

#define WARN_EVERY_CYCLES 1000u

static const char *const templates[] = {
    [RTC_REFTASK_LOG_TRAJ_STARTED] = "trajectory of job {job_id} started with {waypoints} waypoints",
    [RTC_REFTASK_LOG_WAYPOINT_REACHED] = "waypoint {waypoint} of job {job_id} reached",
    [RTC_REFTASK_LOG_TRAJ_DONE] = "trajectory of job {job_id} done in {steps} cycles",
    [RTC_REFTASK_LOG_TRACKING_ERROR] = "tracking error {error_rad:.4f} rad on joint {joint} exceeds limit",
};

static const char *const names[] = {
    [RTC_REFTASK_SPAN_TRACK] = "reftask.track",
    [RTC_REFTASK_ATTR_MAX_ERROR] = "max_error_rad",
};

/* ---- params (init only) ---- */

static const struct {
    const char *key;
    size_t offset;
    int positive; /* 1: must be > 0 (divisor or clamp), 0: must be >= 0 */
} dparams[] = {
    {"kp", offsetof(rtc_reftask_state, kp), 0},
    {"ki", offsetof(rtc_reftask_state, ki), 0},
    {"kd", offsetof(rtc_reftask_state, kd), 0},
    {"inertia", offsetof(rtc_reftask_state, inertia), 1},
    {"damping", offsetof(rtc_reftask_state, damping), 0},
    {"umax", offsetof(rtc_reftask_state, umax), 1},
    {"errlim", offsetof(rtc_reftask_state, errlim), 1},
};

static int key_is(const char *key, size_t n, const char *name)
{
    return strlen(name) == n && memcmp(key, name, n) == 0;
}

/* A finite decimal filling exactly v[0..n). The first-character test rejects
 * what strtod would otherwise accept: leading blanks, "inf", "nan". */
static int parse_double(const char *v, size_t n, double *out)
{
    char *end;

    if (n == 0 || !(v[0] == '+' || v[0] == '-' || v[0] == '.' || (v[0] >= '0' && v[0] <= '9')))
        return -EINVAL;
    double x = strtod(v, &end);
    if (end != v + n || !isfinite(x))
        return -EINVAL;
    *out = x;
    return 0;
}

static int apply_param(rtc_reftask_state *s, const char *key, size_t klen, const char *val,
                       size_t vlen)
{
    if (key_is(key, klen, "joints")) {
        if (vlen != 1 || val[0] < '1' || val[0] > '0' + (int)RTC_REFTASK_MAX_JOINTS)
            return -EINVAL;
        s->n_joints = (uint32_t)(val[0] - '0');
        return 0;
    }
    for (size_t i = 0; i < sizeof dparams / sizeof dparams[0]; i++) {
        double x;
        if (!key_is(key, klen, dparams[i].key))
            continue;
        if (parse_double(val, vlen, &x) < 0 || (dparams[i].positive ? !(x > 0.0) : x < 0.0))
            return -EINVAL;
        *(double *)((char *)s + dparams[i].offset) = x;
        return 0;
    }
    return -EINVAL;
}

static int parse_params(rtc_reftask_state *s, const char *p)
{
    if (p == NULL || *p == '\0')
        return 0;
    for (;;) {
        const char *key = p, *eq = NULL;
        for (; *p != ',' && *p != '\0'; p++)
            if (*p == '=' && eq == NULL)
                eq = p;
        if (eq == NULL || apply_param(s, key, (size_t)(eq - key), eq + 1,
                                      (size_t)(p - eq - 1)) < 0)
            return -EINVAL;
        if (*p == '\0')
            return 0;
        p++; /* a trailing ',' leaves an empty item, which has no '=' */
    }
}

static int ref_init(void *state, const char *params, const rtc_task_api *api)
{
    rtc_reftask_state *s = state;

    (void)api;
    *s = (rtc_reftask_state){
        .version = RTC_REFTASK_STATE_VERSION,
        .n_joints = 6,
        .traj_state = RTC_REFTASK_TRAJ_IDLE,
        .kp = 400.0,
        .ki = 20.0,
        .kd = 40.0,
        .inertia = 1.0,
        .damping = 0.5,
        .umax = 100.0,
        .errlim = 0.5,
    };
    return parse_params(s, params);
}

/* ---- RT helpers ---- */

static int state_ok(const rtc_reftask_state *s)
{
    return s->version == RTC_REFTASK_STATE_VERSION && s->n_joints >= 1 &&
           s->n_joints <= RTC_REFTASK_MAX_JOINTS && s->n_waypoints <= RTC_REFTASK_MAX_WAYPOINTS &&
           s->cursor <= s->n_waypoints;
}

static double clamp(double x, double lim)
{
    return x > lim ? lim : x < -lim ? -lim : x;
}

static void log_ints(const rtc_task_api *api, uint32_t level, uint32_t tmpl, int64_t a, int64_t b)
{
    const rtc_arg args[2] = {rtc_int(a), rtc_int(b)};
    api->log(api->rt, level, tmpl, 2, args, 0);
}

/* Copies all slots, unused joints included (they stay zero): a fixed-size
 * copy compiles inline, where a loop to n_joints becomes a memmove() call. */
static void copy_joints(double *dst, const double *src)
{
    for (uint32_t j = 0; j < RTC_REFTASK_MAX_JOINTS; j++)
        dst[j] = src[j];
}

static void plant(rtc_reftask_state *s, uint32_t j, double u, double dt)
{
    /* Semi-implicit Euler: the new velocity moves the position, which keeps
     * the oscillator stable at the coarse end of the dt range. */
    s->dq[j] += dt * (u - s->damping * s->dq[j]) / s->inertia;
    s->q[j] += dt * s->dq[j];
}

/* ---- commands ---- */

static void traj_clear(rtc_reftask_state *s)
{
    s->traj_state = RTC_REFTASK_TRAJ_IDLE;
    s->n_waypoints = 0;
    s->cursor = 0;
    s->job_time = 0.0;
    s->job_steps = 0;
    copy_joints(s->setpoint, s->q);
    for (uint32_t j = 0; j < s->n_joints; j++)
        s->prev_err[j] = 0.0; /* the error restarts at zero: no derivative kick */
}

static int traj_append(rtc_reftask_state *s, const rtc_cmd_rec *cmd)
{
    if (s->traj_state == RTC_REFTASK_TRAJ_RUNNING)
        return -EBUSY;
    if (cmd->nargs != 1 + s->n_joints)
        return -EINVAL;
    double t = cmd->args[0];
    double prev_t = s->n_waypoints ? s->wp[s->n_waypoints - 1].t : 0.0;
    if (!isfinite(t) || !(t > prev_t))
        return -EINVAL;
    for (uint32_t j = 0; j < s->n_joints; j++)
        if (!isfinite(cmd->args[1 + j]))
            return -EINVAL;
    if (s->n_waypoints == RTC_REFTASK_MAX_WAYPOINTS)
        return -ENOSPC;

    rtc_reftask_waypoint *w = &s->wp[s->n_waypoints++];
    *w = (rtc_reftask_waypoint){.t = t};
    for (uint32_t j = 0; j < s->n_joints; j++)
        w->q[j] = cmd->args[1 + j];
    s->traj_state = RTC_REFTASK_TRAJ_LOADING;
    return 0;
}

static int traj_start(rtc_reftask_state *s, const rtc_cmd_rec *cmd, const rtc_task_api *api)
{
    if (s->traj_state == RTC_REFTASK_TRAJ_RUNNING)
        return -EBUSY;
    if (s->n_waypoints == 0)
        return -EINVAL;
    copy_joints(s->start_q, s->q);
    s->job_id = cmd->job_id;
    s->job_time = 0.0;
    s->job_steps = 0;
    s->cursor = 0;
    s->traj_state = RTC_REFTASK_TRAJ_RUNNING;
    api->event(api->rt, RTC_REFTASK_EV_TRAJ_STARTED, (int64_t)s->job_id, s->n_waypoints);
    log_ints(api, RTC_LEVEL_INFO, RTC_REFTASK_LOG_TRAJ_STARTED, (int64_t)s->job_id, s->n_waypoints);
    return 0;
}

static int set_gains(rtc_reftask_state *s, const rtc_cmd_rec *cmd)
{
    if (cmd->nargs != 3)
        return -EINVAL;
    for (int i = 0; i < 3; i++)
        if (!isfinite(cmd->args[i]) || cmd->args[i] < 0.0)
            return -EINVAL;
    /* integ already holds ki*integral, so a new ki does not bump the output. */
    s->kp = cmd->args[0];
    s->ki = cmd->args[1];
    s->kd = cmd->args[2];
    return 0;
}

static int ref_command(void *state, const rtc_cmd_rec *cmd, const rtc_task_api *api)
{
    rtc_reftask_state *s = state;

    if (!state_ok(s))
        return -EPROTO;
    switch (cmd->kind) {
    case RTC_REFTASK_CMD_TRAJ_CLEAR:
        traj_clear(s);
        return 0;
    case RTC_REFTASK_CMD_TRAJ_APPEND:
        return traj_append(s, cmd);
    case RTC_REFTASK_CMD_TRAJ_START:
        return traj_start(s, cmd, api);
    case RTC_REFTASK_CMD_SET_GAINS:
        return set_gains(s, cmd);
    default:
        return -ENOTSUP;
    }
}

/* ---- step ---- */

static void traj_advance(rtc_reftask_state *s, const rtc_cycle_info *info,
                         const rtc_task_api *api)
{
    s->job_time += info->dt;
    s->job_steps++;
    /* A coarse dt can pass several waypoints in one cycle; report each. */
    while (s->cursor < s->n_waypoints && s->job_time >= s->wp[s->cursor].t) {
        if (info->actuate) {
            api->event(api->rt, RTC_REFTASK_EV_WAYPOINT_REACHED, (int64_t)s->job_id, s->cursor);
            log_ints(api, RTC_LEVEL_INFO, RTC_REFTASK_LOG_WAYPOINT_REACHED, s->cursor,
                     (int64_t)s->job_id);
        }
        s->cursor++;
    }

    if (s->cursor == s->n_waypoints) {
        copy_joints(s->setpoint, s->wp[s->n_waypoints - 1].q);
        s->traj_state = RTC_REFTASK_TRAJ_DONE;
        if (info->actuate) {
            api->event(api->rt, RTC_REFTASK_EV_TRAJ_DONE, (int64_t)s->job_id,
                       (int64_t)s->job_steps);
            log_ints(api, RTC_LEVEL_INFO, RTC_REFTASK_LOG_TRAJ_DONE, (int64_t)s->job_id,
                     (int64_t)s->job_steps);
        }
        return;
    }

    const rtc_reftask_waypoint *to = &s->wp[s->cursor];
    const double *from = s->cursor ? s->wp[s->cursor - 1].q : s->start_q;
    double t0 = s->cursor ? s->wp[s->cursor - 1].t : 0.0;
    double a = (s->job_time - t0) / (to->t - t0); /* in [0, 1): t0 <= job_time < to->t */
    for (uint32_t j = 0; j < s->n_joints; j++)
        s->setpoint[j] = from[j] + a * (to->q[j] - from[j]);
}

/* PID: the torques for output(); the plant is not touched here. */
static void track(rtc_reftask_state *s, const rtc_cycle_info *info, const rtc_task_api *api)
{
    double dt = info->dt, worst = 0.0;
    uint32_t worst_j = 0;
    int span = api->span_begin(api->rt, RTC_REFTASK_SPAN_TRACK);

    for (uint32_t j = 0; j < s->n_joints; j++) {
        double e = s->setpoint[j] - s->q[j];
        double u = s->kp * e + s->integ[j] + s->kd * (e - s->prev_err[j]) / dt;
        s->prev_err[j] = e;
        /* Anti-windup: integrate only while the output is unsaturated or the
         * error pulls it back, and never beyond what umax can deliver. */
        if (fabs(u) < s->umax || (u > 0.0) != (e > 0.0))
            s->integ[j] = clamp(s->integ[j] + s->ki * e * dt, s->umax);
        s->u[j] = clamp(u, s->umax);
        if (fabs(e) > fabs(worst)) {
            worst = e;
            worst_j = j;
        }
    }
    api->span_attr(api->rt, span, RTC_REFTASK_ATTR_MAX_ERROR, rtc_float(fabs(worst)), 1);
    api->span_end(api->rt, span, RTC_STATUS_OK, -1);

    if (info->actuate && fabs(worst) > s->errlim && info->cycle >= s->next_warn_cycle) {
        const rtc_arg args[2] = {rtc_float(worst), rtc_int(worst_j)};
        api->log(api->rt, RTC_LEVEL_WARN, RTC_REFTASK_LOG_TRACKING_ERROR, 2, args, 1u << 0);
        /* for the control plane to react to (it carries this cycle's trace) */
        api->event(api->rt, RTC_REFTASK_EV_TRACKING_ERROR, worst_j, (int64_t)(worst * 1e6));
        s->next_warn_cycle = info->cycle + WARN_EVERY_CYCLES;
    }
}

/* SAFE: stop the joints wherever they are; position is not tracked. */
static void brake(rtc_reftask_state *s)
{
    for (uint32_t j = 0; j < s->n_joints; j++) {
        /* Leave PID state so that leaving SAFE resumes with no integral
         * windup and no derivative kick. */
        s->integ[j] = 0.0;
        s->prev_err[j] = s->setpoint[j] - s->q[j];
        s->u[j] = clamp(-s->kd * s->dq[j], s->umax);
    }
}

static int ref_step(void *state, const rtc_cycle_info *info, const rtc_task_api *api)
{
    rtc_reftask_state *s = state;

    if (!state_ok(s))
        return -EPROTO;
    if (!(info->dt > 0.0) || !isfinite(info->dt))
        return -EINVAL;

    s->steps++;
    switch (info->mode) {
    case RTC_MODE_RUN:
        if (s->traj_state == RTC_REFTASK_TRAJ_RUNNING)
            traj_advance(s, info, api);
        track(s, info, api);
        break;
    case RTC_MODE_HOLD:
        track(s, info, api);
        break;
    default: /* SAFE, and anything unexpected */
        brake(s);
        break;
    }
    return 0;
}

/* The actuation: the computed torques drive the (simulated) joints. */
static int ref_output(void *state, const rtc_cycle_info *info, const rtc_task_api *api)
{
    rtc_reftask_state *s = state;

    (void)api;
    if (!state_ok(s))
        return -EPROTO;
    for (uint32_t j = 0; j < s->n_joints; j++)
        plant(s, j, s->u[j], info->dt);
    s->outputs++;
    return 0;
}

const rtc_task rtc_task_v2 = {
    .abi_version = RTC_TASK_ABI_VERSION,
    .state_size = sizeof(rtc_reftask_state),
    .name = RTC_REFTASK_NAME,
    .log_templates = templates,
    .n_log_templates = sizeof templates / sizeof templates[0],
    .names = names,
    .n_names = sizeof names / sizeof names[0],
    .init = ref_init,
    .step = ref_step,
    .output = ref_output,
    .command = ref_command,
};
