"""Sending commands to the RT: the one writer of the segment's command ring."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from control.rt.link import SegmentLink
from rtcore import _core, layout


def stamp_epoch(record: bytes, epoch: int) -> bytes:
    rec = np.frombuffer(bytearray(record), dtype=layout.CMD_REC)
    rec["epoch"] = epoch
    return rec.tobytes()


class CommandWriter:
    def __init__(self, link: SegmentLink, epoch: Callable[[], int]) -> None:
        self._link = link
        self._epoch = epoch
        self._lock = threading.Lock()  # the ring has one producer: this writer
        self._writer: _core.RingWriter | None = None
        self._gen = -1

    def send(self, records: list[bytes]) -> bool:
        """Push all of records or none (a job's commands only make sense
        together); False if the RT has no segment or the ring lacks room.
        Each is stamped with this node's epoch: an RT fenced into a newer
        epoch refuses what an older primary sent."""
        with self._lock:
            seg = self._link.get()
            if seg is None:
                return False
            if self._writer is None or self._gen != self._link.generation:
                self._writer = _core.RingWriter(seg.buf, "cmd")
                self._gen = self._link.generation
            head, tail = _core.ring_counters(seg.buf, "cmd")[:2]
            if layout.CMD_RING_CAP - (head - tail) < len(records):
                return False
            epoch = self._epoch()
            return all(self._writer.push(stamp_epoch(r, epoch)) for r in records)
