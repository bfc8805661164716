"""Instructions per call of one function, counted by valgrind's callgrind: a
figure that, unlike nanoseconds, does not move with the clock, the load or
the machine, so two loggers can be compared on any host.

The profile is read directly rather than through callgrind_annotate, which
needs Perl, hides functions under its threshold and prints names shortened
and mixed with file names. In callgrind's format a function's block holds its
own cost lines and, after each `calls=` line, one line with the inclusive cost
of those calls; the function's inclusive cost is the sum of both.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

from bench.baselines import BaselineUnavailable
from bench.runner import BenchError, last_line, run_bounded

TIMEOUT_S = 600.0
_NAME = re.compile(r"^\((\d+)\)(?: (.*))?$")


def instructions_per_call(binary: str, args: list[str], function: str, calls: int) -> float:
    """Run binary with args under callgrind and return the inclusive
    instruction count (Ir) of `function`, all its calls together, divided by
    `calls` (how many times the program calls it).

    `function` is the name as callgrind prints it: a C name, or a demangled
    C++ name with its parameter list. Threads are counted together; a child
    the program forks is not counted."""
    if calls <= 0:
        raise ValueError(f"calls must be positive, not {calls}")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise BaselineUnavailable(
            "valgrind is not installed; install the Debian package valgrind (`make setup` does)"
        )
    with tempfile.TemporaryDirectory(prefix="rtc-callgrind-") as tmp:
        out = os.path.join(tmp, "callgrind.out")
        done = run_bounded(
            [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", binary, *args],
            timeout=TIMEOUT_S,
            what=f"callgrind running {os.path.basename(binary)}",
        )
        if done.returncode != 0:
            raise BenchError(
                f"{os.path.basename(binary)} under callgrind exited with status "
                f"{done.returncode}: {last_line(done.stderr)}"
            )
        return inclusive_ir(out, function) / calls


def inclusive_ir(profile: str, function: str) -> int:
    """Inclusive Ir of `function` in a callgrind output file: the sum over
    every block of it (one per object or file it appears in) of its own cost
    and the cost of its calls. Calls to itself are left out, their cost being
    in its own lines already; mutual recursion would be counted twice."""
    names: dict[str, str] = {}
    events: list[str] = []
    npos = 1
    current: str | None = None
    after_call = False
    callee: str | None = None
    total = 0
    found = False
    with open(profile, encoding="utf-8", errors="replace") as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            head = line[0]
            if head.isdigit() or head in "+-*":
                # a cost line: positions, then one count per event
                if current == function and not (after_call and callee == function):
                    fields = line.split()
                    ir = events.index("Ir") + npos
                    if ir < len(fields):
                        total += int(fields[ir])
                after_call = False
                continue
            key, _, value = line.partition("=")
            if key == "fn":
                current = _name(names, value)
                found = found or current == function
            elif key == "cfn":
                callee = _name(names, value)
            elif key == "calls":
                after_call = True
            elif line.startswith("positions:"):
                npos = len(line.split(":", 1)[1].split())
            elif line.startswith("events:"):
                events = line.split(":", 1)[1].split()
                if "Ir" not in events:
                    raise BenchError(f"{profile} has no Ir counts (events: {' '.join(events)})")
    if not found:
        raise BenchError(
            f"no function {function!r} in the callgrind profile: check its exact name, "
            "and that the compiler did not inline it (noinline)"
        )
    return total


def _name(names: dict[str, str], value: str) -> str:
    """A function name, given in full or as `(id) name` the first time and
    `(id)` after (callgrind's name compression, shared by fn= and cfn=)."""
    m = _NAME.match(value)
    if m is None:
        return value
    ident, name = m.groups()
    if name is not None:
        names[ident] = name
        return name
    return names.get(ident, value)
