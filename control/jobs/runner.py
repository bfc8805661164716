"""Hands queued jobs to the RT task one at a time and follows them through its
events and restarts, recording every step as a machine event in the store.

The runner keeps no job state of its own: at each step it reads the running
job from the store, so a job cancelled, ended or started elsewhere (the
cluster) is picked up. What it keeps is what only this process knows: which
job it follows, whether that job's commands are still owed to the RT (its
ring was full), and a TRAJ_CLEAR still owed.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from control.jobs import machine
from control.jobs.machine import Job
from control.jobs.store import JobStore
from rtcore import layout, records, reftask
from rtcore.segment import Segment

# the RT events a job follows; the rest (deadline misses, state changes) never touch the store
_JOB_EVENTS = (reftask.EV_WAYPOINT_REACHED, reftask.EV_TRAJ_DONE, layout.EV_CMD_ACK)


def checkpoint_position(seg: Segment | None) -> tuple[int, int]:
    """(epoch, seq) of the newest checkpoint the RT of `seg` wrote; (0, 0) without a segment."""
    if seg is None:
        return 0, 0
    status = seg.view()["status"]
    return int(status["epoch"]), int(status["ckpt_seq"])


class JobRunner:
    """Starts the oldest queued job when the RT is ready and no job runs,
    follows it through RT events, and recovers it across RT restarts.

    send(records) pushes command records to the RT all or nothing (False: the
    ring had no room, nothing was sent); next_seq() hands out command sequence
    numbers, and must give consecutive ones to the runner: a job's commands
    carry one run of numbers. checkpoint() is the (epoch, seq) of the RT's
    newest checkpoint (checkpoint_position); clock() stamps the events the
    runner originates. All methods may be called from any thread.
    """

    def __init__(
        self,
        store: JobStore,
        send: Callable[[builtins.list[bytes]], bool],
        next_seq: Callable[[], int],
        checkpoint: Callable[[], tuple[int, int]],
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._store = store
        self._send = send
        self._next_seq = next_seq
        self._checkpoint = checkpoint
        self._clock = clock
        self._lock = threading.Lock()
        running = store.running_job()
        # a running job found at start is sent again only once an RT restart
        # (or adoption) says the RT does not have it: its commands may be in flight
        self._following: int | None = running.id if running else None
        self._unsent = False
        self._clear_for: int | None = None  # a TRAJ_CLEAR still owed to the RT, for this job

    def tick(self, rt_ready: bool) -> None:
        """Send what is owed: a running job's commands after a restart, else the
        next queued job, else a pending TRAJ_CLEAR."""
        with self._lock:
            if not rt_ready:
                return
            job = self._follow()
            if job is not None:
                if self._unsent:
                    self._send_job(job)
                return
            queued = self._store.next_queued()
            if queued is None:
                if self._clear_for is not None:
                    self._clear(self._clear_for)
                return
            seqs = self._seqs_for(queued)
            # recorded as running before anything is sent: an agent that dies in
            # between finds it running (and settles it from the RT's state)
            # instead of queued (and runs it a second time)
            started = machine.Started(queued.id, self._clock(), *self._checkpoint())
            if not self._store.apply(started):
                return  # cancelled by someone else meanwhile
            self._following = queued.id
            self._unsent = True
            self._clear_for = None  # the job's own commands begin with TRAJ_CLEAR
            self._send_job(queued, seqs)

    def on_event(self, ev: dict[str, Any]) -> None:
        """Follow one decoded RT event (rtcore.records.Decoder.event)."""
        kind, a, b = ev["kind_id"], ev["a"], ev["b"]
        if kind not in _JOB_EVENTS or (kind == layout.EV_CMD_ACK and b >= 0):
            return
        with self._lock:
            job = self._follow()
            if job is None:
                return
            if kind == reftask.EV_WAYPOINT_REACHED and a == job.id:
                self._store.apply(
                    machine.WaypointReached(job.id, ev["time_ns"], b, *self._checkpoint())
                )
            elif kind == reftask.EV_TRAJ_DONE and a == job.id:
                self._store.apply(machine.Done(job.id, ev["time_ns"], *self._checkpoint()))
                self._forget()
            elif kind == layout.EV_CMD_ACK and self._store.apply(
                machine.CommandAcked(job.id, ev["time_ns"], a, b)
            ):
                # refused: the job failed, and its START may still have run on
                # the waypoints that were accepted
                self._forget()
                self._clear(job.id)

    def on_rt_restarted(self, state: np.void | None) -> None:
        """A new RT process is running with `state`, the reftask state of its
        newest checkpoint (None: it started fresh). The running job goes on
        from the restored cursor (its recorded progress never moves back),
        ends if the checkpoint saw it end, else is sent again."""
        with self._lock:
            if state is None:
                restored_job, traj, cursor, position = 0, "idle", 0, (0, 0)
            else:
                restored_job = int(state["job_id"])
                traj = reftask.TRAJ_STATES.get(int(state["traj_state"]), "idle")
                cursor, position = int(state["cursor"]), self._checkpoint()
            job = self._follow()
            if job is None:
                if traj == "running":
                    # a job that has since ended (cancelled, done) would run again
                    self._clear(restored_job)
                return
            ev = machine.RtRestarted(job.id, self._clock(), *position, restored_job, traj, cursor)
            self._store.apply(ev)
            if machine.holds_attempt(job, ev):
                if traj == "done":
                    self._forget()
                return
            # the checkpoint predates this attempt (or the commands had not
            # reached the task yet), so running it from the beginning does not
            # run any part of it twice
            self._unsent = True
            self._send_job(job)

    def cancel(self, job_id: int) -> dict[str, Any]:
        """Cancel a queued or running job (a running one is stopped with
        TRAJ_CLEAR); NotFound, or FailedPrecondition if it has ended."""
        with self._lock:
            previous, job = self._store.cancel(job_id, self._clock())
            if previous == "running":
                self._forget()
                self._clear(job_id)
            return job

    def _follow(self) -> Job | None:
        """The running job, as the store has it now: a job this runner followed
        that ended elsewhere is stopped on the RT; a job started elsewhere is
        followed (and sent only once an RT restart says the RT lacks it)."""
        job = self._store.running_job()
        if self._following is not None and (job is None or job.id != self._following):
            if self._store.job(self._following).state != "done":
                self._clear(self._following)
            self._forget()
        if job is not None and self._following is None:
            self._following = job.id
        return job

    def _seqs_for(self, job: Job) -> builtins.list[int]:
        """Consecutive command numbers for the job's clear, appends and start."""
        seqs = [self._next_seq() for _ in range(job.n_waypoints + 2)]
        if seqs != builtins.list(range(seqs[0], seqs[0] + len(seqs))):
            raise RuntimeError(f"next_seq() gave {seqs}; a job's commands need consecutive seqs")
        return seqs

    def _send_job(self, job: Job, seqs: builtins.list[int] | None = None) -> None:
        """Send the job's trajectory; still owed if the ring had no room."""
        first = (seqs or self._seqs_for(job))[0]
        # read before sending: no checkpoint up to this one can hold these commands
        position = self._checkpoint()
        if not self._send(reftask.trajectory_commands(job.id, job.waypoints, first)):
            return
        self._store.apply(machine.CommandsSent(job.id, self._clock(), first, *position))
        self._unsent = False

    def _clear(self, job_id: int) -> None:
        """Stop the RT's trajectory; owed until the ring has room."""
        cmd = records.command(reftask.CMD_TRAJ_CLEAR, seq=self._next_seq(), job_id=job_id)
        self._clear_for = None if self._send([cmd]) else job_id

    def _forget(self) -> None:
        self._following = None
        self._unsent = False
