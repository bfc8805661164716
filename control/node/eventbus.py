"""Fan-out of events and alerts to whoever listens (watch streams, the job
runner, the log pipeline). Each subscriber has a bounded queue: a slow
subscriber loses its oldest events (counted), it never slows the publisher."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

Event = dict[str, Any]


class Subscription:
    def __init__(self, bus: EventBus, kinds: set[str] | None, capacity: int) -> None:
        self._bus = bus
        self._kinds = kinds
        self._queue: queue.Queue[Event | None] = queue.Queue(maxsize=capacity)
        self.dropped = 0
        self.closed = False

    def offer(self, event: Event) -> None:
        if self._kinds and event.get("kind") not in self._kinds:
            return
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def get(self, timeout: float | None = None) -> Event | None:
        """Next event, or None on timeout or once closed."""
        if self.closed:
            return None
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def __iter__(self) -> Iterator[Event]:
        while not self.closed:
            event = self.get(timeout=0.5)
            if event is not None:
                yield event

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._bus.unsubscribe(self)
            # wake a reader blocked in get(); a full queue wakes it anyway
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)


class EventBus:
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []

    def subscribe(self, kinds: list[str] | None = None, capacity: int = 1000) -> Subscription:
        sub = Subscription(self, set(kinds) if kinds else None, capacity)
        with self._lock:
            self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def publish(self, kind: str, level: str = "INFO", message: str = "", **fields: Any) -> Event:
        event: Event = {
            "kind": kind,
            "level": level,
            "message": message,
            "node_id": self.node_id,
            "ts_ns": fields.pop("ts_ns", None) or time.time_ns(),
            **fields,
        }
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.offer(event)
        return event
