"""Shared fixtures: real RT processes, real shared memory, and their cleanup.

Every process a test starts goes through `spawn` so that teardown stops it
(SIGTERM, then SIGKILL): a SCHED_FIFO loop left behind would starve a 2-CPU
machine.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TASKS = ROOT / "tests" / "rtcore" / "tasks"
INCLUDE = ROOT / "rtcore" / "include"
_names = itertools.count()


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 10.0,
    interval: float = 0.01,
    what: str = "condition",
) -> object:
    """Poll predicate until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def shm_name() -> Iterator[str]:
    name = f"rtc-test-{os.getpid()}-{next(_names)}"
    yield name
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"/dev/shm/{name}")


class Spawner:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def __call__(self, args: list[str], **kw) -> subprocess.Popen:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        proc = subprocess.Popen(args, **kw)
        self.procs.append(proc)
        return proc

    def rt(self, shm: str, *extra: str, prefix: list[str] | None = None, **kw) -> subprocess.Popen:
        """Start `python -m rtcore --shm shm extra...`."""
        return self((prefix or []) + [sys.executable, "-m", "rtcore", "--shm", shm, *extra], **kw)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


@pytest.fixture
def spawn() -> Iterator[Spawner]:
    s = Spawner()
    yield s
    s.stop_all()


@pytest.fixture(scope="session")
def build_task(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    """Compile tests/rtcore/tasks/NAME.c into a task library; returns its path.
    Keyword arguments become -D macro definitions (one library per set)."""
    out_dir = tmp_path_factory.mktemp("tasks")
    built: dict[tuple, str] = {}

    def build(name: str, **defines: str) -> str:
        key = (name, tuple(sorted(defines.items())))
        if key not in built:
            out = out_dir / f"lib{name}-{len(built)}.so"
            subprocess.run(
                [
                    "gcc",
                    "-shared",
                    "-fPIC",
                    "-O2",
                    "-Wall",
                    f"-I{INCLUDE}",
                    *(f"-D{k}={v}" for k, v in sorted(defines.items())),
                    "-o",
                    str(out),
                    str(TASKS / f"{name}.c"),
                    "-lm",
                ],
                check=True,
                timeout=120,
            )
            built[key] = str(out)
        return built[key]

    return build
