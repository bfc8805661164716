"""Where the RT loop runs: its CPUs, their isolation, its NUMA node.

Changes apply to the running RT process (no restart), are rolled back whole
when a step fails, and are kept in the data directory so that the next RT
process and the next agent start with them (after a reboot too).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from loguru import logger

from control.config import AgentConfig
from control.errors import ControlError, FailedPrecondition, InvalidArgument
from control.placement import numa, systemd
from control.placement.atomicfile import write_atomic
from control.placement.isolation import Isolator, detect_kernel_isolation
from control.placement.procfs import thread_ids
from rtcore import topology


@dataclass
class Placement:
    cpus: list[int] = field(default_factory=list)  # [] = wherever the kernel puts it
    isolate: bool = False
    numa_node: int = -1


class PlacementStore:
    """placement.json in the data directory, written atomically."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> Placement | None:
        try:
            with open(self.path) as f:
                raw = json.load(f)
            return Placement(
                cpus=[int(c) for c in raw["cpus"]],
                isolate=bool(raw["isolate"]),
                numa_node=int(raw["numa_node"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.error("ignoring unreadable {}: {}", self.path, e)
            return None

    def save(self, p: Placement) -> None:
        write_atomic(self.path, json.dumps(asdict(p)))


def set_process_affinity(pid: int, cpus: list[int]) -> None:
    """Every thread of pid (sched_setaffinity is per thread)."""
    for tid in thread_ids(pid):
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:
            continue
        except PermissionError:
            raise FailedPrecondition(
                "cannot change the RT process's CPU affinity: needs CAP_SYS_NICE "
                "(run the agent as root)"
            ) from None


class PlacementManager:
    def __init__(
        self,
        cfg: AgentConfig,
        rt_pid: Callable[[], int],
        on_event: Callable[[str, str, str, dict[str, Any]], None],
    ) -> None:
        self.cfg = cfg
        self._rt_pid = rt_pid
        self._emit = on_event
        self._lock = threading.RLock()
        self.store = PlacementStore(os.path.join(cfg.data_dir, "placement.json"))
        self.isolator = Isolator(
            f"rtcore-{cfg.node_id}", os.path.join(cfg.data_dir, "isolation.json")
        )
        saved = self.store.load()
        self.current = saved or Placement(cpus=list(cfg.cpus), numa_node=cfg.numa_node)
        self.isolated = False
        self.monitor = numa.NumaMonitor(
            self._rt_pid, self._node_or_none(), on_alert=self._on_numa_alert
        )
        self.last_numa: dict[str, Any] = {}
        # the RT process is started with these; a change later updates both
        cfg.cpus = list(self.current.cpus)
        cfg.numa_node = self.current.numa_node

    def _node_or_none(self) -> int | None:
        return self.current.numa_node if self.current.numa_node >= 0 else None

    def _on_numa_alert(self, kind: str, level: str, fields: dict[str, Any]) -> None:
        self._emit(kind, level, fields.get("message", kind), fields)

    # ---- lifecycle --------------------------------------------------------

    def recover(self) -> None:
        """Undo isolation a crashed agent left behind, before anything starts."""
        report = self.isolator.recover()
        if report is not None:
            self._emit(
                "isolation_recovered",
                "WARN",
                "undid the CPU isolation a previous agent left in force",
                report,
            )

    def on_rt_running(self, pid: int) -> None:
        """A (new) RT process runs: bring it under the placement in force."""
        with self._lock:
            if not self.current.isolate or not self.current.cpus:
                return
            try:
                if self.isolated:
                    self.isolator.update_rt_pid(pid)
                else:
                    self.isolator.apply(pid, self.current.cpus, self._mems())
                    self.isolated = True
            except ControlError as e:
                self._emit("isolation_failed", "ERROR", f"CPU isolation not applied: {e}", {})

    def close(self) -> None:
        """The agent stops: isolation is undone, what was there before restored."""
        with self._lock:
            if self.isolated:
                self.isolator.remove()
                self.isolated = False

    # ---- changes ----------------------------------------------------------

    def _mems(self) -> list[int] | None:
        return [self.current.numa_node] if self.current.numa_node >= 0 else None

    def set_affinity(self, cpus: list[int], isolate: bool | None) -> dict[str, Any]:
        try:
            topology.check_cpus(cpus)
        except topology.TopologyError as e:
            raise InvalidArgument("cpus", str(e)) from None
        if self.current.numa_node >= 0:
            node_cpus = topology.node_cpus(self.current.numa_node)
            stray = [c for c in cpus if c not in node_cpus]
            if stray:
                raise InvalidArgument(
                    "cpus",
                    f"CPUs {topology.format_cpu_list(stray)} are not "
                    f"on NUMA node {self.current.numa_node}",
                )
        with self._lock:
            t0 = time.monotonic()
            old = Placement(list(self.current.cpus), self.current.isolate, self.current.numa_node)
            new = Placement(cpus, old.isolate if isolate is None else isolate, old.numa_node)
            pid = self._rt_pid()
            was_isolated = self.isolated
            try:
                if self.isolated and (not new.isolate or new.cpus != old.cpus):
                    self.isolator.remove()
                    self.isolated = False
                if pid:
                    set_process_affinity(pid, new.cpus)
                self.current = new
                if new.isolate and pid and not self.isolated:
                    self.isolator.apply(pid, new.cpus, self._mems())
                    self.isolated = True
            except ControlError:
                self._roll_back(old, was_isolated, pid)
                raise
            self._commit(new)
            report = self.placement()
            report["elapsed_ms"] = round((time.monotonic() - t0) * 1000, 1)
        self._emit(
            "placement_changed",
            "WARN",
            f"RT CPUs now {topology.format_cpu_list(cpus)}"
            + (" (isolated)" if new.isolate else ""),
            {"cpus": cpus, "isolate": new.isolate},
        )
        return report

    def set_numa_node(self, node: int) -> dict[str, Any]:
        numa.validate_node(node)
        with self._lock:
            t0 = time.monotonic()
            old = Placement(list(self.current.cpus), self.current.isolate, self.current.numa_node)
            cpus = old.cpus
            node_cpus = numa.choose_cpus(node)
            if not cpus or any(c not in node_cpus for c in cpus):
                cpus = node_cpus
            new = Placement(cpus, old.isolate, node)
            pid = self._rt_pid()
            moved: dict[str, Any] = {}
            was_isolated = self.isolated
            try:
                if pid:
                    others = [n for n in topology.numa_nodes() if n != node]
                    moved = numa.migrate(pid, others or [node], node)
                    if cpus != old.cpus:
                        set_process_affinity(pid, cpus)
                self.current = new
                if self.isolated and cpus != old.cpus:
                    self.isolator.remove()
                    self.isolated = False
                    self.isolator.apply(pid, cpus, [node])
                    self.isolated = True
            except ControlError:
                self._roll_back(old, was_isolated, pid)
                raise
            self.monitor = numa.NumaMonitor(self._rt_pid, node, on_alert=self._on_numa_alert)
            self._commit(new)
            report = self.placement()
            report["migration"] = moved
            report["elapsed_ms"] = round((time.monotonic() - t0) * 1000, 1)
        self._emit(
            "placement_changed", "WARN", f"RT memory now on NUMA node {node}", {"numa_node": node}
        )
        return report

    def _roll_back(self, old: Placement, was_isolated: bool, pid: int) -> None:
        try:
            if self.isolated:
                self.isolator.remove()
                self.isolated = False
            if pid:
                set_process_affinity(pid, old.cpus or topology.online_cpus())
            if was_isolated and pid:
                self.isolator.apply(pid, old.cpus, [old.numa_node] if old.numa_node >= 0 else None)
                self.isolated = True
        except ControlError as e:
            logger.error("rolling back the placement failed too: {}", e)
        self.current = old

    def _commit(self, p: Placement) -> None:
        self.store.save(p)
        self.cfg.cpus = list(p.cpus)
        self.cfg.numa_node = p.numa_node
        unit = systemd.remembered_path(self.cfg.data_dir)
        if unit is not None:
            config_path = os.path.join(self.cfg.data_dir, "agent.toml")
            try:
                systemd.write_unit(
                    unit,
                    systemd.unit_text(self.cfg, ["--config", config_path], p.cpus, p.numa_node),
                )
            except OSError as e:
                logger.error("cannot update the systemd unit {}: {}", unit, e)

    # ---- reading ----------------------------------------------------------

    def sample_numa(self) -> dict[str, Any]:
        """Called periodically: page placement and access counters, alerts."""
        try:
            self.last_numa = self.monitor.sample()
        except (OSError, ControlError) as e:
            self.last_numa = {"error": str(e)}
        return self.last_numa

    def placement(self) -> dict[str, Any]:
        pid = self._rt_pid()
        try:
            running_on = sorted(os.sched_getaffinity(pid)) if pid else []
        except (ProcessLookupError, PermissionError):
            running_on = []
        return {
            "cpus": topology.format_cpu_list(self.current.cpus) if self.current.cpus else "",
            "isolated": self.isolated,
            "isolate": self.current.isolate,
            "numa_node": self.current.numa_node,
            "rt_affinity": topology.format_cpu_list(running_on) if running_on else "",
            "isolation": self.isolator.show(),
            "kernel_isolation": detect_kernel_isolation(),
            "numa": self.last_numa,
        }
