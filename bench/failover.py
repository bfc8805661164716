"""`rtctl bench failover`: three real nodes on loopback, the primary killed
(agent and RT, SIGKILL) again and again, then planned handovers.

Every figure comes from the nodes' own evidence:
- failover_gap_ms: the dead primary's last actuated cycle (its segment's
  status block, which outlives it) -> the new primary's first actuated cycle
  (its actuation journal), both CLOCK_MONOTONIC on this machine;
- planned_gap_ms: the old primary's journal END -> the new one's START;
- lost_jobs: jobs acknowledged to the client that the cluster no longer
  has, or that never finish;
- duplicate_waypoints: (job, waypoint) pairs reported reached by two nodes'
  RTs: every node's event stream, plus what a dead RT left undrained in its
  event ring;
- replication_lag_ms: the standbys' apply time of each replicated checkpoint
  minus the time the primary's RT wrote it;
- misses: the primary's deadline misses with replication on, against one
  node alone (no replication) for as long, on the same CPU.

The same-run baseline is pysyncobj itself with its default configuration:
three bare processes, the leader killed, time until a follower reports a new
leader; and a synchronous commit there.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench import machine
from bench.runner import (
    BenchError,
    _stop_with_parent,
    background_agent,
    child_env,
    free_port,
    percentile,
    terminate,
    wait_until,
)
from rtcore.segment import Segment, SegmentError

# this process forks agents while its event streams run; every child execs at
# once, so gRPC's fork handlers have nothing to do (and would log each fork)
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

GOAL_GAP_P50_MS = 100.0
GOAL_GAP_MAX_MS = 300.0
GOAL_PLANNED_MS = 5.0
GOAL_LAG_P99_MS = 20.0
REQUIREMENT_S = 5.0
STEP_TIMEOUT_S = 30.0
SETTLE_UPTIME_S = 2.0  # every node up this long before the next kill (steady state)
JOB_WAYPOINTS = 60
JOB_DT_S = 0.25  # a waypoint every quarter second: the long job spans the kills


@dataclass(frozen=True)
class FailoverOptions:
    kills: int = 10
    planned: int = 5
    cpu: int | None = None
    baseline_kills: int = 3
    misses_seconds: float = 20.0


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"p50": None, "max": None, "samples": []}
    return {
        "p50": round(percentile(values, 0.5), 2),
        "p90": round(percentile(values, 0.9), 2),
        "max": round(max(values), 2),
        "min": round(min(values), 2),
        "samples": [round(v, 2) for v in values],
    }


@dataclass
class Node:
    node_id: str
    raft: str
    listen: str
    data_dir: str
    peers: list[str]
    cpu: int
    proc: subprocess.Popen | None = None
    log: Any = None

    @property
    def shm(self) -> str:
        return f"rtcore-{self.node_id}"

    def start(self) -> None:
        argv = [sys.executable, "-m", "control.cli", "agent", "--node-id", self.node_id]
        argv += ["--listen", self.listen, "--metrics-listen", "", "--data-dir", self.data_dir]
        argv += ["--cpus", str(self.cpu), "--raft", self.raft]
        argv += [a for p in self.peers for a in ("--peer", p)]
        argv += ["--config", os.path.join(self.data_dir, "..", "bench.toml")]
        self.log = open(os.path.join(self.data_dir + ".log"), "a")  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=child_env(),
            start_new_session=True,
            preexec_fn=_stop_with_parent,
        )

    def rt_pid(self) -> int:
        with contextlib.suppress(SegmentError, FileNotFoundError):
            seg = Segment.open(self.shm)
            try:
                return seg.owner_pid()
            finally:
                seg.close()
        return 0

    def kill(self) -> None:
        """Agent and RT, SIGKILL, together."""
        rt = self.rt_pid()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if rt:
            with contextlib.suppress(ProcessLookupError):
                os.kill(rt, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, grace_s=10)
        rt = self.rt_pid()
        if rt:
            with contextlib.suppress(ProcessLookupError):
                os.kill(rt, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/dev/shm/{self.shm}")
        if self.log is not None:
            self.log.close()

    def client(self, timeout: float = 2.0) -> Any:
        from control.rpc.client import Client

        return Client(self.listen, timeout=timeout)

    def status(self) -> dict | None:
        try:
            with self.client() as c:
                return c.status()
        except Exception:  # noqa: BLE001 - down or not serving yet
            return None


@dataclass
class Waypoints:
    """(job, waypoint) -> the nodes whose RT reported it reached."""

    seen: dict[tuple[int, int], set[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, node: str, job: int, index: int) -> None:
        with self.lock:
            self.seen.setdefault((job, index), set()).add(node)

    def duplicates(self) -> list[tuple[int, int]]:
        with self.lock:
            return sorted(k for k, nodes in self.seen.items() if len(nodes) > 1)


class Cluster:
    def __init__(self, cpu: int, root: str) -> None:
        addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
        tag = os.getpid()
        self.nodes = [
            Node(
                f"fo{tag}n{i + 1}",
                addr,
                f"127.0.0.1:{free_port()}",
                os.path.join(root, f"n{i + 1}"),
                [a for a in addrs if a != addr],
                cpu,
            )
            for i, addr in enumerate(addrs)
        ]
        for n in self.nodes:
            os.makedirs(n.data_dir, exist_ok=True)
        with open(os.path.join(root, "bench.toml"), "w") as f:
            # a crash every few seconds is the benchmark, not a crash loop
            f.write("restart_stable_ms = 100\n")
        self.waypoints = Waypoints()
        self._watchers: dict[str, threading.Thread] = {}
        self._stop = threading.Event()

    def start(self) -> None:
        for n in self.nodes:
            n.start()
            self.watch(n)

    def watch(self, n: Node) -> None:
        """Follow the node's RT's waypoint events (until it dies)."""

        def follow() -> None:
            while not self._stop.is_set() and n.proc is not None and n.proc.poll() is None:
                try:
                    with n.client(timeout=5) as c, c.watch(["rt.waypoint_reached"]) as events:
                        for ev in events:
                            f = ev.get("fields") or {}
                            self.waypoints.add(n.node_id, int(f["a"]), int(f["b"]))
                            if self._stop.is_set():
                                return
                except Exception:  # noqa: BLE001 - not serving yet, or gone
                    time.sleep(0.05)

        t = threading.Thread(target=follow, name=f"watch-{n.node_id}", daemon=True)
        t.start()
        self._watchers[n.node_id] = t

    def post_mortem(self, n: Node) -> None:
        """A dead RT's events its agent had not drained yet: still in the ring."""
        from rtcore import reftask
        from rtcore.records import Drainer

        with contextlib.suppress(SegmentError, FileNotFoundError):
            seg = Segment.open(n.shm)
            try:
                for ev in Drainer(seg.buf).drain("event"):
                    if ev["kind_id"] == reftask.EV_WAYPOINT_REACHED:
                        self.waypoints.add(n.node_id, int(ev["a"]), int(ev["b"]))
            finally:
                seg.close()

    def roles(self) -> dict[str, tuple[str, int]]:
        out = {}
        for n in self.nodes:
            st = n.status()
            if st is not None:
                out[n.node_id] = (st["role"], int(st["cluster"]["term"]))
        return out

    def primary(self, exclude: str = "", timeout: float = STEP_TIMEOUT_S) -> Node:
        def one() -> Node | None:
            prim = [i for i, (r, _) in self.roles().items() if r == "primary" and i != exclude]
            return next(n for n in self.nodes if n.node_id == prim[0]) if len(prim) == 1 else None

        return wait_until(one, timeout, "one primary", interval=0.005)

    def settled(self) -> Node:
        """One primary and two standbys that have applied replicated checkpoints."""

        def ok() -> Node | None:
            roles = self.roles()
            if sorted(r for r, _ in roles.values()) != ["primary", "standby", "standby"]:
                return None
            for n in self.nodes:
                with n.client() as c:
                    if c.status()["agent"]["uptime_s"] < SETTLE_UPTIME_S:
                        return None  # a node just restarted: still in its vote hold-out
                    if (
                        roles[n.node_id][0] == "standby"
                        and not (c.cluster_status()["replication_lag_ms"]["count"])
                    ):
                        return None
            return next(n for n in self.nodes if roles[n.node_id][0] == "primary")

        return wait_until(ok, 60, "a primary and two standbys in step", interval=0.05)

    def stop(self) -> None:
        self._stop.set()
        for n in self.nodes:
            n.stop()


def _first_actuated_mono(n: Node) -> int:
    with n.client() as c:
        j = c.journal(limit=1)
    return int(j["intervals"][-1]["start_mono_ns"])


def _last_actuated_mono(n: Node) -> int:
    seg = Segment.open(n.shm)
    try:
        st = seg.view()["status"]
        value = int(st["act_last_mono_ns"])
        del st
        return value
    finally:
        seg.close()


def _kill_trial(cluster: Cluster, acknowledged: list[int]) -> dict:
    primary = cluster.settled()
    term = cluster.roles()[primary.node_id][1]
    with primary.client() as c:
        job = c.submit_job("probe", [(0.02 * (i + 1), [0.0] * 6) for i in range(3)])
    acknowledged.append(int(job["id"]))
    primary.kill()
    t_kill = time.monotonic_ns()
    cluster.post_mortem(primary)
    last = _last_actuated_mono(primary)
    new = cluster.primary(exclude=primary.node_id)
    first = _first_actuated_mono(new)
    new_term = cluster.roles()[new.node_id][1]
    # its segment stays (as after a crash): the restarted agent closes the dead
    # RT's actuation interval from its status block, exactly
    primary.start()
    cluster.watch(primary)
    return {
        "killed": primary.node_id,
        "new_primary": new.node_id,
        "gap_ms": round((first - last) / 1e6, 2),
        "kill_to_first_actuation_ms": round((first - t_kill) / 1e6, 2),
        "terms": new_term - term,
    }


def _planned_trial(cluster: Cluster) -> dict:
    primary = cluster.settled()
    with primary.client(timeout=10) as c:
        out = c.cluster_failover(None)
    new = next(n for n in cluster.nodes if n.node_id == out["to"])
    wait_until(
        lambda: cluster.roles().get(new.node_id, ("",))[0] == "primary", 10, "the new primary"
    )
    with primary.client() as c:
        old_end = c.journal(limit=1)["intervals"][-1]["end_mono_ns"]
    first = _first_actuated_mono(new)
    return {
        "from": primary.node_id,
        "to": new.node_id,
        "gap_ms": round((first - int(old_end)) / 1e6, 3),
        "handover_ms": out.get("handover_ms"),
    }


def _misses_over(n: Node, seconds: float) -> int:
    with n.client() as c:
        m0 = int(c.status()["rt"]["misses"])
        time.sleep(seconds)
        return int(c.status()["rt"]["misses"]) - m0


_BARE = r"""
import json, sys, time
from pysyncobj import SyncObj, SyncObjConf, replicated

class Counter(SyncObj):
    def __init__(self, me, others):
        super().__init__(me, others, SyncObjConf())  # pysyncobj's defaults
        self.n = 0
    @replicated
    def inc(self):
        self.n += 1
        return self.n

me, out = sys.argv[1], sys.argv[2]
node = Counter(me, sys.argv[3:])
commits = []
while True:
    leader = node._getLeader()
    if node._isLeader() and len(commits) < 20:
        t0 = time.monotonic()
        try:
            node.inc(sync=True, timeout=5)
            commits.append((time.monotonic() - t0) * 1000)
        except Exception:
            pass
    with open(out + ".tmp", "w") as f:
        json.dump({"leader": leader.id if leader else None, "term": node._getTerm(),
                   "commits": commits}, f)
    import os; os.replace(out + ".tmp", out)
    time.sleep(0.002)
"""


def _pysyncobj_defaults(kills: int, root: str) -> dict:
    """pysyncobj as it comes: three bare processes, the leader killed."""
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    outs = [os.path.join(root, f"bare{i}.json") for i in range(3)]
    procs: dict[int, subprocess.Popen] = {}

    def spawn(i: int) -> None:
        others = [a for a in addrs if a != addrs[i]]
        procs[i] = subprocess.Popen(
            [sys.executable, "-c", _BARE, addrs[i], outs[i], *others],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=child_env(),
            preexec_fn=_stop_with_parent,
        )

    def view(i: int) -> dict | None:
        try:
            with open(outs[i]) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def leader(alive: list[int]) -> str | None:
        views = [view(i) for i in alive]
        ids = {v["leader"] for v in views if v}
        return ids.pop() if len(ids) == 1 and None not in ids and all(views) else None

    gaps: list[float] = []
    commits: list[float] = []

    def new_leader(alive: list[int], dead: str) -> bool:
        ld = leader(alive)
        return ld is not None and ld != dead

    try:
        for i in range(3):
            spawn(i)
        for _ in range(kills):
            lead = wait_until(lambda: leader([0, 1, 2]), 60, "a pysyncobj leader", interval=0.01)
            i = addrs.index(lead)
            time.sleep(1.0)  # let it commit some entries first
            v = view(i)
            commits += v["commits"] if v else []
            procs[i].kill()
            procs[i].wait()
            t0 = time.monotonic()
            alive = [k for k in range(3) if k != i]
            wait_until(
                functools.partial(new_leader, alive, lead),
                60,
                "a new pysyncobj leader",
                interval=0.005,
            )
            gaps.append((time.monotonic() - t0) * 1000)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(outs[i])
            spawn(i)
    finally:
        for p in procs.values():
            terminate(p, grace_s=1)
    return {
        "what": "pysyncobj 0.3.17 with its default SyncObjConf: 3 processes on loopback, "
        "the leader killed with SIGKILL, time until the survivors agree on a new leader; "
        "commit_ms: a synchronous replicated call on the leader",
        "failover_ms": _summary(gaps),
        "commit_ms": _summary(commits),
    }


def run(opts: FailoverOptions) -> dict:
    cpu = machine.default_cpu() if opts.cpu is None else opts.cpu
    machine.check_cpu(cpu)
    root = tempfile.mkdtemp(prefix="rtc-bench-failover-")
    cluster = Cluster(cpu, root)
    kills: list[dict] = []
    planned: list[dict] = []
    acknowledged: list[int] = []
    try:
        cluster.start()
        primary = cluster.settled()
        with primary.client() as c:
            long_job = int(
                c.submit_job(
                    "long",
                    [(JOB_DT_S * (i + 1), [0.02 * (i % 9)] * 6) for i in range(JOB_WAYPOINTS)],
                )["id"]
            )
        acknowledged.append(long_job)
        for _ in range(opts.kills):
            kills.append(_kill_trial(cluster, acknowledged))
        primary = cluster.settled()
        misses_on = _misses_over(primary, opts.misses_seconds)
        # steady state: the nodes report their last 10 s, the end of that window
        lags, commits = [], []
        for n in cluster.nodes:
            with n.client() as c:
                cs = c.cluster_status()
            if cs["role"] == "standby" and cs["replication_lag_ms"]["count"]:
                lags.append(cs["replication_lag_ms"])
            if cs["role"] == "primary":
                commits.append(cs["commit_ms"])
        for _ in range(opts.planned):
            planned.append(_planned_trial(cluster))
        primary = cluster.settled()

        def finished() -> bool:
            with primary.client() as c:
                return all(c.get_job(j)["state"] == "done" for j in acknowledged)

        lost = []
        with contextlib.suppress(BenchError):  # what is not done by then is counted below
            wait_until(finished, JOB_WAYPOINTS * JOB_DT_S + 60, "every acknowledged job done")
        with primary.client() as c:
            for j in acknowledged:
                try:
                    if c.get_job(j)["state"] != "done":
                        lost.append(j)
                except Exception:  # noqa: BLE001 - not found: lost
                    lost.append(j)
            long_state = c.get_job(long_job)
    finally:
        cluster.stop()
    with background_agent("fo-alone", cpu) as alone:
        from control.rpc.client import Client

        with Client(alone.target, timeout=5) as c:
            m0 = int(c.status()["rt"]["misses"])
            time.sleep(opts.misses_seconds)
            misses_off = int(c.status()["rt"]["misses"]) - m0
    baseline = _pysyncobj_defaults(opts.baseline_kills, root)
    shutil.rmtree(root, ignore_errors=True)

    gaps = [k["gap_ms"] for k in kills]
    pgaps = [p["gap_ms"] for p in planned]
    dups = cluster.waypoints.duplicates()
    lag_p99 = max((lag["p99"] for lag in lags), default=None)
    gap = _summary(gaps)
    base_p50 = baseline["failover_ms"]["p50"]
    return {
        "kills": opts.kills,
        "cpu": cpu,
        "failover_gap_ms": gap,
        "planned_gap_ms": _summary(pgaps),
        "lost_jobs": len(lost),
        "lost_job_ids": lost,
        "duplicate_waypoints": len(dups),
        "duplicates": dups[:20],
        "long_job": {k: long_state[k] for k in ("state", "cursor", "attempts", "n_waypoints")},
        "elections": sum(k["terms"] for k in kills),
        "replication_lag_ms": {
            "p99": lag_p99,
            "standbys": lags,
        },
        "commit_ms": commits,
        "misses": {
            "replication_on": misses_on,
            "replication_off": misses_off,
            "window_s": opts.misses_seconds,
        },
        "trials": {"kills": kills, "planned": planned},
        "baseline": baseline,
        "ratio": {
            "failover_p50_to_pysyncobj_defaults": (
                round(gap["p50"] / base_p50, 4) if base_p50 and gap["p50"] else None
            ),
        },
        "goals": {
            "failover_gap_p50_le_100ms": gap["p50"] is not None and gap["p50"] <= GOAL_GAP_P50_MS,
            "failover_gap_max_le_300ms": gap["max"] is not None and gap["max"] <= GOAL_GAP_MAX_MS,
            "requirement_lt_5s": gap["max"] is not None and gap["max"] < REQUIREMENT_S * 1000,
            "planned_gap_le_5ms": bool(pgaps) and max(pgaps) <= GOAL_PLANNED_MS,
            "lost_jobs_0": not lost,
            "duplicate_waypoints_0": not dups,
            "replication_lag_p99_le_20ms": lag_p99 is not None and lag_p99 <= GOAL_LAG_P99_MS,
            "misses_not_above_alone": misses_on <= misses_off,
        },
        "machine": machine.describe(),
    }


def format_text(r: dict) -> str:
    g, p = r["failover_gap_ms"], r["planned_gap_ms"]
    b = r["baseline"]["failover_ms"]
    lines = [
        f"failover: {r['kills']} kills of the primary (agent and RT, SIGKILL), 3 nodes on "
        f"loopback, RTs on CPU {r['cpu']}",
        f"  gap (last actuated cycle -> first of the new primary): p50 {g['p50']} ms, "
        f"max {g['max']} ms; elections {r['elections']}",
        f"  planned handover gap: p50 {p['p50']} ms, max {p['max']} ms",
        f"  lost jobs {r['lost_jobs']}, duplicate waypoints {r['duplicate_waypoints']}, "
        f"replication lag p99 {r['replication_lag_ms']['p99']} ms",
        f"  misses in {r['misses']['window_s']} s: primary replicating "
        f"{r['misses']['replication_on']}, one node alone {r['misses']['replication_off']}",
        f"  baseline (pysyncobj defaults): new leader after p50 {b['p50']} ms, max {b['max']} ms",
        "  goals: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in r["goals"].items()),
    ]
    return "\n".join(lines)
