"""An in-memory AgentAPI for service tests.

It keeps a little state (RT state, jobs, levels, sampling), records every
call with the traceparent the service exposed for it, and checks the
invariants the service promises (every value in range): a broken one is
appended to `violations` instead of raised, so a test can assert none
happened even when the service swallowed the error. `fail[method] = exc`
makes that method raise exc; `publish()` feeds watch subscriptions.
`cluster` is the document cluster_status() returns (cluster_doc() builds one
for any node of a made-up cluster); cluster_failover() hands over from it.
"""

from __future__ import annotations

import copy
import math
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from control.api import JOB_STATES, LOG_LEVELS, RT_ACTIONS, Waypoint
from control.errors import FailedPrecondition, InvalidArgument, NotFound
from control.rpc.service import current_traceparent
from control.settings import NODE_ID_RE

NODE_ID = "fake-1"
# beyond 2**53: a double (google.protobuf.Struct) would change it, JSON must not
BIG_INT = 2**53 + 1


def member(
    node_id: str, raft: str, listen: str = "", witness: bool = False, connected: bool = True
) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "raft": raft,
        "listen": listen,
        "witness": witness,
        "self": False,
        "connected": connected,
    }


def cluster_doc(
    node_id: str = NODE_ID,
    role: str = "primary",
    leader: str = NODE_ID,
    members: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A cluster_status() document of `node_id`; members default to itself, a
    standby and a witness, none with a gRPC address."""
    if members is None:
        members = [
            member(NODE_ID, "127.0.0.1:7001"),
            member("fake-2", "127.0.0.1:7002"),
            member("fake-3", "127.0.0.1:7003", witness=True),
        ]
    members = [{**m, "self": m["node_id"] == node_id} for m in members]
    primary = role == "primary"
    return {
        "node_id": node_id,
        "role": role,
        "term": 3,
        "leader": leader,
        "has_quorum": bool(leader),
        "lease_ms": 500,
        "lease_age_ms": 40.0 if primary else None,
        "elections": 1,
        "commit_index": 12,
        "last_applied": 12,
        "checkpoint_lag_ms": None if primary else 2.5,
        "replication_lag_ms": {"p50": 0.8, "p99": 2.5, "max": 4.0, "count": 120},
        "healthy": role != "fenced",
        "rt_state": "run" if primary else "hold",
        "members": members,
    }


class FakeSubscription:
    def __init__(self, agent: FakeAgent, kinds: list[str] | None) -> None:
        self.kinds = kinds
        self._agent = agent
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.closed = threading.Event()

    def offer(self, event: dict[str, Any]) -> None:
        if not self.kinds or event["kind"] in self.kinds:
            self._queue.put(event)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while not self.closed.is_set():
            event = self._queue.get()
            if event is None:
                return
            yield event

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self._queue.put(None)
            self._agent._unsubscribe(self)


class FakeAgent:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[str, tuple[Any, ...], str | None]] = []
        self.violations: list[str] = []
        self.fail: dict[str, BaseException] = {}
        self.rt_state = "run"
        self.restarts = 0
        self.cycles = 1000
        self.jobs: dict[int, dict[str, Any]] = {}
        self._next_id = 1
        self.levels = {"rt": "INFO", "agent": "INFO"}
        self.sampling: dict[str, Any] = {"rt_every_cycles": 0, "ratio": 1.0}
        self.subscriptions: list[FakeSubscription] = []
        self.placement_doc: dict[str, Any] = {"cpus": "", "isolated": False, "numa_node": -1}
        self.cluster = cluster_doc()

    # ---- bookkeeping ------------------------------------------------------

    def _enter(self, method: str, *args: Any) -> None:
        with self._lock:
            self.calls.append((method, args, current_traceparent()))
        exc = self.fail.get(method)
        if exc is not None:
            raise exc

    def _expect(self, ok: bool, what: str) -> None:
        if not ok:
            with self._lock:
                self.violations.append(what)

    def _unsubscribe(self, sub: FakeSubscription) -> None:
        with self._lock:
            if sub in self.subscriptions:
                self.subscriptions.remove(sub)

    def publish(self, kind: str, message: str = "", level: str = "INFO", **fields: Any) -> None:
        event = {
            "kind": kind,
            "level": level,
            "message": message,
            "node_id": NODE_ID,
            "ts_ns": time.time_ns(),
            **fields,
        }
        with self._lock:
            subs = list(self.subscriptions)
        for sub in subs:
            sub.offer(event)

    def _check_job_id(self, job_id: Any) -> None:
        self._expect(type(job_id) is int and job_id > 0, f"job id {job_id!r}")

    # ---- AgentAPI -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        self._enter("status")
        return self._status()

    def _status(self) -> dict[str, Any]:
        with self._lock:
            self.cycles += 1000
            running = self.rt_state not in ("stopped",)
            return {
                "node_id": NODE_ID,
                "role": "primary" if running else "degraded",
                "rt": {
                    "state": self.rt_state,
                    "pid": 4242 if running else None,
                    "cycles": self.cycles,
                    "misses": 2,
                    "restarts": self.restarts,
                    "period_us": 1000,
                    "latency_us": {"p50": 3.5, "p99": 12.25, "max": 40.0},
                    "exec_us": {"p50": 1.0, "p99": 2.0, "max": 3.0},
                },
                "checkpoint": {"seq": 7, "age_ms": 12.5, "disk_seq": 6},
                "cluster": {
                    "leader": NODE_ID,
                    "term": 3,
                    "has_quorum": True,
                    "members": [NODE_ID],
                },
                "agent": {"big": BIG_INT, "pid": 1},
            }

    def rt_action(self, action: str) -> dict[str, Any]:
        self._enter("rt_action", action)
        self._expect(action in RT_ACTIONS, f"rt_action {action!r}")
        with self._lock:
            if action == "start":
                self.rt_state = "hold"
            elif action == "stop":
                self.rt_state = "stopped"
            elif self.rt_state == "stopped":
                raise FailedPrecondition("the RT process is not running: `rtctl rt start` first")
            else:
                self.rt_state = action
        return self._status()

    def submit_job(self, name: str, waypoints: list[Waypoint]) -> dict[str, Any]:
        self._enter("submit_job", name, waypoints)
        self._expect(isinstance(name, str) and 1 <= len(name) <= 200, f"job name {name!r}")
        self._expect(1 <= len(waypoints) <= 64, f"{len(waypoints)} waypoints")
        joints = {len(q) for _, q in waypoints}
        self._expect(len(joints) == 1 and 1 <= min(joints) <= 8, f"joint counts {joints}")
        prev = 0.0
        for i, (t, q) in enumerate(waypoints):
            self._expect(type(t) is float and math.isfinite(t) and t > prev, f"wp {i} t {t!r}")
            prev = t
            self._expect(
                all(type(v) is float and math.isfinite(v) and abs(v) <= 1000 for v in q),
                f"wp {i} q {q!r}",
            )
        with self._lock:
            job = {
                "id": self._next_id,
                "name": name,
                "state": "queued",
                "waypoints": len(waypoints),
                "joints": len(waypoints[0][1]) if waypoints else 0,
                "duration_s": waypoints[-1][0] if waypoints else 0.0,
            }
            self.jobs[self._next_id] = job
            self._next_id += 1
            return dict(job)

    def get_job(self, job_id: int) -> dict[str, Any]:
        self._enter("get_job", job_id)
        self._check_job_id(job_id)
        with self._lock:
            if job_id not in self.jobs:
                raise NotFound(f"no job {job_id}")
            return dict(self.jobs[job_id])

    def list_jobs(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        self._enter("list_jobs", state, limit)
        self._expect(state is None or state in JOB_STATES, f"list state {state!r}")
        self._expect(type(limit) is int and 1 <= limit <= 1000, f"list limit {limit!r}")
        with self._lock:
            jobs = [j for j in reversed(self.jobs.values()) if state in (None, j["state"])]
            return [dict(j) for j in jobs[:limit]]

    def cancel_job(self, job_id: int) -> dict[str, Any]:
        self._enter("cancel_job", job_id)
        self._check_job_id(job_id)
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise NotFound(f"no job {job_id}")
            if job["state"] not in ("queued", "running"):
                raise FailedPrecondition(f"job {job_id} is {job['state']} already")
            job["state"] = "cancelled"
            return dict(job)

    def checkpoint_info(self) -> dict[str, Any]:
        self._enter("checkpoint_info")
        return {
            "shm": {"seq": 7, "cycle": 7000, "bytes": 512},
            "disk": {"newest_seq": 6, "files": ["ckpt-000006.bin", "ckpt-000005.bin"]},
        }

    def get_trace(self, trace_id: str) -> dict[str, Any]:
        self._enter("get_trace")
        if trace_id != "ab" * 16:
            raise NotFound(f"no trace {trace_id}")
        return {"trace_id": trace_id, "spans": [{"name": "rt.cycle", "span_id": "cd" * 8}]}

    def list_traces(self, slow_ms=0.0, since_ns=0, name="", errors=False, limit=50):
        self._enter("list_traces")
        return {"traces": [], "query": [slow_ms, since_ns, name, errors, limit]}

    def list_alerts(self, all: bool = False) -> dict[str, Any]:
        self._enter("list_alerts")
        return {"alerts": [], "all": all}

    def search_logs(self, query: dict[str, Any]) -> dict[str, Any]:
        self._enter("search_logs", query)
        doc = {
            "@timestamp": "2026-12-02T01:02:03.000000001Z",
            "log": {"level": "ERROR"},
            "message": "deadline miss: woke 512.0 us late",
            "process": {"pid": 42, "name": "rtcore-rt", "thread": {"id": 43}},
            "event": {"action": "deadline_miss"},
            "rtcore": {"node": "fake", "cycle": 7, "fields": {"late_us": 512.0}},
            "_seq": 5,
        }
        return {"node_id": "fake", "logs": [doc], "query": query}

    def diagnose(self, since_ns: int = 0) -> dict[str, Any]:
        self._enter("diagnose")
        return {"since_ns": since_ns, "items": []}

    def journal_info(self, limit: int = 0) -> dict[str, Any]:
        self._enter("journal_info")
        intervals = [{"epoch": 1, "start_cycle": 1, "end_cycle": 10, "cycles": 10}]
        return {"node_id": "fake", "intervals": intervals[-limit:] if limit else intervals}

    def get_log_level(self) -> dict[str, str]:
        self._enter("get_log_level")
        with self._lock:
            return dict(self.levels)

    def set_log_level(self, level: str, target: str = "all") -> dict[str, str]:
        self._enter("set_log_level", level, target)
        self._expect(level in LOG_LEVELS, f"log level {level!r}")
        self._expect(target in ("rt", "agent", "all"), f"log target {target!r}")
        with self._lock:
            for name in ("rt", "agent"):
                if target in (name, "all"):
                    self.levels[name] = level
            return dict(self.levels)

    def get_trace_sampling(self) -> dict[str, Any]:
        self._enter("get_trace_sampling")
        with self._lock:
            return dict(self.sampling)

    def set_trace_sampling(
        self, rt_every_cycles: int | None, ratio: float | None
    ) -> dict[str, Any]:
        self._enter("set_trace_sampling", rt_every_cycles, ratio)
        self._expect(rt_every_cycles is not None or ratio is not None, "sampling: nothing to set")
        self._expect(
            rt_every_cycles is None
            or (type(rt_every_cycles) is int and 0 <= rt_every_cycles <= 1_000_000),
            f"rt_every_cycles {rt_every_cycles!r}",
        )
        self._expect(
            ratio is None or (type(ratio) is float and 0.0 <= ratio <= 1.0), f"ratio {ratio!r}"
        )
        with self._lock:
            if rt_every_cycles is not None:
                self.sampling["rt_every_cycles"] = rt_every_cycles
            if ratio is not None:
                self.sampling["ratio"] = ratio
            return dict(self.sampling)

    def set_affinity(self, cpus: list[int], isolate: bool | None) -> dict[str, Any]:
        self._enter("set_affinity", cpus, isolate)
        self._expect(
            bool(cpus)
            and all(type(c) is int and 0 <= c <= 4095 for c in cpus)
            and cpus == sorted(set(cpus)),
            f"cpus {cpus!r}",
        )
        self._expect(isolate in (None, True, False), f"isolate {isolate!r}")
        with self._lock:
            self.placement_doc["cpus"] = ",".join(map(str, cpus))
            if isolate is not None:
                self.placement_doc["isolated"] = isolate
            return dict(self.placement_doc)

    def set_numa_node(self, node: int) -> dict[str, Any]:
        self._enter("set_numa_node", node)
        self._expect(type(node) is int and 0 <= node <= 1023, f"node {node!r}")
        with self._lock:
            self.placement_doc["numa_node"] = node
            return dict(self.placement_doc)

    def placement(self) -> dict[str, Any]:
        self._enter("placement")
        with self._lock:
            return dict(self.placement_doc)

    def subscribe(self, kinds: list[str] | None = None) -> FakeSubscription:
        self._enter("subscribe", kinds)
        self._expect(
            kinds is None or (0 < len(kinds) <= 32 and all(isinstance(k, str) for k in kinds)),
            f"kinds {kinds!r}",
        )
        sub = FakeSubscription(self, kinds)
        with self._lock:
            self.subscriptions.append(sub)
        return sub

    def cluster_status(self) -> dict[str, Any]:
        self._enter("cluster_status")
        with self._lock:
            return copy.deepcopy(self.cluster)

    def cluster_failover(self, to: str | None = None) -> dict[str, Any]:
        self._enter("cluster_failover", to)
        self._expect(to is None or bool(NODE_ID_RE.fullmatch(to)), f"failover to {to!r}")
        with self._lock:
            c = self.cluster
            if c["role"] != "primary":
                raise FailedPrecondition(
                    f"{c['node_id']} is not the primary ({c['leader'] or 'none'} is): "
                    "run the failover there"
                )
            ids = {m["node_id"] for m in c["members"]}
            standbys = [m["node_id"] for m in c["members"] if not m["self"] and not m["witness"]]
            if to is None and not standbys:
                raise FailedPrecondition("no standby is healthy and caught up")
            if to is not None and to not in ids:
                raise InvalidArgument("to", f"{to!r} is no member of the cluster")
            if to is not None and to not in standbys:
                why = "this node" if to == c["node_id"] else "a witness: it runs no RT"
                raise InvalidArgument("to", f"{to} is {why}")
            new = to or standbys[0]
            c.update(role="standby", leader=new, term=c["term"] + 1, lease_age_ms=None)
            c["elections"] += 1
            return {"from": c["node_id"], "to": new, "term": c["term"], "gap_ms": 3.5}
