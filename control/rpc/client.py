"""A small client for the agent's gRPC service (rtcore.v1.Control).

Each method is one RPC and returns the agent's document as plain dicts and
lists, exactly as control.api.AgentAPI returned it on the agent. Every
failure is a ClientError whose message is one line a person can act on.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import grpc

from control.errors import ControlError
from control.proto_gen.rtcore.v1 import control_pb2 as pb
from control.proto_gen.rtcore.v1 import control_pb2_grpc as pb_grpc

MAX_REPLY_BYTES = 64 << 20


class ClientError(ControlError):
    """An RPC failed; `code` is its grpc.StatusCode."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Client:
    """Talks to the agent at `target` (HOST:PORT).

    TLS is used when any of tls_ca (CA file that signed the agent's
    certificate; None: the system's CAs), tls_cert/tls_key (this client's
    certificate and key, for an agent that requires mutual TLS) is given.
    `token` goes out as `authorization: Bearer <token>`; `traceparent` (W3C)
    on every call makes the agent's work part of the caller's trace.
    `timeout` bounds each call in seconds (for watch(): opening the stream).
    """

    def __init__(
        self,
        target: str,
        *,
        tls_ca: str | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
        token: str | None = None,
        timeout: float = 5.0,
        traceparent: str | None = None,
    ) -> None:
        if bool(tls_cert) != bool(tls_key):
            raise ValueError("a client certificate needs both tls_cert and tls_key")
        self.target = target
        self.timeout = timeout
        self._metadata: list[tuple[str, str]] = []
        if token:
            self._metadata.append(("authorization", f"Bearer {token}"))
        if traceparent:
            self._metadata.append(("traceparent", traceparent))
        options = [("grpc.max_receive_message_length", MAX_REPLY_BYTES)]
        if tls_ca or tls_cert:
            creds = grpc.ssl_channel_credentials(
                root_certificates=_read(tls_ca),
                private_key=_read(tls_key),
                certificate_chain=_read(tls_cert),
            )
            self._channel = grpc.secure_channel(target, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._tls = bool(tls_ca or tls_cert)
        self._stub = pb_grpc.ControlStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the RPCs -------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return self._document(self._call(self._stub.GetStatus, pb.GetStatusRequest()))

    def rt_action(self, action: str) -> dict[str, Any]:
        """action: start, stop, run, hold or safe; returns the new status."""
        try:
            value = pb.RtAction.Value(f"RT_ACTION_{action.upper()}")
        except ValueError:
            raise ClientError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"action: {action!r} is not one of start, stop, run, hold, safe",
            ) from None
        return self._document(self._call(self._stub.RtAction, pb.RtActionRequest(action=value)))

    def submit_job(self, name: str, waypoints: Sequence[tuple[float, Sequence[float]]]) -> dict:
        """waypoints: (t seconds from the job's start, [one target per joint])."""
        request = _build("name", lambda: pb.SubmitJobRequest(name=name))
        for i, (t, q) in enumerate(waypoints):
            request.waypoints.append(
                _build(f"waypoints[{i}]", lambda t=t, q=q: pb.Waypoint(t=t, q=q))
            )
        return self._document(self._call(self._stub.SubmitJob, request))

    def get_job(self, job_id: int) -> dict[str, Any]:
        request = _build("id", lambda: pb.GetJobRequest(id=job_id))
        return self._document(self._call(self._stub.GetJob, request))

    def list_jobs(self, state: str | None = None, limit: int | None = None) -> list[dict]:
        """Jobs, only those in `state` if given; at most `limit` (agent default 100)."""
        request = _build("limit", lambda: pb.ListJobsRequest(state=state or "", limit=limit))
        reply = self._call(self._stub.ListJobs, request)
        return [self._document(job) for job in reply.jobs]

    def cancel_job(self, job_id: int) -> dict[str, Any]:
        request = _build("id", lambda: pb.CancelJobRequest(id=job_id))
        return self._document(self._call(self._stub.CancelJob, request))

    def checkpoint_info(self) -> dict[str, Any]:
        reply = self._call(self._stub.GetCheckpointInfo, pb.GetCheckpointInfoRequest())
        return self._document(reply)

    def journal(self, limit: int = 0) -> dict[str, Any]:
        """Actuation intervals of the node's RT (the newest `limit`, 0: all)."""
        request = _build("limit", lambda: pb.GetJournalRequest(limit=limit))
        return self._document(self._call(self._stub.GetJournal, request))

    def get_log_level(self) -> dict[str, Any]:
        return self._document(self._call(self._stub.GetLogLevel, pb.GetLogLevelRequest()))

    def set_log_level(self, level: str, target: str = "all") -> dict[str, Any]:
        """level: DEBUG, INFO, WARN, ERROR or CRITICAL; target: rt, agent or all."""
        request = pb.SetLogLevelRequest(level=level, target=target)
        return self._document(self._call(self._stub.SetLogLevel, request))

    def get_trace_sampling(self) -> dict[str, Any]:
        reply = self._call(self._stub.GetTraceSampling, pb.GetTraceSamplingRequest())
        return self._document(reply)

    def set_trace_sampling(
        self, rt_every_cycles: int | None = None, ratio: float | None = None
    ) -> dict[str, Any]:
        """None leaves that setting as it is; rt_every_cycles 0 turns RT spans off."""
        request = _build(
            "rt_every_cycles",
            lambda: pb.SetTraceSamplingRequest(rt_every_cycles=rt_every_cycles, ratio=ratio),
        )
        return self._document(self._call(self._stub.SetTraceSampling, request))

    def get_trace(self, trace_id: str) -> dict[str, Any]:
        """{"trace_id", "spans": [...]}: every span of the trace the agent stored,
        by start time. The agent refuses an id that is not 32 hex digits."""
        request = _build("trace_id", lambda: pb.GetTraceRequest(trace_id=trace_id))
        return self._document(self._call(self._stub.GetTrace, request))

    def list_traces(
        self,
        slow_ms: float = 0.0,
        since_ns: int = 0,
        name: str = "",
        errors: bool = False,
        limit: int = 0,
    ) -> dict[str, Any]:
        """{"traces": [...]}: summaries, newest first, of the traces that lasted
        at least slow_ms, started at or after since_ns (unix ns), have a span
        called `name`, have an error span; at most `limit` (0: the agent's default)."""
        request = _build(
            "list_traces",
            lambda: pb.ListTracesRequest(
                slow_ms=slow_ms, since_ns=since_ns, name=name, errors=errors, limit=limit
            ),
        )
        return self._document(self._call(self._stub.ListTraces, request))

    def search_logs(self, **query: Any) -> dict[str, Any]:
        """{"logs": [...]}: ECS documents from the node's store, newest first
        (oldest first with after_seq); keywords as pb.SearchLogsRequest's fields."""
        request = _build("search_logs", lambda: pb.SearchLogsRequest(**query))
        return self._document(self._call(self._stub.SearchLogs, request))

    def set_affinity(self, cpus: str, isolate: bool | None = None) -> dict[str, Any]:
        """cpus in the kernel's list format; isolate None keeps the isolation as it is."""
        request = _build("cpus", lambda: pb.SetAffinityRequest(cpus=cpus, isolate=isolate))
        return self._document(self._call(self._stub.SetAffinity, request))

    def set_numa_node(self, node: int) -> dict[str, Any]:
        request = _build("node", lambda: pb.SetNumaNodeRequest(node=node))
        return self._document(self._call(self._stub.SetNumaNode, request))

    def placement(self) -> dict[str, Any]:
        return self._document(self._call(self._stub.GetPlacement, pb.GetPlacementRequest()))

    def list_alerts(self, all: bool = False) -> dict[str, Any]:
        """{"alerts": [...]}: the active ones, newest first; with `all` also those cleared."""
        return self._document(self._call(self._stub.ListAlerts, pb.ListAlertsRequest(all=all)))

    def diagnose(self, since_ns: int = 0) -> dict[str, Any]:
        """The operator's screen: summary and items, looking back to since_ns
        (unix ns; 0: the agent's default, 15 minutes)."""
        request = _build("since_ns", lambda: pb.DiagnoseRequest(since_ns=since_ns))
        return self._document(self._call(self._stub.Diagnose, request))

    def cluster_status(self) -> dict[str, Any]:
        """The agent's view of the Raft cluster (control.api.AgentAPI.cluster_status)."""
        reply = self._call(self._stub.ClusterStatus, pb.ClusterStatusRequest())
        return self._document(reply)

    def cluster_failover(self, to: str | None = None) -> dict[str, Any]:
        """Hand the primary role over to the standby `to` (None: the agent picks
        the healthiest caught-up one); call it on the primary. Returns
        {"from", "to", "term", "gap_ms"}."""
        request = _build("to", lambda: pb.ClusterFailoverRequest(to=to))
        return self._document(self._call(self._stub.ClusterFailover, request))

    def watch(self, kinds: Sequence[str] | None = None) -> EventStream:
        """Events from now on, only those of `kinds` if given. Returns once the
        agent has subscribed, so no event published after that is missed."""
        call = self._stub.Watch(pb.WatchRequest(kinds=list(kinds or ())), metadata=self._metadata)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            call.cancel()

        timer = threading.Timer(self.timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            call.initial_metadata()
        finally:
            timer.cancel()
        if expired.is_set():
            raise self._error_of(grpc.StatusCode.DEADLINE_EXCEEDED, "")
        if not call.is_active() and call.code() != grpc.StatusCode.OK:
            raise self._error_of(call.code(), call.details())
        return EventStream(call, self)

    # ---- plumbing -------------------------------------------------------------

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise self._error_of(e.code(), e.details()) from None

    def _document(self, reply: Any) -> dict[str, Any]:
        if not reply.details_json:
            raise ClientError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"the agent at {self.target} sent {type(reply).__name__} without details_json: "
                "is it an older rtcore agent?",
            )
        doc: dict[str, Any] = json.loads(reply.details_json)
        return doc

    def _error_of(self, code: grpc.StatusCode | None, details: str | None) -> ClientError:
        code = code or grpc.StatusCode.UNKNOWN
        details = " ".join((details or "").split())
        if code == grpc.StatusCode.UNAVAILABLE:
            message = f"cannot reach the agent at {self.target}: is `rtctl agent` running?"
            lowered = details.lower()
            if any(w in lowered for w in ("ssl", "tls", "handshake", "certificate")):
                message += " (TLS failed: check --tls-ca, --tls-cert and the agent's certificate)"
            elif "socket closed" in lowered:
                # the agent hung up during the handshake: it wants TLS, or a client certificate
                message += (
                    " (the agent may require a client certificate: --tls-cert, --tls-key)"
                    if self._tls
                    else " (if the agent serves TLS, pass --tls-ca)"
                )
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            message = f"the agent at {self.target} did not answer within {self.timeout:g} s"
        else:
            message = details or f"the agent at {self.target} answered {code.name}"
        return ClientError(code, message)


class EventStream:
    """Events as dicts: kind, ts_ns, node_id, message, level, fields (dict),
    trace_id, span_id. Iterate; close() (or leaving a with block) ends it."""

    def __init__(self, call: Any, client: Client) -> None:
        self._call = call
        self._client = client
        self._closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        try:
            ev = next(self._call)
        except grpc.RpcError as e:
            if self._closed:
                raise StopIteration from None
            raise self._client._error_of(e.code(), e.details()) from None
        return {
            "kind": ev.kind,
            "ts_ns": ev.ts_ns,
            "node_id": ev.node_id,
            "message": ev.message,
            "level": ev.level,
            "fields": json.loads(ev.fields_json) if ev.fields_json else {},
            "trace_id": ev.trace_id,
            "span_id": ev.span_id,
        }

    def close(self) -> None:
        self._closed = True
        self._call.cancel()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return f.read()


def _build(field: str, make: Any) -> Any:
    """A request from Python values; values protobuf cannot hold (a string
    for a number, an id beyond 64 bits) fail here, naming the field."""
    try:
        return make()
    except (TypeError, ValueError) as e:
        raise ClientError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {e}") from None
