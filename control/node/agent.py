"""The node agent: the composition root of the control plane.

The only module that knows every part. It builds them, wires them together
(who feeds whom), starts them in dependency order and stops them in reverse
(control.node.lifecycle), and implements control.api.AgentAPI on top.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import os
import threading
import time
from typing import Any

from loguru import logger

from control.api import LOG_LEVELS, RT_ACTIONS, Waypoint
from control.cluster.cluster import Cluster, Hooks
from control.cluster.jobs import ReplicatedJobs
from control.config import AgentConfig
from control.errors import ControlError, FailedPrecondition, InvalidArgument
from control.jobs.runner import JobRunner, checkpoint_position
from control.jobs.store import JobStore
from control.jobs.trajectory import validate_name, validate_waypoints
from control.logs.ecs import LEVEL_NAMES, LEVELS, AgentLogEncoder, Identity, RtLogEncoder
from control.logs.setup import open_pipeline
from control.node import logsetup, status
from control.node.drainer import Drainer, Subscriber
from control.node.eventbus import EventBus, Subscription
from control.node.lifecycle import Component, Lifecycle
from control.node.ticker import Ticker
from control.placement.placement import PlacementManager
from control.rt.commands import CommandWriter
from control.rt.journal import ActuationJournal
from control.rt.lease import LeaseKeeper
from control.rt.link import SegmentLink
from control.rt.supervisor import Supervisor
from control.state.checkpoint import CheckpointSaver, CheckpointStore
from control.tracing import context as tracectx
from control.tracing.alerts import Alerts
from control.tracing.budget import COUNTERS as TRACE_COUNTERS
from control.tracing.budget import SamplingBudget
from control.tracing.diagnose import diagnose
from control.tracing.propagation import TracePropagation
from control.tracing.store import TraceStore
from rtcore import _core, layout, reftask
from rtcore.records import Batch, Decoder, journal_dicts
from rtcore.segment import pid_alive

# 10 ms of the busiest loop (10 kHz, every cycle traced) is far below a ring's 4096 records
DRAIN_INTERVAL_S = 0.01
JOB_TICK_S = 0.05
TRACE_BUDGET_S = 2.0
# reading numa_maps walks the RT process's page tables: seconds apart
NUMA_SAMPLE_S = 5.0
# the spool is fsynced at most this often (records reach the sinks before)
LOG_SYNC_S = 0.1
LOG_RETENTION_S = 60.0
# a single node is the primary of itself; the cluster will use Raft terms
SINGLE_NODE_EPOCH = 1
RT_EVENT_LEVELS = {"deadline_miss": "ERROR"}
TASK_EVENTS = {
    reftask.EV_TRAJ_STARTED: "trajectory_started",
    reftask.EV_WAYPOINT_REACHED: "waypoint_reached",
    reftask.EV_TRAJ_DONE: "trajectory_done",
    reftask.EV_TRACKING_ERROR: "tracking_error",
}
LOGURU_LEVELS = logsetup.LOGURU_LEVELS
ACT_FIELDS = (
    "actuated_cycles",
    "act_epoch",
    "act_first_cycle",
    "act_first_mono_ns",
    "act_first_real_ns",
    "act_last_cycle",
    "act_last_mono_ns",
    "act_interval_cycles",
)


class AgentLockError(ControlError):
    pass


class Agent:
    """One node. start() brings everything up; close() takes it down in order."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.started = time.monotonic()
        os.makedirs(cfg.data_dir, exist_ok=True)
        self._lock_file = self._take_lock()
        self.origin = node_origin(cfg.node_id)
        self.link = SegmentLink(cfg.shm_name)
        self.bus = EventBus(cfg.node_id)
        self.checkpoints = CheckpointStore(
            os.path.join(cfg.data_dir, "checkpoints"),
            keep=cfg.checkpoint_keep,
            on_corrupt=self._on_corrupt,
        )
        self.saver = CheckpointSaver(self.checkpoints, interval_ms=cfg.checkpoint_interval_ms)
        self.cluster: Cluster | None = None
        self._promoted = False  # the roles thread made this node primary: the runner resumes
        local_jobs = JobStore(os.path.join(cfg.data_dir, "jobs.db"))
        self.jobs: Any = local_jobs
        if cfg.raft:
            self.cluster = Cluster(
                cfg,
                Hooks(
                    segment_buf=self._segment_buf,
                    rt_healthy=self._rt_healthy,
                    rt_crash_streak=lambda: int(self.supervisor.info()["crash_streak"]),
                    job_changed=local_jobs.put,
                    setting_changed=self._apply_setting,
                    on_role=self._on_role,
                    announce=self._announce,
                ),
            )
            self.jobs = ReplicatedJobs(local_jobs, self.cluster.state)
        self._seq = itertools.count(int(time.time() * 1000) << 16)
        self._seq_lock = threading.Lock()
        self.commands = CommandWriter(self.link, self._epoch)
        self.propagation = TracePropagation(
            self.commands.send,
            self._record_spans,
            self._next_seq,
            cfg.node_id,
            lambda: self._trace_ratio,
        )
        self.runner = JobRunner(
            self.jobs,
            self.propagation.send_job_commands,
            self._next_seq,
            lambda: checkpoint_position(self.link.get()),
        )
        self.journal = ActuationJournal(os.path.join(cfg.data_dir, "journal.jsonl"), cfg.node_id)
        # before the supervisor: the saved placement decides how the RT process starts
        self.placement_mgr = PlacementManager(
            cfg, lambda: self.supervisor.pid, self._on_placement_event
        )
        self.lease = (
            LeaseKeeper(self._segment_buf, cfg.lease_timeout_ms)
            if self.cluster is None
            else LeaseKeeper(self._segment_buf, cfg.lease_ms, stamp=self.cluster.rt_lease_stamp)
        )
        self.supervisor = Supervisor(
            cfg,
            self._on_supervisor_event,
            self._restore_file,
            self.placement_mgr.isolator.rt_procs_file,
            self._control_args,
            link=self.link,
        )
        self.drainer = Drainer(self._mapped_segment, lambda: self.link.generation, DRAIN_INTERVAL_S)
        self.drainer.subscribe(Subscriber("events", {"event"}, self._on_rt_events))
        self.log_ident = Identity.of(cfg.node_id)
        self.logs, self.log_store = open_pipeline(cfg)
        self._rt_logs = RtLogEncoder(self.log_ident, self._rt_writer_pid)
        self._agent_logs = AgentLogEncoder(self.log_ident, os.getpid())
        # inline: a record leaves the RT's ring only once the spool has it
        self.drainer.subscribe(Subscriber("logs", {"log"}, self._on_rt_logs, inline=True))
        self.drainer.subscribe(Subscriber("log-echo", {"log"}, self._echo_rt_logs))
        self.traces = TraceStore(os.path.join(cfg.data_dir, "traces"))
        self._trace_ratio = cfg.trace_ratio
        self.alerts = Alerts(self._on_alert)
        self.budget = SamplingBudget(cfg.trace_budget_pct)
        self.otlp: Any = None
        if cfg.otlp_endpoint:
            from control.tracing.otlp import OtlpExport

            self.otlp = OtlpExport(cfg.otlp_endpoint, cfg.node_id)
            warn_if_unreachable(cfg.otlp_endpoint)
        self.drainer.subscribe(Subscriber("spans", {"span"}, self._on_rt_spans))
        self._journal_sub = self.drainer.subscribe(
            Subscriber("journal", {"journal"}, self._on_rt_journal, lossless=True)
        )
        self._levels = {"rt": cfg.log_level, "agent": cfg.log_level}
        self._adopt_recheck: tuple[int, int] | None = None
        self._stop_rt = True
        self._grpc: Any = None
        self._metrics: Any = None
        self.metrics_port = 0
        self.lifecycle = self._compose()

    def _compose(self) -> Lifecycle:
        """Start order; stop is the reverse. The ports come before the RT (an
        agent that cannot serve must not start one); the RT stops before the
        drainer, so its last records are drained and kept; the final
        checkpoint, the job database and the lock go last."""
        life = Lifecycle()
        life.add(Component("lock", stop=self._lock_file.close))
        life.add(Component("jobs database", stop=self.jobs.close))
        life.add(Component("trace store", stop=self.traces.close))
        # stops after the drainer and every other part: their last words are kept
        life.add(Component("log pipeline", start=self._start_logs, stop=self._stop_logs))
        if self.otlp is not None:
            # stops after the drainer (reverse order): the last spans are sent
            life.add(Component("otlp export", stop=self.otlp.close))
        life.add(Component("final checkpoint", stop=self._save_final_checkpoint))
        life.add(Component("ports", start=self._serve, stop=self._stop_serving))
        life.add(Component("drainer", start=self.drainer.start, stop=self.drainer.stop))
        # after the drainer: settling a dead RT's interval drains its journal ring
        # first (before it, the flush never came and the interval stayed open)
        life.add(
            Component("journal", start=self._settle_dead_rt_journal, stop=self._settle_journal)
        )
        for ticker in (
            Ticker("checkpoint-saver", self.saver.interval_s, self._save_checkpoint),
            Ticker("job-runner", JOB_TICK_S, self._tick_jobs),
            Ticker("numa-sampler", NUMA_SAMPLE_S, self._sample_numa),
            Ticker("trace-budget", TRACE_BUDGET_S, self._check_trace_budget),
            Ticker("log-spool-sync", LOG_SYNC_S, self.logs.sync),
            Ticker("log-retention", LOG_RETENTION_S, self._log_retention),
        ):
            life.add(Component(ticker.name, start=ticker.start, stop=ticker.stop))
        if self.cfg.witness:
            # a witness votes and serves; it runs no RT loop
            life.add(Component("cluster", start=self._start_cluster, stop=self._stop_cluster))
            return life
        life.add(Component("lease", start=self.lease.start, stop=self.lease.stop))
        life.add(
            Component("placement", start=self.placement_mgr.recover, stop=self._undo_placement)
        )
        life.add(
            Component(
                "supervisor",
                start=self.supervisor.start,
                stop=lambda: self.supervisor.close(stop_rt=self._stop_rt),
                stop_timeout_s=15.0,
            )
        )
        if self.cluster is not None:
            # stops first: a primary's RT stops actuating before anything else goes
            life.add(Component("cluster", start=self._start_cluster, stop=self._stop_cluster))
        return life

    def _start_cluster(self) -> None:
        assert self.cluster is not None
        self.cluster.start()

    def _stop_cluster(self) -> None:
        assert self.cluster is not None
        self.cluster.stop()

    # ---- lifecycle ----------------------------------------------------

    def _take_lock(self) -> Any:
        path = os.path.join(self.cfg.data_dir, "agent.lock")
        f = open(path, "a+")  # noqa: SIM115 - held for the agent's life
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            other = f.read().strip() or "?"
            f.close()
            raise AgentLockError(
                f"another agent (pid {other}) is running for node {self.cfg.node_id!r} "
                f"with data directory {self.cfg.data_dir}"
            ) from None
        f.truncate(0)
        f.write(str(os.getpid()))
        f.flush()
        return f

    def start(self) -> None:
        self.lifecycle.start()
        logger.info(
            "agent {} listening on {} (metrics on port {}), data in {}",
            self.cfg.node_id,
            self.cfg.listen,
            self.metrics_port,
            self.cfg.data_dir,
        )

    def close(self, stop_rt: bool = True) -> None:
        """Stop everything in reverse order, each part bounded and on its own."""
        self._stop_rt = stop_rt
        self.lifecycle.stop()

    def _serve(self) -> None:
        from control.node.metrics import Metrics
        from control.rpc.service import serve

        if self.cfg.metrics_listen:
            self._metrics = Metrics(self._metrics_snapshot)
            _, self.metrics_port = self._metrics.start_http(self.cfg.metrics_listen)
        self._grpc = serve(self, self.cfg)

    def _stop_serving(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(grace=1.0).wait(2.0)
        if self._metrics is not None:
            self._metrics.stop()

    def _start_logs(self) -> None:
        self.logs.start()
        logsetup.attach_pipeline(self.cfg.data_dir, self._on_agent_log)

    def _stop_logs(self) -> None:
        logsetup.attach_pipeline(self.cfg.data_dir, None)
        self.logs.stop()

    def _on_agent_log(self, record: dict[str, Any]) -> None:
        self.logs.append_agent_record(self._agent_logs.encode(record))

    def _log_retention(self) -> None:
        if self.log_store is not None:
            removed = self.log_store.retention()
            if any(removed.values()):
                logger.info("log store retention removed {}", removed)

    def _undo_placement(self) -> None:
        if self._stop_rt:
            # the RT is gone: what isolation moved goes back where it was
            self.placement_mgr.close()

    def _save_final_checkpoint(self) -> None:
        seg = self.link.current()
        if seg is not None:
            # the RT's final checkpoint (written as it stopped) goes to disk too
            newest = seg.newest_checkpoint()
            if newest is not None and not newest[0]["flags"] & layout.CKPT_SHADOW:
                self.checkpoints.save(*newest)
        self.link.close()

    def _mapped_segment(self) -> Any:
        # the supervisor checks the file every health interval and re-maps it
        # when replaced (link.generation tells the drainer); no stat per drain
        return self.link.current() or self.link.get()

    def _rt_writer_pid(self) -> int | None:
        """The RT process that wrote what the rings hold: the segment's own
        record of it, which outlives the process (a crash's last records)."""
        seg = self.link.current()
        return int(seg.view()["status"]["pid"]) if seg is not None else None

    def _segment_buf(self) -> Any:
        seg = self.link.current()
        return seg.buf if seg is not None else None

    # ---- periodic work, each on its own thread ------------------------

    def _save_checkpoint(self) -> None:
        seg = self.link.get()
        if seg is not None:
            self.saver.poll(seg)

    def _tick_jobs(self) -> None:
        if not self._is_primary():
            return  # only the primary runs jobs; the others mirror them
        if self._promoted:
            # the RT now acting on the state it shadowed: the running job goes on from it
            self._promoted = False
            self.runner.on_rt_restarted(self._task_state())
        seg = self.link.get()
        if seg is not None and self._adopt_recheck is not None:
            self._recheck_adopted_job()
        self.runner.tick(self.supervisor.state == "running")

    def _is_primary(self) -> bool:
        return self.cluster is None or self.cluster.role == "primary"

    def _epoch(self) -> int:
        return self.cluster.epoch if self.cluster is not None else SINGLE_NODE_EPOCH

    def _rt_healthy(self) -> bool:
        """The RT process runs its loop and beats (the supervisor checks the beat)."""
        if self.supervisor.state != "running":
            return False
        seg = self.link.current()
        if seg is None:
            return False
        st = seg.view()["status"]
        return int(st["pid"]) == self.supervisor.pid and layout.STATE_NAMES.get(
            int(st["state"])
        ) in ("run", "hold", "safe")

    def _on_role(self, old: str, new: str, term: int) -> None:
        """On the cluster's roles thread."""
        if new == "primary":
            self._promoted = True
        elif old == "primary" and self.cluster is not None:
            # the replicated state is newer than what the RT computes in shadow
            self.cluster.write_inbound()

    def _apply_setting(self, name: str, value: Any) -> None:
        """A cluster-wide setting committed: applied on this node."""
        try:
            if name == "log_level":
                self._set_log_level_here(*value)
            elif name == "trace_sampling":
                self._set_trace_sampling_here(*value)
        except Exception as e:  # noqa: BLE001 - a node without an RT yet applies it later
            logger.warning("cluster setting {} = {} not applied here: {}", name, value, e)

    def _check_trace_budget(self) -> None:
        """Halve the sampling ratio while tracing costs the loop more than its
        budget, and say so."""
        seg = self.link.get()
        if seg is None or self.supervisor.state != "running":
            return
        st = seg.view()["status"]
        verdict = self.budget.check(
            {k: int(st[k]) for k in TRACE_COUNTERS}, int(st["period_ns"]), self._trace_ratio
        )
        if verdict is None or verdict.new_ratio is None:
            return
        old = self._trace_ratio
        self.set_trace_sampling(None, verdict.new_ratio)
        message = (
            f"tracing costs {verdict.overhead_pct:.4f} % of the period (budget "
            f"{self.budget.budget_pct} %, +{verdict.added_ns:.0f} ns a traced cycle): "
            f"sampling ratio backed off from {old:g} to {verdict.new_ratio:g}"
        )
        self._announce(
            "trace_sampling_backed_off", "WARN", message, old_ratio=old, ratio=verdict.new_ratio
        )

    def _sample_numa(self) -> None:
        if self.supervisor.state == "running":
            self.placement_mgr.sample_numa()

    # ---- what the drainer hands over, each on its subscriber's thread ----

    def _on_rt_events(self, batch: Batch, decoder: Decoder) -> None:
        for ev in decoder.events(batch):
            kind = TASK_EVENTS.get(ev["kind_id"], ev["kind"])
            level = RT_EVENT_LEVELS.get(kind, "INFO")
            fields = {
                k: ev[k] for k in ("cycle", "a", "b", "trace_id", "span_id", "time_ns", "sampled")
            }
            self.bus.publish(f"rt.{kind}", level, f"RT {kind.replace('_', ' ')}", **fields)
            if self._is_primary():
                try:
                    self.runner.on_event(ev)
                except ControlError as e:
                    # not committed: the job would wait for an event that came;
                    # resync from the RT's state on the next job tick instead
                    logger.warning("job progress not recorded ({}); resyncing from the RT", e)
                    self._promoted = True
            if ev["kind_id"] == reftask.EV_TRACKING_ERROR:
                self.propagation.tracking_error(ev)

    def _on_rt_logs(self, batch: Batch, decoder: Decoder) -> None:
        if not self.logs.keeps_below_warn():
            # the spool keeps only WARN and worse now: DEBUG and INFO are
            # counted as dropped before they are encoded, not after (under a
            # flood that encoding took the CPU the sinks need to catch up)
            levels = batch.recs["level"]
            low = (levels == LEVELS["DEBUG"]) | (levels == LEVELS["INFO"])
            if low.any():
                self.logs.drop(levels[low].tolist())
                batch = Batch(batch.ring, batch.recs[~low], batch.wall_offset_ns)
        self.logs.append(self._rt_logs.encode(batch, decoder))

    def _echo_rt_logs(self, batch: Batch, decoder: Decoder) -> None:
        """The operator's console and agent.log show the RT's warnings and
        worse; on a subscriber thread of its own: a console that blocks must
        not hold up the drainer (the spool has the records already)."""
        worse = batch.recs[batch.recs["level"] >= LEVELS["WARN"]]
        for rec in decoder.logs(Batch(batch.ring, worse, batch.wall_offset_ns)):
            level = LOGURU_LEVELS.get(rec["level"], "WARNING")
            logger.bind(spooled=True).log(level, "rt: " + rec["message"])

    def _on_rt_spans(self, batch: Batch, decoder: Decoder) -> None:
        spans = decoder.spans(batch)
        pid = self.supervisor.pid
        for sp in spans:
            sp["node"] = self.cfg.node_id
            sp["process"] = "rt"
            sp["pid"] = pid
        self._keep_spans(spans)

    def _keep_spans(self, spans: list[dict[str, Any]]) -> None:
        """Store, watch and export: RT and agent spans alike."""
        self.traces.add(spans)
        self.alerts.observe_spans(spans)
        if self.otlp is not None:
            self.otlp.export(spans)

    def _record_spans(self, spans: list[dict[str, Any]]) -> None:
        """The agent's own spans, kept and watched like the RT's."""
        sampled = [s for s in spans if s["flags"] & tracectx.SAMPLED]
        if sampled:
            self._keep_spans(sampled)

    def _announce(self, kind: str, level: str, message: str, **fields: Any) -> None:
        """An event of the node: logged (its kind is the log's event.action,
        its fields the document's rtcore.fields) and published to watchers."""
        logger.bind(
            event_action=kind,
            fields=fields,
            trace_id=fields.get("trace_id"),
            span_id=fields.get("span_id"),
        ).log(LOGURU_LEVELS.get(level, level), message)
        self.bus.publish(kind, level, message, **fields)

    def _on_alert(self, kind: str, level: str, message: str, fields: dict[str, Any]) -> None:
        self._announce(kind, level, message, **fields)

    def _on_rt_journal(self, batch: Batch, decoder: Decoder) -> None:
        self.journal.append(journal_dicts(batch.recs))

    def _journal_sub_flush(self) -> None:
        self._journal_sub.flush(timeout_s=2.0)

    # ---- events from the parts -----------------------------------------

    def _on_supervisor_event(self, kind: str, level: str, fields: dict[str, Any]) -> None:
        message = fields.pop("message", kind)
        self._announce(kind, level, message, **fields)
        if kind in ("rt_crashed", "rt_stopped"):
            self._settle_journal()
        if kind == "rt_running":
            self._on_rt_running()
            self.placement_mgr.on_rt_running(self.supervisor.pid)
        elif kind == "rt_adopted":
            self._on_rt_adopted()
            self.placement_mgr.on_rt_running(self.supervisor.pid)

    def _control_args(self) -> list[str]:
        """The role the RT process starts in: a single node drives the outputs
        in its epoch while the agent renews its lease; a cluster member starts
        in shadow (the cluster activates its primary)."""
        role = (
            ["--active", "--epoch", str(SINGLE_NODE_EPOCH), "--lease-timeout-ms"]
            + [str(self.cfg.lease_timeout_ms)]
            if self.cluster is None
            else self.cluster.control_args()
        )
        return [
            *role,
            "--node-id",
            str(self.origin),
            "--trace-ratio",
            repr(self._trace_ratio),
            # the level in force, set at runtime or not: a restarted RT keeps it
            "--log-level",
            self._levels["rt"],
        ]

    def _settle_dead_rt_journal(self) -> None:
        seg = self.link.get()
        if seg is not None and not pid_alive(seg.owner_pid()):
            self._settle_journal()
        elif seg is None and self.journal.open_interval() is not None:
            # the segment is gone (a reboot): when the RT stopped is unknown,
            # so the interval ends at most now (end_bound "upper")
            self.journal.close_from_status({}, time.time_ns(), time.monotonic_ns())
            logger.warning(
                "an actuation interval left open by an RT whose segment is gone "
                "was closed with now as its upper bound"
            )

    def _settle_journal(self) -> None:
        """Persist what the journal ring holds and close an interval the RT
        could not close itself (it died actuating): from its status block."""
        self.drainer.drain_once()
        if not self._journal_sub.flush(timeout_s=2.0):
            # what the RT wrote is still on its way: an END now would land
            # before the RT's own records; the next settle closes it
            logger.warning("the actuation journal is behind; its settling is left for later")
            return
        seg = self.link.get()
        if seg is None:
            return
        st = seg.view()["status"]
        if pid_alive(seg.owner_pid()) and int(st["actuating"]):
            return
        end = self.journal.close_from_status(
            {k: int(st[k]) for k in ACT_FIELDS}, time.time_ns(), time.monotonic_ns()
        )
        if end is not None:
            logger.warning(
                "actuation interval of epoch {} closed at cycle {} from the RT's status "
                "(the RT stopped without closing it; None: end unknown, bounded by now)",
                end["epoch"],
                end["cycle"],
            )

    def _on_placement_event(
        self, kind: str, level: str, message: str, fields: dict[str, Any]
    ) -> None:
        self._announce(kind, level, message, **{k: v for k, v in fields.items() if k != "message"})

    def _task_state(self) -> Any:
        """The reftask state in the segment's newest checkpoint, None if none or another task."""
        seg = self.link.get()
        newest = seg.newest_checkpoint() if seg is not None else None
        if newest is None:
            return None
        try:
            return reftask.decode_state(newest[1])
        except ValueError:
            return None

    def _on_rt_running(self) -> None:
        """A new RT process runs: it resumed from a checkpoint (restored_seq) or
        started fresh; the running job goes on, ends or is sent again."""
        decoder = self.drainer.decoder
        if decoder is not None:
            decoder.reload_strings()
        seg = self.link.get()
        restored = int(seg.view()["status"]["restored_seq"]) if seg is not None else 0
        if self.cluster is not None:
            # in shadow: it adopts the newest replicated state; the cluster
            # makes it primary again if this node still leads
            self.cluster.write_inbound()
            self._promoted = self.cluster.role == "primary"
            return
        self.runner.on_rt_restarted(self._task_state() if restored else None)

    def _on_rt_adopted(self) -> None:
        """The agent restarted beside a running RT. Its events while the agent
        was down are lost, so a job it finished meanwhile is settled from its
        state; a job it does not know yet may still have commands in flight,
        so that case is left to the events that follow."""
        seg = self.link.get()
        if seg is not None:
            # the level in force is the RT's, perhaps set at runtime before
            level = int(_core.read_control(seg.buf)["log_level"])
            self._levels["rt"] = LEVEL_NAMES.get(level, self._levels["rt"])
        if self.cluster is not None:
            self.cluster.write_inbound()
            return  # a cluster's runner resumes when this node becomes primary
        job = self.jobs.running()
        state = self._task_state()
        if job is None:
            return
        if state is not None and int(state["job_id"]) == job["id"]:
            self.runner.on_rt_restarted(state)
            return
        # its commands may still be in flight: decide once the RT has taken two
        # more checkpoints with an empty command ring (see _recheck_adopted_job)
        seg = self.link.get()
        seq = int(seg.view()["status"]["ckpt_seq"]) if seg is not None else 0
        self._adopt_recheck = (job["id"], seq)

    def _recheck_adopted_job(self) -> None:
        seg = self.link.get()
        if seg is None or self._adopt_recheck is None:
            return
        job_id, seq = self._adopt_recheck
        head, tail = _core.ring_counters(seg.buf, "cmd")[:2]
        if int(seg.view()["status"]["ckpt_seq"]) < seq + 2 or head != tail:
            return
        self._adopt_recheck = None
        job = self.jobs.running()
        if job is not None and job["id"] == job_id:
            # the RT's state says whether it ever got the job: settle or resend
            self.runner.on_rt_restarted(self._task_state())

    def _on_corrupt(self, path: str, reason: str) -> None:
        message = f"checkpoint file {path} is damaged ({reason}); skipped"
        self._announce("checkpoint_corrupt", "ERROR", message, path=path, reason=reason)

    def _restore_file(self) -> str | None:
        """The newest durable checkpoint when it is newer (epoch, seq) than the segment's."""
        disk = self.checkpoints.newest_path()
        meta = self.checkpoints.newest_meta()
        if disk is None or meta is None:
            return None
        seg = self.link.get()
        shm = seg.newest_checkpoint() if seg is not None else None
        if shm is not None and (shm[0]["epoch"], shm[0]["seq"]) >= (meta["epoch"], meta["seq"]):
            return None
        return disk[1]

    def _next_seq(self) -> int:
        with self._seq_lock:
            return next(self._seq)

    # ---- AgentAPI -------------------------------------------------------

    def status(self) -> dict[str, Any]:
        seg = self.link.get()
        rt = status.rt_section(seg, self.supervisor.info(), self.cfg.period_us)
        disk = self.checkpoints.newest_path()
        return {
            "node_id": self.cfg.node_id,
            "role": status.role(rt) if self.cluster is None else self.cluster.role,
            "rt": rt,
            "checkpoint": status.checkpoint_section(seg, disk[0] if disk else 0),
            "cluster": self._cluster_section(),
            "jobs": self.jobs.counts(),
            "placement": self._placement_summary(),
            "drainer": self.drainer.stats(),
            "logs": {**self.logs.stats(), "rt_malformed": dict(self._rt_logs.malformed)},
            "tracing": {
                "ratio": self._trace_ratio,
                # counts would cost a scan of the store on every status call
                "store": {"dropped": self.traces.dropped, "error": self.traces.error},
                "otlp": self.otlp.stats() if self.otlp is not None else None,
                "alerts_active": len(self.alerts.list()),
                "budget": self.budget.stats(),
                "bad_traceparents": self._bad_traceparents(),
            },
            "agent": {
                "pid": os.getpid(),
                "uptime_s": round(time.monotonic() - self.started, 1),
                "listen": self.cfg.listen,
                "data_dir": self.cfg.data_dir,
                "lease": {
                    "timeout_ms": self.cfg.lease_timeout_ms,
                    "renewals": self.lease.renewals,
                    "failures": self.lease.failures,
                },
            },
        }

    def _cluster_section(self) -> dict[str, Any]:
        if self.cluster is None:
            return {
                "leader": self.cfg.node_id,
                "term": 0,
                "has_quorum": True,
                "members": [self.cfg.node_id],
            }
        c = self.cluster.status()
        keys = (
            "leader",
            "term",
            "has_quorum",
            "role",
            "lease_age_ms",
            "elections",
            "replication_lag_ms",
            "checkpoint_lag_ms",
            "promotions",
        )
        return {k: c[k] for k in keys} | {"members": [m["node_id"] for m in c["members"]]}

    def cluster_status(self) -> dict[str, Any]:
        if self.cluster is None:
            raise FailedPrecondition("this node runs alone (started without --raft/--peer)")
        doc = self.cluster.status()
        doc["healthy"] = True if self.cfg.witness else self._rt_healthy()
        seg = self.link.current()
        doc["rt_state"] = (
            status.rt_section(seg, self.supervisor.info(), self.cfg.period_us)["state"]
            if not self.cfg.witness
            else "none"
        )
        return doc

    def cluster_failover(self, to: str | None = None) -> dict[str, Any]:
        if self.cluster is None:
            raise FailedPrecondition("this node runs alone (started without --raft/--peer)")
        return self.cluster.failover(to, self._wait_not_actuating)

    def _wait_not_actuating(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            seg = self.link.current()
            if seg is None or not int(seg.view()["status"]["actuating"]):
                return True
            time.sleep(0.0002)
        return False

    def _bad_traceparents(self) -> int:
        from control.rpc import service

        return service.bad_traceparents()

    def _placement_summary(self) -> dict[str, Any]:
        p = self.placement_mgr
        numa = p.last_numa
        return {
            "cpus": ",".join(map(str, p.current.cpus)),
            "isolated": p.isolated,
            "numa_node": p.current.numa_node,
            "numa_single_node": numa.get("single_node"),
            "numa_local_pages_pct": numa.get("local_pages_pct"),
            "numa_local_access_pct": numa.get("local_access_pct"),
        }

    def _metrics_snapshot(self) -> dict[str, Any]:
        snap = self.status()
        seg = self.link.get()
        if seg is not None and snap["rt"]["pid"]:
            st = seg.view()["status"]
            snap["rt"]["wake_hist"] = [int(c) for c in st["wake_hist"]]
            snap["rt"]["exec_hist"] = [int(c) for c in st["exec_hist"]]
        return snap

    def rt_action(self, action: str) -> dict[str, Any]:
        if action not in RT_ACTIONS:
            raise InvalidArgument("action", f"{action!r} is not one of {', '.join(RT_ACTIONS)}")
        self.supervisor.action(action)
        self._announce("rt_action", "WARN", f"RT {action} requested", action=action)
        return self.status()

    def submit_job(self, name: str, waypoints: list[Waypoint]) -> dict[str, Any]:
        from control.rpc.service import current_traceparent

        start = time.time_ns()
        name = validate_name(name)
        waypoints = validate_waypoints(waypoints, joints=self.cfg.joints)
        job = self.jobs.submit(name, waypoints)
        trace_id = self.propagation.job_submitted(
            job["id"], len(waypoints), current_traceparent(), start
        )
        self._announce(
            "job_queued",
            "INFO",
            f"job {job['id']} ({name}) queued",
            job_id=job["id"],
            trace_id=trace_id,
        )
        return job

    def get_job(self, job_id: int) -> dict[str, Any]:
        return self.jobs.get(job_id)

    def list_jobs(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return self.jobs.list(state=state, limit=limit)

    def cancel_job(self, job_id: int) -> dict[str, Any]:
        return self.runner.cancel(job_id)

    def checkpoint_info(self) -> dict[str, Any]:
        seg = self.link.get()
        newest = seg.newest_checkpoint() if seg is not None else None
        shm = dict(newest[0]) if newest else None
        return {
            "shm": shm,
            "disk": self.checkpoints.info(),
            "saver": {"saves": self.saver.saves, "last_error": self.saver.last_error},
        }

    def get_trace(self, trace_id: str) -> dict[str, Any]:
        return {"trace_id": trace_id, "spans": self.traces.get(trace_id)}

    def list_traces(
        self,
        slow_ms: float = 0.0,
        since_ns: int = 0,
        name: str = "",
        errors: bool = False,
        limit: int = 50,
    ) -> dict[str, Any]:
        return {"traces": self.traces.list(slow_ms, since_ns, name, errors, limit)}

    def list_alerts(self, all: bool = False) -> dict[str, Any]:
        return {"alerts": self.alerts.list(all)}

    def diagnose(self, since_ns: int = 0) -> dict[str, Any]:
        since = since_ns or time.time_ns() - 15 * 60 * 10**9
        slow = self.traces.list(slow_ms=10.0, since_ns=since, limit=200)
        return diagnose(self.status(), self.alerts.list(all=True), since, slow)

    def get_log_level(self) -> dict[str, str]:
        return dict(self._levels)

    def search_logs(self, query: dict[str, Any]) -> dict[str, Any]:
        if self.log_store is None:
            raise FailedPrecondition("this node has no log store (see the agent's start-up log)")
        return {
            "node_id": self.cfg.node_id,
            "logs": self.log_store.search(**query),
        }

    def set_log_level(self, level: str, target: str = "all") -> dict[str, str]:
        level = level.upper()
        if level not in LOG_LEVELS:
            raise InvalidArgument("level", f"{level!r} is not one of {', '.join(LOG_LEVELS)}")
        if target not in ("rt", "agent", "all"):
            raise InvalidArgument("target", f"{target!r} is not rt, agent or all")
        if self.cluster is not None:
            # a cluster-wide setting: every node applies it as it commits
            self._replicate_setting("log_level", (level, target))
            return dict(self._levels)
        return self._set_log_level_here(level, target)

    def _replicate_setting(self, name: str, value: Any) -> None:
        from control.cluster.raft import RaftUnavailable, call_sync

        assert self.cluster is not None
        try:
            call_sync(self.cluster.state.set_setting, name, value)
        except RaftUnavailable as e:
            raise FailedPrecondition(
                f"the cluster did not commit the setting ({e}); nothing was changed"
            ) from None

    def _set_log_level_here(self, level: str, target: str) -> dict[str, str]:
        if target in ("rt", "all"):
            seg = self.link.get()
            if seg is None:
                raise FailedPrecondition("the RT process has no segment yet")
            _core.write_control(seg.buf, log_level=layout.LEVELS[level])
            self._levels["rt"] = level
        if target in ("agent", "all"):
            logsetup.configure(self.cfg.data_dir, level)
            self._levels["agent"] = level
        return dict(self._levels)

    def get_trace_sampling(self) -> dict[str, Any]:
        seg = self.link.get()
        ppm = int(_core.read_control(seg.buf)["sample_ppm"]) if seg is not None else 0
        every = round(layout.SAMPLE_PPM_ALL / ppm) if ppm else 0
        return {"rt_every_cycles": every, "rt_sample_ppm": ppm, "ratio": self._trace_ratio}

    def set_trace_sampling(
        self, rt_every_cycles: int | None, ratio: float | None
    ) -> dict[str, Any]:
        if rt_every_cycles is not None and not 0 <= rt_every_cycles <= 1_000_000:
            raise InvalidArgument("rt_every_cycles", "must be 0 (off) .. 1000000")
        if ratio is not None and not 0.0 <= ratio <= 1.0:
            raise InvalidArgument("ratio", "must be between 0 and 1")
        if self.cluster is not None:
            self._replicate_setting("trace_sampling", (rt_every_cycles, ratio))
            return self.get_trace_sampling()
        return self._set_trace_sampling_here(rt_every_cycles, ratio)

    def _set_trace_sampling_here(
        self, rt_every_cycles: int | None, ratio: float | None
    ) -> dict[str, Any]:
        if rt_every_cycles is not None:
            seg = self.link.get()
            if seg is None:
                raise FailedPrecondition("the RT process has no segment yet")
            ppm = layout.SAMPLE_PPM_ALL // rt_every_cycles if rt_every_cycles else 0
            _core.write_control(seg.buf, sample_ppm=ppm)
        if ratio is not None:
            # one ratio for the node: the RT samples its cycles at it too
            seg = self.link.get()
            if seg is not None and rt_every_cycles is None:
                _core.write_control(seg.buf, sample_ppm=round(ratio * layout.SAMPLE_PPM_ALL))
            self._trace_ratio = ratio
        return self.get_trace_sampling()

    def set_affinity(self, cpus: list[int], isolate: bool | None) -> dict[str, Any]:
        return self.placement_mgr.set_affinity(cpus, isolate)

    def set_numa_node(self, node: int) -> dict[str, Any]:
        return self.placement_mgr.set_numa_node(node)

    def placement(self) -> dict[str, Any]:
        return self.placement_mgr.placement()

    def subscribe(self, kinds: list[str] | None = None) -> Subscription:
        return self.bus.subscribe(kinds)

    def journal_info(self, limit: int = 0) -> dict[str, Any]:
        self.drainer.drain_once()
        self._journal_sub_flush()
        seg = self.link.get()
        st = seg.view()["status"] if seg is not None else None
        current = (
            {k: int(st[k]) for k in ACT_FIELDS} | {"actuating": bool(st["actuating"])}
            if st is not None
            else None
        )
        return {
            "node_id": self.cfg.node_id,
            "intervals": self.journal.intervals(limit),
            "rt": current,
        }


def warn_if_unreachable(endpoint: str) -> None:
    """One line at start when the OTLP endpoint does not answer; spans are
    then counted as dropped until it does (the node runs on regardless)."""
    import socket

    host, _, port = endpoint.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=1.0).close()
    except OSError as e:
        logger.warning(
            "OTLP endpoint {} does not answer ({}); spans are counted as dropped until it does",
            endpoint,
            e.strerror or e,
        )


def node_origin(node_id: str) -> int:
    """The id this node's RT writes into its checkpoints (63 bits: a flag value)."""
    digest = hashlib.blake2b(node_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
