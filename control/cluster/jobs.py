"""The job store of a cluster node: every change goes through Raft, reads
come from the local database, which mirrors the replicated jobs.

Same methods as control.jobs.store.JobStore, so the runner and the agent do
not know which they hold. A change made where there is no leader, or that
does not commit in time, is refused with FailedPrecondition: a job the
caller was told is queued is on a majority of the nodes.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from typing import Any

from control import errors
from control.api import Waypoint
from control.cluster.raft import RaftUnavailable, call_sync
from control.cluster.state import ClusterState
from control.jobs import machine
from control.jobs.machine import Job
from control.jobs.store import JobStore, public
from control.jobs.trajectory import validate_name, validate_waypoints

COMMIT_TIMEOUT_S = 2.0


class ReplicatedJobs:
    def __init__(
        self, local: JobStore, state: ClusterState, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.local = local
        self._state = state
        self._clock = clock

    def _commit(self, method: Callable[..., Any], *args: Any) -> tuple[Any, ...]:
        try:
            result = call_sync(method, *args, timeout_s=COMMIT_TIMEOUT_S)
        except RaftUnavailable as e:
            if e.maybe_applied:
                raise errors.FailedPrecondition(
                    f"the cluster did not confirm the change in time ({e}); it may still "
                    "take effect: look (rtctl job list) before trying again"
                ) from None
            raise errors.FailedPrecondition(
                f"the cluster did not commit the change ({e}); nothing was changed"
            ) from None
        if result[0] == "error":
            _, kind_name, message = result
            kind = (
                machine.IllegalTransition
                if kind_name == "IllegalTransition"
                else getattr(errors, kind_name, errors.FailedPrecondition)
            )
            raise kind(message)
        return result

    # ---- changes, through Raft -------------------------------------------------

    def apply(self, ev: machine.Event) -> bool:
        return bool(self._commit(self._state.job_event, ev)[1])

    def submit(self, name: str, waypoints: builtins.list[Waypoint]) -> dict[str, Any]:
        name = validate_name(name)
        checked = tuple((t, tuple(q)) for t, q in validate_waypoints(waypoints))
        job: Job = self._commit(self._state.job_submit, name, checked, self._clock())[3]
        return public(job)

    def cancel(self, job_id: int, time_ns: int) -> tuple[str, dict[str, Any]]:
        _, _, before, job = self._commit(self._state.job_event, machine.Cancelled(job_id, time_ns))
        return before, public(job)

    # ---- reads, local -----------------------------------------------------------

    def job(self, job_id: int) -> Job:
        return self.local.job(job_id)

    def get(self, job_id: int) -> dict[str, Any]:
        return self.local.get(job_id)

    def waypoints(self, job_id: int) -> builtins.list[Waypoint]:
        return self.local.waypoints(job_id)

    def next_queued(self) -> Job | None:
        return self.local.next_queued()

    def running_job(self) -> Job | None:
        return self.local.running_job()

    def running(self) -> dict[str, Any] | None:
        return self.local.running()

    def counts(self) -> dict[str, int]:
        return self.local.counts()

    def list(self, state: str | None = None, limit: int = 100) -> builtins.list[dict[str, Any]]:
        return self.local.list(state=state, limit=limit)

    def close(self) -> None:
        self.local.close()
