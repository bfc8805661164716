"""The same-run baselines of `rtctl bench logging`: real g++, real spdlog,
real valgrind. Checks the shape of what they report, never timing; the
callgrind parsing is proven on a program whose instruction counts are known."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from bench import runner
from bench.baselines import BaselineUnavailable, callgrind, spdlog
from bench.baselines.callgrind import inclusive_ir, instructions_per_call
from bench.baselines.pylogging import python_queue_logging_ns
from bench.baselines.spdlog import spdlog_async_binary, spdlog_async_call_ns
from bench.runner import BenchError

CALLS = 20_000
T = TypeVar("T")

# mix: a fixed body of a dozen instructions; rounds(x, n): a loop of n
# dependent steps, so that small (n=50) and large (n=100) differ by twice the
# loop's work. noipa keeps each function whole, called and named as written.
PROGRAM = r"""
#include <stdlib.h>

static volatile unsigned sink;

__attribute__((noipa)) unsigned mix(unsigned x)
{
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

__attribute__((noipa)) unsigned rounds(unsigned x, int n)
{
    for (int i = 0; i < n; i++)
        x = x * 2654435761U + (x >> 13);
    return x;
}

__attribute__((noipa)) unsigned small(unsigned x) { return rounds(x, 50); }
__attribute__((noipa)) unsigned large(unsigned x) { return rounds(x, 100); }

int main(int argc, char **argv)
{
    long n = atol(argv[1]);
    unsigned acc = 0;
    for (long i = 0; i < n; i++)
        acc += mix((unsigned)i) + small((unsigned)i) + large((unsigned)i);
    sink = acc;
    return 0;
}
"""


def available(make: Callable[[], T]) -> T:
    """make(), or skip the test with the reason a baseline cannot run here."""
    try:
        return make()
    except BaselineUnavailable as e:
        pytest.skip(e.reason)


def assert_batch(r: dict, calls: int) -> None:
    assert r["calls"] == calls
    assert isinstance(r["total_ns"], int) and r["total_ns"] > 0
    assert isinstance(r["mean_ns"], float) and r["mean_ns"] > 0
    assert r["mean_ns"] == pytest.approx(r["total_ns"] / calls, rel=1e-3)


@pytest.fixture(scope="module")
def known_program(tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed (Debian package gcc)")
    d = tmp_path_factory.mktemp("callgrind")
    src = d / "known.c"
    src.write_text(PROGRAM)
    binary = d / "known"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(src)], check=True, timeout=120)
    return str(binary)


def test_spdlog_async_report():
    r = available(lambda: spdlog_async_call_ns(CALLS, None))
    assert_batch(r, CALLS)
    assert re.fullmatch(r"\d+\.\d+\.\d+", r["spdlog_version"])
    assert r["cpu"] == r["worker_cpu"] == -1
    assert 0 <= r["dropped"] <= CALLS


def test_spdlog_async_pinned_caller_and_worker_on_different_cpus():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs this process may run on")
    r = available(lambda: spdlog_async_call_ns(CALLS, cpus[-1]))
    assert_batch(r, CALLS)
    assert r["cpu"] == cpus[-1]
    assert r["worker_cpu"] not in (-1, cpus[-1])


def test_spdlog_binary_is_built_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(runner, "CACHE_DIR", tmp_path / "cache")
    first = available(spdlog_async_binary)
    built = Path(first).stat().st_mtime_ns
    assert spdlog_async_binary() == first
    assert Path(first).stat().st_mtime_ns == built
    assert os.listdir(tmp_path / "cache") == [Path(first).name]


def test_spdlog_without_compiler_is_unavailable(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(spdlog.shutil, "which", lambda name: None)
    with pytest.raises(BaselineUnavailable, match="g\\+\\+ is not installed"):
        spdlog_async_call_ns(CALLS, None)


def test_spdlog_without_headers_is_unavailable(monkeypatch: pytest.MonkeyPatch):
    # pkg-config finds spdlog through spdlog.pc, shipped with the headers
    monkeypatch.setenv("PKG_CONFIG_LIBDIR", "/nonexistent")
    monkeypatch.setenv("PKG_CONFIG_PATH", "")
    with pytest.raises(BaselineUnavailable, match="spdlog headers not found"):
        spdlog_async_binary()


def test_python_queue_logging_report():
    r = python_queue_logging_ns(CALLS)
    assert_batch(r, CALLS)


def test_python_queue_logging_leaves_no_handler():
    python_queue_logging_ns(100)
    assert logging.getLogger("rtcore.bench.baselines.pylogging").handlers == []


def test_callgrind_counts_a_known_function(known_program: str):
    mix = available(lambda: instructions_per_call(known_program, [str(CALLS)], "mix", CALLS))
    assert 1 <= mix <= 100
    # the same instructions run on every call: the count is exact, not an estimate
    assert instructions_per_call(known_program, [str(CALLS)], "mix", CALLS) == mix


def test_callgrind_twice_the_work_counts_twice(known_program: str):
    def per_call(function: str) -> float:
        return available(
            lambda: instructions_per_call(known_program, [str(CALLS)], function, CALLS)
        )

    small, large = per_call("small"), per_call("large")
    assert small > 50  # inclusive: the loop runs in rounds(), called by small()
    assert large / small == pytest.approx(2.0, rel=0.1)


def test_callgrind_parse_agrees_with_callgrind_annotate(known_program: str, tmp_path: Path):
    for tool in ("valgrind", "callgrind_annotate", "perl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    out = tmp_path / "callgrind.out"
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", known_program, "1000"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(out)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for function in ("mix", "rounds", "small", "large", "main"):
        m = re.search(rf"^\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*:{function} \[", annotated, re.M)
        assert m, (function, annotated)
        assert inclusive_ir(str(out), function) == int(m.group(1).replace(",", ""))


def test_callgrind_unknown_function_is_an_error(known_program: str):
    with pytest.raises(BenchError, match="no function 'inlined_away'"):
        available(lambda: instructions_per_call(known_program, ["10"], "inlined_away", 10))


def test_callgrind_without_valgrind_is_unavailable(
    known_program: str, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(callgrind.shutil, "which", lambda name: None)
    with pytest.raises(BaselineUnavailable, match="valgrind is not installed"):
        instructions_per_call(known_program, ["10"], "mix", 10)
