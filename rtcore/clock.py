"""Wall-clock time for RT timestamps.

The RT loop stamps records with CLOCK_MONOTONIC (no steps, cheap, what its
deadlines use). The segment carries an anchor, a (monotonic, realtime) pair
read in a tight bracket; the control plane refreshes it so NTP steps and
slewing are followed, and converts with the anchor in force when it drains.
"""

from __future__ import annotations

from typing import Any

from rtcore import _core


class Clock:
    """Converts a segment's monotonic timestamps to wall-clock nanoseconds."""

    def __init__(self, buf: Any) -> None:
        self._buf = buf

    def refresh(self) -> None:
        """Take a new anchor now (the agent does this periodically)."""
        _core.anchor_clock(self._buf)

    def anchor(self) -> tuple[int, int, int]:
        """(mono_ns, real_ns, bracket_ns) in force."""
        return _core.read_clock(self._buf)

    def offset_ns(self) -> int:
        """realtime - monotonic, per the anchor."""
        mono, real, _ = _core.read_clock(self._buf)
        return real - mono

    def to_wall_ns(self, mono_ns: int) -> int:
        """An RT timestamp as nanoseconds since the Unix epoch."""
        return mono_ns + self.offset_ns()
