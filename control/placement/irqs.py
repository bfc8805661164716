"""IRQ affinities: off the RT CPUs while isolated, back as they were after."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from control.placement.cgroups import CgroupFS
from control.placement.journal import Journal, Record
from rtcore.topology import TopologyError, format_cpu_list, parse_cpu_list


class Irqs:
    """The smp_affinity_list files under irq_root (/proc/irq)."""

    def __init__(self, fs: CgroupFS, irq_root: str, journal: Journal) -> None:
        self.fs = fs
        self.irq_root = irq_root
        self.journal = journal

    def move(self, rec: Record) -> dict[str, Any]:
        """IRQs allowed on RT CPUs keep only their housekeeping CPUs (all of them
        when they had none); the kernel refuses per-CPU and managed ones."""
        rt = set(rec["cpus"])
        todo = {irq: old for irq, old in self.affinities().items() if set(old) & rt}
        rec["irqs"] = {irq: format_cpu_list(old) for irq, old in todo.items()}
        self.journal.save(rec)
        refused = []
        for irq, old in todo.items():
            target = [c for c in old if c not in rt] or rec["housekeeping"]
            try:
                self.fs.write(self._file(irq), format_cpu_list(target))
            except OSError:
                refused.append(irq)
        for irq in refused:
            del rec["irqs"][irq]
        return {
            "irqs_moved": len(todo) - len(refused),
            "irqs_skipped": len(refused),
            "irqs_unmovable": sorted(refused, key=int),
        }

    def restore(self, rec: Record) -> tuple[int, int]:
        """The recorded affinities back; (restored, failed)."""
        restored = failed = 0
        for irq, old in rec["irqs"].items():
            try:
                self.fs.write(self._file(irq), old)
                restored += 1
            except OSError:
                failed += 1  # its device went away, or it refuses now
        return restored, failed

    def on(self, cpus: set[int]) -> list[int]:
        """IRQs allowed on any of cpus."""
        return sorted(int(irq) for irq, aff in self.affinities().items() if set(aff) & cpus)

    def affinities(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        try:
            entries = self.fs.listdir(self.irq_root)
        except OSError:
            return out  # no /proc/irq (a container): nothing to move
        for entry in sorted((e for e in entries if e.isdigit()), key=int):
            with contextlib.suppress(OSError, TopologyError):
                out[entry] = parse_cpu_list(self.fs.read(self._file(entry)))
        return out

    def _file(self, irq: str) -> str:
        return os.path.join(self.irq_root, irq, "smp_affinity_list")
