"""`rtctl diagnose`: what an operator looks at first, on one screen.

Built from the node's status document, its alerts and (when the trace store
gives them) the slowest spans. Each item says how bad (severity), what, the
figures behind it (detail), and the rtctl command that shows more. Pure: the
time is a parameter, so the same inputs give the same screen.
"""

from __future__ import annotations

import time
from typing import Any

SEVERITIES = ("CRITICAL", "ERROR", "WARN", "INFO")
# loop states that drive nothing, beyond the supervisor's own (stopped, backoff, ...)
FAILED_STATES = ("fault", "failed", "hung")
RUNNING_STATES = ("init", "run", "hold", "safe")
STALE_CHECKPOINT_MS = 10_000.0
MIN_LOCAL_PAGES_PCT = 95.0
SLOWEST_SHOWN = 3

Item = dict[str, str]


def diagnose(
    status: dict[str, Any],
    alerts: list[dict[str, Any]],
    since_ns: int,
    slow_spans: list[dict[str, Any]] | None = None,
    *,
    now_ns: int | None = None,
) -> dict[str, Any]:
    """{"node_id", "role", "since_ns", "now_ns", "summary", "counts", "items"}:
    items worst first, each {severity, what, detail, more}. Counters in the
    status (misses, restarts, drops) are since the RT or the agent started;
    alerts and slow spans are those of the window from `since_ns`."""
    now = time.time_ns() if now_ns is None else now_ns
    since = _ago(now - since_ns)
    rt = status.get("rt") or {}
    items = [
        *_role(status),
        *_rt_state(rt),
        *_misses(rt, since),
        *_restarts(rt),
        *_ring_drops(rt),
        *_agent_drops(status.get("drainer") or {}),
        *_logs(status.get("logs") or {}),
        *_placement(rt, status.get("placement") or {}),
        *_checkpoint(rt, status.get("checkpoint") or {}),
        *_lease(status.get("agent") or {}),
        *_alerts(alerts, since_ns, now),
        *_slowest(slow_spans or [], since_ns),
    ]
    items.sort(key=lambda i: SEVERITIES.index(i["severity"]))
    counts = {s: sum(1 for i in items if i["severity"] == s) for s in SEVERITIES}
    return {
        "node_id": status.get("node_id"),
        "role": status.get("role"),
        "since_ns": since_ns,
        "now_ns": now,
        "summary": _summary(status, rt, items, counts, since),
        "counts": counts,
        "items": items,
    }


def _item(severity: str, what: str, detail: str, more: str) -> Item:
    return {"severity": severity, "what": what, "detail": detail, "more": more}


def _ago(ns: int) -> str:
    """A duration as `--since` takes it: 15m, 2h, 90s."""
    s = max(1, round(ns / 1e9))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def _n(count: int, word: str, plural: str = "") -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def _role(status: dict[str, Any]) -> list[Item]:
    out = []
    cluster = status.get("cluster") or {}
    if cluster.get("has_quorum") is False:
        out.append(
            _item(
                "CRITICAL",
                "the cluster has no quorum",
                f"leader {cluster.get('leader') or 'none'}, term {cluster.get('term')}: "
                "no node can become primary until a majority is back",
                "rtctl cluster status",
            )
        )
    role = status.get("role")
    if role == "fenced":
        out.append(
            _item(
                "WARN",
                "this node is fenced: its RT loop drives no outputs",
                f"RT state {(status.get('rt') or {}).get('state')}; the actuation journal "
                "shows when it last drove them",
                "rtctl rt journal",
            )
        )
    elif role == "candidate":
        out.append(
            _item(
                "WARN",
                "an election is under way: no primary yet",
                f"term {cluster.get('term')}",
                "rtctl cluster status",
            )
        )
    return out


def _rt_state(rt: dict[str, Any]) -> list[Item]:
    state = rt.get("state")
    sup = rt.get("supervisor") or {}
    labels = (("last_exit", "last exit:"), ("last_error", "error:"))
    why = "; ".join(f"{label} {sup[key]}" for key, label in labels if sup.get(key))
    if state in FAILED_STATES:
        return [
            _item("CRITICAL", f"the RT loop is {state}", why or "no exit recorded", "rtctl status")
        ]
    if state == "safe":
        return [
            _item("WARN", "the RT loop is in safe mode", why or "outputs held safe", "rtctl status")
        ]
    if state is not None and state not in RUNNING_STATES:
        detail = why or "no RT process runs"
        if sup.get("backoff_ms"):
            detail += f"; next start in {sup['backoff_ms']} ms"
        return [_item("WARN", f"the RT loop is not running ({state})", detail, "rtctl status")]
    return []


def _misses(rt: dict[str, Any], since: str) -> list[Item]:
    misses, cycles = int(rt.get("misses") or 0), int(rt.get("cycles") or 0)
    if not misses:
        return []
    rate = f" ({100.0 * misses / cycles:.3g}%)" if cycles else ""
    exe, lat = rt.get("exec_us") or {}, rt.get("latency_us") or {}
    return [
        _item(
            "ERROR",
            _n(misses, "deadline miss", "deadline misses"),
            f"{misses} of {cycles} cycles{rate} since the RT process started; period "
            f"{rt.get('period_us')} us, execution p99 {exe.get('p99')} us max {exe.get('max')} us, "
            f"wake-up latency max {lat.get('max')} us",
            f"rtctl logs search --event deadline_miss --since {since}",
        )
    ]


def _restarts(rt: dict[str, Any]) -> list[Item]:
    sup = rt.get("supervisor") or {}
    out = []
    restarts, streak = int(rt.get("restarts") or 0), int(sup.get("crash_streak") or 0)
    if restarts or streak:
        parts = [f"last exit: {sup.get('last_exit') or 'unknown'}"]
        if streak:
            parts.append(f"{_n(streak, 'crash', 'crashes')} in a row")
        if sup.get("adopted"):
            parts.append("the running process was adopted by a restarted agent")
        out.append(
            _item(
                "ERROR" if streak else "WARN",
                f"the RT process restarted {_n(restarts, 'time')}",
                "; ".join(parts),
                "rtctl status",
            )
        )
    faults = int(sup.get("watcher_faults") or 0) + int(sup.get("callback_faults") or 0)
    if faults:
        out.append(
            _item(
                "WARN",
                f"the supervisor hit {_n(faults, 'fault')}",
                f"watcher {sup.get('watcher_faults') or 0}, callbacks "
                f"{sup.get('callback_faults') or 0}; the agent's log has each one",
                "rtctl status --json",
            )
        )
    return out


def _ring_drops(rt: dict[str, Any]) -> list[Item]:
    dropped = {r: int(n) for r, n in (rt.get("ring_dropped") or {}).items() if n}
    out = []
    if dropped.pop("journal", 0):
        out.append(
            _item(
                "CRITICAL",
                "the RT dropped actuation journal records",
                "the journal must never drop: the evidence of who drove the outputs has gaps",
                "rtctl rt journal",
            )
        )
    if dropped:
        listed = ", ".join(f"{ring} {n}" for ring, n in sorted(dropped.items()))
        out.append(
            _item(
                "WARN",
                f"the RT dropped {_n(sum(dropped.values()), 'record')} (ring full)",
                f"{listed}; the RT never waits, so the agent drained too slowly or the loop "
                "recorded too much (lower the span sampling or the log level)",
                "rtctl status --json",
            )
        )
    return out


def _agent_drops(drainer: dict[str, Any]) -> list[Item]:
    out = []
    for name, sub in sorted((drainer.get("subscribers") or {}).items()):
        dropped, faults = int(sub.get("dropped") or 0), int(sub.get("faults") or 0)
        if dropped or faults:
            out.append(
                _item(
                    "WARN",
                    f"the agent's {name} pipeline lost records",
                    f"{_n(dropped, 'batch', 'batches')} dropped (too slow to keep up), "
                    f"{_n(faults, 'batch', 'batches')} failed",
                    "rtctl status --json",
                )
            )
    if drainer.get("faults"):
        out.append(
            _item(
                "WARN",
                f"draining the RT rings failed {_n(int(drainer['faults']), 'time')}",
                "the agent's log has each failure",
                "rtctl status --json",
            )
        )
    return out


def _logs(logs: dict[str, Any]) -> list[Item]:
    """The log pipeline: a spool it could not open, records it dropped,
    malformed RT records, sinks that are behind and failing."""
    if logs.get("spool_error"):
        return [
            _item(
                "ERROR",
                "the log spool is unavailable: logs are not kept",
                logs["spool_error"],
                "rtctl status --json",
            )
        ]
    out = []
    spool = logs.get("spool") or {}
    dropped = {k: int(v) for k, v in (spool.get("dropped") or {}).items() if v}
    if dropped:
        bad = any(level not in ("DEBUG", "INFO") for level in dropped)
        out.append(
            _item(
                "ERROR" if bad else "WARN",
                f"the log spool dropped {_n(sum(dropped.values()), 'record')}",
                ", ".join(f"{k} {v}" for k, v in dropped.items())
                + (f"; {spool['last_error']}" if spool.get("last_error") else "")
                + " (full: DEBUG and INFO go first; a sink may be behind)",
                "rtctl status --json",
            )
        )
    malformed = logs.get("rt_malformed") or {}
    if malformed:
        out.append(
            _item(
                "WARN",
                f"the RT wrote {_n(sum(malformed.values()), 'malformed log record')}",
                ", ".join(f"{k} {v}" for k, v in sorted(malformed.items())),
                "rtctl logs search --json",
            )
        )
    cursors = spool.get("sinks") or {}
    for name, sink in sorted((logs.get("sinks") or {}).items()):
        error = sink.get("last_error") or sink.get("error")
        lag = int((cursors.get(name) or {}).get("lag_records") or 0)
        if error and lag:
            out.append(
                _item(
                    "WARN",
                    f"log sink {name} is {_n(lag, 'record')} behind",
                    f"{error} (the spool keeps them; retried)",
                    "rtctl status --json",
                )
            )
    return out


def _placement(rt: dict[str, Any], placement: dict[str, Any]) -> list[Item]:
    out = []
    if rt.get("degraded"):
        out.append(
            _item(
                "WARN",
                "the RT loop runs degraded",
                f"could not set up: {', '.join(rt['degraded'])}; latency is not guaranteed",
                "rtctl status --json",
            )
        )
    local = placement.get("numa_local_pages_pct")
    if (local is not None and local < MIN_LOCAL_PAGES_PCT) or placement.get(
        "numa_single_node"
    ) is False:
        out.append(
            _item(
                "WARN",
                "the RT memory is not all on its NUMA node",
                f"{'-' if local is None else local}% of its pages local, NUMA node "
                f"{placement.get('numa_node')}, CPUs {placement.get('cpus') or 'any'}",
                "rtctl rt isolation show",
            )
        )
    return out


def _checkpoint(rt: dict[str, Any], ckpt: dict[str, Any]) -> list[Item]:
    age = ckpt.get("age_ms")
    if rt.get("state") in RUNNING_STATES and age is not None and age > STALE_CHECKPOINT_MS:
        return [
            _item(
                "WARN",
                f"the newest checkpoint is {age / 1000:.0f} s old",
                f"seq {ckpt.get('seq')}: a restart now would lose the state since",
                "rtctl checkpoint info",
            )
        ]
    return []


def _lease(agent: dict[str, Any]) -> list[Item]:
    failures = int((agent.get("lease") or {}).get("failures") or 0)
    if not failures:
        return []
    return [
        _item(
            "WARN",
            f"renewing the RT's lease failed {_n(failures, 'time')}",
            "an RT whose lease runs out stops driving its outputs",
            "rtctl rt journal",
        )
    ]


def _alerts(alerts: list[dict[str, Any]], since_ns: int, now: int) -> list[Item]:
    out = []
    for a in alerts:
        subject, examples = a.get("subject"), a.get("example_trace_ids") or []
        more = f"rtctl trace get {examples[0]}" if examples else "rtctl alerts list"
        if a.get("active"):
            f, t = a.get("figures") or {}, a.get("threshold") or {}
            out.append(
                _item(
                    "CRITICAL",
                    f"{a.get('kind')} in {subject}",
                    f"mean {f.get('mean_ms')} ms (limit {t.get('mean_ms') or '-'}), p99 "
                    f"{f.get('p99_ms')} ms (limit {t.get('p99_ms') or '-'}) over "
                    f"{f.get('count')} spans; slowest traces: {', '.join(examples) or 'none'}",
                    more,
                )
            )
        elif (cleared_at := a.get("cleared_at") or 0) >= since_ns:
            out.append(
                _item(
                    "INFO",
                    f"{a.get('kind')} in {subject} cleared",
                    f"cleared {_ago(now - cleared_at)} ago; raised as: {a.get('message')}",
                    "rtctl alerts list --all",
                )
            )
    return out


def _slowest(spans: list[dict[str, Any]], since_ns: int) -> list[Item]:
    """Span dicts, or the trace store's summaries (start_time_ns, duration_ms,
    error, nodes) standing for their traces' root spans."""

    def ms(sp: dict[str, Any]) -> float:
        if isinstance(sp.get("end_time_ns"), int):
            return float(sp["end_time_ns"] - sp["start_time_ns"]) / 1e6
        return float(sp["duration_ms"])

    def where(sp: dict[str, Any]) -> str:
        nodes = sp.get("nodes") or [sp.get("node") or "this node"]
        status = sp.get("status") or ("error" if sp.get("error") else "ok")
        process = f"{sp['process']} on " if sp.get("process") else ""
        return f"trace {sp.get('trace_id')}, {process}{', '.join(nodes)}, status {status}"

    recent = [
        sp
        for sp in spans
        if isinstance(sp.get("start_time_ns"), int)
        and (
            isinstance(sp.get("end_time_ns"), int) or isinstance(sp.get("duration_ms"), int | float)
        )
        and sp["start_time_ns"] + ms(sp) * 1e6 >= since_ns
    ]
    recent.sort(key=ms, reverse=True)
    return [
        _item(
            "INFO",
            f"slow span {sp.get('name')}: {ms(sp):.3g} ms",
            where(sp),
            f"rtctl trace get {sp.get('trace_id')}",
        )
        for sp in recent[:SLOWEST_SHOWN]
    ]


def _summary(
    status: dict[str, Any],
    rt: dict[str, Any],
    items: list[Item],
    counts: dict[str, int],
    since: str,
) -> str:
    node = f"node {status.get('node_id')} ({status.get('role')})"
    words = {"CRITICAL": ("critical", "critical"), "ERROR": ("error", ""), "WARN": ("warning", "")}
    problems = [_n(counts[s], *words[s]) for s in words if counts[s]]
    if not problems:
        return (
            f"{node}: nothing needs attention (alerts and spans of the last {since}); "
            f"RT {rt.get('state')}, {rt.get('cycles') or 0} cycles"
        )
    return (
        f"{node}: {', '.join(problems)}; worst: {items[0]['what']} "
        f"(alerts and spans of the last {since})"
    )
