"""ECS documents from RT ring records (real segment, real ring, real drain)
and from the agent's loguru records."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from loguru import logger

from control.logs.ecs import (
    LOOP_ACTIONS,
    AgentLogEncoder,
    Identity,
    RtLogEncoder,
    Timestamps,
)
from rtcore import _core, _rt, layout
from rtcore.records import Drainer
from rtcore.segment import Segment

IDENT = Identity("node-a", "host-1")
MISS = next(i for i, t in enumerate(_rt.LOOP_TEMPLATES) if t.startswith("deadline miss"))
# a task's templates follow the loop's in the table
TASK = len(_rt.LOOP_TEMPLATES)
STRINGS = [t.encode() for t in _rt.LOOP_TEMPLATES] + [b"step {n} of {total}"]


@pytest.fixture
def segment(shm_name: str):
    seg = Segment.create(shm_name)
    yield seg
    seg.close()
    seg.unlink()


def write_strings(seg: Segment, texts: list[bytes]) -> None:
    view = np.ndarray(shape=(), dtype=layout.SEGMENT, buffer=seg.buf)
    table = view["strings"]
    for i, raw in enumerate(texts):
        table["text"][i] = raw
    table["count"] = len(texts)


def log_record(tpl: int, level: int, args: list[int | float], nargs: int | None = None) -> bytes:
    rec = np.zeros((), dtype=layout.LOG_REC)
    rec["ts_ns"] = _core.monotonic_ns()
    rec["cycle"] = 42
    rec["template_id"] = tpl
    rec["level"] = level
    rec["nargs"] = len(args) if nargs is None else nargs
    rec["tid"] = 777
    mask = 0
    for i, a in enumerate(args):
        if isinstance(a, float):
            rec["args"][i] = np.float64(a).view(np.int64)
            mask |= 1 << i
        else:
            rec["args"][i] = a
    rec["float_mask"] = mask
    rec["trace_id"] = list(range(1, 17))
    rec["span_id"] = list(range(1, 9))
    return rec.tobytes()


def test_every_loop_template_has_an_event_action() -> None:
    """The table is by template id: a template added to the loop without an
    action here would shift every action after it."""
    assert len(LOOP_ACTIONS) == len(_rt.LOOP_TEMPLATES)
    by_action = dict(zip(_rt.LOOP_TEMPLATES, LOOP_ACTIONS, strict=True))
    assert by_action[next(t for t in by_action if t.startswith("deadline miss"))] == "deadline_miss"
    assert all(by_action[t] == "state_changed" for t in by_action if t.startswith("state changed"))
    lease = next(t for t in by_action if "lease expired" in t)
    assert by_action[lease] == "lease_lost"


def test_rt_records_become_ecs_documents_with_their_fields(segment: Segment) -> None:
    write_strings(segment, STRINGS)
    writer = _core.RingWriter(segment.buf, "log")
    assert writer.push(log_record(MISS, layout.LEVELS["ERROR"], [512.25, 3.5, 1000.0, 0]))
    assert writer.push(log_record(TASK, layout.LEVELS["DEBUG"], [3, 10]))
    drainer = Drainer(segment.buf)
    enc = RtLogEncoder(IDENT, lambda: 4321)
    entries = enc.encode(drainer.drain_batch("log"), drainer.decoder)
    assert [level for _, level, _ in entries] == [40, 10]
    miss, step = (orjson.loads(doc) for _, _, doc in entries)
    assert miss["message"] == (
        "deadline miss: woke 512.2 us late, ran 3.5 us (period 1000 us), 0 periods skipped"
    )
    assert miss["log"] == {"level": "ERROR", "logger": "rt.loop"}
    assert miss["event"] == {"dataset": "rtcore.rt", "action": "deadline_miss"}
    assert miss["process"] == {"pid": 4321, "name": "rtcore-rt", "thread": {"id": 777}}
    assert miss["rtcore"]["fields"] == {
        "late_us": 512.25,
        "exec_us": 3.5,
        "period_us": 1000.0,
        "skipped": 0,
    }
    assert miss["rtcore"]["cycle"] == 42
    assert miss["trace"]["id"] == bytes(range(1, 17)).hex()
    assert miss["span"]["id"] == bytes(range(1, 9)).hex()
    assert miss["service"] == {"name": "rtcore", "node": {"name": "node-a"}}
    assert miss["host"] == {"name": "host-1"} and miss["ecs"]["version"]
    # the document's time is the record's own, converted to wall clock
    assert miss["rtcore"]["time_ns"] == entries[0][0]
    assert miss["@timestamp"] == Timestamps()(entries[0][0]).decode()
    assert step["rtcore"]["fields"] == {"n": 3, "total": 10}
    assert "action" not in step["event"] and step["log"]["logger"] == "rt.task"
    assert enc.malformed == {}


def test_malformed_ring_input_is_counted_and_never_stops_the_batch(segment: Segment) -> None:
    """An unknown template, a record claiming more arguments than it holds,
    an unknown level and a template that is not UTF-8: each is encoded,
    marked and counted, and the good record after them comes through."""
    write_strings(segment, [*STRINGS, b"bad \xff\xfe text {x}"])
    writer = _core.RingWriter(segment.buf, "log")
    for rec in (
        log_record(TASK + 9, layout.LEVELS["INFO"], [1]),  # no such template
        log_record(TASK, layout.LEVELS["INFO"], [1, 2], nargs=200),  # truncated
        log_record(TASK, 7, [1, 2]),  # level 7
        log_record(TASK + 1, layout.LEVELS["WARN"], [5]),  # not UTF-8
        log_record(TASK, layout.LEVELS["INFO"], [4, 5]),  # fine
    ):
        assert writer.push(rec)
    drainer = Drainer(segment.buf)
    enc = RtLogEncoder(IDENT, lambda: 1)
    entries = enc.encode(drainer.drain_batch("log"), drainer.decoder)
    docs = [orjson.loads(doc) for _, _, doc in entries]
    assert [d["rtcore"].get("malformed") for d in docs] == [
        "unknown_template",
        "truncated",
        "bad_level",
        "bad_text",
        None,
    ]
    assert enc.malformed == {"unknown_template": 1, "truncated": 1, "bad_level": 1, "bad_text": 1}
    assert docs[4]["message"] == "step 4 of 5"
    assert docs[1]["rtcore"]["fields"] == {"n": 1, "total": 2}  # cut to what it holds
    assert entries[2][1] == layout.LEVELS["WARN"]  # an unknown level is kept, as WARN


def test_agent_records_carry_action_fields_trace_and_error() -> None:
    enc = AgentLogEncoder(IDENT, 99)
    got: list[tuple[int, int, bytes]] = []
    sink = logger.add(lambda m: got.append(enc.encode(m.record)), level="DEBUG")
    try:
        logger.bind(
            event_action="rt_crashed",
            fields={"pid": 5, "signal": 9},
            trace_id="ab" * 16,
            span_id="cd" * 8,
        ).critical("RT process 5 killed by signal 9")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("job runner failed")
    finally:
        logger.remove(sink)
    (ts, level, raw), (_, level2, raw2) = got
    doc = orjson.loads(raw)
    assert level == 50 and doc["log"]["level"] == "CRITICAL"
    assert doc["event"] == {"dataset": "rtcore.agent", "action": "rt_crashed"}
    assert doc["rtcore"]["fields"] == {"pid": 5, "signal": 9}
    assert doc["trace"] == {"id": "ab" * 16} and doc["span"] == {"id": "cd" * 8}
    assert doc["process"]["name"] == "rtctl-agent" and doc["process"]["thread"]["id"] > 0
    assert doc["rtcore"]["time_ns"] == ts
    err = orjson.loads(raw2)
    assert level2 == 40 and err["error"] == {"type": "ValueError", "message": "boom"}


def test_timestamps_keep_nanoseconds() -> None:
    stamp = Timestamps()
    assert stamp(1_796_173_323_123_456_789) == b"2026-12-02T01:02:03.123456789Z"
    assert stamp(1_796_173_324_000_000_001) == b"2026-12-02T01:02:04.000000001Z"
