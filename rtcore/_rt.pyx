# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The RT process: start-up steps and the cycle loop.

Everything up to run() is ordinary Python-callable set-up that may allocate
and raise. run() releases the GIL and enters the loop (_rt_loop.pxi), which
from then on only reads the clock, sleeps with clock_nanosleep, touches
memory that was allocated and faulted in before, and calls the task through
its ABI (the callbacks below). Records are made by rtcore/emit.h.
"""

from cpython.bytes cimport PyBytes_AsString
from libc.errno cimport EINTR, EINVAL, errno
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset, strlen
from posix.time cimport CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime, timespec

from rtcore._os cimport *
from rtcore._rtc cimport *

import os

from rtcore import templates

include "_rt_loop.pxi"
include "_rt_os.pxi"


# ---- the task API: what a task's step/output/command may call ----

cdef int task_log(void *ctx, uint32_t level, uint32_t tpl, uint32_t nargs, const rtc_arg *args,
                  uint32_t float_mask) noexcept nogil:
    cdef Rt *rt = <Rt *>ctx
    if tpl >= rt.task.n_log_templates:
        return -1
    return rtc_emit_log(&rt.em, level, rt.task_tpl_base + tpl, nargs, args, float_mask, 0)


cdef int task_event(void *ctx, uint32_t kind, int64_t a, int64_t b) noexcept nogil:
    """In a recorded cycle, the event is the child of an `rt.emit` producer
    span inside the phase that emitted it: what the control plane does with
    the event (its consumer spans) hangs off that span."""
    cdef Rt *rt = <Rt *>ctx
    cdef rtc_trace_ctx emit_ctx
    cdef int i, rc
    cdef int64_t now
    if kind < RTC_EV_TASK:
        return -1
    if not rt.cycle_ctx.flags & RTC_TRACE_SAMPLED or rt.em.ctx != &rt.cycle_ctx:
        return rtc_emit_event(&rt.em, kind, a, b)
    emit_ctx = rt.cycle_ctx
    rtc_new_id(&rt.rng, emit_ctx.span_id, 8)
    now = mono_ns()
    i = rtc_scratch_open_with_id(&rt.scratch, rt.loop_names_base + N_EMIT,
                                 rt.phase_span if rt.phase_span >= 0 else 0, now,
                                 emit_ctx.span_id)
    if i < 0:
        return rtc_emit_event(&rt.em, kind, a, b)
    rtc_scratch_close(&rt.scratch, i, now, RTC_STATUS_OK, RTC_NO_STRING)
    rt.scratch.spans[i].kind = RTC_SPAN_PRODUCER
    rt.em.ctx = &emit_ctx
    rc = rtc_emit_event(&rt.em, kind, a, b)
    rt.em.ctx = &rt.cycle_ctx
    return rc


cdef int task_span_begin(void *ctx, uint32_t name) noexcept nogil:
    cdef Rt *rt = <Rt *>ctx
    if name >= rt.task.n_names:
        return -1
    return rtc_scratch_open(&rt.scratch, rt.task_names_base + name,
                            rt.phase_span if rt.phase_span >= 0 else 0, mono_ns())


cdef int task_span_attr(void *ctx, int handle, uint32_t key, rtc_arg value,
                        int is_float) noexcept nogil:
    cdef Rt *rt = <Rt *>ctx
    if key >= rt.task.n_names or handle <= 0:
        return -1
    return rtc_scratch_attr(&rt.scratch, handle, rt.task_names_base + key, value, is_float)


cdef int task_span_end(void *ctx, int handle, uint32_t status, int message) noexcept nogil:
    cdef Rt *rt = <Rt *>ctx
    if handle <= 0 or status > RTC_STATUS_ERROR:
        return -1
    cdef uint32_t msg = RTC_NO_STRING
    if message >= 0 and <uint32_t>message < rt.task.n_names:
        msg = rt.task_names_base + message
    return rtc_scratch_close(&rt.scratch, handle, mono_ns(), status, msg)


class SetupError(Exception):
    """A start-up step failed; the message says what is missing and how to fix it."""


cdef uint8_t *buffer_ptr(object buf, size_t need) except NULL:
    cdef uint8_t[::1] view = memoryview(buf).cast("B")
    if <size_t>view.shape[0] < need:
        raise SetupError(f"segment buffer is {view.shape[0]} bytes, need {need}")
    return &view[0]


cdef list c_strings(const char *const *table, uint32_t n):
    return [table[i].decode(errors="replace") if table[i] != NULL else ""
            for i in range(n)]


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
        if self.rt.inbound_copy != NULL:
            free(self.rt.inbound_copy)

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
        cdef bytes symbol = <bytes>RTC_TASK_SYMBOL
        if task == NULL:
            if dlsym(self._dl, b"rtc_task_v1") != NULL:
                raise SetupError(f"task library {path} is built for task ABI 1; this rtcore "
                                 f"needs task ABI {RTC_TASK_ABI_VERSION} ({symbol.decode()}): "
                                 f"port it to rtcore/include/rtcore/task.h and rebuild")
            raise SetupError(f"task library {path} does not export {symbol.decode()}: "
                             f"not an rtcore task")
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
        if task.n_names > 0 and task.names == NULL:
            raise SetupError(f"task {task.name.decode()} declares names but has none")
        self.rt.task = task
        self.rt.task_id = rtc_crc32c(0, task.name, strlen(task.name))
        self.rt.api.rt = &self.rt
        self.rt.api.log = task_log
        self.rt.api.event = task_event
        self.rt.api.span_begin = task_span_begin
        self.rt.api.span_attr = task_span_attr
        self.rt.api.span_end = task_span_end
        return task.name.decode(errors="replace")

    def alloc_state(self, int numa_node):
        """RT memory for the task state (on the node if one is given) and the
        scratch the loop reads replicated checkpoints into, zeroed so every
        page is faulted in before the loop."""
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
        p = NULL
        if posix_memalign(&p, 64, sizeof(rtc_ckpt_slot)) != 0:
            raise SetupError("cannot allocate the replicated-checkpoint scratch")
        memset(p, 0, sizeof(rtc_ckpt_slot))
        self.rt.inbound_copy = <rtc_ckpt_slot *>p

    def init_task(self, str params):
        """Fresh start: the task's own init()."""
        cdef bytes bparams = params.encode()
        cdef int rc = self.rt.task.init(self.rt.state, bparams, &self.rt.api)
        if rc != 0:
            raise SetupError(f"task {self.rt.task.name.decode()} refused its parameters "
                             f"{params!r} (error {rc}: {os.strerror(-rc) if rc < 0 else rc})")

    def restore_newest(self):
        """Load the newest valid checkpoint of this task from the segment: its
        own slots, or a replicated one in the inbound slot if that is newer.
        Returns ((seq, cycle, epoch) or None, [why each skipped slot was])."""
        cdef rtc_ckpt_slot *copy = NULL
        cdef rtc_ckpt_slot *best = NULL
        cdef const rtc_ckpt_slot *src
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
        for i in range(RTC_CKPT_SLOTS + 1):
            src = &self.rt.seg.inbound if i == RTC_CKPT_SLOTS else &self.rt.seg.ckpt[i]
            where = "inbound slot" if i == RTC_CKPT_SLOTS else f"slot {i}"
            rc = rtc_ckpt_read(src, copy, 64)
            if rc == RTC_CKPT_EMPTY:
                continue
            if rc != RTC_CKPT_OK:
                skipped.append(f"{where}: {'corrupt' if rc == RTC_CKPT_CORRUPT else 'busy'}")
                continue
            if copy.task_id != self.rt.task_id or copy.state_size != self.rt.task.state_size:
                skipped.append(f"{where}: belongs to another task")
                continue
            if (copy.epoch, copy.seq) > (best.epoch, best.seq) or best.seq == 0:
                memcpy(best, copy, sizeof(rtc_ckpt_slot))
        if best.seq == 0:
            return None, skipped
        memcpy(self.rt.state, best.data, best.state_size)
        self.rt.ckpt_seq = best.seq
        self.rt.cycle = best.cycle
        self.rt.adopted_epoch = best.epoch
        self.rt.adopted_seq = best.seq
        self.rt.seg.status.restored_seq = best.seq
        self.rt.seg.status.restored_cycle = best.cycle
        self.rt.seg.status.ckpt_seq = best.seq
        self.rt.seg.status.ckpt_cycle = best.cycle
        return (best.seq, best.cycle, best.epoch), skipped

    def intern_strings(self):
        """Check and write the loop's and the task's templates and names into
        the segment's string table; records refer to them by index."""
        tpls = c_strings(self.rt.task.log_templates, self.rt.task.n_log_templates)
        names = c_strings(self.rt.task.names, self.rt.task.n_names)
        for text in list(LOOP_TEMPLATES) + tpls:
            try:
                templates.parse(text, RTC_LOG_ARGS)
            except templates.TemplateError as e:
                raise SetupError(f"task {self.rt.task.name.decode()}: {e}") from None
        strings = list(LOOP_TEMPLATES)
        self.rt.loop_names_base = len(strings)
        strings.extend(LOOP_NAMES)
        self.rt.task_tpl_base = len(strings)
        strings.extend(tpls)
        self.rt.task_names_base = len(strings)
        strings.extend(names)
        if len(strings) > RTC_STRINGS_MAX:
            room = RTC_STRINGS_MAX - len(LOOP_TEMPLATES) - len(LOOP_NAMES)
            raise SetupError(f"task declares {len(tpls)} log templates and {len(names)} names; "
                             f"at most {room} fit")
        cdef rtc_strings *table = &self.rt.seg.strings
        cdef uint32_t i
        for i, text in enumerate(strings):
            raw = text.encode()
            if len(raw) >= RTC_STRING_LEN:
                raise SetupError(f"string {text!r} is longer than {RTC_STRING_LEN - 1} bytes")
            memset(table.text[i], 0, RTC_STRING_LEN)
            memcpy(table.text[i], PyBytes_AsString(raw), len(raw))
        table.count = len(strings)
        self._strings = strings

    def lock_memory(self):
        return lock_memory()

    def set_affinity(self, cpus):
        return set_affinity(cpus)

    def bind_numa(self, int node):
        return bind_numa(self.rt.seg, node)

    def set_fifo(self, int priority):
        return set_fifo(self.rt.seg, priority)

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
        st.cmds_stale = 0
        st.control_torn = 0
        st.faults_suppressed = 0
        st.spans_dropped = 0
        st.adopted_seq = 0
        st.adopted_cycle = 0
        st.adopted_count = 0
        st.inbound_refused = 0
        st.actuated_cycles = 0
        st.traced_cycles = 0
        st.traced_exec_ns = 0
        st.untraced_cycles = 0
        st.untraced_exec_ns = 0
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
        cycle budget; returns (last cycle, stop signal or 0)."""
        cdef Rt *rt = &self.rt
        self._attach_rings()
        if rtc_install_stop_signals() != 0:
            raise SetupError("cannot install the SIGTERM/SIGINT handlers")
        # the anchor is fresh for this run's records even before the agent refreshes it
        rtc_clock_anchor(&rt.seg.clock)
        rt.em.ctx = &rt.cycle_ctx
        rt.phase_span = 0
        rt.ctl.seq = 1  # odd: never a published seq, so the first cycle takes a snapshot
        read_control(rt)
        cdef int64_t args[3]
        args[0] = getpid()
        args[1] = rt.period_ns
        args[2] = rt.seg.status.priority
        rt.em.now_ns = mono_ns()
        rt.em.cycle = rt.cycle
        rt.seg.status.state = RTC_STATE_INIT
        with nogil:
            log_i(rt, RTC_LEVEL_INFO, T_STARTED, 3, args[0], args[1], args[2])
            if rt.seg.status.restored_seq != 0:
                log_i(rt, RTC_LEVEL_INFO, T_RESTORED, 3, <int64_t>rt.seg.status.restored_seq,
                      <int64_t>rt.seg.status.restored_cycle, <int64_t>rt.adopted_epoch)
            rtc_emit_event(&rt.em, RTC_EV_STARTED, <int64_t>rt.seg.status.restored_seq, getpid())
            run_loop(rt)
            rt.em.now_ns = mono_ns()
            if rt.actuating:
                stop_actuating(rt, T_STOPPING, 0, 0)
            write_checkpoint(rt, rt.em.now_ns)
            log_i(rt, RTC_LEVEL_INFO, T_STOPPING, 2, <int64_t>rt.cycle,
                  <int64_t>rt.seg.status.misses)
            rtc_emit_event(&rt.em, RTC_EV_STATE, RTC_STATE_STOPPED, rt.rt_state)
        rt.seg.status.state = RTC_STATE_STOPPED
        rt.seg.header.owner_pid = 0
        return rt.cycle, rtc_stop_signal

    cdef _attach_rings(self):
        cdef rtc_segment *seg = self.rt.seg
        rtc_producer_attach(&self.rt.em.log, &seg.log_ring.hdr, seg.log_ring.recs)
        rtc_producer_attach(&self.rt.em.span, &seg.span_ring.hdr, seg.span_ring.recs)
        rtc_producer_attach(&self.rt.em.event, &seg.event_ring.hdr, seg.event_ring.recs)
        rtc_producer_attach(&self.rt.journal_p, &seg.journal_ring.hdr, seg.journal_ring.recs)
        rtc_consumer_attach(&self.rt.cmd_c, &seg.cmd_ring.hdr, seg.cmd_ring.recs)
        self.rt.em.tid = self.rt.tid
