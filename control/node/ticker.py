"""A component that calls a function periodically on its own thread, so slow
work (fsyncs, page-table walks, database commits) never runs on the drainer's."""

from __future__ import annotations

import threading
from collections.abc import Callable

from loguru import logger


class Ticker:
    def __init__(self, name: str, interval_s: float, tick: Callable[[], None]) -> None:
        self.name = name
        self._interval = interval_s
        self._tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.faults = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - logged and counted; the next tick runs
                self.faults += 1
                logger.exception("{} failed", self.name)
