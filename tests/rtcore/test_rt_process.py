"""The RT process end to end: real process, real segment, real signals."""

from __future__ import annotations

import os
import signal

import pytest

from rtcore import layout
from rtcore.records import Drainer
from rtcore.segment import Segment
from tests.rtcore.rtproc import finish, open_when_ready, status

CPU = str(max(os.sched_getaffinity(0)))


def test_runs_requested_cycles_and_reports_status(spawn, shm_name):
    proc = spawn.rt(shm_name, "--cycles", "500", "--keep-shm", "--cpus", CPU)
    rc, out, err = finish(proc)
    assert rc == 0, err
    assert "stopped after cycle 500" in out
    seg = Segment.open(shm_name)
    st = status(seg)
    assert st["cycles"] == 500
    assert st["heartbeat"] == 500
    assert layout.STATE_NAMES[st["state"]] == "stopped"
    assert st["task_name"] == b"reftask"
    assert st["priority"] == 80
    assert st["degraded"] == 0
    assert st["cpu_mask"] == 1 << int(CPU)
    assert st["period_ns"] == 1_000_000
    assert sum(st["wake_hist"]) == 500 and sum(st["exec_hist"]) == 500
    assert st["ckpt_seq"] == 51  # every 10 cycles, plus the final one
    assert seg.view()["header"]["owner_pid"] == 0


def test_sigterm_and_sigint_stop_cleanly(spawn, shm_name):
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = spawn.rt(shm_name, "--cpus", CPU)
        seg = open_when_ready(shm_name, proc, min_cycles=50)
        seg.close()
        proc.send_signal(sig)
        rc, out, err = finish(proc, timeout=5)
        assert rc == 0, err
        assert "stopped after cycle" in out
        assert not os.path.exists(f"/dev/shm/{shm_name}"), "clean stop removes the segment"


def test_slow_task_cycles_are_exactly_the_misses(spawn, shm_name, build_task):
    # a long period keeps the VM's own rare stalls from adding misses of their own
    burn = [50, 120, 250]
    proc = spawn.rt(
        shm_name,
        "--task",
        build_task("burn_task"),
        "--task-params",
        f"burn={';'.join(map(str, burn))},burn_us=10000",
        "--period-us",
        "4000",
        "--cycles",
        "300",
        "--keep-shm",
        "--cpus",
        CPU,
    )
    rc, _, err = finish(proc)
    assert rc == 0, err
    seg = Segment.open(shm_name)
    st = status(seg)
    assert st["task_name"] == b"burn"
    assert st["misses"] == len(burn)
    # a 10 ms cycle starting on boundary T passes T+4 and T+8 ms; the loop
    # skips those two periods and resumes on T+12 instead of bursting
    assert st["skipped_periods"] == 2 * len(burn)
    drainer = Drainer(seg.buf)
    logs = drainer.drain("log")
    miss_logs = [r for r in logs if r["message"].startswith("deadline miss")]
    assert [r["cycle"] for r in miss_logs] == burn
    assert all(r["level"] == "ERROR" for r in miss_logs)
    burns = [r for r in logs if r["message"].startswith("burning")]
    assert [r["cycle"] for r in burns] == burn
    misses = [e for e in drainer.drain("event") if e["kind"] == "deadline_miss"]
    assert [e["cycle"] for e in misses] == burn
    assert all(e["a"] >= 10_000_000 for e in misses), "event carries the late cycle's exec ns"


def test_wrong_abi_task_is_refused(spawn, shm_name, build_task):
    proc = spawn.rt(shm_name, "--task", build_task("bad_abi_task"))
    rc, out, err = finish(proc)
    assert rc == 2
    assert err.count("\n") == 1 and "task ABI version 999" in err and "needs 2" in err
    assert not os.path.exists(f"/dev/shm/{shm_name}")


def test_name_in_use_by_a_running_rt(spawn, shm_name):
    first = spawn.rt(shm_name, "--cpus", CPU)
    seg = open_when_ready(shm_name, first, min_cycles=10)
    second = spawn.rt(shm_name, "--cpus", CPU)
    rc, _, err = finish(second)
    assert rc == 2
    assert err.strip() == (
        f"rtcore: error: shared-memory name {shm_name!r} is in use by RT process {first.pid}"
    )
    before = status(seg)["cycles"]
    open_when_ready(shm_name, first, min_cycles=before + 20).close()
    assert first.poll() is None, "the running RT is untouched"
    seg.close()


def test_kill_9_then_resume_continues_from_checkpoint(spawn, shm_name):
    proc = spawn.rt(shm_name, "--cpus", CPU, "--ckpt-every", "5")
    seg = open_when_ready(shm_name, proc, min_cycles=300)
    proc.kill()
    proc.wait(timeout=5)
    last_ckpt = status(seg)["ckpt_seq"]
    ckpt_cycle = status(seg)["ckpt_cycle"]
    assert last_ckpt > 0

    stale = spawn.rt(shm_name, "--cpus", CPU)
    rc, _, err = finish(stale)
    assert rc == 2 and "pass --resume" in err and err.count("\n") == 1

    resumed = spawn.rt(shm_name, "--cpus", CPU, "--resume")
    seg2 = open_when_ready(shm_name, resumed, min_cycles=ckpt_cycle + 10)
    st = status(seg2)
    assert st["restored_seq"] == last_ckpt
    assert st["restored_cycle"] == ckpt_cycle
    assert st["pid"] == resumed.pid
    started = [e for e in Drainer(seg2.buf).drain("event") if e["kind"] == "started"]
    assert started[-1]["a"] == last_ckpt
    resumed.terminate()
    assert finish(resumed, timeout=5)[0] == 0
    seg.close()
    seg2.close()


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--period-us", "0"], "--period-us 0 is out of range"),
        (["--period-us", "-5"], "--period-us -5 is out of range"),
        (["--period-us", "10"], "--period-us 10 is out of range"),
        (["--period-us", "abc"], "invalid int value"),
        (["--cpus", "999"], "CPU 999 does not exist"),
        (["--cpus", "1-x"], "malformed"),
        (["--priority", "0"], "--priority 0 is out of range"),
        (["--priority", "100"], "--priority 100 is out of range"),
        (["--numa-node", "7"], "NUMA node 7 does not exist"),
        (["--task", "/nonexistent/libtask.so"], "no such file"),
        (["--task", "/etc/hostname"], "cannot load task library"),
        (["--wake-mode", "turbo"], "--wake-mode 'turbo' is unknown"),
        (["--wake-mode", "hybrid", "--spin-us", "5000"], "--spin-us 5000 must be above 0"),
        (["--log-level", "LOUD"], "--log-level 'LOUD' is unknown"),
        (["--task-params", "joints=99"], "refused its parameters"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(spawn, shm_name, args, expect):
    proc = spawn.rt(shm_name, *args)
    rc, out, err = finish(proc)
    assert rc != 0
    assert err.count("\n") == 1, err
    assert expect in err
    assert "Traceback" not in err
    assert not os.path.exists(f"/dev/shm/{shm_name}")


def test_bad_shm_name(spawn):
    proc = spawn.rt("a/b")
    rc, _, err = finish(proc)
    assert rc == 2 and err.count("\n") == 1 and "shared-memory name 'a/b' is invalid" in err


@pytest.mark.parametrize(
    ("task", "defines", "expect"),
    [
        ("v1_task", {}, ["built for task ABI 1", "needs task ABI 2 (rtc_task_v2)"]),
        ("template_task", {"TEMPLATE": '"job {job} of {job}"'}, ["names field 'job' twice"]),
        (
            "template_task",
            {"TEMPLATE": '"error {x:zz}"'},
            ["field 'x' has format 'zz'", "neither an integer nor a number"],
        ),
        ("template_task", {"TEMPLATE": '"took {} us"'}, ["has a positional field"]),
        ("template_task", {"TEMPLATE": '"took {0} us"'}, ["has a positional field"]),
    ],
    ids=["v1-library", "field-twice", "unknown-spec", "positional", "numbered"],
)
def test_task_refused_at_start_up_is_one_line_and_leaves_nothing(
    spawn, shm_name, build_task, task, defines, expect
):
    proc = spawn.rt(shm_name, "--cpus", CPU, "--task", build_task(task, **defines))
    rc, out, err = finish(proc, timeout=10)
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("rtcore: error: "), err
    for text in expect:
        assert text in err
    assert "running on" not in out
    assert not os.path.exists(f"/dev/shm/{shm_name}")


def test_a_valid_template_task_starts(spawn, shm_name, build_task):
    """The refusals above are the templates', not the test task's."""
    task = build_task("template_task", TEMPLATE='"took {took_us:.1f} us on {cycle:d}"')
    rc, out, err = finish(spawn.rt(shm_name, "--cpus", CPU, "--task", task, "--cycles", "5"))
    assert rc == 0, err
    assert "stopped after cycle 5" in out
