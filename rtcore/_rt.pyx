# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The RT process: start-up steps and the cycle loop.

Everything up to run() is ordinary Python-callable set-up that may allocate
and raise. run() releases the GIL and enters the loop, which from then on
only reads the clock, sleeps with clock_nanosleep, touches memory that was
allocated and faulted in before, and calls the task through its ABI.
"""

from cpython.bytes cimport PyBytes_AsString
from libc.errno cimport EINTR, EINVAL, errno
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset, strlen
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from rtcore._os cimport *
from rtcore._rtc cimport *

import os


cdef extern from "rtcore/rtsys.h" nogil:
    int rtc_stop_signal
    int rtc_install_stop_signals()
    uint64_t rtc_load_u64(const uint64_t *p)
    uint32_t rtc_load_u32(const uint32_t *p)
    int64_t rtc_load_i64(const int64_t *p)
    void rtc_store_u64(uint64_t *p, uint64_t v)
    void rtc_cpu_relax()
    void rtc_prefault_stack()
    uint64_t rtc_tsc()


# Templates the loop itself logs with; their ids are their positions.
LOOP_TEMPLATES = (
    "RT loop started: pid {}, period {} ns, priority {}, resumed from checkpoint {}",
    "deadline miss on cycle {}: woke {} ns late, ran {} ns, period {} ns, {} periods skipped",
    "state changed to RUN",
    "state changed to HOLD",
    "state changed to SAFE",
    "actuation enabled (epoch {})",
    "actuation stopped: control-plane lease expired {} ns ago",
    "actuation stopped: node is standby (epoch {})",
    "task step returned {} on cycle {}",
    "command {} of kind {} failed with error {}",
    "RT loop stopping after cycle {} ({} misses this run)",
)
SPAN_NAMES = ("rt.cycle", "rt.commands", "task.step", "rt.checkpoint", "rt.command")

cdef enum:
    T_STARTED = 0
    T_MISS = 1
    T_STATE_RUN = 2
    T_ACT_ON = 5
    T_ACT_LEASE = 6
    T_ACT_STANDBY = 7
    T_TASK_FAULT = 8
    T_CMD_FAIL = 9
    T_STOPPING = 10
    N_LOOP_TEMPLATES = 11

cdef enum:
    S_CYCLE = 0
    S_COMMANDS = 1
    S_STEP = 2
    S_CHECKPOINT = 3
    S_COMMAND = 4

DEF MAX_CMDS_PER_CYCLE = 16


cdef struct Rt:
    rtc_segment *seg
    rtc_producer log_p
    rtc_producer span_p
    rtc_producer event_p
    rtc_consumer cmd_c
    const rtc_task *task
    void *state
    rtc_task_api api
    rtc_cycle_info info
    uint16_t task_tpl_base      # string id of the task's first template
    uint16_t span_base          # string id of SPAN_NAMES[0]
    uint32_t tid
    uint32_t task_id
    uint32_t ckpt_every
    uint64_t ckpt_seq
    uint64_t cycle
    uint64_t stop_after         # cycles this run may execute, 0 = unbounded
    int64_t now_ns              # wake time of the current cycle
    int64_t period_ns
    int64_t spin_ns
    uint32_t wake_mode
    uint32_t level              # control.log_level cached per cycle
    uint64_t rng
    uint8_t trace_id[16]        # sampled cycle's trace, zero when not sampled
    uint8_t cycle_span[8]
    uint32_t rt_state           # enum rtc_state as last reported
    uint32_t actuating


cdef inline int64_t mono_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline uint64_t next_random(Rt *rt) noexcept nogil:
    # splitmix64: ids need uniqueness, not secrecy, and no syscall per id
    rt.rng += 0x9E3779B97F4A7C15ULL
    cdef uint64_t z = rt.rng
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline void new_id(Rt *rt, uint8_t *out, int n) noexcept nogil:
    cdef uint64_t r = next_random(rt)
    memcpy(out, &r, 8)
    if n == 16:
        r = next_random(rt)
        memcpy(out + 8, &r, 8)


cdef inline int push_log(Rt *rt, uint32_t level, uint32_t template_id, uint32_t nargs,
                         const int64_t *iargs, const double *fargs) noexcept nogil:
    """Push one log record in place. Integer args from iargs, or doubles from
    fargs when iargs is NULL. 0, or -1 if filtered or dropped."""
    if level < rt.level:
        return -1
    cdef rtc_log_rec *r = <rtc_log_rec *>rtc_ring_claim(&rt.log_p)
    if r == NULL:
        return -1
    cdef uint32_t i
    if nargs > RTC_LOG_ARGS:
        nargs = RTC_LOG_ARGS
    r.ts_ns = rt.now_ns
    r.cycle = rt.cycle
    memcpy(r.trace_id, rt.trace_id, 16)
    memcpy(r.span_id, rt.cycle_span, 8)
    r.template_id = <uint16_t>template_id
    r.level = <uint8_t>level
    r.nargs = <uint8_t>nargs
    r.tid = rt.tid
    if iargs != NULL:
        r.float_mask = 0
        for i in range(nargs):
            r.args[i].i = iargs[i]
    else:
        r.float_mask = <uint8_t>((1u << nargs) - 1u)
        for i in range(nargs):
            r.args[i].f = fargs[i]
    rtc_ring_publish(&rt.log_p)
    return 0


cdef inline int log0(Rt *rt, uint32_t level, uint32_t tpl) noexcept nogil:
    return push_log(rt, level, tpl, 0, NULL, NULL)


cdef inline int log2(Rt *rt, uint32_t level, uint32_t tpl, int64_t a, int64_t b) noexcept nogil:
    cdef int64_t args[2]
    args[0] = a
    args[1] = b
    return push_log(rt, level, tpl, 2, args, NULL)


cdef inline int push_event(Rt *rt, uint32_t kind, int64_t a, int64_t b,
                           const uint8_t *trace_id, const uint8_t *span_id) noexcept nogil:
    cdef rtc_event_rec *e = <rtc_event_rec *>rtc_ring_claim(&rt.event_p)
    if e == NULL:
        return -1
    e.ts_ns = rt.now_ns
    e.cycle = rt.cycle
    e.kind = <uint16_t>kind
    memcpy(e.trace_id, trace_id, 16)
    memcpy(e.span_id, span_id, 8)
    e.a = a
    e.b = b
    rtc_ring_publish(&rt.event_p)
    return 0


cdef inline int push_span(Rt *rt, uint32_t name, const uint8_t *trace_id, const uint8_t *span_id,
                          const uint8_t *parent, int64_t start, int64_t end,
                          uint8_t status) noexcept nogil:
    cdef rtc_span_rec *s = <rtc_span_rec *>rtc_ring_claim(&rt.span_p)
    if s == NULL:
        return -1
    memcpy(s.trace_id, trace_id, 16)
    memcpy(s.span_id, span_id, 8)
    if parent != NULL:
        memcpy(s.parent_span_id, parent, 8)
    else:
        memset(s.parent_span_id, 0, 8)
    s.start_ns = start
    s.end_ns = end
    s.cycle = rt.cycle
    s.name_id = <uint16_t>(rt.span_base + name)
    s.status = status
    s.flags = 1
    rtc_ring_publish(&rt.span_p)
    return 0


cdef int task_log(void *ctx, uint32_t level, uint32_t tpl, uint32_t nargs,
                  const double *args) noexcept nogil:
    cdef Rt *rt = <Rt *>ctx
    if tpl >= rt.task.n_log_templates:
        return -1
    return push_log(rt, level, rt.task_tpl_base + tpl, nargs, NULL, args)


cdef int task_event(void *ctx, uint32_t kind, int64_t a, int64_t b) noexcept nogil:
    cdef Rt *rt = <Rt *>ctx
    if kind < RTC_EV_TASK:
        return -1
    return push_event(rt, kind, a, b, rt.trace_id, rt.cycle_span)


cdef inline void apply_commands(Rt *rt) noexcept nogil:
    cdef rtc_cmd_rec cmd
    cdef int rc, n = 0
    cdef int64_t start
    cdef int64_t args[3]
    cdef uint8_t span[8]
    cdef int traced
    while n < MAX_CMDS_PER_CYCLE and rtc_ring_pop_batch(&rt.cmd_c, &cmd, 1) == 1:
        n += 1
        traced = (<uint64_t *>cmd.trace_id)[0] != 0 or (<uint64_t *>cmd.trace_id)[1] != 0
        start = mono_ns() if traced else 0
        if cmd.kind == RTC_CMD_NOP:
            rc = 0
        elif cmd.kind >= RTC_CMD_TASK and rt.task.command != NULL:
            rc = rt.task.command(rt.state, &cmd, &rt.api)
        elif cmd.kind >= RTC_CMD_TASK:
            rc = -ENOTSUP
        else:
            rc = -EINVAL
        rt.seg.status.last_cmd_seq = cmd.seq
        if rc == 0:
            rt.seg.status.cmds_applied += 1
        else:
            rt.seg.status.cmds_failed += 1
            args[0] = <int64_t>cmd.seq
            args[1] = cmd.kind
            args[2] = rc
            push_log(rt, RTC_LEVEL_WARN, T_CMD_FAIL, 3, args, NULL)
        if traced:
            # the command's own trace: RT work appears under the request that caused it
            new_id(rt, span, 8)
            push_span(rt, S_COMMAND, cmd.trace_id, span, cmd.span_id, start, mono_ns(),
                      1 if rc == 0 else 2)
            push_event(rt, RTC_EV_CMD_ACK, <int64_t>cmd.seq, rc, cmd.trace_id, span)
        else:
            push_event(rt, RTC_EV_CMD_ACK, <int64_t>cmd.seq, rc, rt.trace_id, rt.cycle_span)


cdef inline void write_checkpoint(Rt *rt) noexcept nogil:
    rt.ckpt_seq += 1
    cdef uint32_t slot = <uint32_t>(rt.ckpt_seq % RTC_CKPT_SLOTS)
    rtc_ckpt_write(&rt.seg.ckpt[slot], rt.ckpt_seq, rt.cycle, rt.now_ns,
                   rt.seg.status.epoch, rt.task_id, rt.state, rt.task.state_size)
    rt.seg.status.ckpt_cycle = rt.cycle
    rt.seg.status.ckpt_ns = rt.now_ns
    rtc_store_u64(&rt.seg.status.ckpt_seq, rt.ckpt_seq)


cdef inline void track_mode(Rt *rt, uint32_t mode) noexcept nogil:
    cdef uint32_t state = RTC_STATE_RUN
    if mode == RTC_MODE_HOLD:
        state = RTC_STATE_HOLD
    elif mode == RTC_MODE_SAFE:
        state = RTC_STATE_SAFE
    if state == rt.rt_state:
        return
    push_event(rt, RTC_EV_STATE, state, rt.rt_state, rt.trace_id, rt.cycle_span)
    # FR-019: state changes are logged at ERROR, SAFE at CRITICAL
    log0(rt, RTC_LEVEL_CRITICAL if state == RTC_STATE_SAFE else RTC_LEVEL_ERROR,
         T_STATE_RUN + (state - RTC_STATE_RUN))
    rt.rt_state = state
    rt.seg.status.state = state


cdef inline void track_actuation(Rt *rt, uint32_t active, int64_t lease_age,
                                 int lease_ok, uint64_t epoch) noexcept nogil:
    cdef uint32_t act = 1 if active and lease_ok else 0
    if act == rt.actuating:
        return
    rt.actuating = act
    rt.seg.status.actuating = act
    push_event(rt, RTC_EV_ACTUATING, act, <int64_t>epoch, rt.trace_id, rt.cycle_span)
    cdef int64_t arg = <int64_t>epoch
    if act:
        push_log(rt, RTC_LEVEL_ERROR, T_ACT_ON, 1, &arg, NULL)
    elif active:
        push_log(rt, RTC_LEVEL_CRITICAL, T_ACT_LEASE, 1, &lease_age, NULL)
    else:
        push_log(rt, RTC_LEVEL_ERROR, T_ACT_STANDBY, 1, &arg, NULL)


cdef inline void sleep_until(Rt *rt, int64_t target) noexcept nogil:
    cdef timespec ts
    cdef int64_t wake_at = target - rt.spin_ns if rt.wake_mode == RTC_WAKE_HYBRID else target
    ts.tv_sec = wake_at // 1000000000
    ts.tv_nsec = wake_at % 1000000000
    while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR:
        if rtc_stop_signal:
            return
    if rt.wake_mode == RTC_WAKE_HYBRID:
        while mono_ns() < target:
            rtc_cpu_relax()


cdef int run_loop(Rt *rt) noexcept nogil:
    cdef rtc_control *ctl = &rt.seg.control
    cdef rtc_status *st = &rt.seg.status
    cdef int64_t target, wake, end, lat, exec_ns, lease_age, lease_timeout, t0, t1
    cdef int64_t late_args[5]
    cdef uint64_t executed = 0, epoch, skip
    cdef uint32_t mode, trace_every, active
    cdef uint8_t span[8]
    cdef int rc, sampled, lease_ok
    target = mono_ns() + rt.period_ns
    st.start_ns = target
    while not rtc_stop_signal:
        sleep_until(rt, target)
        wake = mono_ns()
        if rtc_stop_signal:
            break
        lat = wake - target
        if lat < 0:
            lat = 0
        rt.now_ns = wake
        mode = rtc_load_u32(&ctl.mode)
        if mode == RTC_MODE_STOP:
            break
        rt.cycle += 1
        rt.level = rtc_load_u32(&ctl.log_level)
        trace_every = rtc_load_u32(&ctl.trace_every)
        sampled = trace_every != 0 and rt.cycle % trace_every == 0
        if sampled:
            new_id(rt, rt.trace_id, 16)
            new_id(rt, rt.cycle_span, 8)
        else:
            memset(rt.trace_id, 0, 16)
            memset(rt.cycle_span, 0, 8)

        active = rtc_load_u32(&ctl.active)
        epoch = rtc_load_u64(&ctl.epoch)
        lease_timeout = rtc_load_i64(&ctl.lease_timeout_ns)
        lease_age = wake - rtc_load_i64(&ctl.lease_ns)
        lease_ok = lease_timeout == 0 or lease_age <= lease_timeout
        st.epoch = epoch
        track_mode(rt, mode)
        track_actuation(rt, active, lease_age, lease_ok, epoch)

        # sampled cycles: one clock read per phase boundary, each phase's end
        # being the next one's start
        t0 = mono_ns() if sampled else 0
        apply_commands(rt)
        if sampled:
            t1 = mono_ns()
            new_id(rt, span, 8)
            push_span(rt, S_COMMANDS, rt.trace_id, span, rt.cycle_span, t0, t1, 1)
            t0 = t1

        rt.info.cycle = rt.cycle
        rt.info.now_ns = wake
        rt.info.mode = mode
        rt.info.actuate = rt.actuating
        rc = rt.task.step(rt.state, &rt.info, &rt.api)
        if rc != 0:
            st.task_rc = rc
            log2(rt, RTC_LEVEL_ERROR, T_TASK_FAULT, rc, <int64_t>rt.cycle)
        if sampled:
            t1 = mono_ns()
            new_id(rt, span, 8)
            push_span(rt, S_STEP, rt.trace_id, span, rt.cycle_span, t0, t1, 1 if rc == 0 else 2)
            t0 = t1

        if rt.ckpt_every != 0 and rt.cycle % rt.ckpt_every == 0:
            write_checkpoint(rt)
            if sampled:
                t1 = mono_ns()
                new_id(rt, span, 8)
                push_span(rt, S_CHECKPOINT, rt.trace_id, span, rt.cycle_span, t0, t1, 1)

        end = mono_ns()
        exec_ns = end - wake
        rtc_hist_add(st.wake_hist, <uint64_t>lat)
        rtc_hist_add(st.exec_hist, <uint64_t>exec_ns)
        st.last_wake_ns = wake
        st.last_wake_latency_ns = lat
        st.last_exec_ns = exec_ns
        if <uint64_t>lat > st.wake_max_ns:
            st.wake_max_ns = lat
        if <uint64_t>exec_ns > st.exec_max_ns:
            st.exec_max_ns = exec_ns
        if sampled:
            push_span(rt, S_CYCLE, rt.trace_id, rt.cycle_span, NULL, wake, end, 1)

        target += rt.period_ns
        if end > target:
            # late: this cycle overran into the next period; resume on the
            # first period boundary still ahead instead of bursting to catch up
            skip = <uint64_t>((end - target) // rt.period_ns) + 1
            target += <int64_t>skip * rt.period_ns
            st.misses += 1
            st.skipped_periods += skip
            late_args[0] = <int64_t>rt.cycle
            late_args[1] = lat
            late_args[2] = exec_ns
            late_args[3] = rt.period_ns
            late_args[4] = <int64_t>skip
            push_log(rt, RTC_LEVEL_ERROR, T_MISS, 5, late_args, NULL)
            push_event(rt, RTC_EV_DEADLINE_MISS, exec_ns, <int64_t>skip, rt.trace_id,
                       rt.cycle_span)
        rtc_store_u64(&st.cycles, rt.cycle)
        rtc_store_u64(&st.heartbeat, st.heartbeat + 1)
        executed += 1
        if rt.stop_after != 0 and executed >= rt.stop_after:
            break
    return 0


class SetupError(Exception):
    """A start-up step failed; the message says what is missing and how to fix it."""


cdef uint8_t *buffer_ptr(object buf, size_t need) except NULL:
    cdef uint8_t[::1] view = memoryview(buf).cast("B")
    if <size_t>view.shape[0] < need:
        raise SetupError(f"segment buffer is {view.shape[0]} bytes, need {need}")
    return &view[0]


cdef class Runtime:
    """One RT instance bound to a mapped segment. Set up step by step, then run()."""
    cdef Rt rt
    cdef object _buf
    cdef void *_dl
    cdef size_t _state_alloc
    cdef int _state_on_numa
    cdef list _strings

    def __cinit__(self, buf):
        memset(&self.rt, 0, sizeof(Rt))
        self._buf = buf
        self.rt.seg = <rtc_segment *>buffer_ptr(buf, sizeof(rtc_segment))
        self._strings = []
        rtc_crc32c_init()

    def __dealloc__(self):
        if self.rt.state != NULL:
            if self._state_on_numa:
                numa_free(self.rt.state, self._state_alloc)
            else:
                free(self.rt.state)

    def load_task(self, str path):
        """dlopen a task library and check its ABI. Raises SetupError."""
        if not os.path.isfile(path):
            raise SetupError(f"task library {path} does not exist")
        cdef bytes bpath = os.fsencode(path)
        self._dl = dlopen(bpath, RTLD_NOW | RTLD_LOCAL)
        if self._dl == NULL:
            reason = (<bytes>dlerror()).decode(errors="replace")
            raise SetupError(f"cannot load task library {path}: {reason}")
        cdef const rtc_task *task = <const rtc_task *>dlsym(self._dl, RTC_TASK_SYMBOL)
        if task == NULL:
            raise SetupError(f"task library {path} does not export "
                             f"{(<bytes>RTC_TASK_SYMBOL).decode()}: not an rtcore task")
        if task.abi_version != RTC_TASK_ABI_VERSION:
            raise SetupError(f"task library {path} has task ABI version {task.abi_version}, "
                             f"this rtcore needs {RTC_TASK_ABI_VERSION}: rebuild it "
                             f"against rtcore/include/rtcore/task.h")
        if task.name == NULL or task.step == NULL or task.init == NULL:
            raise SetupError(f"task library {path} lacks a name, init or step function")
        if task.state_size == 0 or task.state_size > RTC_CKPT_MAX:
            raise SetupError(f"task {task.name.decode()} declares a state of "
                             f"{task.state_size} bytes; it must be 1..{RTC_CKPT_MAX}")
        if task.n_log_templates > 0 and task.log_templates == NULL:
            raise SetupError(f"task {task.name.decode()} declares templates but has none")
        self.rt.task = task
        self.rt.task_id = rtc_crc32c(0, task.name, strlen(task.name))
        self.rt.api.rt = &self.rt
        self.rt.api.log = task_log
        self.rt.api.event = task_event
        return task.name.decode(errors="replace")

    def alloc_state(self, int numa_node):
        """RT memory for the task state: on the node if one is given, zeroed
        so every page is faulted in before the loop."""
        cdef size_t size = self.rt.task.state_size
        cdef void *p = NULL
        if numa_node >= 0:
            p = numa_alloc_onnode(size, numa_node)
            self._state_on_numa = 1
        elif posix_memalign(&p, 64, size) != 0:
            p = NULL
        if p == NULL:
            raise SetupError(f"cannot allocate {size} bytes of task state")
        memset(p, 0, size)
        self.rt.state = p
        self._state_alloc = size

    def init_task(self, str params):
        """Fresh start: the task's own init()."""
        cdef bytes bparams = params.encode()
        cdef int rc = self.rt.task.init(self.rt.state, bparams, &self.rt.api)
        if rc != 0:
            raise SetupError(f"task {self.rt.task.name.decode()} refused its parameters "
                             f"{params!r} (error {rc}: {os.strerror(-rc) if rc < 0 else rc})")

    def restore_newest(self):
        """Load the newest valid checkpoint of this task from the segment.
        Returns (seq, cycle) or None; corrupt slots are reported in the list."""
        cdef rtc_ckpt_slot *copy = NULL
        cdef rtc_ckpt_slot *best = NULL
        cdef int rc
        cdef uint32_t i
        out = bytearray(2 * sizeof(rtc_ckpt_slot))
        cdef uint8_t[::1] view = out
        copy = <rtc_ckpt_slot *>&view[0]
        best = <rtc_ckpt_slot *>&view[sizeof(rtc_ckpt_slot)]
        best.seq = 0
        self.rt.seg.status.restored_seq = 0
        self.rt.seg.status.restored_cycle = 0
        skipped = []
        for i in range(RTC_CKPT_SLOTS):
            rc = rtc_ckpt_read(&self.rt.seg.ckpt[i], copy, 64)
            if rc == RTC_CKPT_EMPTY:
                continue
            if rc != RTC_CKPT_OK:
                skipped.append(f"slot {i}: {'corrupt' if rc == RTC_CKPT_CORRUPT else 'busy'}")
                continue
            if copy.task_id != self.rt.task_id or copy.state_size != self.rt.task.state_size:
                skipped.append(f"slot {i}: belongs to another task")
                continue
            if copy.seq > best.seq:
                memcpy(best, copy, sizeof(rtc_ckpt_slot))
        if best.seq == 0:
            return None, skipped
        memcpy(self.rt.state, best.data, best.state_size)
        self.rt.ckpt_seq = best.seq
        self.rt.cycle = best.cycle
        self.rt.seg.status.restored_seq = best.seq
        self.rt.seg.status.restored_cycle = best.cycle
        self.rt.seg.status.ckpt_seq = best.seq
        self.rt.seg.status.ckpt_cycle = best.cycle
        return (best.seq, best.cycle), skipped

    def intern_strings(self):
        """Write loop templates, the task's templates and span names into the
        segment's string table; records refer to them by index."""
        strings = list(LOOP_TEMPLATES)
        self.rt.task_tpl_base = len(strings)
        cdef uint32_t i
        for i in range(self.rt.task.n_log_templates):
            strings.append(self.rt.task.log_templates[i].decode(errors="replace"))
        self.rt.span_base = len(strings)
        strings.extend(SPAN_NAMES)
        if len(strings) > RTC_STRINGS_MAX:
            room = RTC_STRINGS_MAX - len(LOOP_TEMPLATES) - len(SPAN_NAMES)
            raise SetupError(f"task declares {self.rt.task.n_log_templates} log templates; "
                             f"at most {room} fit")
        cdef rtc_strings *table = &self.rt.seg.strings
        for i, text in enumerate(strings):
            raw = text.encode()
            if len(raw) >= RTC_STRING_LEN:
                raise SetupError(f"log template {text!r} is longer than {RTC_STRING_LEN - 1} bytes")
            memset(table.text[i], 0, RTC_STRING_LEN)
            memcpy(table.text[i], PyBytes_AsString(raw), len(raw))
        table.count = len(strings)
        self._strings = strings

    def lock_memory(self):
        """mlockall + a pre-faulted stack. Returns (ok, message)."""
        if mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
            err = errno
            return False, (f"cannot lock memory (mlockall: {os.strerror(err)}): needs "
                           f"CAP_IPC_LOCK or a larger RLIMIT_MEMLOCK (run as root, or "
                           f"'ulimit -l unlimited' / memlock in limits.conf)")
        rtc_prefault_stack()
        return True, "memory locked"

    def set_affinity(self, cpus):
        """Pin this (the RT) thread to cpus. Returns (ok, message)."""
        cdef cpu_set_t mask
        CPU_ZERO(&mask)
        for c in cpus:
            CPU_SET(c, &mask)
        if sched_setaffinity(0, sizeof(cpu_set_t), &mask) != 0:
            err = errno
            hint = ("the CPUs are outside this process's cpuset" if err == EINVAL
                    else "needs CAP_SYS_NICE to change affinity")
            return False, (f"cannot pin the RT thread to CPUs {format_cpus(cpus)} "
                           f"({os.strerror(err)}): {hint}")
        return True, f"pinned to CPUs {format_cpus(cpus)}"

    def bind_numa(self, int node):
        """Bind the segment's pages to node (moving those already there) and
        prefer node for later allocations. Returns (ok, message)."""
        if numa_available() < 0:
            return False, "cannot bind to a NUMA node: the kernel has no NUMA support"
        cdef unsigned long mask[16]
        memset(mask, 0, sizeof(mask))
        if node < 0 or node >= 16 * 64:
            return False, f"NUMA node {node} is out of range"
        mask[node // 64] = 1UL << (node % 64)
        if mbind(self.rt.seg, sizeof(rtc_segment), MPOL_BIND, mask, 16 * 64,
                 MPOL_MF_MOVE) != 0:
            err = errno
            return False, (f"cannot bind the shared-memory segment to NUMA node {node} "
                           f"(mbind: {os.strerror(err)}): needs CAP_SYS_NICE to move pages")
        numa_set_preferred(node)
        self.rt.seg.status.numa_node = node
        return True, f"memory on NUMA node {node}"

    def set_fifo(self, int priority):
        """SCHED_FIFO at priority. Returns (ok, message)."""
        cdef sched_param p
        p.sched_priority = priority
        if sched_setscheduler(0, SCHED_FIFO, &p) != 0:
            err = errno
            return False, (f"cannot set SCHED_FIFO priority {priority} ({os.strerror(err)}): "
                           f"needs CAP_SYS_NICE or RLIMIT_RTPRIO >= {priority} (run as root, "
                           f"'setcap cap_sys_nice+ep', or rtprio in limits.conf)")
        self.rt.seg.status.priority = priority
        return True, f"SCHED_FIFO priority {priority}"

    def configure(self, *, int64_t period_ns, int wake_mode, int64_t spin_ns,
                  uint32_t ckpt_every, uint64_t stop_after, uint32_t degraded,
                  str degraded_text):
        cdef rtc_status *st = &self.rt.seg.status
        cdef uint64_t seed = 0
        cdef cpu_set_t mask
        cdef uint64_t cpu_mask = 0
        cdef int c
        # a resumed segment still holds the previous run's figures: this run's start afresh
        st.state = RTC_STATE_INIT
        st.heartbeat = 0
        st.misses = 0
        st.skipped_periods = 0
        st.wake_max_ns = 0
        st.exec_max_ns = 0
        st.cmds_applied = 0
        st.cmds_failed = 0
        st.task_rc = 0
        st.actuating = 0
        memset(st.wake_hist, 0, sizeof(st.wake_hist))
        memset(st.exec_hist, 0, sizeof(st.exec_hist))
        st.cycles = self.rt.cycle
        st.ckpt_seq = self.rt.ckpt_seq
        self.rt.period_ns = period_ns
        self.rt.spin_ns = spin_ns
        self.rt.wake_mode = wake_mode
        self.rt.ckpt_every = ckpt_every
        self.rt.stop_after = stop_after
        self.rt.tid = gettid()
        self.rt.info.period_ns = period_ns
        self.rt.info.dt = period_ns / 1e9
        if getrandom(&seed, sizeof(seed), 0) != sizeof(seed):
            seed = <uint64_t>mono_ns() ^ (<uint64_t>getpid() << 32)
        self.rt.rng = seed
        if sched_getaffinity(0, sizeof(cpu_set_t), &mask) == 0:
            for c in range(64):
                if CPU_ISSET(c, &mask):
                    cpu_mask |= 1ULL << c
        st.cpu_mask = cpu_mask
        st.pid = getpid()
        st.tid = self.rt.tid
        st.period_ns = period_ns
        st.spin_ns = spin_ns if wake_mode == RTC_WAKE_HYBRID else 0
        st.wake_mode = wake_mode
        st.degraded = degraded
        raw = degraded_text.encode()[:RTC_TEXT_LEN - 1]
        memset(st.degraded_text, 0, RTC_TEXT_LEN)
        memcpy(st.degraded_text, PyBytes_AsString(raw), len(raw))
        name = (<bytes>self.rt.task.name)[:63]
        memset(st.task_name, 0, 64)
        memcpy(st.task_name, PyBytes_AsString(name), len(name))
        self.rt.seg.header.owner_pid = getpid()

    def run(self):
        """Run the loop until SIGTERM/SIGINT, control.mode == STOP or the
        cycle budget; returns the number of the last cycle."""
        self._attach_rings()
        if rtc_install_stop_signals() != 0:
            raise SetupError("cannot install the SIGTERM/SIGINT handlers")
        self.rt.level = self.rt.seg.control.log_level
        cdef Rt *rt = &self.rt
        cdef int64_t args[4]
        args[0] = getpid()
        args[1] = rt.period_ns
        args[2] = rt.seg.status.priority
        args[3] = <int64_t>rt.seg.status.restored_seq
        rt.now_ns = mono_ns()
        rt.seg.status.state = RTC_STATE_INIT
        with nogil:
            push_log(rt, RTC_LEVEL_INFO, T_STARTED, 4, args, NULL)
            push_event(rt, RTC_EV_STARTED, <int64_t>rt.seg.status.restored_seq, getpid(),
                       rt.trace_id, rt.cycle_span)
            run_loop(rt)
            rt.now_ns = mono_ns()
            write_checkpoint(rt)
            log2(rt, RTC_LEVEL_INFO, T_STOPPING, <int64_t>rt.cycle,
                 <int64_t>rt.seg.status.misses)
            push_event(rt, RTC_EV_STATE, RTC_STATE_STOPPED, rt.rt_state, rt.trace_id,
                       rt.cycle_span)
        rt.seg.status.state = RTC_STATE_STOPPED
        rt.seg.header.owner_pid = 0
        return rt.cycle, rtc_stop_signal

    def bench_push(self, str kind, uint32_t count, uint32_t batch):
        """Time count single pushes of the loop's own log (4 integer args) or
        span (with fresh ids) push in TSC ticks. Before each batch the ring must
        have been emptied by a concurrent reader, as the control plane's drainer
        does between cycles. Returns (push_ticks, empty_ticks, ticks_per_ns):
        two bytes objects of uint64 and the TSC rate; empty_ticks times an
        empty interval, the timer's own cost."""
        if kind not in ("log", "span"):
            raise ValueError("kind is 'log' or 'span'")
        if batch == 0 or batch > RTC_SPAN_RING_CAP // 2:
            raise ValueError(f"batch must be 1..{RTC_SPAN_RING_CAP // 2}")
        self._attach_rings()
        push_buf = bytearray(<size_t>count * 8)
        empty_buf = bytearray(<size_t>count * 8)
        cdef uint64_t[::1] pushes = memoryview(push_buf).cast("Q")
        cdef uint64_t[::1] empties = memoryview(empty_buf).cast("Q")
        cdef Rt *rt = &self.rt
        cdef int is_log = kind == "log"
        cdef rtc_ring_hdr *hdr = &rt.seg.log_ring.hdr if is_log else &rt.seg.span_ring.hdr
        cdef uint32_t i = 0, j
        cdef uint64_t t0, t1, tsc_start, tsc_end
        cdef int64_t ns_start, ns_end, waited
        cdef int64_t args[4]
        cdef uint8_t span[8]
        args[0] = 1
        args[1] = 22
        args[2] = 333
        args[3] = 4444
        rt.level = 0
        rt.now_ns = mono_ns()
        with nogil:
            ns_start = mono_ns()
            tsc_start = rtc_tsc()
            while i < count:
                waited = mono_ns()
                while rtc_ring_pending(hdr) != 0:
                    rtc_cpu_relax()
                    if mono_ns() - waited > 5000000000LL:
                        break
                j = 0
                while j < batch and i < count:
                    if is_log:
                        t0 = rtc_tsc()
                        push_log(rt, RTC_LEVEL_INFO, T_STARTED, 4, args, NULL)
                        t1 = rtc_tsc()
                    else:
                        t0 = rtc_tsc()
                        new_id(rt, span, 8)
                        push_span(rt, S_STEP, rt.trace_id, span, rt.cycle_span, t0, t0, 1)
                        t1 = rtc_tsc()
                    pushes[i] = t1 - t0
                    t0 = rtc_tsc()
                    t1 = rtc_tsc()
                    empties[i] = t1 - t0
                    i += 1
                    j += 1
            tsc_end = rtc_tsc()
            ns_end = mono_ns()
        rate = (tsc_end - tsc_start) / <double>(ns_end - ns_start)
        return bytes(push_buf), bytes(empty_buf), rate

    cdef _attach_rings(self):
        rtc_producer_attach(&self.rt.log_p, &self.rt.seg.log_ring.hdr, self.rt.seg.log_ring.recs)
        rtc_producer_attach(&self.rt.span_p, &self.rt.seg.span_ring.hdr,
                            self.rt.seg.span_ring.recs)
        rtc_producer_attach(&self.rt.event_p, &self.rt.seg.event_ring.hdr,
                            self.rt.seg.event_ring.recs)
        rtc_consumer_attach(&self.rt.cmd_c, &self.rt.seg.cmd_ring.hdr,
                            self.rt.seg.cmd_ring.recs)


def format_cpus(cpus):
    return ",".join(str(c) for c in sorted(cpus))
