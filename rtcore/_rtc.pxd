# Declarations of the project's own C headers (rtcore/include/rtcore/).
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "rtcore/layout.h" nogil:
    uint64_t RTC_MAGIC
    uint32_t RTC_ABI_VERSION
    uint32_t RTC_LOG_RING_CAP, RTC_SPAN_RING_CAP, RTC_EVENT_RING_CAP, RTC_CMD_RING_CAP
    uint32_t RTC_CKPT_SLOTS, RTC_CKPT_MAX, RTC_STRINGS_MAX, RTC_STRING_LEN
    uint32_t RTC_HIST_BUCKETS, RTC_LOG_ARGS, RTC_CMD_ARGS, RTC_TEXT_LEN, RTC_SPAN_ATTRS
    uint32_t RTC_JOURNAL_RING_CAP, RTC_SAMPLE_PPM_ALL

    enum:
        RTC_MODE_RUN, RTC_MODE_HOLD, RTC_MODE_SAFE, RTC_MODE_STOP
        RTC_STATE_INIT, RTC_STATE_RUN, RTC_STATE_HOLD, RTC_STATE_SAFE
        RTC_STATE_STOPPED, RTC_STATE_FAULT
        RTC_DEG_MLOCK, RTC_DEG_AFFINITY, RTC_DEG_SCHED, RTC_DEG_NUMA, RTC_DEG_PM_QOS
        RTC_WAKE_SLEEP, RTC_WAKE_HYBRID
        RTC_LEVEL_DEBUG, RTC_LEVEL_INFO, RTC_LEVEL_WARN, RTC_LEVEL_ERROR, RTC_LEVEL_CRITICAL
        RTC_TRACE_SAMPLED
        RTC_SPAN_INTERNAL, RTC_SPAN_SERVER, RTC_SPAN_CLIENT, RTC_SPAN_PRODUCER, RTC_SPAN_CONSUMER
        RTC_STATUS_UNSET, RTC_STATUS_OK, RTC_STATUS_ERROR
        RTC_JOURNAL_START, RTC_JOURNAL_END
        RTC_CKPT_SHADOW
        RTC_EV_STARTED, RTC_EV_STATE, RTC_EV_DEADLINE_MISS
        RTC_EV_CMD_ACK, RTC_EV_ACTUATING, RTC_EV_ADOPTED, RTC_EV_TASK
        RTC_CMD_NOP, RTC_CMD_TASK

    ctypedef union rtc_arg:
        int64_t i                       # integer argument
        double f                        # floating argument

    ctypedef struct rtc_log_rec:
        int64_t ts_ns                   # CLOCK_MONOTONIC
        uint64_t cycle                  # cycle the record was made in
        uint8_t trace_id[16]            # W3C trace id
        uint8_t span_id[8]              # W3C span id
        uint16_t template_id            # index into strings
        uint8_t level                   # enum rtc_level
        uint8_t nargs                   # used args
        uint8_t float_mask              # bit i: args[i] is a double
        uint8_t trace_flags             # W3C trace-flags
        uint32_t tid                    # producer thread id
        uint32_t repeats                # identical records folded before this one
        rtc_arg args[8]                 # arguments

    ctypedef struct rtc_span_rec:
        uint8_t trace_id[16]            # W3C trace id
        uint8_t span_id[8]              # W3C span id
        uint8_t parent_span_id[8]       # zero for a root
        int64_t start_ns                # CLOCK_MONOTONIC
        int64_t end_ns                  # CLOCK_MONOTONIC
        uint64_t cycle                  # cycle of the span
        uint16_t name_id                # index into strings
        uint16_t status_msg_id          # index into strings, 0xffff none
        uint8_t kind                    # enum rtc_span_kind
        uint8_t status                  # enum rtc_span_status
        uint8_t flags                   # W3C trace-flags
        uint8_t nattrs                  # used attributes
        uint16_t attr_key[6]            # attribute keys (strings)
        uint8_t attr_float_mask         # bit i: attrs[i] is a double
        rtc_arg attrs[6]                # attribute values

    ctypedef struct rtc_event_rec:
        int64_t ts_ns                   # CLOCK_MONOTONIC
        uint64_t cycle                  # cycle of the event
        uint16_t kind                   # enum rtc_event_kind
        uint8_t trace_flags             # W3C trace-flags
        uint8_t trace_id[16]            # W3C trace id
        uint8_t span_id[8]              # W3C span id
        int64_t a                       # kind-specific
        int64_t b                       # kind-specific

    ctypedef struct rtc_cmd_rec:
        uint64_t seq                    # echoed in the ack event
        uint16_t kind                   # enum rtc_cmd_kind or task kind
        uint16_t nargs                  # used args
        uint8_t trace_flags             # sender's W3C trace-flags
        uint8_t trace_id[16]            # W3C trace id of the request
        uint8_t span_id[8]              # parent span of the request
        uint64_t job_id                 # job the command belongs to
        uint64_t epoch                  # sender's epoch
        double args[9]                  # arguments

    ctypedef struct rtc_journal_rec:
        uint32_t kind                   # enum rtc_journal_kind
        int32_t pid                     # RT process
        uint64_t epoch                  # epoch of the interval
        uint64_t cycle                  # first (START) or last (END) actuated cycle
        int64_t mono_ns                 # its wake-up, monotonic
        int64_t real_ns                 # its wake-up, realtime
        uint64_t cycles                 # END: cycles actuated

    ctypedef struct rtc_ring_hdr:
        uint64_t head                   # producer index
        uint64_t pushed                 # accepted records
        uint64_t dropped                # refused records (ring full)
        uint64_t tail                   # consumer index
        uint32_t capacity               # records, power of two
        uint32_t record_size            # bytes per record

    ctypedef struct rtc_log_ring:
        rtc_ring_hdr hdr                # indices and counters
        rtc_log_rec recs[1]             # RTC_LOG_RING_CAP records

    ctypedef struct rtc_span_ring:
        rtc_ring_hdr hdr                # indices and counters
        rtc_span_rec recs[1]            # RTC_SPAN_RING_CAP records

    ctypedef struct rtc_event_ring:
        rtc_ring_hdr hdr                # indices and counters
        rtc_event_rec recs[1]           # RTC_EVENT_RING_CAP records

    ctypedef struct rtc_cmd_ring:
        rtc_ring_hdr hdr                # indices and counters
        rtc_cmd_rec recs[1]             # RTC_CMD_RING_CAP records

    ctypedef struct rtc_journal_ring:
        rtc_ring_hdr hdr                # indices and counters
        rtc_journal_rec recs[1]         # RTC_JOURNAL_RING_CAP records

    ctypedef struct rtc_header:
        uint64_t magic                  # RTC_MAGIC
        uint32_t abi_version            # RTC_ABI_VERSION
        uint32_t header_size            # sizeof(rtc_header)
        uint64_t segment_size           # sizeof(rtc_segment)
        int32_t owner_pid               # RT process on this segment
        uint32_t ckpt_slots             # RTC_CKPT_SLOTS
        uint32_t ckpt_max               # RTC_CKPT_MAX
        uint32_t strings_max            # RTC_STRINGS_MAX
        int64_t created_ns              # CLOCK_REALTIME at creation

    ctypedef struct rtc_clock:
        uint64_t seq                    # seqlock
        int64_t mono_ns                 # anchor, monotonic
        int64_t real_ns                 # anchor, realtime
        int64_t bracket_ns              # uncertainty of the pair

    ctypedef struct rtc_control:
        uint64_t seq                    # seqlock
        uint32_t mode                   # enum rtc_mode
        uint32_t active                 # 1 may actuate
        uint64_t epoch                  # fencing epoch
        int64_t lease_ns                # last lease renewal (monotonic)
        int64_t lease_timeout_ns        # 0: no lease needed
        uint32_t log_level              # minimum level pushed
        uint32_t sample_ppm             # traced cycles per million
        uint64_t node_id                # origin of this RT's checkpoints

    ctypedef struct rtc_status:
        uint64_t heartbeat              # +1 per cycle
        uint64_t cycles                 # cycles executed
        uint64_t misses                 # late cycles
        uint64_t skipped_periods        # periods jumped to catch up
        uint32_t state                  # enum rtc_state
        uint32_t degraded               # enum rtc_degraded bits
        int pid                         # RT process id
        int tid                         # RT thread id
        int priority                    # SCHED_FIFO priority, 0 if none
        int numa_node                   # -1 if unbound
        uint32_t wake_mode              # enum rtc_wake_mode
        uint32_t actuating              # 1 while outputs are driven
        int64_t period_ns               # cycle period
        int64_t spin_ns                 # hybrid spin window
        int64_t start_ns                # first cycle (monotonic)
        int64_t last_wake_ns            # newest wake-up (monotonic)
        uint64_t last_wake_latency_ns   # newest wake latency
        uint64_t last_exec_ns           # newest execution time
        uint64_t wake_max_ns            # largest wake latency
        uint64_t exec_max_ns            # largest execution time
        uint64_t ckpt_seq               # newest checkpoint
        uint64_t ckpt_cycle             # its cycle
        int64_t ckpt_ns                 # its time (monotonic)
        uint64_t restored_seq           # checkpoint this run resumed from
        uint64_t restored_cycle         # its cycle
        uint64_t cmds_applied           # commands that succeeded
        uint64_t cmds_failed            # commands refused
        uint64_t last_cmd_seq           # newest command seen
        uint64_t epoch                  # epoch last seen
        int64_t task_rc                 # last non-zero task step code
        uint64_t cmds_stale             # commands from an older epoch
        uint64_t control_torn           # torn control snapshots retried
        uint64_t faults_suppressed      # repeated faults folded
        uint64_t spans_dropped          # spans over the per-cycle scratch
        uint64_t adopted_seq            # newest replicated checkpoint adopted
        uint64_t adopted_cycle          # its cycle
        uint64_t adopted_count          # adoptions this run
        uint64_t inbound_refused        # replicated checkpoints refused
        uint64_t actuated_cycles        # cycles with outputs driven
        uint64_t act_epoch              # epoch of the current/last interval
        uint64_t act_first_cycle        # its first cycle
        int64_t act_first_mono_ns       # its first wake (monotonic)
        int64_t act_first_real_ns       # its first wake (realtime)
        uint64_t act_last_cycle         # its newest cycle
        int64_t act_last_mono_ns        # its newest wake (monotonic)
        uint64_t act_interval_cycles    # cycles in the interval
        uint64_t traced_cycles          # cycles recorded (sampled or late)
        uint64_t traced_exec_ns         # their execution time
        uint64_t untraced_cycles        # the other cycles
        uint64_t untraced_exec_ns       # their execution time
        uint64_t cpu_mask               # allowed CPUs (first 64)
        uint64_t wake_hist[640]         # wake latency histogram
        uint64_t exec_hist[640]         # execution time histogram
        char task_name[64]              # loaded task
        char degraded_text[512]         # skipped start-up steps

    ctypedef struct rtc_strings:
        uint32_t count                  # interned strings
        char text[256][128]             # templates and names

    ctypedef struct rtc_ckpt_slot:
        uint64_t seqlock                # odd while written
        uint64_t seq                    # checkpoint number
        uint64_t cycle                  # cycle it was taken at
        int64_t mono_ns                 # time it was taken (monotonic)
        uint64_t epoch                  # epoch it was taken in
        uint64_t origin                 # node that wrote it
        uint32_t task_id                # crc32c of the task name
        uint32_t state_size             # bytes of data
        uint32_t flags                  # enum rtc_ckpt_flags
        uint32_t crc                    # crc32c of metadata and data
        uint8_t data[16384]             # task state

    ctypedef struct rtc_segment:
        rtc_header header               # identity and sizes
        rtc_clock clock                 # monotonic/realtime anchor
        rtc_control control             # control plane -> RT
        rtc_status status               # RT -> control plane
        rtc_strings strings             # interned templates and names
        rtc_ckpt_slot ckpt[4]           # checkpoint slots
        rtc_ckpt_slot inbound           # replicated checkpoint (agent -> RT)
        rtc_log_ring log_ring           # RT -> control plane
        rtc_span_ring span_ring         # RT -> control plane
        rtc_event_ring event_ring       # RT -> control plane
        rtc_cmd_ring cmd_ring           # control plane -> RT
        rtc_journal_ring journal_ring   # actuation intervals (RT -> control plane)


cdef extern from "rtcore/ring.h" nogil:
    ctypedef struct rtc_producer:
        rtc_ring_hdr *hdr               # shared header
        uint64_t head                   # private head

    ctypedef struct rtc_consumer:
        rtc_ring_hdr *hdr               # shared header

    void rtc_ring_format(rtc_ring_hdr *hdr, uint32_t capacity, uint32_t record_size)
    void rtc_producer_attach(rtc_producer *p, rtc_ring_hdr *hdr, void *recs)
    void rtc_consumer_attach(rtc_consumer *c, rtc_ring_hdr *hdr, void *recs)
    void *rtc_ring_claim(rtc_producer *p)
    int rtc_ring_has_room(rtc_producer *p)
    void rtc_ring_publish(rtc_producer *p)
    int rtc_ring_push(rtc_producer *p, const void *rec)
    uint64_t rtc_ring_room(rtc_producer *p)
    uint32_t rtc_ring_pop_batch(rtc_consumer *c, void *out, uint32_t max)
    uint32_t rtc_ring_peek_batch(rtc_consumer *c, void *out, uint32_t max)
    void rtc_ring_commit(rtc_consumer *c, uint32_t n)
    uint64_t rtc_ring_pending(const rtc_ring_hdr *hdr)


cdef extern from "rtcore/hist.h" nogil:
    uint32_t rtc_hist_bucket(uint64_t v)
    uint64_t rtc_hist_lower(uint32_t idx)
    void rtc_hist_add(uint64_t *hist, uint64_t v)


cdef extern from "rtcore/crc32c.h" nogil:
    uint32_t rtc_crc32c(uint32_t crc, const void *data, size_t len)
    void rtc_crc32c_init()


cdef extern from "rtcore/ckpt.h" nogil:
    enum:
        RTC_CKPT_OK, RTC_CKPT_EMPTY, RTC_CKPT_BUSY, RTC_CKPT_CORRUPT
    void rtc_ckpt_write(rtc_ckpt_slot *s, uint64_t seq, uint64_t cycle, int64_t mono_ns,
                        uint64_t epoch, uint64_t origin, uint32_t flags, uint32_t task_id,
                        const void *state, uint32_t size)
    int rtc_ckpt_read(const rtc_ckpt_slot *s, rtc_ckpt_slot *out, int attempts)


cdef extern from "rtcore/control.h" nogil:
    uint64_t rtc_seq_begin(uint64_t *seq)
    void rtc_seq_end(uint64_t *seq, uint64_t odd)
    int rtc_seq_copy(const void *block, void *out, size_t size, uint64_t *seen)
    void rtc_clock_anchor(rtc_clock *c)
    void rtc_clock_sample(int64_t *mono, int64_t *real, int64_t *width)


cdef extern from "rtcore/emit.h" nogil:
    uint32_t RTC_SCRATCH_SPANS, RTC_NO_PARENT, RTC_NO_STRING

    ctypedef struct rtc_trace_ctx:
        uint8_t trace_id[16]            # W3C trace id
        uint8_t span_id[8]              # W3C span id
        uint8_t flags                   # W3C trace-flags

    ctypedef struct rtc_emitter:
        rtc_producer log                # log ring
        rtc_producer span               # span ring
        rtc_producer event              # event ring
        const rtc_trace_ctx *ctx        # context records carry
        int64_t now_ns                  # records' timestamp
        uint64_t cycle                  # records' cycle
        uint32_t level                  # lowest level pushed
        uint32_t tid                    # producer thread

    ctypedef struct rtc_span_scratch:
        uint32_t n                      # spans this cycle
        uint32_t dropped                # spans that did not fit
        rtc_span_rec spans[16]          # RTC_SCRATCH_SPANS spans

    ctypedef struct rtc_limiter:
        int64_t code                    # last fault code
        int64_t next_ns                 # next time a repeat is recorded
        uint32_t suppressed             # repeats folded since

    uint64_t rtc_next_random(uint64_t *state)
    void rtc_new_id(uint64_t *rng, uint8_t *out, int n)
    uint64_t rtc_sample_threshold(uint32_t ppm)
    int rtc_trace_sampled(const uint8_t *trace_id, uint64_t threshold)
    int rtc_emit_log(rtc_emitter *e, uint32_t level, uint32_t template_id, uint32_t nargs,
                     const rtc_arg *args, uint32_t float_mask, uint32_t repeats)
    int rtc_emit_event(rtc_emitter *e, uint32_t kind, int64_t a, int64_t b)
    int rtc_emit_span(rtc_emitter *e, const rtc_span_rec *s)
    void rtc_scratch_reset(rtc_span_scratch *sc)
    int rtc_scratch_open(rtc_span_scratch *sc, uint32_t name_id, uint32_t parent, int64_t start_ns)
    int rtc_scratch_open_with_id(rtc_span_scratch *sc, uint32_t name_id, uint32_t parent,
                                 int64_t start_ns, const uint8_t *span_id)
    int rtc_scratch_attr(rtc_span_scratch *sc, int i, uint32_t key_id, rtc_arg value,
                         int is_float)
    int rtc_scratch_close(rtc_span_scratch *sc, int i, int64_t end_ns, uint32_t status,
                          uint32_t status_msg_id)
    uint32_t rtc_scratch_flush(rtc_span_scratch *sc, rtc_emitter *e, const rtc_trace_ctx *ctx,
                               uint64_t *rng)
    int rtc_limit(rtc_limiter *l, int64_t code, int64_t now_ns, int64_t interval_ns,
                  uint32_t *repeats)


cdef extern from "rtcore/task.h" nogil:
    uint32_t RTC_TASK_ABI_VERSION
    const char *RTC_TASK_SYMBOL

    ctypedef struct rtc_cycle_info:
        uint64_t cycle                  # cycle number
        int64_t now_ns                  # wake-up time (monotonic)
        int64_t period_ns               # period
        double dt                       # seconds since the previous step
        uint32_t skipped                # periods skipped since the previous step
        uint32_t mode                   # RUN, HOLD or SAFE
        uint32_t actuate                # 1 output() follows, 0 shadow

    ctypedef struct rtc_task_api:
        void *rt                                          # loop context
        int (*log)(void *rt, uint32_t level, uint32_t template_index, uint32_t nargs,
                   const rtc_arg *args, uint32_t float_mask) noexcept nogil
        int (*event)(void *rt, uint32_t kind, int64_t a, int64_t b) noexcept nogil
        int (*span_begin)(void *rt, uint32_t name_index) noexcept nogil
        int (*span_attr)(void *rt, int handle, uint32_t key_index, rtc_arg value,
                         int is_float) noexcept nogil
        int (*span_end)(void *rt, int handle, uint32_t status, int message_index) noexcept nogil

    ctypedef struct rtc_task:
        uint32_t abi_version            # RTC_TASK_ABI_VERSION
        uint32_t state_size             # bytes of state
        const char *name                # task name
        const char *const *log_templates  # named-field templates
        uint32_t n_log_templates        # count of templates
        uint32_t n_names                # count of names
        const char *const *names        # span names, attribute keys, messages
        int (*init)(void *state, const char *params, const rtc_task_api *api) noexcept nogil
        int (*step)(void *state, const rtc_cycle_info *info,
                    const rtc_task_api *api) noexcept nogil
        int (*output)(void *state, const rtc_cycle_info *info,
                      const rtc_task_api *api) noexcept nogil
        int (*command)(void *state, const rtc_cmd_rec *cmd,
                       const rtc_task_api *api) noexcept nogil
