"""Small readers of procfs and sysfs text, shared by isolation and NUMA."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

# /proc/self/mounts and numa_maps (seq_path) write space, tab, newline, '='
# and backslash as 3-digit octal escapes
_OCTAL = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def read_or_empty(path: str) -> str:
    """A file's text, or '' where the kernel does not offer it."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def status_field(status: str, name: str) -> str:
    """One field of /proc/PID/status ('' when absent)."""
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    return ""


def stat_fields(stat: str) -> list[str]:
    """/proc/PID/stat from field 3 on: comm may hold spaces and parentheses,
    so fields count from the last ')'. Field N of proc_pid_stat(5) is [N - 3]."""
    _, paren, tail = stat.rpartition(")")
    return tail.split() if paren else []


def thread_ids(
    pid: int, proc_root: str = "/proc", listdir: Callable[[str], list[str]] = os.listdir
) -> list[int]:
    """The threads of pid, [] when it is gone; listdir is a seam for fake trees."""
    try:
        return sorted(int(t) for t in listdir(os.path.join(proc_root, str(pid), "task")))
    except OSError:
        return []
