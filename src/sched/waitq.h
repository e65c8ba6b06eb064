/*
 * What the synchronisation primitives (sync.c) and the channels (chan.c)
 * share: a one-word lock for their queues, and FIFO queues of wait records.
 *
 * The word lock. A weft__lock is a pthread mutex (40 bytes), too big for
 * the six words a weft_mutex may use, and its holders only ever run a few
 * dozen instructions (link a record, claim a fiber). So: two 32-bit words,
 * `held` and `sleepers`. Taking it is one compare-and-swap of held from 0
 * to 1. A contended taker spins briefly, then counts itself in sleepers
 * and sleeps on held with a futex. It blocks the *worker thread*, never
 * parks the fiber: it is held only across straight-line code, never across
 * a park, and the spin usually wins because its holder is running on
 * another CPU. The futex is the safety net for a holder whose thread the
 * OS preempted.
 *
 * Releasing it is a plain store of 0, with no locked instruction. That is
 * the point of the second word: Drepper's one-word futex lock ("mutex2",
 * which this was) must release by an atomic exchange, to learn in the same
 * instruction whether anyone sleeps, and that exchange was 15% of a channel
 * round trip. Here the unlocker stores held = 0 and then reads sleepers;
 * a sleeper adds itself to sleepers and then reads held. That is Dekker's
 * pattern, a store then a load on each side, and it needs a full barrier
 * between each side's store and load, or both may read the old values: the
 * unlocker sees no sleeper, the sleeper sees the lock still held, and the
 * sleeper never wakes. The barrier is split unevenly (platform.h,
 * weft__barrier_light/heavy): the unlocker, on every unlock, pays a
 * compiler barrier; the sleeper, once per sleep, pays a membarrier(2)
 * system call that forces a barrier on every CPU running our threads.
 * Where membarrier is missing, both sides pay a real fence.
 *
 * The wait record (struct weft__waiter) lives on the waiting fiber's stack,
 * which stays valid until the fiber is readied: whoever claims the fiber
 * (weft__wake_claim) may still use the record until it calls weft__ready.
 * f->wobj points at the record, whose first field names the object, so an
 * unlink callback finds both in O(1). `queued` says whether the record is
 * still linked: a signaller that pops a record and then loses the claim to
 * a cancel clears it, so the canceller's unlink does nothing (both under
 * the object's word lock).
 */
#ifndef WEFT_WAITQ_H
#define WEFT_WAITQ_H

#include "sched.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* ------------------------------------------------------------- word lock */

typedef struct weft__wordlock {
    _Atomic uint32_t held;          /* 1 while held: the futex word */
    _Atomic uint32_t sleepers;      /* takers asleep on held, or about to be */
} weft__wordlock;

void weft__wlock_slow(weft__wordlock *l);
void weft__wunlock_slow(weft__wordlock *l);

static inline void weft__wlock(weft__wordlock *l)
{
    uint32_t zero = 0;
    if (WEFT_LIKELY(atomic_compare_exchange_weak_explicit(&l->held, &zero, 1,
                                                          memory_order_acquire,
                                                          memory_order_relaxed)))
        return;
    weft__wlock_slow(l);
}

static inline void weft__wunlock(weft__wordlock *l)
{
    atomic_store_explicit(&l->held, 0, memory_order_release);
    weft__barrier_light();   /* the store before the load: see above */
    if (WEFT_UNLIKELY(atomic_load_explicit(&l->sleepers, memory_order_relaxed)))
        weft__wunlock_slow(l);
}

/* --------------------------------------------------------- wait records */

typedef struct weft__waiter {
    void *obj;                      /* first: the object waited on (see above) */
    struct weft__waiter *next, *prev;
    weft_fiber *f;
    bool queued;                    /* linked on obj's queue (under its lock) */
    /* channels and select */
    bool sel;                       /* part of a select: claim result is idx */
    bool closed;                    /* woken by close */
    int op;                         /* WEFT_SEND / WEFT_RECV */
    int idx;                        /* select case index */
    void *elem;                     /* value to send, or buffer to receive into */
    uint64_t since;                 /* mutex: when the wait began */
} weft__waiter;

typedef struct weft__waitq {
    weft__waiter *head, *tail;
} weft__waitq;

static inline bool weft__waitq_empty(const weft__waitq *q) { return q->head == NULL; }

static inline void weft__waitq_push(weft__waitq *q, weft__waiter *w)
{
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail)
        q->tail->next = w;
    else
        q->head = w;
    q->tail = w;
    w->queued = true;
}

static inline void weft__waitq_push_front(weft__waitq *q, weft__waiter *w)
{
    w->prev = NULL;
    w->next = q->head;
    if (q->head)
        q->head->prev = w;
    else
        q->tail = w;
    q->head = w;
    w->queued = true;
}

static inline void weft__waitq_remove(weft__waitq *q, weft__waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    w->next = w->prev = NULL;
    w->queued = false;
}

/* Pop waiters from the head until one is claimed (with its result: the
 * select case index for select records, else `result`); those whose claim
 * was lost to a canceller or a timer are dropped, their `queued` cleared so
 * the winner's unlink leaves the queue alone. NULL when none could be
 * claimed. The caller holds the queue's lock and must weft__ready the
 * fiber once done with the record (after dropping the lock, preferably). */
static inline weft__waiter *weft__waitq_claim(weft__waitq *q, int result)
{
    weft__waiter *w;
    while ((w = q->head)) {
        weft__waitq_remove(q, w);
        if (weft__wake_claim(w->f, w->sel ? w->idx : result))
            return w;
    }
    return NULL;
}

#endif
