"""The actuation journal: every interval this node's RT drove outputs.

The RT pushes one record when it starts actuating and one when it stops
(rtcore journal ring, never dropped: it only starts an interval with room
for both). The drainer appends them here, fsynced, as JSON Lines; an RT that
dies mid-interval cannot write its end, so the agent closes the interval
from the RT's status block (last actuated cycle and time), marked
`closed_by: "agent"`. Comparing these files across nodes is how "never two
primaries at once" is checked.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any


class ActuationJournal:
    def __init__(self, path: str, node_id: str) -> None:
        self.path = path
        self.node_id = node_id
        self._lock = threading.Lock()
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)

    def append(self, records: list[dict[str, Any]]) -> None:
        """Persist RT journal records (rtcore.records.journal_dicts) before returning."""
        if not records:
            return
        lines = "".join(
            json.dumps({"node": self.node_id, **r}, sort_keys=True) + "\n" for r in records
        )
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, lines.encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.readlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line after a crash: the RT status closes it
        return out

    def open_interval(self) -> dict[str, Any] | None:
        """The START record of an interval with no END yet, or None."""
        current = None
        for r in self.records():
            if r.get("kind") == "start":
                current = r
            elif r.get("kind") == "end":
                current = None
        return current

    def close_from_status(
        self, status: dict[str, Any], now_real_ns: int, now_mono_ns: int
    ) -> dict[str, Any] | None:
        """Close an open interval with what the RT's status block says of its
        last actuated cycle (the RT died before it could). If the status
        describes another interval, the end is not known: it is recorded as
        at most now (`end_bound: "upper"`), never shorter than it may have
        been. Returns the END written."""
        start = self.open_interval()
        if start is None:
            return None
        same = (
            int(status.get("act_epoch", -1)) == start["epoch"]
            and int(status.get("act_first_cycle", -1)) == start["cycle"]
        )
        end: dict[str, Any] = {
            "kind": "end",
            "pid": start["pid"],
            "epoch": start["epoch"],
            "closed_by": "agent",
        }
        if same:
            last_mono = int(status["act_last_mono_ns"])
            end |= {
                "cycle": int(status["act_last_cycle"]),
                "mono_ns": last_mono,
                "real_ns": start["real_ns"] + (last_mono - start["mono_ns"]),
                "cycles": int(status["act_interval_cycles"]),
            }
        else:
            end |= {
                "cycle": None,
                "mono_ns": now_mono_ns,
                "real_ns": now_real_ns,
                "cycles": None,
                "end_bound": "upper",
            }
        self.append([end])
        return end

    def intervals(self, limit: int = 0) -> list[dict[str, Any]]:
        """Actuation intervals, oldest first (the newest `limit` if given);
        an open one has end fields None."""
        out: list[dict[str, Any]] = []
        start: dict[str, Any] | None = None
        for r in self.records():
            if r.get("kind") == "start":
                if start is not None:  # a start with no end: unknown end
                    out.append(_interval(start, None))
                start = r
            elif r.get("kind") == "end" and start is not None:
                out.append(_interval(start, r))
                start = None
        if start is not None:
            out.append(_interval(start, None))
        return out[-limit:] if limit else out


def _interval(start: dict[str, Any], end: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "node": start.get("node"),
        "epoch": start["epoch"],
        "pid": start["pid"],
        "start_cycle": start["cycle"],
        "start_time_ns": start["real_ns"],
        "start_mono_ns": start["mono_ns"],
        "end_cycle": end["cycle"] if end else None,
        "end_time_ns": end["real_ns"] if end else None,
        "end_mono_ns": end["mono_ns"] if end else None,
        "cycles": end["cycles"] if end else None,
        "closed_by": (end.get("closed_by", "rt") if end else None),
        "end_bound": (end.get("end_bound", "exact") if end else None),
    }
