"""Starting and stopping the node's components in order.

Each component has start() and stop(). They start in the order added (a
failure stops those already started, in reverse, and raises) and stop in
reverse order, each stop bounded in time and independent of the others: a
part that fails or hangs while stopping is logged and skipped, and every
later part still stops (the final checkpoint is saved, the job database
closed, the lock released).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from loguru import logger

DEFAULT_STOP_TIMEOUT_S = 10.0


@dataclass
class Component:
    name: str
    start: Callable[[], None] = lambda: None
    stop: Callable[[], None] = lambda: None
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S


@dataclass
class StopReport:
    stopped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    timed_out: list[str] = field(default_factory=list)


class Lifecycle:
    def __init__(self) -> None:
        self._components: list[Component] = []
        self._started: list[Component] = []

    def add(self, component: Component) -> None:
        self._components.append(component)

    def start(self) -> None:
        for c in self._components:
            try:
                c.start()
            except BaseException:
                logger.error("starting {} failed; stopping what had started", c.name)
                self.stop()
                raise
            self._started.append(c)

    def stop(self) -> StopReport:
        report = StopReport()
        while self._started:
            c = self._started.pop()
            error = _run_bounded(c.stop, c.stop_timeout_s)
            if error is None:
                report.stopped.append(c.name)
            elif error == "timeout":
                report.timed_out.append(c.name)
                logger.error("stopping {} took over {:.1f} s; going on", c.name, c.stop_timeout_s)
            else:
                report.failed[c.name] = error
                logger.error("stopping {} failed: {}; going on", c.name, error)
        return report


def _run_bounded(fn: Callable[[], None], timeout_s: float) -> str | None:
    """None if fn returned in time, "timeout", or the error it raised."""
    outcome: list[str | None] = []

    def run() -> None:
        try:
            fn()
            outcome.append(None)
        except Exception as e:  # noqa: BLE001 - reported, never propagated
            logger.opt(exception=e).debug("stop step raised")
            outcome.append(f"{type(e).__name__}: {e}")

    t = threading.Thread(target=run, name="stop-step", daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        return "timeout"
    return outcome[0] if outcome else "no result"
