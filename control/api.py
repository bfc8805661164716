"""The operations the agent offers, independent of transport.

control/service.py exposes them over gRPC; control/agent.py implements them.
Values are plain dicts and lists so both the gRPC mapping and `--json`
output are direct. Failures raise control.errors exceptions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

# A waypoint as submitted: seconds from job start and one target per joint.
Waypoint = tuple[float, list[float]]

RT_ACTIONS = ("start", "stop", "run", "hold", "safe")
JOB_STATES = ("queued", "running", "done", "failed", "cancelled")
LOG_LEVELS = ("DEBUG", "INFO", "WARN", "ERROR", "CRITICAL")
CLUSTER_ROLES = ("primary", "standby", "witness", "candidate", "fenced")
# the RT's numbers for them (rtcore/include/rtcore/layout.h), also the spool's
LEVEL_NUMBERS = {"DEBUG": 10, "INFO": 20, "WARN": 30, "ERROR": 40, "CRITICAL": 50}


class Subscription(Protocol):
    """Events and alerts as they happen; iterate, then close()."""

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...


class AgentAPI(Protocol):
    def status(self) -> dict[str, Any]:
        """The `rtctl status --json` document: node_id, role, rt{state, pid,
        cycles, misses, restarts, period_us, latency_us{p50,p99,max}, ...},
        checkpoint{seq, age_ms}, cluster{leader, term, has_quorum}."""
        ...

    def rt_action(self, action: str) -> dict[str, Any]:
        """One of RT_ACTIONS; returns the new status."""
        ...

    def submit_job(self, name: str, waypoints: list[Waypoint]) -> dict[str, Any]:
        """Queue a trajectory job; returns the job (id, name, state, ...)."""
        ...

    def get_job(self, job_id: int) -> dict[str, Any]: ...

    def list_jobs(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]: ...

    def cancel_job(self, job_id: int) -> dict[str, Any]: ...

    def checkpoint_info(self) -> dict[str, Any]:
        """Newest checkpoint in shared memory and on disk, and the files kept."""
        ...

    def journal_info(self, limit: int = 0) -> dict[str, Any]:
        """Actuation intervals (the newest `limit`, 0: all) and the RT's counters."""
        ...

    def get_trace(self, trace_id: str) -> dict[str, Any]:
        """{"trace_id", "spans": [span dicts]}; NotFound if the store has none."""
        ...

    def list_traces(
        self,
        slow_ms: float = 0.0,
        since_ns: int = 0,
        name: str = "",
        errors: bool = False,
        limit: int = 50,
    ) -> dict[str, Any]:
        """{"traces": [summaries, newest first]}"""
        ...

    def list_alerts(self, all: bool = False) -> dict[str, Any]:
        """{"alerts": [...]}: active ones, or every one kept when all."""
        ...

    def diagnose(self, since_ns: int = 0) -> dict[str, Any]:
        """What an operator looks at first, each item with the command that shows more."""
        ...

    def search_logs(self, query: dict[str, Any]) -> dict[str, Any]:
        """{"logs": [ECS documents with "_seq"], ...}; query keys as
        control.logs.store.LogStore.search takes them (checked by the service)."""
        ...

    def get_log_level(self) -> dict[str, str]:
        """{'rt': level, 'agent': level}"""
        ...

    def set_log_level(self, level: str, target: str = "all") -> dict[str, str]: ...

    def get_trace_sampling(self) -> dict[str, Any]:
        """{'rt_every_cycles': N (0 = off), 'ratio': agent-side sampling ratio 0..1}"""
        ...

    def set_trace_sampling(
        self, rt_every_cycles: int | None, ratio: float | None
    ) -> dict[str, Any]: ...

    def set_affinity(self, cpus: list[int], isolate: bool | None) -> dict[str, Any]:
        """Pin the running RT loop to cpus; isolate True/False turns exclusive use
        on/off, None keeps it. Returns the placement (see placement())."""
        ...

    def set_numa_node(self, node: int) -> dict[str, Any]: ...

    def placement(self) -> dict[str, Any]:
        """{'cpus': 'LIST' or '', 'isolated': bool, 'numa_node': N or -1,
        'isolation': {...}, 'kernel_isolation': {...}, 'numa': {...}}"""
        ...

    def cluster_status(self) -> dict[str, Any]:
        """This node's view of the Raft cluster:

        {"node_id", "role" (one of CLUSTER_ROLES), "term", "leader" (node id,
        "" if none is known), "has_quorum", "lease_ms",
        "lease_age_ms" (age of this node's quorum lease; None unless it holds one),
        "elections" (leader changes this node has seen since it started),
        "commit_index", "last_applied",
        "checkpoint_lag_ms" (age of the newest replicated checkpoint this node
        has applied: now minus when the primary's RT wrote it; None if none),
        "replication_lag_ms": {"p50", "p99", "max", "count"},
        "healthy" (its RT runs and beats; a witness: True), "rt_state",
        "members": [{"node_id" ("" until known), "raft": "HOST:PORT",
        "listen": "HOST:PORT" ("" if unknown), "witness", "self", "connected"}]}"""
        ...

    def cluster_failover(self, to: str | None = None) -> dict[str, Any]:
        """Planned handover from this node, which must be the primary, to the
        standby `to` (a node id) or, None, the healthiest caught-up standby.
        Returns {"from", "to", "term", "gap_ms" (float or None)}. InvalidArgument
        when `to` is no member, this node or a witness; FailedPrecondition when
        this node is not the primary or the standby is unhealthy or behind."""
        ...

    def subscribe(self, kinds: list[str] | None = None) -> Subscription: ...
