"""numpy views of the shared-memory segment defined in include/rtcore/layout.h.

The dtypes below mirror the C structs field for field, padding included, so
that a view over the mapped bytes reads exactly what the RT process writes.
tests/rtcore/test_layout.py compiles the header and checks every offset and
size here against it.
"""

from __future__ import annotations

import numpy as np

MAGIC = 0x313045524F435452  # "RTCORE01" little-endian
ABI_VERSION = 1
CACHELINE = 64

LOG_RING_CAP = 4096
SPAN_RING_CAP = 4096
EVENT_RING_CAP = 1024
CMD_RING_CAP = 256
CKPT_SLOTS = 4
CKPT_MAX = 16384
STRINGS_MAX = 256
STRING_LEN = 96
HIST_BUCKETS = 640
LOG_ARGS = 8
CMD_ARGS = 10
TEXT_LEN = 512


def _struct(fields: list[tuple]) -> np.dtype:
    return np.dtype(fields, align=False)


LOG_REC = _struct(
    [
        ("ts_ns", "<i8"),
        ("cycle", "<u8"),
        ("trace_id", "u1", (16,)),
        ("span_id", "u1", (8,)),
        ("template_id", "<u2"),
        ("level", "u1"),
        ("nargs", "u1"),
        ("float_mask", "u1"),
        ("_pad0", "u1", (3,)),
        ("tid", "<u4"),
        ("_pad1", "<u4"),
        ("args", "<i8", (LOG_ARGS,)),
        ("_pad2", "u1", (8,)),
    ]
)

SPAN_REC = _struct(
    [
        ("trace_id", "u1", (16,)),
        ("span_id", "u1", (8,)),
        ("parent_span_id", "u1", (8,)),
        ("start_ns", "<i8"),
        ("end_ns", "<i8"),
        ("cycle", "<u8"),
        ("name_id", "<u2"),
        ("status", "u1"),
        ("flags", "u1"),
        ("_pad0", "<u4"),
    ]
)

EVENT_REC = _struct(
    [
        ("ts_ns", "<i8"),
        ("cycle", "<u8"),
        ("kind", "<u2"),
        ("_pad0", "<u2"),
        ("_pad1", "<u4"),
        ("trace_id", "u1", (16,)),
        ("span_id", "u1", (8,)),
        ("a", "<i8"),
        ("b", "<i8"),
    ]
)

CMD_REC = _struct(
    [
        ("seq", "<u8"),
        ("kind", "<u2"),
        ("nargs", "<u2"),
        ("_pad0", "<u4"),
        ("trace_id", "u1", (16,)),
        ("span_id", "u1", (8,)),
        ("job_id", "<u8"),
        ("args", "<f8", (CMD_ARGS,)),
    ]
)

RING_HDR = _struct(
    [
        ("head", "<u8"),
        ("pushed", "<u8"),
        ("dropped", "<u8"),
        ("_pad0", "u1", (CACHELINE - 24,)),
        ("tail", "<u8"),
        ("_pad1", "u1", (CACHELINE - 8,)),
        ("capacity", "<u4"),
        ("record_size", "<u4"),
        ("_pad2", "u1", (CACHELINE - 8,)),
    ]
)


def _ring(rec: np.dtype, cap: int) -> np.dtype:
    return _struct([("hdr", RING_HDR), ("recs", rec, (cap,))])


HEADER = _struct(
    [
        ("magic", "<u8"),
        ("abi_version", "<u4"),
        ("header_size", "<u4"),
        ("segment_size", "<u8"),
        ("owner_pid", "<i4"),
        ("ckpt_slots", "<u4"),
        ("ckpt_max", "<u4"),
        ("strings_max", "<u4"),
        ("created_ns", "<i8"),
        ("_pad0", "u1", (CACHELINE - 48,)),
    ]
)

CONTROL = _struct(
    [
        ("mode", "<u4"),
        ("active", "<u4"),
        ("epoch", "<u8"),
        ("lease_ns", "<i8"),
        ("lease_timeout_ns", "<i8"),
        ("log_level", "<u4"),
        ("trace_every", "<u4"),
        ("generation", "<u8"),
        ("_pad0", "u1", (CACHELINE - 48,)),
    ]
)

STATUS = _struct(
    [
        ("heartbeat", "<u8"),
        ("cycles", "<u8"),
        ("misses", "<u8"),
        ("skipped_periods", "<u8"),
        ("state", "<u4"),
        ("degraded", "<u4"),
        ("pid", "<i4"),
        ("tid", "<i4"),
        ("priority", "<i4"),
        ("numa_node", "<i4"),
        ("wake_mode", "<u4"),
        ("actuating", "<u4"),
        ("period_ns", "<i8"),
        ("spin_ns", "<i8"),
        ("start_ns", "<i8"),
        ("last_wake_ns", "<i8"),
        ("last_wake_latency_ns", "<u8"),
        ("last_exec_ns", "<u8"),
        ("wake_max_ns", "<u8"),
        ("exec_max_ns", "<u8"),
        ("ckpt_seq", "<u8"),
        ("ckpt_cycle", "<u8"),
        ("ckpt_ns", "<i8"),
        ("restored_seq", "<u8"),
        ("restored_cycle", "<u8"),
        ("cmds_applied", "<u8"),
        ("cmds_failed", "<u8"),
        ("last_cmd_seq", "<u8"),
        ("epoch", "<u8"),
        ("task_rc", "<i8"),
        ("cpu_mask", "<u8"),
        ("wake_hist", "<u8", (HIST_BUCKETS,)),
        ("exec_hist", "<u8", (HIST_BUCKETS,)),
        ("task_name", "S64"),
        ("degraded_text", f"S{TEXT_LEN}"),
        ("_pad_end", "u1", (40,)),
    ]
)

STRINGS = _struct(
    [
        ("count", "<u4"),
        ("_pad0", "u1", (CACHELINE - 4,)),
        ("text", f"S{STRING_LEN}", (STRINGS_MAX,)),
    ]
)

CKPT_SLOT = _struct(
    [
        ("seqlock", "<u8"),
        ("seq", "<u8"),
        ("cycle", "<u8"),
        ("mono_ns", "<i8"),
        ("epoch", "<u8"),
        ("task_id", "<u4"),
        ("state_size", "<u4"),
        ("crc", "<u4"),
        ("_pad0", "u1", (CACHELINE - 52,)),
        ("data", "u1", (CKPT_MAX,)),
    ]
)

SEGMENT = _struct(
    [
        ("header", HEADER),
        ("control", CONTROL),
        ("status", STATUS),
        ("strings", STRINGS),
        ("ckpt", CKPT_SLOT, (CKPT_SLOTS,)),
        ("log_ring", _ring(LOG_REC, LOG_RING_CAP)),
        ("span_ring", _ring(SPAN_REC, SPAN_RING_CAP)),
        ("event_ring", _ring(EVENT_REC, EVENT_RING_CAP)),
        ("cmd_ring", _ring(CMD_REC, CMD_RING_CAP)),
    ]
)

# enum values shared with layout.h (numpy-free for the RT process's start-up)
from rtcore.enums import (  # noqa: E402,F401
    CMD_NOP,
    CMD_TASK,
    DEGRADED_BITS,
    EV_ACTUATING,
    EV_CHECKPOINT,
    EV_CMD_ACK,
    EV_DEADLINE_MISS,
    EV_STARTED,
    EV_STATE,
    EV_TASK,
    LEVELS,
    MODE_HOLD,
    MODE_RUN,
    MODE_SAFE,
    MODE_STOP,
    STATE_NAMES,
    STATE_NAMES_INV,
    WAKE_MODES,
)

RINGS = {
    "log": ("log_ring", LOG_REC),
    "span": ("span_ring", SPAN_REC),
    "event": ("event_ring", EVENT_REC),
    "cmd": ("cmd_ring", CMD_REC),
}
