/*
 * Lock-free single-producer/single-consumer rings over rtc_ring_hdr.
 *
 * The producer keeps a private copy of the consumer's tail and reloads the
 * shared one only when the ring looks full, so a push touches the shared
 * tail line rarely. Pushing never waits: a full ring drops the record and
 * counts it. Indices grow without bound; slot = index & (capacity - 1).
 */
#ifndef RTCORE_RING_H
#define RTCORE_RING_H

#include <stdint.h>
#include <string.h>

#include "rtcore/layout.h"

typedef struct rtc_producer {
    rtc_ring_hdr *hdr;
    uint8_t *recs;
    uint64_t mask;
    uint32_t record_size;
    uint64_t head;             /* private copy: only this side writes hdr->head */
    uint64_t tail_cache;       /* last tail seen */
} rtc_producer;

typedef struct rtc_consumer {
    rtc_ring_hdr *hdr;
    uint8_t *recs;
    uint64_t mask;
    uint32_t record_size;
} rtc_consumer;

/* Set up a fresh ring (the creator of the segment calls this once). */
static inline void rtc_ring_format(rtc_ring_hdr *hdr, uint32_t capacity, uint32_t record_size)
{
    memset(hdr, 0, sizeof(*hdr));
    hdr->capacity = capacity;
    hdr->record_size = record_size;
}

static inline void rtc_producer_attach(rtc_producer *p, rtc_ring_hdr *hdr, void *recs)
{
    p->hdr = hdr;
    p->recs = (uint8_t *)recs;
    p->mask = (uint64_t)hdr->capacity - 1;
    p->record_size = hdr->record_size;
    p->head = __atomic_load_n(&hdr->head, __ATOMIC_ACQUIRE);
    p->tail_cache = __atomic_load_n(&hdr->tail, __ATOMIC_ACQUIRE);
}

static inline void rtc_consumer_attach(rtc_consumer *c, rtc_ring_hdr *hdr, void *recs)
{
    c->hdr = hdr;
    c->recs = (uint8_t *)recs;
    c->mask = (uint64_t)hdr->capacity - 1;
    c->record_size = hdr->record_size;
}

/*
 * Claim the next slot for in-place writing, or NULL (and a counted drop) if
 * the ring is full. Follow with rtc_ring_publish(); nothing else may be
 * claimed in between.
 */
static inline void *rtc_ring_claim(rtc_producer *p)
{
    if (p->head - p->tail_cache > p->mask) {
        p->tail_cache = __atomic_load_n(&p->hdr->tail, __ATOMIC_ACQUIRE);
        if (p->head - p->tail_cache > p->mask) {
            __atomic_store_n(&p->hdr->dropped, p->hdr->dropped + 1, __ATOMIC_RELAXED);
            return NULL;
        }
    }
    return p->recs + (p->head & p->mask) * p->record_size;
}

static inline void rtc_ring_publish(rtc_producer *p)
{
    p->head++;
    __atomic_store_n(&p->hdr->pushed, p->hdr->pushed + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&p->hdr->head, p->head, __ATOMIC_RELEASE);
}

/* Whether a claim would succeed now; unlike a failed claim, counts no drop. */
static inline int rtc_ring_has_room(rtc_producer *p)
{
    if (p->head - p->tail_cache <= p->mask)
        return 1;
    p->tail_cache = __atomic_load_n(&p->hdr->tail, __ATOMIC_ACQUIRE);
    return p->head - p->tail_cache <= p->mask;
}

/* Copying push: 0, or -1 when the ring is full (the drop is counted). */
static inline int rtc_ring_push(rtc_producer *p, const void *rec)
{
    void *slot = rtc_ring_claim(p);
    if (slot == NULL)
        return -1;
    memcpy(slot, rec, p->record_size);
    rtc_ring_publish(p);
    return 0;
}

/* Free slots now (reloads the consumer's tail); counts no drop. */
static inline uint64_t rtc_ring_room(rtc_producer *p)
{
    p->tail_cache = __atomic_load_n(&p->hdr->tail, __ATOMIC_ACQUIRE);
    return p->mask + 1 - (p->head - p->tail_cache);
}

/* Copy up to max records into out (at most two memcpy: the ring may wrap)
 * without taking them: they stay in the ring, and the producer cannot
 * overwrite them, until rtc_ring_commit(). Returns how many were copied. */
static inline uint32_t rtc_ring_peek_batch(rtc_consumer *c, void *out, uint32_t max)
{
    uint64_t tail = __atomic_load_n(&c->hdr->tail, __ATOMIC_RELAXED);
    uint64_t head = __atomic_load_n(&c->hdr->head, __ATOMIC_ACQUIRE);
    uint64_t avail = head - tail;
    uint32_t n = avail < max ? (uint32_t)avail : max;
    uint64_t first = tail & c->mask;
    uint64_t k = c->mask + 1 - first;
    if (k > n)
        k = n;
    memcpy(out, c->recs + first * c->record_size, k * c->record_size);
    if (n > k)
        memcpy((uint8_t *)out + k * c->record_size, c->recs, (n - k) * c->record_size);
    return n;
}

/* Take the n oldest records (n no more than a peek returned): their slots
 * go back to the producer. */
static inline void rtc_ring_commit(rtc_consumer *c, uint32_t n)
{
    uint64_t tail = __atomic_load_n(&c->hdr->tail, __ATOMIC_RELAXED);
    __atomic_store_n(&c->hdr->tail, tail + n, __ATOMIC_RELEASE);
}

/* Copy up to max records into out and take them; returns how many. */
static inline uint32_t rtc_ring_pop_batch(rtc_consumer *c, void *out, uint32_t max)
{
    uint32_t n = rtc_ring_peek_batch(c, out, max);
    rtc_ring_commit(c, n);
    return n;
}

static inline uint64_t rtc_ring_pending(const rtc_ring_hdr *hdr)
{
    return __atomic_load_n(&hdr->head, __ATOMIC_ACQUIRE) -
           __atomic_load_n(&hdr->tail, __ATOMIC_ACQUIRE);
}

#endif
