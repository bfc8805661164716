"""The isolation's undo record: each change is written here before it is made.

The record is what lets --no-isolate, an agent stop, or `recover()` after a
crash put everything back. Undo steps act only on what is still ours, so a
change that was recorded but never made (the agent died in between) is
undone harmlessly. The file is JSON so that an operator can read it, and its
format number lets a newer agent refuse a record it would misread.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, NotRequired, TypedDict, cast

from control.errors import FailedPrecondition
from control.placement.atomicfile import write_atomic

RECORD_FORMAT = 1

# what undo needs per moved task: the cgroup it came from (relative to the
# root), its affinity then, and its start time (a reused task id is not it)
TaskInfo = TypedDict("TaskInfo", {"from": str, "cpus": str, "start": int | None})


class Record(TypedDict):
    version: str  # "v1" or "v2"
    root: str  # the cpuset hierarchy's mount point
    cgroups: list[str]  # cpusets we create, in order of creation
    tasks: dict[str, TaskInfo]  # by task id: tasks we move
    irqs: dict[str, str]  # by IRQ number: the affinity list before we changed it
    load_balance: str | None  # v1: the root's sched_load_balance before we cleared it
    subtree_enabled: bool  # v2: we enabled cpuset in the root's subtree_control
    # absent from a record rebuilt from leftover cpusets (`orphan`)
    format: NotRequired[int]
    name: NotRequired[str]
    phase: NotRequired[str]  # "applying" until every step is done, then "applied"
    rt_pid: NotRequired[int]
    cpus: NotRequired[list[int]]
    housekeeping: NotRequired[list[int]]
    mems: NotRequired[list[int]]


def new_record(
    name: str,
    version: str,
    root: str,
    rt_pid: int,
    cpus: list[int],
    housekeeping: list[int],
    mems: list[int],
) -> Record:
    """The record of an isolation about to be applied: nothing changed yet."""
    return {
        "format": RECORD_FORMAT,
        "name": name,
        "version": version,
        "root": root,
        "phase": "applying",
        "rt_pid": rt_pid,
        "cpus": cpus,
        "housekeeping": housekeeping,
        "mems": mems,
        "cgroups": [],
        "tasks": {},
        "irqs": {},
        "load_balance": None,
        "subtree_enabled": False,
    }


def orphan(version: str, root: str, cgroups: list[str]) -> Record:
    """A record for our cpusets found without one: they are undone by name
    (tasks go to the parent; IRQ affinities are not known)."""
    return {
        "version": version,
        "root": root,
        "cgroups": cgroups,
        "tasks": {},
        "irqs": {},
        "load_balance": None,
        "subtree_enabled": False,
    }


class Journal:
    """The record file at path."""

    def __init__(self, path: str) -> None:
        self.path = path

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def save(self, rec: Record) -> None:
        # write-ahead: on disk whole before the change it names
        write_atomic(self.path, json.dumps(rec, indent=1, sort_keys=True))

    def load(self) -> Record | None:
        try:
            with open(self.path) as f:
                rec: Any = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise FailedPrecondition(
                f"the isolation record {self.path} is unreadable ({e}); move it aside "
                "and call remove() again to undo the isolation by name"
            ) from None
        if not isinstance(rec, dict) or rec.get("format") != RECORD_FORMAT:
            raise FailedPrecondition(
                f"the isolation record {self.path} is not in format {RECORD_FORMAT}; "
                "move it aside and call remove() again to undo the isolation by name"
            )
        return cast(Record, rec)

    def forget(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
