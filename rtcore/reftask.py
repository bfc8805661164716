"""Python side of the built-in reference task (include/rtcore/reftask.h):
its command and event kinds, its checkpointed state, and trajectory commands."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rtcore import layout, records
from rtcore.reftask_limits import MAX_JOINTS, MAX_WAYPOINTS, NAME  # noqa: F401

CMD_TRAJ_CLEAR = layout.CMD_TASK + 0
CMD_TRAJ_APPEND = layout.CMD_TASK + 1
CMD_TRAJ_START = layout.CMD_TASK + 2
CMD_SET_GAINS = layout.CMD_TASK + 3

EV_TRAJ_STARTED = layout.EV_TASK + 0
EV_WAYPOINT_REACHED = layout.EV_TASK + 1
EV_TRAJ_DONE = layout.EV_TASK + 2
EV_TRACKING_ERROR = layout.EV_TASK + 3

TRAJ_STATES = {0: "idle", 1: "loading", 2: "running", 3: "done"}

WAYPOINT = np.dtype([("t", "<f8"), ("q", "<f8", (MAX_JOINTS,))])
STATE = np.dtype(
    [
        ("version", "<u4"),
        ("n_joints", "<u4"),
        ("traj_state", "<u4"),
        ("n_waypoints", "<u4"),
        ("cursor", "<u4"),
        ("_pad0", "<u4"),
        ("job_id", "<u8"),
        ("steps", "<u8"),
        ("outputs", "<u8"),
        ("job_steps", "<u8"),
        ("next_warn_cycle", "<u8"),
        ("job_time", "<f8"),
        ("kp", "<f8"),
        ("ki", "<f8"),
        ("kd", "<f8"),
        ("inertia", "<f8"),
        ("damping", "<f8"),
        ("umax", "<f8"),
        ("errlim", "<f8"),
        ("q", "<f8", (MAX_JOINTS,)),
        ("dq", "<f8", (MAX_JOINTS,)),
        ("integ", "<f8", (MAX_JOINTS,)),
        ("prev_err", "<f8", (MAX_JOINTS,)),
        ("setpoint", "<f8", (MAX_JOINTS,)),
        ("start_q", "<f8", (MAX_JOINTS,)),
        ("u", "<f8", (MAX_JOINTS,)),
        ("wp", WAYPOINT, (MAX_WAYPOINTS,)),
    ]
)


def decode_state(data: bytes) -> np.void:
    """A checkpoint's task state as a structured record."""
    if len(data) != STATE.itemsize:
        raise ValueError(f"reftask state is {STATE.itemsize} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=STATE)[0]


def trajectory_commands(
    job_id: int, waypoints: Sequence[tuple[float, Sequence[float]]], first_seq: int
) -> list[bytes]:
    """Commands that load and start one trajectory: clear, append each
    (t, joint targets), start."""
    if not 0 < len(waypoints) <= MAX_WAYPOINTS:
        raise ValueError(f"a trajectory has 1..{MAX_WAYPOINTS} waypoints")
    cmds = [records.command(CMD_TRAJ_CLEAR, seq=first_seq, job_id=job_id)]
    for i, (t, q) in enumerate(waypoints, start=1):
        cmds.append(
            records.command(CMD_TRAJ_APPEND, seq=first_seq + i, job_id=job_id, args=(t, *q))
        )
    cmds.append(records.command(CMD_TRAJ_START, seq=first_seq + len(waypoints) + 1, job_id=job_id))
    return cmds
