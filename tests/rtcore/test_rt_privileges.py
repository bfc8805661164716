"""Refused privileges: a clear one-line message, or a visible degraded run.

The RT process is started with capabilities dropped from its bounding set
(capsh), as an unprivileged deployment would run it.
"""

from __future__ import annotations

import shlex
import shutil
import sys

import pytest

from rtcore import layout
from rtcore.segment import Segment
from tests.rtcore.rtproc import finish, status

pytestmark = pytest.mark.skipif(shutil.which("capsh") is None, reason="capsh is not installed")


def without(caps: str, shm: str, *args: str) -> list[str]:
    cmd = shlex.join([sys.executable, "-m", "rtcore", "--shm", shm, *args])
    return ["capsh", f"--drop={caps}", "--", "-c", f"exec {cmd}"]


def test_no_sched_fifo_privilege_names_the_capability(spawn, shm_name):
    rc, out, err = finish(spawn(without("cap_sys_nice", shm_name, "--cycles", "10")))
    assert rc == 2
    assert err.count("\n") == 1
    assert "cannot set SCHED_FIFO priority 80" in err and "CAP_SYS_NICE" in err
    assert "--allow-degraded" in err


def test_no_memory_lock_privilege_names_the_capability(spawn, shm_name):
    rc, _, err = finish(spawn(without("cap_ipc_lock", shm_name, "--cycles", "10")))
    assert rc == 2
    assert err.count("\n") == 1
    assert "cannot lock memory" in err and "CAP_IPC_LOCK" in err


def test_allow_degraded_runs_and_shows_it(spawn, shm_name):
    proc = spawn(
        without(
            "cap_sys_nice,cap_ipc_lock",
            shm_name,
            "--cycles",
            "200",
            "--allow-degraded",
            "--keep-shm",
        )
    )
    rc, out, err = finish(proc)
    assert rc == 0, err
    assert "stopped after cycle 200" in out
    assert err.count("rtcore: warning:") == 2
    st = status(Segment.open(shm_name))
    names = {name for bit, name in layout.DEGRADED_BITS.items() if st["degraded"] & bit}
    assert names == {"mlock", "sched_fifo"}
    assert b"CAP_SYS_NICE" in st["degraded_text"] and b"CAP_IPC_LOCK" in st["degraded_text"]
    assert st["priority"] == 0
    assert st["cycles"] == 200
