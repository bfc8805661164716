"""Bounded child processes for the benchmarks.

Every measured program (the RT process, cyclictest, the push-timing worker)
may run SCHED_FIFO on a CPU the rest of the machine needs, so each one has a
cycle budget, a wall-clock timeout, is killed if the benchmark stops for any
reason, and dies with its parent.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from rtcore.segment import pid_alive

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_ROOT = str(Path(__file__).resolve().parent.parent)
SHM_DIR = "/dev/shm"
TICK_S = 0.25
_SEGMENT = re.compile(r"^rtc-bench-(\d+)-")


class BenchError(Exception):
    """A benchmark cannot run or a measured program failed; the message says why."""


def _die_with_parent() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _stop_with_parent() -> None:
    # SIGTERM, not SIGKILL: an agent stops its RT process before it goes
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def child_env() -> dict[str, str]:
    """Our environment, with this checkout importable (rtcore, bench) even
    when the package is not installed."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = _ROOT + (os.pathsep + path if path else "")
    return env


def segment_name(what: str) -> str:
    """A fresh shared-memory name owned by this process (see sweep_segments)."""
    return f"rtc-bench-{os.getpid()}-{what}-{secrets.token_hex(4)}"


def sweep_segments() -> None:
    """Remove benchmark segments whose owner is gone: a benchmark killed with
    SIGKILL cannot remove its own."""
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return
    for name in names:
        m = _SEGMENT.match(name)
        if m and not pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(SHM_DIR, name))


def free_port() -> int:
    """A loopback TCP port free now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    """The q-quantile of values, nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))]


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def run_bounded(
    argv: list[str],
    *,
    timeout: float,
    what: str,
    tick: Callable[[int], None] | None = None,
) -> subprocess.CompletedProcess:
    """Run argv to completion and return its output; kill it on timeout and on
    any exception while waiting (Ctrl-C, SIGTERM turned into KeyboardInterrupt).
    tick, if given, is called with the child's pid about every TICK_S seconds
    while it runs."""
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    except OSError as e:
        raise BenchError(f"cannot start {what} ({argv[0]}): {e.strerror}") from None
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                # a retried communicate() keeps what it has read so far
                out, err = proc.communicate(timeout=min(TICK_S, deadline - time.monotonic()))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    raise
            if tick is not None:
                tick(proc.pid)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise BenchError(f"{what} did not finish within {timeout:.0f} s and was killed") from None
    except BaseException:
        _kill(proc)
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def terminate(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM, and SIGKILL if it is still there after grace_s; waits for it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _kill(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.communicate()


def wait_until(
    pred: Callable[[], T | None],
    timeout: float,
    what: str,
    proc: subprocess.Popen | None = None,
    interval: float = 0.0005,
) -> T:
    """Poll pred until it returns something truthy; BenchError on timeout or
    when proc (the process being waited on) exits first."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise BenchError(f"{what}: the process exited first ({last_line(err)})")
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def background_rt(what: str, *args: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """`python -m rtcore --shm NAME --allow-degraded ARGS` running in the
    background for the body; then stopped (SIGTERM, SIGKILL) and its segment
    removed, whatever happened."""
    name = segment_name(what)
    argv = [sys.executable, "-m", "rtcore", "--shm", name, "--allow-degraded", *args]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        yield proc, name
    finally:
        terminate(proc)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(SHM_DIR, name))


@dataclass(frozen=True)
class AgentRun:
    proc: subprocess.Popen
    target: str  # its gRPC address
    data_dir: str
    shm: str  # its RT's segment


@contextlib.contextmanager
def background_agent(what: str, cpu: int, *args: str) -> Iterator[AgentRun]:
    """`rtctl agent` on a fresh data directory and free loopback port, its RT
    on `cpu`, for the body, once its RT runs; then stopped (SIGTERM, then
    SIGKILL and its RT process) and everything removed, whatever happened."""
    import shutil
    import socket

    from control.rpc.client import Client
    from control.rt.supervisor import is_rt_process
    from rtcore.segment import Segment, SegmentError

    node = f"{what}{os.getpid()}"
    shm = f"rtcore-{node}"
    data_dir = tempfile.mkdtemp(prefix=f"rtc-bench-{what}-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{s.getsockname()[1]}"
    argv = [sys.executable, "-m", "control.cli", "agent", "--node-id", node, "--listen", target]
    argv += ["--metrics-listen", "", "--data-dir", data_dir, "--cpus", str(cpu), *args]
    # a file, not a pipe: nobody reads a pipe while the benchmark runs, and a
    # full one would block the agent's threads
    log = open(os.path.join(data_dir, "agent.stderr"), "w+")  # noqa: SIM115
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
        text=True,
        env=child_env(),
        start_new_session=True,
        preexec_fn=_stop_with_parent,  # a benchmark killed outright leaves no agent behind
    )
    rt_pid = 0
    try:

        def running() -> int | None:
            if proc.poll() is not None:
                log.seek(0)
                raise BenchError(f"the agent exited: {last_line(log.read())}")
            try:
                with Client(target, timeout=2) as client:
                    st = client.status()
            except Exception:  # noqa: BLE001 - not serving yet
                return None
            return int(st["rt"]["pid"]) if st["rt"]["state"] == "run" else None

        rt_pid = wait_until(running, 60, f"the {what} agent's RT loop", interval=0.05)
        yield AgentRun(proc, target, data_dir, shm)
    finally:
        terminate(proc, grace_s=15)  # the agent stops its RT process itself
        # a killed agent leaves its RT process (own session); a restarted one too
        with contextlib.suppress(SegmentError, FileNotFoundError):
            seg = Segment.open(shm)
            rt_pid = seg.owner_pid() or rt_pid
            seg.close()
        if rt_pid and pid_alive(rt_pid) and is_rt_process(rt_pid, shm):
            os.kill(rt_pid, signal.SIGKILL)
        log.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(SHM_DIR, shm))
        shutil.rmtree(data_dir, ignore_errors=True)


def open_running(name: str, proc: subprocess.Popen, min_cycles: int, timeout: float = 60):  # noqa: ANN201
    """The segment of proc once it has run min_cycles cycles."""
    from rtcore.segment import Segment, SegmentError

    def ready() -> Segment | None:
        try:
            seg = Segment.open(name)
        except SegmentError:
            return None
        st = seg.view()["status"]
        if int(st["pid"]) == proc.pid and int(st["cycles"]) >= min_cycles:
            return seg
        seg.close()
        return None

    return wait_until(ready, timeout, f"the RT process to run {min_cycles} cycles", proc, 0.005)


CHATTY = Path(__file__).with_name("tasks") / "chatty.c"
INCLUDE = Path(__file__).resolve().parent.parent / "rtcore" / "include"


def build_chatty(out_dir: str) -> str:
    """bench/tasks/chatty.c as a task library in out_dir: logs and spans at a
    chosen rate (see its parameters)."""
    lib = str(Path(out_dir) / "libchatty.so")
    done = run_bounded(
        ["gcc", "-shared", "-fPIC", "-O2", f"-I{INCLUDE}", "-o", lib, str(CHATTY)],
        timeout=120,
        what="gcc building the benchmark task",
    )
    if done.returncode != 0:
        raise BenchError(f"cannot build the benchmark task: {last_line(done.stderr)}")
    return lib


CACHE_DIR = Path.home() / ".cache" / "rtcore"
COMPILE_TIMEOUT_S = 120.0


def cached_build(name: str, key_parts: list[bytes], command: Callable[[str], list[str]]) -> str:
    """A program built once and kept under ~/.cache/rtcore/NAME-KEY, KEY a hash
    of key_parts (sources, headers, compiler version, flags): a changed input
    builds anew. command(out_path) is the compiler command line. BenchError
    with the compiler's last line if it fails."""
    key = hashlib.sha256()
    for part in key_parts:
        key.update(len(part).to_bytes(8, "little"))
        key.update(part)
    binary = CACHE_DIR / f"{name}-{key.hexdigest()[:16]}"
    if binary.exists():
        return str(binary)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    # built under a temporary name and renamed: a concurrent or interrupted
    # build never leaves a half-written binary under the cached name
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=CACHE_DIR)
    os.close(fd)
    try:
        done = run_bounded(command(tmp), timeout=COMPILE_TIMEOUT_S, what=f"building {name}")
        if done.returncode != 0:
            raise BenchError(f"cannot build {name}: {last_line(done.stderr)}")
        os.replace(tmp, binary)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return str(binary)
