"""/metrics over real HTTP: names, types and labels, histogram buckets, a failing
status, and a real Prometheus server scraping the endpoint."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from control.errors import FailedPrecondition
from control.node.metrics import Metrics, histogram_buckets
from rtcore import stats
from tests.conftest import Spawner

WAKE_NS = [900, 1_000, 1_050, 2_500, 7_000, 7_000, 15_000, 48_000, 120_000, 3_000_000]
EXEC_NS = [50, 80, 99, 100, 250, 600, 4_000]
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def status() -> dict[str, Any]:
    return {
        "node_id": "n1",
        "role": "primary",
        "rt": {
            "state": "run",
            "pid": 4242,
            "cycles": 123_456,
            "misses": 3,
            "restarts": 1,
            "period_us": 1000,
            "latency_us": {"p50": 7.0, "p99": 120.0, "max": 3000.0},
            "wake_hist": stats.histogram(WAKE_NS, stats.HIST_BUCKETS),
            "exec_hist": stats.histogram(EXEC_NS, stats.HIST_BUCKETS),
            "ring_dropped": {"log": 5, "span": 0, "event": 2},
        },
        "checkpoint": {"seq": 77, "age_ms": 150},
        "cluster": {"leader": "n1", "term": 4, "has_quorum": True},
    }


def scrape(port: int, accept: str | None = None) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if accept:
        req.add_header("Accept", accept)
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200
        return resp.read().decode()


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[], dict[str, Any]]], int]]:
    started: list[Metrics] = []

    def start(snapshot: Callable[[], dict[str, Any]]) -> int:
        m = Metrics(snapshot)
        started.append(m)
        _, port = m.start_http("127.0.0.1:0")
        return port

    yield start
    for m in started:
        m.stop()


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, Any], family: str, sample: str | None = None, **labels: str) -> float:
    for s in fams[family].samples:
        if s.name == (sample or family) and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no sample {sample or family} {labels} in {fams[family].samples}")


def test_scrape_names_types_and_labels(serve) -> None:
    port = serve(status)
    fams = families(scrape(port))
    expect_types = {
        "rtcore_up": "gauge",
        "rtcore_role": "gauge",
        "rtcore_rt_state": "gauge",
        "rtcore_rt_pid": "gauge",
        "rtcore_rt_period_seconds": "gauge",
        "rtcore_rt_cycles": "counter",
        "rtcore_rt_deadline_misses": "counter",
        "rtcore_rt_restarts": "counter",
        "rtcore_rt_latency_seconds": "gauge",
        "rtcore_rt_wake_latency_seconds": "histogram",
        "rtcore_rt_exec_time_seconds": "histogram",
        "rtcore_rt_ring_dropped_records": "counter",
        "rtcore_checkpoint_seq": "gauge",
        "rtcore_checkpoint_age_seconds": "gauge",
        "rtcore_cluster_term": "gauge",
        "rtcore_cluster_has_quorum": "gauge",
    }
    assert {n: f.type for n, f in fams.items()} == expect_types
    for f in fams.values():
        for s in f.samples:
            assert s.labels.get("node_id") == "n1", s

    assert value(fams, "rtcore_up") == 1
    assert value(fams, "rtcore_role", role="primary") == 1
    assert value(fams, "rtcore_rt_state", state="run") == 1
    assert value(fams, "rtcore_rt_pid") == 4242
    assert value(fams, "rtcore_rt_period_seconds") == pytest.approx(0.001)
    assert value(fams, "rtcore_rt_cycles", "rtcore_rt_cycles_total") == 123_456
    assert value(fams, "rtcore_rt_deadline_misses", "rtcore_rt_deadline_misses_total") == 3
    assert value(fams, "rtcore_rt_restarts", "rtcore_rt_restarts_total") == 1
    assert value(fams, "rtcore_rt_latency_seconds", stat="p99") == pytest.approx(120e-6)
    assert value(fams, "rtcore_rt_latency_seconds", stat="max") == pytest.approx(3e-3)
    for ring, n in (("log", 5), ("span", 0), ("event", 2)):
        assert (
            value(
                fams,
                "rtcore_rt_ring_dropped_records",
                "rtcore_rt_ring_dropped_records_total",
                ring=ring,
            )
            == n
        )
    assert value(fams, "rtcore_checkpoint_seq") == 77
    assert value(fams, "rtcore_checkpoint_age_seconds") == pytest.approx(0.15)
    assert value(fams, "rtcore_cluster_term") == 4
    assert value(fams, "rtcore_cluster_has_quorum") == 1


@pytest.mark.parametrize(
    ("family", "values"),
    [("rtcore_rt_wake_latency_seconds", WAKE_NS), ("rtcore_rt_exec_time_seconds", EXEC_NS)],
)
def test_histogram_buckets_are_cumulative_and_exact(serve, family: str, values: list[int]) -> None:
    fams = families(scrape(serve(status)))
    buckets = [
        (float(s.labels["le"]), s.value)
        for s in fams[family].samples
        if s.name == f"{family}_bucket"
    ]
    assert buckets[-1][0] == float("inf")
    les = [le for le, _ in buckets]
    counts = [c for _, c in buckets]
    assert les == sorted(les) and len(set(les)) == len(les)
    assert counts == sorted(counts), "cumulative"
    assert 20 <= len(buckets) <= 30
    count = value(fams, family, f"{family}_count")
    assert counts[-1] == count == len(values)
    for le, c in buckets[:-1]:
        # every bound sits on a bucket edge, so each count is exact
        assert c == sum(1 for v in values if v <= round(le * 1e9)), le
    total = value(fams, family, f"{family}_sum")
    assert total == pytest.approx(sum(values) * 1e-9, rel=0.05)


def test_histogram_buckets_of_an_empty_or_short_histogram() -> None:
    buckets, total = histogram_buckets([0] * stats.HIST_BUCKETS)
    assert {c for _, c in buckets} == {0.0} and total == 0
    buckets, _ = histogram_buckets([1] * 100)
    assert buckets[-1] == ("+Inf", 100.0)
    assert [c for _, c in buckets] == sorted(c for _, c in buckets)


def test_openmetrics_exposition_is_valid(serve) -> None:
    # Prometheus asks for OpenMetrics; its parser is strict about histograms
    text = scrape(serve(status), accept=OPENMETRICS)
    assert text.rstrip().endswith("# EOF")
    fams = {f.name: f for f in openmetrics_families(text)}
    assert fams["rtcore_rt_cycles"].type == "counter"
    assert fams["rtcore_rt_wake_latency_seconds"].type == "histogram"


def test_a_failing_snapshot_exports_up_0(serve, caplog: pytest.LogCaptureFixture) -> None:
    healthy = {"on": True}

    def snapshot() -> dict[str, Any]:
        if healthy["on"]:
            return status()
        raise RuntimeError("status lock timed out")

    port = serve(snapshot)
    assert value(families(scrape(port)), "rtcore_up", node_id="n1") == 1
    healthy["on"] = False
    with caplog.at_level(logging.ERROR, logger="control.node.metrics"):
        fams = families(scrape(port))
    assert list(fams) == ["rtcore_up"]
    assert value(fams, "rtcore_up", node_id="n1") == 0, "node_id is the last one seen"
    assert "status lock timed out" in caplog.text
    healthy["on"] = True
    assert value(families(scrape(port)), "rtcore_up") == 1


def test_malformed_status_exports_up_0_not_half_a_scrape(serve) -> None:
    def snapshot() -> dict[str, Any]:
        s = status()
        s["rt"]["wake_hist"] = None
        s["rt"]["exec_hist"] = ["x"]
        return s

    assert list(families(scrape(serve(snapshot)))) == ["rtcore_up"]


def test_absent_groups_are_left_out(serve) -> None:
    fams = families(scrape(serve(lambda: {"node_id": "n2", "role": "standby", "rt": {}})))
    assert set(fams) == {"rtcore_up", "rtcore_role"}
    assert value(fams, "rtcore_role", node_id="n2", role="standby") == 1


def test_registering_does_not_call_the_snapshot() -> None:
    def snapshot() -> dict[str, Any]:
        raise AssertionError("called at registration")

    Metrics(snapshot)


def test_start_http_on_a_port_in_use(serve) -> None:
    port = serve(status)
    m = Metrics(status)
    with pytest.raises(FailedPrecondition, match=f"127.0.0.1:{port}.*--metrics-listen"):
        m.start_http(f"127.0.0.1:{port}")
    m.stop()


def test_stop_closes_the_port() -> None:
    m = Metrics(status)
    _, port = m.start_http("127.0.0.1:0")
    assert "rtcore_up" in scrape(port)
    m.stop()
    m.stop()
    with pytest.raises(urllib.error.URLError):
        scrape(port)


# --- a real Prometheus server ----------------------------------------------

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMETHEUS_DEADLINE_S = 25


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.load(resp)


def query(base: str, promql: str) -> list[dict[str, Any]]:
    doc = get_json(f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


@pytest.mark.skipif(
    not Path(PROMETHEUS).exists(),
    reason=f"Prometheus server not installed ({PROMETHEUS} missing; apt-get install prometheus)",
)
def test_prometheus_scrapes_the_endpoint(serve, spawn: Spawner, tmp_path: Path) -> None:
    deadline = time.monotonic() + PROMETHEUS_DEADLINE_S
    metrics_port = serve(status)
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: rtcore\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{metrics_port}']\n"
    )
    log_path = tmp_path / "prometheus.log"
    with open(log_path, "w") as log_file:
        proc = spawn(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=log_file,
            stderr=log_file,
        )
    base = f"http://127.0.0.1:{prom_port}"

    def fail(what: str) -> None:
        pytest.fail(f"{what}; prometheus log tail:\n{log_path.read_text()[-3000:]}")

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    while not ready():
        if proc.poll() is not None:
            fail(f"prometheus exited with {proc.returncode}")
        if time.monotonic() > deadline:
            fail("prometheus was not ready in time")
        time.sleep(0.1)

    selector = '{job="rtcore",node_id="n1"}'
    result: list[dict[str, Any]] = []
    while not result:
        if time.monotonic() > deadline:
            targets = get_json(f"{base}/api/v1/targets")["data"]["activeTargets"]
            fail(f"rtcore_rt_cycles_total never appeared; targets: {targets}")
        time.sleep(0.2)
        result = query(base, f"rtcore_rt_cycles_total{selector}")
    assert float(result[0]["value"][1]) == status()["rt"]["cycles"]

    # the same scrape brought in the rest; the histogram is usable in PromQL
    assert float(query(base, f"rtcore_up{selector}")[0]["value"][1]) == 1
    count = query(base, f"rtcore_rt_wake_latency_seconds_count{selector}")
    assert float(count[0]["value"][1]) == len(WAKE_NS)
    p50 = query(base, f"histogram_quantile(0.5, rtcore_rt_wake_latency_seconds_bucket{selector})")
    assert 1e-6 < float(p50[0]["value"][1]) < 1e-5
    role = query(base, f"rtcore_role{selector}")
    assert role[0]["metric"]["role"] == "primary"

    proc.terminate()
    proc.wait(timeout=10)


def test_numa_and_isolation_gauges(serve) -> None:
    def snap() -> dict[str, Any]:
        s = status()
        s["placement"] = {
            "cpus": "1",
            "isolated": True,
            "numa_node": 0,
            "numa_local_pages_pct": 96.5,
            "numa_local_access_pct": 100.0,
        }
        return s

    fams = families(scrape(serve(snap)))
    assert value(fams, "rtcore_numa_local_pages_ratio", node_id="n1") == pytest.approx(0.965)
    assert value(fams, "rtcore_numa_local_access_ratio", node_id="n1") == pytest.approx(1.0)
    assert value(fams, "rtcore_rt_isolated", node_id="n1") == 1


def test_log_pipeline_counters(serve) -> None:
    """The spool's appends, drops by level, each sink's lag and the RT's
    malformed records, from status `logs`."""
    logs = {
        "spool": {
            "appended": 1000,
            "dropped": {"DEBUG": 40, "INFO": 2, "WARN": 0, "ERROR": 0, "CRITICAL": 0},
            "sinks": {"store": {"lag_records": 3, "acked": 997}, "elastic": {"lag_records": 900}},
        },
        "rt_malformed": {"unknown_template": 2},
    }
    fams = families(scrape(serve(lambda: {**status(), "logs": logs})))
    assert value(fams, "rtcore_log_spooled_records", "rtcore_log_spooled_records_total") == 1000
    total = "rtcore_log_dropped_records_total"
    assert value(fams, "rtcore_log_dropped_records", total, level="DEBUG") == 40
    assert value(fams, "rtcore_log_dropped_records", total, level="INFO") == 2
    assert value(fams, "rtcore_log_sink_lag_records", sink="elastic") == 900
    assert value(fams, "rtcore_log_sink_lag_records", sink="store") == 3
    malformed = "rtcore_log_malformed_records_total"
    assert value(fams, "rtcore_log_malformed_records", malformed, reason="unknown_template") == 2
    # an agent whose spool could not be opened: no half-filled family
    fams = families(scrape(serve(lambda: {**status(), "logs": {"spool": None}})))
    assert not any(name.startswith("rtcore_log_") for name in fams)


def test_cluster_gauges(serve) -> None:
    """The Raft side of status `cluster`: the role one-hot over every role, the
    lease, elections, replication and checkpoint lag, all in seconds."""
    cluster = {
        "leader": "n2",
        "term": 9,
        "has_quorum": True,
        "members": ["n1", "n2", "n3"],
        "role": "standby",
        "lease_age_ms": None,
        "elections": 4,
        "replication_lag_ms": {"p50": 1.5, "p99": 12.0, "max": 30.0, "count": 200},
        "checkpoint_lag_ms": 2.5,
    }
    fams = families(scrape(serve(lambda: {**status(), "cluster": cluster})))
    roles = {s.labels["role"]: s.value for s in fams["rtcore_cluster_role"].samples}
    assert roles == {"primary": 0, "standby": 1, "witness": 0, "candidate": 0, "fenced": 0}
    assert fams["rtcore_cluster_role"].type == "gauge"
    assert value(fams, "rtcore_cluster_term") == 9
    assert value(fams, "rtcore_cluster_has_quorum") == 1
    assert "rtcore_cluster_lease_age_seconds" not in fams, "None: no lease held, no sample"
    assert fams["rtcore_cluster_elections"].type == "counter"
    assert value(fams, "rtcore_cluster_elections", "rtcore_cluster_elections_total") == 4
    lag = "rtcore_cluster_replication_lag_seconds"
    assert {s.labels["quantile"] for s in fams[lag].samples} == {"0.5", "0.99"}
    assert value(fams, lag, quantile="0.5") == pytest.approx(1.5e-3)
    assert value(fams, lag, quantile="0.99") == pytest.approx(12e-3)
    assert value(fams, "rtcore_cluster_checkpoint_lag_seconds") == pytest.approx(2.5e-3)

    primary = {**cluster, "role": "primary", "lease_age_ms": 120.0, "checkpoint_lag_ms": None}
    fams = families(scrape(serve(lambda: {**status(), "cluster": primary})))
    assert value(fams, "rtcore_cluster_role", role="primary") == 1
    assert value(fams, "rtcore_cluster_lease_age_seconds") == pytest.approx(0.12)
    assert "rtcore_cluster_checkpoint_lag_seconds" not in fams

    text = scrape(serve(lambda: {**status(), "cluster": cluster}), accept=OPENMETRICS)
    assert {f.name for f in openmetrics_families(text)} >= {"rtcore_cluster_role", lag}


def test_cluster_keys_a_single_node_lacks_are_left_out(serve) -> None:
    single = {"leader": "n1", "term": 0, "has_quorum": True, "members": ["n1"]}
    fams = families(scrape(serve(lambda: {**status(), "cluster": single})))
    assert value(fams, "rtcore_up") == 1
    assert value(fams, "rtcore_cluster_term") == 0
    cluster_families = {n for n in fams if n.startswith("rtcore_cluster_")}
    assert cluster_families == {"rtcore_cluster_term", "rtcore_cluster_has_quorum"}
    # no samples yet: no quantiles rather than zeros
    fresh = {**single, "replication_lag_ms": {"p50": 0.0, "p99": 0.0, "max": 0.0, "count": 0}}
    fams = families(scrape(serve(lambda: {**status(), "cluster": fresh})))
    assert "rtcore_cluster_replication_lag_seconds" not in fams
