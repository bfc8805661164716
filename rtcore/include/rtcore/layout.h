/*
 * rtcore shared-memory segment layout: the single source of truth.
 *
 * One segment per RT instance (POSIX shm, /dev/shm/NAME). The RT process and
 * the control plane map the same bytes; Python reads them through numpy
 * structured dtypes (rtcore/layout.py); tests/rtcore/test_layout.py compiles
 * this header and checks every offset and size there against it. Every field has a fixed width; counters shared
 * across processes are uint64_t accessed with __atomic builtins, never
 * _Atomic types, so Cython and numpy see plain integers.
 *
 * Bump RTC_ABI_VERSION on any change to this file.
 */
#ifndef RTCORE_LAYOUT_H
#define RTCORE_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#define RTC_MAGIC 0x313045524F435452ULL /* "RTCORE01" little-endian */
#define RTC_ABI_VERSION 2u
#define RTC_CACHELINE 64

/* Ring capacities are powers of two (index masks). */
#define RTC_LOG_RING_CAP 4096u
#define RTC_SPAN_RING_CAP 4096u
#define RTC_EVENT_RING_CAP 1024u
#define RTC_CMD_RING_CAP 256u
/* Actuation intervals: two records per interval (start, end). The loop only
 * starts an interval when the ring has room for both, so none is ever lost. */
#define RTC_JOURNAL_RING_CAP 64u

#define RTC_CKPT_SLOTS 4u
#define RTC_CKPT_MAX 16384u  /* bytes of task state one slot holds */

#define RTC_STRINGS_MAX 256u
#define RTC_STRING_LEN 128u

#define RTC_HIST_BUCKETS 640u
#define RTC_LOG_ARGS 8u
#define RTC_SPAN_ATTRS 6u
#define RTC_CMD_ARGS 9u
#define RTC_TEXT_LEN 512u

/* Control-plane requests (control.mode) and RT states (status.state). */
enum rtc_mode {
    RTC_MODE_RUN = 0,
    RTC_MODE_HOLD = 1,
    RTC_MODE_SAFE = 2,
    RTC_MODE_STOP = 3,
};

enum rtc_state {
    RTC_STATE_INIT = 0,
    RTC_STATE_RUN = 1,
    RTC_STATE_HOLD = 2,
    RTC_STATE_SAFE = 3,
    RTC_STATE_STOPPED = 4,
    RTC_STATE_FAULT = 5,
};

/* status.degraded bits: start-up steps that were refused under --allow-degraded. */
enum rtc_degraded {
    RTC_DEG_MLOCK = 1u << 0,
    RTC_DEG_AFFINITY = 1u << 1,
    RTC_DEG_SCHED = 1u << 2,
    RTC_DEG_NUMA = 1u << 3,
    RTC_DEG_PM_QOS = 1u << 4,  /* CPU idle states not held shallow (best effort, never fatal) */
};

/* W3C trace-flags bits carried by every record with a trace context. */
enum rtc_trace_flags {
    RTC_TRACE_SAMPLED = 1u << 0,
};

/* OpenTelemetry span kinds. */
enum rtc_span_kind {
    RTC_SPAN_INTERNAL = 0,
    RTC_SPAN_SERVER = 1,
    RTC_SPAN_CLIENT = 2,
    RTC_SPAN_PRODUCER = 3,
    RTC_SPAN_CONSUMER = 4,
};

enum rtc_span_status {
    RTC_STATUS_UNSET = 0,
    RTC_STATUS_OK = 1,
    RTC_STATUS_ERROR = 2,
};

/* Journal records: an actuation interval opens and closes. */
enum rtc_journal_kind {
    RTC_JOURNAL_START = 1,
    RTC_JOURNAL_END = 2,
};

/* ckpt slot flags */
enum rtc_ckpt_flags {
    RTC_CKPT_SHADOW = 1u << 0,  /* written while not actuating: a standby's computed state */
};

#define RTC_SAMPLE_PPM_ALL 1000000u

enum rtc_wake_mode {
    RTC_WAKE_SLEEP = 0,
    RTC_WAKE_HYBRID = 1,
};

enum rtc_level {
    RTC_LEVEL_DEBUG = 10,
    RTC_LEVEL_INFO = 20,
    RTC_LEVEL_WARN = 30,
    RTC_LEVEL_ERROR = 40,
    RTC_LEVEL_CRITICAL = 50,
};

enum rtc_event_kind {
    RTC_EV_STARTED = 1,        /* a = restored checkpoint seq (0 = fresh), b = pid */
    RTC_EV_STATE = 2,          /* a = new state, b = previous state */
    RTC_EV_DEADLINE_MISS = 3,  /* a = exec ns of the late cycle, b = periods skipped */
    RTC_EV_CMD_ACK = 5,        /* a = command seq, b = result (0 ok, <0 -errno) */
    RTC_EV_ACTUATING = 6,      /* a = 1 now driving outputs / 0 stopped, b = epoch */
    RTC_EV_ADOPTED = 7,        /* a = replicated checkpoint seq adopted, b = its cycle */
    RTC_EV_TASK = 100,         /* task-defined kinds start here */
};

enum rtc_cmd_kind {
    RTC_CMD_NOP = 0,           /* acknowledged, nothing else: round-trip probe */
    RTC_CMD_TASK = 100,        /* task-defined kinds start here; passed to task->command */
};

/* Records are cache-line multiples so a push touches whole lines. */
typedef union rtc_arg {
    int64_t i;
    double f;
} rtc_arg;

typedef struct rtc_log_rec {
    int64_t ts_ns;            /* CLOCK_MONOTONIC; rtcore.clock converts to wall time */
    uint64_t cycle;           /* RT cycle the record was made in */
    uint8_t trace_id[16];     /* W3C trace id, zero if none */
    uint8_t span_id[8];       /* W3C span id, zero if none */
    uint16_t template_id;     /* index into strings[]: a template with named fields */
    uint8_t level;            /* enum rtc_level */
    uint8_t nargs;            /* used entries of args[], one per template field */
    uint8_t float_mask;       /* bit i set: args[i] is a double, else int64 */
    uint8_t trace_flags;      /* enum rtc_trace_flags */
    uint8_t _pad0[2];
    uint32_t tid;             /* kernel thread id of the producer */
    uint32_t repeats;         /* identical records suppressed before this one */
    rtc_arg args[RTC_LOG_ARGS];
    uint8_t _pad1[8];
} rtc_log_rec;

typedef struct rtc_span_rec {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_span_id[8]; /* zero for a root span */
    int64_t start_ns;          /* CLOCK_MONOTONIC */
    int64_t end_ns;
    uint64_t cycle;
    uint16_t name_id;          /* index into strings[] */
    uint16_t status_msg_id;    /* index into strings[], 0xffff if none */
    uint8_t kind;              /* enum rtc_span_kind */
    uint8_t status;            /* enum rtc_span_status */
    uint8_t flags;             /* W3C trace-flags */
    uint8_t nattrs;            /* used entries of attr_key/attrs */
    uint16_t attr_key[RTC_SPAN_ATTRS]; /* indices into strings[] */
    uint8_t attr_float_mask;   /* bit i set: attrs[i] is a double */
    uint8_t _pad0[3];
    rtc_arg attrs[RTC_SPAN_ATTRS];
} rtc_span_rec;

typedef struct rtc_event_rec {
    int64_t ts_ns;
    uint64_t cycle;
    uint16_t kind;             /* enum rtc_event_kind */
    uint8_t trace_flags;       /* enum rtc_trace_flags */
    uint8_t _pad0;
    uint32_t _pad1;
    uint8_t trace_id[16];      /* a traced command's trace while it is applied */
    uint8_t span_id[8];
    int64_t a;
    int64_t b;
} rtc_event_rec;

typedef struct rtc_cmd_rec {
    uint64_t seq;              /* set by the sender, echoed in RTC_EV_CMD_ACK */
    uint16_t kind;             /* enum rtc_cmd_kind or a task kind */
    uint16_t nargs;
    uint8_t trace_flags;       /* the sender's W3C trace-flags */
    uint8_t _pad0[3];
    uint8_t trace_id[16];      /* the sender's trace: parent of the span that applies it */
    uint8_t span_id[8];
    uint64_t job_id;
    uint64_t epoch;            /* sender's epoch: older than control.epoch is refused */
    double args[RTC_CMD_ARGS];
} rtc_cmd_rec;

/* One end of an actuation interval (RT -> agent, never dropped). */
typedef struct rtc_journal_rec {
    uint32_t kind;             /* enum rtc_journal_kind */
    int32_t pid;               /* RT process that actuated */
    uint64_t epoch;
    uint64_t cycle;            /* first actuated cycle (START) or last (END) */
    int64_t mono_ns;           /* CLOCK_MONOTONIC of that cycle's wake-up */
    int64_t real_ns;           /* CLOCK_REALTIME of that cycle's wake-up */
    uint64_t cycles;           /* END: cycles actuated in the interval */
    uint8_t _pad0[16];
} rtc_journal_rec;

/*
 * SPSC ring header. head is written only by the producer, tail only by the
 * consumer; each sits alone on its cache line so they do not false-share.
 */
typedef struct rtc_ring_hdr {
    uint64_t head;             /* next index the producer writes (release) */
    uint64_t pushed;           /* records accepted (producer-owned) */
    uint64_t dropped;          /* records refused because the ring was full */
    uint8_t _pad0[RTC_CACHELINE - 24];
    uint64_t tail;             /* next index the consumer reads (release) */
    uint8_t _pad1[RTC_CACHELINE - 8];
    uint32_t capacity;         /* records, a power of two */
    uint32_t record_size;      /* bytes per record */
    uint8_t _pad2[RTC_CACHELINE - 8];
} rtc_ring_hdr;

typedef struct rtc_log_ring {
    rtc_ring_hdr hdr;
    rtc_log_rec recs[RTC_LOG_RING_CAP];
} rtc_log_ring;

typedef struct rtc_span_ring {
    rtc_ring_hdr hdr;
    rtc_span_rec recs[RTC_SPAN_RING_CAP];
} rtc_span_ring;

typedef struct rtc_event_ring {
    rtc_ring_hdr hdr;
    rtc_event_rec recs[RTC_EVENT_RING_CAP];
} rtc_event_ring;

typedef struct rtc_cmd_ring {
    rtc_ring_hdr hdr;
    rtc_cmd_rec recs[RTC_CMD_RING_CAP];
} rtc_cmd_ring;

typedef struct rtc_journal_ring {
    rtc_ring_hdr hdr;
    rtc_journal_rec recs[RTC_JOURNAL_RING_CAP];
} rtc_journal_ring;

typedef struct rtc_header {
    uint64_t magic;
    uint32_t abi_version;
    uint32_t header_size;      /* sizeof(rtc_header) */
    uint64_t segment_size;     /* sizeof(rtc_segment) */
    int32_t owner_pid;         /* RT process that runs on this segment, 0 if none */
    uint32_t ckpt_slots;
    uint32_t ckpt_max;
    uint32_t strings_max;
    int64_t created_ns;        /* CLOCK_REALTIME when the segment was made */
    uint8_t _pad0[RTC_CACHELINE - 48];
} rtc_header;

/*
 * Clock anchor: a (CLOCK_MONOTONIC, CLOCK_REALTIME) pair read in a tight
 * bracket, so RT timestamps (monotonic) convert to wall-clock time. Set when
 * the segment is made and refreshed by the control plane (NTP steps, drift),
 * under its own seqlock (odd while written).
 */
typedef struct rtc_clock {
    uint64_t seq;
    int64_t mono_ns;           /* middle of the bracket */
    int64_t real_ns;
    int64_t bracket_ns;        /* width of the bracket: the pair's uncertainty */
    uint8_t _pad0[RTC_CACHELINE - 32];
} rtc_clock;

/*
 * Written by the control plane under a seqlock (seq odd while a change is in
 * progress); the RT loop copies it once per cycle when seq moved and uses the
 * copy only if seq was even and unchanged across it, so it never sees a new
 * `active` with an old `epoch`.
 */
typedef struct rtc_control {
    uint64_t seq;
    uint32_t mode;             /* enum rtc_mode */
    uint32_t active;           /* 1: this node may actuate (primary), 0: shadow */
    uint64_t epoch;            /* fencing epoch (Raft term at promotion) */
    int64_t lease_ns;          /* CLOCK_MONOTONIC of the agent's last lease renewal */
    int64_t lease_timeout_ns;  /* 0: no lease required (standalone) */
    uint32_t log_level;        /* records below this level are not pushed */
    uint32_t sample_ppm;       /* cycles traced, parts per million (0 off, 1000000 all) */
    uint64_t node_id;          /* origin written into this RT's checkpoints */
    uint8_t _pad0[RTC_CACHELINE - 56];
} rtc_control;

/* Written by the RT process only. */
typedef struct rtc_status {
    uint64_t heartbeat;        /* +1 per cycle, last store of the cycle */
    uint64_t cycles;           /* cycles executed */
    uint64_t misses;           /* cycles that ended after the next period began */
    uint64_t skipped_periods;  /* periods jumped over to catch up after a miss */
    uint32_t state;            /* enum rtc_state */
    uint32_t degraded;         /* enum rtc_degraded bits */
    int32_t pid;
    int32_t tid;
    int32_t priority;          /* SCHED_FIFO priority in force, 0 if none */
    int32_t numa_node;         /* -1 if unbound */
    uint32_t wake_mode;        /* enum rtc_wake_mode */
    uint32_t actuating;        /* 1 while outputs are driven */
    int64_t period_ns;
    int64_t spin_ns;           /* hybrid mode: spin window before the deadline */
    int64_t start_ns;          /* CLOCK_MONOTONIC of the first cycle */
    int64_t last_wake_ns;      /* CLOCK_MONOTONIC of the newest wake-up */
    uint64_t last_wake_latency_ns;
    uint64_t last_exec_ns;
    uint64_t wake_max_ns;
    uint64_t exec_max_ns;
    uint64_t ckpt_seq;         /* newest checkpoint written */
    uint64_t ckpt_cycle;
    int64_t ckpt_ns;           /* CLOCK_MONOTONIC of the newest checkpoint */
    uint64_t restored_seq;     /* checkpoint this run started from, 0 = fresh */
    uint64_t restored_cycle;
    uint64_t cmds_applied;
    uint64_t cmds_failed;
    uint64_t last_cmd_seq;
    uint64_t epoch;            /* control.epoch as last seen by the loop */
    int64_t task_rc;           /* last non-zero return of task step, 0 if none */
    uint64_t cmds_stale;       /* commands refused: sent in an older epoch */
    uint64_t control_torn;     /* control snapshots retried: a write overlapped the copy */
    uint64_t faults_suppressed; /* repeated fault records folded into a count */
    uint64_t spans_dropped;    /* spans that did not fit the per-cycle scratch */
    /* shadow mode: replicated checkpoints from the inbound region */
    uint64_t adopted_seq;      /* newest replicated checkpoint adopted */
    uint64_t adopted_cycle;
    uint64_t adopted_count;
    uint64_t inbound_refused;  /* foreign task, corrupt, or arrived while actuating */
    /* actuation: the current or last interval; act_last_* move every actuated cycle */
    uint64_t actuated_cycles;  /* cycles whose outputs were driven, this run */
    uint64_t act_epoch;
    uint64_t act_first_cycle;
    int64_t act_first_mono_ns;
    int64_t act_first_real_ns;
    uint64_t act_last_cycle;
    int64_t act_last_mono_ns;
    uint64_t act_interval_cycles; /* cycles in the current or last interval */
    /* what tracing costs: execution time of recorded (sampled or late) cycles
     * and of the others, this run */
    uint64_t traced_cycles;
    uint64_t traced_exec_ns;
    uint64_t untraced_cycles;
    uint64_t untraced_exec_ns;
    uint64_t cpu_mask;         /* CPUs the RT thread is allowed on (first 64) */
    uint64_t wake_hist[RTC_HIST_BUCKETS]; /* wake latency, ns, see hist.h */
    uint64_t exec_hist[RTC_HIST_BUCKETS]; /* execution time, ns */
    char task_name[64];
    char degraded_text[RTC_TEXT_LEN]; /* why start-up steps were skipped */
    uint8_t _pad_end[8];
} rtc_status;

typedef struct rtc_strings {
    uint32_t count;            /* interned strings, fixed before the loop starts */
    uint8_t _pad0[RTC_CACHELINE - 4];
    char text[RTC_STRINGS_MAX][RTC_STRING_LEN];
} rtc_strings;

/*
 * Checkpoint slot, written under a seqlock: seqlock is odd while a write is in
 * progress. crc covers seq..state_size and data[0..state_size).
 */
typedef struct rtc_ckpt_slot {
    uint64_t seqlock;
    uint64_t seq;              /* checkpoint sequence number, 1-based, monotonic */
    uint64_t cycle;
    int64_t mono_ns;
    uint64_t epoch;            /* epoch of the node that computed the state */
    uint64_t origin;           /* control.node_id of the RT that wrote it */
    uint32_t task_id;          /* crc32c of the task name: a state is only restored into its own task */
    uint32_t state_size;
    uint32_t flags;            /* enum rtc_ckpt_flags */
    uint32_t crc;
    uint8_t data[RTC_CKPT_MAX];
} rtc_ckpt_slot;

typedef struct rtc_segment {
    rtc_header header;
    rtc_clock clock;
    rtc_control control;
    rtc_status status;
    rtc_strings strings;
    rtc_ckpt_slot ckpt[RTC_CKPT_SLOTS];
    rtc_ckpt_slot inbound;     /* agent -> RT: replicated checkpoint for shadow mode */
    rtc_log_ring log_ring;
    rtc_span_ring span_ring;
    rtc_event_ring event_ring;
    rtc_cmd_ring cmd_ring;
    rtc_journal_ring journal_ring;
} rtc_segment;

_Static_assert(sizeof(rtc_log_rec) == 128, "log record is two cache lines");
_Static_assert(sizeof(rtc_span_rec) == 128, "span record is two cache lines");
_Static_assert(sizeof(rtc_journal_rec) == 64, "journal record is one cache line");
_Static_assert(sizeof(rtc_clock) == RTC_CACHELINE, "clock is one line");
_Static_assert(sizeof(rtc_event_rec) == 64, "event record is one cache line");
_Static_assert(sizeof(rtc_cmd_rec) == 128, "command record is two cache lines");
_Static_assert(sizeof(rtc_ring_hdr) == 3 * RTC_CACHELINE, "ring header lines");
_Static_assert(offsetof(rtc_ring_hdr, tail) == RTC_CACHELINE, "tail on its own line");
_Static_assert(sizeof(rtc_header) == RTC_CACHELINE, "header is one line");
_Static_assert(sizeof(rtc_control) == RTC_CACHELINE, "control is one line");
_Static_assert(sizeof(rtc_ckpt_slot) == RTC_CACHELINE + RTC_CKPT_MAX, "slot size");
_Static_assert(sizeof(rtc_status) % RTC_CACHELINE == 0, "status lines");
_Static_assert(sizeof(rtc_strings) % RTC_CACHELINE == 0, "strings lines");
_Static_assert(offsetof(rtc_segment, ckpt) % RTC_CACHELINE == 0, "ckpt aligned");
_Static_assert(offsetof(rtc_segment, log_ring) % RTC_CACHELINE == 0, "log ring aligned");
_Static_assert(offsetof(rtc_segment, span_ring) % RTC_CACHELINE == 0, "span ring aligned");
_Static_assert(offsetof(rtc_segment, event_ring) % RTC_CACHELINE == 0, "event ring aligned");
_Static_assert(offsetof(rtc_segment, cmd_ring) % RTC_CACHELINE == 0, "cmd ring aligned");
_Static_assert(offsetof(rtc_segment, journal_ring) % RTC_CACHELINE == 0, "journal ring aligned");
_Static_assert(offsetof(rtc_segment, inbound) % RTC_CACHELINE == 0, "inbound aligned");

#endif
