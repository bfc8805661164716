"""ECS documents from RT ring records (real segment, real ring, real drain)
and from the agent's loguru records."""

from __future__ import annotations

import threading
import time

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


def log_record(
    tpl: int,
    level: int,
    args: list[int | float],
    nargs: int | None = None,
    span: bool = True,
    float_mask: int | None = None,
) -> bytes:
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
    rec["float_mask"] = mask if float_mask is None else float_mask
    rec["trace_id"] = list(range(1, 17))
    rec["span_id"] = list(range(1, 9)) if span else [0] * 8
    return rec.tobytes()


# what each loop template says -> its event.action: written from the texts,
# so a template added, removed or moved in the loop shows up here
EXPECTED_ACTIONS = (
    ("RT loop started", "rt_started"),
    ("deadline miss", "deadline_miss"),
    ("state changed to RUN", "state_changed"),
    ("state changed to HOLD", "state_changed"),
    ("state changed to SAFE", "state_changed"),
    ("state changed to FAULT", "state_changed"),
    ("actuation started", "actuation_started"),
    ("actuation stopped: control-plane lease expired", "lease_lost"),
    ("actuation stopped: node is standby", "fenced"),
    ("actuation stopped: epoch changed", "fenced"),
    ("actuation held: the actuation journal", "actuation_held"),
    ("task step failed", "task_fault"),
    ("command {seq} of kind", "command_failed"),
    ("command {seq} refused", "command_stale"),
    ("restored checkpoint", "checkpoint_restored"),
    ("adopted replicated checkpoint", "checkpoint_adopted"),
    ("replicated checkpoint refused", "checkpoint_refused"),
    ("RT loop stopping", "rt_stopping"),
)


def test_every_loop_template_has_its_event_action() -> None:
    assert len(LOOP_ACTIONS) == len(_rt.LOOP_TEMPLATES) == len(EXPECTED_ACTIONS)
    for text, action, (start, expected) in zip(
        _rt.LOOP_TEMPLATES, LOOP_ACTIONS, EXPECTED_ACTIONS, strict=True
    ):
        assert text.startswith(start) and action == expected, (text, action)


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
    assert abs(entries[0][0] - time.time_ns()) < 10**9
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
        log_record(TASK, layout.LEVELS["INFO"], [1, 2], nargs=255, float_mask=0xFF),  # truncated
        log_record(TASK, layout.LEVELS["INFO"], [4, 5], span=False),  # fine, a trace, no span
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
        "truncated",
        None,
    ]
    assert enc.malformed == {"unknown_template": 1, "truncated": 2, "bad_level": 1, "bad_text": 1}
    assert docs[5]["message"] == "step 4 of 5"
    assert docs[5]["trace"] == {"id": bytes(range(1, 17)).hex()} and "span" not in docs[5]
    assert docs[1]["rtcore"]["fields"] == {"n": 1, "total": 2}  # cut to what it holds
    assert entries[2][1] == layout.LEVELS["WARN"]  # an unknown level is kept, as WARN


def test_agent_records_carry_action_fields_trace_and_error() -> None:
    enc = AgentLogEncoder(IDENT, 99)
    got: list[tuple[int, int, bytes]] = []
    tids: list[int] = []
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
        other = threading.Thread(
            target=lambda: (
                tids.append(threading.get_native_id()),
                logger.info("from another thread"),
            )
        )
        other.start()
        other.join()
    finally:
        logger.remove(sink)
    (ts, level, raw), (_, level2, raw2), (_, _, raw3) = got
    doc = orjson.loads(raw)
    assert level == 50 and doc["log"]["level"] == "CRITICAL"
    assert doc["event"] == {"dataset": "rtcore.agent", "action": "rt_crashed"}
    assert doc["rtcore"]["fields"] == {"pid": 5, "signal": 9}
    assert doc["trace"] == {"id": "ab" * 16} and doc["span"] == {"id": "cd" * 8}
    assert doc["process"]["name"] == "rtctl-agent" and doc["process"]["thread"]["id"] > 0
    assert doc["rtcore"]["time_ns"] == ts
    # the OS thread id of the thread that logged, as the RT's records carry
    assert doc["process"]["thread"]["id"] == threading.get_native_id()
    assert orjson.loads(raw3)["process"]["thread"]["id"] == tids[0] != threading.get_native_id()
    err = orjson.loads(raw2)
    assert level2 == 40 and err["error"] == {"type": "ValueError", "message": "boom"}


def test_timestamps_keep_nanoseconds() -> None:
    stamp = Timestamps()
    assert stamp(1_796_173_323_123_456_789) == b"2026-12-02T01:02:03.123456789Z"
    assert stamp(1_796_173_324_000_000_001) == b"2026-12-02T01:02:04.000000001Z"
