"""This node's part in the cluster: its role, gated on the quorum lease, and
what it replicates.

Roles (DESIGN.md, "Roles and fencing"):
- primary: Raft leader, holding a fresh quorum lease, with a healthy RT, and
  past the wait a new primary owes the old lease (or handed over to);
- standby: a follower that knows the leader, its RT in shadow;
- witness: votes, runs no RT;
- candidate: campaigning, or a new leader still waiting;
- fenced: anything else (no quorum, no leader, an unhealthy RT).

Three threads: `cluster-roles` (every ROLE_TICK_S: lease rounds, the role,
the RT's control block), `cluster-replicator` (the primary's new checkpoints
into the log), `cluster-join` (registers this member once a leader exists).
The RT's own lease is the quorum lease's stamp: written on every
acknowledged round, so an RT whose agent stops stops actuating when the
quorum lease ends.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger

from control.cluster.lease import QuorumLease
from control.cluster.raft import RaftNode, RaftUnavailable, Timings, call_sync
from control.cluster.state import Checkpoint, ClusterState, Member
from control.errors import FailedPrecondition, InvalidArgument
from control.jobs.machine import Job
from rtcore import _core, layout

ROLE_TICK_S = 0.002
REPLICATE_POLL_S = 0.002
HEALTH_REPORT_S = 5.0
LAG_SAMPLES = 4096
LAG_WINDOW_S = 10.0
HANDOVER_TIMEOUT_S = 2.0
STARTUP_GRACE_S = 3.0  # a node whose RT is not up within this grants pre-votes anyway
TRANSFER_RETRY_S = 0.05  # a TimeoutNow that did not make the target leader is sent again
HANDOVER_NS = int(2 * HANDOVER_TIMEOUT_S * 1e9)  # a handover not done by then is given up
CONTACT_HEARTBEATS = 3  # a leader whose majority answered within this many heartbeats appends
STEP_DOWN_CRASHES = 3  # local restarts that did not help
STEP_DOWN_RETRY_S = 1.0


@dataclass
class Hooks:
    """What the cluster needs from the node (the agent wires these)."""

    segment_buf: Callable[[], Any]  # the RT segment's buffer, None if none
    rt_healthy: Callable[[], bool]
    rt_crash_streak: Callable[[], int]  # crashes in a row without a stable run (supervisor)
    job_changed: Callable[[Job], None]
    setting_changed: Callable[[str, Any], None]
    on_role: Callable[[str, str, int], None]  # (old, new, term), on the roles thread
    announce: Callable[..., None]  # (kind, level, message, **fields)


class Cluster:
    def __init__(self, cfg: Any, hooks: Hooks) -> None:
        self.cfg = cfg
        self.node_id = cfg.node_id
        self.hooks = hooks
        self.witness = bool(cfg.witness)
        self.timings = Timings(cfg.election_timeout_ms, cfg.heartbeat_ms, cfg.lease_ms)
        self.lease = QuorumLease(cfg.lease_ms)
        self.state = ClusterState(lambda: self)
        self.raft: RaftNode | None = None
        self.role = "witness" if self.witness else "fenced"
        self.epoch = 0  # the term this node last wrote into its RT's control block
        self.refused = ""  # why the cluster refused this member (fatal)
        self._stop = threading.Event()
        self._inbound_lock = threading.Lock()
        # held while deciding to send a lease round or a checkpoint, and while
        # starting a handover: nothing of this node's may follow a handover
        # entry in the log (it would void the handover's grant)
        self._submit_lock = threading.Lock()
        self._started = time.monotonic()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_round_ns = 0
        self._handover_granted = 0  # the term a handover let this node skip the wait in
        self._handing_over = 0  # the term this node is handing over in (never primary again)
        self._handover_ns = 0
        # (when, ms): replicated checkpoints' lag here; this node's rounds' commit time
        self._lag_ms: collections.deque[tuple[float, float]] = collections.deque(maxlen=LAG_SAMPLES)
        self._round_ms: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=LAG_SAMPLES
        )
        self._last_ckpt_wall_ns = 0
        self._replicated_seq = (0, 0)  # (task_id, seq) of the newest checkpoint sent
        self._unhealthy_since: float | None = None
        self._last_step_down = 0.0
        self._reported: tuple[bool | None, float] = (None, 0.0)
        self.promotions = 0
        self.last_promotion: dict[str, Any] = {}

    # ---- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        self.raft = RaftNode(
            self.cfg.raft,
            list(self.cfg.peers),
            self.cfg.data_dir,
            self.timings,
            self.state,
            self._eligible,
            on_leader_change=self._wake.set,
            priority=self.cfg.raft_priority,
            abstain=self._starting,
        )
        for name, target in (
            ("cluster-roles", self._roles_loop),
            ("cluster-replicator", self._replicate_loop),
            ("cluster-join", self._join_loop),
        ):
            if self.witness and name == "cluster-replicator":
                continue
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        if self.raft is not None:
            if self.role == "primary":
                self._write_control(active=0)
            self.raft.destroy()

    # ---- pysyncobj's listener (ClusterState applies through these) ------------

    def job_changed(self, job: Job) -> None:
        self.hooks.job_changed(job)

    def setting_changed(self, name: str, value: Any) -> None:
        self.hooks.setting_changed(name, value)

    def checkpoint_applied(self, ckpt: Checkpoint) -> None:
        if ckpt.node_id == self.node_id:
            return
        raft = self.raft
        if raft is not None and raft.isReady():
            # not while replaying the journal or catching up after a start:
            # those entries are old by design, not late
            self._lag_ms.append((time.monotonic(), (time.time_ns() - ckpt.wall_ns) / 1e6))
        self._last_ckpt_wall_ns = ckpt.wall_ns
        if self.role != "primary":
            self.write_inbound(ckpt)

    def write_inbound(self, ckpt: Checkpoint | None = None) -> None:
        """Hand a replicated checkpoint to this node's RT (shadow mode adopts it)."""
        ckpt = ckpt or self.state.ckpt
        buf = self.hooks.segment_buf()
        if ckpt is None or buf is None or self.witness:
            return
        # the slot's seqlock has one writer: pysyncobj's thread, the roles
        # thread and the supervisor's events all call this
        with self._inbound_lock:
            _core.write_checkpoint(
                buf,
                _core.INBOUND,
                ckpt.seq,
                ckpt.cycle,
                ckpt.epoch,
                ckpt.task_id,
                ckpt.state,
                origin=ckpt.origin,
            )

    # ---- roles -----------------------------------------------------------------

    def _starting(self) -> bool:
        """Just started, its RT not up yet: it grants no pre-vote, since whether
        it should lead itself (priority, first started) is not known yet."""
        return (
            not self.witness
            and time.monotonic() - self._started < STARTUP_GRACE_S
            and not self.hooks.rt_healthy()
        )

    def _eligible(self) -> bool:
        """May campaign: not a witness, not refused, its RT healthy, not handing over."""
        if self.witness or self.refused:
            return False
        raft = self.raft
        if raft is not None and self._handing_over and raft.term <= self._handing_over:
            return False
        return self.hooks.rt_healthy()

    def _roles_loop(self) -> None:
        while not self._stop.is_set():
            # every ROLE_TICK_S, or at once when leadership or a handover changes
            self._wake.wait(ROLE_TICK_S)
            self._wake.clear()
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - the roles thread must go on
                logger.exception("cluster: role evaluation failed")

    def _tick(self) -> None:
        raft = self.raft
        assert raft is not None
        now = time.monotonic_ns()
        term = raft.term
        leader = raft.is_leader()
        healthy = self.witness or self.hooks.rt_healthy()
        if leader and self._handing_over == term and now - self._handover_ns > HANDOVER_NS:
            # the target never took over: lead again (fresh rounds void the handover)
            self._handing_over = 0
            self.lease.unrevoke(term)
        if leader:
            # the age first, then the time: a delay between them lengthens the
            # wait, never shortens it (reading `now` earlier did)
            age = raft.ack_age_ns(term)
            self.lease.won(term, time.monotonic_ns(), age)
            with self._submit_lock:
                if (
                    healthy
                    and term > self._handing_over
                    and now - self._last_round_ns > (self.lease.lease_ns // 6)
                    and self._in_contact(raft)
                ):
                    self._send_round(term, now)
        role = self._decide(raft, term, leader, healthy, now)
        if role != self.role:
            self._change_role(role, term)
        elif role != "primary" and not self.witness and term != self.epoch:
            self.epoch = term
            self._write_control(epoch=term)
        self._watch_health(raft, leader, healthy)
        self._report_health(raft, healthy)

    def _report_health(self, raft: RaftNode, healthy: bool) -> None:
        """Every member's RT health is in the replicated state: a handover and
        the operator's view check it. Sent on a change, and every second."""
        now = time.monotonic()
        if self.witness or not raft.leader_addr():
            return
        if healthy == self._reported[0] and now - self._reported[1] < HEALTH_REPORT_S:
            return
        self._reported = (healthy, now)
        self.state.report_health(self.node_id, healthy)

    def _decide(self, raft: RaftNode, term: int, leader: bool, healthy: bool, now: int) -> str:
        if self.witness:
            return "witness"
        if self.refused or not healthy:
            return "fenced"
        if leader:
            if term <= self._handing_over:
                return "fenced"
            if not self.lease.valid(term, now):
                return "candidate" if self.lease.start_ns(term) == 0 else "fenced"
            ready = self.lease.ready_at(term)
            if self._handover_granted == term or (ready is not None and now >= ready):
                return "primary"
            return "candidate"
        if raft.is_candidate():
            return "candidate"
        addr = raft.leader_addr()
        if addr and raft.connected(addr):
            return "standby"
        return "fenced"

    def _change_role(self, role: str, term: int) -> None:
        old, self.role = self.role, role
        if role == "primary":
            start = self.lease.start_ns(term)
            self.epoch = term
            self._write_control(
                active=1, epoch=term, lease_ns=start, lease_timeout_ns=self.lease.lease_ns
            )
            self.promotions += 1
            self.last_promotion = {
                "term": term,
                "handover": self._handover_granted == term,
                "mono_ns": time.monotonic_ns(),
            }
        elif old == "primary":
            self._write_control(active=0)
        elif self.epoch != term and not self.witness:
            self.epoch = term
            self._write_control(epoch=term)
        level = "WARN" if "primary" in (old, role) or role == "fenced" else "INFO"
        self.hooks.announce(
            "cluster_role_changed",
            level,
            f"cluster role {old} -> {role} (term {term})",
            old=old,
            role=role,
            term=term,
        )
        self.hooks.on_role(old, role, term)

    def _write_control(self, **fields: Any) -> None:
        buf = self.hooks.segment_buf()
        if buf is not None and not self.witness:
            _core.write_control(buf, **fields)

    def rt_lease_stamp(self) -> int | None:
        """What the lease thread writes into the RT's control block: the quorum
        lease's start while primary, nothing otherwise (it then lapses)."""
        raft = self.raft
        if self.role != "primary" or raft is None:
            return None
        return self.lease.start_ns(raft.term) or None

    def control_args(self) -> list[str]:
        """How this node's RT process starts: in shadow, in the current term;
        the roles thread activates it when this node is primary."""
        return [
            "--standby",
            "--epoch",
            str(max(self.epoch, 1)),
            "--lease-timeout-ms",
            str(self.cfg.lease_ms),
        ]

    # ---- the quorum lease ---------------------------------------------------

    def _in_contact(self, raft: RaftNode) -> bool:
        """A majority answered lately: a leader cut off appends nothing more
        (each entry it appends alone must be undone, one by one, when it is
        back: measured, a cut-off leader's tail held a healed node back ~25 s)."""
        return raft.quorum_contact(CONTACT_HEARTBEATS * self.timings.heartbeat_s)

    def _send_round(self, term: int, t0: int) -> None:
        self._last_round_ns = t0
        self.state.lease_round(self.node_id, term, callback=self._acked_cb(term, t0))

    def _acked_cb(self, term: int, t0: int) -> Callable[[Any, int], None]:
        def acked(result: Any, err: int) -> None:
            raft = self.raft
            if err != 0 or raft is None or raft.term != term or not raft.is_leader():
                return
            self._round_ms.append((time.monotonic(), (time.monotonic_ns() - t0) / 1e6))
            start = self.lease.acknowledged(term, t0)
            if result is True:
                self._handover_granted = term
                self._wake.set()
            if start and self.role == "primary":
                # the RT's lease moves with the quorum lease, without waiting for a thread
                self._write_control(lease_ns=start)

        return acked

    # ---- replication ------------------------------------------------------------

    def _replicate_loop(self) -> None:
        while not self._stop.wait(REPLICATE_POLL_S):
            try:
                self._replicate_once()
            except Exception:  # noqa: BLE001
                logger.exception("cluster: replicating a checkpoint failed")

    def _replicate_once(self) -> None:
        with self._submit_lock:
            self._replicate_locked()

    def _replicate_locked(self) -> None:
        raft = self.raft
        if self.role != "primary" or raft is None or not self._in_contact(raft):
            return
        if raft.term <= self._handing_over:
            return  # handing over: nothing of this node's may follow the handover entry
        buf = self.hooks.segment_buf()
        if buf is None:
            return
        newest: tuple[dict[str, Any], bytes] | None = None
        for slot in range(_core.CKPT_SLOTS):
            result, meta, data = _core.read_checkpoint(buf, slot)
            if result == "ok" and (newest is None or meta["seq"] > newest[0]["seq"]):
                newest = (meta, data)
        if newest is None:
            return
        meta, data = newest
        if meta["flags"] & layout.CKPT_SHADOW or (meta["task_id"], meta["seq"]) == (
            self._replicated_seq
        ):
            return
        self._replicated_seq = (meta["task_id"], meta["seq"])
        mono, real, _ = _core.read_clock(buf)
        term = raft.term
        ckpt = Checkpoint(
            node_id=self.node_id,
            term=term,
            seq=int(meta["seq"]),
            cycle=int(meta["cycle"]),
            epoch=int(meta["epoch"]),
            origin=int(meta["origin"]),
            task_id=int(meta["task_id"]),
            wall_ns=int(meta["mono_ns"]) + real - mono,
            state=data,
        )
        t0 = time.monotonic_ns()
        self._last_round_ns = t0
        self.state.checkpoint(ckpt, callback=self._acked_cb(term, t0))

    def _join_loop(self) -> None:
        me = Member(self.node_id, self.cfg.raft, self.cfg.listen, self.witness)
        voters = tuple(sorted([self.cfg.raft, *self.cfg.peers]))
        while not self._stop.wait(0.05):
            raft = self.raft
            if raft is None or not raft.leader_addr():
                continue
            try:
                verdict, why = call_sync(self.state.join, me, voters, timeout_s=1.0)
            except RaftUnavailable:
                continue
            if verdict != "ok":
                self.refused = why
                self.hooks.announce(
                    "cluster_member_refused", "CRITICAL", f"cluster refused this node: {why}"
                )
            return

    # ---- health-based failover (FR-009) ----------------------------------------

    def _watch_health(self, raft: RaftNode, leader: bool, healthy: bool) -> None:
        """FR-009: a leader whose RT is unhealthy after the supervisor's local
        restarts failed (STEP_DOWN_CRASHES in a row), or that stays unhealthy
        past three rounds of the supervisor's hang checks, hands leadership to
        the freshest standby."""
        if not leader or healthy or self.witness:
            self._unhealthy_since = None
            return
        now = time.monotonic()
        if self._unhealthy_since is None:
            self._unhealthy_since = now
        allowance = 3 * self.cfg.stall_checks * self.cfg.health_interval_ms / 1000
        failing = self.hooks.rt_crash_streak() >= STEP_DOWN_CRASHES
        if not failing and now - self._unhealthy_since < allowance:
            return
        if now - self._last_step_down < STEP_DOWN_RETRY_S:
            return
        self._last_step_down = now
        target = self._freshest_standby(raft)
        if target is None:
            return
        self.hooks.announce(
            "cluster_step_down",
            "CRITICAL",
            f"this node's RT is unhealthy: handing leadership to {target.node_id}",
            to=target.node_id,
        )
        term = raft.term
        with self._submit_lock:
            self._handing_over, self._handover_ns = term, time.monotonic_ns()
        self.lease.revoke(term)
        self._write_control(active=0)

        def hand_over() -> None:
            # its RT is unhealthy, not actuating (the role is fenced); the
            # handover says so, then the same transfer as a planned failover
            try:
                call_sync(self.state.handover, self.node_id, target.node_id, term, timeout_s=2.0)
            except RaftUnavailable:
                self._abort_handover(term)
                return
            self._transfer(raft, target, term)

        threading.Thread(target=hand_over, name="cluster-step-down", daemon=True).start()

    def _freshest_standby(self, raft: RaftNode) -> Member | None:
        match = raft.match_index()
        voters = [
            m
            for m in self.state.members.values()
            if not m.witness
            and m.node_id != self.node_id
            and raft.connected(m.raft)
            and self.state.health.get(m.node_id, (True, 0))[0]
        ]
        if not voters:
            return None
        return max(voters, key=lambda m: (match.get(m.raft, 0), m.node_id))

    # ---- planned failover --------------------------------------------------------

    def failover(self, to: str | None, rt_not_actuating: Callable[[float], bool]) -> dict[str, Any]:
        raft = self.raft
        if raft is None:
            raise FailedPrecondition("this node is not in a cluster")
        by_id = {m.node_id: m for m in self.state.members.values()}
        if to is not None:
            if to not in by_id:
                known = ", ".join(sorted(by_id)) or "none yet"
                raise InvalidArgument("to", f"{to!r} is not a member (members: {known})")
            if to == self.node_id:
                raise InvalidArgument("to", f"{to!r} is this node, the primary already")
            if by_id[to].witness:
                raise FailedPrecondition(f"{to} is a witness: it runs no RT loop")
        if self.role != "primary":
            leader = self.leader_node_id()
            raise FailedPrecondition(
                f"this node is {self.role}, not the primary"
                + (f"; the primary is {leader}" if leader else "")
            )
        target = by_id[to] if to is not None else self._freshest_standby(raft)
        if target is None:
            raise FailedPrecondition("no connected standby to hand over to")
        if not raft.connected(target.raft):
            raise FailedPrecondition(f"{target.node_id} is not connected to this node")
        if not self.state.health.get(target.node_id, (True, 0))[0]:
            raise FailedPrecondition(f"{target.node_id}'s RT is not healthy")
        term = raft.term
        start = time.monotonic()
        # 1. stop actuating at a cycle boundary, and give up the lease of this term
        with self._submit_lock:
            self._handing_over, self._handover_ns = term, time.monotonic_ns()
        self.lease.revoke(term)
        self._write_control(active=0)
        if not rt_not_actuating(HANDOVER_TIMEOUT_S):
            self._abort_handover(term)
            raise FailedPrecondition("the RT did not stop actuating within 2 s")
        # 2. say so through the log: the target need not wait a lease out
        try:
            call_sync(self.state.handover, self.node_id, target.node_id, term, timeout_s=2.0)
        except RaftUnavailable as e:
            self._abort_handover(term)
            raise FailedPrecondition(f"the handover did not commit: {e}") from None
        # 3. make the target leader now (it must have every entry)
        if not self._transfer(raft, target, term):
            raise FailedPrecondition(
                f"{target.node_id} did not take over within {HANDOVER_TIMEOUT_S:.0f} s; "
                "this node stays primary"
            )
        return {
            "from": self.node_id,
            "to": target.node_id,
            "term": raft.term,
            "handover_ms": round((time.monotonic() - start) * 1000, 1),
            "gap_ms": None,  # the journals have it: `rtctl rt journal` on both nodes
        }

    def _transfer(self, raft: RaftNode, target: Member, term: int) -> bool:
        """Make `target` leader (Raft's TimeoutNow). pysyncobj refuses a target
        that lacks an entry, and the others' forwarded entries (health
        reports) keep coming: asked again until it is caught up at the moment
        of asking, and wins. Not taken over in time: this node may lead again,
        from new rounds (they void the handover: the target cannot skip a
        wait). True if leadership moved."""
        deadline = time.monotonic() + HANDOVER_TIMEOUT_S
        while time.monotonic() < deadline and raft.leader_addr() == self.cfg.raft:
            if raft.match_index().get(target.raft, 0) >= raft.last_index():
                raft.transfer_to(target.raft)
                retry = time.monotonic() + TRANSFER_RETRY_S
                while time.monotonic() < retry and raft.leader_addr() == self.cfg.raft:
                    time.sleep(0.0005)
            else:
                time.sleep(0.0005)
        if raft.leader_addr() == self.cfg.raft and raft.term == term:
            self._abort_handover(term)
            return False
        return True

    def _abort_handover(self, term: int) -> None:
        self._handing_over = 0
        self.lease.unrevoke(term)

    # ---- reading -----------------------------------------------------------------

    def leader_node_id(self) -> str:
        raft = self.raft
        addr = raft.leader_addr() if raft is not None else ""
        m = self.state.members.get(addr)
        return m.node_id if m is not None else addr

    def has_quorum(self) -> bool:
        raft = self.raft
        return bool(raft is not None and raft.hasQuorum)

    @staticmethod
    def recent(samples: collections.deque[tuple[float, float]]) -> dict[str, Any]:
        """p50/p99/max of the samples of the last LAG_WINDOW_S seconds: what the
        cluster does now, not what a restart or a failover minutes ago did."""
        since = time.monotonic() - LAG_WINDOW_S
        lags = sorted(ms for when, ms in list(samples) if when >= since)
        if not lags:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0, "count": 0}

        def q(p: float) -> float:
            return round(lags[min(len(lags) - 1, int(p * len(lags)))], 3)

        return {"p50": q(0.5), "p99": q(0.99), "max": round(lags[-1], 3), "count": len(lags)}

    def status(self) -> dict[str, Any]:
        raft = self.raft
        now = time.monotonic_ns()
        term = raft.term if raft is not None else 0
        age = self.lease.age_ns(term, now) if self.role == "primary" else None
        members = []
        known = {m.raft: m for m in self.state.members.values()}
        for addr in sorted([self.cfg.raft, *self.cfg.peers]):
            m = known.get(addr)
            members.append(
                {
                    "node_id": m.node_id if m else ("" if addr != self.cfg.raft else self.node_id),
                    "raft": addr,
                    "listen": m.listen if m else (self.cfg.listen if addr == self.cfg.raft else ""),
                    "witness": m.witness if m else (addr == self.cfg.raft and self.witness),
                    "self": addr == self.cfg.raft,
                    "connected": addr == self.cfg.raft
                    or bool(raft is not None and raft.connected(addr)),
                }
            )
        ckpt_lag = (
            round((time.time_ns() - self._last_ckpt_wall_ns) / 1e6, 1)
            if self._last_ckpt_wall_ns
            else None
        )
        return {
            "node_id": self.node_id,
            "role": self.role,
            "term": term,
            "leader": self.leader_node_id(),
            "has_quorum": self.has_quorum(),
            "lease_ms": self.cfg.lease_ms,
            "lease_age_ms": round(age / 1e6, 2) if age is not None else None,
            "elections": raft.elections if raft is not None else 0,
            "commit_index": raft.raftCommitIndex if raft is not None else 0,
            "last_applied": raft.raftLastApplied if raft is not None else 0,
            "checkpoint_lag_ms": ckpt_lag,
            "replication_lag_ms": self.recent(self._lag_ms),
            "commit_ms": self.recent(self._round_ms),
            "promotions": self.promotions,
            "refused": self.refused,
            "members": members,
        }
