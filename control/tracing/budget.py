"""Keeping tracing within its budget: from the RT's own counters of how long
recorded and unrecorded cycles take, the cost of tracing per cycle; when it
exceeds the budget (a share of the period), the sampling ratio is halved."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

COUNTERS = ("traced_cycles", "traced_exec_ns", "untraced_cycles", "untraced_exec_ns")
MIN_CYCLES = 20  # of each kind in a window, or the comparison says nothing


@dataclass
class Verdict:
    overhead_pct: float  # of the period, per cycle on average at the ratio in force
    added_ns: float  # per recorded cycle
    new_ratio: float | None  # None: within budget (or not enough to tell)


class SamplingBudget:
    def __init__(self, budget_pct: float, min_ratio: float = 0.0001) -> None:
        self.budget_pct = budget_pct
        self.min_ratio = min_ratio
        self._last: dict[str, int] | None = None
        self.backoffs = 0
        self.last: Verdict | None = None

    def check(self, counters: dict[str, int], period_ns: int, ratio: float) -> Verdict | None:
        """Compare the window since the previous call; a Verdict, or None when
        the window holds too few cycles of either kind (or the RT restarted)."""
        last, self._last = self._last, {k: int(counters[k]) for k in COUNTERS}
        if last is None or any(self._last[k] < last[k] for k in COUNTERS):
            return None
        d = {k: self._last[k] - last[k] for k in COUNTERS}
        if d["traced_cycles"] < MIN_CYCLES or d["untraced_cycles"] < MIN_CYCLES:
            # at ratio 1 (or 0) there is nothing to compare against: keep it
            return None
        added = (
            d["traced_exec_ns"] / d["traced_cycles"] - d["untraced_exec_ns"] / d["untraced_cycles"]
        )
        share = d["traced_cycles"] / (d["traced_cycles"] + d["untraced_cycles"])
        overhead_pct = 100 * max(added, 0.0) * share / period_ns
        new_ratio = None
        if overhead_pct > self.budget_pct and ratio > self.min_ratio:
            new_ratio = max(self.min_ratio, ratio / 2)
            self.backoffs += 1
        self.last = Verdict(round(overhead_pct, 5), round(added, 1), new_ratio)
        return self.last

    def stats(self) -> dict[str, Any]:
        v = self.last
        return {
            "budget_pct_of_period": self.budget_pct,
            "overhead_pct_of_period": v.overhead_pct if v else None,
            "added_ns_per_traced_cycle": v.added_ns if v else None,
            "backoffs": self.backoffs,
        }
