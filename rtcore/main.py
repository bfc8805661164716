"""`python -m rtcore`: run one RT process standalone.

Validates everything first, so bad input exits with one line and leaves
nothing behind; then sets the process up for real time, step by step, and
hands over to the nogil loop until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rtcore import _core, topology
from rtcore.enums import DEGRADED_BITS, LEVELS
from rtcore.segment import Segment, SegmentError, pid_alive

MIN_PERIOD_US = 50
MAX_PERIOD_US = 10_000_000
DEGRADED_BIT = {name: bit for bit, name in DEGRADED_BITS.items()}
PM_QOS_PATH = "/dev/cpu_dma_latency"
# flag -> control-block field it sets
CONTROL_FLAGS = {
    "log_level": "log_level",
    "trace_ratio": "sample_ppm",
    "role": "active",
    "epoch": "epoch",
    "lease_timeout_ms": "lease_timeout_ns",
    "node_id": "node_id",
}
# The PM QoS request lasts while the file stays open: keep it for the process's life.
_pm_qos_file = None


class ConfigError(ValueError):
    """A setting is invalid; the message names it and the accepted range."""


def builtin_task_path() -> str:
    import importlib.util

    spec = importlib.util.find_spec("rtcore._reftask_lib")
    if spec is None or spec.origin is None:
        raise ConfigError("the built-in reference task is not built: run 'make setup'")
    return spec.origin


@dataclass
class RtConfig:
    shm: str
    period_us: int = 1000
    cpus: list[int] = field(default_factory=list)
    priority: int = 80
    numa_node: int = -1
    wake_mode: str = "sleep"
    spin_us: int = 50
    task: str = ""
    task_params: str = ""
    ckpt_every: int = 10
    resume: bool = False
    restore_file: str = ""
    allow_degraded: bool = False
    keep_shm: bool = False
    cycles: int = 0
    log_level: str = "INFO"
    trace_ratio: float = 0.0
    role: str = "standby"  # standby | active | unleased (active with no lease: standalone)
    epoch: int = 0
    lease_timeout_ms: int = 0
    node_id: int = 0
    given: set[str] = field(default_factory=set)  # control-block flags given explicitly

    def validate(self) -> None:
        if not MIN_PERIOD_US <= self.period_us <= MAX_PERIOD_US:
            raise ConfigError(
                f"--period-us {self.period_us} is out of range: "
                f"use {MIN_PERIOD_US}..{MAX_PERIOD_US} microseconds"
            )
        if not 1 <= self.priority <= 99:
            raise ConfigError(f"--priority {self.priority} is out of range: use 1..99")
        if self.wake_mode not in ("sleep", "hybrid"):
            raise ConfigError(f"--wake-mode {self.wake_mode!r} is unknown: use sleep or hybrid")
        if self.wake_mode == "hybrid" and not 0 < self.spin_us < self.period_us:
            raise ConfigError(
                f"--spin-us {self.spin_us} must be above 0 and below the period "
                f"({self.period_us} us)"
            )
        if self.ckpt_every < 0:
            raise ConfigError("--ckpt-every must be 0 (off) or a positive number of cycles")
        if self.cycles < 0:
            raise ConfigError("--cycles must be 0 (run until stopped) or positive")
        if not 0.0 <= self.trace_ratio <= 1.0:
            raise ConfigError(f"--trace-ratio {self.trace_ratio} is out of range: use 0..1")
        if self.lease_timeout_ms < 0:
            raise ConfigError("--lease-timeout-ms must be 0 (no lease) or positive")
        if self.role == "active" and self.lease_timeout_ms == 0:
            raise ConfigError(
                "--active needs --lease-timeout-ms > 0 (the control plane's lease); "
                "to actuate with no control plane use --actuate-without-lease"
            )
        if self.epoch < 0 or self.node_id < 0:
            raise ConfigError("--epoch and --node-id must be 0 or positive")
        if self.log_level not in LEVELS:
            raise ConfigError(f"--log-level {self.log_level!r} is unknown: use {', '.join(LEVELS)}")
        try:
            if self.cpus:
                topology.check_cpus(self.cpus)
            if self.numa_node >= 0:
                topology.check_node(self.numa_node)
                node_cpus = topology.node_cpus(self.numa_node)
                stray = [c for c in self.cpus if c not in node_cpus]
                if stray:
                    raise ConfigError(
                        f"CPUs {topology.format_cpu_list(stray)} are not on NUMA node "
                        f"{self.numa_node} (its CPUs: {topology.format_cpu_list(node_cpus)})"
                    )
        except topology.TopologyError as e:
            raise ConfigError(str(e)) from None
        if self.restore_file and not os.path.isfile(self.restore_file):
            raise ConfigError(f"--restore-file {self.restore_file}: no such file")
        if not self.task:
            self.task = builtin_task_path()
        elif not os.path.isfile(self.task):
            raise ConfigError(f"--task {self.task}: no such file")

    def run_cpus(self) -> list[int]:
        """CPUs to pin to: the configured ones, else the NUMA node's, else none."""
        if self.cpus:
            return self.cpus
        if self.numa_node >= 0:
            return topology.node_cpus(self.numa_node)
        return []


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # one line, not usage + error: callers parse stderr and users read it
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="rtcore",
        description="Run one rtcore RT process: a hard-real-time cycle loop on a "
        "shared-memory segment. Stops cleanly on SIGTERM or SIGINT.",
    )
    p.add_argument("--shm", required=True, help="shared-memory segment name (/dev/shm/NAME)")
    p.add_argument("--period-us", type=int, default=1000, help="cycle period (default 1000)")
    p.add_argument("--cpus", default="", help="CPUs to pin the RT thread to, e.g. 1 or 2-3")
    p.add_argument("--priority", type=int, default=80, help="SCHED_FIFO priority 1..99 (80)")
    p.add_argument("--numa-node", type=int, default=-1, help="NUMA node for RT memory and CPUs")
    p.add_argument(
        "--wake-mode",
        default="sleep",
        help="sleep: clock_nanosleep to the deadline (default); hybrid: sleep, "
        "then spin the last --spin-us (for isolated CPUs)",
    )
    p.add_argument("--spin-us", type=int, default=50, help="hybrid spin window (default 50)")
    p.add_argument("--task", default="", help="task library path (default: built-in PID task)")
    p.add_argument("--task-params", default="", help="task parameters, 'key=value,...'")
    p.add_argument("--ckpt-every", type=int, default=10, help="checkpoint every N cycles (10)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="reuse a segment left by a dead RT process and resume from its newest checkpoint",
    )
    p.add_argument(
        "--restore-file",
        default="",
        help="a checkpoint file (the agent's durable copy) to resume from when the "
        "segment holds no newer checkpoint of this task",
    )
    p.add_argument(
        "--allow-degraded",
        action="store_true",
        help="run even if memory locking, affinity, NUMA binding or SCHED_FIFO is refused",
    )
    p.add_argument("--keep-shm", action="store_true", help="keep the segment after a clean stop")
    p.add_argument(
        "--cycles", type=int, default=0, help="stop after N cycles (0: run until stopped)"
    )
    # Control-block settings: applied to a new segment, and to a resumed one
    # only when given (a resumed segment keeps what its control plane set).
    # A new segment fails closed: it does not actuate until told to.
    p.add_argument("--log-level", help="lowest level the loop records (INFO)")
    p.add_argument(
        "--trace-ratio",
        type=float,
        help="share of cycles traced, 0..1 (0: off; late cycles always)",
    )
    role = p.add_mutually_exclusive_group()
    role.add_argument(
        "--standby",
        dest="role",
        action="store_const",
        const="standby",
        help="shadow mode: compute on replicated state, drive no outputs (the default)",
    )
    role.add_argument(
        "--active",
        dest="role",
        action="store_const",
        const="active",
        help="drive outputs while the control plane renews its lease (needs --lease-timeout-ms)",
    )
    role.add_argument(
        "--actuate-without-lease",
        dest="role",
        action="store_const",
        const="unleased",
        help="drive outputs with no control plane watching: standalone runs only",
    )
    p.add_argument("--epoch", type=int, help="fencing epoch of this node (0)")
    p.add_argument(
        "--lease-timeout-ms",
        type=int,
        help="stop actuating when the control plane's lease is older than this",
    )
    p.add_argument("--node-id", type=int, help="origin id written into this RT's checkpoints")
    return p


def config_from_args(argv: list[str] | None) -> RtConfig:
    a = build_parser().parse_args(argv)
    try:
        cpus = topology.parse_cpu_list(a.cpus) if a.cpus else []
    except topology.TopologyError as e:
        raise ConfigError(f"--cpus: {e}") from None
    return RtConfig(
        shm=a.shm,
        period_us=a.period_us,
        cpus=cpus,
        priority=a.priority,
        numa_node=a.numa_node,
        wake_mode=a.wake_mode,
        spin_us=a.spin_us,
        task=a.task,
        task_params=a.task_params,
        ckpt_every=a.ckpt_every,
        resume=a.resume,
        restore_file=a.restore_file,
        allow_degraded=a.allow_degraded,
        keep_shm=a.keep_shm,
        cycles=a.cycles,
        log_level=(a.log_level or "INFO").upper(),
        trace_ratio=a.trace_ratio or 0.0,
        role=a.role or "standby",
        epoch=a.epoch or 0,
        lease_timeout_ms=a.lease_timeout_ms or 0,
        node_id=a.node_id or 0,
        given={n for n in CONTROL_FLAGS if getattr(a, n) is not None},
    )


def open_segment(cfg: RtConfig) -> Segment:
    if not cfg.resume:
        return Segment.create(cfg.shm)
    try:
        seg = Segment.open(cfg.shm)
    except SegmentError:
        return Segment.create(cfg.shm)
    pid = seg.owner_pid()
    if pid_alive(pid) and pid != os.getpid():
        seg.close()
        raise SegmentError(f"shared-memory name {cfg.shm!r} is in use by RT process {pid}")
    return seg


def load_restore_file(path: str, seg: Segment) -> None:
    """Put the file's checkpoint into the segment unless it already holds a newer one;
    restore_newest() then takes whichever is newest."""
    from rtcore import ckptfile
    from rtcore._rt import SetupError

    try:
        meta, data = ckptfile.read_checkpoint_file(path)
    except ckptfile.CheckpointFileError as e:
        raise SetupError(f"--restore-file {e}") from None
    newest = seg.newest_checkpoint()
    if newest is not None and newest[0]["seq"] >= meta["seq"]:
        return
    slot = meta["seq"] % _core.CKPT_SLOTS
    _core.write_checkpoint(
        seg.buf,
        slot,
        meta["seq"],
        meta["cycle"],
        meta["epoch"],
        meta["task_id"],
        data,
        origin=meta.get("origin", 0),
        flags=meta.get("flags", 0),
    )


def hold_pm_qos() -> tuple[bool, str]:
    """Ask the kernel to keep CPUs out of deep idle states (as cyclictest does):
    waking from them adds tens of microseconds to every wake-up."""
    global _pm_qos_file
    try:
        f = open(PM_QOS_PATH, "wb", buffering=0)  # noqa: SIM115 - held open on purpose
        f.write((0).to_bytes(4, "little", signed=True))
    except OSError as e:
        return False, (
            f"cannot hold CPU idle latency at 0 ({PM_QOS_PATH}: {e.strerror}): wake-ups "
            f"may be slower; needs write access to {PM_QOS_PATH}"
        )
    _pm_qos_file = f
    return True, "CPU idle latency held at 0"


def warn(msg: str) -> None:
    print(f"rtcore: warning: {msg}", file=sys.stderr, flush=True)


def set_up(cfg: RtConfig, seg: Segment):  # noqa: ANN201 - returns rtcore._rt.Runtime
    """Everything before the loop. Raises ConfigError/SetupError with one line."""
    from rtcore import _rt

    rt = _rt.Runtime(seg.buf)
    rt.load_task(cfg.task)
    rt.alloc_state(cfg.numa_node)
    restored = None
    if cfg.restore_file:
        load_restore_file(cfg.restore_file, seg)
    if not seg.created or cfg.restore_file:
        restored, skipped = rt.restore_newest()
        for why in skipped:
            warn(f"checkpoint {why}, skipped")
    if restored is None:
        rt.init_task(cfg.task_params)
    rt.intern_strings()
    values: dict[str, Any] = {  # what each flag writes into its control-block field
        "log_level": LEVELS[cfg.log_level],
        "trace_ratio": round(cfg.trace_ratio * 1_000_000),
        "role": cfg.role != "standby",  # field `active`
        "epoch": cfg.epoch,
        "lease_timeout_ms": cfg.lease_timeout_ms * 1_000_000,  # field in ns
        "node_id": cfg.node_id,
    }
    chosen = {CONTROL_FLAGS[n]: v for n, v in values.items() if seg.created or n in cfg.given}
    if cfg.role == "active" and "role" in cfg.given:
        # started by a control plane that is alive now: its first lease
        chosen["lease_ns"] = _core.monotonic_ns()
    if cfg.role == "unleased" and "role" in cfg.given:
        chosen["lease_timeout_ns"] = 0
        warn("actuating without a control-plane lease (--actuate-without-lease)")
    if chosen:
        _core.write_control(seg.buf, **chosen)

    degraded = 0
    notes: list[str] = []
    cpus = cfg.run_cpus()
    steps: list[tuple[str, Callable[[], tuple[bool, str]]]] = [("mlock", rt.lock_memory)]
    if cpus:
        steps.append(("affinity", lambda: rt.set_affinity(cpus)))
    if cfg.numa_node >= 0:
        steps.append(("numa", lambda: rt.bind_numa(cfg.numa_node)))
    steps.append(("sched_fifo", lambda: rt.set_fifo(cfg.priority)))
    steps.append(("pm_qos", hold_pm_qos))
    for name, step in steps:
        ok, msg = step()
        if ok:
            continue
        if not cfg.allow_degraded and name != "pm_qos":
            raise _rt.SetupError(f"{msg}; or pass --allow-degraded to run without it")
        degraded |= DEGRADED_BIT[name]
        notes.append(msg)
        warn(f"{msg} (continuing degraded)")
    rt.configure(
        period_ns=cfg.period_us * 1000,
        wake_mode=0 if cfg.wake_mode == "sleep" else 1,
        spin_ns=cfg.spin_us * 1000,
        ckpt_every=cfg.ckpt_every,
        stop_after=cfg.cycles,
        degraded=degraded,
        degraded_text="; ".join(notes),
    )
    return rt, restored


def main(argv: list[str] | None = None) -> int:
    from rtcore._rt import SetupError

    seg: Segment | None = None
    started = False
    try:
        cfg = config_from_args(argv)
        cfg.validate()
        seg = open_segment(cfg)
        rt, restored = set_up(cfg, seg)
        resumed = (
            f"checkpoint {restored[0]} (cycle {restored[1]}, epoch {restored[2]})"
            if restored
            else "a fresh state"
        )
        print(
            f"rtcore: pid {os.getpid()} running on {cfg.shm} from {resumed}, "
            f"period {cfg.period_us} us",
            flush=True,
        )
        started = True
        last_cycle, signum = rt.run()
        print(f"rtcore: stopped after cycle {last_cycle}", flush=True)
        return 0
    except (ConfigError, SegmentError, SetupError) as e:
        print(f"rtcore: error: {e}", file=sys.stderr, flush=True)
        return 2
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"rtcore: error: {where}{e.strerror or e}", file=sys.stderr, flush=True)
        return 2
    finally:
        if seg is not None:
            # a failed start leaves nothing behind; a clean stop removes the
            # segment unless asked to keep it (a crash never gets here)
            if (not started and seg.created) or (started and not cfg.keep_shm):
                seg.unlink()
            seg.close()
