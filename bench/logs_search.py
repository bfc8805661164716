"""Search in the embedded log store over millions of records, against the
same queries on a real OpenSearch holding the same records (same run).

The corpus is synthetic but shaped like a node's logs: mostly DEBUG/INFO
cycle and joint records from the RT, agent RPC and heartbeat records, WARN a
few percent, ERROR/CRITICAL rare (deadline misses, state changes, lease
loss), trace ids on about 1 % of the records. `n_records` are spread over
the last 24 hours and as many again over the `days - 1` days before, for the
shape that spans days. The store is filled through deliver() in the
pipeline's batches (the load rate is reported), then each shape runs RUNS
times with varied parameters and `search_ms` p50/p95 is reported:

- level_time: WARN and above in a 1-hour window of the last day
- event_time: event.action=deadline_miss in a 1-hour window
- trace: one trace id, no time bound
- text: two words from the vocabulary, all matching, over the last day
- rare_common_days: the common word "period" + level ERROR and above +
  event.action=deadline_miss over `days` days

OpenSearch indexes far slower on this machine than the store, so its load
rate is measured on a sample first; when the whole corpus would take longer
than OPENSEARCH_LOAD_BUDGET_S it holds a smaller corpus of the same shape,
and the store is measured again on exactly that corpus for the comparison.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import urllib3

from bench import opensearch
from control.logs.ecs import ECS_VERSION
from control.logs.elastic import ElasticSink
from control.logs.elastic_settings import ElasticSettings
from control.logs.sink import Record
from control.logs.store import DAY_NS, LogStore

GOAL_P95_MS = 50.0
BATCH = 20_000  # records per deliver(): the pipeline's batch
RUNS = 60
LIMIT = 100
WINDOW_NS = 3600 * 1_000_000_000
SEED = 10
OPENSEARCH_SAMPLE = 100_000  # records loaded to measure its rate
OPENSEARCH_LOAD_BUDGET_S = 15 * 60
OPENSEARCH_MIN_RECORDS = 1_000_000
INDEX_PATTERN = "rtcore-logs-*"
SHAPES = ("level_time", "event_time", "trace", "text", "rare_common_days")
LEVEL_NAMES = {10: "DEBUG", 20: "INFO", 30: "WARN", 40: "ERROR", 50: "CRITICAL"}

_TASKS = ("arm_ctrl", "gripper", "base_pid", "imu_fuse", "planner")
_METHODS = ("StartJob", "StopJob", "GetStatus", "SetLogLevel", "Watch")
_NODES = ("node-a", "node-b", "node-c")
Message = Callable[[int, Callable[[], float]], str]  # (seq, uniform random) -> text
# (share of records, level, logger, event.action, message, from the RT)
_TEMPLATES: tuple[tuple[float, int, str, str | None, Message, bool], ...] = (
    (0.40, 10, "rt.task", None, lambda s, r: (
        f"cycle {s}: task {_TASKS[s % 5]} step done in {r() * 900:.1f} us of the 1000 us period"
    ), True),
    (0.18, 10, "rt.task", None, lambda s, r: (
        f"joint {s % 7} torque {r() * 40:.2f} Nm velocity {r() * 3:.3f} rad/s within limits"
    ), True),
    (0.08, 20, "rt.task", None, lambda s, r: (
        f"task {_TASKS[s % 5]} checkpoint {s % 9973} saved ({int(r() * 1e6)} bytes)"
    ), True),
    (0.03, 30, "rt.loop", None, lambda s, r: (
        f"cycle {s}: exec {r() * 900:.1f} us is close to the period, {int(r() * 100)} us slack"
    ), True),
    (0.0002, 40, "rt.loop", "deadline_miss", lambda s, r: (
        f"deadline miss: woke {r() * 800:.1f} us late, ran {r() * 900:.1f} us "
        f"(period 1000 us), {int(r() * 3)} periods skipped"
    ), True),
    (0.00003, 40, "rt.loop", "state_changed", lambda s, r: (
        f"state changed: ACTIVE -> DEGRADED after {int(r() * 10)} misses"
    ), True),
    (0.00001, 50, "rt.loop", "lease_lost", lambda s, r: (
        f"lease lost: node {_NODES[s % 3]} no longer holds the actuation lease"
    ), True),
    (0.12, 20, "agent.rpc", None, lambda s, r: (
        f"rpc {_METHODS[s % 5]} from 10.0.0.{s % 250} ok in {r() * 50:.1f} ms"
    ), False),
    (0.12, 10, "agent.cluster", None, lambda s, r: (
        f"heartbeat from {_NODES[s % 3]} term {s % 9973} lag {r() * 50:.1f} ms"
    ), False),
    (0.03, 20, "agent.jobs", None, lambda s, r: (
        f"job {s % 9973} placed on {_NODES[s % 3]} by the placement policy"
    ), False),
    (0.02, 30, "agent.logs", None, lambda s, r: (
        f"spool {int(r() * 100)}% full, {int(r() * 1e5)} records waiting for the store"
    ), False),
    (0.0005, 40, "agent.rpc", None, lambda s, r: (
        f"rpc {_METHODS[s % 5]} from 10.0.0.{s % 250} failed: deadline exceeded "
        f"after {r() * 50:.1f} ms"
    ), False),
)  # fmt: skip
TEXT_QUERIES = (
    "checkpoint saved",
    "rpc failed",
    "torque velocity",
    "placement policy",
    "heartbeat lag",
    "spool full",
    "StartJob ok",
    "slack close",
)


class Corpus:
    """A deterministic stream of spool records (seq, time_ns, level, doc)."""

    def __init__(self, n_records: int, days: float, end_ns: int) -> None:
        self.n_records = n_records  # in the last 24 hours; as many again over the days before
        self.days = days
        self.end_ns = end_ns
        self.total = 2 * n_records if days > 1 else n_records
        self.trace_ids: list[str] = []  # a sample of the traces generated, for look-ups

    def batches(self, size: int = BATCH) -> Iterator[list[Record]]:
        self.trace_ids.clear()
        rng = random.Random(SEED)
        nprng = np.random.default_rng(SEED)
        shares = np.array([t[0] for t in _TEMPLATES])
        stamp = _Timestamps()
        traces = _Traces(random.Random(SEED + 1), self.trace_ids)
        seq = 0
        day_start = self.end_ns - DAY_NS
        spans = [(day_start - int((self.days - 1) * DAY_NS), day_start)] if self.days > 1 else []
        for lo, hi in [*spans, (day_start, self.end_ns)]:
            step = (hi - lo) / self.n_records
            for first in range(0, self.n_records, size):
                n = min(size, self.n_records - first)
                offsets = (np.arange(first, first + n) + nprng.random(n)) * step
                kinds = nprng.choice(len(_TEMPLATES), size=n, p=shares / shares.sum())
                batch = []
                for off, k in zip(offsets.tolist(), kinds.tolist(), strict=True):
                    seq += 1
                    t = lo + int(off)
                    level, doc = _document(_TEMPLATES[k], t, stamp, rng, traces, seq)
                    batch.append((seq, t, level, doc))
                yield batch


class _Traces:
    """Trace ids on ~1 % of records, each trace on a handful of records."""

    PER_TRACE = 6
    SAMPLE_EVERY = 97  # traces

    def __init__(self, rng: random.Random, sample: list[str]) -> None:
        self._rng = rng
        self._sample = sample
        self._left = 0
        self._count = 0
        self._id = ""

    def maybe(self, rng: random.Random) -> str | None:
        if rng.random() >= 0.01:
            return None
        if self._left == 0:
            self._id = f"{self._rng.getrandbits(128):032x}"
            self._left = self.PER_TRACE
            self._count += 1
            if self._count % self.SAMPLE_EVERY == 1:
                self._sample.append(self._id)
        self._left -= 1
        return self._id


class _Timestamps:
    """ISO 8601 with nanoseconds, the seconds part formatted once a second."""

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = ""

    def __call__(self, time_ns: int) -> str:
        sec, ns = divmod(time_ns, 1_000_000_000)
        if sec != self._sec:
            self._sec = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._prefix}.{ns:09d}Z"


def _document(
    template: tuple[float, int, str, str | None, Message, bool],
    time_ns: int,
    stamp: _Timestamps,
    rng: random.Random,
    traces: _Traces,
    seq: int,
) -> tuple[int, bytes]:
    _, level, logger, action, message, rt = template
    doc: dict[str, Any] = {
        "@timestamp": stamp(time_ns),
        "log": {"level": LEVEL_NAMES[level], "logger": logger},
        "message": message(seq, rng.random),
        "ecs": {"version": ECS_VERSION},
        "process": {
            "pid": 4242 if rt else 4100,
            "name": "rtcore-rt" if rt else "rtctl-agent",
            "thread": {"id": 4243 if rt else 4101},
        },
        "service": {"name": "rtcore", "node": {"name": "node-a"}},
        "host": {"name": "vm1"},
        "event": {"dataset": "rtcore.rt" if rt else "rtcore.agent"},
    }
    if action:
        doc["event"]["action"] = action
    trace_id = traces.maybe(rng)
    if trace_id:
        doc["trace"] = {"id": trace_id}
    if rt:
        doc["rtcore"] = {"node": "node-a", "cycle": seq, "time_ns": time_ns}
    return level, orjson.dumps(doc)


def load_store(store: LogStore, corpus: Corpus) -> dict[str, Any]:
    """Delivers the corpus in the pipeline's batches; the rate counts only
    the time inside deliver() (generating the records is not the store's)."""
    spent = 0.0
    cpu = 0.0
    delivered = 0
    worst = 0.0
    for batch in corpus.batches():
        started, cpu_started = time.perf_counter(), time.process_time()
        done = store.deliver(batch).done
        took = time.perf_counter() - started
        spent += took
        cpu += time.process_time() - cpu_started
        worst = max(worst, took)
        if done != len(batch):
            raise RuntimeError(f"the store settled {done} of {len(batch)}: {store.error}")
        delivered += done
    return {
        "records": delivered,
        "records_per_s": round(delivered / spent),
        "cpu_us_per_record": round(cpu / delivered * 1e6, 2),
        "deliver_ms_max": round(worst * 1e3, 1),
        "batch": BATCH,
    }


def queries(corpus: Corpus, rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    """RUNS parameter sets per shape, in the store's search() terms."""
    end = corpus.end_ns
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in SHAPES}
    for _ in range(RUNS):
        hour_end = end - int(rng.random() * (DAY_NS - WINDOW_NS))
        hour = {"since_ns": hour_end - WINDOW_NS, "until_ns": hour_end}
        out["level_time"].append({"level_min": 30, **hour})
        out["event_time"].append({"event": "deadline_miss", **hour})
        out["trace"].append({"trace_id": rng.choice(corpus.trace_ids)})
        out["text"].append({"text": rng.choice(TEXT_QUERIES), "since_ns": end - DAY_NS})
        out["rare_common_days"].append(
            {
                "text": "period",
                "level_min": 40,
                "event": "deadline_miss",
                "since_ns": end - int(corpus.days * DAY_NS),
            }
        )
    return out


def time_queries(
    search: Callable[[dict[str, Any]], int], shapes: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """search_ms p50/p95 per shape, and the mean hit count (to show the
    queries found what they looked for)."""
    out: dict[str, Any] = {}
    for shape, params in shapes.items():
        search(params[0])  # the first touch of a day maps its files
        took, hits = [], []
        for p in params:
            started = time.perf_counter()
            hits.append(search(p))
            took.append((time.perf_counter() - started) * 1e3)
        out[shape] = {
            "p50_ms": round(float(np.percentile(took, 50)), 2),
            "p95_ms": round(float(np.percentile(took, 95)), 2),
            "max_ms": round(max(took), 2),
            "hits_mean": round(sum(hits) / len(hits), 1),
            "runs": len(params),
        }
    return out


def store_searcher(store: LogStore) -> Callable[[dict[str, Any]], int]:
    return lambda p: len(store.search(limit=LIMIT, **p))


def opensearch_body(p: dict[str, Any]) -> dict[str, Any]:
    """The same query for OpenSearch: filters only (no scoring), newest first."""
    clauses: list[dict[str, Any]] = []
    if "level_min" in p:
        names = [name for level, name in LEVEL_NAMES.items() if level >= p["level_min"]]
        clauses.append({"terms": {"log.level": names}})
    for key, field in (("event", "event.action"), ("trace_id", "trace.id")):
        if key in p:
            clauses.append({"term": {field: p[key]}})
    if "text" in p:
        clauses.append({"match": {"message": {"query": p["text"], "operator": "and"}}})
    if "since_ns" in p or "until_ns" in p:
        iso = _Timestamps()
        bounds = {"gte": iso(p["since_ns"])} if "since_ns" in p else {}
        if "until_ns" in p:
            bounds["lte"] = iso(p["until_ns"])
        clauses.append({"range": {"@timestamp": bounds}})
    return {
        "query": {"bool": {"filter": clauses}},
        "sort": [{"@timestamp": "desc"}],
        "size": LIMIT,
        "track_total_hits": False,
    }


class _OpenSearchSearcher:
    """Timed like the store's: the request, the answer parsed, hits counted.
    One kept-alive connection, as a client would hold."""

    def __init__(self, url: str) -> None:
        self._pool = urllib3.connection_from_url(url, maxsize=1, retries=False)

    def __call__(self, p: dict[str, Any]) -> int:
        resp = self._pool.request(
            "POST",
            f"/{INDEX_PATTERN}/_search",
            body=orjson.dumps(opensearch_body(p)),
            headers={"Content-Type": "application/json"},
            timeout=30.0,
        )
        if resp.status != 200:
            raise RuntimeError(f"OpenSearch search: HTTP {resp.status}: {resp.data[:300]!r}")
        return len(orjson.loads(resp.data)["hits"]["hits"])


def load_opensearch(sink: ElasticSink, batches: Iterator[list[Record]]) -> dict[str, Any]:
    """Delivers through the real `_bulk` sink; the rate counts only deliver()."""
    spent = 0.0
    delivered = 0
    for batch in batches:
        started = time.perf_counter()
        delivery = sink.deliver(batch)
        spent += time.perf_counter() - started
        if delivery.done != len(batch):
            raise RuntimeError(f"OpenSearch took {delivery.done} of {len(batch)}: {sink.stats()}")
        delivered += len(batch)
    return {"records": delivered, "records_per_s": round(delivered / spent)}


def _sample(corpus: Corpus, n: int) -> Iterator[list[Record]]:
    left = n
    for batch in corpus.batches():
        yield batch[:left]
        left -= len(batch)
        if left <= 0:
            return


def _opensearch_baseline(corpus: Corpus, workdir: Path, store_ms: dict[str, Any]) -> dict[str, Any]:
    reason = opensearch.unavailable()
    if reason:
        return {"skipped": reason}
    node = opensearch.OpenSearch(workdir / "opensearch")
    try:
        try:
            node.start()
        except RuntimeError as e:
            return {"skipped": f"OpenSearch did not start: {e}"}
        sink = ElasticSink(
            ElasticSettings(url=node.url, index_prefix=INDEX_PATTERN[:-2], timeout_s=120.0),
            "bench",
            "corpus",
            str(workdir / "opensearch" / "dead-letter.ndjson"),
        )
        sink.check()
        # its rate on a sample decides how many records it can hold in the budget
        sample = load_opensearch(sink, _sample(corpus, min(OPENSEARCH_SAMPLE, corpus.total)))
        affordable = sample["records_per_s"] * OPENSEARCH_LOAD_BUDGET_S
        per_day = corpus.n_records * affordable // corpus.total
        per_day = max(OPENSEARCH_MIN_RECORDS, per_day // 100_000 * 100_000)
        same = Corpus(min(corpus.n_records, per_day), corpus.days, corpus.end_ns)
        node.wipe()
        sink.check()
        load = load_opensearch(sink, same.batches())
        node.refresh(INDEX_PATTERN)
        shapes = queries(same, random.Random(SEED))
        os_ms = time_queries(_OpenSearchSearcher(node.url), shapes)
        sink.close()
    finally:
        node.stop()
        shutil.rmtree(workdir / "opensearch", ignore_errors=True)
    if same.total == corpus.total:
        store_same = store_ms
    else:
        with _filled_store(workdir / "store-same", same) as (store, _):
            store_same = time_queries(store_searcher(store), queries(same, random.Random(SEED)))
    return {
        "engine": f"OpenSearch {opensearch.VERSION}, one node, {opensearch.JVM_OPTS[1]}",
        "records": same.total,
        "sample_load": sample,
        "load": load,
        "search_ms": os_ms,
        "store_search_ms_same_records": store_same,
        # the same records and queries: the hit counts must agree
        "same_hits": all(os_ms[s]["hits_mean"] == store_same[s]["hits_mean"] for s in SHAPES),
        "p95_ratio": {
            s: round(os_ms[s]["p95_ms"] / max(store_same[s]["p95_ms"], 0.01), 1) for s in SHAPES
        },
    }


@contextmanager
def _filled_store(path: Path, corpus: Corpus) -> Iterator[tuple[LogStore, dict[str, Any]]]:
    """A store holding the corpus (removed afterwards) and its load figures."""
    shutil.rmtree(path, ignore_errors=True)
    store = LogStore(path, max_age_s=(corpus.days + 2) * 86_400, max_bytes=1 << 50)
    try:
        yield store, load_store(store, corpus)
    finally:
        store.close()
        shutil.rmtree(path, ignore_errors=True)


def run(n_records: int, days: float, workdir: Path, opensearch_baseline: bool) -> dict[str, Any]:
    """Fills a store with n_records over the last 24 h (and as many over the
    days before), times the five query shapes, and with opensearch_baseline
    the same on OpenSearch; removes what it wrote under workdir."""
    if n_records < BATCH or days < 1:
        raise ValueError(f"need at least {BATCH} records and 1 day, not {n_records} and {days}")
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(n_records, days, time.time_ns())
    load_avg = os.getloadavg()
    with _filled_store(workdir / "store", corpus) as (store, load):
        stats = store.stats()
        store_ms = time_queries(store_searcher(store), queries(corpus, random.Random(SEED)))
    result: dict[str, Any] = {
        "records": corpus.total,
        "records_last_24h": n_records,
        "days": days,
        "store": {"load": load, "bytes": stats["bytes"], "day_indexes": stats["days"]},
        "search_ms": store_ms,
        "limit": LIMIT,
        "goal_p95_ms": GOAL_P95_MS,
        "meets_goal": all(store_ms[s]["p95_ms"] <= GOAL_P95_MS for s in SHAPES),
        "load_avg_before": [round(x, 2) for x in load_avg],
    }
    if opensearch_baseline:
        result["baseline"] = _opensearch_baseline(corpus, workdir, store_ms)
    return result
