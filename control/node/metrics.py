"""Prometheus /metrics for one node, built from the agent's status on each scrape.

Every sample carries a `node_id` label. Metric names (all `rtcore_`):

    rtcore_up                                 gauge: 1 if the status could be read
    rtcore_role{role}                         gauge: 1 for the node's current role
    rtcore_rt_state{state}                    gauge: 1 for the RT loop's current state
    rtcore_rt_pid                             gauge
    rtcore_rt_period_seconds                  gauge
    rtcore_rt_cycles_total                    counter
    rtcore_rt_deadline_misses_total           counter
    rtcore_rt_restarts_total                  counter: RT process restarts by the agent
    rtcore_rt_latency_seconds{stat}           gauge: wake latency p50, p99, max
    rtcore_rt_wake_latency_seconds            histogram
    rtcore_rt_exec_time_seconds               histogram
    rtcore_rt_ring_dropped_records_total{ring}  counter: log, span, event
    rtcore_drain_dropped_records_total{subscriber}  counter: lost by a slow subscriber
    rtcore_log_spooled_records_total          counter: log records appended to the spool
    rtcore_log_dropped_records_total{level}   counter: dropped by the spool (full, disk error)
    rtcore_log_sink_lag_records{sink}         gauge: spooled records a sink has not settled
    rtcore_log_malformed_records_total{reason}  counter: malformed RT log records
    rtcore_trace_exported_spans_total, rtcore_trace_export_dropped_spans_total  counters
    rtcore_alerts_active  gauge: bottleneck (and later) alerts in force
    rtcore_checkpoint_seq                     gauge
    rtcore_checkpoint_age_seconds             gauge
    rtcore_cluster_term                       gauge
    rtcore_cluster_has_quorum                 gauge
    rtcore_cluster_role{role}                 gauge: 1 for the Raft role, 0 for the others
    rtcore_cluster_lease_age_seconds          gauge: age of the quorum lease this node holds
    rtcore_cluster_elections_total            counter: leader changes seen since start
    rtcore_cluster_replication_lag_seconds{quantile}  gauge: 0.5, 0.99
    rtcore_cluster_checkpoint_lag_seconds     gauge: age of the newest applied checkpoint
    rtcore_numa_local_pages_ratio             gauge: RT pages on its NUMA node, 0..1
    rtcore_numa_local_access_ratio            gauge: node-local allocations, 0..1
    rtcore_rt_isolated                        gauge: 1 while CPU isolation is in force

A group whose status fields are absent (no RT running, single node) is left
out rather than exported as zeros.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from control.api import CLUSTER_ROLES
from control.errors import FailedPrecondition
from rtcore import stats

log = logging.getLogger(__name__)

NS = 1e-9
US = 1e-6


def _bucket_bounds() -> list[tuple[int, str]]:
    """(first bucket index above the bound, `le` in seconds) for 1-2-5 steps from
    100 ns to 10 s. The RT's buckets are powers-of-two based, so each step is
    snapped to the nearest bucket edge and `le` is the largest nanosecond value
    below that edge: counts are then exact, not interpolated."""
    out: list[tuple[int, str]] = []
    for decade in range(2, 10):
        for mult in (1, 2, 5):
            out.append(_snap(mult * 10**decade))
    out.append(_snap(10**10))
    return sorted(set(out))


def _snap(target_ns: int) -> tuple[int, str]:
    idx = stats.bucket_of(target_ns)
    lo, hi = stats.bucket_lower(idx), stats.bucket_lower(idx + 1)
    edge = idx if target_ns - lo <= hi - target_ns else idx + 1
    # from the integer, so `le` reads 1.99e-07 rather than 1.9900000000000002e-07
    return edge, f"{stats.bucket_upper(edge - 1) * NS:.12g}"


BOUNDS = _bucket_bounds()


def histogram_buckets(hist: Sequence[int]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative (le, count) pairs ending with +Inf, and the sum in seconds
    estimated from bucket midpoints."""
    cumulative = [0]
    for count in hist:
        cumulative.append(cumulative[-1] + int(count))
    total = cumulative[-1]
    buckets = [(le, float(cumulative[min(edge, len(hist))])) for edge, le in BOUNDS]
    buckets.append(("+Inf", float(total)))
    mid_sum = sum(
        int(c) * (stats.bucket_lower(i) + stats.bucket_upper(i)) / 2
        for i, c in enumerate(hist)
        if c
    )
    return buckets, mid_sum * NS


# One-hot gauges: (status path, name, label, help); the current value gets 1.
_ONE_HOT = (
    (("role",), "rtcore_role", "role", "Node role (1 for the current one)"),
    (("rt", "state"), "rtcore_rt_state", "state", "RT loop state (1 for the current one)"),
)
# Plain gauges: (status path, name, help, scale to the unit in the name).
_GAUGES = (
    (("rt", "pid"), "rtcore_rt_pid", "Process id of the RT loop", 1.0),
    (("rt", "period_us"), "rtcore_rt_period_seconds", "RT cycle period", US),
    (("checkpoint", "seq"), "rtcore_checkpoint_seq", "Newest checkpoint sequence number", 1.0),
    (
        ("checkpoint", "age_ms"),
        "rtcore_checkpoint_age_seconds",
        "Age of the newest checkpoint",
        1e-3,
    ),
    (("cluster", "term"), "rtcore_cluster_term", "Raft term", 1.0),
    (
        ("placement", "numa_local_pages_pct"),
        "rtcore_numa_local_pages_ratio",
        "Share of the RT process's pages on its NUMA node",
        0.01,
    ),
    (
        ("placement", "numa_local_access_pct"),
        "rtcore_numa_local_access_ratio",
        "Share of the node's allocations served locally (numastat)",
        0.01,
    ),
    (("placement", "isolated"), "rtcore_rt_isolated", "1 while CPU isolation is in force", 1.0),
    (
        ("cluster", "has_quorum"),
        "rtcore_cluster_has_quorum",
        "1 while a majority acknowledges this node's lease",
        1.0,
    ),
    (
        ("cluster", "lease_age_ms"),
        "rtcore_cluster_lease_age_seconds",
        "Age of the quorum lease this node holds",
        1e-3,
    ),
    (
        ("cluster", "checkpoint_lag_ms"),
        "rtcore_cluster_checkpoint_lag_seconds",
        "Age of the newest replicated checkpoint this node has applied",
        1e-3,
    ),
)
# Replication lag quantiles: (key under cluster.replication_lag_ms, `quantile` label).
_LAG_QUANTILES = (("p50", "0.5"), ("p99", "0.99"))
# Counters under rt: (key, name without _total, help).
_COUNTERS = (
    ("cycles", "rtcore_rt_cycles", "RT cycles executed"),
    ("misses", "rtcore_rt_deadline_misses", "RT cycles that overran their period"),
    ("restarts", "rtcore_rt_restarts", "RT process restarts by the supervisor"),
)
# Histograms under rt: (key of the raw bucket counts, name, help).
_HISTOGRAMS = (
    ("wake_hist", "rtcore_rt_wake_latency_seconds", "RT wake-up latency"),
    ("exec_hist", "rtcore_rt_exec_time_seconds", "RT cycle execution time"),
)


class StatusCollector(Collector):
    """Turns one status snapshot into metric families on every collect()."""

    def __init__(self, snapshot: Callable[[], Mapping[str, Any]]) -> None:
        self.snapshot = snapshot
        self.node_id = ""

    def describe(self) -> list[Metric]:
        # no names up front: registering must not call snapshot()
        return []

    def collect(self) -> Iterator[Metric]:
        try:
            status = self.snapshot()
            self.node_id = str(status.get("node_id", self.node_id))
            # built in full before anything is yielded: a bad field fails the
            # whole snapshot (rtcore_up 0) rather than exporting half of it
            families = list(self._families(status))
        except Exception:
            log.exception("metrics: reading the agent status failed; exporting rtcore_up 0")
            families = []
        up = GaugeMetricFamily(
            "rtcore_up", "1 if the agent status could be read", labels=["node_id"]
        )
        up.add_metric([self.node_id], 1 if families else 0)
        yield up
        yield from families

    def _families(self, s: Mapping[str, Any]) -> Iterator[Metric]:
        node = self.node_id
        for path, name, label, doc in _ONE_HOT:
            value = _get(s, path)
            if value:
                g = GaugeMetricFamily(name, doc, labels=["node_id", label])
                g.add_metric([node, str(value)], 1)
                yield g
        for path, name, doc, scale in _GAUGES:
            value = _get(s, path)
            if value is not None:
                g = GaugeMetricFamily(name, doc, labels=["node_id"])
                g.add_metric([node], float(value) * scale)
                yield g
        rt: Mapping[str, Any] = s.get("rt") or {}
        for key, name, doc in _COUNTERS:
            if rt.get(key) is not None:
                c = CounterMetricFamily(name, doc, labels=["node_id"])
                c.add_metric([node], float(rt[key]))
                yield c
        for key, name, doc in _HISTOGRAMS:
            if rt.get(key) is not None:
                buckets, total = histogram_buckets(rt[key])
                h = HistogramMetricFamily(name, doc, labels=["node_id"])
                h.add_metric([node], buckets, sum_value=total)
                yield h
        if rt.get("latency_us"):
            g = GaugeMetricFamily(
                "rtcore_rt_latency_seconds",
                "RT latency as in `rtctl status` (rt.latency_us): p50, p99, max",
                labels=["node_id", "stat"],
            )
            for stat, us in sorted(rt["latency_us"].items()):
                g.add_metric([node, stat], float(us) * US)
            yield g
        if rt.get("ring_dropped"):
            c = CounterMetricFamily(
                "rtcore_rt_ring_dropped_records",
                "Records the RT dropped because a ring was full",
                labels=["node_id", "ring"],
            )
            for ring, count in sorted(rt["ring_dropped"].items()):
                c.add_metric([node, ring], float(count))
            yield c
        otlp = _get(s, ("tracing", "otlp"))
        if otlp:
            for key, name, doc in (
                ("exported", "rtcore_trace_exported_spans", "Spans sent over OTLP"),
                ("dropped", "rtcore_trace_export_dropped_spans", "Spans OTLP export lost"),
            ):
                c = CounterMetricFamily(name, doc, labels=["node_id"])
                c.add_metric([node], float(otlp.get(key, 0)))
                yield c
        active = _get(s, ("tracing", "alerts_active"))
        if active is not None:
            g = GaugeMetricFamily(
                "rtcore_alerts_active", "Alerts raised and not cleared", labels=["node_id"]
            )
            g.add_metric([node], float(active))
            yield g
        yield from _cluster_families(node, s.get("cluster") or {})
        yield from _log_families(node, s.get("logs") or {})
        subs = _get(s, ("drainer", "subscribers"))
        if subs:
            c = CounterMetricFamily(
                "rtcore_drain_dropped_records",
                "Records a subscriber of the drainer lost because its queue was full",
                labels=["node_id", "subscriber"],
            )
            for name, sub in sorted(subs.items()):
                c.add_metric([node, name], float(sub["dropped"]))
            yield c


def _cluster_families(node: str, cluster: Mapping[str, Any]) -> Iterator[Metric]:
    """The Raft side of status `cluster` beyond the gauges above; a single
    node's status lacks these keys, and each missing one is left out."""
    role = str(cluster.get("role") or "")
    if role:
        g = GaugeMetricFamily(
            "rtcore_cluster_role",
            "Raft role of the node (1 for the current one, 0 for the others)",
            labels=["node_id", "role"],
        )
        for name in dict.fromkeys((*CLUSTER_ROLES, role)):
            g.add_metric([node, name], 1 if name == role else 0)
        yield g
    if cluster.get("elections") is not None:
        c = CounterMetricFamily(
            "rtcore_cluster_elections",
            "Leader changes this node has seen since it started",
            labels=["node_id"],
        )
        c.add_metric([node], float(cluster["elections"]))
        yield c
    lag = cluster.get("replication_lag_ms")
    if isinstance(lag, Mapping) and lag.get("count") != 0:  # no samples: no quantiles
        quantiles = [(q, lag[key]) for key, q in _LAG_QUANTILES if lag.get(key) is not None]
        if quantiles:
            g = GaugeMetricFamily(
                "rtcore_cluster_replication_lag_seconds",
                "Raft replication lag over the recent entries",
                labels=["node_id", "quantile"],
            )
            for quantile, ms in quantiles:
                g.add_metric([node, quantile], float(ms) * 1e-3)
            yield g


def _log_families(node: str, logs: Mapping[str, Any]) -> Iterator[Metric]:
    """The log pipeline's counters (status `logs`), when it has a spool."""
    spool = logs.get("spool")
    if not spool:
        return
    c = CounterMetricFamily(
        "rtcore_log_spooled_records", "Log records appended to the spool", labels=["node_id"]
    )
    c.add_metric([node], float(spool["appended"]))
    yield c
    c = CounterMetricFamily(
        "rtcore_log_dropped_records",
        "Log records the spool dropped (full: DEBUG/INFO first; a failed write)",
        labels=["node_id", "level"],
    )
    for level, count in sorted(spool["dropped"].items()):
        c.add_metric([node, level], float(count))
    yield c
    g = GaugeMetricFamily(
        "rtcore_log_sink_lag_records",
        "Spooled log records a sink has not settled yet",
        labels=["node_id", "sink"],
    )
    for sink, cursor in sorted(spool["sinks"].items()):
        g.add_metric([node, sink], float(cursor["lag_records"]))
    yield g
    c = CounterMetricFamily(
        "rtcore_log_malformed_records",
        "Malformed RT log records (kept, marked and counted)",
        labels=["node_id", "reason"],
    )
    for reason, count in sorted((logs.get("rt_malformed") or {}).items()):
        c.add_metric([node, reason], float(count))
    yield c


def _get(status: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = status
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


class Metrics:
    """The node's metrics registry and, once started, its HTTP endpoint.

    snapshot() runs on the HTTP server's thread at each scrape, so it must be
    safe to call from any thread.
    """

    def __init__(
        self,
        snapshot: Callable[[], Mapping[str, Any]],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.collector = StatusCollector(snapshot)
        self.registry.register(self.collector)
        self._server: WSGIServer | None = None
        self._thread: Any = None

    def start_http(self, listen: str) -> tuple[WSGIServer, int]:
        """Serve /metrics on HOST:PORT (port 0: any free one); returns the server
        and the bound port. FailedPrecondition if the address cannot be bound."""
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        try:
            server, thread = start_http_server(int(port), addr=host, registry=self.registry)
        except (OSError, ValueError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise FailedPrecondition(
                f"cannot serve metrics on {listen}: {reason}; "
                "pick another --metrics-listen address, or '' to disable metrics"
            ) from None
        self._server, self._thread = server, thread
        return server, server.server_port

    def stop(self) -> None:
        """Stop serving; safe to call when not started or twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        self._thread.join(timeout=5)
