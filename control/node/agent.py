"""The node agent: the composition root of the control plane.

Wires the supervisor (RT process), the drainer (rings → events, logs, job
progress, durable checkpoints), the job runner, metrics and the gRPC service
together, and implements control.api.AgentAPI on top of them.
"""

from __future__ import annotations

import argparse
import fcntl
import itertools
import os
import signal
import sys
import threading
import time
from typing import Any

import numpy as np
from loguru import logger

from control import config as config_mod
from control.api import LOG_LEVELS, RT_ACTIONS, Waypoint
from control.config import AgentConfig
from control.errors import ControlError, FailedPrecondition, InvalidArgument
from control.jobs.jobs import JobRunner, JobStore
from control.jobs.trajectory import validate_name, validate_waypoints
from control.node.eventbus import EventBus, Subscription
from control.placement import systemd
from control.placement.placement import PlacementManager, PlacementStore
from control.rt.journal import ActuationJournal
from control.rt.lease import LeaseKeeper
from control.rt.supervisor import Supervisor
from control.state.checkpoint import CheckpointSaver, CheckpointStore
from rtcore import _core, layout, reftask, stats
from rtcore.records import Drainer
from rtcore.segment import Segment, SegmentError, pid_alive

DRAIN_INTERVAL_S = 0.005
# a single node is the primary of itself; the cluster will use Raft terms
SINGLE_NODE_EPOCH = 1
# reading numa_maps walks the RT process's page tables: seconds apart, not per drain
NUMA_SAMPLE_S = 5.0
RT_EVENT_LEVELS = {"deadline_miss": "ERROR"}
TASK_EVENTS = {
    reftask.EV_TRAJ_STARTED: "trajectory_started",
    reftask.EV_WAYPOINT_REACHED: "waypoint_reached",
    reftask.EV_TRAJ_DONE: "trajectory_done",
}
LOGURU_LEVELS = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARN": "WARNING",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL",
}


class AgentLockError(ControlError):
    pass


class Agent:
    """One node. start() brings everything up; close() takes it down in order."""

    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.started = time.monotonic()
        os.makedirs(cfg.data_dir, exist_ok=True)
        self._lock_file = self._take_lock()
        self.bus = EventBus(cfg.node_id)
        self.checkpoints = CheckpointStore(
            os.path.join(cfg.data_dir, "checkpoints"),
            keep=cfg.checkpoint_keep,
            on_corrupt=self._on_corrupt,
        )
        self.saver = CheckpointSaver(self.checkpoints, interval_ms=cfg.checkpoint_interval_ms)
        self.jobs = JobStore(os.path.join(cfg.data_dir, "jobs.db"))
        self._seq = itertools.count(int(time.time() * 1000) << 16)
        self._seq_lock = threading.Lock()
        self.runner = JobRunner(self.jobs, self._send_commands, self._next_seq)
        # before the supervisor: the saved placement decides how the RT process starts
        self.placement_mgr = PlacementManager(
            cfg, lambda: self.supervisor.pid, self._on_placement_event
        )
        self.journal = ActuationJournal(os.path.join(cfg.data_dir, "journal.jsonl"), cfg.node_id)
        self.epoch = SINGLE_NODE_EPOCH
        self.origin = node_origin(cfg.node_id)
        self.lease = LeaseKeeper(
            lambda: self._seg.buf if self._seg is not None else None, cfg.lease_timeout_ms
        )
        self.supervisor = Supervisor(
            cfg,
            self._on_supervisor_event,
            self._restore_file,
            self.placement_mgr.isolator.rt_procs_file,
            self._control_args,
        )
        self._levels = {"rt": cfg.log_level, "agent": cfg.log_level}
        self._trace_ratio = 1.0
        self._seg: Segment | None = None
        self._drainer: Drainer | None = None
        self._writer: _core.RingWriter | None = None
        self._misses_before = 0
        self._stop = threading.Event()
        self._drain_thread = threading.Thread(target=self._drain_loop, name="drainer", daemon=True)
        self._io_lock = threading.Lock()
        self._next_numa_sample = 0.0
        self._adopt_recheck: tuple[int, int] | None = None
        self._grpc: Any = None
        self._metrics: Any = None
        self.metrics_port = 0

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
        from control.node.metrics import Metrics
        from control.rpc.service import serve

        # the ports first: an agent that cannot serve must not have started an RT process
        if self.cfg.metrics_listen:
            self._metrics = Metrics(self._metrics_snapshot)
            _, self.metrics_port = self._metrics.start_http(self.cfg.metrics_listen)
        self._grpc = serve(self, self.cfg)
        self.placement_mgr.recover()
        self._settle_journal(only_if_dead=True)
        self.supervisor.start()
        self.lease.start()
        self._drain_thread.start()
        logger.info(
            "agent {} listening on {} (metrics on port {}), data in {}",
            self.cfg.node_id,
            self.cfg.listen,
            self.metrics_port,
            self.cfg.data_dir,
        )

    def close(self, stop_rt: bool = True) -> None:
        """Stop in reverse order of start, each step on its own: a part that
        fails to stop does not keep the later ones from stopping. The RT
        stops before the drainer, so its last records are drained and kept."""
        steps: list[tuple[str, Any]] = []
        if self._grpc is not None:
            steps.append(("gRPC server", lambda: self._grpc.stop(grace=1.0).wait(2.0)))
        if self._metrics is not None:
            steps.append(("metrics", self._metrics.stop))
        steps += [
            ("supervisor", lambda: self.supervisor.close(stop_rt=stop_rt)),
            ("drainer", self._stop_drainer),
            ("lease", self.lease.stop),
        ]
        if stop_rt:
            steps.append(("journal", self._settle_journal))
            # the RT is gone: what isolation moved goes back where it was
            steps.append(("placement", self.placement_mgr.close))
        steps += [
            ("checkpoint", self._save_final_checkpoint),
            ("jobs", self.jobs.close),
            ("lock", self._lock_file.close),
        ]
        for name, stop in steps:
            try:
                stop()
            except Exception:  # noqa: BLE001 - every later part must still stop
                logger.exception("stopping the {} failed", name)

    def _stop_drainer(self) -> None:
        self._stop.set()
        if self._drain_thread.is_alive():
            self._drain_thread.join(timeout=5)
        self._drain_once()  # what the RT wrote as it stopped

    def _save_final_checkpoint(self) -> None:
        if self._seg is None:
            return
        # the RT's final checkpoint (written as it stopped) goes to disk too
        newest = self._seg.newest_checkpoint()
        if newest is not None:
            self.checkpoints.save(*newest)
        self._drainer = None
        self._writer = None
        self._seg.close()

    # ---- events from the parts -----------------------------------------

    def _on_supervisor_event(self, kind: str, level: str, fields: dict[str, Any]) -> None:
        message = fields.pop("message", kind)
        logger.log(LOGURU_LEVELS.get(level, level), message)
        self.bus.publish(kind, level, message, **fields)
        if kind in ("rt_crashed", "rt_stopped"):
            self._settle_journal()
        if kind == "rt_running":
            self._on_rt_running()
            self.placement_mgr.on_rt_running(self.supervisor.pid)
        elif kind == "rt_adopted":
            self._on_rt_adopted()
            self.placement_mgr.on_rt_running(self.supervisor.pid)

    def _control_args(self) -> list[str]:
        """The role the RT process starts in: this node drives the outputs
        (single node) in its epoch while the agent renews its lease."""
        return [
            "--active",
            "--epoch",
            str(self.epoch),
            "--lease-timeout-ms",
            str(self.cfg.lease_timeout_ms),
            "--node-id",
            str(self.origin),
        ]

    def _settle_journal(self, only_if_dead: bool = False) -> None:
        """Persist what the journal ring holds and close an interval the RT
        could not close itself (it died actuating): from its status block."""
        with self._io_lock:
            seg = self._segment()
            if seg is None or self._drainer is None:
                return
            if only_if_dead and pid_alive(seg.owner_pid()):
                return
            self.journal.append(self._drainer.drain("journal"))
            if not pid_alive(seg.owner_pid()) or not int(seg.view()["status"]["actuating"]):
                st = seg.view()["status"]
                end = self.journal.close_from_status({k: int(st[k]) for k in ACT_FIELDS})
                if end is not None:
                    logger.warning(
                        "actuation interval of epoch {} closed at cycle {} from the RT's status "
                        "(the RT stopped without closing it)",
                        end["epoch"],
                        end["cycle"],
                    )

    def _on_placement_event(
        self, kind: str, level: str, message: str, fields: dict[str, Any]
    ) -> None:
        logger.log(LOGURU_LEVELS.get(level, level), message)
        self.bus.publish(
            kind, level, message, **{k: v for k, v in fields.items() if k != "message"}
        )

    def _task_state(self) -> Any:
        """The reftask state in the segment's newest checkpoint, None if none or another task."""
        with self._io_lock:
            seg = self._segment()
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
        with self._io_lock:
            if self._drainer is not None:
                self._drainer.decoder.reload_strings()
            seg = self._segment()
            restored = int(seg.view()["status"]["restored_seq"]) if seg is not None else 0
        self.runner.on_rt_restarted(self._task_state() if restored else None)

    def _on_rt_adopted(self) -> None:
        """The agent restarted beside a running RT. Its events while the agent
        was down are lost, so a job it finished meanwhile is settled from its
        state; a job it does not know yet may still have commands in flight,
        so that case is left to the events that follow."""
        job = self.jobs.running()
        state = self._task_state()
        if job is None:
            return
        if state is not None and int(state["job_id"]) == job["id"]:
            self.runner.on_rt_restarted(state)
            return
        # its commands may still be in flight: decide once the RT has taken two
        # more checkpoints with an empty command ring (see _recheck_adopted_job)
        with self._io_lock:
            seg = self._segment()
            seq = int(seg.view()["status"]["ckpt_seq"]) if seg is not None else 0
        self._adopt_recheck = (job["id"], seq)

    def _recheck_adopted_job(self, seg: Segment) -> None:
        job_id, seq = self._adopt_recheck  # type: ignore[misc]
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
        logger.error(message)
        self.bus.publish("checkpoint_corrupt", "ERROR", message, path=path, reason=reason)

    def _restore_file(self) -> str | None:
        """The newest durable checkpoint when it is newer than the segment's."""
        disk = self.checkpoints.newest_path()
        if disk is None:
            return None
        with self._io_lock:
            seg = self._segment()
            shm = seg.newest_checkpoint() if seg is not None else None
        if shm is not None and shm[0]["seq"] >= disk[0]:
            return None
        return disk[1]

    # ---- the drainer ----------------------------------------------------

    def _segment(self) -> Segment | None:
        if self._seg is None:
            try:
                self._seg = Segment.open(self.cfg.shm_name)
            except SegmentError:
                return None
            self._drainer = Drainer(self._seg.buf)
            self._writer = _core.RingWriter(self._seg.buf, "cmd")
            _core.write_control(self._seg.buf, log_level=layout.LEVELS[self._levels["rt"]])
        return self._seg

    def _drain_loop(self) -> None:
        while not self._stop.wait(DRAIN_INTERVAL_S):
            try:
                self._drain_once()
            except Exception:  # noqa: BLE001 - the drainer must outlive one bad record
                logger.exception("drainer iteration failed")

    def _drain_once(self) -> None:
        with self._io_lock:
            seg = self._segment()
            if seg is None or self._drainer is None:
                return
            events = self._drainer.drain("event")
            logs = self._drainer.drain("log")
            self._drainer.drain_batch("span")
            journal = self._drainer.drain("journal")
        self.journal.append(journal)
        for rec in logs:
            repeats = f", {rec['repeats']} more like it" if rec["repeats"] else ""
            logger.log(
                LOGURU_LEVELS.get(rec["level"], "INFO"),
                "rt: {} (cycle {}{})",
                rec["message"],
                rec["cycle"],
                repeats,
            )
        for ev in events:
            self._publish_rt_event(ev)
            self.runner.on_event(ev)
        if self._adopt_recheck is not None:
            self._recheck_adopted_job(seg)
        self.runner.tick(self.supervisor.state == "running")
        self.saver.poll(seg)
        now = time.monotonic()
        if now >= self._next_numa_sample and self.supervisor.state == "running":
            self._next_numa_sample = now + NUMA_SAMPLE_S
            self.placement_mgr.sample_numa()

    def _publish_rt_event(self, ev: dict[str, Any]) -> None:
        kind = TASK_EVENTS.get(ev["kind_id"], ev["kind"])
        level = RT_EVENT_LEVELS.get(kind, "INFO")
        fields = {k: ev[k] for k in ("cycle", "a", "b", "trace_id", "span_id", "time_ns")}
        self.bus.publish(f"rt.{kind}", level, f"RT {kind.replace('_', ' ')}", **fields)

    def _send_commands(self, records: list[bytes]) -> bool:
        with self._io_lock:
            if self._seg is None or self._writer is None:
                return False
            head, tail = _core.ring_counters(self._seg.buf, "cmd")[:2]
            # all or nothing: a job's commands only make sense together
            if layout.CMD_RING_CAP - (head - tail) < len(records):
                return False
            # stamped at sending with this node's epoch: an RT fenced into a
            # newer epoch refuses what an older primary sent
            return all(self._writer.push(stamp_epoch(r, self.epoch)) for r in records)

    def _next_seq(self) -> int:
        with self._seq_lock:
            return next(self._seq)

    # ---- AgentAPI -------------------------------------------------------

    def status(self) -> dict[str, Any]:
        sup = self.supervisor.info()
        rt: dict[str, Any] = {
            "state": sup["state"],
            "pid": sup["pid"],
            "restarts": sup["restarts"],
            "supervisor": sup,
            "period_us": self.cfg.period_us,
            "cycles": 0,
            "misses": 0,
            "latency_us": {"p50": 0.0, "p99": 0.0, "max": 0.0},
            "exec_us": {"p50": 0.0, "p99": 0.0, "max": 0.0},
        }
        checkpoint: dict[str, Any] = {"seq": 0, "age_ms": None, "cycle": 0}
        with self._io_lock:
            seg = self._segment()
            if seg is not None:
                v = seg.view()
                st = v["status"]
                if sup["pid"] and int(st["pid"]) == sup["pid"]:
                    loop_state = layout.STATE_NAMES.get(int(st["state"]), "?")
                    rt["state"] = loop_state if sup["state"] == "running" else sup["state"]
                    wake = stats.summary_us(st["wake_hist"], int(st["wake_max_ns"]))
                    exe = stats.summary_us(st["exec_hist"], int(st["exec_max_ns"]))
                    rt.update(
                        {
                            "cycles": int(st["cycles"]),
                            "misses": int(st["misses"]),
                            "heartbeat": int(st["heartbeat"]),
                            "latency_us": {k: wake[k] for k in ("p50", "p99", "max")},
                            "exec_us": {k: exe[k] for k in ("p50", "p99", "max")},
                            "actuating": bool(st["actuating"]),
                            "priority": int(st["priority"]),
                            "degraded": [
                                n
                                for b, n in layout.DEGRADED_BITS.items()
                                if int(st["degraded"]) & b
                            ],
                            "task": st["task_name"].item().decode(errors="replace"),
                        }
                    )
                rt["ring_dropped"] = {
                    r: _core.ring_counters(seg.buf, r)[3] for r in ("log", "span", "event")
                }
                checkpoint["seq"] = int(st["ckpt_seq"])
                checkpoint["cycle"] = int(st["ckpt_cycle"])
                if int(st["ckpt_ns"]):
                    checkpoint["age_ms"] = round(
                        (_core.monotonic_ns() - int(st["ckpt_ns"])) / 1e6, 1
                    )
        disk = self.checkpoints.newest_path()
        checkpoint["disk_seq"] = disk[0] if disk else 0
        healthy = rt["state"] in ("run", "hold", "safe")
        return {
            "node_id": self.cfg.node_id,
            "role": "primary" if healthy else "degraded",
            "rt": rt,
            "checkpoint": checkpoint,
            "cluster": {
                "leader": self.cfg.node_id,
                "term": 0,
                "has_quorum": True,
                "members": [self.cfg.node_id],
            },
            "jobs": self.jobs.counts(),
            "placement": self._placement_summary(),
            "agent": {
                "pid": os.getpid(),
                "uptime_s": round(time.monotonic() - self.started, 1),
                "listen": self.cfg.listen,
                "data_dir": self.cfg.data_dir,
            },
        }

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
        with self._io_lock:
            seg = self._segment()
            if seg is not None and snap["rt"]["pid"]:
                st = seg.view()["status"]
                snap["rt"]["wake_hist"] = [int(c) for c in st["wake_hist"]]
                snap["rt"]["exec_hist"] = [int(c) for c in st["exec_hist"]]
        return snap

    def rt_action(self, action: str) -> dict[str, Any]:
        if action not in RT_ACTIONS:
            raise InvalidArgument("action", f"{action!r} is not one of {', '.join(RT_ACTIONS)}")
        self.supervisor.action(action)
        self.bus.publish("rt_action", "WARN", f"RT {action} requested", action=action)
        return self.status()

    def submit_job(self, name: str, waypoints: list[Waypoint]) -> dict[str, Any]:
        name = validate_name(name)
        waypoints = validate_waypoints(waypoints, joints=self.cfg.joints)
        job = self.jobs.submit(name, waypoints)
        self.bus.publish("job_queued", "INFO", f"job {job['id']} ({name}) queued", job_id=job["id"])
        return job

    def get_job(self, job_id: int) -> dict[str, Any]:
        return self.jobs.get(job_id)

    def list_jobs(self, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return self.jobs.list(state=state, limit=limit)

    def cancel_job(self, job_id: int) -> dict[str, Any]:
        return self.runner.cancel(job_id)

    def checkpoint_info(self) -> dict[str, Any]:
        with self._io_lock:
            seg = self._segment()
            newest = seg.newest_checkpoint() if seg is not None else None
        shm = dict(newest[0]) if newest else None
        return {
            "shm": shm,
            "disk": self.checkpoints.info(),
            "saver": {"saves": self.saver.saves, "last_error": self.saver.last_error},
        }

    def get_log_level(self) -> dict[str, str]:
        return dict(self._levels)

    def set_log_level(self, level: str, target: str = "all") -> dict[str, str]:
        level = level.upper()
        if level not in LOG_LEVELS:
            raise InvalidArgument("level", f"{level!r} is not one of {', '.join(LOG_LEVELS)}")
        if target not in ("rt", "agent", "all"):
            raise InvalidArgument("target", f"{target!r} is not rt, agent or all")
        if target in ("rt", "all"):
            with self._io_lock:
                seg = self._segment()
                if seg is None:
                    raise FailedPrecondition("the RT process has no segment yet")
                _core.write_control(seg.buf, log_level=layout.LEVELS[level])
            self._levels["rt"] = level
        if target in ("agent", "all"):
            configure_logging(self.cfg, level)
            self._levels["agent"] = level
        return dict(self._levels)

    def get_trace_sampling(self) -> dict[str, Any]:
        ppm = 0
        with self._io_lock:
            seg = self._segment()
            if seg is not None:
                ppm = int(_core.read_control(seg.buf)["sample_ppm"])
        every = round(layout.SAMPLE_PPM_ALL / ppm) if ppm else 0
        return {"rt_every_cycles": every, "rt_sample_ppm": ppm, "ratio": self._trace_ratio}

    def set_trace_sampling(
        self, rt_every_cycles: int | None, ratio: float | None
    ) -> dict[str, Any]:
        if rt_every_cycles is not None and not 0 <= rt_every_cycles <= 1_000_000:
            raise InvalidArgument("rt_every_cycles", "must be 0 (off) .. 1000000")
        if ratio is not None and not 0.0 <= ratio <= 1.0:
            raise InvalidArgument("ratio", "must be between 0 and 1")
        if rt_every_cycles is not None:
            with self._io_lock:
                seg = self._segment()
                if seg is None:
                    raise FailedPrecondition("the RT process has no segment yet")
                ppm = layout.SAMPLE_PPM_ALL // rt_every_cycles if rt_every_cycles else 0
                _core.write_control(seg.buf, sample_ppm=ppm)
        if ratio is not None:
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
        with self._io_lock:
            seg = self._segment()
            if seg is not None and self._drainer is not None:
                self.journal.append(self._drainer.drain("journal"))
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


def stamp_epoch(record: bytes, epoch: int) -> bytes:
    rec = np.frombuffer(bytearray(record), dtype=layout.CMD_REC)
    rec["epoch"] = epoch
    return rec.tobytes()


def node_origin(node_id: str) -> int:
    """The id this node's RT writes into its checkpoints (63 bits: a flag value)."""
    import hashlib

    digest = hashlib.blake2b(node_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def configure_logging(cfg: AgentConfig, level: str) -> None:
    logger.remove()
    fmt = "{time:YYYY-MM-DD HH:mm:ss.SSS} {level:<8} {message}"
    logger.add(sys.stderr, level=LOGURU_LEVELS[level], format=fmt)
    logger.add(
        os.path.join(cfg.data_dir, "agent.log"),
        level=LOGURU_LEVELS[level],
        format=fmt,
        rotation="10 MB",
        retention=5,
    )


def refuse_unavailable(cfg: AgentConfig) -> None:
    """Settings of parts this build does not have yet: refused with a clear
    line rather than accepted and silently ignored."""
    if cfg.raft or cfg.peers:
        raise InvalidArgument(
            "raft",
            "clustering (--raft/--peer) is not available in this "
            "build yet; run without them for a single node",
        )
    if cfg.es_url:
        raise InvalidArgument(
            "es_url",
            "Elasticsearch export is not available in this build "
            "yet; the agent's logs are in DATA_DIR/agent.log",
        )
    if cfg.otlp_endpoint:
        raise InvalidArgument(
            "otlp_endpoint", "OTLP trace export is not available in this build yet"
        )


def write_systemd_unit(cfg: AgentConfig, path: str) -> int:
    """The unit runs the agent with these settings, saved as DATA_DIR/agent.toml."""
    config_path = os.path.join(cfg.data_dir, "agent.toml")
    with open(config_path, "w") as f:
        f.write(config_mod.to_toml(cfg))
    saved = PlacementStore(os.path.join(cfg.data_dir, "placement.json")).load()
    cpus = saved.cpus if saved else cfg.cpus
    node = saved.numa_node if saved else cfg.numa_node
    text = systemd.unit_text(cfg, ["--config", config_path], cpus, node)
    if path == "-":
        print(text, end="")
        return 0
    try:
        systemd.write_unit(path, text)
    except OSError as e:
        print(f"rtctl agent: error: cannot write {path}: {e.strerror}", file=sys.stderr)
        return 1
    systemd.remember_path(cfg.data_dir, path)
    print(
        f"rtctl agent: wrote {path} (settings in {config_path}); "
        f"run 'systemctl daemon-reload && systemctl enable --now {os.path.basename(path)}'"
    )
    return 0


def main(args: argparse.Namespace) -> int:
    """`rtctl agent`: run a node in the foreground until SIGTERM/SIGINT."""
    try:
        cfg = config_mod.load(args)
        refuse_unavailable(cfg)
        os.makedirs(cfg.data_dir, exist_ok=True)
    except InvalidArgument as e:
        print(f"rtctl agent: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(
            f"rtctl agent: error: cannot use data directory {cfg.data_dir}: {e.strerror}",
            file=sys.stderr,
        )
        return 2
    if getattr(args, "systemd_unit", None):
        return write_systemd_unit(cfg, args.systemd_unit)
    configure_logging(cfg, cfg.log_level)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        agent = Agent(cfg)
    except ControlError as e:
        print(f"rtctl agent: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"rtctl agent: error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    try:
        agent.start()
    except Exception as e:  # noqa: BLE001 - e.g. the port is taken: one line, then clean up
        agent.close(stop_rt=False)
        print(f"rtctl agent: error: {e}", file=sys.stderr)
        return 1
    print(f"rtctl agent: node {cfg.node_id} serving on {cfg.listen}", flush=True)
    stop.wait()
    logger.info("stopping: RT to SAFE, then stopped")
    agent.close(stop_rt=True)
    return 0
