/*
 * Harness of `rtctl bench logging`: the RT path's own record making
 * (rtcore/emit.h, the code the loop inlines) timed, counted and used to fill
 * a ring with real records.
 *
 *   push_bench time COUNT CPU READER_CPU PRIORITY
 *       COUNT log pushes, then COUNT span pushes, on CPU (SCHED_FIFO at
 *       PRIORITY when allowed) while a consumer thread pinned to READER_CPU
 *       drains both rings as the agent's drainer does. Each kind is timed
 *       twice: once as one batch between two clock_gettime calls (the mean),
 *       once in sub-batches of SUB pushes between two TSC reads (the
 *       distribution of sub-batch means). Prints one JSON line.
 *   push_bench count COUNT
 *       Single-threaded, for callgrind: COUNT calls of each wrapper, the ring
 *       emptied between batches of DRAIN_EVERY outside the wrappers.
 *   push_bench fill SHM_NAME
 *       Fill the log ring of an existing segment (/dev/shm/SHM_NAME) with
 *       real log records until it is full, interning the template first.
 *
 * The pushes go through the noipa wrappers rtc_bench_log/rtc_bench_span,
 * as spdlog's baseline goes through rtc_spdlog_call: the call costs both
 * sides the same few instructions, the compiler cannot hoist the push's
 * work out of the timed loop, and callgrind can name the function.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "rtcore/emit.h"

#define SUB 64u             /* pushes per TSC-timed sub-batch */
#define MEAN_BURST 1024u    /* pushes per clock_gettime-timed burst: a quarter of the ring */
#define DRAIN_EVERY 1024u   /* count mode: pushes between two (untimed) drains */
#define MAX_WARMUP 100000L
#define POP_MAX 256u        /* records the consumer takes per pop */
#define TIMER_SAMPLES 100000u

/* The message of spdlog's baseline, with its arguments' types: one double, three ints. */
static const char TEMPLATE[] =
    "deadline miss: woke {late_us:.1f} us late, {skipped} periods skipped, cycle {cycle}, "
    "job {job}";
#define TEMPLATE_FLOATS 1u  /* float_mask: late_us */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define TIMER_NAME "rdtsc"
/* lfence before the first read and rdtscp + lfence for the second keep the
 * timed instructions between the two reads (Intel's recommended pairing). */
static inline uint64_t ticks_begin(void)
{
    _mm_lfence();
    return __rdtsc();
}

static inline void cpu_relax(void) { _mm_pause(); }

static inline uint64_t ticks_end(void)
{
    unsigned aux;
    uint64_t t = __rdtscp(&aux);
    _mm_lfence();
    return t;
}
#else
#define TIMER_NAME "clock_gettime"
static inline uint64_t ticks_begin(void) { return (uint64_t)mono_ns(); }
static inline uint64_t ticks_end(void) { return (uint64_t)mono_ns(); }
static inline void cpu_relax(void) {}
#endif

/* ---- the measured calls ---- */

__attribute__((noipa)) int rtc_bench_log(rtc_emitter *e, uint32_t tpl, double late, int64_t skipped,
                                         int64_t cycle, int64_t job)
{
    rtc_arg args[4];
    args[0].f = late;
    args[1].i = skipped;
    args[2].i = cycle;
    args[3].i = job;
    return rtc_emit_log(e, RTC_LEVEL_INFO, tpl, 4, args, TEMPLATE_FLOATS, 0);
}

__attribute__((noipa)) int rtc_bench_span(rtc_emitter *e, const rtc_span_rec *s)
{
    return rtc_emit_span(e, s);
}

/* The same argument arithmetic as spdlog's baseline loop. */
static inline void log_call(rtc_emitter *e, long i)
{
    rtc_bench_log(e, 0, (double)(i % 1000) * 0.7 + 1.3, i % 7, i, i % 97);
}

/* ---- set-up ---- */

static const rtc_trace_ctx CTX = {
    .trace_id = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6,
                 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
    .span_id = {0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
    .flags = RTC_TRACE_SAMPLED,
};

static rtc_segment *alloc_segment(void)
{
    size_t size = (sizeof(rtc_segment) + RTC_CACHELINE - 1) / RTC_CACHELINE * RTC_CACHELINE;
    rtc_segment *seg = aligned_alloc(RTC_CACHELINE, size);
    if (seg == NULL) {
        fprintf(stderr, "push_bench: cannot allocate %zu bytes\n", size);
        exit(1);
    }
    memset(seg, 0, size); /* also faults every page in before timing */
    rtc_ring_format(&seg->log_ring.hdr, RTC_LOG_RING_CAP, sizeof(rtc_log_rec));
    rtc_ring_format(&seg->span_ring.hdr, RTC_SPAN_RING_CAP, sizeof(rtc_span_rec));
    return seg;
}

static void emitter_init(rtc_emitter *e, rtc_segment *seg)
{
    memset(e, 0, sizeof(*e));
    rtc_producer_attach(&e->log, &seg->log_ring.hdr, seg->log_ring.recs);
    rtc_producer_attach(&e->span, &seg->span_ring.hdr, seg->span_ring.recs);
    e->ctx = &CTX;
    e->now_ns = mono_ns();
    e->cycle = 1;
    e->level = RTC_LEVEL_INFO;
    e->tid = (uint32_t)syscall(SYS_gettid);
}

/* A finished span as the loop's scratch flush hands it over: ids set, two attributes. */
static void ready_span(rtc_span_rec *s)
{
    memset(s, 0, sizeof(*s));
    memcpy(s->trace_id, CTX.trace_id, 16);
    memcpy(s->span_id, CTX.span_id, 8);
    s->start_ns = mono_ns();
    s->end_ns = s->start_ns + 1000;
    s->cycle = 1;
    s->name_id = 2;
    s->status_msg_id = RTC_NO_STRING;
    s->kind = RTC_SPAN_INTERNAL;
    s->status = RTC_STATUS_OK;
    s->flags = RTC_TRACE_SAMPLED;
    s->nattrs = 2;
    s->attr_key[0] = 7;
    s->attr_key[1] = 8;
    s->attrs[0].i = 1234;
    s->attrs[1].i = 0;
}

static long parse(const char *s, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || end == s) {
        fprintf(stderr, "push_bench: %s must be an integer, not '%s'\n", what, s);
        exit(2);
    }
    return v;
}

/* ---- consumer thread ---- */

typedef struct consumer {
    rtc_consumer log, span;
    int cpu;
    int pinned;
    int stop;
    int on_request;            /* 0: drain continuously; 1: only when asked (req != ack) */
    uint8_t _pad0[RTC_CACHELINE];
    uint64_t req;              /* producer -> consumer, on its own line */
    uint8_t _pad1[RTC_CACHELINE];
    uint64_t ack;              /* consumer -> producer */
    uint64_t taken;
} consumer;

static void *consume(void *arg)
{
    consumer *c = arg;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(c->cpu, &set);
    c->pinned = pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0;
    /* a 128-byte record each: 32 KiB per pop, in the reader's L1/L2 like a drainer's batch */
    static rtc_log_rec out[POP_MAX];
    while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
        uint64_t req = __atomic_load_n(&c->req, __ATOMIC_ACQUIRE);
        if (__atomic_load_n(&c->on_request, __ATOMIC_ACQUIRE) && req == c->ack) {
            cpu_relax();
            continue;
        }
        uint32_t n;
        do {
            n = rtc_ring_pop_batch(&c->log, out, POP_MAX);
            n += rtc_ring_pop_batch(&c->span, out, POP_MAX);
            c->taken += n;
        } while (n != 0);
        __atomic_store_n(&c->ack, req, __ATOMIC_RELEASE);
    }
    return NULL;
}

/* ---- time mode ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct timer_info {
    double overhead_ticks;     /* median of an empty interval */
    double resolution_ticks;   /* smallest step between two distinct empty intervals */
    int64_t clock_overhead_ns; /* median of an empty clock_gettime interval */
} timer_info;

static timer_info measure_timer(void)
{
    static uint64_t d[TIMER_SAMPLES];
    for (unsigned k = 0; k < TIMER_SAMPLES; k++) {
        uint64_t t0 = ticks_begin();
        uint64_t t1 = ticks_end();
        d[k] = t1 - t0;
    }
    qsort(d, TIMER_SAMPLES, sizeof d[0], cmp_u64);
    uint64_t step = 0;
    for (unsigned k = 1; k < TIMER_SAMPLES; k++) {
        uint64_t gap = d[k] - d[k - 1];
        if (gap != 0 && (step == 0 || gap < step))
            step = gap;
    }
    timer_info t = {(double)d[TIMER_SAMPLES / 2], (double)(step ? step : 1), 0};
    for (unsigned k = 0; k < TIMER_SAMPLES; k++) {
        int64_t t0 = mono_ns();
        d[k] = (uint64_t)(mono_ns() - t0);
    }
    qsort(d, TIMER_SAMPLES, sizeof d[0], cmp_u64);
    t.clock_overhead_ns = (int64_t)d[TIMER_SAMPLES / 2];
    return t;
}

typedef struct kind_result {
    double mean_ns;            /* one clock_gettime-timed batch / count */
    uint64_t dropped;          /* drops during both timed passes */
    double p50, p99, p999, max, sub_mean;  /* ns per push, of sub-batch means */
    long subs;
} kind_result;

static double pct(const double *v, long n, double q)
{
    long i = (long)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* Untimed: let the consumer empty the ring, so that a timed burst finds
 * room (a push into a full ring is a cheap drop, not a push). */
static void catch_up(consumer *c, const rtc_ring_hdr *hdr)
{
    uint64_t req = c->req + 1;
    __atomic_store_n(&c->req, req, __ATOMIC_RELEASE);
    while (rtc_ring_pending(hdr) != 0 || __atomic_load_n(&c->ack, __ATOMIC_ACQUIRE) != req)
        cpu_relax();
}

static inline void push_burst(int kind, rtc_emitter *e, const rtc_span_rec *span, long *i,
                              unsigned n)
{
    if (kind == 0) {
        for (unsigned j = 0; j < n; j++, (*i)++)
            log_call(e, *i);
    } else {
        for (unsigned j = 0; j < n; j++)
            rtc_bench_span(e, span);
    }
}

/* kind 0: log pushes, 1: span pushes */
static kind_result time_kind(int kind, consumer *c, rtc_emitter *e, rtc_ring_hdr *hdr, long count,
                             const rtc_span_rec *span, const timer_info *timer,
                             double *ticks_per_ns)
{
    kind_result r;
    memset(&r, 0, sizeof r);
    long i = 0;
    long warmup = count < MAX_WARMUP ? count : MAX_WARMUP;
    for (long done = 0; done < warmup; done += MEAN_BURST) {
        catch_up(c, hdr);
        push_burst(kind, e, span, &i, MEAN_BURST);
    }
    uint64_t dropped0 = __atomic_load_n(&hdr->dropped, __ATOMIC_RELAXED);

    /* the mean: bursts of MEAN_BURST between two clock_gettime calls */
    int64_t total = 0;
    for (long done = 0; done < count; done += MEAN_BURST) {
        unsigned n = count - done < MEAN_BURST ? (unsigned)(count - done) : MEAN_BURST;
        catch_up(c, hdr);
        int64_t t0 = mono_ns();
        push_burst(kind, e, span, &i, n);
        total += mono_ns() - t0 - timer->clock_overhead_ns;
    }
    r.mean_ns = (double)total / (double)count;

    /* the distribution: sub-batches of SUB between two TSC reads */
    r.subs = count / SUB;
    if (r.subs == 0)
        r.subs = 1;
    uint64_t *d = malloc((size_t)r.subs * sizeof *d);
    double *ns = malloc((size_t)r.subs * sizeof *ns);
    if (d == NULL || ns == NULL) {
        fprintf(stderr, "push_bench: out of memory\n");
        exit(1);
    }
    int64_t w0 = mono_ns();
    uint64_t c0 = ticks_begin();
    for (long k = 0; k < r.subs; k++) {
        catch_up(c, hdr);
        uint64_t s0 = ticks_begin();
        push_burst(kind, e, span, &i, SUB);
        d[k] = ticks_end() - s0;
    }
    uint64_t c1 = ticks_end();
    int64_t w1 = mono_ns();
        *ticks_per_ns = (double)(c1 - c0) / (double)(w1 - w0);
    r.dropped = __atomic_load_n(&hdr->dropped, __ATOMIC_RELAXED) - dropped0;
    double sum = 0;
    for (long k = 0; k < r.subs; k++) {
        double t = (double)d[k] - timer->overhead_ticks;
        ns[k] = (t > 0 ? t : 0) / SUB / *ticks_per_ns;
        sum += ns[k];
    }
    qsort(ns, (size_t)r.subs, sizeof ns[0], cmp_double);
    r.p50 = pct(ns, r.subs, 0.5);
    r.p99 = pct(ns, r.subs, 0.99);
    r.p999 = pct(ns, r.subs, 0.999);
    r.max = ns[r.subs - 1];
    r.sub_mean = sum / (double)r.subs;
    free(d);
    free(ns);
    catch_up(c, hdr);
    return r;
}

static void print_kind(const char *name, const kind_result *r)
{
    printf("\"%s\": {\"mean\": %.3f, \"dropped\": %" PRIu64 ", \"p50\": %.3f, \"p99\": %.3f, "
           "\"p999\": %.3f, \"max\": %.3f, \"sub_batch_mean\": %.3f, \"sub_batches\": %ld}",
           name, r->mean_ns, r->dropped, r->p50, r->p99, r->p999, r->max, r->sub_mean, r->subs);
}

static int time_mode(long count, int cpu, int reader_cpu, int priority)
{
    rtc_segment *seg = alloc_segment();
    rtc_emitter e;
    emitter_init(&e, seg);
    consumer c;
    memset(&c, 0, sizeof c);
    rtc_consumer_attach(&c.log, &seg->log_ring.hdr, seg->log_ring.recs);
    rtc_consumer_attach(&c.span, &seg->span_ring.hdr, seg->span_ring.recs);
    c.cpu = reader_cpu;

    char degraded[512] = "";
    if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0)
        snprintf(degraded + strlen(degraded), sizeof degraded - strlen(degraded),
                 "mlockall: %s; ", strerror(errno));
    /* the consumer starts before this thread pins itself and turns SCHED_FIFO,
     * so it inherits neither */
    pthread_t th;
    if (pthread_create(&th, NULL, consume, &c) != 0) {
        fprintf(stderr, "push_bench: cannot start the consumer thread\n");
        return 1;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0) {
        fprintf(stderr, "push_bench: cannot pin the producer to CPU %d\n", cpu);
        return 1;
    }
    struct sched_param sp = {.sched_priority = priority};
    int rc = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);
    if (rc != 0)
        snprintf(degraded + strlen(degraded), sizeof degraded - strlen(degraded),
                 "SCHED_FIFO %d: %s; ", priority, strerror(rc));

    timer_info timer = measure_timer();
    rtc_span_rec span;
    ready_span(&span);
    double tpn[4];
    kind_result res[4];
    /* first with the consumer draining all along, then with it draining only
     * between bursts, as a drainer polling every few milliseconds does */
    for (int mode = 0; mode < 2; mode++) {
        __atomic_store_n(&c.on_request, mode, __ATOMIC_RELEASE);
        res[2 * mode] = time_kind(0, &c, &e, &seg->log_ring.hdr, count, NULL, &timer, &tpn[2 * mode]);
        res[2 * mode + 1] = time_kind(1, &c, &e, &seg->span_ring.hdr, count, &span, &timer,
                                      &tpn[2 * mode + 1]);
    }
    __atomic_store_n(&c.stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    if (!c.pinned) {
        fprintf(stderr, "push_bench: cannot pin the consumer to CPU %d\n", reader_cpu);
        return 1;
    }
    double ticks_per_ns = (tpn[0] + tpn[1] + tpn[2] + tpn[3]) / 4;
    printf("{\"count\": %ld, \"sub_batch\": %u, \"mean_burst\": %u, \"timer\": \"%s\", "
           "\"ticks_per_ns\": %.5f, \"timer_overhead_ns\": %.3f, \"timer_resolution_ns\": %.3f, "
           "\"clock_overhead_ns\": %" PRId64 ", \"cpu\": %d, \"reader_cpu\": %d, "
           "\"sched_fifo\": %s, \"consumed\": %" PRIu64 ", ",
           count, SUB, MEAN_BURST, TIMER_NAME, ticks_per_ns, timer.overhead_ticks / ticks_per_ns,
           timer.resolution_ticks / ticks_per_ns, timer.clock_overhead_ns, cpu, reader_cpu,
           rc == 0 ? "true" : "false", c.taken);
    print_kind("log", &res[0]);
    printf(", ");
    print_kind("span", &res[1]);
    printf(", ");
    print_kind("log_consumer_between_bursts", &res[2]);
    printf(", ");
    print_kind("span_consumer_between_bursts", &res[3]);
    size_t n = strlen(degraded);
    if (n >= 2)
        degraded[n - 2] = '\0';
    printf(", \"degraded\": \"%s\"}\n", degraded);
    return 0;
}

/* ---- count mode (callgrind) ---- */

static int count_mode(long count)
{
    rtc_segment *seg = alloc_segment();
    rtc_emitter e;
    emitter_init(&e, seg);
    rtc_consumer log_c, span_c;
    rtc_consumer_attach(&log_c, &seg->log_ring.hdr, seg->log_ring.recs);
    rtc_consumer_attach(&span_c, &seg->span_ring.hdr, seg->span_ring.recs);
    static rtc_log_rec out[DRAIN_EVERY];
    rtc_span_rec span;
    ready_span(&span);
    for (long i = 0; i < count;) {
        for (unsigned j = 0; j < DRAIN_EVERY && i < count; j++, i++)
            log_call(&e, i);
        rtc_ring_pop_batch(&log_c, out, DRAIN_EVERY);
    }
    for (long i = 0; i < count;) {
        for (unsigned j = 0; j < DRAIN_EVERY && i < count; j++, i++)
            rtc_bench_span(&e, &span);
        rtc_ring_pop_batch(&span_c, out, DRAIN_EVERY);
    }
    uint64_t dropped = seg->log_ring.hdr.dropped + seg->span_ring.hdr.dropped;
    printf("{\"calls\": %ld, \"dropped\": %" PRIu64 "}\n", count, dropped);
    return dropped != 0;
}

/* ---- fill mode ---- */

static uint32_t intern(rtc_segment *seg, const char *text)
{
    for (uint32_t i = 0; i < seg->strings.count; i++)
        if (strcmp(seg->strings.text[i], text) == 0)
            return i;
    uint32_t i = seg->strings.count;
    if (i >= RTC_STRINGS_MAX || strlen(text) >= RTC_STRING_LEN) {
        fprintf(stderr, "push_bench: no room for the template in the string table\n");
        exit(1);
    }
    strcpy(seg->strings.text[i], text);
    __atomic_store_n(&seg->strings.count, i + 1, __ATOMIC_RELEASE);
    return i;
}

static int fill_mode(const char *name)
{
    char path[300];
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    int fd = open(path, O_RDWR);
    if (fd < 0) {
        fprintf(stderr, "push_bench: cannot open %s: %s\n", path, strerror(errno));
        return 1;
    }
    rtc_segment *seg = mmap(NULL, sizeof(rtc_segment), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (seg == MAP_FAILED) {
        fprintf(stderr, "push_bench: cannot map %s: %s\n", path, strerror(errno));
        return 1;
    }
    if (seg->header.magic != RTC_MAGIC || seg->header.abi_version != RTC_ABI_VERSION ||
        seg->header.segment_size != sizeof(rtc_segment)) {
        fprintf(stderr, "push_bench: %s is not a segment of ABI %u\n", path, RTC_ABI_VERSION);
        return 1;
    }
    uint32_t tpl = intern(seg, TEMPLATE);
    rtc_emitter e;
    emitter_init(&e, seg);
    long n = 0;
    while (rtc_ring_has_room(&e.log)) {
        e.cycle = (uint64_t)n / 10 + 1;
        rtc_bench_log(&e, tpl, (double)(n % 1000) * 0.7 + 1.3, n % 7, n, n % 97);
        n++;
    }
    printf("{\"filled\": %ld, \"template_id\": %u}\n", n, tpl);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 6 && strcmp(argv[1], "time") == 0) {
        long count = parse(argv[2], "COUNT");
        if (count <= 0) {
            fprintf(stderr, "push_bench: COUNT must be positive\n");
            return 2;
        }
        return time_mode(count, (int)parse(argv[3], "CPU"), (int)parse(argv[4], "READER_CPU"),
                         (int)parse(argv[5], "PRIORITY"));
    }
    if (argc == 3 && strcmp(argv[1], "count") == 0)
        return count_mode(parse(argv[2], "COUNT"));
    if (argc == 3 && strcmp(argv[1], "fill") == 0)
        return fill_mode(argv[2]);
    fprintf(stderr,
            "usage: push_bench time COUNT CPU READER_CPU PRIORITY | count COUNT | fill SHM_NAME\n");
    return 2;
}
