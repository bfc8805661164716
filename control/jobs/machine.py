"""The job state machine: `apply(job, event) -> job`, pure and deterministic.

A job goes queued -> running -> done | failed, or -> cancelled from queued or
running. Everything a transition needs comes in its event: the job id, the
time, command sequence numbers and the RT checkpoint position (epoch,
checkpoint seq). Nothing here reads a clock or a counter, so the same events
give the same job on every node that applies them, byte for byte (`encode`).

Events the RT may repeat or deliver late (a second TRAJ_DONE, a waypoint of
a job that was cancelled meanwhile) change nothing; an event that cannot
follow the job's state (a waypoint of a job that never started, cancelling a
job that has ended) raises IllegalTransition, which is a FailedPrecondition.

A job's progress is (epoch, ckpt_seq, cursor): the waypoints reached, and the
RT's newest checkpoint when that was learnt. Its attempt is the first command
seq sent (cmd_seq) and the checkpoint position just before it was sent
(attempt_epoch, attempt_seq): a checkpoint at or before that position cannot
hold this attempt, whatever job id it names.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from dataclasses import dataclass

from control.errors import FailedPrecondition

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")
# the reftask's trajectory states, as the restored checkpoint names them
TRAJ = ("idle", "loading", "running", "done")

Waypoints = tuple[tuple[float, tuple[float, ...]], ...]


class IllegalTransition(FailedPrecondition):
    """An event that cannot follow the job's state."""


@dataclass(frozen=True)
class Job:
    id: int
    name: str
    waypoints: Waypoints
    submitted_ns: int
    state: str = "queued"
    cursor: int = 0  # waypoints reached
    epoch: int = 0  # the RT checkpoint position when `cursor` was learnt
    ckpt_seq: int = 0
    attempts: int = 0  # times its commands were handed to an RT
    cmd_seq: int = 0  # first command seq of the attempt sent last; 0: none sent
    attempt_epoch: int = 0  # the newest checkpoint before that attempt
    attempt_seq: int = 0
    started_ns: int | None = None
    finished_ns: int | None = None
    error: str | None = None

    @property
    def n_waypoints(self) -> int:
        return len(self.waypoints)


@dataclass(frozen=True)
class Submitted:
    job_id: int
    time_ns: int
    name: str
    waypoints: Waypoints


@dataclass(frozen=True)
class Started:
    """The runner takes the job (before sending anything, so an agent that
    dies in between finds it running, not queued, and never runs it twice)."""

    job_id: int
    time_ns: int
    epoch: int
    ckpt_seq: int


@dataclass(frozen=True)
class CommandsSent:
    """The job's commands (seqs first_seq .. first_seq + n + 1) reached the RT's ring."""

    job_id: int
    time_ns: int
    first_seq: int
    epoch: int
    ckpt_seq: int


@dataclass(frozen=True)
class CommandAcked:
    job_id: int
    time_ns: int
    seq: int
    result: int  # 0, or -errno when the RT task refused the command


@dataclass(frozen=True)
class WaypointReached:
    job_id: int
    time_ns: int
    index: int
    epoch: int
    ckpt_seq: int


@dataclass(frozen=True)
class Done:
    job_id: int
    time_ns: int
    epoch: int
    ckpt_seq: int


@dataclass(frozen=True)
class Cancelled:
    job_id: int
    time_ns: int


@dataclass(frozen=True)
class RtRestarted:
    """A new RT process restored checkpoint (epoch, ckpt_seq) ((0, 0): it
    started fresh) whose task state names restored_job in `traj` at `cursor`."""

    job_id: int
    time_ns: int
    epoch: int
    ckpt_seq: int
    restored_job: int
    traj: str
    cursor: int


Event = (
    Submitted
    | Started
    | CommandsSent
    | CommandAcked
    | WaypointReached
    | Done
    | Cancelled
    | RtRestarted
)


def apply(job: Job | None, ev: Event) -> Job:
    """The job after `ev`; `job` itself when the event changes nothing."""
    if isinstance(ev, Submitted):
        return _submitted(job, ev)
    if job is None:
        raise IllegalTransition(f"job {ev.job_id} does not exist; {_name(ev)} cannot apply")
    if job.id != ev.job_id:
        raise ValueError(f"{_name(ev)} of job {ev.job_id} applied to job {job.id}")
    if isinstance(ev, Cancelled):
        return _cancelled(job, ev)
    if isinstance(ev, Started):
        return _started(job, ev)
    if job.state == "queued":
        raise IllegalTransition(f"job {job.id} is queued; {_name(ev)} needs it running")
    if job.state in FINAL:
        return job  # the RT repeats itself and reports late: the job has ended
    if isinstance(ev, CommandsSent):
        return _sent(job, ev)
    if isinstance(ev, CommandAcked):
        return _acked(job, ev)
    if isinstance(ev, WaypointReached):
        cursor = min(max(ev.index + 1, 0), job.n_waypoints)
        if cursor <= job.cursor:
            return job
        return _replace(job, cursor=cursor, epoch=ev.epoch, ckpt_seq=ev.ckpt_seq)
    if isinstance(ev, Done):
        return _done(job, ev.time_ns, ev.epoch, ev.ckpt_seq)
    if isinstance(ev, RtRestarted):
        return _restarted(job, ev)
    raise TypeError(f"not a job event: {ev!r}")


def holds_attempt(job: Job, ev: RtRestarted) -> bool:
    """Whether the restored checkpoint holds the job's current attempt: it
    names the job, has loaded it, and was taken after the attempt was sent."""
    return (
        ev.restored_job == job.id
        and ev.traj in ("running", "done")
        and (ev.epoch, ev.ckpt_seq) > (job.attempt_epoch, job.attempt_seq)
    )


def command_name(job: Job, seq: int) -> str | None:
    """What command `seq` of the job's current attempt did; None if it is not one."""
    offset = seq - job.cmd_seq
    if job.cmd_seq == 0 or not 0 <= offset <= job.n_waypoints + 1:
        return None
    if offset == 0:
        return "TRAJ_CLEAR"
    if offset == job.n_waypoints + 1:
        return "TRAJ_START"
    return f"TRAJ_APPEND of waypoint {offset - 1}"


def encode(job: Job) -> bytes:
    """The job as canonical JSON: equal jobs give equal bytes."""
    return json.dumps(dataclasses.asdict(job), sort_keys=True, separators=(",", ":")).encode()


def decode(data: bytes) -> Job:
    fields = json.loads(data)
    fields["waypoints"] = tuple((t, tuple(q)) for t, q in fields["waypoints"])
    return Job(**fields)


def _submitted(job: Job | None, ev: Submitted) -> Job:
    new = Job(id=ev.job_id, name=ev.name, waypoints=ev.waypoints, submitted_ns=ev.time_ns)
    if job is None:
        if not ev.waypoints:
            raise IllegalTransition(f"job {ev.job_id} has no waypoints")
        return new
    if (job.name, job.waypoints, job.submitted_ns) == (new.name, new.waypoints, new.submitted_ns):
        return job
    raise IllegalTransition(f"job {ev.job_id} already exists; a job id names one job")


def _started(job: Job, ev: Started) -> Job:
    if job.state == "queued":
        return _replace(
            job,
            state="running",
            attempts=1,
            started_ns=ev.time_ns,
            epoch=ev.epoch,
            ckpt_seq=ev.ckpt_seq,
            attempt_epoch=ev.epoch,
            attempt_seq=ev.ckpt_seq,
        )
    if job.state == "running" and job.started_ns == ev.time_ns:
        return job
    if job.state == "cancelled":
        return job  # cancelled while the runner was taking it: the cancel wins
    raise IllegalTransition(f"job {job.id} is {job.state}; only a queued job can start")


def _sent(job: Job, ev: CommandsSent) -> Job:
    if ev.first_seq == job.cmd_seq:
        return job
    if ev.first_seq < job.cmd_seq:
        raise IllegalTransition(
            f"job {job.id}: commands from seq {ev.first_seq} sent after those from {job.cmd_seq}"
        )
    # the first send was counted when the job started; a resend is one more attempt
    attempts = job.attempts if job.cmd_seq == 0 else job.attempts + 1
    return _replace(
        job,
        cmd_seq=ev.first_seq,
        attempts=attempts,
        attempt_epoch=ev.epoch,
        attempt_seq=ev.ckpt_seq,
    )


def _acked(job: Job, ev: CommandAcked) -> Job:
    what = command_name(job, ev.seq)
    if ev.result >= 0 or what is None:
        return job  # accepted, or a command of another job or a superseded attempt
    name = errno.errorcode.get(-ev.result, str(ev.result))
    return _replace(
        job,
        state="failed",
        finished_ns=ev.time_ns,
        error=f"{what} (command {ev.seq}) refused by the RT task: "
        f"{name} ({os.strerror(-ev.result)})",
    )


def _done(job: Job, time_ns: int, epoch: int, ckpt_seq: int) -> Job:
    return _replace(
        job,
        state="done",
        cursor=job.n_waypoints,
        epoch=epoch,
        ckpt_seq=ckpt_seq,
        finished_ns=time_ns,
    )


def _cancelled(job: Job, ev: Cancelled) -> Job:
    if job.state in ("queued", "running"):
        return _replace(job, state="cancelled", finished_ns=ev.time_ns)
    if job.state == "cancelled" and job.finished_ns == ev.time_ns:
        return job
    raise IllegalTransition(
        f"job {job.id} is {job.state}; only queued or running jobs can be cancelled"
    )


def _restarted(job: Job, ev: RtRestarted) -> Job:
    if ev.traj not in TRAJ:
        raise ValueError(f"trajectory state {ev.traj!r} is not one of {', '.join(TRAJ)}")
    if not holds_attempt(job, ev):
        return job  # the runner sends the job again
    if ev.traj == "done":
        return _done(job, ev.time_ns, ev.epoch, ev.ckpt_seq)
    cursor = min(ev.cursor, job.n_waypoints)
    if cursor <= job.cursor:
        return job  # an older checkpoint does not move progress back
    return _replace(job, cursor=cursor, epoch=ev.epoch, ckpt_seq=ev.ckpt_seq)


def _replace(job: Job, **changes: object) -> Job:
    return dataclasses.replace(job, **changes)  # type: ignore[arg-type]


def _name(ev: Event) -> str:
    return type(ev).__name__
