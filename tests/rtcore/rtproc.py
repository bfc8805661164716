"""Helpers for tests that run real RT processes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

from rtcore.records import Drainer
from rtcore.segment import Segment, SegmentError
from tests.conftest import wait_for


def open_when_ready(
    name: str, proc: subprocess.Popen, min_cycles: int = 1, timeout: float = 15.0
) -> Segment:
    """Wait until proc, the RT process on `name`, has run min_cycles cycles
    (counted from the checkpoint it resumed from, if any)."""

    def ready() -> Segment | None:
        if proc.poll() is not None:
            raise AssertionError(
                f"RT process exited early ({proc.returncode}): "
                f"{proc.stderr.read() if proc.stderr else ''}"
            )
        if not os.path.exists(f"/dev/shm/{name}"):
            return None
        try:
            seg = Segment.open(name)
        except SegmentError:
            return None
        st = seg.view()["status"]
        # a resumed segment still shows the dead process's status until the new one runs
        if int(st["pid"]) == proc.pid and int(st["cycles"]) >= min_cycles:
            return seg
        seg.close()
        return None

    return wait_for(ready, timeout=timeout, what=f"RT process on {name} to run {min_cycles} cycles")


def status(seg: Segment) -> dict:
    st = seg.view()["status"]
    return {k: st[k].item() if st[k].ndim == 0 else st[k] for k in st.dtype.names}


def finish(proc: subprocess.Popen, timeout: float = 30.0) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


# A standalone RT that must drive its outputs (a new segment fails closed).
ACTUATE = "--actuate-without-lease"


def collect(
    drainer: Drainer,
    ring: str,
    predicate: Callable[[list[dict]], object],
    timeout: float = 10.0,
    what: str = "records",
) -> list[dict]:
    """Drain ring into one list until predicate(list) is truthy; the list."""
    got: list[dict] = []

    def done() -> bool:
        got.extend(drainer.drain(ring))
        return bool(predicate(got))

    wait_for(done, timeout=timeout, what=what)
    return got
