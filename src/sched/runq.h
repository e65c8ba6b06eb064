/*
 * The per-worker run queue: a bounded ring that its owner pushes and pops
 * without locks and that other workers steal half of, plus a one-fiber
 * "next" slot. This is the shape of Go's runqput/runqget/runqsteal (and
 * Tokio's local queue), chosen over a Chase-Lev deque; see the design notes
 * at the top of sched.c for why.
 *
 * Indices are free-running 32-bit counters (wrap-around is harmless because
 * only differences are used); slot = index % RUNQ_SIZE.
 *
 *   tail  written only by the owner (store-release after filling the slot);
 *   head  advanced by whoever takes items: the owner (runq_take_ring) or a thief
 *         (runq_grab), always by compare-and-swap, so a slot is consumed by
 *         exactly one of them;
 *   next  the slot a freshly readied fiber goes to, so that a fiber woken by
 *         the one running now runs next on this worker (producer/consumer
 *         pairs ping-pong without touching the ring). Taken by CAS too.
 *
 * A thief copies the slots it wants *before* its CAS on head. If the CAS
 * fails, someone else consumed some of them and the copies are discarded;
 * if it succeeds, the owner cannot have overwritten them, because the owner
 * only writes slots in [tail, head + RUNQ_SIZE) and head had not moved.
 * Slots are read and written with relaxed atomics: the values may be stale
 * in a losing thief's copy, never torn.
 *
 * This header is included by sched.c and by the test suite (test_runq.c),
 * which drives it deterministically and under concurrent theft.
 */
#ifndef WEFT_RUNQ_H
#define WEFT_RUNQ_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RUNQ_SIZE 256u

struct weft_fiber;

/* Three cache lines for three access patterns: head (CAS by thieves and
 * owner), tail (written by the owner, polled by spinning workers), next
 * (exchanged by the owner at every wake-up, taken by thieves only rarely).
 * Sharing a line between tail and next made every wake-up on a busy
 * worker miss in cache while another worker was spinning. */
struct weft__runq {
    _Atomic uint32_t head;
    char pad0[60];
    _Atomic uint32_t tail;
    char pad1[60];
    _Atomic(struct weft_fiber *) next;
    char pad2[56];
    _Atomic(struct weft_fiber *) buf[RUNQ_SIZE];
};

static inline uint32_t runq_len(struct weft__runq *q)
{
    uint32_t h = atomic_load_explicit(&q->head, memory_order_acquire);
    uint32_t t = atomic_load_explicit(&q->tail, memory_order_acquire);
    return t - h;
}

static inline bool runq_empty(struct weft__runq *q)
{
    return runq_len(q) == 0 && atomic_load_explicit(&q->next, memory_order_acquire) == NULL;
}

/* Owner only. Append f; false if the ring is full (the caller then moves
 * half of it to the global queue with runq_grab_half and retries). */
static inline bool runq_push(struct weft__runq *q, struct weft_fiber *f)
{
    uint32_t h = atomic_load_explicit(&q->head, memory_order_acquire);
    uint32_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
    if (t - h >= RUNQ_SIZE)
        return false;
    atomic_store_explicit(&q->buf[t % RUNQ_SIZE], f, memory_order_relaxed);
    atomic_store_explicit(&q->tail, t + 1, memory_order_release);   /* publish the slot */
    return true;
}

/* Owner only. Put f in the next slot; returns the fiber it displaced (to be
 * queued elsewhere) or NULL. Thieves only ever change the slot from a fiber
 * to NULL, so an empty slot is filled with a plain store: no locked
 * instruction on the common path. */
static inline struct weft_fiber *runq_put_next(struct weft__runq *q, struct weft_fiber *f)
{
    if (!atomic_load_explicit(&q->next, memory_order_relaxed)) {
        atomic_store_explicit(&q->next, f, memory_order_release);
        return NULL;
    }
    return atomic_exchange_explicit(&q->next, f, memory_order_acq_rel);
}

/* Owner only. Take the fiber in the next slot, or NULL. */
static inline struct weft_fiber *runq_take_next(struct weft__runq *q)
{
    struct weft_fiber *n = atomic_load_explicit(&q->next, memory_order_relaxed);
    if (n && atomic_compare_exchange_strong_explicit(&q->next, &n, NULL,
                                                     memory_order_acquire, memory_order_relaxed))
        return n;
    return NULL;
}

/* Owner only. Take the oldest fiber on the ring, or NULL. */
static inline struct weft_fiber *runq_take_ring(struct weft__runq *q)
{
    for (;;) {
        uint32_t h = atomic_load_explicit(&q->head, memory_order_acquire);
        uint32_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
        if (t == h)
            return NULL;
        struct weft_fiber *f = atomic_load_explicit(&q->buf[h % RUNQ_SIZE], memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&q->head, &h, h + 1,
                                                  memory_order_release, memory_order_relaxed))
            return f;
    }
}

/* Owner only. Take from the next slot then the ring; with skip_next, from
 * the ring then the next slot. The scheduler composes the two itself, with
 * its spawn deque between them (local_pick in sched.c); the test suite
 * drives the ring through this. */
static inline struct weft_fiber *runq_get(struct weft__runq *q, bool skip_next, bool *was_next)
{
    struct weft_fiber *f;
    *was_next = false;
    if (!skip_next && (f = runq_take_next(q))) {
        *was_next = true;
        return f;
    }
    if ((f = runq_take_ring(q)))
        return f;
    if (skip_next && (f = runq_take_next(q)))   /* the ring was empty: the next slot is all there is */
        *was_next = true;
    return f;
}

/* Any thread. Copy up to half of q's items (rounded up) into out[] and
 * consume them; with take_next, an empty ring yields the next slot instead.
 * Returns how many were taken. */
static inline uint32_t runq_grab(struct weft__runq *q, struct weft_fiber **out, bool take_next)
{
    for (;;) {
        uint32_t h = atomic_load_explicit(&q->head, memory_order_acquire);
        uint32_t t = atomic_load_explicit(&q->tail, memory_order_acquire);
        uint32_t n = t - h;
        n = n - n / 2;
        if (n == 0) {
            if (!take_next)
                return 0;
            struct weft_fiber *nx = atomic_load_explicit(&q->next, memory_order_relaxed);
            if (!nx)
                return 0;
            if (!atomic_compare_exchange_strong_explicit(&q->next, &nx, NULL,
                                                         memory_order_acquire, memory_order_relaxed))
                continue;
            out[0] = nx;
            return 1;
        }
        if (n > RUNQ_SIZE / 2)   /* read head and tail at different times: retry */
            continue;
        for (uint32_t i = 0; i < n; i++)
            out[i] = atomic_load_explicit(&q->buf[(h + i) % RUNQ_SIZE], memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&q->head, &h, h + n,
                                                  memory_order_release, memory_order_relaxed))
            return n;
    }
}

/* Owner only, when the ring is full: take its older half for the global
 * queue. Returns how many (0 if a thief got there first: retry the push). */
static inline uint32_t runq_grab_half(struct weft__runq *q, struct weft_fiber **out)
{
    uint32_t h = atomic_load_explicit(&q->head, memory_order_acquire);
    uint32_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
    uint32_t n = (t - h) / 2;
    if (n == 0 || t - h < RUNQ_SIZE)
        return 0;
    for (uint32_t i = 0; i < n; i++)
        out[i] = atomic_load_explicit(&q->buf[(h + i) % RUNQ_SIZE], memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(&q->head, &h, h + n,
                                                 memory_order_release, memory_order_relaxed))
        return 0;
    return n;
}

/* Owner only: append n items already taken from elsewhere (a steal's
 * batch). The caller guarantees they fit (a steal takes at most half of a
 * ring, and the thief's own ring was empty). */
static inline void runq_push_batch(struct weft__runq *q, struct weft_fiber **items, uint32_t n)
{
    uint32_t t = atomic_load_explicit(&q->tail, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++)
        atomic_store_explicit(&q->buf[(t + i) % RUNQ_SIZE], items[i], memory_order_relaxed);
    atomic_store_explicit(&q->tail, t + n, memory_order_release);
}

#endif
