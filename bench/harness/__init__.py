"""C harnesses of the benchmarks, built at bench time against rtcore/include.

push_bench.c (next to this file) times, counts and fills with the RT path's
own record-making code (rtcore/emit.h). It is built once with gcc -O2 and
cached under ~/.cache/rtcore/harness, keyed by its source, every rtcore
header (the code it measures) and the compiler, as the spdlog baseline is.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.runner import BenchError, last_line, run_bounded

SOURCE = Path(__file__).with_name("push_bench.c")
INCLUDE = Path(__file__).resolve().parent.parent.parent / "rtcore" / "include"
CACHE_DIR = Path.home() / ".cache" / "rtcore" / "harness"
FLAGS = ["-O2", "-pthread"]
COMPILE_TIMEOUT_S = 120.0


def _compiler() -> tuple[str, str]:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BenchError("gcc is not installed; install the Debian package gcc (`make setup` does)")
    try:
        done = subprocess.run([gcc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"cannot run {gcc} --version: {e}") from None
    return gcc, done.stdout


def push_bench_binary() -> str:
    """Path of the built push_bench program, compiling it on first use."""
    gcc, version = _compiler()
    key = hashlib.sha256()
    key.update(SOURCE.read_bytes())
    for header in sorted((INCLUDE / "rtcore").glob("*.h")):
        key.update(header.name.encode())
        key.update(header.read_bytes())
    key.update(version.encode())
    key.update(" ".join(FLAGS).encode())
    binary = CACHE_DIR / f"push_bench-{key.hexdigest()[:16]}"
    if binary.exists():
        return str(binary)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    # built under a temporary name and renamed: a concurrent or interrupted
    # build never leaves a half-written binary under the cached name
    fd, tmp = tempfile.mkstemp(prefix=".push_bench-", dir=CACHE_DIR)
    os.close(fd)
    try:
        done = run_bounded(
            [gcc, *FLAGS, f"-I{INCLUDE}", "-o", tmp, str(SOURCE)],
            timeout=COMPILE_TIMEOUT_S,
            what="gcc building the push harness",
        )
        if done.returncode != 0:
            raise BenchError(f"cannot build the push harness: {last_line(done.stderr)}")
        os.replace(tmp, binary)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return str(binary)
