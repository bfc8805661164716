"""Running real agents (`rtctl agent`) in tests, and cleaning up after them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from control.placement.isolation import Isolator
from control.rt.supervisor import proc_state
from rtcore.segment import Segment, SegmentError
from tests.conftest import Spawner, wait_for

CPU = str(max(os.sched_getaffinity(0)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rtctl(*args: str, env: dict | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "control.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


class AgentProc:
    """An `rtctl agent` subprocess for one node, with its data directory."""

    def __init__(self, spawn: Spawner, tmp: Path, node_id: str, *extra: str) -> None:
        self.spawn = spawn
        self.node_id = node_id
        self.data_dir = str(tmp / node_id)
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.extra = list(extra)
        self.proc: subprocess.Popen | None = None

    @property
    def shm(self) -> str:
        return f"rtcore-{self.node_id}"

    def start(self, wait_running: bool = True) -> AgentProc:
        self.proc = self.spawn(
            [
                sys.executable,
                "-m",
                "control.cli",
                "agent",
                "--node-id",
                self.node_id,
                "--listen",
                self.target,
                "--metrics-listen",
                "",
                "--data-dir",
                self.data_dir,
                "--cpus",
                CPU,
                *self.extra,
            ]
        )
        if wait_running:
            self.wait_state({"run"})
        return self

    def status(self) -> dict | None:
        done = rtctl("status", "--target", self.target, "--json", timeout=10)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def call(self, *args: str) -> dict:
        done = rtctl(*args, "--target", self.target, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def wait_state(self, states: set[str], timeout: float = 20) -> dict:
        def check():
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"agent exited: {self.proc.stderr.read()}")
            st = self.status()
            return st if st and st["rt"]["state"] in states else None

        return wait_for(check, timeout=timeout, what=f"RT state in {states}")

    def wait_replaced(self, old_pid: int, timeout: float = 10) -> dict:
        """Status once a new RT process (not old_pid) runs its loop."""

        def replaced():
            st = self.status()
            ok = st and st["rt"]["pid"] not in (0, old_pid) and st["rt"]["state"] == "run"
            return st if ok else None

        return wait_for(replaced, timeout=timeout, what=f"an RT process replacing {old_pid}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=5)

    def segment(self) -> Segment:
        return Segment.open(self.shm)

    def cleanup(self) -> None:
        """Kill the agent and any RT process it left, undo CPU isolation it
        left in force, remove the segment."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        # a killed agent cannot undo its isolation: a machine left shielded
        # would disturb every test after this one
        Isolator(f"rtcore-{self.node_id}", os.path.join(self.data_dir, "isolation.json")).recover()
        with contextlib.suppress(SegmentError, FileNotFoundError):
            seg = Segment.open(self.shm)
            pid = seg.owner_pid()
            seg.close()
            if pid and proc_state(pid) not in (None, "Z"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for pid in _rt_pids(self.shm):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"/dev/shm/{self.shm}")


def _rt_pids(shm: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"rtcore" in argv and shm.encode() in argv:
            pids.append(int(entry))
    return pids
