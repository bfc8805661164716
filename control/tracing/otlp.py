"""Export span dicts over OTLP/gRPC (Jaeger, an OpenTelemetry collector).

`export()` only appends to a bounded queue; one worker thread turns queued
dicts into SDK spans and sends them in batches. A backend that is down costs
the caller nothing: what does not fit in the queue, and what a failed send
carried, is counted as dropped, and sending resumes by itself once the
backend answers again (the SDK exporter reconnects on UNAVAILABLE).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

import grpc
from opentelemetry.exporter.otlp.proto.grpc import exporter as otlp_grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from control.tracing.otel_spans import node_resource, to_readable_span

MAX_BATCH = 512  # spans per Export call (the SDK's default batch size)


def _check(endpoint: str, insecure: bool, ca_file: str) -> bytes | None:
    """The CA certificates to trust (None: the system's); raises ValueError."""
    host, _, port = endpoint.rpartition(":")
    problem = ""
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        problem = f"OTLP endpoint {endpoint!r} is not HOST:PORT (e.g. 127.0.0.1:4317)"
    elif not insecure and ca_file:
        try:
            with open(ca_file, "rb") as f:
                return f.read()
        except OSError as e:
            problem = f"cannot read the OTLP CA file {ca_file!r}: {e.strerror}"
    if problem:
        raise ValueError(problem)
    return None


class _CaptureErrors(logging.Filter):
    """Keeps the SDK exporter's messages from our worker as `last_error`
    instead of printing them: with the backend down it would log every batch,
    and stats() already says what went wrong."""

    def __init__(self, owner: OtlpExport) -> None:
        super().__init__()
        self._owner = owner

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self._owner._thread.ident:
            return True
        if record.levelno >= logging.WARNING:
            self._owner._last_error = record.getMessage().splitlines()[0]
        return False


RECONNECT_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
)


class OtlpExport:
    """Sends span dicts to one OTLP/gRPC endpoint from a worker thread."""

    def __init__(
        self,
        endpoint: str,
        node_id: str,
        insecure: bool = True,
        ca_file: str = "",
        schedule_delay_ms: int = 200,
        max_queue: int = 8192,
        timeout_s: float = 2.0,
    ) -> None:
        ca = _check(endpoint, insecure, ca_file)
        self.endpoint = endpoint
        self._exporter = OTLPSpanExporter(
            endpoint=endpoint,
            insecure=insecure,
            credentials=None if insecure else grpc.ssl_channel_credentials(root_certificates=ca),
            timeout=timeout_s,
            # gRPC's reconnect back-off grows to minutes over a long outage;
            # a backend that returns is used again within about a second
            channel_options=RECONNECT_OPTIONS,  # type: ignore[arg-type]
        )
        self._resource = node_resource(node_id)
        self._delay_s = schedule_delay_ms / 1000.0
        self._timeout_s = timeout_s
        self._max_queue = max_queue
        self._queue: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._exported = 0
        self._dropped = 0
        self._last_error = ""
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._log_filter = _CaptureErrors(self)
        logging.getLogger(otlp_grpc.__name__).addFilter(self._log_filter)
        self._thread.start()

    def export(self, spans: list[dict[str, Any]]) -> None:
        """Queue spans for sending; never waits. What does not fit is dropped."""
        with self._lock:
            room = 0 if self._closing else self._max_queue - len(self._queue)
            self._queue.extend(spans[:room])
            self._dropped += max(0, len(spans) - room)
            full_batch = len(self._queue) >= MAX_BATCH
        if full_batch:
            self._wake.set()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "endpoint": self.endpoint,
                "exported": self._exported,
                "dropped": self._dropped,
                "queued": len(self._queue),
                "last_error": self._last_error,
            }

    def close(self) -> None:
        """Send what is queued, waiting at most about twice `timeout_s`;
        what is still unsent then is counted as dropped."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._wake.set()
        self._thread.join(self._timeout_s + self._delay_s)
        # makes a send still retrying give up, and every later one fail at once
        self._exporter.shutdown()
        self._thread.join(self._timeout_s)
        with self._lock:
            self._dropped += len(self._queue)
            self._queue.clear()
        logging.getLogger(otlp_grpc.__name__).removeFilter(self._log_filter)

    def _take(self) -> list[dict[str, Any]]:
        with self._lock:
            n = min(MAX_BATCH, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _run(self) -> None:
        while True:
            self._wake.wait(self._delay_s)
            self._wake.clear()
            closing = self._closing
            while batch := self._take():
                self._send(batch)
            if closing:
                return

    def _send(self, batch: list[dict[str, Any]]) -> None:
        spans: list[ReadableSpan] = []
        bad = 0
        for sp in batch:
            try:
                spans.append(to_readable_span(sp, self._resource))
            except (KeyError, ValueError, TypeError) as e:
                bad += 1
                self._last_error = f"malformed span dict {sp.get('name')!r}: {e!r}"
        try:
            ok = not spans or self._exporter.export(spans) is SpanExportResult.SUCCESS
        except Exception as e:  # a bug in the SDK must not end the worker
            ok = False
            self._last_error = f"OTLP export to {self.endpoint} raised {e!r}"
        with self._lock:
            self._exported += len(spans) if ok else 0
            self._dropped += bad + (0 if ok else len(spans))
