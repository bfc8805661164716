"""Elastic Common Schema documents from the RT's log records and the agent's
own (loguru) records: what the spool keeps and every sink receives.

A document is encoded once, here, as compact JSON; the spool stores those
bytes, the `_bulk` exporter sends them as they are and the embedded store
indexes a few of their fields.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from control.api import LEVEL_NUMBERS
from rtcore import _rt, layout, templates
from rtcore.records import Batch, Decoder, hex_ids

ECS_VERSION = "8.11.0"
LEVELS = LEVEL_NUMBERS
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}
# loguru's names for the same levels (and the ones it has beyond them)
LOGURU_TO_ECS = {
    "TRACE": "DEBUG",
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "SUCCESS": "INFO",
    "WARNING": "WARN",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL",
}
RT_PROCESS = "rtcore-rt"
AGENT_PROCESS = "rtctl-agent"
RT_PROCESS_B = RT_PROCESS.encode()

# event.action of the RT loop's own records, in the order of
# rtcore._rt.LOOP_TEMPLATES (tests/logs/test_ecs.py pins the pairing)
LOOP_ACTIONS = (
    "rt_started",
    "deadline_miss",
    "state_changed",
    "state_changed",
    "state_changed",
    "state_changed",
    "actuation_started",
    "lease_lost",
    "fenced",
    "fenced",
    "actuation_held",
    "task_fault",
    "command_failed",
    "command_stale",
    "checkpoint_restored",
    "checkpoint_adopted",
    "checkpoint_refused",
    "rt_stopping",
)

ARGS = layout.LOG_ARGS
ACTIONS = dict(zip(_rt.LOOP_TEMPLATES, LOOP_ACTIONS, strict=True))

# (time_ns, level, document): what the spool appends
Entry = tuple[int, int, bytes]


@dataclass(frozen=True)
class Identity:
    """Who writes: the same in every document of this node."""

    node_id: str
    host: str
    service: str = "rtcore"

    @classmethod
    def of(cls, node_id: str) -> Identity:
        return cls(node_id, socket.gethostname())


class Timestamps:
    """ISO 8601 with nanoseconds (ASCII bytes); the seconds part is formatted
    once a second."""

    def __init__(self) -> None:
        self._sec = -1
        self._prefix = b""

    def __call__(self, time_ns: int) -> bytes:
        sec, ns = divmod(time_ns, 1_000_000_000)
        if sec != self._sec:
            self._sec = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode()
        return b"%s.%09dZ" % (self._prefix, ns)


class Head(NamedTuple):
    """The constant parts of the documents of one RT template at one level."""

    level: int
    prefix: bytes  # log, ecs, service, host, event
    suffix: bytes  # template, then the key of the fields
    template: templates.Template | None
    plain: bool  # no format specs: the message is the plain text filled in


class RtLogEncoder:
    """The RT's log ring records as ECS documents. Malformed records (an
    unknown template, more arguments than a record holds, an unknown level,
    text that is not UTF-8) are still encoded, marked, and counted."""

    def __init__(self, ident: Identity, pid: Callable[[], int | None]) -> None:
        self._pid = pid
        self._stamp = Timestamps()
        self._node = orjson.dumps(ident.node_id)
        self._common = (
            b'"ecs":{"version":"%s"},"service":{"name":%s,"node":{"name":%s}},"host":{"name":%s},'
            % (
                ECS_VERSION.encode(),
                orjson.dumps(ident.service),
                self._node,
                orjson.dumps(ident.host),
            )
        )
        # per (template id, level): the document's constant parts; cleared
        # when the segment's string table is read again (another task)
        self._heads: dict[tuple[int, int], Head] = {}
        self._strings_gen = -1
        self.malformed: Counter[str] = Counter()

    def _head(self, decoder: Decoder, tpl: int, raw_level: int) -> Head:
        name = LEVEL_NAMES.get(raw_level, "WARN")  # an unknown level is kept, as WARN
        text = decoder.strings.text(tpl)
        action = ACTIONS.get(text)
        template = decoder.strings.template(tpl)
        prefix = b'"log":{"level":"%s","logger":"%s"},%s"event":{"dataset":"rtcore.rt"%s},' % (
            name.encode(),
            b"rt.loop" if action else b"rt.task",
            self._common,
            b',"action":"%s"' % action.encode() if action else b"",
        )
        suffix = b',"template":%s,"fields":' % orjson.dumps(text)
        plain = template is not None and not any(template.specs)
        head = Head(LEVELS[name], prefix, suffix, template, plain)
        self._heads[(tpl, raw_level)] = head
        return head

    def encode(self, batch: Batch, decoder: Decoder) -> list[Entry]:
        """(time_ns, level, document) of every record of a log batch, in order.

        The documents are put together from cached constant parts and a few
        small encodings: the drainer runs this for every RT record, at up to
        hundreds of thousands a second."""
        r = batch.recs
        if len(r) == 0:
            return []
        if decoder.strings.generation != self._strings_gen:
            self._heads.clear()
            self._strings_gen = decoder.strings.generation
        malformed = check_log_batch(batch, decoder)
        self.malformed.update(m for m in malformed if m)
        process = b',"process":{"pid":%d,"name":"%s","thread":{"id":' % (
            self._pid() or 0,
            RT_PROCESS.encode(),
        )
        rtcore = b'}},"rtcore":{"node":%s,"cycle":' % self._node
        stamp, dumps, heads = self._stamp, orjson.dumps, self._heads
        out: list[Entry] = []
        cols = zip(
            batch.wall_ns().tolist(),
            r["cycle"].tolist(),
            r["template_id"].tolist(),
            r["level"].tolist(),
            r["nargs"].tolist(),
            r["float_mask"].tolist(),
            r["tid"].tolist(),
            r["repeats"].tolist(),
            r["args"].tolist(),
            r["args"].view("<f8").tolist(),
            hex_ids(r["trace_id"]),
            hex_ids(r["span_id"]),
            malformed,
            strict=True,
        )
        for (
            ts,
            cycle,
            tpl,
            raw_level,
            n,
            mask,
            tid,
            repeats,
            ints,
            floats,
            trace,
            span,
            bad,
        ) in cols:
            head = heads.get((tpl, raw_level)) or self._head(decoder, tpl, raw_level)
            args = (
                ints[:n]
                if not mask
                else [floats[k] if mask >> k & 1 else ints[k] for k in range(min(n, ARGS))]
            )
            template = head.template
            if template is None:
                message, fields = decoder.strings.render(tpl, args)
            else:
                fields = dict(zip(template.fields, args, strict=False))
                message = (
                    template.plain.format_map(fields)
                    if head.plain and len(args) == len(template.fields)
                    else template.render(args)
                )
            tail = b""
            if repeats:
                tail += b',"repeats":%d' % repeats
            if bad:
                tail += b',"malformed":"%s"' % bad.encode()
            if trace:
                tail += b'},"trace":{"id":"%s"' % trace.encode()
                if span:
                    tail += b'},"span":{"id":"%s"' % span.encode()
            out.append(
                (
                    ts,
                    head.level,
                    b"".join(
                        (
                            b'{"@timestamp":"%s",' % stamp(ts),
                            head.prefix,
                            b'"message":',
                            dumps(message),
                            process,
                            b"%d" % tid,
                            rtcore,
                            b'%d,"time_ns":%d' % (cycle, ts),
                            head.suffix,
                            dumps(fields),
                            tail,
                            b"}}",
                        )
                    ),
                )
            )
        return out


def check_log_batch(batch: Batch, decoder: Decoder) -> list[str | None]:
    """Why each record is malformed (None when it is not)."""
    recs = batch.recs
    count = decoder.strings.count()
    out: list[str | None] = []
    for tpl, nargs, level in zip(
        recs["template_id"].tolist(), recs["nargs"].tolist(), recs["level"].tolist(), strict=True
    ):
        if tpl >= count:
            out.append("unknown_template")
        elif nargs > layout.LOG_ARGS:
            out.append("truncated")
        elif level not in LEVEL_NAMES:
            out.append("bad_level")
        elif decoder.strings.is_damaged(tpl):
            out.append("bad_text")
        else:
            out.append(None)
    return out


class AgentLogEncoder:
    """The agent's own records (loguru, and stdlib logging through it)."""

    def __init__(self, ident: Identity, pid: int) -> None:
        self._stamp = Timestamps()
        self._base = {
            "ecs": {"version": ECS_VERSION},
            "service": {"name": ident.service, "node": {"name": ident.node_id}},
            "host": {"name": ident.host},
        }
        self._node = ident.node_id
        self._pid = pid

    def encode(self, record: dict[str, Any]) -> Entry:
        """A loguru record (message.record) as (time_ns, level, document)."""
        extra = record["extra"]
        ts = int(record["time"].timestamp() * 1e9)
        level_name = LOGURU_TO_ECS.get(record["level"].name, "INFO")
        doc: dict[str, Any] = {
            "@timestamp": self._stamp(ts).decode(),
            "log": {"level": level_name, "logger": record["name"] or "agent"},
            "message": record["message"],
            **self._base,
            "process": {
                "pid": record["process"].id,
                "name": AGENT_PROCESS,
                # the OS thread id, as the RT's records carry: loguru calls this
                # sink on the thread that logged (the record has Python's ident)
                "thread": {"id": threading.get_native_id(), "name": record["thread"].name},
            },
            "event": {"dataset": "rtcore.agent"},
            "rtcore": {"node": self._node, "time_ns": ts},
        }
        if action := extra.get("event_action"):
            doc["event"]["action"] = action
        if fields := extra.get("fields"):
            doc["rtcore"]["fields"] = fields
        if trace_id := extra.get("trace_id"):
            doc["trace"] = {"id": trace_id}
            if span_id := extra.get("span_id"):
                doc["span"] = {"id": span_id}
        if record["exception"] is not None:
            exc = record["exception"]
            doc["error"] = {"type": getattr(exc.type, "__name__", str(exc.type))}
            doc["error"]["message"] = str(exc.value)
        return ts, LEVELS[level_name], orjson.dumps(doc, default=str)
