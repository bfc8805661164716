/*
 * Built-in reference task "reftask": a PID position controller per joint
 * driving a simulated plant q'' = (u - damping*q') / inertia along a waypoint
 * trajectory. This header is its public contract: command and event kinds,
 * log template indices and the state struct that checkpoints hold, with the
 * numeric values spelled out so Python and tests can mirror them.
 *
 * params (init): "joints=N,kp=..,ki=..,kd=..,inertia=..,damping=..,umax=..,errlim=.."
 * in any order, any subset; unknown keys or bad values give -EINVAL.
 *   joints  1..8, default 6          inertia  > 0,  default 1
 *   kp      >= 0, default 400        damping  >= 0, default 0.5
 *   ki      >= 0, default 20         umax     > 0,  default 100 (torque clamp)
 *   kd      >= 0, default 40         errlim   > 0,  default 0.5 rad (tracking warning)
 *
 * step(), output() and command() return -EPROTO if the state is not this build's format
 * (version, joint or waypoint count out of range); step() returns -EINVAL if
 * info->dt is not a positive number.
 */
#ifndef RTCORE_REFTASK_H
#define RTCORE_REFTASK_H

#include <stdint.h>

#include "rtcore/layout.h"

#define RTC_REFTASK_NAME "reftask"
#define RTC_REFTASK_STATE_VERSION 2u /* bump on any change to rtc_reftask_state */
#define RTC_REFTASK_MAX_JOINTS 8u
#define RTC_REFTASK_MAX_WAYPOINTS 64u

/*
 * Commands, 0 or -errno:
 *   TRAJ_CLEAR   empty the trajectory, go IDLE and hold the current position
 *                (aborts a running job).
 *   TRAJ_APPEND  args = {t, q[0..n_joints)}, nargs == 1 + n_joints; t in
 *                seconds from job start, finite and > the previous waypoint's
 *                t (> 0 for the first); targets finite. -EINVAL if not,
 *                -EBUSY while RUNNING, -ENOSPC when full. Goes LOADING; after
 *                DONE it extends the finished list, so TRAJ_CLEAR first to
 *                load a new one.
 *   TRAJ_START   cmd->job_id names the job; needs >= 1 waypoint (-EINVAL),
 *                -EBUSY while RUNNING. Starts from the current position.
 *   SET_GAINS    args = {kp, ki, kd}, nargs == 3, each finite and >= 0.
 * Other kinds: -ENOTSUP.
 */
enum rtc_reftask_cmd {
    RTC_REFTASK_CMD_TRAJ_CLEAR = RTC_CMD_TASK + 0,  /* 100 */
    RTC_REFTASK_CMD_TRAJ_APPEND = RTC_CMD_TASK + 1, /* 101 */
    RTC_REFTASK_CMD_TRAJ_START = RTC_CMD_TASK + 2,  /* 102 */
    RTC_REFTASK_CMD_SET_GAINS = RTC_CMD_TASK + 3,   /* 103 */
};

enum rtc_reftask_event {
    RTC_REFTASK_EV_TRAJ_STARTED = RTC_EV_TASK + 0,     /* 100: a = job_id, b = n_waypoints */
    RTC_REFTASK_EV_WAYPOINT_REACHED = RTC_EV_TASK + 1, /* 101: a = job_id, b = waypoint index */
    RTC_REFTASK_EV_TRAJ_DONE = RTC_EV_TASK + 2,        /* 102: a = job_id, b = job_steps */
    RTC_REFTASK_EV_TRACKING_ERROR = RTC_EV_TASK + 3,   /* 103: a = joint, b = error in microradians */
};

enum rtc_reftask_traj_state {
    RTC_REFTASK_TRAJ_IDLE = 0,    /* no waypoints */
    RTC_REFTASK_TRAJ_LOADING = 1, /* waypoints appended, not started */
    RTC_REFTASK_TRAJ_RUNNING = 2,
    RTC_REFTASK_TRAJ_DONE = 3,    /* holding the last waypoint */
};

/* Indices into rtc_task_v2.log_templates. */
enum rtc_reftask_log {
    RTC_REFTASK_LOG_TRAJ_STARTED = 0,     /* INFO: job_id, waypoints */
    RTC_REFTASK_LOG_WAYPOINT_REACHED = 1, /* INFO: waypoint, job_id */
    RTC_REFTASK_LOG_TRAJ_DONE = 2,        /* INFO: job_id, steps */
    RTC_REFTASK_LOG_TRACKING_ERROR = 3,   /* WARN: error_rad, joint; <= 1 per 1000 cycles */
};

/* Indices into rtc_task_v2.names: the span around the PID and its attribute. */
enum rtc_reftask_name {
    RTC_REFTASK_SPAN_TRACK = 0,           /* "reftask.track" */
    RTC_REFTASK_ATTR_MAX_ERROR = 1,       /* "max_error_rad" */
};

/*
 * step() computes the torques u[] (PID, or braking in SAFE) on whatever state
 * it holds: its own on a primary, the newest replicated one on a standby.
 * output() applies them to the simulated plant: that is the actuation, and
 * only a node that drives the outputs moves q. Events and logs about the
 * trajectory come from the actuating node only.
 */

typedef struct rtc_reftask_waypoint {
    double t;                  /* seconds from job start */
    double q[RTC_REFTASK_MAX_JOINTS];
} rtc_reftask_waypoint;

/* The whole task state; copied verbatim into checkpoints, so no pointers. */
typedef struct rtc_reftask_state {
    uint32_t version;          /* RTC_REFTASK_STATE_VERSION */
    uint32_t n_joints;
    uint32_t traj_state;       /* enum rtc_reftask_traj_state */
    uint32_t n_waypoints;
    uint32_t cursor;           /* next waypoint to reach */
    uint32_t _pad0;
    uint64_t job_id;           /* job of the newest TRAJ_START */
    uint64_t steps;            /* steps computed since init (shadow ones included) */
    uint64_t outputs;          /* output stages run: cycles this state drove the joints */
    uint64_t job_steps;        /* steps the current job advanced (RUN mode only) */
    uint64_t next_warn_cycle;  /* tracking-error warnings are muted before this cycle */
    double job_time;           /* seconds the current job advanced */
    double kp, ki, kd;
    double inertia, damping;
    double umax;               /* torque clamp, also bounds the integral term */
    double errlim;             /* rad; tracking error above this is warned about */
    double q[RTC_REFTASK_MAX_JOINTS];
    double dq[RTC_REFTASK_MAX_JOINTS];
    double integ[RTC_REFTASK_MAX_JOINTS];    /* integral term in torque units (ki applied) */
    double prev_err[RTC_REFTASK_MAX_JOINTS];
    double setpoint[RTC_REFTASK_MAX_JOINTS];
    double start_q[RTC_REFTASK_MAX_JOINTS];  /* position at TRAJ_START: first segment's origin */
    double u[RTC_REFTASK_MAX_JOINTS];        /* torques step() computed for output() */
    rtc_reftask_waypoint wp[RTC_REFTASK_MAX_WAYPOINTS];
} rtc_reftask_state;

_Static_assert(sizeof(rtc_reftask_waypoint) == 72, "waypoint size");
_Static_assert(sizeof(rtc_reftask_state) == 5184, "reftask state size");
_Static_assert(sizeof(rtc_reftask_state) <= RTC_CKPT_MAX, "reftask state fits a checkpoint");

#endif
