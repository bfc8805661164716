"""Export spool records to Elasticsearch or OpenSearch with `_bulk`.

Every record is sent as a `create` with a deterministic `_id` (node, spool,
seq), so a replay after a crash or a lost answer never duplicates: a 409 on
`create` means the document is already there. Every item of the answer is
inspected: a document the server refuses for good (a mapping conflict) goes
to a dead-letter file and counts as settled; one it cannot take now (429,
5xx) is sent again after a backoff. `deliver` reports only the settled
prefix, so order is kept and the spool cursor never passes a lost record.
"""

from __future__ import annotations

import os
import random
import ssl
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from control.logs.elastic_settings import ElasticConfigError, ElasticSettings
from control.logs.sink import Delivery, Record

BACKOFF_BASE_S = 0.1
BACKOFF_CAP_S = 30.0
BACKOFF_FLOOR_S = 0.01  # full jitter may draw ~0; the pipeline must still wait a little

# Item errors about the server's state or configuration rather than the
# document (overload, a disk-full block, missing privileges, auto-create
# off): they go away once the server recovers or is fixed, so they are
# retried; dead-lettering them would throw good documents away.
RETRY_ITEM_STATUSES = frozenset({401, 403, 429})
RETRY_ITEM_TYPES = frozenset(
    {"es_rejected_execution_exception", "cluster_block_exception", "index_not_found_exception"}
)

REFRESH = "250ms"
KEYWORD = {"type": "keyword"}
LONG = {"type": "long"}

# The ECS fields the documents carry (see control/logs/ecs.py); anything
# else is mapped dynamically.
MAPPINGS = {
    "properties": {
        "@timestamp": {"type": "date_nanos"},
        "message": {"type": "text"},
        "log": {"properties": {"level": KEYWORD, "logger": KEYWORD}},
        "ecs": {"properties": {"version": KEYWORD}},
        "event": {"properties": {"action": KEYWORD, "dataset": KEYWORD}},
        "trace": {"properties": {"id": KEYWORD}},
        "span": {"properties": {"id": KEYWORD}},
        "host": {"properties": {"name": KEYWORD}},
        "service": {"properties": {"name": KEYWORD, "node": {"properties": {"name": KEYWORD}}}},
        "process": {
            "properties": {"pid": LONG, "name": KEYWORD, "thread": {"properties": {"id": LONG}}}
        },
        "rtcore": {
            "properties": {
                "node": KEYWORD,
                "cycle": LONG,
                "time_ns": LONG,
                "fields": {"type": "object", "dynamic": True},
            }
        },
    }
}


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


def _reason(exc: BaseException) -> str:
    """The most specific cause in an urllib3 error chain, for a one-line message."""
    todo: list[BaseException] = [exc]
    e = exc
    for _ in range(16):  # chains are short; the bound only guards against cycles
        if not todo:
            break
        e = todo.pop(0)
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {e.verify_message}"
        if isinstance(e, ssl.SSLError):
            return str(e.reason or e)
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        todo += [x for x in (e.__cause__, e.__context__, *e.args) if isinstance(x, BaseException)]
    return _one_line(str(e))  # the innermost cause: urllib3's wrappers only repeat it


def _server_error(status: int, data: bytes) -> str:
    """`type: reason` from an error answer, or its first words."""
    try:
        body = orjson.loads(data)
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            return _one_line(f"{err.get('type')}: {err.get('reason')}")
        if isinstance(err, str):
            return _one_line(err)
    except orjson.JSONDecodeError:
        pass
    return _one_line(data.decode("utf-8", "replace")) or f"HTTP {status}"


def _retry_after(headers: Any) -> float | None:
    # ES and the proxies in front of it send delta-seconds, not HTTP dates
    try:
        return max(0.0, float(headers.get("Retry-After", "")))
    except ValueError:
        return None


DELIVERED, DUPLICATE, RETRY, DEAD = "delivered", "duplicate", "retry", "dead"
# how much of the dead-letter file's end is read at start for the _ids in it,
# and how many _ids are remembered: a replay re-sends at most what the spool's
# last unpersisted acknowledgements covered
DEAD_LETTER_TAIL_BYTES = 8 << 20
DEAD_IDS_KEPT = 100_000


def _outcome(result: dict[str, Any]) -> str:
    status = int(result["status"])
    error = result.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    if 200 <= status < 300:
        return DELIVERED
    if status == 409:  # `create` found the _id: an earlier attempt delivered it
        return DUPLICATE
    if status in RETRY_ITEM_STATUSES or status >= 500 or kind in RETRY_ITEM_TYPES:
        return RETRY
    return DEAD


def _dead_letter_ids(path: str) -> dict[str, None]:
    """The _ids of the last lines of the dead-letter file, oldest first (a dict
    as an ordered set). A line cut by a crash, or unreadable, is skipped."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            # from the byte before the tail: a line that starts the tail
            # follows a newline, and only a line the seek cut is dropped
            start = max(0, size - DEAD_LETTER_TAIL_BYTES - 1)
            f.seek(start)
            data = f.read()
    except OSError:
        return {}
    lines = data.split(b"\n")
    if start:
        lines = lines[1:]
    ids: dict[str, None] = {}
    for line in lines:
        try:
            ids[orjson.loads(line)["_id"]] = None
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
    return dict.fromkeys(list(ids)[-DEAD_IDS_KEPT:])


class ElasticSink:
    """A pipeline sink: one `_bulk` request per batch (split by size)."""

    name = "elastic"

    def __init__(
        self, settings: ElasticSettings, node_id: str, spool_id: str, dead_letter_path: str
    ) -> None:
        self.settings = settings
        self._id_prefix = f"{node_id}-{spool_id}-"
        self._dead_letter_path = dead_letter_path
        parts = urlsplit(settings.url)
        self._where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        auth: dict[str, str] = {}
        if settings.api_key:
            auth["Authorization"] = f"ApiKey {settings.api_key}"
        elif settings.username is not None:
            auth = urllib3.make_headers(basic_auth=f"{settings.username}:{settings.password or ''}")
        self._json_headers = {**auth, "Content-Type": "application/json"}
        self._bulk_headers = {**auth, "Content-Type": "application/x-ndjson"}
        self._http = urllib3.PoolManager(
            num_pools=1,
            maxsize=1,
            retries=False,  # this sink owns retries, backoff and order
            timeout=urllib3.Timeout(connect=settings.timeout_s, read=settings.timeout_s),
            cert_reqs="CERT_REQUIRED",
            ca_certs=settings.ca_file,
        )
        self._limit_bytes = settings.max_batch_bytes  # halved on each 413
        self._index_by_day: dict[int, str] = {}
        self._failures = 0
        self._sent_requests = 0
        self._delivered = 0
        self._duplicates = 0
        self._retried_items = 0
        self._dead_lettered = 0
        # _ids already in the dead-letter file: a replay after a crash (the
        # spool cursor is persisted every fsync interval) sends again what was
        # dead-lettered just before it, and gets the same refusal
        self._dead_ids = _dead_letter_ids(dead_letter_path)
        self._dead_replays = 0
        self._errors: Counter[str] = Counter()
        self._last_error = ""
        self._backoff_s = 0.0
        self._last_success_ns = 0
        self._ready = False  # template installed, today's index made

    def check(self) -> None:
        """Reach the server, install the index template and create today's
        index through it; raises ElasticConfigError with one line saying what
        is wrong. Creating the index is what proves the server accepts the
        index names: the template API lets through prefixes (`-x`, `+x`) no
        index may start with."""
        s = self.settings
        if s.ca_file:
            try:
                with open(s.ca_file, "rb"):
                    pass
            except OSError as e:
                raise ElasticConfigError(
                    f"cannot read the Elasticsearch CA file {s.ca_file!r}: {e.strerror}"
                ) from None
        template = {
            "index_patterns": [f"{s.index_prefix}-*"],
            # above the default 0, so a catch-all template cannot tie with ours
            "priority": 100,
            # searchable within a quarter second (the default is 1 s): logs are
            # looked at while the robot runs; a user's own template can raise it
            "template": {
                "settings": {"index": {"refresh_interval": REFRESH}},
                "mappings": MAPPINGS,
            },
            "_meta": {"managed_by": "rtcore"},
        }
        self._check_call(f"/_index_template/{s.index_prefix}", template, "the index template")
        today = self._index(time.time_ns())
        self._check_call(f"/{today}", {}, "the index", exists_ok=True)
        self._ready = True

    def _check_call(self, path: str, body: Any, what: str, exists_ok: bool = False) -> None:
        try:
            status, _, data = self._call("PUT", path, orjson.dumps(body), bulk=False)
        except (HTTPError, OSError) as e:
            kind, message = self._transport_error(e)
            raise ElasticConfigError(message, kind) from None
        if status == 200:
            return
        reason = _server_error(status, data)
        if exists_ok and status == 400 and reason.startswith("resource_already_exists_exception"):
            return
        if status in (401, 403):
            raise ElasticConfigError(
                f"Elasticsearch at {self._where} refused the credentials (HTTP {status}: "
                f"{reason}); check the user and password or the API key",
                "auth",
            )
        raise ElasticConfigError(
            f"Elasticsearch at {self._where} refused {what} {path.rpartition('/')[2]!r} "
            f"(HTTP {status}): {reason}"
        )

    def deliver(self, records: Sequence[Record]) -> Delivery:
        if not self._ready:
            # the server was away or refused the set-up at start: documents
            # go out only once the template maps them
            try:
                self.check()
            except ElasticConfigError as e:
                return Delivery(0, self._pause(e.kind, str(e)))
        entries = [self._entry(r) for r in records]
        done = 0
        while done < len(records):
            end, size = done + 1, len(entries[done])
            while end < len(records) and size + len(entries[end]) <= self._limit_bytes:
                size += len(entries[end])
                end += 1
            settled, retry_s = self._send(records[done:end], entries[done:end])
            done += settled
            if retry_s is not None:
                self._backoff_s = retry_s
                return Delivery(done, retry_s)
        self._failures = 0
        self._backoff_s = 0.0
        return Delivery(done)

    def stats(self) -> dict[str, Any]:
        return {
            "url": self.settings.url,
            "sent_requests": self._sent_requests,
            "delivered": self._delivered,
            "duplicates": self._duplicates,
            "retried_items": self._retried_items,
            "dead_lettered": self._dead_lettered,
            "dead_letter_replays": self._dead_replays,
            "errors": dict(self._errors),
            "last_error": self._last_error,
            "backoff_s": self._backoff_s,
            "last_success_ns": self._last_success_ns,
        }

    def close(self) -> None:
        self._http.clear()

    def _index(self, time_ns: int) -> str:
        day = time_ns // 86_400_000_000_000
        name = self._index_by_day.get(day)
        if name is None:
            if len(self._index_by_day) > 64:  # a long replay walks through many days
                self._index_by_day.clear()
            stamp = time.strftime("%Y.%m.%d", time.gmtime(day * 86_400))
            name = self._index_by_day[day] = f"{self.settings.index_prefix}-{stamp}"
        return name

    def _entry(self, record: Record) -> bytes:
        seq, time_ns, _, doc = record
        action = {"create": {"_index": self._index(time_ns), "_id": f"{self._id_prefix}{seq}"}}
        return b"%s\n%s\n" % (orjson.dumps(action), doc)

    def _call(self, method: str, path: str, body: bytes, bulk: bool) -> tuple[int, Any, bytes]:
        resp = self._http.request(
            method,
            self.settings.url + path,
            body=body,
            headers=self._bulk_headers if bulk else self._json_headers,
        )
        return resp.status, resp.headers, resp.data

    def _transport_error(self, exc: BaseException) -> tuple[str, str]:
        """(error kind, one-line message) for a request that got no answer."""
        ca = self.settings.ca_file
        if isinstance(exc, SSLError | ssl.SSLError):
            hint = (
                f"is {ca!r} the CA that signed its certificate?"
                if ca
                else "pass the CA file that signed it"
            )
            return "tls", f"TLS with Elasticsearch at {self._where} failed: {_reason(exc)}; {hint}"
        if isinstance(exc, Urllib3Timeout) and not isinstance(exc, NewConnectionError):
            return "timeout", (
                f"Elasticsearch at {self._where} did not answer within {self.settings.timeout_s} s"
            )
        return "connection", f"cannot reach Elasticsearch at {self._where}: {_reason(exc)}"

    def _pause(self, kind: str | None, message: str, at_least_s: float | None = None) -> float:
        """Count a failure and draw the next backoff (exponential, full jitter)."""
        if kind:
            self._errors[kind] += 1
        self._last_error = message
        ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(self._failures, 16))
        self._failures += 1
        delay = max(BACKOFF_FLOOR_S, random.uniform(0.0, ceiling))
        if at_least_s is not None:
            delay = max(delay, min(at_least_s, BACKOFF_CAP_S))
        return delay

    def _send(self, records: Sequence[Record], entries: list[bytes]) -> tuple[int, float | None]:
        """One `_bulk` request: (records settled, backoff when the rest must wait)."""
        body = b"".join(entries)
        self._sent_requests += 1
        try:
            status, headers, data = self._call("POST", "/_bulk", body, bulk=True)
        except (HTTPError, OSError) as e:
            return 0, self._pause(*self._transport_error(e))
        if status == 413:
            self._errors["too_large"] += 1
            if len(records) > 1:  # the caller sends the same records again in smaller requests
                self._limit_bytes = max(1, len(body) // 2)
                return 0, None
            error = {"type": "request_too_large", "reason": "HTTP 413 for this document alone"}
            problem = self._dead_letter([(records[0], 413, error)])
            return (0, self._pause("dead_letter", problem)) if problem else (1, None)
        if status in (401, 403):
            message = f"Elasticsearch refused the credentials (HTTP {status})"
            return 0, self._pause("auth", f"{message}: {_server_error(status, data)}")
        if status == 429 or status >= 500:
            kind = "throttled" if status == 429 else "server"
            message = f"Elasticsearch answered HTTP {status}: {_server_error(status, data)}"
            return 0, self._pause(kind, message, _retry_after(headers))
        if status != 200:
            message = f"Elasticsearch refused the bulk request (HTTP {status})"
            return 0, self._pause("request", f"{message}: {_server_error(status, data)}")
        try:
            items = orjson.loads(data)["items"]
            if len(items) != len(records):
                raise ValueError(f"{len(items)} items for {len(records)} documents")
            results = [next(iter(item.values())) for item in items]
            outcomes = [_outcome(r) for r in results]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, StopIteration) as e:
            return 0, self._pause("response", f"unusable _bulk answer: {_one_line(repr(e))}")
        self._last_success_ns = time.time_ns()
        return self._settle(records, results, outcomes)

    def _settle(
        self, records: Sequence[Record], results: list[Any], outcomes: list[str]
    ) -> tuple[int, float | None]:
        """Settle the items before the first one to retry; dead-letter the
        refused ones among them."""
        stop = outcomes.index(RETRY) if RETRY in outcomes else len(outcomes)
        dead = [i for i in range(stop) if outcomes[i] == DEAD]
        problem = self._dead_letter(
            [(records[i], int(results[i]["status"]), results[i].get("error")) for i in dead]
        )
        settled = dead[0] if problem else stop
        self._delivered += outcomes[:settled].count(DELIVERED)
        self._duplicates += outcomes[:settled].count(DUPLICATE)
        if problem:
            return settled, self._pause("dead_letter", problem)
        if stop == len(records):
            return stop, None
        self._retried_items += len(records) - stop
        first = results[stop]
        message = (
            f"{len(records) - stop} documents to send again; the first got HTTP "
            f"{first['status']} {_one_line(str(first.get('error')))}"
        )
        return stop, self._pause(None, message)

    def _dead_letter(self, refused: list[tuple[Record, int, Any]]) -> str | None:
        """Append one JSON line per refused document and fsync; the problem
        when the file cannot be written (the documents then stay unsettled)."""
        fresh = [r for r in refused if f"{self._id_prefix}{r[0][0]}" not in self._dead_ids]
        self._dead_replays += len(refused) - len(fresh)
        refused = fresh
        if not refused:
            return None
        lines = []
        for (seq, time_ns, _, doc), status, error in refused:
            try:
                document: Any = orjson.loads(doc)
            except orjson.JSONDecodeError:
                document = doc.decode("utf-8", "replace")
            line = {
                "_id": f"{self._id_prefix}{seq}",
                "index": self._index(time_ns),
                "status": status,
                "error": error,
                "seq": seq,
                "document": document,
            }
            lines.append(orjson.dumps(line) + b"\n")
        path = self._dead_letter_path
        try:
            created = not os.path.exists(path)
            with open(path, "ab+") as f:
                end = f.seek(0, os.SEEK_END)
                if end:
                    f.seek(end - 1)
                    if f.read(1) != b"\n":  # a line a crash cut: ours start on their own
                        lines.insert(0, b"\n")
                f.write(b"".join(lines))  # appended at the end whatever the position
                f.flush()
                os.fsync(f.fileno())
            if created:  # the new file's directory entry must survive a crash too
                dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as e:
            return f"cannot write the dead-letter file {path!r}: {e.strerror}"
        self._dead_lettered += len(refused)
        for (seq, *_), _status, _error in refused:
            self._dead_ids[f"{self._id_prefix}{seq}"] = None
        while len(self._dead_ids) > DEAD_IDS_KEPT:
            del self._dead_ids[next(iter(self._dead_ids))]
        return None
