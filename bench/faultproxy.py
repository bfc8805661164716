"""A fault-injecting HTTP(S) reverse proxy for putting in front of OpenSearch.

The real server cannot be told to answer 429, to reject single bulk items, to
demand credentials or to speak TLS; this proxy does, at runtime, while
forwarding everything else untouched. Loopback only, one thread per client
connection.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

# the error types Elasticsearch itself reports for these statuses
ERROR_TYPES = {
    401: "security_exception",
    429: "es_rejected_execution_exception",
    503: "unavailable_shards_exception",
}
# hop-by-hop, or recomputed here after a rewrite
SKIP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length"}


def error_body(status: int, reason: str) -> dict[str, Any]:
    """An error in Elasticsearch's JSON shape."""
    cause = {"type": ERROR_TYPES.get(status, "exception"), "reason": reason}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


def _is_bulk(path: str) -> bool:
    return urllib.parse.urlsplit(path).path.rstrip("/").endswith("_bulk")


def _reset(sock: socket.socket) -> None:
    """Close with RST, as a crashed or overloaded peer would."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FaultProxy:
    """Forwards to `upstream` (http://host:port) from `url` (a free loopback
    port). Faults are set at runtime from any thread; counters are totals
    since start: `requests`, `bulk_requests`, and `faults_injected` (one per
    request answered by a fault, per item rewritten, per connection reset)."""

    def __init__(
        self,
        upstream: str,
        *,
        tls: tuple[str, str] | None = None,
        require_auth: str | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, not {upstream!r}")
        self.upstream = (parts.hostname, parts.port)
        self.require_auth = require_auth
        self._tls: ssl.SSLContext | None = None
        if tls is not None:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(*tls)
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._fail_left = 0
        self._fail_status = 429
        self._retry_after: float | None = None
        self._down = False
        self._delay_s = 0.0
        self._hold_s = 0.0
        self.holding = 0  # answers being held back now (their requests were forwarded)
        self._rewrite_every = 0
        self._rewrite_status = 429
        self.requests = 0
        self.bulk_requests = 0
        self.faults_injected = 0
        self._server = _Server(self)
        host, port = self._server.server_address[:2]
        scheme = "https" if self._tls else "http"
        self.url = f"{scheme}://{host!s}:{port}"
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="faultproxy", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        self._drop_connections()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- faults ------------------------------------------------------------

    def fail_next(self, n: int, status: int = 429, retry_after: float | None = None) -> None:
        """Answer the next n `_bulk` requests with `status` (and a Retry-After
        header when given) without forwarding them."""
        with self._lock:
            self._fail_left, self._fail_status, self._retry_after = n, status, retry_after

    def down(self, is_down: bool = True) -> None:
        """While down, every connection (open or new) is reset at once."""
        with self._lock:
            self._down = is_down
        if is_down:
            self._drop_connections()

    def delay(self, seconds: float) -> None:
        """Hold every request this long before forwarding it."""
        with self._lock:
            self._delay_s = seconds

    def hold_responses(self, seconds: float) -> None:
        """Forward every request at once, then hold its answer this long: the
        server has done the work while the client is still waiting (a client
        killed meanwhile never learns its documents were indexed)."""
        with self._lock:
            self._hold_s = seconds

    def rewrite_items(self, every_n: int, status: int = 429) -> None:
        """Forward `_bulk` for real, then report every n-th successful item
        of each response as failed with `status` (0 turns this off). Those
        documents are indexed: a retry of them gets a real 409."""
        with self._lock:
            self._rewrite_every, self._rewrite_status = every_n, status

    # -- internals ---------------------------------------------------------

    def _drop_connections(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, set()
            if conns:
                self.faults_injected += len(conns)
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _accept(self, sock: socket.socket) -> socket.socket | None:
        """The connection to serve (TLS-wrapped if so), or None if dropped."""
        with self._lock:
            if self._down:
                self.faults_injected += 1
                _reset(sock)
                return None
        sock.settimeout(30)
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError):
                sock.close()
                return None
        with self._lock:
            self._conns.add(sock)
        return sock

    def _release(self, sock: socket.socket) -> None:
        with self._lock:
            self._conns.discard(sock)

    def _plan(self, path: str) -> tuple[float, tuple[int, float | None] | None, int, int]:
        """Count the request; (delay, (status, retry_after) to answer with or
        None to forward, rewrite every n, rewrite status)."""
        bulk = _is_bulk(path)
        with self._lock:
            self.requests += 1
            self.bulk_requests += bulk
            fail = None
            if bulk and self._fail_left > 0:
                self._fail_left -= 1
                self.faults_injected += 1
                fail = (self._fail_status, self._retry_after)
            every = self._rewrite_every if bulk else 0
            return self._delay_s, fail, every, self._rewrite_status

    def _rewrite(self, body: bytes, every: int, status: int) -> bytes:
        out = json.loads(body)
        seen = rewritten = 0
        for item in out.get("items", []):
            ((op, result),) = item.items()
            if not 200 <= result.get("status", 0) < 300:
                continue
            seen += 1
            if seen % every:
                continue
            rewritten += 1
            reason = f"rejected execution of {op} (injected by FaultProxy)"
            item[op] = {
                "_index": result.get("_index"),
                "_id": result.get("_id"),
                "status": status,
                "error": error_body(status, reason)["error"]["root_cause"][0],
            }
        if rewritten:
            out["errors"] = True
            with self._lock:
                self.faults_injected += rewritten
        return json.dumps(out).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # runs in the connection's own thread: a slow TLS handshake or a
        # reset never holds up accept()
        sock = self.proxy._accept(request)
        if sock is None:
            return
        try:
            _Handler(sock, client_address, self)
        finally:
            self.proxy._release(sock)
            sock.close()

    def shutdown_request(self, request: Any) -> None:
        request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a connection reset by down() or by the client is the point of the
        # exercise, not an error; anything else is a bug worth a traceback
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real clients expect
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._proxy()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_GET

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        self.send_response(status)
        for key, value in headers or [("Content-Type", "application/json; charset=UTF-8")]:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _proxy(self) -> None:
        proxy = self.server.proxy
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            self.close_connection = True
            self._send(411, json.dumps(error_body(411, "send a Content-Length")).encode())
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        delay_s, fail, every, rewrite_status = proxy._plan(self.path)
        if delay_s:
            time.sleep(delay_s)
        if proxy.require_auth is not None and self.headers.get("Authorization") != (
            proxy.require_auth
        ):
            reason = f"missing authentication credentials for REST request [{self.path}]"
            headers = [
                ("Content-Type", "application/json; charset=UTF-8"),
                ("WWW-Authenticate", 'Basic realm="security" charset="UTF-8"'),
            ]
            self._send(401, json.dumps(error_body(401, reason)).encode(), headers)
            return
        if fail is not None:
            status, retry_after = fail
            headers = [("Content-Type", "application/json; charset=UTF-8")]
            if retry_after is not None:
                headers.append(("Retry-After", f"{retry_after:g}"))
            reason = "rejected execution (injected by FaultProxy)"
            self._send(status, json.dumps(error_body(status, reason)).encode(), headers)
            return
        # the upstream must answer uncompressed so a response can be rewritten
        forward = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in SKIP_HEADERS | {"authorization", "accept-encoding", "host"}
        }
        conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=forward)
            resp = conn.getresponse()
            payload = resp.read()
            status = resp.status
            headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in SKIP_HEADERS]
        except OSError as e:
            reason = f"upstream unreachable: {e}"
            self._send(502, json.dumps(error_body(502, reason)).encode())
            return
        finally:
            conn.close()
        if every and status == 200:
            payload = proxy._rewrite(payload, every, rewrite_status)
        with proxy._lock:
            hold_s = proxy._hold_s
            proxy.holding += bool(hold_s)
        if hold_s:
            time.sleep(hold_s)
            with proxy._lock:
                proxy.holding -= 1
        self._send(status, payload, headers)


def make_test_ca(directory: Path) -> tuple[str, str, str]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed
    by it, made with the openssl CLI: (ca_file, cert_file, key_file)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = d / "ca.key", d / "ca.crt"
    key, csr, crt, ext = d / "server.key", d / "server.csr", d / "server.crt", d / "server.ext"
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        "subjectKeyIdentifier=hash\n"
    )
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-keyout", ca_key, "-out", ca_crt, "-subj", "/CN=rtcore test CA"]
        + ["-addext", "basicConstraints=critical,CA:TRUE"]
        + ["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr]
        + ["-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial"]
        + ["-days", "2", "-extfile", ext, "-out", crt],
    ]
    for args in steps:
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)
    return str(ca_crt), str(crt), str(key)
