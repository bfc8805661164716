"""Bottleneck detection and the alert registry, driven by a fake clock; then
`rtctl alerts list|watch` through a real gRPC server over a fake agent whose
alerts are a real registry."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from control.config import AgentConfig
from control.errors import InvalidArgument
from control.rpc import service
from control.tracing.alerts import Alerts
from control.tracing.bottleneck import BottleneckDetector, Change
from tests.conftest import ROOT, Spawner, wait_for
from tests.control.fake_agent import FakeAgent
from tests.control.test_service import assert_one_line_error, rtctl

pytestmark = pytest.mark.timeout(120)

S = 10**9  # ns per second
T0 = 1_700_000_000 * S  # a unix time


def ms(n: float) -> int:
    return int(n * 1e6)


def samples(name: str, *durations_ms: float, trace: str = "t") -> list[tuple[str, int, str]]:
    return [(name, ms(d), f"{trace}{i}") for i, d in enumerate(durations_ms)]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now

    def at(self, seconds: float) -> None:
        self.now = T0 + int(seconds * S)


def span(name: str, dur_ms: float, trace_id: str, clock: Clock) -> dict[str, Any]:
    return {
        "name": name,
        "trace_id": trace_id,
        "span_id": "cd" * 8,
        "parent_span_id": None,
        "start_time_ns": clock.now - ms(dur_ms),
        "end_time_ns": clock.now,
        "status": "ok",
    }


# ---- the detector -----------------------------------------------------------------


def detector(**kw: Any) -> BottleneckDetector:
    kw.setdefault("window_s", 10.0)
    kw.setdefault("min_count", 5)
    return BottleneckDetector(**kw)


def feed(d: BottleneckDetector, at_s: float, name: str, *durations_ms: float) -> list[Change]:
    return d.observe(samples(name, *durations_ms), T0 + int(at_s * S))


def test_a_name_is_raised_once_its_mean_crosses_the_default_threshold():
    d = detector()
    assert feed(d, 0, "save", 20, 20, 20, 20) == [], "4 spans are fewer than min_count"
    [change] = feed(d, 0, "save", 20)
    assert change.raised and change.name == "save" and change.exceeded == ("mean_ms",)
    assert (change.figures.mean_ms, change.figures.count) == (20.0, 5)
    assert change.threshold.mean_ms == 10.0 and change.threshold.p99_ms is None
    assert feed(d, 1, "save", 30, 30) == [], "raised once, not on every batch"
    assert feed(d, 1, "fast", *[9.9] * 10) == [], "under 10 ms is no bottleneck"


def test_one_slow_span_on_a_quiet_name_is_not_a_bottleneck():
    d = detector()
    for t in range(0, 100, 11):  # each span alone in its window
        assert feed(d, t, "rare", 500) == []


def test_clearing_needs_a_whole_window_under_80_percent_of_the_threshold():
    d = detector()
    assert [c.raised for c in feed(d, 0, "save", *[20] * 5)] == [True]
    # under the threshold but above 80% of it: no flapping, however long
    for t in (11, 15, 19, 23):
        assert feed(d, t, "save", *[9] * 5) == []
    assert feed(d, 30, "save", *[1] * 5) == [], "calm from t=30 (the 9 ms spans expired)"
    assert feed(d, 35, "save", *[1] * 5) == [], "calm for 5 s of a 10 s window"
    [cleared] = feed(d, 40, "save", *[1] * 5)
    assert not cleared.raised and cleared.name == "save" and cleared.figures.mean_ms == 1.0
    assert [c.raised for c in feed(d, 41, "save", *[20] * 20)] == [True], "raised again"


def test_a_spike_while_calm_restarts_the_wait():
    d = detector()
    feed(d, 0, "save", *[20] * 5)
    assert feed(d, 20, "save", *[1] * 5) == []  # calm from t=20
    assert feed(d, 23, "save", *[20] * 5) == []  # mean 10.5 ms: over 8 ms again
    # the spike expired at t=33; calm again from t=34, not from t=20
    assert feed(d, 34, "save", *[1] * 5) == []
    assert feed(d, 40, "save", *[1] * 5) == []
    [cleared] = feed(d, 44, "save", *[1] * 5)
    assert not cleared.raised


def test_per_name_overrides_set_the_p99_and_turn_the_mean_off():
    d = detector(overrides={"rt.cycle": {"mean_ms": None, "p99_ms": 1.0}}, min_count=100)
    durations = [0.1] * 98 + [5.0, 5.0]  # nearest-rank p99 of 100 is the 99th: 5 ms
    [change] = feed(d, 0, "rt.cycle", *durations)
    assert change.exceeded == ("p99_ms",) and change.figures.p99_ms == 5.0
    assert change.threshold.mean_ms is None and change.threshold.p99_ms == 1.0
    assert feed(d, 0, "other", *durations) == [], "others keep the default: mean only"
    assert feed(d, 0, "other", *[50.0] * 100)[0].exceeded == ("mean_ms",)
    # a key left out of an override keeps the default
    assert detector(overrides={"x": {"p99_ms": 3}}).threshold("x").mean_ms == 10.0


def test_memory_is_bounded_and_raised_names_are_kept():
    d = detector(max_names=2, max_samples=8)
    assert feed(d, 0, "hot", *[50] * 5)[0].raised
    feed(d, 0, "b", 1)
    feed(d, 0, "c", 1)  # "b" makes room: "hot" is raised
    assert d.figures("b", T0) is None and d.figures("c", T0) is not None
    fig = d.figures("hot", T0)
    assert fig is not None and fig.count == 5
    feed(d, 1, "hot", *[50] * 20)
    fig = d.figures("hot", T0 + S)
    assert fig is not None and fig.count == 8, "the newest max_samples spans only"


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"mean_ms": 0}, "mean_ms"),
        ({"p99_ms": float("nan")}, "p99_ms"),
        ({"overrides": {"a": {"mean": 3}}}, "overrides['a']"),
        ({"overrides": {"a": {"p99_ms": "3"}}}, "overrides['a'].p99_ms"),
        ({"window_s": 0}, "window_s"),
        ({"clear_ratio": 1.5}, "clear_ratio"),
        ({"min_count": 0}, "min_count"),
    ],
)
def test_bad_thresholds_are_refused_naming_the_setting(kw, field):
    with pytest.raises(InvalidArgument) as info:
        BottleneckDetector(**kw)
    assert info.value.field == field


# ---- the registry -------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, dict[str, Any]]] = []

    def __call__(self, kind: str, level: str, message: str, fields: dict[str, Any]) -> None:
        self.calls.append((kind, level, message, fields))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def registry(clock: Clock, on_change: Any = None, **kw: Any) -> Alerts:
    kw.setdefault("window_s", 10.0)
    kw.setdefault("min_count", 5)
    return Alerts(on_change or Recorder(), clock=clock, **kw)


def test_on_change_is_called_once_per_raise_and_once_per_clear(clock):
    rec = Recorder()
    alerts = registry(clock, rec)
    for t in range(5):  # five batches while raised
        clock.at(t)
        alerts.observe_spans([span("save", 20, f"{t:032x}", clock) for _ in range(5)])
    assert [c[:2] for c in rec.calls] == [("alert_raised", "CRITICAL")]
    kind, level, message, fields = rec.calls[0]
    assert "save" in message and "mean 20 ms over 10 ms" in message
    assert fields["subject"] == "save" and fields["alert_kind"] == "bottleneck"
    assert fields["mean_ms"] == 20.0 and fields["count"] == 5 and fields["ts_ns"] == T0
    assert not {"kind", "level", "message"} & set(fields), "they would clash on the bus"
    for t in (20, 25, 30, 35):
        clock.at(t)
        alerts.observe_spans([span("save", 1, "ee" * 16, clock) for _ in range(5)])
    assert [c[:2] for c in rec.calls] == [
        ("alert_raised", "CRITICAL"),
        ("alert_cleared", "WARN"),
    ]
    assert rec.calls[1][3]["ts_ns"] == T0 + 30 * S and rec.calls[1][3]["mean_ms"] == 1.0


def test_an_alert_names_the_slowest_traces_as_examples(clock):
    alerts = registry(clock)
    durations = {"a": 12, "b": 90, "c": 15, "d": 70, "e": 11, "f": 80}
    spans = [span("plan", d, tid * 32, clock) for tid, d in durations.items()]
    spans.append(span("plan", 85, "b" * 32, clock))  # a trace is named once
    alerts.observe_spans(spans)
    [alert] = alerts.list()
    assert alert["example_trace_ids"] == ["b" * 32, "f" * 32, "d" * 32]
    assert alert["figures"] == {"mean_ms": 51.857, "p99_ms": 90.0, "count": 7}
    assert alert["threshold"] == {"mean_ms": 10.0, "p99_ms": None}
    assert alert["kind"] == "bottleneck" and alert["subject"] == "plan"
    assert alert["active"] and alert["raised_at"] == T0 and alert["cleared_at"] is None


def test_list_shows_active_alerts_and_all_adds_the_cleared_ones(clock):
    alerts = registry(clock, keep_cleared=2)
    for i, name in enumerate(("n1", "n2", "n3")):  # each raised, then cleared
        clock.at(100 * i)
        alerts.observe_spans([span(name, 30, "ab" * 16, clock) for _ in range(5)])
        for t in (20, 31):
            clock.at(100 * i + t)
            alerts.observe_spans([span(name, 1, "cd" * 16, clock) for _ in range(5)])
    clock.at(400)
    alerts.observe_spans([span("n4", 30, "ab" * 16, clock) for _ in range(5)])
    assert [a["subject"] for a in alerts.list()] == ["n4"]
    everything = alerts.list(all=True)
    assert [a["subject"] for a in everything] == ["n4", "n3", "n2"], "n1 fell off keep_cleared"
    assert [a["active"] for a in everything] == [True, False, False]
    assert everything[1]["cleared_at"] == T0 + 231 * S
    assert everything[1]["cleared_figures"]["mean_ms"] == 1.0
    assert len({a["id"] for a in everything}) == 3
    everything[0]["example_trace_ids"].clear()  # a copy: the registry keeps its own
    assert alerts.list()[0]["example_trace_ids"] == ["ab" * 16]


def test_spans_without_a_name_or_times_are_skipped(clock):
    alerts = registry(clock)
    bad = [{"name": "", "start_time_ns": 0, "end_time_ns": ms(50)}]
    bad += [{"name": "x", "start_time_ns": None, "end_time_ns": ms(50)}, {"name": "x"}]
    alerts.observe_spans(bad * 10)
    assert alerts.list(all=True) == []


def test_a_listener_may_read_the_registry_and_threads_may_feed_it(clock):
    seen: list[bool] = []
    alerts: Alerts

    def on_change(kind: str, level: str, message: str, fields: dict[str, Any]) -> None:
        # called outside the registry's lock (else this deadlocks), after the change
        seen.append(fields["subject"] in [a["subject"] for a in alerts.list()])

    alerts = registry(clock, on_change)

    def feed_name(name: str) -> None:
        for _ in range(50):
            alerts.observe_spans([span(name, 20, "ab" * 16, clock)])

    threads = [threading.Thread(target=feed_name, args=(f"n{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == [True] * 4, "each name raised exactly once, listed when announced"
    assert sorted(a["subject"] for a in alerts.list()) == ["n0", "n1", "n2", "n3"]


# ---- rtctl alerts through the service -----------------------------------------------


class AlertingAgent(FakeAgent):
    """The fake agent with a real alert registry fed like the agent feeds it."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.alerts = Alerts(self._on_alert, window_s=10.0, min_count=5, clock=self.clock)

    def _on_alert(self, kind: str, level: str, message: str, fields: dict[str, Any]) -> None:
        self.publish(kind, message, level, **fields)

    def list_alerts(self, all: bool = False) -> dict[str, Any]:
        self._enter("list_alerts", all)
        return {"alerts": self.alerts.list(all)}

    def spans(self, at_s: float, name: str, dur_ms: float, trace_id: str = "ab" * 16) -> None:
        self.clock.at(at_s)
        self.alerts.observe_spans([span(name, dur_ms, trace_id, self.clock) for _ in range(5)])


@pytest.fixture
def agent() -> Iterator[tuple[AlertingAgent, str]]:
    fake = AlertingAgent()
    server, port = service.start(fake, AgentConfig(listen="127.0.0.1:0"))
    yield fake, f"127.0.0.1:{port}"
    server.stop(None).wait(5)


def test_rtctl_alerts_list(agent):
    fake, target = agent
    t = ("--target", target)
    assert rtctl("alerts", "list", *t).stdout.strip() == "no active alerts"
    assert json.loads(rtctl("alerts", "list", *t, "--json").stdout) == {"alerts": []}
    fake.spans(0, "agent.save", 25, "12" * 16)
    fake.spans(0, "rt.cycle", 1)
    done = rtctl("alerts", "list", *t)
    assert done.returncode == 0, done.stderr
    header, row = done.stdout.splitlines()
    assert header.split()[:3] == ["ID", "STATE", "SUBJECT"]
    assert row.split()[1:6] == ["active", "agent.save", "25", "25", "5"]
    assert "mean<10" in row and row.endswith("12" * 16)
    fake.spans(20, "agent.save", 1)
    fake.spans(30, "agent.save", 1)
    assert rtctl("alerts", "list", *t).stdout.strip() == "no active alerts"
    [cleared] = json.loads(rtctl("alerts", "list", *t, "--all", "--json").stdout)["alerts"]
    assert cleared["subject"] == "agent.save" and cleared["active"] is False
    assert cleared["cleared_at"] == T0 + 30 * S
    assert " cleared " in rtctl("alerts", "list", *t, "--all").stdout
    assert ("list_alerts", (True,)) in [c[:2] for c in fake.calls]


def test_the_client_lists_alerts(agent):
    from control.rpc.client import Client

    fake, target = agent
    fake.spans(0, "plan", 40, "34" * 16)
    with Client(target) as client:
        [alert] = client.list_alerts()["alerts"]
        assert alert["example_trace_ids"] == ["34" * 16] and alert["id"] == 1
        assert client.list_alerts(all=True)["alerts"] == [alert]


def test_rtctl_alerts_watch(agent, spawn: Spawner):
    fake, target = agent
    for args in (("--json",), ()):
        proc = spawn(
            [sys.executable, "-m", "control.cli", "alerts", "watch", "--target", target,
             "--count", "2", *args],
            cwd=ROOT,
        )  # fmt: skip
        wait_for(lambda: fake.subscriptions, timeout=15, what="rtctl alerts watch to subscribe")
        assert fake.subscriptions[0].kinds == ["alert_raised", "alert_cleared"]
        fake.publish("deadline_miss", "not an alert", "ERROR")
        fake.spans(100, "io", 30, "56" * 16)
        fake.spans(120, "io", 1)
        fake.spans(130, "io", 1)
        out, err = proc.communicate(timeout=15)
        assert proc.returncode == 0, err
        lines = out.splitlines()
        assert len(lines) == 2, out
        if args:
            raised, cleared = (json.loads(line) for line in lines)
            assert (raised["kind"], raised["level"]) == ("alert_raised", "CRITICAL")
            assert raised["trace_id"] == "56" * 16 and raised["fields"]["subject"] == "io"
            assert (cleared["kind"], cleared["level"]) == ("alert_cleared", "WARN")
        else:
            assert " RAISED " in lines[0] and "span io mean 30 ms" in lines[0]
            assert lines[0].endswith(f"trace={'56' * 16}")
            assert " CLEARED " in lines[1] and "bottleneck cleared" in lines[1]
        wait_for(lambda: not fake.subscriptions, timeout=5, what="unsubscribe")
        fake.alerts = Alerts(fake._on_alert, window_s=10.0, min_count=5, clock=fake.clock)


def test_rtctl_alerts_refuses_bad_usage(agent):
    _, target = agent
    done = rtctl("alerts", "watch", "--count", "0", "--target", target)
    assert done.returncode == 2
    assert_one_line_error(done, "--count")
