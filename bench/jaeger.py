"""A real Jaeger v2 (built by `make jaeger`) on loopback, on free ports.

Used by `rtctl bench tracing` (export latency) and by the tracing tests.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.runner import terminate

JAEGER_BIN = Path(
    os.environ.get("RTCORE_JAEGER", "~/.cache/rtcore/jaeger-v1.76.0/jaeger")
).expanduser()

# All-in-one with memory storage, minus everything the tests do not use
# (its own metrics on :8888, sampling, the other receivers). The batch
# processor is left out so a span is queryable as soon as it is received;
# the query service's own tracing is off, or it would send its spans to
# localhost:4317 (and wait for that at shutdown).
CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  jaeger_query:
    storage:
      traces: memstore
    enable_tracing: false
    http:
      endpoint: 127.0.0.1:{query_http}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp_grpc}
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def unavailable() -> str | None:
    """Why no Jaeger can be run here, or None when the binary is there."""
    if os.access(JAEGER_BIN, os.X_OK):
        return None
    build = "run `make jaeger`" if shutil.which("go") else "`make jaeger` needs Go, not on PATH"
    return f"no Jaeger binary at {JAEGER_BIN} ({build})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Jaeger:
    """One Jaeger process at a time on fixed ports; start() after stop()
    brings up a new, empty one on the same ports."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ports = {k: free_port() for k in ("otlp_grpc", "query_http", "query_grpc")}
        self.otlp_endpoint = f"127.0.0.1:{self.ports['otlp_grpc']}"
        self.query_url = f"http://127.0.0.1:{self.ports['query_http']}"
        self.config = workdir / "jaeger.yaml"
        self.config.write_text(CONFIG.format(**self.ports))
        self.log = workdir / "jaeger.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(JAEGER_BIN), "--config", f"file:{self.config}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jaeger exited {self.proc.returncode}: {self.log_tail()}")
            if _listening(self.ports["otlp_grpc"]) and self._query_ok():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"jaeger not ready in {timeout_s}s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        terminate(proc)

    def log_tail(self, n: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def _query_ok(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.query_url}/api/services", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """The spans of a trace as OTLP JSON dicts (each with its resource
        attributes under "resource"), [] while Jaeger does not have it."""
        url = f"{self.query_url}/api/v3/traces/{trace_id}"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return []
            raise
        out = []
        for rs in body.get("result", {}).get("resourceSpans", []):
            resource = attrs(rs.get("resource", {}).get("attributes", []))
            for ss in rs.get("scopeSpans", []):
                for sp in ss.get("spans", []):
                    out.append({**sp, "resource": resource})
        return out

    def wait_trace(
        self, trace_id: str, count: int, timeout_s: float = 10.0
    ) -> list[dict[str, Any]]:
        """The trace once Jaeger has `count` spans of it (AssertionError after
        timeout_s)."""
        deadline = time.monotonic() + timeout_s
        spans = self.trace(trace_id)
        while len(spans) < count and time.monotonic() < deadline:
            time.sleep(0.1)
            spans = self.trace(trace_id)
        if len(spans) < count:
            raise AssertionError(f"Jaeger has {len(spans)} of {count} spans of {trace_id}")
        return spans


def attrs(kvs: list[dict[str, Any]]) -> dict[str, Any]:
    """OTLP JSON key/values as a plain dict (int64 values come as strings)."""
    out: dict[str, Any] = {}
    for kv in kvs:
        ((kind, value),) = kv["value"].items()
        out[kv["key"]] = int(value) if kind == "intValue" else value
    return out
