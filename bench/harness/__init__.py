"""C harnesses of the benchmarks, built at bench time against rtcore/include.

push_bench.c (next to this file) times, counts and fills with the RT path's
own record-making code (rtcore/emit.h). It is built once with gcc -O2 and
cached under ~/.cache/rtcore/harness, keyed by its source, every rtcore
header (the code it measures) and the compiler, as the spdlog baseline is.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench.runner import BenchError, cached_build

SOURCE = Path(__file__).with_name("push_bench.c")
INCLUDE = Path(__file__).resolve().parent.parent.parent / "rtcore" / "include"
FLAGS = ["-O2", "-pthread"]


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
    parts = [SOURCE.read_bytes(), version.encode(), " ".join(FLAGS).encode()]
    for header in sorted((INCLUDE / "rtcore").glob("*.h")):
        parts += [header.name.encode(), header.read_bytes()]
    return cached_build(
        "push_bench", parts, lambda out: [gcc, *FLAGS, f"-I{INCLUDE}", "-o", out, str(SOURCE)]
    )
