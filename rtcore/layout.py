"""numpy views of the shared-memory segment defined in include/rtcore/layout.h.

The dtypes below mirror the C structs field for field, padding included, so
that a view over the mapped bytes reads exactly what the RT process writes.
tests/rtcore/test_layout.py compiles the header and checks every offset and
size here against it.
"""

from __future__ import annotations

import numpy as np

MAGIC = 0x313045524F435452  # "RTCORE01" little-endian
ABI_VERSION = 2
CACHELINE = 64

LOG_RING_CAP = 4096
SPAN_RING_CAP = 4096
EVENT_RING_CAP = 1024
CMD_RING_CAP = 256
JOURNAL_RING_CAP = 64
CKPT_SLOTS = 4
CKPT_MAX = 16384
STRINGS_MAX = 256
STRING_LEN = 128
HIST_BUCKETS = 640
LOG_ARGS = 8
SPAN_ATTRS = 6
CMD_ARGS = 9
SAMPLE_PPM_ALL = 1_000_000
NO_STRING = 0xFFFF
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
        ("trace_flags", "u1"),
        ("_pad0", "u1", (2,)),
        ("tid", "<u4"),
        ("repeats", "<u4"),
        ("args", "<i8", (LOG_ARGS,)),
        ("_pad1", "u1", (8,)),
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
        ("status_msg_id", "<u2"),
        ("kind", "u1"),
        ("status", "u1"),
        ("flags", "u1"),
        ("nattrs", "u1"),
        ("attr_key", "<u2", (SPAN_ATTRS,)),
        ("attr_float_mask", "u1"),
        ("_pad0", "u1", (3,)),
        ("attrs", "<i8", (SPAN_ATTRS,)),
    ]
)

EVENT_REC = _struct(
    [
        ("ts_ns", "<i8"),
        ("cycle", "<u8"),
        ("kind", "<u2"),
        ("trace_flags", "u1"),
        ("_pad0", "u1"),
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
        ("trace_flags", "u1"),
        ("_pad0", "u1", (3,)),
        ("trace_id", "u1", (16,)),
        ("span_id", "u1", (8,)),
        ("job_id", "<u8"),
        ("epoch", "<u8"),
        ("args", "<f8", (CMD_ARGS,)),
    ]
)

JOURNAL_REC = _struct(
    [
        ("kind", "<u4"),
        ("pid", "<i4"),
        ("epoch", "<u8"),
        ("cycle", "<u8"),
        ("mono_ns", "<i8"),
        ("real_ns", "<i8"),
        ("cycles", "<u8"),
        ("_pad0", "u1", (16,)),
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

CLOCK = _struct(
    [
        ("seq", "<u8"),
        ("mono_ns", "<i8"),
        ("real_ns", "<i8"),
        ("bracket_ns", "<i8"),
        ("_pad0", "u1", (CACHELINE - 32,)),
    ]
)

CONTROL = _struct(
    [
        ("seq", "<u8"),
        ("mode", "<u4"),
        ("active", "<u4"),
        ("epoch", "<u8"),
        ("lease_ns", "<i8"),
        ("lease_timeout_ns", "<i8"),
        ("log_level", "<u4"),
        ("sample_ppm", "<u4"),
        ("node_id", "<u8"),
        ("_pad0", "u1", (CACHELINE - 56,)),
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
        ("cmds_stale", "<u8"),
        ("control_torn", "<u8"),
        ("faults_suppressed", "<u8"),
        ("spans_dropped", "<u8"),
        ("adopted_seq", "<u8"),
        ("adopted_cycle", "<u8"),
        ("adopted_count", "<u8"),
        ("inbound_refused", "<u8"),
        ("actuated_cycles", "<u8"),
        ("act_epoch", "<u8"),
        ("act_first_cycle", "<u8"),
        ("act_first_mono_ns", "<i8"),
        ("act_first_real_ns", "<i8"),
        ("act_last_cycle", "<u8"),
        ("act_last_mono_ns", "<i8"),
        ("act_interval_cycles", "<u8"),
        ("traced_cycles", "<u8"),
        ("traced_exec_ns", "<u8"),
        ("untraced_cycles", "<u8"),
        ("untraced_exec_ns", "<u8"),
        ("cpu_mask", "<u8"),
        ("wake_hist", "<u8", (HIST_BUCKETS,)),
        ("exec_hist", "<u8", (HIST_BUCKETS,)),
        ("task_name", "S64"),
        ("degraded_text", f"S{TEXT_LEN}"),
        ("_pad_end", "u1", (8,)),
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
        ("origin", "<u8"),
        ("task_id", "<u4"),
        ("state_size", "<u4"),
        ("flags", "<u4"),
        ("crc", "<u4"),
        ("data", "u1", (CKPT_MAX,)),
    ]
)

SEGMENT = _struct(
    [
        ("header", HEADER),
        ("clock", CLOCK),
        ("control", CONTROL),
        ("status", STATUS),
        ("strings", STRINGS),
        ("ckpt", CKPT_SLOT, (CKPT_SLOTS,)),
        ("inbound", CKPT_SLOT),
        ("log_ring", _ring(LOG_REC, LOG_RING_CAP)),
        ("span_ring", _ring(SPAN_REC, SPAN_RING_CAP)),
        ("event_ring", _ring(EVENT_REC, EVENT_RING_CAP)),
        ("cmd_ring", _ring(CMD_REC, CMD_RING_CAP)),
        ("journal_ring", _ring(JOURNAL_REC, JOURNAL_RING_CAP)),
    ]
)

# enum values shared with layout.h (numpy-free for the RT process's start-up)
from rtcore.enums import (  # noqa: E402,F401
    CKPT_SHADOW,
    CMD_NOP,
    CMD_TASK,
    DEGRADED_BITS,
    EV_ACTUATING,
    EV_ADOPTED,
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
    "journal": ("journal_ring", JOURNAL_REC),
}
