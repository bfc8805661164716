/*
 * Making records on the RT path: logs, events and spans pushed in place into
 * the segment's rings, the per-cycle span scratch, W3C ids and the rate
 * limiter for repeated faults. Everything here is inline, allocation-free
 * and never waits; a full ring drops the record and counts it.
 *
 * The loop (rtcore/_rt.pyx) and the benchmark harnesses include this one
 * file, so what a benchmark measures is the code the loop runs.
 */
#ifndef RTCORE_EMIT_H
#define RTCORE_EMIT_H

#include <stdint.h>
#include <string.h>

#include "rtcore/layout.h"
#include "rtcore/ring.h"

#define RTC_SCRATCH_SPANS 16u
#define RTC_NO_PARENT 0xffu
#define RTC_NO_STRING 0xffffu

/* The trace context records carry: the cycle's own, or a traced command's. */
typedef struct rtc_trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags;             /* enum rtc_trace_flags */
    uint8_t _pad0[7];
} rtc_trace_ctx;

typedef struct rtc_emitter {
    rtc_producer log;
    rtc_producer span;
    rtc_producer event;
    const rtc_trace_ctx *ctx;
    int64_t now_ns;            /* timestamp of records: the cycle's wake-up */
    uint64_t cycle;
    uint32_t level;            /* records below this level are not pushed */
    uint32_t tid;
} rtc_emitter;

/*
 * Spans of one cycle, kept until the cycle ends: pushed if the cycle was
 * sampled or turned out late, forgotten otherwise. Ids are only made when
 * pushed; parents are scratch indices until then.
 */
typedef struct rtc_span_scratch {
    uint32_t n;
    uint32_t dropped;          /* spans that did not fit this cycle */
    uint8_t parent[RTC_SCRATCH_SPANS];
    uint8_t has_id[RTC_SCRATCH_SPANS]; /* 1: the span id was given when opened */
    rtc_span_rec spans[RTC_SCRATCH_SPANS];
} rtc_span_scratch;

/* First occurrence of a fault, then at most one record per interval with a count. */
typedef struct rtc_limiter {
    int64_t code;
    int64_t next_ns;
    uint32_t suppressed;
    uint32_t _pad0;
} rtc_limiter;

/* splitmix64: ids need uniqueness, not secrecy, and no system call per id */
static inline uint64_t rtc_next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline void rtc_new_id(uint64_t *rng, uint8_t *out, int n)
{
    uint64_t r = rtc_next_random(rng);
    memcpy(out, &r, 8);
    if (n == 16) {
        r = rtc_next_random(rng);
        memcpy(out + 8, &r, 8);
    }
}

/*
 * Whether a trace is sampled at ppm parts per million, from its id alone (as
 * OpenTelemetry's TraceIdRatioBased does), so every hop decides alike: the
 * low 8 bytes against ppm/10^6 of 2^64.
 */
static inline uint64_t rtc_sample_threshold(uint32_t ppm)
{
    if (ppm >= RTC_SAMPLE_PPM_ALL)
        return UINT64_MAX;
    return (uint64_t)ppm * (UINT64_MAX / RTC_SAMPLE_PPM_ALL);
}

static inline int rtc_trace_sampled(const uint8_t *trace_id, uint64_t threshold)
{
    uint64_t lo;
    memcpy(&lo, trace_id + 8, 8);
    return threshold == UINT64_MAX ? 1 : lo < threshold;
}

static inline int rtc_emit_log(rtc_emitter *e, uint32_t level, uint32_t template_id, uint32_t nargs,
                               const rtc_arg *args, uint32_t float_mask, uint32_t repeats)
{
    if (level < e->level)
        return -1;
    rtc_log_rec *r = (rtc_log_rec *)rtc_ring_claim(&e->log);
    if (r == NULL)
        return -1;
    if (nargs > RTC_LOG_ARGS)
        nargs = RTC_LOG_ARGS;
    r->ts_ns = e->now_ns;
    r->cycle = e->cycle;
    memcpy(r->trace_id, e->ctx->trace_id, 16);
    memcpy(r->span_id, e->ctx->span_id, 8);
    r->template_id = (uint16_t)template_id;
    r->level = (uint8_t)level;
    r->nargs = (uint8_t)nargs;
    r->float_mask = (uint8_t)(float_mask & ((1u << nargs) - 1u));
    r->trace_flags = e->ctx->flags;
    r->tid = e->tid;
    r->repeats = repeats;
    for (uint32_t i = 0; i < nargs; i++)
        r->args[i] = args[i];
    rtc_ring_publish(&e->log);
    return 0;
}

static inline int rtc_emit_event(rtc_emitter *e, uint32_t kind, int64_t a, int64_t b)
{
    rtc_event_rec *r = (rtc_event_rec *)rtc_ring_claim(&e->event);
    if (r == NULL)
        return -1;
    r->ts_ns = e->now_ns;
    r->cycle = e->cycle;
    r->kind = (uint16_t)kind;
    r->trace_flags = e->ctx->flags;
    memcpy(r->trace_id, e->ctx->trace_id, 16);
    memcpy(r->span_id, e->ctx->span_id, 8);
    r->a = a;
    r->b = b;
    rtc_ring_publish(&e->event);
    return 0;
}

/* A finished span with its ids set: straight into the ring. */
static inline int rtc_emit_span(rtc_emitter *e, const rtc_span_rec *s)
{
    return rtc_ring_push(&e->span, s);
}

/* ---- per-cycle span scratch ---- */

static inline void rtc_scratch_reset(rtc_span_scratch *sc) { sc->n = 0; }

/* Open a span; returns its index or -1 when the scratch is full (counted). */
static inline int rtc_scratch_open(rtc_span_scratch *sc, uint32_t name_id, uint32_t parent,
                                   int64_t start_ns)
{
    if (sc->n >= RTC_SCRATCH_SPANS) {
        sc->dropped++;
        return -1;
    }
    uint32_t i = sc->n++;
    rtc_span_rec *s = &sc->spans[i];
    sc->parent[i] = (uint8_t)parent;
    sc->has_id[i] = 0;
    s->start_ns = start_ns;
    s->end_ns = start_ns;
    s->name_id = (uint16_t)name_id;
    s->status_msg_id = RTC_NO_STRING;
    s->kind = RTC_SPAN_INTERNAL;
    s->status = RTC_STATUS_UNSET;
    s->nattrs = 0;
    s->attr_float_mask = 0;
    return (int)i;
}

/* A span whose id must be known now (a record made during the cycle names it). */
static inline int rtc_scratch_open_with_id(rtc_span_scratch *sc, uint32_t name_id, uint32_t parent,
                                           int64_t start_ns, const uint8_t *span_id)
{
    int i = rtc_scratch_open(sc, name_id, parent, start_ns);
    if (i >= 0) {
        memcpy(sc->spans[i].span_id, span_id, 8);
        sc->has_id[i] = 1;
    }
    return i;
}

static inline int rtc_scratch_attr(rtc_span_scratch *sc, int i, uint32_t key_id, rtc_arg value,
                                   int is_float)
{
    if (i < 0 || (uint32_t)i >= sc->n)
        return -1;
    rtc_span_rec *s = &sc->spans[i];
    if (s->nattrs >= RTC_SPAN_ATTRS)
        return -1;
    s->attr_key[s->nattrs] = (uint16_t)key_id;
    s->attrs[s->nattrs] = value;
    if (is_float)
        s->attr_float_mask |= (uint8_t)(1u << s->nattrs);
    s->nattrs++;
    return 0;
}

static inline int rtc_scratch_close(rtc_span_scratch *sc, int i, int64_t end_ns, uint32_t status,
                                    uint32_t status_msg_id)
{
    if (i < 0 || (uint32_t)i >= sc->n)
        return -1;
    sc->spans[i].end_ns = end_ns;
    sc->spans[i].status = (uint8_t)status;
    sc->spans[i].status_msg_id = (uint16_t)status_msg_id;
    return 0;
}

/*
 * Push the cycle's spans under ctx: span 0 takes ctx's span id (the cycle
 * span the cycle's logs and events already name), the others fresh ids, and
 * parents resolve from indices. Returns how many were pushed.
 */
static inline uint32_t rtc_scratch_flush(rtc_span_scratch *sc, rtc_emitter *e,
                                         const rtc_trace_ctx *ctx, uint64_t *rng)
{
    uint32_t pushed = 0;
    for (uint32_t i = 0; i < sc->n; i++) {
        rtc_span_rec *s = &sc->spans[i];
        memcpy(s->trace_id, ctx->trace_id, 16);
        if (i == 0)
            memcpy(s->span_id, ctx->span_id, 8);
        else if (!sc->has_id[i])
            rtc_new_id(rng, s->span_id, 8);
        if (sc->parent[i] == RTC_NO_PARENT || sc->parent[i] >= i)
            memset(s->parent_span_id, 0, 8);
        else
            memcpy(s->parent_span_id, sc->spans[sc->parent[i]].span_id, 8);
        s->cycle = e->cycle;
        s->flags = ctx->flags;
        if (rtc_emit_span(e, s) == 0)
            pushed++;
    }
    sc->n = 0;
    return pushed;
}

/* ---- repeated faults ---- */

/*
 * 1: emit a record now, with *repeats the identical ones folded since the
 * last; 0: fold this one into the count. A new code always emits.
 */
static inline int rtc_limit(rtc_limiter *l, int64_t code, int64_t now_ns, int64_t interval_ns,
                            uint32_t *repeats)
{
    if (code == l->code && now_ns < l->next_ns) {
        l->suppressed++;
        return 0;
    }
    *repeats = code == l->code ? l->suppressed : 0;
    l->code = code;
    l->suppressed = 0;
    l->next_ns = now_ns + interval_ns;
    return 1;
}

#endif
