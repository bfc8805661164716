from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RtAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RT_ACTION_UNSPECIFIED: _ClassVar[RtAction]
    RT_ACTION_START: _ClassVar[RtAction]
    RT_ACTION_STOP: _ClassVar[RtAction]
    RT_ACTION_RUN: _ClassVar[RtAction]
    RT_ACTION_HOLD: _ClassVar[RtAction]
    RT_ACTION_SAFE: _ClassVar[RtAction]
RT_ACTION_UNSPECIFIED: RtAction
RT_ACTION_START: RtAction
RT_ACTION_STOP: RtAction
RT_ACTION_RUN: RtAction
RT_ACTION_HOLD: RtAction
RT_ACTION_SAFE: RtAction

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RtActionRequest(_message.Message):
    __slots__ = ("action",)
    ACTION_FIELD_NUMBER: _ClassVar[int]
    action: RtAction
    def __init__(self, action: _Optional[_Union[RtAction, str]] = ...) -> None: ...

class Latency(_message.Message):
    __slots__ = ("p50", "p99", "max")
    P50_FIELD_NUMBER: _ClassVar[int]
    P99_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    p50: float
    p99: float
    max: float
    def __init__(self, p50: _Optional[float] = ..., p99: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...

class RtStatus(_message.Message):
    __slots__ = ("state", "pid", "cycles", "misses", "restarts", "period_us", "latency_us")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    CYCLES_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    PERIOD_US_FIELD_NUMBER: _ClassVar[int]
    LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    state: str
    pid: int
    cycles: int
    misses: int
    restarts: int
    period_us: int
    latency_us: Latency
    def __init__(self, state: _Optional[str] = ..., pid: _Optional[int] = ..., cycles: _Optional[int] = ..., misses: _Optional[int] = ..., restarts: _Optional[int] = ..., period_us: _Optional[int] = ..., latency_us: _Optional[_Union[Latency, _Mapping]] = ...) -> None: ...

class CheckpointSummary(_message.Message):
    __slots__ = ("seq", "age_ms")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    AGE_MS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    age_ms: float
    def __init__(self, seq: _Optional[int] = ..., age_ms: _Optional[float] = ...) -> None: ...

class ClusterStatus(_message.Message):
    __slots__ = ("leader", "term", "has_quorum")
    LEADER_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    HAS_QUORUM_FIELD_NUMBER: _ClassVar[int]
    leader: str
    term: int
    has_quorum: bool
    def __init__(self, leader: _Optional[str] = ..., term: _Optional[int] = ..., has_quorum: _Optional[bool] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("node_id", "role", "rt", "checkpoint", "cluster", "details_json")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    RT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    role: str
    rt: RtStatus
    checkpoint: CheckpointSummary
    cluster: ClusterStatus
    details_json: str
    def __init__(self, node_id: _Optional[str] = ..., role: _Optional[str] = ..., rt: _Optional[_Union[RtStatus, _Mapping]] = ..., checkpoint: _Optional[_Union[CheckpointSummary, _Mapping]] = ..., cluster: _Optional[_Union[ClusterStatus, _Mapping]] = ..., details_json: _Optional[str] = ...) -> None: ...

class Waypoint(_message.Message):
    __slots__ = ("t", "q")
    T_FIELD_NUMBER: _ClassVar[int]
    Q_FIELD_NUMBER: _ClassVar[int]
    t: float
    q: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, t: _Optional[float] = ..., q: _Optional[_Iterable[float]] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("name", "waypoints")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WAYPOINTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    waypoints: _containers.RepeatedCompositeFieldContainer[Waypoint]
    def __init__(self, name: _Optional[str] = ..., waypoints: _Optional[_Iterable[_Union[Waypoint, _Mapping]]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "name", "state", "details_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    state: str
    details_json: str
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., state: _Optional[str] = ..., details_json: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("state", "limit")
    STATE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    state: str
    limit: int
    def __init__(self, state: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class GetCheckpointInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetTraceRequest(_message.Message):
    __slots__ = ("trace_id",)
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    def __init__(self, trace_id: _Optional[str] = ...) -> None: ...

class Trace(_message.Message):
    __slots__ = ("details_json",)
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    details_json: str
    def __init__(self, details_json: _Optional[str] = ...) -> None: ...

class ListTracesRequest(_message.Message):
    __slots__ = ("slow_ms", "since_ns", "name", "errors", "limit")
    SLOW_MS_FIELD_NUMBER: _ClassVar[int]
    SINCE_NS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    slow_ms: float
    since_ns: int
    name: str
    errors: bool
    limit: int
    def __init__(self, slow_ms: _Optional[float] = ..., since_ns: _Optional[int] = ..., name: _Optional[str] = ..., errors: _Optional[bool] = ..., limit: _Optional[int] = ...) -> None: ...

class TraceList(_message.Message):
    __slots__ = ("details_json",)
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    details_json: str
    def __init__(self, details_json: _Optional[str] = ...) -> None: ...

class ListAlertsRequest(_message.Message):
    __slots__ = ("all",)
    ALL_FIELD_NUMBER: _ClassVar[int]
    all: bool
    def __init__(self, all: _Optional[bool] = ...) -> None: ...

class AlertList(_message.Message):
    __slots__ = ("details_json",)
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    details_json: str
    def __init__(self, details_json: _Optional[str] = ...) -> None: ...

class DiagnoseRequest(_message.Message):
    __slots__ = ("since_ns",)
    SINCE_NS_FIELD_NUMBER: _ClassVar[int]
    since_ns: int
    def __init__(self, since_ns: _Optional[int] = ...) -> None: ...

class Diagnosis(_message.Message):
    __slots__ = ("details_json",)
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    details_json: str
    def __init__(self, details_json: _Optional[str] = ...) -> None: ...

class SearchLogsRequest(_message.Message):
    __slots__ = ("level", "event", "since_ns", "until_ns", "trace_id", "node", "text", "limit", "after_seq")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    SINCE_NS_FIELD_NUMBER: _ClassVar[int]
    UNTIL_NS_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    level: str
    event: str
    since_ns: int
    until_ns: int
    trace_id: str
    node: str
    text: str
    limit: int
    after_seq: int
    def __init__(self, level: _Optional[str] = ..., event: _Optional[str] = ..., since_ns: _Optional[int] = ..., until_ns: _Optional[int] = ..., trace_id: _Optional[str] = ..., node: _Optional[str] = ..., text: _Optional[str] = ..., limit: _Optional[int] = ..., after_seq: _Optional[int] = ...) -> None: ...

class LogList(_message.Message):
    __slots__ = ("details_json",)
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    details_json: str
    def __init__(self, details_json: _Optional[str] = ...) -> None: ...

class GetJournalRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class Journal(_message.Message):
    __slots__ = ("details_json",)
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    details_json: str
    def __init__(self, details_json: _Optional[str] = ...) -> None: ...

class CheckpointInfo(_message.Message):
    __slots__ = ("details_json",)
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    details_json: str
    def __init__(self, details_json: _Optional[str] = ...) -> None: ...

class GetLogLevelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LogLevels(_message.Message):
    __slots__ = ("rt", "agent", "details_json")
    RT_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    rt: str
    agent: str
    details_json: str
    def __init__(self, rt: _Optional[str] = ..., agent: _Optional[str] = ..., details_json: _Optional[str] = ...) -> None: ...

class SetLogLevelRequest(_message.Message):
    __slots__ = ("level", "target")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    level: str
    target: str
    def __init__(self, level: _Optional[str] = ..., target: _Optional[str] = ...) -> None: ...

class GetTraceSamplingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TraceSampling(_message.Message):
    __slots__ = ("rt_every_cycles", "ratio", "details_json")
    RT_EVERY_CYCLES_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    rt_every_cycles: int
    ratio: float
    details_json: str
    def __init__(self, rt_every_cycles: _Optional[int] = ..., ratio: _Optional[float] = ..., details_json: _Optional[str] = ...) -> None: ...

class SetTraceSamplingRequest(_message.Message):
    __slots__ = ("rt_every_cycles", "ratio")
    RT_EVERY_CYCLES_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    rt_every_cycles: int
    ratio: float
    def __init__(self, rt_every_cycles: _Optional[int] = ..., ratio: _Optional[float] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("kinds",)
    KINDS_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kinds: _Optional[_Iterable[str]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("kind", "ts_ns", "node_id", "message", "level", "fields_json", "trace_id", "span_id")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TS_NS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    FIELDS_JSON_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    kind: str
    ts_ns: int
    node_id: str
    message: str
    level: str
    fields_json: str
    trace_id: str
    span_id: str
    def __init__(self, kind: _Optional[str] = ..., ts_ns: _Optional[int] = ..., node_id: _Optional[str] = ..., message: _Optional[str] = ..., level: _Optional[str] = ..., fields_json: _Optional[str] = ..., trace_id: _Optional[str] = ..., span_id: _Optional[str] = ...) -> None: ...

class SetAffinityRequest(_message.Message):
    __slots__ = ("cpus", "isolate")
    CPUS_FIELD_NUMBER: _ClassVar[int]
    ISOLATE_FIELD_NUMBER: _ClassVar[int]
    cpus: str
    isolate: bool
    def __init__(self, cpus: _Optional[str] = ..., isolate: _Optional[bool] = ...) -> None: ...

class SetNumaNodeRequest(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: int
    def __init__(self, node: _Optional[int] = ...) -> None: ...

class GetPlacementRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClusterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClusterMember(_message.Message):
    __slots__ = ("node_id", "raft", "listen", "witness", "is_self", "connected")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    RAFT_FIELD_NUMBER: _ClassVar[int]
    LISTEN_FIELD_NUMBER: _ClassVar[int]
    WITNESS_FIELD_NUMBER: _ClassVar[int]
    IS_SELF_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    raft: str
    listen: str
    witness: bool
    is_self: bool
    connected: bool
    def __init__(self, node_id: _Optional[str] = ..., raft: _Optional[str] = ..., listen: _Optional[str] = ..., witness: _Optional[bool] = ..., is_self: _Optional[bool] = ..., connected: _Optional[bool] = ...) -> None: ...

class ReplicationLag(_message.Message):
    __slots__ = ("p50", "p99", "max", "count")
    P50_FIELD_NUMBER: _ClassVar[int]
    P99_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    p50: float
    p99: float
    max: float
    count: int
    def __init__(self, p50: _Optional[float] = ..., p99: _Optional[float] = ..., max: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class ClusterStatusReply(_message.Message):
    __slots__ = ("node_id", "role", "term", "leader", "has_quorum", "lease_ms", "lease_age_ms", "elections", "commit_index", "last_applied", "checkpoint_lag_ms", "replication_lag_ms", "healthy", "rt_state", "details_json", "members")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    HAS_QUORUM_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    LEASE_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    ELECTIONS_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_APPLIED_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_LAG_MS_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_LAG_MS_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    RT_STATE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    role: str
    term: int
    leader: str
    has_quorum: bool
    lease_ms: int
    lease_age_ms: float
    elections: int
    commit_index: int
    last_applied: int
    checkpoint_lag_ms: float
    replication_lag_ms: ReplicationLag
    healthy: bool
    rt_state: str
    details_json: str
    members: _containers.RepeatedCompositeFieldContainer[ClusterMember]
    def __init__(self, node_id: _Optional[str] = ..., role: _Optional[str] = ..., term: _Optional[int] = ..., leader: _Optional[str] = ..., has_quorum: _Optional[bool] = ..., lease_ms: _Optional[int] = ..., lease_age_ms: _Optional[float] = ..., elections: _Optional[int] = ..., commit_index: _Optional[int] = ..., last_applied: _Optional[int] = ..., checkpoint_lag_ms: _Optional[float] = ..., replication_lag_ms: _Optional[_Union[ReplicationLag, _Mapping]] = ..., healthy: _Optional[bool] = ..., rt_state: _Optional[str] = ..., details_json: _Optional[str] = ..., members: _Optional[_Iterable[_Union[ClusterMember, _Mapping]]] = ...) -> None: ...

class ClusterFailoverRequest(_message.Message):
    __slots__ = ("to",)
    TO_FIELD_NUMBER: _ClassVar[int]
    to: str
    def __init__(self, to: _Optional[str] = ...) -> None: ...

class ClusterFailoverReply(_message.Message):
    __slots__ = ("from_node", "to_node", "term", "gap_ms", "details_json")
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    GAP_MS_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    from_node: str
    to_node: str
    term: int
    gap_ms: float
    details_json: str
    def __init__(self, from_node: _Optional[str] = ..., to_node: _Optional[str] = ..., term: _Optional[int] = ..., gap_ms: _Optional[float] = ..., details_json: _Optional[str] = ...) -> None: ...

class Placement(_message.Message):
    __slots__ = ("cpus", "isolated", "numa_node", "details_json")
    CPUS_FIELD_NUMBER: _ClassVar[int]
    ISOLATED_FIELD_NUMBER: _ClassVar[int]
    NUMA_NODE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    cpus: str
    isolated: bool
    numa_node: int
    details_json: str
    def __init__(self, cpus: _Optional[str] = ..., isolated: _Optional[bool] = ..., numa_node: _Optional[int] = ..., details_json: _Optional[str] = ...) -> None: ...
