# Declarations of the project's own C headers (rtcore/include/rtcore/).
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t


cdef extern from "rtcore/layout.h" nogil:
    uint64_t RTC_MAGIC
    uint32_t RTC_ABI_VERSION
    uint32_t RTC_LOG_RING_CAP, RTC_SPAN_RING_CAP, RTC_EVENT_RING_CAP, RTC_CMD_RING_CAP
    uint32_t RTC_CKPT_SLOTS, RTC_CKPT_MAX, RTC_STRINGS_MAX, RTC_STRING_LEN
    uint32_t RTC_HIST_BUCKETS, RTC_LOG_ARGS, RTC_CMD_ARGS, RTC_TEXT_LEN

    enum:
        RTC_MODE_RUN, RTC_MODE_HOLD, RTC_MODE_SAFE, RTC_MODE_STOP
        RTC_STATE_INIT, RTC_STATE_RUN, RTC_STATE_HOLD, RTC_STATE_SAFE
        RTC_STATE_STOPPED, RTC_STATE_FAULT
        RTC_DEG_MLOCK, RTC_DEG_AFFINITY, RTC_DEG_SCHED, RTC_DEG_NUMA, RTC_DEG_PM_QOS
        RTC_WAKE_SLEEP, RTC_WAKE_HYBRID
        RTC_LEVEL_DEBUG, RTC_LEVEL_INFO, RTC_LEVEL_WARN, RTC_LEVEL_ERROR, RTC_LEVEL_CRITICAL
        RTC_EV_STARTED, RTC_EV_STATE, RTC_EV_DEADLINE_MISS, RTC_EV_CHECKPOINT
        RTC_EV_CMD_ACK, RTC_EV_ACTUATING, RTC_EV_TASK
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
        uint32_t tid                    # producer thread id
        rtc_arg args[8]                 # arguments

    ctypedef struct rtc_span_rec:
        uint8_t trace_id[16]            # W3C trace id
        uint8_t span_id[8]              # W3C span id
        uint8_t parent_span_id[8]       # zero for a root
        int64_t start_ns                # CLOCK_MONOTONIC
        int64_t end_ns                  # CLOCK_MONOTONIC
        uint64_t cycle                  # cycle of the span
        uint16_t name_id                # index into strings
        uint8_t status                  # 0 unset, 1 ok, 2 error
        uint8_t flags                   # W3C trace-flags

    ctypedef struct rtc_event_rec:
        int64_t ts_ns                   # CLOCK_MONOTONIC
        uint64_t cycle                  # cycle of the event
        uint16_t kind                   # enum rtc_event_kind
        uint8_t trace_id[16]            # W3C trace id
        uint8_t span_id[8]              # W3C span id
        int64_t a                       # kind-specific
        int64_t b                       # kind-specific

    ctypedef struct rtc_cmd_rec:
        uint64_t seq                    # echoed in the ack event
        uint16_t kind                   # enum rtc_cmd_kind or task kind
        uint16_t nargs                  # used args
        uint8_t trace_id[16]            # W3C trace id of the request
        uint8_t span_id[8]              # parent span of the request
        uint64_t job_id                 # job the command belongs to
        double args[10]                 # arguments

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

    ctypedef struct rtc_control:
        uint32_t mode                   # enum rtc_mode
        uint32_t active                 # 1 may actuate
        uint64_t epoch                  # fencing epoch
        int64_t lease_ns                # last lease renewal (monotonic)
        int64_t lease_timeout_ns        # 0: no lease needed
        uint32_t log_level              # minimum level pushed
        uint32_t trace_every            # span sampling, 0 = off
        uint64_t generation             # bumped per change

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
        uint64_t cpu_mask               # allowed CPUs (first 64)
        uint64_t wake_hist[640]         # wake latency histogram
        uint64_t exec_hist[640]         # execution time histogram
        char task_name[64]              # loaded task
        char degraded_text[512]         # skipped start-up steps

    ctypedef struct rtc_strings:
        uint32_t count                  # interned strings
        char text[256][96]              # templates and span names

    ctypedef struct rtc_ckpt_slot:
        uint64_t seqlock                # odd while written
        uint64_t seq                    # checkpoint number
        uint64_t cycle                  # cycle it was taken at
        int64_t mono_ns                 # time it was taken (monotonic)
        uint64_t epoch                  # epoch it was taken in
        uint32_t task_id                # crc32c of the task name
        uint32_t state_size             # bytes of data
        uint32_t crc                    # crc32c of metadata and data
        uint8_t data[16384]             # task state

    ctypedef struct rtc_segment:
        rtc_header header               # identity and sizes
        rtc_control control             # control plane -> RT
        rtc_status status               # RT -> control plane
        rtc_strings strings             # interned templates and names
        rtc_ckpt_slot ckpt[4]           # checkpoint slots
        rtc_log_ring log_ring           # RT -> control plane
        rtc_span_ring span_ring         # RT -> control plane
        rtc_event_ring event_ring       # RT -> control plane
        rtc_cmd_ring cmd_ring           # control plane -> RT


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
    uint32_t rtc_ring_pop_batch(rtc_consumer *c, void *out, uint32_t max)
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
                        uint64_t epoch, uint32_t task_id, const void *state, uint32_t size)
    int rtc_ckpt_read(const rtc_ckpt_slot *s, rtc_ckpt_slot *out, int attempts)


cdef extern from "rtcore/task.h" nogil:
    uint32_t RTC_TASK_ABI_VERSION
    const char *RTC_TASK_SYMBOL

    ctypedef struct rtc_cycle_info:
        uint64_t cycle                  # cycle number
        int64_t now_ns                  # wake-up time (monotonic)
        int64_t period_ns               # period
        double dt                       # period in seconds
        uint32_t mode                   # RUN, HOLD or SAFE
        uint32_t actuate                # 1 drive outputs, 0 shadow

    ctypedef struct rtc_task_api:
        void *rt                                          # loop context
        int (*log)(void *rt, uint32_t level, uint32_t template_index,
                   uint32_t nargs, const double *args) noexcept nogil
        int (*event)(void *rt, uint32_t kind, int64_t a, int64_t b) noexcept nogil

    ctypedef struct rtc_task:
        uint32_t abi_version            # RTC_TASK_ABI_VERSION
        uint32_t state_size             # bytes of state
        const char *name                # task name
        const char *const *log_templates  # str.format templates
        uint32_t n_log_templates        # count of templates
        int (*init)(void *state, const char *params, const rtc_task_api *api) noexcept nogil
        int (*step)(void *state, const rtc_cycle_info *info,
                    const rtc_task_api *api) noexcept nogil
        int (*command)(void *state, const rtc_cmd_rec *cmd,
                       const rtc_task_api *api) noexcept nogil
