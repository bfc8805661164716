# The cycle loop and what it does each cycle: read the control snapshot,
# adopt a replicated checkpoint (shadow), decide actuation (journal), apply
# commands, step, output, checkpoint, account, and push the cycle's spans if
# it was sampled or late. Included by _rt.pyx; nothing here takes the GIL.

# Templates the loop itself logs with; their ids are their positions. Named
# fields, one argument each, in order (rtcore.templates checks them).
LOOP_TEMPLATES = (
    "RT loop started: pid {pid}, period {period_ns} ns, priority {priority}",
    "deadline miss: woke {late_us:.1f} us late, ran {exec_us:.1f} us (period {period_us:.0f} us), "
    "{skipped} periods skipped",
    "state changed to RUN",
    "state changed to HOLD",
    "state changed to SAFE",
    "state changed to FAULT: task step failed with code {code}",
    "actuation started in epoch {epoch}",
    "actuation stopped: control-plane lease expired {lease_age_ms:.1f} ms ago "
    "(timeout {timeout_ms:.1f} ms)",
    "actuation stopped: node is standby (epoch {epoch})",
    "actuation stopped: epoch changed from {old_epoch} to {epoch}",
    "actuation held: the actuation journal has {room} free records, needs 2",
    "task step failed with code {code} on cycle {fault_cycle}",
    "command {seq} of kind {kind} failed with error {error}",
    "command {seq} refused: sent in epoch {cmd_epoch}, this node is in epoch {epoch}",
    "restored checkpoint {seq} from cycle {ckpt_cycle} (epoch {ckpt_epoch})",
    "adopted replicated checkpoint {seq} from cycle {ckpt_cycle} (epoch {ckpt_epoch})",
    "replicated checkpoint refused (reason {why}: 1 another task, 2 corrupt, 3 while actuating)",
    "RT loop stopping after cycle {cycle} ({misses} misses this run)",
)
# Span names, attribute keys and status messages of the loop.
LOOP_NAMES = (
    "rt.cycle", "rt.commands", "task.step", "task.output", "rt.checkpoint", "rt.command",
    "rt.adopt", "wake_latency_ns", "skipped_periods", "late", "command.seq", "command.kind",
    "command.result", "task step failed", "command failed", "rt.emit",
)

cdef enum:
    T_STARTED = 0
    T_MISS = 1
    T_STATE_RUN = 2
    T_STATE_FAULT = 5
    T_ACT_ON = 6
    T_ACT_LEASE = 7
    T_ACT_STANDBY = 8
    T_ACT_EPOCH = 9
    T_ACT_JOURNAL = 10
    T_TASK_FAULT = 11
    T_CMD_FAIL = 12
    T_CMD_STALE = 13
    T_RESTORED = 14
    T_ADOPTED = 15
    T_INBOUND_REFUSED = 16
    T_STOPPING = 17
    N_LOOP_TEMPLATES = 18

cdef enum:
    N_CYCLE = 0
    N_COMMANDS = 1
    N_STEP = 2
    N_OUTPUT = 3
    N_CHECKPOINT = 4
    N_COMMAND = 5
    N_ADOPT = 6
    K_WAKE_LATENCY = 7
    K_SKIPPED = 8
    K_LATE = 9
    K_CMD_SEQ = 10
    K_CMD_KIND = 11
    K_CMD_RESULT = 12
    M_STEP_FAILED = 13
    M_CMD_FAILED = 14
    N_EMIT = 15

cdef enum:
    WHY_FOREIGN = 1
    WHY_CORRUPT = 2
    WHY_ACTUATING = 3

DEF MAX_CMDS_PER_CYCLE = 16
DEF FAULT_LOG_INTERVAL_NS = 1000000000


cdef struct Rt:
    rtc_segment *seg
    rtc_emitter em
    rtc_consumer cmd_c
    rtc_producer journal_p
    const rtc_task *task
    void *state
    rtc_task_api api
    rtc_cycle_info info
    rtc_control ctl             # the control snapshot in force
    uint64_t sample_threshold   # from ctl.sample_ppm
    rtc_trace_ctx cycle_ctx     # this cycle's trace: every cycle has ids, few are sampled
    rtc_trace_ctx cmd_ctx       # a traced command's, while it is applied
    rtc_span_scratch scratch
    int phase_span              # scratch index task spans nest under
    rtc_ckpt_slot *inbound_copy  # scratch for reading the inbound slot (allocated at set-up)
    uint64_t inbound_lock       # inbound seqlock value last examined
    uint16_t loop_names_base    # string id of LOOP_NAMES[0]
    uint16_t task_tpl_base      # string id of the task's first template
    uint16_t task_names_base    # string id of the task's first name
    uint32_t tid
    uint32_t task_id
    uint32_t ckpt_every
    uint64_t ckpt_seq
    uint64_t cycle
    uint64_t stop_after         # cycles this run may execute, 0 = unbounded
    int64_t period_ns
    int64_t spin_ns
    uint32_t wake_mode
    uint64_t rng
    uint32_t rt_state           # enum rtc_state as last reported
    uint32_t actuating
    int64_t fault_code          # last step result, 0 when healthy
    uint64_t skipped_pending    # periods skipped before the next step
    uint64_t adopted_epoch      # epoch of the state held: adopted, or this node's own
    uint64_t adopted_seq        # its seq in its epoch (this loop's own shadow ones count on)
    rtc_limiter step_limit
    rtc_limiter inbound_limit
    rtc_limiter journal_limit


cdef extern from "rtcore/rtsys.h" nogil:
    int rtc_stop_signal
    int rtc_install_stop_signals()
    uint64_t rtc_load_u64(const uint64_t *p)
    void rtc_store_u64(uint64_t *p, uint64_t v)
    void rtc_cpu_relax()
    void rtc_prefault_stack()


cdef inline int64_t mono_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline int64_t real_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline int log_i(Rt *rt, uint32_t level, uint32_t tpl, uint32_t n, int64_t a, int64_t b=0,
                      int64_t c=0) noexcept nogil:
    cdef rtc_arg args[3]
    args[0].i = a
    args[1].i = b
    args[2].i = c
    return rtc_emit_log(&rt.em, level, tpl, n, args, 0, 0)


cdef inline void read_control(Rt *rt) noexcept nogil:
    """Take a new control snapshot if the writer published one: one load
    when nothing changed, the previous snapshot if a write overlaps."""
    cdef rtc_control copy
    cdef uint64_t seen
    if rtc_load_u64(&rt.seg.control.seq) == rt.ctl.seq:
        return
    if rtc_seq_copy(&rt.seg.control, &copy, sizeof(rtc_control), &seen) != 0:
        rt.seg.status.control_torn += 1
        return
    rt.ctl = copy
    rt.sample_threshold = rtc_sample_threshold(copy.sample_ppm)
    rt.em.level = copy.log_level


cdef inline void new_cycle_trace(Rt *rt) noexcept nogil:
    rtc_new_id(&rt.rng, rt.cycle_ctx.trace_id, 16)
    rtc_new_id(&rt.rng, rt.cycle_ctx.span_id, 8)
    rt.cycle_ctx.flags = (RTC_TRACE_SAMPLED
                          if rtc_trace_sampled(rt.cycle_ctx.trace_id, rt.sample_threshold)
                          else 0)


cdef inline void adopt_inbound(Rt *rt) noexcept nogil:
    """Shadow mode: take the newest replicated checkpoint the agent put in
    the inbound slot, if it is this task's and newer than the state held."""
    cdef uint64_t lock = rtc_load_u64(&rt.seg.inbound.seqlock)
    cdef rtc_ckpt_slot *c = rt.inbound_copy
    cdef int rc, why = 0
    cdef uint32_t repeats = 0
    cdef rtc_arg args[3]
    if lock == rt.inbound_lock or lock & 1 or lock == 0:
        return
    if rt.actuating:
        why = WHY_ACTUATING
        rt.inbound_lock = lock
    else:
        rc = rtc_ckpt_read(&rt.seg.inbound, c, 4)
        if rc == RTC_CKPT_BUSY:
            return  # the agent is writing it: next cycle
        rt.inbound_lock = lock
        if rc != RTC_CKPT_OK:
            why = WHY_CORRUPT
        elif c.task_id != rt.task_id or c.state_size != rt.task.state_size:
            why = WHY_FOREIGN
        elif c.epoch < rt.adopted_epoch or (c.epoch == rt.adopted_epoch
                                            and c.seq <= rt.adopted_seq):
            # not newer than the state this loop holds. (Against rt.ckpt_seq,
            # which this loop's own shadow checkpoints advance at the primary's
            # pace, most replicated ones used to be skipped.)
            return
    if why != 0:
        rt.seg.status.inbound_refused += 1
        if rtc_limit(&rt.inbound_limit, why, rt.em.now_ns, FAULT_LOG_INTERVAL_NS, &repeats):
            args[0].i = why
            rtc_emit_log(&rt.em, RTC_LEVEL_WARN, T_INBOUND_REFUSED, 1, args, 0, repeats)
        else:
            rt.seg.status.faults_suppressed += 1
        return
    memcpy(rt.state, c.data, c.state_size)
    # this cycle continues the primary's: the state is after c.cycle's step
    rt.cycle = c.cycle + 1
    rt.em.cycle = rt.cycle
    rt.ckpt_seq = c.seq
    rt.adopted_epoch = c.epoch
    rt.adopted_seq = c.seq
    rt.seg.status.adopted_seq = c.seq
    rt.seg.status.adopted_cycle = c.cycle
    rt.seg.status.adopted_count += 1
    rtc_emit_event(&rt.em, RTC_EV_ADOPTED, <int64_t>c.seq, <int64_t>c.cycle)
    args[0].i = <int64_t>c.seq
    args[1].i = <int64_t>c.cycle
    args[2].i = <int64_t>c.epoch
    rtc_emit_log(&rt.em, RTC_LEVEL_DEBUG, T_ADOPTED, 3, args, 0, 0)


cdef inline int journal_push(Rt *rt, uint32_t kind, uint64_t epoch, uint64_t cycle,
                             int64_t mono, int64_t real, uint64_t cycles) noexcept nogil:
    cdef rtc_journal_rec *j = <rtc_journal_rec *>rtc_ring_claim(&rt.journal_p)
    if j == NULL:
        return -1  # cannot happen: an interval starts only with room for both ends
    j.kind = kind
    j.pid = rt.seg.status.pid
    j.epoch = epoch
    j.cycle = cycle
    j.mono_ns = mono
    j.real_ns = real
    j.cycles = cycles
    rtc_ring_publish(&rt.journal_p)
    return 0


cdef inline void stop_actuating(Rt *rt, uint32_t why_tpl, int64_t a, int64_t b) noexcept nogil:
    cdef rtc_status *st = &rt.seg.status
    cdef rtc_arg args[2]
    journal_push(rt, RTC_JOURNAL_END, st.act_epoch, st.act_last_cycle, st.act_last_mono_ns,
                 st.act_first_real_ns + (st.act_last_mono_ns - st.act_first_mono_ns),
                 st.act_interval_cycles)
    rt.actuating = 0
    st.actuating = 0
    rtc_emit_event(&rt.em, RTC_EV_ACTUATING, 0, <int64_t>st.act_epoch)
    if why_tpl == T_STOPPING:
        return  # the stop record says why
    if why_tpl == T_ACT_LEASE:
        args[0].f = a / 1e6
        args[1].f = b / 1e6
        rtc_emit_log(&rt.em, RTC_LEVEL_CRITICAL, why_tpl, 2, args, 3, 0)
    else:
        args[0].i = a
        args[1].i = b
        rtc_emit_log(&rt.em, RTC_LEVEL_ERROR, why_tpl, 2 if why_tpl == T_ACT_EPOCH else 1,
                     args, 0, 0)


cdef inline void decide_actuation(Rt *rt, int64_t wake) noexcept nogil:
    """Actuate only while active, in the snapshot's epoch, with a fresh
    lease, and with room in the journal for the interval's both ends."""
    cdef rtc_status *st = &rt.seg.status
    cdef int64_t lease_age = wake - rt.ctl.lease_ns
    cdef int lease_ok = rt.ctl.lease_timeout_ns == 0 or lease_age <= rt.ctl.lease_timeout_ns
    cdef uint64_t room
    cdef uint32_t repeats = 0
    cdef rtc_arg arg
    st.epoch = rt.ctl.epoch
    if rt.actuating:
        if not rt.ctl.active:
            stop_actuating(rt, T_ACT_STANDBY, <int64_t>rt.ctl.epoch, 0)
        elif not lease_ok:
            stop_actuating(rt, T_ACT_LEASE, lease_age, rt.ctl.lease_timeout_ns)
        elif rt.ctl.epoch != st.act_epoch:
            stop_actuating(rt, T_ACT_EPOCH, <int64_t>st.act_epoch, <int64_t>rt.ctl.epoch)
        else:
            return
    if not (rt.ctl.active and lease_ok):
        return
    room = rtc_ring_room(&rt.journal_p)
    if room < 2:
        if rtc_limit(&rt.journal_limit, 1, wake, FAULT_LOG_INTERVAL_NS, &repeats):
            arg.i = <int64_t>room
            rtc_emit_log(&rt.em, RTC_LEVEL_CRITICAL, T_ACT_JOURNAL, 1, &arg, 0, repeats)
        return
    rt.actuating = 1
    # from now on the state is this node's own, in its epoch: a replicated
    # checkpoint must be newer than that to replace it after a demotion
    rt.adopted_epoch = rt.ctl.epoch
    rt.adopted_seq = rt.ckpt_seq
    st.act_epoch = rt.ctl.epoch
    st.act_first_cycle = rt.cycle
    st.act_first_mono_ns = wake
    st.act_first_real_ns = real_ns()
    st.act_last_cycle = rt.cycle
    st.act_last_mono_ns = wake
    st.act_interval_cycles = 0
    journal_push(rt, RTC_JOURNAL_START, st.act_epoch, rt.cycle, wake, st.act_first_real_ns, 0)
    st.actuating = 1
    rtc_emit_event(&rt.em, RTC_EV_ACTUATING, 1, <int64_t>st.act_epoch)
    log_i(rt, RTC_LEVEL_ERROR, T_ACT_ON, 1, <int64_t>st.act_epoch)


cdef inline void track_state(Rt *rt) noexcept nogil:
    cdef uint32_t mode = rt.ctl.mode
    cdef uint32_t state = RTC_STATE_RUN
    if rt.fault_code != 0:
        state = RTC_STATE_FAULT
    elif mode == RTC_MODE_HOLD:
        state = RTC_STATE_HOLD
    elif mode == RTC_MODE_SAFE:
        state = RTC_STATE_SAFE
    if state == rt.rt_state:
        return
    rtc_emit_event(&rt.em, RTC_EV_STATE, state, rt.rt_state)
    # FR-019: state changes are logged at ERROR, SAFE and FAULT at CRITICAL
    if state == RTC_STATE_FAULT:
        log_i(rt, RTC_LEVEL_CRITICAL, T_STATE_FAULT, 1, rt.fault_code)
    else:
        log_i(rt, RTC_LEVEL_CRITICAL if state == RTC_STATE_SAFE else RTC_LEVEL_ERROR,
              T_STATE_RUN + (state - RTC_STATE_RUN), 0, 0)
    rt.rt_state = state
    rt.seg.status.state = state


cdef inline void apply_commands(Rt *rt) noexcept nogil:
    cdef rtc_cmd_rec cmd
    cdef rtc_span_rec span
    cdef rtc_arg args[3]
    cdef int rc, n = 0
    cdef int64_t start
    cdef int has_trace
    while n < MAX_CMDS_PER_CYCLE and rtc_ring_pop_batch(&rt.cmd_c, &cmd, 1) == 1:
        n += 1
        rt.seg.status.last_cmd_seq = cmd.seq
        has_trace = (<uint64_t *>cmd.trace_id)[0] != 0 or (<uint64_t *>cmd.trace_id)[1] != 0
        if has_trace:
            # the sender's trace: the RT's work on it, and what it emits, join it
            memcpy(rt.cmd_ctx.trace_id, cmd.trace_id, 16)
            rtc_new_id(&rt.rng, rt.cmd_ctx.span_id, 8)
            rt.cmd_ctx.flags = cmd.trace_flags
            rt.em.ctx = &rt.cmd_ctx
        start = mono_ns() if has_trace else 0
        if cmd.epoch < rt.ctl.epoch:
            rc = -ESTALE
            rt.seg.status.cmds_stale += 1
            log_i(rt, RTC_LEVEL_WARN, T_CMD_STALE, 3, <int64_t>cmd.seq, <int64_t>cmd.epoch,
                  <int64_t>rt.ctl.epoch)
        elif cmd.kind == RTC_CMD_NOP:
            rc = 0
        elif cmd.kind >= RTC_CMD_TASK and rt.task.command != NULL:
            rt.phase_span = -1
            rc = rt.task.command(rt.state, &cmd, &rt.api)
        elif cmd.kind >= RTC_CMD_TASK:
            rc = -ENOTSUP
        else:
            rc = -EINVAL
        if rc == 0:
            rt.seg.status.cmds_applied += 1
        else:
            rt.seg.status.cmds_failed += 1
            if rc != -ESTALE:
                log_i(rt, RTC_LEVEL_WARN, T_CMD_FAIL, 3, <int64_t>cmd.seq, cmd.kind, rc)
        rtc_emit_event(&rt.em, RTC_EV_CMD_ACK, <int64_t>cmd.seq, rc)
        if has_trace and cmd.trace_flags & RTC_TRACE_SAMPLED:
            memset(&span, 0, sizeof(span))
            memcpy(span.trace_id, cmd.trace_id, 16)
            memcpy(span.span_id, rt.cmd_ctx.span_id, 8)
            memcpy(span.parent_span_id, cmd.span_id, 8)
            span.start_ns = start
            span.end_ns = mono_ns()
            span.cycle = rt.cycle
            span.name_id = rt.loop_names_base + N_COMMAND
            span.status_msg_id = (RTC_NO_STRING if rc == 0
                                  else rt.loop_names_base + M_CMD_FAILED)
            span.kind = RTC_SPAN_CONSUMER
            span.status = RTC_STATUS_OK if rc == 0 else RTC_STATUS_ERROR
            span.flags = cmd.trace_flags
            span.nattrs = 3
            span.attr_key[0] = rt.loop_names_base + K_CMD_SEQ
            span.attr_key[1] = rt.loop_names_base + K_CMD_KIND
            span.attr_key[2] = rt.loop_names_base + K_CMD_RESULT
            span.attrs[0].i = <int64_t>cmd.seq
            span.attrs[1].i = cmd.kind
            span.attrs[2].i = rc
            rtc_emit_span(&rt.em, &span)
        rt.em.ctx = &rt.cycle_ctx


cdef inline void write_checkpoint(Rt *rt, int64_t now) noexcept nogil:
    rt.ckpt_seq += 1
    cdef uint32_t slot = <uint32_t>(rt.ckpt_seq % RTC_CKPT_SLOTS)
    # a standby's state is its own computation: marked, never taken for the primary's
    rtc_ckpt_write(&rt.seg.ckpt[slot], rt.ckpt_seq, rt.cycle, now, rt.ctl.epoch, rt.ctl.node_id,
                   0 if rt.actuating else RTC_CKPT_SHADOW, rt.task_id, rt.state,
                   rt.task.state_size)
    rt.seg.status.ckpt_cycle = rt.cycle
    rt.seg.status.ckpt_ns = now
    rtc_store_u64(&rt.seg.status.ckpt_seq, rt.ckpt_seq)


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


cdef inline int run_step(Rt *rt, int64_t *t) noexcept nogil:
    """step(), then output() when actuating, each in its span."""
    cdef rtc_status *st = &rt.seg.status
    cdef int rc, sp
    cdef uint32_t repeats = 0
    cdef rtc_arg args[2]
    sp = rtc_scratch_open(&rt.scratch, rt.loop_names_base + N_STEP, 0, t[0])
    rt.phase_span = sp
    rc = rt.task.step(rt.state, &rt.info, &rt.api)
    t[0] = mono_ns()
    rtc_scratch_close(&rt.scratch, sp, t[0], RTC_STATUS_OK if rc == 0 else RTC_STATUS_ERROR,
                      RTC_NO_STRING if rc == 0 else rt.loop_names_base + M_STEP_FAILED)
    if rc != 0:
        st.task_rc = rc
        # spaced by the records' own timestamps (the cycle's wake-up)
        if rtc_limit(&rt.step_limit, rc, rt.em.now_ns, FAULT_LOG_INTERVAL_NS, &repeats):
            args[0].i = rc
            args[1].i = <int64_t>rt.cycle
            rtc_emit_log(&rt.em, RTC_LEVEL_ERROR, T_TASK_FAULT, 2, args, 0, repeats)
        else:
            st.faults_suppressed += 1
    rt.fault_code = rc
    if rt.actuating:
        if rt.task.output != NULL and rc == 0:
            sp = rtc_scratch_open(&rt.scratch, rt.loop_names_base + N_OUTPUT, 0, t[0])
            rt.phase_span = sp
            rc = rt.task.output(rt.state, &rt.info, &rt.api)
            t[0] = mono_ns()
            rtc_scratch_close(&rt.scratch, sp, t[0],
                              RTC_STATUS_OK if rc == 0 else RTC_STATUS_ERROR, RTC_NO_STRING)
        st.actuated_cycles += 1
        st.act_last_cycle = rt.cycle
        st.act_last_mono_ns = rt.info.now_ns
        st.act_interval_cycles += 1
    rt.phase_span = 0
    return rc


cdef int run_loop(Rt *rt) noexcept nogil:
    cdef rtc_status *st = &rt.seg.status
    cdef int64_t target, wake, end, lat, exec_ns
    cdef int64_t t[1]
    cdef uint64_t executed = 0, skip, n_cmds
    cdef rtc_arg late_args[4]
    cdef rtc_arg attr
    cdef int late
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
        read_control(rt)
        if rt.ctl.mode == RTC_MODE_STOP:
            break
        rt.cycle += 1
        rt.em.cycle = rt.cycle
        rt.em.now_ns = wake
        new_cycle_trace(rt)
        rtc_scratch_reset(&rt.scratch)
        rtc_scratch_open(&rt.scratch, rt.loop_names_base + N_CYCLE, RTC_NO_PARENT, wake)
        rt.phase_span = 0

        adopt_inbound(rt)  # refuses (and counts) a replicated state while actuating
        decide_actuation(rt, wake)
        track_state(rt)

        t[0] = wake
        n_cmds = rtc_ring_pending(rt.cmd_c.hdr)
        if n_cmds != 0:
            rtc_scratch_open(&rt.scratch, rt.loop_names_base + N_COMMANDS, 0, t[0])
            apply_commands(rt)
            t[0] = mono_ns()
            rtc_scratch_close(&rt.scratch, rt.scratch.n - 1, t[0], RTC_STATUS_OK, RTC_NO_STRING)

        rt.info.cycle = rt.cycle
        rt.info.now_ns = wake
        rt.info.mode = rt.ctl.mode
        rt.info.actuate = rt.actuating
        rt.info.skipped = <uint32_t>rt.skipped_pending
        rt.info.dt = (1 + rt.skipped_pending) * rt.period_ns / 1e9
        rt.skipped_pending = 0
        run_step(rt, t)
        track_state(rt)

        if rt.ckpt_every != 0 and rt.cycle % rt.ckpt_every == 0:
            rtc_scratch_open(&rt.scratch, rt.loop_names_base + N_CHECKPOINT, 0, t[0])
            write_checkpoint(rt, t[0])
            rtc_scratch_close(&rt.scratch, rt.scratch.n - 1, mono_ns(), RTC_STATUS_OK,
                              RTC_NO_STRING)

        end = mono_ns()
        target += rt.period_ns
        late = end > target
        skip = <uint64_t>((end - target) // rt.period_ns) + 1 if late else 0
        if late or rt.cycle_ctx.flags & RTC_TRACE_SAMPLED:
            # a late cycle is always recorded, sampled or not
            rt.cycle_ctx.flags |= RTC_TRACE_SAMPLED
            rtc_scratch_close(&rt.scratch, 0, end, RTC_STATUS_ERROR if late else RTC_STATUS_OK,
                              RTC_NO_STRING)
            attr.i = lat
            rtc_scratch_attr(&rt.scratch, 0, rt.loop_names_base + K_WAKE_LATENCY, attr, 0)
            if late:
                attr.i = 1
                rtc_scratch_attr(&rt.scratch, 0, rt.loop_names_base + K_LATE, attr, 0)
                attr.i = <int64_t>skip
                rtc_scratch_attr(&rt.scratch, 0, rt.loop_names_base + K_SKIPPED, attr, 0)
            rtc_scratch_flush(&rt.scratch, &rt.em, &rt.cycle_ctx, &rt.rng)
            if not late:
                # pushing the spans is this cycle's work too: it counts in
                # the execution time, and can make the cycle late
                end = mono_ns()
                late = end > target
                skip = <uint64_t>((end - target) // rt.period_ns) + 1 if late else 0
        exec_ns = end - wake
        if rt.cycle_ctx.flags & RTC_TRACE_SAMPLED:
            st.traced_cycles += 1
            st.traced_exec_ns += <uint64_t>exec_ns
        else:
            st.untraced_cycles += 1
            st.untraced_exec_ns += <uint64_t>exec_ns
        rtc_hist_add(st.wake_hist, <uint64_t>lat)
        rtc_hist_add(st.exec_hist, <uint64_t>exec_ns)
        st.last_wake_ns = wake
        st.last_wake_latency_ns = lat
        st.last_exec_ns = exec_ns
        if <uint64_t>lat > st.wake_max_ns:
            st.wake_max_ns = lat
        if <uint64_t>exec_ns > st.exec_max_ns:
            st.exec_max_ns = exec_ns
        if late:
            # this cycle overran into the next period; resume on the first
            # period boundary still ahead instead of bursting to catch up
            target += <int64_t>skip * rt.period_ns
            rt.skipped_pending = skip
            st.misses += 1
            st.skipped_periods += skip
            late_args[0].f = lat / 1e3
            late_args[1].f = exec_ns / 1e3
            late_args[2].f = rt.period_ns / 1e3
            late_args[3].i = <int64_t>skip
            rtc_emit_log(&rt.em, RTC_LEVEL_ERROR, T_MISS, 4, late_args, 7, 0)
            rtc_emit_event(&rt.em, RTC_EV_DEADLINE_MISS, exec_ns, <int64_t>skip)
        if rt.scratch.dropped != 0:
            st.spans_dropped += rt.scratch.dropped
            rt.scratch.dropped = 0
        rtc_store_u64(&st.cycles, rt.cycle)
        rtc_store_u64(&st.heartbeat, st.heartbeat + 1)
        executed += 1
        if rt.stop_after != 0 and executed >= rt.stop_after:
            break
    return 0
