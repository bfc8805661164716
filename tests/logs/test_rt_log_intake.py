"""The drainer's hand-off of the RT's log records to the log pipeline
(Agent._on_rt_logs): while the spool keeps only WARN and worse, DEBUG and
INFO records are counted as dropped before they are encoded, never after,
and WARN and worse (and levels the loop does not know) still go through."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from control.node.agent import Agent
from rtcore.records import Batch

DEBUG, INFO, WARN, ERROR, CRITICAL = 10, 20, 30, 40, 50


class Pipeline:
    def __init__(self, keeps: bool) -> None:
        self.keeps = keeps
        self.dropped: list[int] = []
        self.appended: list[Any] = []

    def keeps_below_warn(self) -> bool:
        return self.keeps

    def drop(self, levels: list[int]) -> None:
        self.dropped += levels

    def append(self, entries: list[Any]) -> None:
        self.appended += entries


class Encoder:
    """Records the levels of what it was asked to encode."""

    def __init__(self) -> None:
        self.encoded: list[int] = []

    def encode(self, batch: Batch, decoder: Any) -> list[int]:
        levels = batch.recs["level"].tolist()
        self.encoded += levels
        return levels


def hand_off(keeps: bool, levels: list[int]) -> tuple[Pipeline, Encoder]:
    agent = SimpleNamespace(logs=Pipeline(keeps), _rt_logs=Encoder())
    recs = np.array([(lv,) for lv in levels], dtype=[("level", "u1")])
    Agent._on_rt_logs(agent, Batch("log", recs, 0), None)  # type: ignore[arg-type]
    return agent.logs, agent._rt_logs


LEVELS = [DEBUG, INFO, WARN, INFO, ERROR, DEBUG, CRITICAL, 77]


def test_a_spool_with_room_gets_every_record_encoded() -> None:
    pipeline, encoder = hand_off(True, LEVELS)
    assert encoder.encoded == LEVELS and pipeline.appended == LEVELS
    assert pipeline.dropped == []


def test_a_spool_keeping_only_warnings_costs_debug_and_info_no_encoding() -> None:
    pipeline, encoder = hand_off(False, LEVELS)
    assert encoder.encoded == [WARN, ERROR, CRITICAL, 77]  # 77: kept, encoded as malformed
    assert pipeline.appended == [WARN, ERROR, CRITICAL, 77]
    assert sorted(pipeline.dropped) == [DEBUG, DEBUG, INFO, INFO]
