"""The gRPC service: rtcore.v1.Control over an AgentAPI object.

serve() starts a grpc.Server on config.listen with the Control service, the
standard grpc.health.v1 health service (SERVING for "" and
"rtcore.v1.Control") and server reflection; TLS when config.tls_cert is set,
mutual TLS when config.tls_client_ca is set too.

Every request field is checked here before the AgentAPI sees it, so the agent
only ever receives values in range (an invalid one fails with
INVALID_ARGUMENT naming the field). control.errors map to status codes;
anything else becomes INTERNAL, is logged, and leaves the server serving.
When config.token is set, the mutating RPCs need `authorization: Bearer
<token>` metadata; reads stay open so monitoring needs no secret, unless
config.auth is "all": then every Control RPC, Watch included, needs it (the
health check and reflection stay open either way). Clear text on a
non-loopback address is refused unless config.insecure says otherwise.
Watch streams are limited in number, per client, and in idle time
(control.rpc.watchslots).

Trace context: while the service calls into the AgentAPI, current_traceparent()
returns the caller's W3C `traceparent` metadata (None when absent or
malformed, which W3C says to ignore). An agent method reads it on the calling
thread to parent its spans and to stamp what it sends to RT.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from contextvars import ContextVar
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from loguru import logger

from control.api import JOB_STATES, LEVEL_NUMBERS, LOG_LEVELS, RT_ACTIONS, AgentAPI
from control.config import AgentConfig, is_loopback, plaintext_problem
from control.errors import ControlError, FailedPrecondition, InvalidArgument, NotFound
from control.jobs import trajectory
from control.proto_gen.rtcore.v1 import control_pb2 as pb
from control.proto_gen.rtcore.v1 import control_pb2_grpc as pb_grpc
from control.rpc.watchslots import Busy, WatchSlots, client_of
from control.settings import MAX_WATCHERS, NODE_ID_RE
from rtcore import topology

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Control"].full_name
MUTATING = frozenset(
    {
        "RtAction",
        "SubmitJob",
        "CancelJob",
        "SetLogLevel",
        "SetTraceSampling",
        "SetAffinity",
        "SetNumaNode",
        "ClusterFailover",
    }
)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DEFAULT_LOGS = 100
MAX_CPU = 4095
MAX_NUMA_NODE = 1023
MAX_RT_EVERY = 1_000_000
LOG_TARGETS = ("rt", "agent", "all")
MAX_KINDS = 32
KIND_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

# Watch streams hold a worker each for their whole life: MAX_WATCHERS caps them
# below the pool size so status and control calls always find a free worker.
WORKERS = 16
MAX_CONCURRENT_RPCS = 64
MAX_REQUEST_BYTES = 1 << 20
ERROR_MESSAGE_CHARS = 300

_ACTION_NAMES = {pb.RtAction.Value(f"RT_ACTION_{a.upper()}"): a for a in RT_ACTIONS}
_TRACEPARENT_RE = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_EVENT_KEYS = ("kind", "ts_ns", "node_id", "message", "level", "trace_id", "span_id")

_traceparent: ContextVar[str | None] = ContextVar("rtcore_traceparent", default=None)

M = TypeVar("M", bound=Message)


def current_traceparent() -> str | None:
    """The W3C traceparent of the RPC being served on this thread, or None."""
    return _traceparent.get()


def parse_traceparent(value: str | None) -> str | None:
    """`value` if it is a valid W3C traceparent (version 00 or a later one),
    else None. Hex digits must be lowercase; all-zero ids are invalid."""
    if not value:
        return None
    value = value.strip()
    m = _TRACEPARENT_RE.fullmatch(value)
    if m is None:
        return None
    version, trace_id, span_id, _, rest = m.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return value


_bad_traceparents = [0]


def _count_bad_traceparent(method: str, value: str) -> None:
    """A malformed traceparent is ignored (what the call causes starts a new
    root trace), counted, and warned about once in a while."""
    _bad_traceparents[0] += 1
    n = _bad_traceparents[0]
    if n & (n - 1) == 0:  # 1st, 2nd, 4th, 8th...: a flood of them does not flood the log
        logger.warning(
            "ignored a malformed traceparent {!r} on {} ({} so far); a new trace is started",
            value[:80],
            method,
            n,
        )


def bad_traceparents() -> int:
    return _bad_traceparents[0]


def _metadata(pairs: Sequence[tuple[str, Any]] | None, key: str) -> list[str]:
    return [v for k, v in pairs or () if k == key and isinstance(v, str)]


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    if len(text) > ERROR_MESSAGE_CHARS:
        text = text[: ERROR_MESSAGE_CHARS - 3] + "..."
    return text


# ---- request checks: each returns the value the AgentAPI gets --------------


def check_action(value: int) -> str:
    name = _ACTION_NAMES.get(value)
    if name is None:
        raise InvalidArgument("action", f"{value} is not one of {', '.join(RT_ACTIONS)}")
    return name


def check_job_id(value: int, field: str = "id") -> int:
    if value <= 0:
        raise InvalidArgument(field, f"{value} is not a job id (a positive integer)")
    return value


def check_state(value: str) -> str | None:
    if not value:
        return None
    if value.lower() not in JOB_STATES:
        raise InvalidArgument("state", f"{value!r} is not one of {', '.join(JOB_STATES)}")
    return value.lower()


def check_limit(request: pb.ListJobsRequest) -> int:
    if not request.HasField("limit"):
        return DEFAULT_LIMIT
    if not 1 <= request.limit <= MAX_LIMIT:
        raise InvalidArgument("limit", f"{request.limit} is out of range 1..{MAX_LIMIT}")
    return request.limit


def check_trace_id(value: str) -> str:
    text = value.strip().lower()
    if len(text) != 32 or any(c not in "0123456789abcdef" for c in text) or set(text) == {"0"}:
        raise InvalidArgument("trace_id", f"{value!r} is not a trace id: use 32 hex digits")
    return text


def check_traces_query(request: pb.ListTracesRequest) -> dict[str, Any]:
    if not math.isfinite(request.slow_ms) or request.slow_ms < 0:
        raise InvalidArgument("slow_ms", f"{request.slow_ms} must be 0 or a positive number")
    if request.since_ns < 0:
        raise InvalidArgument("since_ns", "must be 0 (any) or a time in unix nanoseconds")
    if request.limit > MAX_LIMIT:
        raise InvalidArgument("limit", f"{request.limit} is out of range 0..{MAX_LIMIT}")
    if len(request.name) > 200:
        raise InvalidArgument("name", "is longer than 200 characters")
    return {
        "slow_ms": request.slow_ms,
        "since_ns": request.since_ns,
        "name": request.name,
        "errors": request.errors,
        "limit": request.limit or 50,
    }


TEXT_MAX = 500


def check_logs_query(request: pb.SearchLogsRequest) -> dict[str, Any]:
    """The store's search keywords from a request; InvalidArgument names the field."""
    if request.since_ns < 0 or request.until_ns < 0:
        raise InvalidArgument("since_ns", "times must be 0 (any) or unix nanoseconds")
    if request.after_seq < 0:
        raise InvalidArgument("after_seq", "must be 0 or positive")
    if request.until_ns and request.since_ns > request.until_ns:
        raise InvalidArgument("until_ns", "is before since_ns")
    if request.limit > MAX_LIMIT:
        raise InvalidArgument("limit", f"{request.limit} is out of range 0..{MAX_LIMIT}")
    for name in ("event", "node", "text"):
        if len(getattr(request, name)) > TEXT_MAX:
            raise InvalidArgument(name, f"is longer than {TEXT_MAX} characters")
    return {
        "level_min": LEVEL_NUMBERS[check_level(request.level)] if request.level else None,
        "event": request.event or None,
        "since_ns": request.since_ns or None,
        "until_ns": request.until_ns or None,
        "trace_id": check_trace_id(request.trace_id) if request.trace_id else None,
        "node": request.node or None,
        "text": request.text.strip() or None,
        "limit": request.limit or DEFAULT_LOGS,
        "after_seq": request.after_seq if request.HasField("after_seq") else None,
    }


def check_level(value: str) -> str:
    if value.upper() not in LOG_LEVELS:
        raise InvalidArgument("level", f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return value.upper()


def check_target(value: str) -> str:
    if not value:
        return "all"
    if value.lower() not in LOG_TARGETS:
        raise InvalidArgument("target", f"{value!r} is not one of {', '.join(LOG_TARGETS)}")
    return value.lower()


def check_sampling(request: pb.SetTraceSamplingRequest) -> tuple[int | None, float | None]:
    every = request.rt_every_cycles if request.HasField("rt_every_cycles") else None
    ratio = request.ratio if request.HasField("ratio") else None
    if every is None and ratio is None:
        raise InvalidArgument("rt_every_cycles", "give rt_every_cycles, ratio or both")
    if every is not None and not 0 <= every <= MAX_RT_EVERY:
        raise InvalidArgument(
            "rt_every_cycles", f"{every} is out of range 0..{MAX_RT_EVERY} (0 = off)"
        )
    if ratio is not None and not 0.0 <= ratio <= 1.0:  # also false for NaN
        raise InvalidArgument("ratio", f"{ratio} is not a number in 0..1")
    return every, ratio


def check_cpus(text: str) -> list[int]:
    if not text.strip():
        raise InvalidArgument("cpus", "give at least one CPU, e.g. '3' or '2-3'")
    if len(text) > 1000:
        raise InvalidArgument("cpus", "is longer than 1000 characters")
    try:
        cpus = topology.parse_cpu_list(text)
    except topology.TopologyError as e:
        raise InvalidArgument("cpus", str(e)) from None
    if cpus[-1] > MAX_CPU:
        raise InvalidArgument("cpus", f"CPU {cpus[-1]} is beyond {MAX_CPU}")
    return cpus


def check_node(node: int) -> int:
    if not 0 <= node <= MAX_NUMA_NODE:
        raise InvalidArgument("node", f"{node} is out of range 0..{MAX_NUMA_NODE}")
    return node


def check_job(request: pb.SubmitJobRequest) -> tuple[str, list[trajectory.Waypoint]]:
    """The same rules as job files (control.jobs.trajectory), so a job rtctl
    accepts from a file is never refused here and the reverse."""
    name = trajectory.validate_name(request.name)
    pairs = [(wp.t, list(wp.q)) for wp in request.waypoints]
    return name, trajectory.validate_waypoints(pairs)


def check_failover_to(request: pb.ClusterFailoverRequest) -> str | None:
    if not request.HasField("to"):
        return None
    if not NODE_ID_RE.fullmatch(request.to):
        raise InvalidArgument(
            "to", f"{request.to[:80]!r} is not a node id (1..64 of letters, digits, '-', '_')"
        )
    return request.to


def check_kinds(values: Sequence[str]) -> list[str] | None:
    if len(values) > MAX_KINDS:
        raise InvalidArgument("kinds", f"{len(values)} kinds; give at most {MAX_KINDS}")
    for i, kind in enumerate(values):
        if not KIND_RE.fullmatch(kind):
            raise InvalidArgument(
                f"kinds[{i}]", f"{kind[:80]!r} is not 1..64 of letters, digits, '_', '.', ':', '-'"
            )
    return list(values) or None


# ---- replies ------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def to_json(doc: Any) -> str:
    return json.dumps(doc, default=_json_default, separators=(",", ":"))


_mirror_warned: set[str] = set()


def document(cls: type[M], doc: Any) -> M:
    """A reply carrying `doc` whole in details_json, its contract fields typed.

    A typed field the document does not fit (an agent bug, or a field that
    changed type) is logged once and left unset: details_json, which rtctl
    prints, stays complete either way."""
    if not isinstance(doc, dict):
        raise TypeError(f"the agent returned {type(doc).__name__}, not a dict, for {cls.__name__}")
    msg = cls()
    try:
        json_format.ParseDict(doc, msg, ignore_unknown_fields=True)
    except json_format.ParseError as e:
        if cls.__name__ not in _mirror_warned:
            _mirror_warned.add(cls.__name__)
            logger.warning("gRPC {}: typed fields left unset: {}", cls.__name__, e)
        msg = cls()
    msg.details_json = to_json(doc)  # type: ignore[attr-defined]
    return msg


def event_message(ev: dict[str, Any]) -> pb.Event:
    """An event dict as the event bus publishes it (kind, level, message,
    node_id, ts_ns, optional trace_id/span_id, then its own fields at the top
    level or under 'fields') as an Event; its own fields go to fields_json."""
    fields = dict(ev.get("fields") or {})
    fields.update((k, v) for k, v in ev.items() if k not in _EVENT_KEYS and k != "fields")
    return pb.Event(
        kind=str(ev.get("kind") or ""),
        ts_ns=int(ev.get("ts_ns") or 0),
        node_id=str(ev.get("node_id") or ""),
        message=str(ev.get("message") or ""),
        level=str(ev.get("level") or ""),
        trace_id=str(ev.get("trace_id") or ""),
        span_id=str(ev.get("span_id") or ""),
        fields_json=to_json(fields),
    )


# ---- the servicer -------------------------------------------------------------


_CODES: tuple[tuple[type[ControlError], grpc.StatusCode], ...] = (
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (Busy, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (ControlError, grpc.StatusCode.INTERNAL),
)


def _code_for(error: ControlError) -> grpc.StatusCode:
    return next(code for cls, code in _CODES if isinstance(error, cls))


@contextlib.contextmanager
def _serving(name: str, context: grpc.ServicerContext) -> Iterator[None]:
    """Trace context in, errors out: ControlError to its code, anything else
    to INTERNAL (logged with its traceback)."""
    given = _metadata(context.invocation_metadata(), "traceparent")
    parsed = parse_traceparent(given[0] if given else None)
    if given and parsed is None:
        _count_bad_traceparent(name, given[0])
    token = _traceparent.set(parsed)
    try:
        yield
    except ControlError as e:
        context.abort(_code_for(e), _one_line(str(e)) or type(e).__name__)
    except Exception as e:
        logger.exception("gRPC {} failed", name)
        context.abort(
            grpc.StatusCode.INTERNAL,
            _one_line(f"internal error in {name} ({type(e).__name__}: {e}); see the agent's log"),
        )
    finally:
        _traceparent.reset(token)


Unary = Callable[[Any, Any, grpc.ServicerContext], Any]


def _rpc(method: Unary) -> Unary:
    @functools.wraps(method)
    def serve_one(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        with _serving(method.__name__, context):
            return method(self, request, context)

    return serve_one


class ControlServicer(pb_grpc.ControlServicer):
    def __init__(
        self, api: AgentAPI, watch_per_client: int = 4, watch_idle_s: float = 300.0
    ) -> None:
        self._api = api
        self._watch = WatchSlots(MAX_WATCHERS, watch_per_client, watch_idle_s)

    @_rpc
    def GetStatus(self, request: pb.GetStatusRequest, context: Any) -> pb.Status:
        return document(pb.Status, self._api.status())

    @_rpc
    def RtAction(self, request: pb.RtActionRequest, context: Any) -> pb.Status:
        return document(pb.Status, self._api.rt_action(check_action(request.action)))

    @_rpc
    def SubmitJob(self, request: pb.SubmitJobRequest, context: Any) -> pb.Job:
        name, waypoints = check_job(request)
        return document(pb.Job, self._api.submit_job(name, waypoints))

    @_rpc
    def GetJob(self, request: pb.GetJobRequest, context: Any) -> pb.Job:
        return document(pb.Job, self._api.get_job(check_job_id(request.id)))

    @_rpc
    def ListJobs(self, request: pb.ListJobsRequest, context: Any) -> pb.ListJobsResponse:
        state, limit = check_state(request.state), check_limit(request)
        jobs = self._api.list_jobs(state, limit)
        return pb.ListJobsResponse(jobs=[document(pb.Job, job) for job in jobs])

    @_rpc
    def CancelJob(self, request: pb.CancelJobRequest, context: Any) -> pb.Job:
        return document(pb.Job, self._api.cancel_job(check_job_id(request.id)))

    @_rpc
    def GetCheckpointInfo(
        self, request: pb.GetCheckpointInfoRequest, context: Any
    ) -> pb.CheckpointInfo:
        return document(pb.CheckpointInfo, self._api.checkpoint_info())

    @_rpc
    def GetJournal(self, request: pb.GetJournalRequest, context: Any) -> pb.Journal:
        return document(pb.Journal, self._api.journal_info(request.limit))

    @_rpc
    def GetTrace(self, request: pb.GetTraceRequest, context: Any) -> pb.Trace:
        return document(pb.Trace, self._api.get_trace(check_trace_id(request.trace_id)))

    @_rpc
    def ListTraces(self, request: pb.ListTracesRequest, context: Any) -> pb.TraceList:
        return document(pb.TraceList, self._api.list_traces(**check_traces_query(request)))

    @_rpc
    def ListAlerts(self, request: pb.ListAlertsRequest, context: Any) -> pb.AlertList:
        return document(pb.AlertList, self._api.list_alerts(all=request.all))

    @_rpc
    def Diagnose(self, request: pb.DiagnoseRequest, context: Any) -> pb.Diagnosis:
        if request.since_ns < 0:
            raise InvalidArgument("since_ns", "must be 0 (15 minutes) or a unix time in ns")
        return document(pb.Diagnosis, self._api.diagnose(request.since_ns))

    @_rpc
    def SearchLogs(self, request: pb.SearchLogsRequest, context: Any) -> pb.LogList:
        return document(pb.LogList, self._api.search_logs(check_logs_query(request)))

    @_rpc
    def GetLogLevel(self, request: pb.GetLogLevelRequest, context: Any) -> pb.LogLevels:
        return document(pb.LogLevels, self._api.get_log_level())

    @_rpc
    def SetLogLevel(self, request: pb.SetLogLevelRequest, context: Any) -> pb.LogLevels:
        level, target = check_level(request.level), check_target(request.target)
        return document(pb.LogLevels, self._api.set_log_level(level, target))

    @_rpc
    def GetTraceSampling(
        self, request: pb.GetTraceSamplingRequest, context: Any
    ) -> pb.TraceSampling:
        return document(pb.TraceSampling, self._api.get_trace_sampling())

    @_rpc
    def SetTraceSampling(
        self, request: pb.SetTraceSamplingRequest, context: Any
    ) -> pb.TraceSampling:
        every, ratio = check_sampling(request)
        return document(pb.TraceSampling, self._api.set_trace_sampling(every, ratio))

    @_rpc
    def SetAffinity(self, request: pb.SetAffinityRequest, context: Any) -> pb.Placement:
        cpus = check_cpus(request.cpus)
        isolate = request.isolate if request.HasField("isolate") else None
        return document(pb.Placement, self._api.set_affinity(cpus, isolate))

    @_rpc
    def SetNumaNode(self, request: pb.SetNumaNodeRequest, context: Any) -> pb.Placement:
        return document(pb.Placement, self._api.set_numa_node(check_node(request.node)))

    @_rpc
    def GetPlacement(self, request: pb.GetPlacementRequest, context: Any) -> pb.Placement:
        return document(pb.Placement, self._api.placement())

    @_rpc
    def ClusterStatus(
        self, request: pb.ClusterStatusRequest, context: Any
    ) -> pb.ClusterStatusReply:
        return document(pb.ClusterStatusReply, self._api.cluster_status())

    @_rpc
    def ClusterFailover(
        self, request: pb.ClusterFailoverRequest, context: Any
    ) -> pb.ClusterFailoverReply:
        to = check_failover_to(request)
        return document(pb.ClusterFailoverReply, self._api.cluster_failover(to))

    def Watch(self, request: pb.WatchRequest, context: grpc.ServicerContext) -> Iterator[pb.Event]:
        with _serving("Watch", context):
            kinds = check_kinds(request.kinds)
            closing: list[Callable[[], None]] = []
            slot = self._watch.acquire(client_of(context.peer()), lambda: closing[0]())
            try:
                sub = self._api.subscribe(kinds)
            except BaseException:
                slot.release()
                raise
            closing.append(sub.close)
        try:
            # the subscription blocks its reader: closing it is what ends the
            # loop below when the client goes away or the server stops
            if not context.add_callback(sub.close):
                return
            # headers now tell the client that no later event will be missed
            context.send_initial_metadata(())
            events = iter(sub)
            while True:
                with _serving("Watch", context):
                    ev = next(events, None)
                    if ev is None and slot.idle:
                        raise Busy(
                            f"watch stream closed after {self._watch.idle_s:g} s without "
                            "events, to free its slot; watch again to resume"
                        )
                    if ev is None:
                        return
                    msg = event_message(ev)
                yield msg
                slot.touch()
        finally:
            sub.close()
            slot.release()


# ---- authentication -------------------------------------------------------------


class BearerAuth(grpc.ServerInterceptor):
    """Mutating Control RPCs need `authorization: Bearer <token>`; with
    every_call, all Control RPCs do. Other services (health, reflection) never."""

    def __init__(self, token: str, every_call: bool = False) -> None:
        self._expected = f"Bearer {token}".encode()
        self._every_call = every_call

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        service, _, method = details.method.lstrip("/").partition("/")
        if service == SERVICE_NAME and (self._every_call or method in MUTATING):
            problem = self._problem(method, details.invocation_metadata)
            if problem:
                return _deny(problem)
        return continuation(details)

    def _problem(self, method: str, metadata: Sequence[tuple[str, Any]] | None) -> str | None:
        given = _metadata(metadata, "authorization")
        if not given:
            why = "changes the node and needs" if method in MUTATING else "needs, on this agent,"
            return f"{method} {why} a bearer token: pass --token-file FILE or set RTCTL_TOKEN"
        # compare every value in full: the time taken says nothing about the token
        ok = [hmac.compare_digest(v.encode("utf-8", "replace"), self._expected) for v in given]
        if any(ok):
            return None
        if not all(v.startswith("Bearer ") for v in given):
            return "malformed authorization metadata: expected 'Bearer <token>'"
        return f"invalid bearer token for {method}"


def _deny(message: str) -> grpc.RpcMethodHandler:
    def deny(request: bytes, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    # no deserializer: a refused request is never parsed
    return grpc.unary_unary_rpc_method_handler(deny)


# ---- the server ---------------------------------------------------------------


def _read(field: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise InvalidArgument(field, f"cannot read {path}: {e.strerror}") from None


def _credentials(config: AgentConfig) -> grpc.ServerCredentials | None:
    if not config.tls_cert:
        return None
    pair = (_read("tls_key", config.tls_key), _read("tls_cert", config.tls_cert))
    if config.tls_client_ca:
        return grpc.ssl_server_credentials(
            [pair],
            root_certificates=_read("tls_client_ca", config.tls_client_ca),
            require_client_auth=True,
        )
    return grpc.ssl_server_credentials([pair])


def start(api: AgentAPI, config: AgentConfig) -> tuple[grpc.Server, int]:
    """serve(), and also the port bound (what the OS chose for port 0)."""
    problem = plaintext_problem(config)
    if problem:
        raise InvalidArgument(f"listen {config.listen}", problem)
    if config.auth == "all" and not config.token:
        raise InvalidArgument("auth", "'all' needs a token")
    creds = _credentials(config)
    auth = BearerAuth(config.token, every_call=config.auth == "all") if config.token else None
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="grpc"),
        interceptors=[auth] if auth else [],
        options=[
            ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
            # without this a second agent could bind the same port and split the calls
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
    )
    servicer = ControlServicer(api, config.watch_per_client, config.watch_idle_s)
    pb_grpc.add_ControlServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        if creds is None:
            port = server.add_insecure_port(config.listen)
        else:
            port = server.add_secure_port(config.listen, creds)
    except RuntimeError:
        port = 0
    if port == 0:
        raise ControlError(
            f"cannot listen on {config.listen}: the port is in use or the address is not local"
        )
    if creds is None and not is_loopback(config.listen):
        logger.warning(
            "gRPC on {} without TLS (--insecure): anyone on the network can read it{}",
            config.listen,
            " and see the token" if config.token else "",
        )
    server.start()
    return server, port


def serve(api: AgentAPI, config: AgentConfig) -> grpc.Server:
    """Start serving `api` on config.listen; stop with server.stop(grace)."""
    return start(api, config)[0]
