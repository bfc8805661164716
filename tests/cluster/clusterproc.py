"""Real clusters in tests: three `rtctl agent` processes (or two and a
witness) with Raft on loopback, or each in a network namespace, and the
evidence they leave (actuation journals, jobs)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from control.rt.supervisor import proc_state
from rtcore.segment import Segment, SegmentError
from tests.conftest import Spawner, wait_for
from tests.control.agentproc import CPU, AgentProc, free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Interval:
    """One actuated interval of one node, in wall-clock ns (end None: still on)."""

    node: str
    epoch: int
    start_ns: int
    end_ns: int | None
    start_cycle: int
    end_cycle: int | None


class Member(AgentProc):
    """One cluster member: an agent with --raft/--peer, its output in files
    (a pipe nobody reads would block a chatty agent), optionally run inside a
    network namespace (`prefix`, e.g. ["ip", "netns", "exec", NS])."""

    def __init__(
        self,
        spawn: Spawner,
        tmp: Path,
        node_id: str,
        raft: str,
        peers: list[str],
        *extra: str,
        prefix: list[str] | None = None,
        listen_host: str = "127.0.0.1",
    ) -> None:
        super().__init__(spawn, tmp, node_id, *extra)
        self.raft = raft
        self.peers = peers
        self.prefix = list(prefix or [])
        self.target = f"{listen_host}:{self.port}"
        self.witness = "--witness" in extra
        self.log_path = tmp / f"{node_id}.log"

    def argv(self) -> list[str]:
        cpus = [] if self.witness else ["--cpus", CPU]
        peers = [a for p in self.peers for a in ("--peer", p)]
        return [
            *self.prefix,
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
            *cpus,
            "--raft",
            self.raft,
            *peers,
            *self.extra,
        ]

    def start(self, wait_running: bool = False) -> Member:  # type: ignore[override]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
        try:
            self.proc = self.spawn(self.argv(), stdout=log, stderr=subprocess.STDOUT, text=False)
        finally:
            log.close()
        return self

    def rtctl(self, *args: str, timeout: float = 15) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.prefix, sys.executable, "-m", "control.cli", *args, "--target", self.target],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )

    def status(self) -> dict | None:
        done = self.rtctl("status", "--json", timeout=10)
        return json.loads(done.stdout) if done.returncode == 0 else None

    def call(self, *args: str) -> dict:
        done = self.rtctl(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def role(self) -> str | None:
        st = self.status()
        return st["role"] if st else None

    def rt_pid(self) -> int:
        st = self.status()
        return int(st["rt"]["pid"]) if st else 0

    def agent_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill_all(self) -> None:
        """kill -9 the agent and its RT together (a machine losing power)."""
        pid = 0
        with contextlib.suppress(SegmentError, FileNotFoundError):
            seg = Segment.open(self.shm)
            pid = seg.owner_pid()
            seg.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=5)
        if pid:
            wait_for(lambda: proc_state(pid) in (None, "Z", "X"), timeout=5, what="the RT dead")

    def intervals(self) -> list[Interval]:
        """This node's actuated intervals from its persisted journal; an
        interval nobody closed (agent and RT killed) ends at the RT's last
        actuated cycle, read from the segment's status block."""
        path = Path(self.data_dir) / "journal.jsonl"
        recs = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        out: list[Interval] = []
        open_: dict | None = None
        for r in recs:
            if r["kind"] == "start":
                open_ = r
            elif r["kind"] == "end" and open_ is not None:
                out.append(
                    Interval(
                        self.node_id,
                        open_["epoch"],
                        open_["real_ns"],
                        open_["real_ns"] + (r["mono_ns"] - open_["mono_ns"]),
                        open_["cycle"],
                        r["cycle"],
                    )
                )
                open_ = None
        if open_ is not None:
            end_ns = end_cycle = None
            with contextlib.suppress(SegmentError, FileNotFoundError):
                seg = Segment.open(self.shm)
                st = seg.view()["status"]
                same = int(st["act_first_mono_ns"]) == open_["mono_ns"]
                alive = proc_state(seg.owner_pid()) not in (None, "Z", "X")
                if same and not (alive and int(st["actuating"])):
                    # stopped, or died actuating: its last actuated cycle ends it
                    end_ns = open_["real_ns"] + int(st["act_last_mono_ns"]) - open_["mono_ns"]
                    end_cycle = int(st["act_last_cycle"])
                del st
                seg.close()
            out.append(
                Interval(
                    self.node_id,
                    open_["epoch"],
                    open_["real_ns"],
                    end_ns,
                    open_["cycle"],
                    end_cycle,
                )
            )
        return out


class TestCluster:
    """Three members on loopback (or as the caller builds them)."""

    __test__ = False

    def __init__(self, members: list[Member]) -> None:
        self.members = members

    def by_id(self, node_id: str) -> Member:
        return next(m for m in self.members if m.node_id == node_id)

    def start(self) -> TestCluster:
        for m in self.members:
            m.start()
        return self

    def live(self) -> list[Member]:
        return [m for m in self.members if m.proc is not None and m.proc.poll() is None]

    def roles(self) -> dict[str, str | None]:
        return {m.node_id: m.role() for m in self.live()}

    def wait_primary(self, timeout: float = 30, exclude: str = "") -> Member:
        def one() -> Member | None:
            primaries = [n for n, r in self.roles().items() if r == "primary" and n != exclude]
            return self.by_id(primaries[0]) if len(primaries) == 1 else None

        return wait_for(one, timeout=timeout, interval=0.05, what="one primary")  # type: ignore[return-value]

    def wait_standbys(self, n: int, timeout: float = 30) -> None:
        wait_for(
            lambda: sum(r == "standby" for r in self.roles().values()) >= n,
            timeout=timeout,
            interval=0.05,
            what=f"{n} standbys",
        )

    def intervals(self) -> list[Interval]:
        return sorted(
            (iv for m in self.members if not m.witness for iv in m.intervals()),
            key=lambda iv: iv.start_ns,
        )

    def cleanup(self) -> None:
        for m in self.members:
            m.cleanup()


def overlaps(intervals: list[Interval]) -> list[tuple[Interval, Interval]]:
    """Pairs of intervals of different nodes that share an instant (an open
    interval, end None, lasts until now)."""
    now = time.time_ns()
    found = []
    for i, a in enumerate(intervals):
        for b in intervals[i + 1 :]:
            if a.node == b.node:
                continue
            if a.start_ns < (b.end_ns or now) and b.start_ns < (a.end_ns or now):
                found.append((a, b))
    return found


def loopback_cluster(
    spawn: Spawner, tmp: Path, prefix: str, *extra: str, witness: bool = False
) -> TestCluster:
    """Three members on 127.0.0.1; with witness, the third one is a witness."""
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    members = []
    for i, addr in enumerate(addrs):
        flags = list(extra)
        if witness and i == 2:
            flags.append("--witness")
        members.append(
            Member(
                spawn,
                tmp,
                f"{prefix}{os.getpid() % 10000}n{i + 1}",
                addr,
                [a for a in addrs if a != addr],
                *flags,
            )
        )
    return TestCluster(members)


def job_file(tmp: Path, n: int = 30, dt: float = 0.3, name: str = "long") -> str:
    wps = [{"t": round(dt * (i + 1), 3), "q": [0.05 * (i % 7)] * 6} for i in range(n)]
    path = tmp / f"{name}.json"
    path.write_text(json.dumps({"name": name, "waypoints": wps}))
    return str(path)
