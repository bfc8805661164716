"""Tracing kept within its budget: the cost per traced cycle is the
difference of the RT's own counters; over budget, the ratio is halved."""

from __future__ import annotations

import os
import time

import pytest

from control.tracing.budget import SamplingBudget
from tests.conftest import wait_for

PERIOD = 1_000_000


def counters(traced: int, traced_ns: int, untraced: int, untraced_ns: int) -> dict[str, int]:
    return {
        "traced_cycles": traced,
        "traced_exec_ns": traced_ns,
        "untraced_cycles": untraced,
        "untraced_exec_ns": untraced_ns,
    }


def test_over_budget_halves_the_ratio_within_budget_keeps_it():
    b = SamplingBudget(budget_pct=0.01)
    assert b.check(counters(0, 0, 0, 0), PERIOD, 0.5) is None, "the first call sets the window"
    # 500 traced cycles 20 us slower than 500 untraced: 10 us a cycle on
    # average = 1 % of a 1 ms period, over a 0.01 % budget
    v = b.check(counters(500, 500 * 25_000, 500, 500 * 5_000), PERIOD, 0.5)
    assert v is not None and v.added_ns == 20_000 and v.overhead_pct == pytest.approx(1.0)
    assert v.new_ratio == 0.25 and b.backoffs == 1
    generous = SamplingBudget(budget_pct=5.0)
    generous.check(counters(0, 0, 0, 0), PERIOD, 0.5)
    v = generous.check(counters(500, 500 * 25_000, 500, 500 * 5_000), PERIOD, 0.5)
    assert v is not None and v.new_ratio is None and generous.backoffs == 0


def test_too_few_cycles_or_a_restart_decide_nothing():
    b = SamplingBudget(budget_pct=0.0001)
    b.check(counters(100, 10**9, 100, 10**6), PERIOD, 0.5)
    assert b.check(counters(105, 2 * 10**9, 900, 10**7), PERIOD, 0.5) is None, "5 traced"
    assert b.check(counters(3, 10, 3, 10), PERIOD, 0.5) is None, "counters went back: restarted"
    assert b.backoffs == 0


@pytest.mark.slow
def test_an_agent_over_its_budget_backs_sampling_off_and_says_so(agent_factory, tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text("trace_budget_pct = 0.000001\ntrace_ratio = 0.5\n")
    agent = agent_factory("--config", str(config)).start()
    st = wait_for(
        lambda: (s := agent.status())["tracing"]["budget"]["backoffs"] >= 1 and s,
        timeout=20,
        what="a back-off",
    )
    assert st["tracing"]["ratio"] < 0.5
    assert agent.call("trace", "sampling")["ratio"] == st["tracing"]["ratio"]
    time.sleep(0.1)
    with open(os.path.join(agent.data_dir, "agent.log")) as f:
        assert any("sampling ratio backed off from 0.5" in line for line in f)
