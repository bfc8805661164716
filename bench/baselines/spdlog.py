"""spdlog's asynchronous logger as a baseline: the caller's cost of one call.

The program (spdlog_async.cpp, next to this file) is built once with g++ -O2
against Debian's libspdlog-dev and cached under ~/.cache/rtcore,
keyed by the source, the compiler and the spdlog build flags. Debian ships
spdlog compiled (libspdlog.so, SPDLOG_COMPILED_LIB) on an external fmt
(libfmt.so): pkg-config gives those flags, as a user's build would get them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from bench import machine
from bench.baselines import BaselineUnavailable
from bench.runner import BenchError, cached_build, last_line, run_bounded

SOURCE = Path(__file__).with_name("spdlog_async.cpp")
NOT_PINNED = -1
INSTALL_HINT = "install the Debian packages g++, libspdlog-dev and pkgconf (`make setup` does)"


def _tool_output(argv: list[str], what: str) -> str:
    """stdout of a quick query (compiler version, pkg-config flags)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except OSError as e:
        raise BaselineUnavailable(f"cannot run {argv[0]} for {what}: {e.strerror}") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"{argv[0]} did not answer within 30 s ({what})") from None
    if done.returncode != 0:
        raise BaselineUnavailable(f"{what}: {last_line(done.stderr)}; {INSTALL_HINT}")
    return done.stdout.strip()


def _build_flags() -> tuple[str, list[str]]:
    """The compiler and the spdlog flags, or BaselineUnavailable saying what is missing."""
    gxx = shutil.which("g++")
    if gxx is None:
        raise BaselineUnavailable(f"g++ is not installed; {INSTALL_HINT}")
    if shutil.which("pkg-config") is None:
        raise BaselineUnavailable(f"pkg-config is not installed; {INSTALL_HINT}")
    flags = _tool_output(
        ["pkg-config", "--cflags", "--libs", "spdlog"], "spdlog headers not found by pkg-config"
    )
    return gxx, flags.split()


def spdlog_async_binary() -> str:
    """Path of the built program, compiling it on first use."""
    gxx, flags = _build_flags()
    parts = [
        SOURCE.read_bytes(),
        _tool_output([gxx, "--version"], "g++ version").encode(),
        " ".join(flags).encode(),
        _tool_output(["pkg-config", "--modversion", "spdlog"], "spdlog version").encode(),
    ]
    return cached_build(
        "spdlog_async",
        parts,
        lambda out: [gxx, "-O2", "-std=c++17", "-o", out, str(SOURCE), *flags],
    )


def _run_timeout(count: int) -> float:
    # a call is under a microsecond; the budget allows for a loaded machine
    return 60.0 + count / 50_000


def spdlog_async_call_ns(count: int, cpu: int | None) -> dict:
    """Time `count` calls of logger->info(...) on an spdlog async logger (null
    sink, queue of 8192, overrun_oldest) as one batch after a warm-up.

    With cpu given, the caller is pinned to it and spdlog's worker thread to
    another online CPU (as our ring's reader is); with None neither is pinned.
    Returns the program's report: calls, total_ns, mean_ns, dropped (messages
    overwritten in the queue during the batch), cpu, worker_cpu, spdlog_version.
    """
    if count <= 0:
        raise ValueError(f"count must be positive, not {count}")
    worker_cpu = NOT_PINNED
    if cpu is not None:
        machine.check_cpu(cpu)
        others = machine.other_cpus(cpu)
        if not others:
            raise BenchError(
                f"the spdlog baseline needs a second online CPU for spdlog's worker "
                f"(CPU {cpu} is the only one)"
            )
        worker_cpu = others[0]
    argv = [
        spdlog_async_binary(),
        str(count),
        str(NOT_PINNED if cpu is None else cpu),
        str(worker_cpu),
    ]
    done = run_bounded(argv, timeout=_run_timeout(count), what="the spdlog baseline")
    if done.returncode != 0:
        raise BenchError(f"the spdlog baseline failed: {last_line(done.stderr)}")
    return json.loads(done.stdout)
