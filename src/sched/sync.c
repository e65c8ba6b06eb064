/*
 * Fiber synchronisation: weft_mutex, weft_cond, weft_sem, weft_wg.
 *
 * Each primitive lives in caller storage (six words, zero = valid initial
 * state) and parks fibers with the scheduler's wait protocol (sched.h):
 * a waiter links a record on its own stack into the object's FIFO queue
 * under the object's word lock (waitq.h), prepares, drops the lock and
 * parks; a signaller pops a record and claims its fiber; a canceller or a
 * timer that wins the claim instead unlinks the record through the
 * callback. Because every hand-over goes through the claim, exactly one
 * party decides each waiter's fate: a unit of a semaphore, a mutex handed
 * over, a condvar signal are given only to a waiter whose claim succeeded,
 * and otherwise passed on to the next. Nothing is lost to a cancellation.
 *
 * THE MUTEX (Go's sync.Mutex, on our wait protocol)
 *   state bits: LOCKED, QUEUED (the queue is not empty), WOKEN (a waiter
 *   was woken to retry and has not yet done so), STARVING (hand-off mode).
 *
 *   Normal mode. Lock is one CAS that sets LOCKED when LOCKED and STARVING
 *   are clear; a newcomer may take the lock ahead of the queue ("barging"),
 *   which keeps a fiber that unlocks and re-locks on its CPU instead of
 *   switching to a waiter each time: the throughput mode. Unlock clears
 *   LOCKED with one atomic subtraction, which also says what else was set,
 *   and, if there are waiters and none was woken already, wakes the head
 *   with "retry". The woken waiter competes with newcomers; if it loses it
 *   goes back to the *front* of the queue, keeping its original start. Lock
 *   and unlock each cost one locked instruction, whatever the other bits.
 *
 *   Starvation mode. A waiter that loses after having waited more than 1 ms
 *   sets STARVING. While it is set nobody takes the lock on their own, LOCKED
 *   or not: unlock hands the lock to the head waiter directly (the claim's
 *   result says "you own it"), setting LOCKED again for it, and newcomers
 *   queue at the tail instead of barging. The waiter handed
 *   the lock ends the mode if it was the last in the queue or had waited
 *   less than 1 ms (the queue moves fast again), as in Go.
 *
 *   The claim race: unlock in hand-off mode pops the head and claims it
 *   *before* recording the new owner. If a cancel or a deadline claimed
 *   that waiter first, the pop is dropped and the next waiter is tried;
 *   with nobody left, the lock is released. A waiter whose claim was won
 *   by the unlocker owns the lock even if a cancel arrives a moment later:
 *   lock returns 0, and the cancel applies to its next blocking call.
 *
 * Fibers never block on these while holding a word lock, and the word lock
 * is never held across a park: it protects a queue for a few instructions.
 */
#include "waitq.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>

/* ------------------------------------------------------------- word lock */

void weft__wlock_slow(weft__wordlock *l)
{
    for (int i = 0; i < 100; i++) {
        weft__cpu_relax();
        uint32_t zero = 0;
        if (atomic_load_explicit(&l->held, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&l->held, &zero, 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return;
    }
    /* Count ourselves first, then look at held, with the heavy half of the
     * barrier between: an unlock that this look misses reads sleepers
     * after its store, and so sees us and wakes us (waitq.h). We stay
     * counted until we hold the lock, so every unlock meanwhile wakes one
     * sleeper, which is at worst one futex call too many. */
    atomic_fetch_add_explicit(&l->sleepers, 1, memory_order_relaxed);
    weft__barrier_heavy();
    for (;;) {
        uint32_t zero = 0;
        if (atomic_compare_exchange_strong_explicit(&l->held, &zero, 1, memory_order_acquire,
                                                    memory_order_relaxed))
            break;
        weft__futex_wait((uint32_t *)&l->held, 1, -1);   /* returns at once if held is 0 */
    }
    atomic_fetch_sub_explicit(&l->sleepers, 1, memory_order_relaxed);
}

void weft__wunlock_slow(weft__wordlock *l)
{
    weft__futex_wake((uint32_t *)&l->held, 1);
}

/* ----------------------------------------------------------------- mutex */

enum { M_LOCKED = 1u, M_QUEUED = 2u, M_WOKEN = 4u, M_STARVING = 8u };

/* Claim results a mutex waiter can receive from unlock. */
enum { M_OWNED = 0, M_RETRY = 1 };

#define STARVE_NS 1000000u   /* 1 ms, Go's starvationThresholdNs */

struct mutex {
    _Atomic uint32_t state;
    weft__wordlock qlock;
    _Atomic(weft_fiber *) owner;
    weft__waitq q;
};
_Static_assert(sizeof(struct mutex) <= sizeof(weft_mutex), "weft_mutex storage too small");
/* test_sync.c (mutex_handoff_claim_lost) reaches in at these offsets */
_Static_assert(offsetof(struct mutex, qlock) == 4 && M_STARVING == 8, "test_sync.c knows the layout");
_Static_assert(_Alignof(struct mutex) <= _Alignof(weft_mutex), "weft_mutex storage misaligned");

#define MTX(m) ((struct mutex *)(void *)(m))

int weft_mutex_init(weft_mutex *m)
{
    if (!m)
        return -EINVAL;
    memset(m, 0, sizeof *m);
    return 0;
}

int weft_mutex_destroy(weft_mutex *m)
{
    if (!m)
        return -EINVAL;
    struct mutex *x = MTX(m);
    weft__wlock(&x->qlock);
    bool busy = atomic_load(&x->state) != 0 || !weft__waitq_empty(&x->q);
    weft__wunlock(&x->qlock);
    return busy ? -EBUSY : 0;
}

static bool try_acquire(struct mutex *x, weft_fiber *self)
{
    uint32_t s = atomic_load_explicit(&x->state, memory_order_relaxed);
    while (!(s & (M_LOCKED | M_STARVING))) {
        if (atomic_compare_exchange_weak_explicit(&x->state, &s, s | M_LOCKED,
                                                  memory_order_acquire, memory_order_relaxed)) {
            atomic_store_explicit(&x->owner, self, memory_order_relaxed);
            return true;
        }
    }
    return false;
}

static void mutex_unlink(weft_fiber *f)
{
    weft__waiter *w = f->wobj;
    struct mutex *x = w->obj;
    weft__wlock(&x->qlock);
    if (w->queued) {
        weft__waitq_remove(&x->q, w);
        if (weft__waitq_empty(&x->q))
            atomic_fetch_and(&x->state, ~M_QUEUED);
    }
    weft__wunlock(&x->qlock);
}

/* The holder runs on another worker (fibers are not preempted), so while
 * the critical section is short a brief spin wins more often than a park.
 * Only with nothing else to run here (Go's canSpin asks the same): a park
 * then costs nothing, where a spin would delay the fibers queued behind. */
static bool spin_acquire(struct mutex *x, weft_fiber *self)
{
    if (weft__nworkers() < 2 || weft__has_local_work())
        return false;
    for (int i = 0; i < 4; i++) {
        for (int k = 0; k < 30; k++)
            weft__cpu_relax();
        uint32_t s = atomic_load_explicit(&x->state, memory_order_relaxed);
        if (s & M_STARVING)
            return false;
        if (!(s & M_LOCKED) && try_acquire(x, self))
            return true;
    }
    return false;
}

static int mutex_lock_slow(struct mutex *x, weft_fiber *self)
{
    weft__waiter rec = { .obj = x, .f = self };
    bool woken = false, requeue = false;
    for (;;) {
        if (!woken && spin_acquire(x, self))
            return 0;
        weft__wlock(&x->qlock);
        uint32_t s = atomic_load(&x->state);
        for (;;) {
            uint32_t ns = woken ? s & ~M_WOKEN : s;
            if (!(s & (M_LOCKED | M_STARVING))) {
                if (atomic_compare_exchange_weak(&x->state, &s, ns | M_LOCKED)) {
                    weft__wunlock(&x->qlock);
                    atomic_store_explicit(&x->owner, self, memory_order_relaxed);
                    return 0;
                }
                continue;
            }
            /* Locked: queue up. The CAS makes "saw it locked" and "said we
             * wait" one step, so an unlock cannot slip between them unseen. */
            ns |= M_QUEUED;
            if (woken && weft__now() - rec.since > STARVE_NS)
                ns |= M_STARVING;
            if (atomic_compare_exchange_weak(&x->state, &s, ns))
                break;
        }
        woken = false;
        if (requeue) {
            weft__waitq_push_front(&x->q, &rec);   /* it already waited its turn */
        } else {
            rec.since = weft__now();
            weft__waitq_push(&x->q, &rec);
        }
        weft__wait_prepare(self, WEFT_W_MUTEX, &rec, mutex_unlink);
        weft__wunlock(&x->qlock);
        int r = weft__wait_park(self, -1);
        if (r == M_OWNED)
            return 0;   /* handed over: unlock recorded us as the owner */
        if (r != M_RETRY)
            return r;   /* cancelled or timed out; mutex_unlink took us off */
        woken = requeue = true;
    }
}

int weft_mutex_lock(weft_mutex *m)
{
    if (!m)
        return -EINVAL;
    weft_fiber *self = weft__cur_fiber();
    if (!self)
        return -EPERM;
    struct mutex *x = MTX(m);
    /* Load, then one compare-and-swap from what was seen: with fibers
     * queued the state is not 0, and a first try from 0 would fail and
     * cost a locked instruction of its own. */
    if (WEFT_LIKELY(try_acquire(x, self)))
        return 0;
    if (atomic_load_explicit(&x->owner, memory_order_relaxed) == self)
        return -EDEADLK;
    return mutex_lock_slow(x, self);
}

int weft_mutex_trylock(weft_mutex *m)
{
    if (!m)
        return -EINVAL;
    weft_fiber *self = weft__cur_fiber();
    if (!self)
        return -EPERM;
    return try_acquire(MTX(m), self) ? 0 : -EBUSY;
}

/* Starvation mode: give the lock to the first waiter we can claim. LOCKED
 * is clear (unlock took it off), and STARVING keeps newcomers out until we
 * set it again for the new owner. */
static void unlock_handoff(struct mutex *x)
{
    weft__wlock(&x->qlock);
    weft__waiter *w = weft__waitq_claim(&x->q, M_OWNED);
    if (!w) {
        /* every waiter was cancelled or timed out meanwhile: release */
        atomic_fetch_and(&x->state, ~(M_STARVING | M_QUEUED));
        weft__wunlock(&x->qlock);
        return;
    }
    weft_fiber *f = w->f;
    atomic_store_explicit(&x->owner, f, memory_order_relaxed);
    uint32_t clear = 0;
    if (weft__waitq_empty(&x->q))
        clear = M_QUEUED | M_STARVING;
    else if (weft__now() - w->since < STARVE_NS)
        clear = M_STARVING;
    /* one step: LOCKED is back before STARVING can go */
    uint32_t s = atomic_load(&x->state);
    while (!atomic_compare_exchange_weak(&x->state, &s, (s | M_LOCKED) & ~clear))
        ;
    weft__wunlock(&x->qlock);
    weft__ready(f);
}

/* Normal mode, lock released: wake the head to retry, unless a woken
 * waiter is still on its way or a newcomer took the lock (its unlock will
 * do it). */
static void unlock_wake(struct mutex *x)
{
    weft__wlock(&x->qlock);
    uint32_t s = atomic_load(&x->state);
    if ((s & (M_LOCKED | M_WOKEN | M_STARVING)) || !(s & M_QUEUED)) {
        weft__wunlock(&x->qlock);
        return;
    }
    weft__waiter *w = weft__waitq_claim(&x->q, M_RETRY);
    if (w)
        atomic_fetch_or(&x->state, M_WOKEN);
    if (weft__waitq_empty(&x->q))
        atomic_fetch_and(&x->state, ~M_QUEUED);
    weft__wunlock(&x->qlock);
    if (w)
        weft__ready(w->f);
}

/* One locked instruction whatever the other bits say, as Go's Unlock: the
 * subtraction drops LOCKED and reports what else was set. A compare-and-swap
 * from exactly LOCKED, tried first, failed whenever fibers were queued (the
 * contended case, where it matters) and cost a second locked instruction. */
static void mutex_unlock_(struct mutex *x)
{
    atomic_store_explicit(&x->owner, NULL, memory_order_relaxed);
    uint32_t s = atomic_fetch_sub_explicit(&x->state, M_LOCKED, memory_order_release);
    if (WEFT_LIKELY(s == M_LOCKED))
        return;
    if (s & M_STARVING)
        unlock_handoff(x);
    else if ((s & M_QUEUED) && !(s & M_WOKEN))
        unlock_wake(x);
}

int weft_mutex_unlock(weft_mutex *m)
{
    if (!m)
        return -EINVAL;
    weft_fiber *self = weft__cur_fiber();
    struct mutex *x = MTX(m);
    if (!self || atomic_load_explicit(&x->owner, memory_order_relaxed) != self)
        return -EPERM;
    mutex_unlock_(x);
    return 0;
}

/* Lock that neither a cancel nor the deadline can interrupt: a condvar
 * wait must return with its mutex held whatever happened (pthreads). We
 * hide the fiber's cancel flag and deadline meanwhile. A weft_cancel that
 * races with the hiding still interrupts one park (it saw WAITING); we
 * note it and wait again. The flag is put back, so the cancel stays
 * sticky for the caller's next blocking call. */
static void mutex_relock(struct mutex *x, weft_fiber *self)
{
    if (try_acquire(x, self))
        return;
    int64_t deadline = self->deadline;
    self->deadline = -1;
    int was = atomic_exchange(&self->cancelled, 0);
    while (mutex_lock_slow(x, self) < 0)
        was |= atomic_exchange(&self->cancelled, 0);
    if (was)
        atomic_store(&self->cancelled, 1);
    self->deadline = deadline;
}

/* ------------------------------------------------------------------ cond */

struct cond {
    weft__wordlock qlock;
    weft__waitq q;
};
_Static_assert(sizeof(struct cond) <= sizeof(weft_cond), "weft_cond storage too small");

#define CND(c) ((struct cond *)(void *)(c))

int weft_cond_init(weft_cond *c)
{
    if (!c)
        return -EINVAL;
    memset(c, 0, sizeof *c);
    return 0;
}

/* The destroy of a cond, a semaphore, a wait group: -EBUSY while a fiber
 * waits on it. Every waiter is on the queue, under its lock, from before it
 * parks until it is claimed, so a look under the lock misses none. */
static int destroy_check(weft__wordlock *qlock, weft__waitq *q)
{
    weft__wlock(qlock);
    bool busy = !weft__waitq_empty(q);
    weft__wunlock(qlock);
    return busy ? -EBUSY : 0;
}

int weft_cond_destroy(weft_cond *c)
{
    return c ? destroy_check(&CND(c)->qlock, &CND(c)->q) : -EINVAL;
}

static void cond_unlink(weft_fiber *f)
{
    weft__waiter *w = f->wobj;
    struct cond *k = w->obj;
    weft__wlock(&k->qlock);
    if (w->queued)
        weft__waitq_remove(&k->q, w);
    weft__wunlock(&k->qlock);
}

int weft_cond_wait(weft_cond *c, weft_mutex *m)
{
    if (!c || !m)
        return -EINVAL;
    weft_fiber *self = weft__cur_fiber();
    struct mutex *x = MTX(m);
    if (!self || atomic_load_explicit(&x->owner, memory_order_relaxed) != self)
        return -EPERM;
    int r = weft__wait_check(self);
    if (r < 0)
        return r;   /* m was never released */
    struct cond *k = CND(c);
    weft__waiter rec = { .obj = k, .f = self };
    /* On the queue before m is released: a signaller that takes m after
     * our unlock finds us, so no wake-up falls between unlock and park. */
    weft__wlock(&k->qlock);
    weft__waitq_push(&k->q, &rec);
    weft__wait_prepare(self, WEFT_W_COND, &rec, cond_unlink);
    weft__wunlock(&k->qlock);
    mutex_unlock_(x);
    r = weft__wait_park(self, -1);
    mutex_relock(x, self);
    return r;
}

int weft_cond_signal(weft_cond *c)
{
    if (!c)
        return -EINVAL;
    struct cond *k = CND(c);
    weft__wlock(&k->qlock);
    weft__waiter *w = weft__waitq_claim(&k->q, 0);
    weft__wunlock(&k->qlock);
    if (w)
        weft__ready(w->f);
    return 0;
}

int weft_cond_broadcast(weft_cond *c)
{
    if (!c)
        return -EINVAL;
    struct cond *k = CND(c);
    weft__waiter *list = NULL, **tail = &list, *w;
    weft__wlock(&k->qlock);
    while ((w = weft__waitq_claim(&k->q, 0))) {
        *tail = w;
        tail = &w->next;
    }
    *tail = NULL;
    weft__wunlock(&k->qlock);
    while ((w = list)) {
        list = w->next;   /* read before ready: the record dies with the wait */
        weft__ready(w->f);
    }
    return 0;
}

/* ------------------------------------------------------------- semaphore */

/* The count is _w[0] (WEFT_SEM_INIT(v) stores v there); its top bit says
 * "fibers are queued", in the same word so that a post which sees no
 * waiters and a wait which sees no units cannot both miss each other. */
#define S_WAITERS ((uintptr_t)1 << (sizeof(uintptr_t) * 8 - 1))
#define S_MAX ((uintptr_t)UINT_MAX < S_WAITERS - 1 ? (uintptr_t)UINT_MAX : S_WAITERS - 1)

struct sem {
    _Atomic uintptr_t count;
    weft__wordlock qlock;
    weft__waitq q;
};
_Static_assert(sizeof(struct sem) <= sizeof(weft_sem), "weft_sem storage too small");
_Static_assert(offsetof(struct sem, count) == 0, "WEFT_SEM_INIT stores the count in _w[0]");

#define SEM(s) ((struct sem *)(void *)(s))

int weft_sem_init(weft_sem *s, unsigned value)
{
    if (!s)
        return -EINVAL;
#if UINTPTR_MAX <= UINT_MAX
    if (value > S_MAX)   /* 32-bit: the top bit is the waiters flag */
        return -EINVAL;
#endif
    memset(s, 0, sizeof *s);
    atomic_store(&SEM(s)->count, (uintptr_t)value);
    return 0;
}

static bool sem_take(struct sem *x)
{
    uintptr_t v = atomic_load_explicit(&x->count, memory_order_relaxed);
    while ((v & ~S_WAITERS) > 0) {
        if (atomic_compare_exchange_weak_explicit(&x->count, &v, v - 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
    }
    return false;
}

int weft_sem_trywait(weft_sem *s)
{
    if (!s)
        return -EINVAL;
    return sem_take(SEM(s)) ? 0 : -EAGAIN;
}

static void sem_unlink(weft_fiber *f)
{
    weft__waiter *w = f->wobj;
    struct sem *x = w->obj;
    weft__wlock(&x->qlock);
    if (w->queued) {
        weft__waitq_remove(&x->q, w);
        if (weft__waitq_empty(&x->q))
            atomic_fetch_and(&x->count, ~S_WAITERS);
    }
    weft__wunlock(&x->qlock);
}

int weft_sem_wait(weft_sem *s)
{
    if (!s)
        return -EINVAL;
    weft_fiber *self = weft__cur_fiber();
    if (!self)
        return -EPERM;
    struct sem *x = SEM(s);
    if (sem_take(x))
        return 0;
    int r = weft__wait_check(self);
    if (r < 0)
        return r;
    weft__waiter rec = { .obj = x, .f = self };
    weft__wlock(&x->qlock);
    uintptr_t v = atomic_load(&x->count);
    for (;;) {
        if ((v & ~S_WAITERS) > 0) {
            if (atomic_compare_exchange_weak(&x->count, &v, v - 1)) {
                weft__wunlock(&x->qlock);
                return 0;
            }
            continue;
        }
        if (atomic_compare_exchange_weak(&x->count, &v, v | S_WAITERS))
            break;
    }
    weft__waitq_push(&x->q, &rec);
    weft__wait_prepare(self, WEFT_W_SEM, &rec, sem_unlink);
    weft__wunlock(&x->qlock);
    /* 0: post handed its unit straight to us (no newcomer can take it) */
    return weft__wait_park(self, -1);
}

int weft_sem_post(weft_sem *s)
{
    if (!s)
        return -EINVAL;
    struct sem *x = SEM(s);
    uintptr_t v = atomic_load_explicit(&x->count, memory_order_relaxed);
    while (!(v & S_WAITERS)) {
        if (v >= S_MAX)
            return -EOVERFLOW;
        if (atomic_compare_exchange_weak_explicit(&x->count, &v, v + 1, memory_order_release,
                                                  memory_order_relaxed))
            return 0;
    }
    weft__wlock(&x->qlock);
    weft__waiter *w = weft__waitq_claim(&x->q, 0);
    if (weft__waitq_empty(&x->q))
        atomic_fetch_and(&x->count, ~S_WAITERS);
    int r = 0;
    if (!w) {
        /* everyone queued was cancelled meanwhile: keep the unit */
        v = atomic_load(&x->count);
        if ((v & ~S_WAITERS) >= S_MAX)
            r = -EOVERFLOW;
        else
            atomic_fetch_add(&x->count, 1);
    }
    weft__wunlock(&x->qlock);
    if (w)
        weft__ready(w->f);
    return r;
}

int weft_sem_destroy(weft_sem *s)
{
    return s ? destroy_check(&SEM(s)->qlock, &SEM(s)->q) : -EINVAL;
}

/* ------------------------------------------------------------ wait group */

struct wg {
    weft__wordlock qlock;
    int64_t count;
    weft__waitq q;
};
_Static_assert(sizeof(struct wg) <= sizeof(weft_wg), "weft_wg storage too small");

#define WG(w) ((struct wg *)(void *)(w))

int weft_wg_init(weft_wg *w)
{
    if (!w)
        return -EINVAL;
    memset(w, 0, sizeof *w);
    return 0;
}

int weft_wg_add(weft_wg *w, int delta)
{
    if (!w)
        return -EINVAL;
    struct wg *g = WG(w);
    weft__wlock(&g->qlock);
    int64_t n = g->count + delta;
    if (n < 0 || n > INT64_MAX / 2) {
        weft__wunlock(&g->qlock);
        return n < 0 ? -EINVAL : -EOVERFLOW;
    }
    g->count = n;
    weft__waiter *list = NULL, **tail = &list, *x;
    if (n == 0) {
        /* release every waiter; the group is reusable from here on */
        while ((x = weft__waitq_claim(&g->q, 0))) {
            *tail = x;
            tail = &x->next;
        }
    }
    *tail = NULL;
    weft__wunlock(&g->qlock);
    while ((x = list)) {
        list = x->next;
        weft__ready(x->f);
    }
    return 0;
}

int weft_wg_done(weft_wg *w) { return weft_wg_add(w, -1); }

static void wg_unlink(weft_fiber *f)
{
    weft__waiter *w = f->wobj;
    struct wg *g = w->obj;
    weft__wlock(&g->qlock);
    if (w->queued)
        weft__waitq_remove(&g->q, w);
    weft__wunlock(&g->qlock);
}

int weft_wg_wait(weft_wg *w)
{
    if (!w)
        return -EINVAL;
    weft_fiber *self = weft__cur_fiber();
    if (!self)
        return -EPERM;
    struct wg *g = WG(w);
    weft__wlock(&g->qlock);
    if (g->count == 0) {
        weft__wunlock(&g->qlock);
        return 0;
    }
    int r = weft__wait_check(self);
    if (r < 0) {
        weft__wunlock(&g->qlock);
        return r;
    }
    weft__waiter rec = { .obj = g, .f = self };
    weft__waitq_push(&g->q, &rec);
    weft__wait_prepare(self, WEFT_W_WG, &rec, wg_unlink);
    weft__wunlock(&g->qlock);
    return weft__wait_park(self, -1);
}

int weft_wg_destroy(weft_wg *w)
{
    return w ? destroy_check(&WG(w)->qlock, &WG(w)->q) : -EINVAL;
}
