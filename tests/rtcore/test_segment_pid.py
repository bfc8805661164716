"""Whether a segment's owner runs: a zombie does not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from rtcore.segment import pid_alive
from tests.conftest import wait_for


def test_a_zombie_is_not_alive():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(child.pid)
        os.kill(child.pid, signal.SIGKILL)

        def zombie() -> bool:
            with open(f"/proc/{child.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"

        wait_for(zombie, timeout=5, what="the child a zombie (not reaped yet)")
        assert not pid_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid)
    assert not pid_alive(0) and not pid_alive(-1)
