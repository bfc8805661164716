"""Runs the RT process and keeps it running.

Watches it two ways: process exit through a pidfd (noticed within
milliseconds, for a child or an adopted process alike) and heartbeat
progress, checked every health interval (no progress for `stall_checks`
checks in a row = hung: killed and restarted). A restart resumes from the
segment's newest checkpoint, or from a durable one on disk when that is
newer. Repeated crashes back off exponentially up to a bound. A restarted
agent adopts an RT process that is still running instead of replacing it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loguru import logger

from control.config import AgentConfig
from control.rt.link import SegmentLink
from rtcore import _core, layout
from rtcore.segment import Segment, shm_path

FIRST_BACKOFF_S = 0.05
STOP_GRACE_S = 3.0
START_TIMEOUT_S = 30.0
SAFE_SETTLE_S = 0.1
WATCHER_RESTART_S = 0.1

MODES = {"run": layout.MODE_RUN, "hold": layout.MODE_HOLD, "safe": layout.MODE_SAFE}


@dataclass
class Exit:
    pid: int
    code: int | None
    signal: int | None
    reason: str  # "exited", "killed", "hung"

    def describe(self) -> str:
        if self.reason == "hung":
            return f"RT process {self.pid} hung (no heartbeat) and was killed"
        if self.signal:
            return f"RT process {self.pid} died of {signal.Signals(self.signal).name}"
        return f"RT process {self.pid} exited with status {self.code}"


def proc_state(pid: int) -> str | None:
    """The kernel's one-letter state of pid ('R', 'S', 'T', 'Z', ...), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def is_rt_process(pid: int, shm: str) -> bool:
    """pid is alive (not a zombie) and is an RT process on this segment."""
    if pid <= 0 or proc_state(pid) in (None, "Z", "X"):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return b"rtcore" in argv and shm.encode() in argv


class Supervisor:
    """One RT process per node. Thread-safe; `on_event` is called from its thread."""

    def __init__(
        self,
        cfg: AgentConfig,
        on_event: Callable[[str, str, dict[str, Any]], None],
        restore_file: Callable[[], str | None] = lambda: None,
        cgroup_procs: Callable[[], str | None] = lambda: None,
        control_args: Callable[[], list[str]] = lambda: ["--standby"],
        link: SegmentLink | None = None,
    ) -> None:
        self.cfg = cfg
        self._emit = on_event
        self._restore_file = restore_file
        self._cgroup_procs = cgroup_procs
        # role, epoch, lease and sampling flags: always passed, so an RT that
        # (re)starts takes this node's role, never what its segment last held
        self._control_args = control_args
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._stopping = False  # _stop_rt is taking the RT process down
        self._want_running = True
        self._mode = layout.MODE_RUN
        self._proc: subprocess.Popen | None = None
        self._pid = 0
        self._pidfd = -1
        self._started_at = 0.0
        self._streak = 0
        self._next_start = 0.0
        self._owns_link = link is None
        self._link = link or SegmentLink(cfg.shm_name)
        self.watcher_faults = 0
        self.callback_faults = 0
        self.state = "stopped"
        self.restarts = 0
        self.adopted = False
        self.last_exit: Exit | None = None
        self.last_error = ""

    # ---- public -------------------------------------------------------

    def start(self) -> None:
        """Adopt a running RT process on this node's segment, or start one; then watch it."""
        with self._lock:
            if not self._adopt():
                self._spawn()
        self._thread = threading.Thread(
            target=self._watch_forever, name="rt-supervisor", daemon=True
        )
        self._thread.start()

    def close(self, stop_rt: bool = True) -> None:
        """Stop watching; with stop_rt, bring the RT to SAFE and stop it cleanly."""
        with self._lock:
            self._closing = True
            self._want_running = False
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        if stop_rt:
            self._stop_rt()
        with self._lock:
            self._close_pidfd()
            if self._owns_link:
                self._link.close()

    def action(self, action: str) -> None:
        """start | stop | run | hold | safe."""
        with self._lock:
            if action == "start":
                self._want_running = True
                self._streak = 0
                self._next_start = 0.0
                if self._pid == 0:
                    self._spawn()
            elif action == "stop":
                self._want_running = False
            elif action in MODES:
                self._mode = MODES[action]
                if self.segment is not None:
                    _core.write_control(self.segment.buf, mode=self._mode)
            else:
                raise ValueError(f"unknown RT action {action!r}")
        if action == "stop":
            self._stop_rt()
        self._wake.set()

    @property
    def pid(self) -> int:
        return self._pid

    def info(self) -> dict[str, Any]:
        with self._lock:
            backoff = max(0.0, self._next_start - time.monotonic()) if self._pid == 0 else 0.0
            return {
                "state": self.state,
                "pid": self._pid,
                "restarts": self.restarts,
                "adopted": self.adopted,
                "crash_streak": self._streak,
                "backoff_ms": round(backoff * 1000),
                "last_exit": self.last_exit.describe() if self.last_exit else "",
                "last_error": self.last_error,
                "watcher_faults": self.watcher_faults,
                "callback_faults": self.callback_faults,
                "segment_remaps": self._link.remaps,
            }

    # ---- starting -----------------------------------------------------

    def _adopt(self) -> bool:
        if not os.path.exists(shm_path(self.cfg.shm_name)):
            return False
        seg = self._link.get()
        if seg is None:
            return False
        pid = seg.owner_pid()
        if not is_rt_process(pid, self.cfg.shm_name):
            return False
        try:
            self._pidfd = os.pidfd_open(pid)
        except OSError:
            return False
        self._pid = pid
        self._proc = None
        self._started_at = time.monotonic()
        self.adopted = True
        self.state = "running"
        self._notify(
            "rt_adopted", "WARN", {"pid": pid, "message": f"adopted running RT process {pid}"}
        )
        return True

    @property
    def segment(self) -> Segment | None:
        """The node's segment as mapped now (re-mapped if its file was replaced)."""
        return self._link.get()

    def _argv(self) -> list[str]:
        c = self.cfg
        argv = [
            sys.executable,
            "-m",
            "rtcore",
            "--shm",
            c.shm_name,
            "--resume",
            "--keep-shm",
            "--period-us",
            str(c.period_us),
            "--priority",
            str(c.priority),
            "--wake-mode",
            c.wake_mode,
            "--ckpt-every",
            str(c.ckpt_every),
        ]
        if c.cpus:
            argv += ["--cpus", ",".join(map(str, c.cpus))]
        if c.numa_node >= 0:
            argv += ["--numa-node", str(c.numa_node)]
        if c.task:
            argv += ["--task", c.task]
        if c.task_params:
            argv += ["--task-params", c.task_params]
        if c.allow_degraded:
            argv.append("--allow-degraded")
        argv += self._control_args()
        restore = self._restore_file()
        if restore:
            argv += ["--restore-file", restore]
        procs = self._cgroup_procs()
        if procs:
            # under CPU isolation the agent lives in the housekeeping cpuset: the
            # RT process must join the RT cpuset before it pins itself to its CPUs
            argv = ["sh", "-c", 'echo 0 > "$0" && exec "$@"', procs, *argv]
        return argv

    def _prepare_segment(self) -> None:
        """A segment left by a clean stop still says STOP: set the mode the new
        process must start in before it reads it."""
        seg = self._link.get()
        if seg is not None:
            _core.write_control(seg.buf, mode=self._mode)

    def _spawn(self) -> None:
        self._prepare_segment()
        os.makedirs(self.cfg.data_dir, exist_ok=True)
        log = open(os.path.join(self.cfg.data_dir, "rt.log"), "ab")  # noqa: SIM115
        try:
            # own session: the RT outlives an agent that is killed, and the
            # agent's terminal's Ctrl-C does not reach it directly
            proc = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        except OSError as e:
            self.state = "failed"
            self.last_error = f"cannot start the RT process: {e}"
            self._notify("rt_start_failed", "CRITICAL", {"message": self.last_error})
            return
        finally:
            log.close()
        self._proc = proc
        self._pid = proc.pid
        self._pidfd = os.pidfd_open(proc.pid)
        self._started_at = time.monotonic()
        self.adopted = False
        self.state = "starting"
        self._notify(
            "rt_started", "INFO", {"pid": proc.pid, "message": f"started RT process {proc.pid}"}
        )

    def _attach_segment(self) -> bool:
        """Whether the RT process has made its segment and runs its loop on it."""
        seg = self._link.get()
        if seg is None:
            return False
        st = seg.view()["status"]
        return int(st["pid"]) == self._pid and int(st["state"]) != layout.STATE_NAMES_INV["init"]

    # ---- watching -----------------------------------------------------

    def _watch_forever(self) -> None:
        """The watch loop, restarted if it ever raises: a dead watcher would
        leave the status saying "running" while a crashed RT goes unnoticed."""
        while not self._closing:
            try:
                self._watch()
            except Exception:  # noqa: BLE001 - logged, counted, and watching resumes
                self.watcher_faults += 1
                logger.exception("the RT supervisor's watcher failed; restarting it")
                time.sleep(WATCHER_RESTART_S)

    def _notify(self, kind: str, level: str, fields: dict[str, Any]) -> None:
        """Tell the agent; a fault in its handler is logged and counted, never
        allowed to stop the supervision."""
        try:
            self._emit(kind, level, fields)
        except Exception:  # noqa: BLE001 - the supervisor must outlive its listeners
            self.callback_faults += 1
            logger.exception("handling the supervisor event {} failed", kind)

    def _watch(self) -> None:
        # a healthy loop beats once a period: checking less often than every
        # two periods would call a long-period loop hung
        interval = max(self.cfg.health_interval_ms / 1000, 2 * self.cfg.period_us / 1e6)
        last_beat = -1
        stalls = 0
        next_check = time.monotonic() + interval
        stuck = False
        while True:
            with self._lock:
                if self._closing:
                    return
                pidfd = self._pidfd if not self._stopping else -1
            if self._stopping:
                # _stop_rt owns the process until it is gone
                time.sleep(0.01)
                continue
            if pidfd < 0:
                self._maybe_restart()
                self._wake.wait(0.01)
                self._wake.clear()
                continue
            timeout = max(0.0, next_check - time.monotonic())
            ready, _, _ = select.select([pidfd], [], [], min(timeout, 0.05))
            if ready:
                self._on_exit("exited")
                last_beat, stalls = -1, 0
                continue
            if time.monotonic() < next_check:
                continue
            next_check = time.monotonic() + interval
            with self._lock:
                if self._closing or self._pid == 0:
                    continue
                if self.state == "starting":
                    if time.monotonic() - self._started_at > START_TIMEOUT_S:
                        stuck = True
                    elif self._attach_segment():
                        self.state = "running"
                        seg = self._link.get()
                        restored = int(seg.view()["status"]["restored_seq"]) if seg else 0
                        self._notify(
                            "rt_running",
                            "INFO",
                            {
                                "pid": self._pid,
                                "restored_seq": restored,
                                "message": f"RT process {self._pid} running"
                                + (f", resumed from checkpoint {restored}" if restored else ""),
                            },
                        )
                    if not stuck:
                        continue
                seg = self._link.get()
                beat = int(seg.view()["status"]["heartbeat"]) if seg is not None else -1
            if stuck:
                self._kill_hung(f"did not start its loop within {START_TIMEOUT_S:.0f} s")
                last_beat, stalls, stuck = -1, 0, False
                continue
            if beat == last_beat:
                stalls += 1
                if stalls >= self.cfg.stall_checks:
                    self._kill_hung(f"no heartbeat for {self.cfg.stall_checks} health checks")
                    last_beat, stalls = -1, 0
            else:
                last_beat, stalls = beat, 0

    def _kill_hung(self, why: str) -> None:
        with self._lock:
            pid, pidfd = self._pid, self._pidfd
            self.state = "hung"
        self._notify(
            "rt_hung",
            "CRITICAL",
            {"pid": pid, "message": f"RT process {pid} hung: {why}; killing it"},
        )
        # through the pidfd, never a pid number that may have been reused;
        # SIGKILL takes effect even on a stopped process
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        if pidfd >= 0:
            select.select([pidfd], [], [], 5.0)
        self._on_exit("hung")

    def _on_exit(self, reason: str) -> None:
        with self._lock:
            if self._stopping:
                return  # _stop_rt owns the process and its pidfd until it is gone
            ex = self._reap(reason)
            self._close_pidfd()
            self._pid = 0
            self._proc = None
            ran = time.monotonic() - self._started_at
            self.last_exit = ex
            if not self._want_running or self._closing:
                self.state = "stopped"
                self._notify("rt_stopped", "INFO", {"message": ex.describe()})
                return
            # a run that lasted restart_stable_ms was healthy: a new streak starts
            stable = ran >= self.cfg.restart_stable_ms / 1000
            self._streak = 1 if stable else self._streak + 1
            delay = (
                0.0
                if self._streak <= 1
                else min(
                    FIRST_BACKOFF_S * 2 ** (self._streak - 2),
                    self.cfg.restart_backoff_max_ms / 1000,
                )
            )
            self._next_start = time.monotonic() + delay
            self.state = "backoff" if delay else "restarting"
            self.restarts += 1
            # FR-019: an RT crash is logged at CRITICAL
            self._notify(
                "rt_crashed",
                "CRITICAL",
                {
                    "pid": ex.pid,
                    "code": ex.code,
                    "signal": ex.signal,
                    "restart_in_ms": round(delay * 1000),
                    "crash_streak": self._streak,
                    "message": ex.describe()
                    + (f"; restarting in {delay * 1000:.0f} ms" if delay else "; restarting now"),
                },
            )
        self._maybe_restart()

    def _maybe_restart(self) -> None:
        with self._lock:
            if self._pid or self._closing or not self._want_running:
                return
            if time.monotonic() < self._next_start:
                return
            self._spawn()

    def _reap(self, reason: str) -> Exit:
        pid = self._pid
        code: int | None = None
        sig: int | None = None
        if self._proc is not None:
            try:
                rc = self._proc.wait(timeout=1)
                code, sig = (None, -rc) if rc < 0 else (rc, None)
            except subprocess.TimeoutExpired:
                pass
        else:
            # adopted: not our child, its exit status went to its real parent
            pass
        if reason == "hung":
            sig = signal.SIGKILL
        if code:
            self.last_error = self._rt_log_tail()
        return Exit(pid, code, sig, reason if reason == "hung" else ("killed" if sig else "exited"))

    def _rt_log_tail(self) -> str:
        try:
            with open(os.path.join(self.cfg.data_dir, "rt.log"), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def _close_pidfd(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    # ---- stopping -----------------------------------------------------

    def _stop_rt(self) -> None:
        """SAFE first so outputs come to rest, then STOP; signals if it does not comply."""
        seg = self._link.get()
        with self._lock:
            pid = self._pid
            if not pid or self._pidfd < 0:
                return
            # its own handle: nothing else may close the one it waits on
            pidfd = os.dup(self._pidfd)
            self.state = "stopping"
            self._stopping = True
        if seg is not None:
            _core.write_control(seg.buf, mode=layout.MODE_SAFE)
            time.sleep(SAFE_SETTLE_S)
            _core.write_control(seg.buf, mode=layout.MODE_STOP)
        exited = pidfd >= 0 and bool(select.select([pidfd], [], [], STOP_GRACE_S)[0])
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if exited:
                break
            with contextlib.suppress(ProcessLookupError, OSError):
                signal.pidfd_send_signal(pidfd, sig)
            exited = pidfd >= 0 and bool(select.select([pidfd], [], [], STOP_GRACE_S)[0])
        os.close(pidfd)
        with self._lock:
            self._reap("exited")
            self._close_pidfd()
            self._pid = 0
            self._proc = None
            self.state = "stopped"
            self._stopping = False
        if seg is not None:
            # the next start must not find STOP waiting for it
            _core.write_control(seg.buf, mode=self._mode)
        self._notify("rt_stopped", "INFO", {"pid": pid, "message": f"RT process {pid} stopped"})
