"""A real single-node OpenSearch 2.19 (built by `make opensearch`) on loopback.

Used by the Elasticsearch-export tests and by `rtctl bench logging` (the
same-run search baseline). The launcher is bench/peers/opensearch: plain HTTP,
no security plugin, one node, disk watermarks off.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from bench.jaeger import free_port
from bench.runner import terminate

VERSION = "2.19.6"
OPENSEARCH_HOME = Path(
    os.environ.get("RTCORE_OPENSEARCH", f"~/.cache/rtcore/opensearch-{VERSION}")
).expanduser()
# written last by `make opensearch`: a half-copied lib/ never counts as built
MARKER = OPENSEARCH_HOME / "complete"
MAIN_CLASS = "rtcore.peers.OpenSearchPeer"
# A distribution's defaults, minus the heap: several of these may share a
# 2-CPU test machine with the RT loop.
JVM_OPTS = [
    "-Xms512m",
    "-Xmx512m",
    "-Dfile.encoding=UTF-8",
    "-Djava.locale.providers=SPI,COMPAT",
    "-Dlog4j2.disable.jmx=true",
]


def unavailable() -> str | None:
    """Why no OpenSearch can be run here, or None when it can."""
    if shutil.which("java") is None:
        return "no `java` on PATH (OpenSearch needs Java 17)"
    if not MARKER.exists():
        return f"no OpenSearch build at {OPENSEARCH_HOME} (run `make opensearch`)"
    return None


class OpenSearch:
    """One node at a time on a fixed HTTP port with its data under workdir:
    start() after stop() or kill() brings the same node back with its data."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.home = workdir / "opensearch"
        self.port = free_port()
        self.transport_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "opensearch.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the node and wait until every primary shard is assigned
        (cluster health yellow), so existing documents are searchable."""
        if self.running():
            raise RuntimeError("OpenSearch is already running")
        self.home.mkdir(parents=True, exist_ok=True)
        cmd = [
            "java",
            *JVM_OPTS,
            "-cp",
            str(OPENSEARCH_HOME / "lib" / "*"),
            MAIN_CLASS,
            str(self.home),
            str(self.port),
            str(self.transport_port),
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"OpenSearch exited {code}: {self.log_tail()}")
            if self._healthy():
                return
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"OpenSearch not ready in {timeout_s}s: {self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM (the node flushes and closes), SIGKILL if it hangs."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        terminate(proc, grace_s=30)

    def kill(self) -> None:
        """SIGKILL: a crash; what was acknowledged survives in the translog."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        proc.kill()
        proc.wait(timeout=10)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""

    def _healthy(self) -> bool:
        try:
            status, _ = self.request(
                "GET", "/_cluster/health?wait_for_status=yellow&timeout=1s", timeout_s=3
            )
        except OSError:
            return False
        return status == 200

    def request(
        self, method: str, path: str, body: Any = None, *, timeout_s: float = 30.0
    ) -> tuple[int, Any]:
        """One HTTP call: (status, decoded JSON or None). A dict/list body is
        sent as JSON, bytes as NDJSON (for _bulk, each line ending in \\n).
        HTTP errors come back as their status; OSError when unreachable."""
        data: bytes | None = None
        headers = {}
        if isinstance(body, bytes):
            data, headers["Content-Type"] = body, "application/x-ndjson"
        elif body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        return status, json.loads(raw) if raw else None

    def _ok(self, method: str, path: str, body: Any = None) -> Any:
        status, out = self.request(method, path, body)
        if not 200 <= status < 300:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {out}")
        return out

    def wipe(self) -> None:
        """Delete every index and index template: the next user starts empty."""
        self._ok("DELETE", "/*?expand_wildcards=open,closed")
        for kind in ("_index_template", "_template"):
            status, out = self.request("DELETE", f"/{kind}/*")
            if status not in (200, 404):
                raise RuntimeError(f"DELETE /{kind}/*: HTTP {status}: {out}")

    def refresh(self, index_pattern: str) -> None:
        """Make everything indexed so far searchable."""
        self._ok("POST", f"/{index_pattern}/_refresh?ignore_unavailable=true")

    def count(self, index_pattern: str, query: dict[str, Any] | None = None) -> int:
        body = {"query": query} if query is not None else None
        out = self._ok("POST", f"/{index_pattern}/_count?ignore_unavailable=true", body)
        return int(out["count"])

    def search(self, index_pattern: str, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = self._ok(
            "POST", f"/{index_pattern}/_search?ignore_unavailable=true", body
        )
        return out

    def ids(self, index_pattern: str) -> Counter[str]:
        """How many documents carry each _id across the matching indices
        (a count above 1 is a duplicate delivery). Refreshes first."""
        self.refresh(index_pattern)
        found: Counter[str] = Counter()
        page = self._ok(
            "POST",
            f"/{index_pattern}/_search?scroll=1m&ignore_unavailable=true",
            {"size": 5000, "sort": ["_doc"], "_source": False},
        )
        try:
            while page["hits"]["hits"]:
                found.update(hit["_id"] for hit in page["hits"]["hits"])
                page = self._ok(
                    "POST", "/_search/scroll", {"scroll": "1m", "scroll_id": page["_scroll_id"]}
                )
        finally:
            if "_scroll_id" in page:
                self.request("DELETE", "/_search/scroll", {"scroll_id": page["_scroll_id"]})
        return found
