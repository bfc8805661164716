"""The node's one mapping of its RT segment, shared by everything that reads
or writes it (supervisor, drainer, lease, command writer).

If the segment file is removed (systemd's RemoveIPC, an operator) or made
anew by a restarted RT, the old mapping still works but leads nowhere new:
a replacement RT would never be seen beating, and leases and commands would
go to memory no RT reads. get() notices and maps the current file;
`generation` tells holders of ring readers and writers to rebuild them.
"""

from __future__ import annotations

import threading

from loguru import logger

from rtcore.segment import Segment, SegmentError


class SegmentLink:
    def __init__(self, name: str) -> None:
        self.name = name
        self._seg: Segment | None = None
        self._lock = threading.Lock()
        self.generation = 0
        self.remaps = 0

    def get(self) -> Segment | None:
        """The mapping of the segment file as it is now, or None if there is none."""
        with self._lock:
            if self._seg is not None and self._seg.replaced():
                logger.warning(
                    "shared-memory segment {} was removed or replaced: mapping it anew", self.name
                )
                # holders may still have views on the old mapping: it goes when they do
                self._seg.close()
                self._seg = None
                self.remaps += 1
            if self._seg is None:
                try:
                    self._seg = Segment.open(self.name)
                except SegmentError:
                    return None
                self.generation += 1
            return self._seg

    def current(self) -> Segment | None:
        """The mapping held now, without checking the file (cheap, for hot paths)."""
        return self._seg

    def close(self) -> None:
        with self._lock:
            if self._seg is not None:
                self._seg.close()
                self._seg = None
