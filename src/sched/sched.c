/*
 * The weft scheduler: M:N, work stealing, parking without loss.
 *
 * ACTORS
 *   fiber   a stackful thread of control (weft_fiber): a guarded stack, the
 *           saved stack pointer of its context, a wait record.
 *   worker  an OS thread with a run queue (weft__worker). One per CPU by
 *           default; the thread that called weft_run is worker 0. A worker
 *           runs its loop on its own thread stack (Go's g0) and switches to
 *           one fiber at a time. A fiber that yields, parks or returns
 *           switches straight to the next fiber of its worker's own queues
 *           when there is one, else back to the loop. Everything that must
 *           happen *after* a fiber stopped running on its stack (requeueing
 *           it, freeing it) is done by whoever was switched to, first thing
 *           on its own stack (finish_switch).
 *
 * QUEUES (where a runnable fiber can be)
 *   1. its worker's local ring (runq.h), 256 slots, lock-free, stealable,
 *      FIFO: woken fibers pushed out of the next slot, yielded fibers;
 *   2. its worker's next slot: the fiber readied or spawned by the running
 *      one goes there, so a sender and its receiver hand off on one worker
 *      without touching the ring (Go's runnext);
 *   3. its worker's spawn deque (deque.h), 256 slots, lock-free: spawned
 *      fibers pushed out of the next slot by a younger sibling. The owner
 *      takes the youngest, so a tree of spawns runs depth first with a few
 *      dozen fibers alive instead of a whole level of the tree; thieves
 *      take the oldest, the biggest piece of work there is. The owner
 *      picks next slot, deque, ring, in that order; after 61 picks in a row
 *      from the first two the ring goes first, so that neither a
 *      ping-ponging pair nor a tree of spawns starves the woken fibers;
 *   4. a worker's inbox: a locked list for fibers that must run on *that*
 *      worker (WEFT_PINNED, WEFT_DEBUG_MIGRATE); never stolen;
 *   5. the global queue: a locked array for fibers readied by threads that
 *      are not workers and for the overflow of a full ring (half of the
 *      ring moves there). Every 61st schedule a worker looks at it first,
 *      so it cannot be starved by busy local rings.
 *
 * WHY TWO LOCAL QUEUES
 *   A Chase-Lev deque alone (Cilk, Rayon) is LIFO for its owner: right for
 *   fork-join, unfair for servers (an old connection would wait behind
 *   every new one). A FIFO ring alone (Go, Tokio) is fair but runs a tree
 *   of spawns breadth first: skynet kept ~100,000 fibers alive, each on its
 *   own stack page, and every resume missed in cache and TLB (230-380 ms
 *   against 62 ms depth first, on two workers). So woken fibers queue FIFO
 *   and spawns LIFO. The ring needs only release/acquire on the owner's
 *   side and steals half in one CAS; the deque's owner pays one seq_cst
 *   fence per pop that finds something (Le et al. 2013), the price of a
 *   CAS. Both are bounded, harmlessly: a full deque spills to the ring, a
 *   full ring half of itself to the global queue. A single global queue
 *   with one lock was rejected outright: it serialises every spawn and
 *   wake-up of every worker. So was one OS thread per fiber: that is what
 *   weft replaces.
 *
 * MIGRATION
 *   A fiber moves to another worker only while it is not running: when a
 *   thief steals it from a queue, or when it is readied by a fiber on another
 *   worker (it joins the waker's next slot, like Go's ready()). Both happen
 *   at a park, never in the middle of running code. The runtime's own
 *   thread-locals are therefore read through non-inlined accessors after
 *   every switch, and errno is saved and restored per fiber at every switch.
 *   WEFT_PINNED fibers are readied into their home worker's inbox only and
 *   never enter a ring, so they never move. WEFT_DEBUG_MIGRATE=1 readies every
 *   fiber into the inbox of the next worker after its own, forcing a move at
 *   every park, to flush out code that caches thread-local addresses.
 *
 * IDLING WITHOUT LOST WAKE-UPS (the protocol of Go's proc.go, condensed)
 *   A worker that finds nothing local becomes "spinning" (counted in
 *   rt.nspinning) and tries to steal; at most half of the busy workers spin
 *   at once. A worker that finds nothing at all goes idle:
 *
 *     idle side                              submit side (ready/spawn)
 *     push self on rt.idle, nidle++          put fiber on a queue
 *     if spinning: nspinning--               ---- seq_cst fence ----
 *     ---- seq_cst fence ----                if nidle > 0 and nspinning == 0:
 *     look at every queue again                 nspinning := 1 (CAS)
 *     if any work: leave rt.idle, spin          pop an idle worker, wake it
 *     else sleep (futex, or in the poller)      (it starts out spinning)
 *
 *   The two fences order each side's store before its loads, so at least
 *   one side sees the other: either the submitter sees the idle worker (and
 *   wakes it) or the idle worker sees the fiber (and stays up). When a
 *   spinning worker finds work it stops spinning, and if it was the last
 *   spinner it wakes another (wakep): work tends to come in bursts, and
 *   this keeps one worker looking without waking all of them. Wakes are
 *   binary permits (rt.workers[i].permit) so a wake that arrives before the
 *   sleep is not lost. A worker with nothing to do sleeps until its nearest
 *   timer; an idle process uses no CPU.
 *
 *   Filling an empty next slot is not "submitting" here: that fiber is its
 *   owner's to run, at its next schedule, and nobody is woken for it. If
 *   the owner instead runs one fiber for long, the next slot is taken by an
 *   idle worker that, while any worker is busy, sleeps at most
 *   IDLE_WATCH_NS and then looks for an owner that has not scheduled since
 *   (find_stuck); a spinner does the same over its spin window.
 *
 *   At most one idle worker sleeps in the I/O poller (rt.poll_owner); the
 *   others sleep on their futex. Waking a worker in the poller goes through
 *   poller->wake(). A worker that never runs out of work still polls, on its
 *   fairness tick, when nobody has for 1 ms (local_work, POLL_STALE_NS).
 *
 * TIMERS
 *   Each worker has a min-heap of the timers its fibers armed (sleeps,
 *   timeouts, deadlines), under a lock that other workers take only to
 *   cancel or to fire timers a busy owner has not reached. A timer fires by
 *   claiming its fiber's wait; the claim is made under the heap lock, so a
 *   fiber that wakes for another reason and disarms its timer never races
 *   a firing. An idle worker sleeps until its own nearest timer, or 1 ms
 *   past another worker's (a busy owner may be running a long fiber).
 *
 * START-UP AND SHUTDOWN
 *   Workers and the fibers they run cannot see a runtime that is not there:
 *   nothing runs before weft__sched_run has built it, and it is freed only
 *   after every fiber has returned and every worker has stopped. Plain
 *   threads are another matter: a thread feeding fibers in (weft_spawn), a
 *   metrics thread (weft_stats, weft_dump), the blocking pool or a user's
 *   thread readying a fiber (weft__ready) may call at any moment, and must
 *   never read a worker array, a run queue or a stack pool that is being
 *   built or freed. rt.phase says where the runtime is in its life:
 *
 *     STOPPED -> STARTING -> RUNNING -> DRAINING -> STOPPING -> STOPPED
 *     weft_run   (built,     (main      (every fiber   (freed: weft_run
 *     CAS        workers     returned)  and worker     returns)
 *                released)              gone)
 *
 *   and plain threads pass a gate, a count they raise before they look at
 *   the phase and drop when they are done:
 *
 *     plain thread                         runtime
 *     count++ (seq_cst)                    phase := next (seq_cst)
 *     read phase: not admitted?            read count: wait for 0
 *       count--, refuse (-EPERM)
 *
 *   Each side stores, then loads what the other stores; in the single order
 *   of seq_cst operations one of them comes first, so either the thread
 *   sees the new phase and touches nothing, or the runtime sees the thread
 *   counted and waits for it. Two gates:
 *
 *   rt.outside, for whoever puts fibers in the queues: a plain-thread spawn
 *   (admitted while RUNNING only) and a plain-thread weft__ready (always:
 *   it readies a fiber whose wait it won, and a fiber that waits keeps the
 *   runtime from ending). The end of weft_run is decided by the last
 *   worker to go idle once main has returned (find_runnable): it requires
 *   rt.outside == 0 as well as all_gone(). A spawn admitted before DRAINING
 *   is therefore counted (ext_spawned) before that worker can look, and
 *   runs and is cancelled and joined like every other fiber; one that
 *   comes later is refused. While a plain thread is inside, that worker
 *   sleeps at most OUTSIDE_WAIT_NS at a time and looks again: the thread
 *   cannot wake it on its way out, because once its count drops the
 *   runtime may be gone.
 *
 *   rt.readers, for everything a plain thread reads of the runtime's
 *   records: weft_stats, weft_dump, the handle calls (weft_detach,
 *   weft_cancel, weft_id, weft_name, weft_backtrace: the record is on a
 *   stack the teardown unmaps) and the fd table and backend (weft_close,
 *   the record reset of an accept: src/io frees both after the workers
 *   stop), admitted while RUNNING or DRAINING; refused, a handle call
 *   treats its handle as stale and an I/O call takes the plain path. The
 *   teardown sets STOPPING and sleeps on
 *   the count (a futex) until the last reader leaves; the word lives in
 *   weft__rt, which is never freed, so that wake is safe.
 *
 *   Fibers and worker threads pass no gate (weft_spawn from a fiber pays
 *   no atomic for it). Worker threads are started during STARTING and wait
 *   on rt.phase until weft__sched_run has started them all and fixed rt.n:
 *   a worker that could not be created shrinks rt.n before anyone reads it.
 */
#define _GNU_SOURCE
#include "worker.h"

#include "diag.h"
#include "san.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct weft__rt weft__rt;

const char *const weft__wait_names[WEFT_W_KINDS] = {
    [WEFT_W_NONE] = "running", [WEFT_W_SLEEP] = "sleep", [WEFT_W_JOIN] = "join",
    [WEFT_W_MUTEX] = "mutex", [WEFT_W_COND] = "condvar", [WEFT_W_SEM] = "semaphore",
    [WEFT_W_WG] = "wait group", [WEFT_W_CHAN_SEND] = "channel send",
    [WEFT_W_CHAN_RECV] = "channel receive", [WEFT_W_SELECT] = "select",
    [WEFT_W_FD_READ] = "fd read", [WEFT_W_FD_WRITE] = "fd write",
    [WEFT_W_POOL] = "blocking pool", [WEFT_W_IO] = "io",
};

_Noreturn void weft__panic(const char *file, int line, const char *what)
{
    fprintf(stderr, "weft: %s:%d: broken invariant: %s\n", file, line, what);
    abort();
}

weft__worker *weft__cur_worker(void)
{
    __asm__ volatile("" ::: "memory");
    return weft__tls_get();
}

weft_fiber *weft__cur_fiber(void)
{
    __asm__ volatile("" ::: "memory");
    weft__worker *w = weft__tls_get();
    return w ? w->cur : NULL;
}

unsigned weft__nworkers(void) { return weft__rt.n; }
weft__worker *weft__worker_at(unsigned i) { return &weft__rt.workers[i]; }
int weft__worker_index(const weft__worker *w) { return w ? (int)w->idx : -1; }
bool weft__running(void)
{
    uint32_t p = atomic_load(&weft__rt.phase);
    return p == WEFT_RT_RUNNING || p == WEFT_RT_DRAINING;
}
bool weft__debug_migrate(void) { return weft__rt.debug_migrate; }

void weft__spin_lock_slow(weft__spin *l)
{
    for (unsigned spins = 0;; spins++) {
        if (!atomic_load_explicit(&l->v, memory_order_relaxed) &&
            !atomic_exchange_explicit(&l->v, 1, memory_order_acquire))
            return;
        if (spins < 100)
            weft__cpu_relax();
        else
            weft__os_yield();
    }
}

/* ---------------------------------------------- gates for plain threads */

/* See START-UP AND SHUTDOWN above. The first look at the phase only spares
 * the count a refused caller's visit: the end of a runtime waits while the
 * count is not zero, and a thread spawning in a loop would keep it so. */
bool weft__outside_enter(void)
{
    if (atomic_load_explicit(&weft__rt.phase, memory_order_relaxed) != WEFT_RT_RUNNING)
        return false;
    atomic_fetch_add(&weft__rt.outside, 1);
    if (atomic_load(&weft__rt.phase) == WEFT_RT_RUNNING)
        return true;
    atomic_fetch_sub(&weft__rt.outside, 1);
    return false;
}

void weft__outside_leave(void)
{
    atomic_fetch_sub(&weft__rt.outside, 1);
}

bool weft__reader_enter(void)
{
    uint32_t p = atomic_load_explicit(&weft__rt.phase, memory_order_relaxed);
    if (p != WEFT_RT_RUNNING && p != WEFT_RT_DRAINING)
        return false;
    atomic_fetch_add(&weft__rt.readers, 1);
    p = atomic_load(&weft__rt.phase);
    if (p == WEFT_RT_RUNNING || p == WEFT_RT_DRAINING)
        return true;
    weft__reader_leave();
    return false;
}

void weft__reader_leave(void)
{
    if (atomic_fetch_sub(&weft__rt.readers, 1) == 1 &&
        atomic_load(&weft__rt.phase) == WEFT_RT_STOPPING)
        weft__futex_wake((uint32_t *)&weft__rt.readers, 1);
}

/* The teardown's side of the readers' gate: no reader is admitted after
 * this, and none is left inside when it returns. */
static void readers_shut_out(void)
{
    atomic_store(&weft__rt.phase, WEFT_RT_STOPPING);
    uint32_t n;
    while ((n = atomic_load(&weft__rt.readers)) != 0)
        weft__futex_wait((uint32_t *)&weft__rt.readers, n, -1);
}

static uint32_t fastrand(weft__worker *w)
{
    /* xorshift64*: cheap, per worker, good enough to pick steal victims */
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return (uint32_t)((x * 0x2545F4914F6CDD1Dull) >> 32);
}

/* ------------------------------------------------------------- switching */

static inline void ready_on(weft__worker *w, weft_fiber *f);

/* Make f the fiber running on w. Called by whoever is about to switch to
 * f: the loop (run_fiber) or a fiber handing the CPU straight to the next
 * one (weft__switch_out).
 *
 * f may have been readied before its previous worker finished switching
 * away from it, or a backtrace may be holding it still (weft__fiber_hold):
 * wait for on_cpu to drop, and take it by CAS so that exactly one of us
 * owns the stack. */
static inline void take_cpu(weft__worker *w, weft_fiber *f)
{
    int off = 0;
    if (WEFT_UNLIKELY(!atomic_compare_exchange_strong_explicit(&f->on_cpu, &off, 1,
                                                               memory_order_acquire,
                                                               memory_order_relaxed))) {
        for (unsigned spins = 0;; spins++) {
            off = 0;
            if (atomic_compare_exchange_weak_explicit(&f->on_cpu, &off, 1, memory_order_acquire,
                                                      memory_order_relaxed))
                break;
            if (spins < 64)
                weft__cpu_relax();
            else
                weft__os_yield();   /* its worker may have been preempted */
        }
    }
    __atomic_store_n(&f->worker, w, __ATOMIC_RELAXED);   /* weft_dump reads it of a fiber it cannot hold */
    weft__fstate_set(f, WEFT_F_RUNNABLE, WEFT_F_RUNNING);
    __atomic_store_n(&w->cur, f, __ATOMIC_RELEASE);   /* the watchdog reads f through it: a plain mov on x86 */
    weft__stat_add(w->st.switches, 1);
}

/* prev has just switched away and nothing runs on its stack any more: do
 * what it asked for in w->post. Runs first thing on whichever stack was
 * resumed (the loop's, or the next fiber's), before any other code of its
 * own: that is what makes it safe to requeue prev here, where another
 * worker may resume it at once, or to free its stack. */
static void finish_switch(weft__worker *w, weft_fiber *prev)
{
    if (WEFT_UNLIKELY(weft__stack_check(prev->stack) != 0)) {
        fprintf(stderr, "weft: fiber %llu \"%s\" overflowed its %zu-byte stack "
                "(canary destroyed)\n", (unsigned long long)prev->id, prev->name,
                (size_t)(prev->stack->hi - prev->stack->lo));
        abort();
    }
    switch (w->post) {
    case WEFT_POST_EXIT:
        weft__fiber_finish(w, prev);   /* prev never runs again; no on_cpu handshake */
        break;
    case WEFT_POST_YIELD:
        weft__fstate_set(prev, WEFT_F_RUNNING, WEFT_F_RUNNABLE);
        atomic_store_explicit(&prev->on_cpu, 0, memory_order_release);
        if (prev->home) {
            /* pinned: its inbox is the only queue it may be on */
            ready_on(w, prev);
        } else if (!runq_push(&w->rq, prev)) {
            ready_on(w, prev);   /* ring full: the overflow path moves half */
        }
        break;
    case WEFT_POST_PARK:
        /* prev marked itself PARKED in weft__wait_prepare, and a waker may
         * have made it RUNNABLE and queued it since: the state word is not
         * ours to write here (sched.h, enum weft__fstate). */
        atomic_store_explicit(&prev->on_cpu, 0, memory_order_release);
        break;
    default:
        weft__panic(__FILE__, __LINE__, "unknown post-switch action");
    }
}

/* Worker loop -> fiber. Runs on the worker's stack; returns when control
 * comes back to the loop, which may be from another fiber than f (f may
 * have handed the CPU on directly: see weft__switch_out). */
static void run_fiber(weft__worker *w, weft_fiber *f)
{
    take_cpu(w, f);
    if (WEFT_UNLIKELY(weft__trace_on))
        weft__trace_switch(w, NULL, f);
    san_asan_start(&w->asan_fake, f->stack->lo, (size_t)(f->stack->hi - f->stack->lo));
    san_tsan_switch(f->tsan_fiber);
    weft_fiber *prev = weft__ctx_switch(&w->sched_ctx, &f->ctx, NULL);
    san_asan_finish(w->asan_fake, NULL, NULL);
    __atomic_store_n(&w->cur, NULL, __ATOMIC_RELAXED);
    finish_switch(w, prev);
}

static int fire_timers(weft__worker *v, uint64_t now, bool try);

/* w's own queues, in order: the next slot, the spawn deque (youngest
 * first), the ring (oldest first). After 61 picks in a row from the first
 * two, the ring goes first once: a ping-ponging pair or a tree of spawns
 * cannot starve the woken fibers queued there. Owner only. */
static weft_fiber *local_pick(weft__worker *w)
{
    weft_fiber *f;
    if (WEFT_UNLIKELY(w->streak >= 61)) {
        w->streak = 0;
        if ((f = runq_take_ring(&w->rq)))
            return f;
    }
    if ((f = runq_take_next(&w->rq)) || (f = deque_pop(&w->dq))) {
        w->streak++;
        return f;
    }
    w->streak = 0;
    return runq_take_ring(&w->rq);
}

/* The fiber a switching-away fiber may hand the CPU to without a trip
 * through the loop: what local_work would pick from w's own run queue,
 * on the schedules where local_work would look nowhere else. The 61st
 * schedule (global queue and inbox first) and due timers are left to the
 * loop, so the fairness rules of QUEUES and TIMERS hold unchanged. */
static weft_fiber *direct_next(weft__worker *w)
{
    uint32_t tick = atomic_load_explicit(&w->tick, memory_order_relaxed) + 1;
    if (tick % 61 == 0)
        return NULL;
    uint64_t tnext = atomic_load_explicit(&w->tnext, memory_order_relaxed);
    if (tnext != UINT64_MAX && tnext <= weft__now())
        return NULL;
    weft_fiber *f = local_pick(w);
    if (f)
        atomic_store_explicit(&w->tick, tick, memory_order_relaxed);   /* read by thieves */
    return f;
}

/* errno, per fiber. glibc declares __errno_location const, so within one
 * function the compiler may reuse the address it computed before a switch,
 * which after a migration is the old thread's errno (DESIGN.md, "errno and
 * TLS"). Each worker notes its thread's errno address once, on that thread
 * (worker_init_thread), and a switch goes through whichever worker it is on
 * at that moment: before the switch self->worker is the one we leave, after
 * it the one that resumed us. No call, and no thread-local address that the
 * compiler could carry across the switch. */
static inline int errno_save(const weft__worker *w) { return *w->errno_loc; }
static inline void errno_restore(const weft__worker *w, int v) { *w->errno_loc = v; }

/* Fiber -> the next fiber, or its worker's loop.
 *
 * The common case costs one switch, not two: when the worker's own run
 * queue has a fiber to run next (a receiver the sender just readied, the
 * child a parent is about to join), we switch straight to it and it
 * finishes our switch for us (finish_switch) on its own stack. Only when
 * the local queue is empty, or a fairness check is due, do we go back to
 * the loop, which looks at the other queues, the poller and the thieves.
 * Every switch carries the fiber that made it as the switch's value, so
 * the resumed side always knows whose switch to finish (NULL: it came
 * from the loop, which finished it already). */
void weft__switch_out(weft_fiber *self, int post)
{
    weft__worker *w = self->worker;
    w->post = post;
    self->saved_errno = errno_save(w);
    weft_fiber *g = direct_next(w);
    weft_fiber *prev;
    if (WEFT_UNLIKELY(weft__trace_on))
        weft__trace_switch(w, self, g);
    weft__ctx *to = &w->sched_ctx;   /* where we go, and its stack for the sanitizers */
    const void *bottom = w->sched_bottom;
    size_t size = w->sched_size;
    void *tsan = w->tsan_fiber;
    if (g) {
        weft__assert(g != self);   /* self is queued only by finish_switch, after this */
        take_cpu(w, g);
        to = &g->ctx;
        bottom = g->stack->lo;
        size = (size_t)(g->stack->hi - g->stack->lo);
        tsan = g->tsan_fiber;
    }
    /* A fiber that has run before was suspended right here, at this one
     * call: switch to it with the hand-off, whose `ret` the CPU predicts
     * from its return stack, which stays in step for the returns that
     * follow (up through wait_park, the channel call, ...: the same path
     * the fiber we leave took). A fresh fiber, or the loop, was not: the
     * plain switch's jump is predicted from the branch target buffer.
     * One call site for both (the pointer is hidden from the compiler so
     * that it does not make it two): every fiber is suspended at the same
     * return address. See arch.h and docs/context-switch.md. */
    void *(*sw)(weft__ctx *, weft__ctx *, void *) =
        g && g->started ? weft__ctx_handoff : weft__ctx_switch;
    __asm__("" : "+r"(sw));
    san_asan_start(post == WEFT_POST_EXIT ? NULL : &self->asan_fake, bottom, size);
    san_tsan_switch(tsan);
    prev = sw(&self->ctx, to, self);
    /* Resumed, perhaps on another worker: self->worker was updated by
     * whoever resumed us; read nothing cached from before the switch. */
    w = self->worker;
    san_asan_finish(self->asan_fake, prev ? NULL : &w->sched_bottom, prev ? NULL : &w->sched_size);
    if (prev)
        finish_switch(w, prev);
    errno_restore(w, self->saved_errno);
}

/* First thing a fresh fiber does: what weft__switch_out does after its
 * switch returns. prev is the fiber that switched to it, or NULL. */
void weft__fiber_entry_finish(weft_fiber *self, weft_fiber *prev)
{
    weft__worker *w = self->worker;
    self->started = true;
    san_asan_finish(NULL, prev ? NULL : &w->sched_bottom, prev ? NULL : &w->sched_size);
    if (prev)
        finish_switch(w, prev);
    errno_restore(w, self->saved_errno);
}

/* --------------------------------------------------------------- queues */

/* The global queue is a growable circular array of fiber pointers rather
 * than a list threaded through the fibers: taking a batch then reads one
 * contiguous array instead of following a pointer into each fiber's record,
 * each on its own stack page (a cache and TLB miss apiece: 16% of skynet's
 * time with the list). */
static void global_put_batch(weft_fiber *const *fs, uint32_t n)
{
    struct weft__rt *rt = &weft__rt;
    weft__lock_acquire(&rt->glock);
    if (rt->glen + n > rt->gcap) {
        size_t cap = rt->gcap ? rt->gcap : 1024;
        while (cap < rt->glen + n)
            cap *= 2;
        weft_fiber **b = malloc(cap * sizeof *b);
        if (!b)
            weft__panic(__FILE__, __LINE__, "out of memory for the global run queue");
        for (size_t i = 0; i < rt->glen; i++)
            b[i] = rt->gbuf[(rt->ghead + i) % rt->gcap];
        free(rt->gbuf);
        rt->gbuf = b;
        rt->gcap = cap;
        rt->ghead = 0;
    }
    for (uint32_t i = 0; i < n; i++)
        rt->gbuf[(rt->ghead + rt->glen + i) % rt->gcap] = fs[i];
    rt->glen += n;
    atomic_store(&rt->gn, (uint32_t)rt->glen);
    weft__lock_release(&rt->glock);
}

/* Take a batch from the global queue into w's ring; return one to run. */
static weft_fiber *global_get(weft__worker *w, uint32_t max)
{
    struct weft__rt *rt = &weft__rt;
    if (atomic_load_explicit(&rt->gn, memory_order_relaxed) == 0)
        return NULL;
    weft__lock_acquire(&rt->glock);
    size_t n = rt->glen;
    if (n == 0) {
        weft__lock_release(&rt->glock);
        return NULL;
    }
    /* a fair share, leaving work for the others */
    size_t take = n / rt->n + 1;
    if (take > n)
        take = n;
    if (take > max)
        take = max;
    if (take > RUNQ_SIZE - runq_len(&w->rq))
        take = RUNQ_SIZE - runq_len(&w->rq);
    if (take == 0)
        take = 1;
    weft_fiber *first = rt->gbuf[rt->ghead];
    for (size_t i = 1; i < take; i++)
        runq_push(&w->rq, rt->gbuf[(rt->ghead + i) % rt->gcap]);
    rt->ghead = (rt->ghead + take) % rt->gcap;
    rt->glen -= take;
    atomic_store(&rt->gn, (uint32_t)rt->glen);
    weft__lock_release(&rt->glock);
    return first;
}

/* Owner: push at the tail of its ring, spilling half to the global queue
 * when full. */
static void local_put(weft__worker *w, weft_fiber *f)
{
    weft_fiber *batch[RUNQ_SIZE / 2 + 1];
    while (!runq_push(&w->rq, f)) {
        uint32_t n = runq_grab_half(&w->rq, batch);
        if (n == 0)
            continue;   /* a thief made room */
        batch[n++] = f;
        global_put_batch(batch, n);
        return;
    }
}

static weft_fiber *inbox_take(weft__worker *w)
{
    if (atomic_load_explicit(&w->inbox_n, memory_order_acquire) == 0)
        return NULL;
    weft__lock_acquire(&w->inbox_lock);
    weft_fiber *f = w->inbox_head;
    if (f) {
        w->inbox_head = f->next;
        if (!w->inbox_head)
            w->inbox_tail = NULL;
        atomic_fetch_sub(&w->inbox_n, 1);
    }
    weft__lock_release(&w->inbox_lock);
    return f;
}

/* --------------------------------------------------------------- waking */

static void signal_worker(weft__worker *w)
{
    /* Dekker against worker_sleep: each side stores its flag, then reads
     * the other's; at least one sees the other. The fence is explicit:
     * seq_cst store then load would do in C11 and on real ARMv8 (stlr,
     * ldar), but qemu-user 7.2 on an x86 host emulates that pair without
     * the store-load barrier, and a plain thread's wake-up of a worker
     * going into the poller was lost there (handles_state_word_forward_only
     * hung under check-aarch64). */
    atomic_store(&w->permit, 1);
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load(&w->in_poll)) {
        weft__rt.poller->wake();
    } else {
        weft__futex_wake((uint32_t *)&w->permit, 1);
    }
}

/* Take w off the idle list if it is there. Called with idle_lock held. */
static bool idle_remove_locked(weft__worker *w)
{
    if (!w->idle)
        return false;
    weft__worker **pp = &weft__rt.idle;
    while (*pp != w)
        pp = &(*pp)->idle_next;
    *pp = w->idle_next;
    w->idle_next = NULL;
    w->idle = false;
    atomic_fetch_sub(&weft__rt.nidle, 1);
    if (WEFT_UNLIKELY(atomic_load(&weft__wd_sleeping)))
        weft__watchdog_kick();   /* it sleeps while every worker does */
    return true;
}

/* Wake one idle worker to look for work, unless someone already looks. */
static void wakep(void)
{
    /* With one worker there is nobody to wake but that worker, and it is
     * awake if it is the one asking (no fence to pay). A plain thread (the
     * blocking pool, a user's thread) must wake it like any other: skipping
     * that lost every such wake-up on a one-CPU machine, where
     * weft_getaddrinfo or weft_wg_done from a thread then hung. */
    if (weft__rt.n == 1 && weft__cur_worker())
        return;
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&weft__rt.nidle, memory_order_relaxed) == 0)
        return;
    uint32_t zero = 0;
    if (atomic_load_explicit(&weft__rt.nspinning, memory_order_relaxed) != 0 ||
        !atomic_compare_exchange_strong(&weft__rt.nspinning, &zero, 1))
        return;
    weft__lock_acquire(&weft__rt.idle_lock);
    weft__worker *w = weft__rt.idle;
    if (w)
        idle_remove_locked(w);
    if (w)
        w->spinning = true;   /* it inherits our nspinning count */
    weft__lock_release(&weft__rt.idle_lock);
    if (!w) {
        atomic_fetch_sub(&weft__rt.nspinning, 1);
        return;
    }
    signal_worker(w);
}

void weft__global_put(weft_fiber *const *fs, uint32_t n)
{
    global_put_batch(fs, n);
    wakep();
}

/* Wake w specifically (its inbox got a fiber). */
static void wake_worker(weft__worker *w)
{
    weft__lock_acquire(&weft__rt.idle_lock);
    bool was = idle_remove_locked(w);
    weft__lock_release(&weft__rt.idle_lock);
    if (was)
        signal_worker(w);
}

static void inbox_put(weft__worker *w, weft_fiber *f)
{
    f->next = NULL;
    weft__lock_acquire(&w->inbox_lock);
    if (w->inbox_tail)
        w->inbox_tail->next = f;
    else
        w->inbox_head = f;
    w->inbox_tail = f;
    atomic_fetch_add(&w->inbox_n, 1);
    weft__lock_release(&w->inbox_lock);
    if (w != weft__cur_worker())
        wake_worker(w);
}

/* Queue a fiber that some worker should take: stealable work appeared, so
 * make sure somebody looks (wakep). A worker blocked in the poller wakes
 * others itself when it returns. */
static void offer(weft__worker *w, weft_fiber *f, bool spawned)
{
    if (!spawned || !deque_push(&w->dq, f))
        local_put(w, f);
    if (!atomic_load_explicit(&w->in_poll, memory_order_relaxed))
        wakep();
}

/* Put f in w's next slot, where w runs it as soon as its current fiber
 * parks or yields: a sender readying its receiver, a spawner its child,
 * and usually the fiber now running parks a moment later. Filling an empty
 * next slot wakes nobody. Waking a worker for it (Go's ready() does) costs
 * the waker a fence and a read of lines the idle workers write, on every
 * ready, for a fiber that is nearly always run here a moment later: in
 * bench_sched's ping-pong on two workers, 156 ns a round trip with the
 * wake against 125 without, the one-worker figure. The fiber the slot
 * held before goes where thieves see it (the spawn deque, or the ring for
 * a woken fiber), and that does wake someone.
 *
 * If the running fiber does not park, the fiber in the next slot waits for
 * it, up to IDLE_WATCH_NS: an idle worker, while any other worker is busy,
 * sleeps no longer than that and then takes a next slot whose owner has
 * not scheduled since (find_runnable). The watchdog, when on, moves it at
 * its own period too. */
static void put_next(weft__worker *w, weft_fiber *f, bool spawned)
{
    weft_fiber *old = runq_put_next(&w->rq, f);
    if (old)
        offer(w, old, spawned);
}

/* Put a RUNNABLE f on the queue it belongs on (weft__ready's second half);
 * w is the calling worker, NULL on a plain thread. */
static inline void ready_on(weft__worker *w, weft_fiber *f)
{
    if (WEFT_UNLIKELY(f->home)) {
        inbox_put(f->home, f);
        return;
    }
    if (WEFT_UNLIKELY(weft__rt.debug_migrate) && weft__rt.n > 1 && f->worker) {
        inbox_put(&weft__rt.workers[(f->worker->idx + 1) % weft__rt.n], f);
        return;
    }
    if (WEFT_UNLIKELY(!w)) {
        /* a plain thread (blocking pool, user thread): any worker may take it */
        global_put_batch(&f, 1);
        wakep();
        return;
    }
    put_next(w, f, false);
}

void weft__ready(weft_fiber *f)
{
    weft__fstate_set(f, WEFT_F_PARKED, WEFT_F_RUNNABLE);
    weft__worker *w = weft__cur_worker();
    if (WEFT_UNLIKELY(!w)) {
        /* Once f is queued it may run and return, and the runtime end,
         * while we are still waking a worker: the outside gate keeps the
         * end from being decided until we are out. No phase check: f's
         * wait, which we won, kept the runtime alive until now. */
        atomic_fetch_add(&weft__rt.outside, 1);
        ready_on(NULL, f);
        weft__outside_leave();
        return;
    }
    ready_on(w, f);
}

/* A new fiber from spawn: like ready, but it has no previous worker, and
 * the sibling it pushes out of the next slot goes to the spawn deque. */
void weft__ready_new(weft_fiber *f, weft__worker *w)
{
    if (f->home || !w) {
        f->worker = f->home ? f->home : &weft__rt.workers[0];
        if (f->home) {
            inbox_put(f->home, f);
        } else {
            global_put_batch(&f, 1);
            wakep();
        }
        return;
    }
    f->worker = w;
    put_next(w, f, true);
}

bool weft__has_local_work(void)
{
    weft__worker *w = weft__cur_worker();
    return w && (!runq_empty(&w->rq) || deque_len(&w->dq) > 0);
}

void weft__yield(weft_fiber *self)
{
    weft__switch_out(self, WEFT_POST_YIELD);
}

/* --------------------------------------------------------------- timers */

static weft_fiber *timer_fiber(weft__timer *t)
{
    return (weft_fiber *)((char *)t - offsetof(weft_fiber, timer));
}

/* A 4-ary min-heap of {when, timer} entries. The timers live in their
 * fibers' records, each on its own stack page; a heap of pointers to them
 * paid a cache and TLB miss for every comparison, about 32 on the way down
 * from the root of a 100,000-timer heap (7% of bench_timers' time was
 * heap_remove). With the due time in the entry, a comparison reads the
 * array only, and the four children of a node share one cache line: the
 * allocation is placed so that entry 1, the first of every group of four
 * siblings, starts a line (heap_grow). The one write that still reaches a
 * timer is its index, needed to remove it from the middle (disarm). Go's
 * timer heap (runtime/time.go) is 4-ary with `when` in the entry too. */
static inline void heap_set(weft__worker *w, size_t i, struct weft__heap_ent e)
{
    w->heap[i] = e;
    e.t->idx = i;
}

static void heap_up(weft__worker *w, size_t i)
{
    struct weft__heap_ent e = w->heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 4;
        if (e.when >= w->heap[p].when)
            break;
        heap_set(w, i, w->heap[p]);
        i = p;
    }
    heap_set(w, i, e);
}

static void heap_down(weft__worker *w, size_t i)
{
    struct weft__heap_ent e = w->heap[i];
    for (;;) {
        size_t c = 4 * i + 1, end = c + 4;
        if (c >= w->heap_len)
            break;
        if (end > w->heap_len)
            end = w->heap_len;
        size_t m = c;
        for (size_t k = c + 1; k < end; k++)
            if (w->heap[k].when < w->heap[m].when)
                m = k;
        if (w->heap[m].when >= e.when)
            break;
        heap_set(w, i, w->heap[m]);
        i = m;
    }
    heap_set(w, i, e);
}

static void heap_remove(weft__worker *w, weft__timer *t)
{
    size_t i = t->idx;
    struct weft__heap_ent last = w->heap[--w->heap_len];
    t->idx = SIZE_MAX;
    if (last.t != t) {
        heap_set(w, i, last);
        if (i > 0 && last.when < w->heap[(i - 1) / 4].when)
            heap_up(w, i);
        else
            heap_down(w, i);
    }
    atomic_store(&w->tnext, w->heap_len ? w->heap[0].when : UINT64_MAX);
}

/* Double the heap's room. The root sits 3 entries into a 64-byte aligned
 * block, so that entry 1 (and so every group of siblings 4k+1..4k+4) starts
 * a cache line. */
static void heap_grow(weft__worker *w)
{
    enum { SKEW = 3 };
    _Static_assert(4 * sizeof(struct weft__heap_ent) == 64, "four siblings fill one cache line");
    size_t cap = w->heap_cap ? w->heap_cap * 2 : 64;
    void *mem = weft__aligned_alloc(64, (cap + SKEW) * sizeof(struct weft__heap_ent));
    if (!mem)
        weft__panic(__FILE__, __LINE__, "out of memory for the timer heap");
    struct weft__heap_ent *h = (struct weft__heap_ent *)mem + SKEW;
    if (w->heap_len)
        memcpy(h, w->heap, w->heap_len * sizeof *h);
    weft__aligned_free(w->heap_mem);
    w->heap_mem = mem;
    w->heap = h;
    w->heap_cap = cap;
}

/* Arm f's timer in the heap of the worker it runs on (it is running). */
void weft__timer_arm(weft_fiber *f, uint64_t when)
{
    weft__worker *w = f->worker;
    weft__timer *t = &f->timer;
    weft__lock_acquire(&w->tlock);
    if (w->heap_len == w->heap_cap)
        heap_grow(w);
    t->when = when;
    t->owner = w;
    heap_set(w, w->heap_len++, (struct weft__heap_ent){ when, t });
    heap_up(w, t->idx);
    bool earliest = t->idx == 0;
    atomic_store(&w->tnext, w->heap[0].when);
    weft__lock_release(&w->tlock);
    /* Idle workers chose how long to sleep from the timers they saw; a new
     * earliest timer here may come before any of them wakes. If this worker
     * then runs a fiber that never parks, nobody would fire it: wake one
     * (it will sleep until at most 1 ms past this timer, and fire it if we
     * are still busy). Go's addtimer does the same (wakeNetPoller). */
    if (earliest)
        wakep();
}

void weft__timer_disarm(weft_fiber *f)
{
    weft__timer *t = &f->timer;
    weft__worker *w = t->owner;
    if (!w)
        return;
    weft__lock_acquire(&w->tlock);
    if (t->idx != SIZE_MAX)
        heap_remove(w, t);
    t->owner = NULL;
    weft__lock_release(&w->tlock);
}

/* Fire v's expired timers; the fibers they wake are readied on the
 * calling worker. Returns how many fibers woke. */
static int fire_timers(weft__worker *v, uint64_t now, bool try)
{
    if (atomic_load_explicit(&v->tnext, memory_order_relaxed) > now)
        return 0;
    if (try) {
        if (!weft__lock_try(&v->tlock))
            return 0;
    } else {
        weft__lock_acquire(&v->tlock);
    }
    weft_fiber *woke = NULL;
    int n = 0;
    while (v->heap_len && v->heap[0].when <= now) {
        weft__timer *t = v->heap[0].t;
        heap_remove(v, t);
        weft_fiber *f = timer_fiber(t);
        /* The claim is made under the heap lock: see TIMERS above. */
        if (weft__wake_claim(f, -ETIMEDOUT)) {
            f->next = woke;
            woke = f;
            n++;
        }
    }
    weft__lock_release(&v->tlock);
    /* Counted by who fired them, and before the fibers can run, so that
     * what they see in weft_stats includes their own timer. */
    weft__worker *me = weft__cur_worker();
    if (n && me)
        weft__stat_add(me->st.timers_fired, (uint64_t)n);
    while (woke) {
        weft_fiber *f = woke;
        woke = f->next;
        if (f->wunlink)
            f->wunlink(f);
        weft__ready(f);
    }
    return n;
}

/* ------------------------------------------------------------- the wait */

int weft__wake_interrupt(weft_fiber *f, int result)
{
    if (!weft__wake_claim(f, result))
        return 0;
    if (f->wunlink)
        f->wunlink(f);
    weft__ready(f);
    return 1;
}

static void wait_done(weft_fiber *self)
{
    atomic_store_explicit(&self->wstate, WEFT_WS_IDLE, memory_order_relaxed);
    self->wkind = WEFT_W_NONE;
    self->wobj = NULL;
    self->wunlink = NULL;
}

int weft__wait_abort(weft_fiber *self)
{
    int expect = WEFT_WS_WAITING;
    if (atomic_compare_exchange_strong(&self->wstate, &expect, WEFT_WS_IDLE)) {
        weft__fstate_set(self, WEFT_F_PARKED, WEFT_F_RUNNING);   /* never switched away */
        wait_done(self);
        return 1;
    }
    return 0;
}

int weft__wait_park(weft_fiber *self, int64_t timeout)
{
    int64_t when = timeout;
    if (self->deadline >= 0 && (when < 0 || self->deadline < when))
        when = self->deadline;

    /* Cancelled, or already past the time: try to take the wait back
     * ourselves. If a waker claimed it first, it will ready us, and we
     * must park to receive that. */
    int early = 0;
    if (atomic_load(&self->cancelled))   /* after wait_prepare's barrier: see weft_cancel */
        early = -ECANCELED;
    else if (when >= 0 && (uint64_t)when <= weft__now())
        early = -ETIMEDOUT;
    if (early && weft__wake_claim(self, early)) {
        weft__fstate_set(self, WEFT_F_PARKED, WEFT_F_RUNNING);   /* our own claim: nobody readies us */
        if (self->wunlink)
            self->wunlink(self);
        wait_done(self);
        return early;
    }
    bool armed = false;
    if (!early && when >= 0) {
        weft__timer_arm(self, (uint64_t)when);
        armed = true;
    }
    self->wsince = weft__now_coarse();   /* for weft_dump: ms resolution is plenty */
    weft__stat_add(self->worker->st.parks, 1);
    weft__switch_out(self, WEFT_POST_PARK);
    if (armed)
        weft__timer_disarm(self);
    int r = self->wresult;
    wait_done(self);
    return r;
}

int weft__wait_park_nointr(weft_fiber *self)
{
    self->wsince = weft__now_coarse();
    atomic_fetch_add_explicit(&self->worker->st.parks, 1, memory_order_relaxed);
    weft__switch_out(self, WEFT_POST_PARK);
    int r = self->wresult;
    wait_done(self);
    return r;
}

/* ---------------------------------------------------------- finding work */

/* Work that another worker could take: the global queue, our inbox, any
 * ring or spawn deque. Other workers' next slots do not count: each belongs
 * to a fiber its owner is about to run (see steal_work). */
static bool any_work(weft__worker *w)
{
    if (atomic_load(&weft__rt.gn) || atomic_load(&w->inbox_n))
        return true;
    for (unsigned i = 0; i < weft__rt.n; i++) {
        weft__worker *v = &weft__rt.workers[i];
        if (runq_len(&v->rq) || deque_len(&v->dq) || (v == w && !runq_empty(&w->rq)))
            return true;
    }
    return false;
}

/* Steal half of another worker's ring or, if it is empty, the oldest fiber
 * of its spawn deque (the biggest piece of work it has: see deque.h). A
 * victim's next slot is taken only
 * when take_next names that victim: the fiber there was just readied by
 * the fiber its owner is running, which usually parks a moment later and
 * lets the owner run it (a sender and its receiver, a spawner and its
 * child). Stealing it at once would make the pair ping-pong across CPUs.
 * spin_for_work passes a victim whose owner made no progress for a whole
 * spin window (Go waits 3 us before the same theft). */
static weft_fiber *steal_work(weft__worker *w, weft__worker *take_next)
{
    weft_fiber *batch[RUNQ_SIZE / 2 + 1];
    unsigned n = weft__rt.n;
    uint64_t now = weft__now();
    for (int round = 0; round < 4; round++) {
        unsigned start = fastrand(w) % n;
        for (unsigned k = 0; k < n; k++) {
            weft__worker *v = &weft__rt.workers[(start + k) % n];
            if (v == w)
                continue;
            /* a busy owner's due timers are ours to fire */
            weft_fiber *f;
            if (fire_timers(v, now, true) && (f = local_pick(w)))
                return f;
            uint32_t got = runq_grab(&v->rq, batch, false);
            bool spawns = false;
            if (got == 0) {
                /* half of the deque, oldest first, one CAS each (the line
                 * of its top stays in our cache for the run of them) */
                int64_t half = deque_len(&v->dq);
                half -= half / 2;
                if (half > (int64_t)(RUNQ_SIZE / 2))
                    half = RUNQ_SIZE / 2;
                while ((int64_t)got < half && (batch[got] = deque_steal(&v->dq)))
                    got++;
                spawns = got > 0;
            }
            if (got == 0 && v == take_next)
                got = runq_grab(&v->rq, batch, true);
            if (got == 0)
                continue;
            weft__stat_add(w->st.steals, 1);
            weft__stat_add(w->st.stolen, got);
            if (WEFT_UNLIKELY(weft__trace_on))
                weft__trace_steal(w, v, got);
            /* We run the youngest. Stolen spawns go on our own deque, in
             * their order, so that they too run depth first here and the
             * next thief takes the oldest; woken fibers on our ring. */
            f = batch[got - 1];
            if (spawns) {
                for (uint32_t i = 0; i + 1 < got; i++)
                    if (!deque_push(&w->dq, batch[i]))
                        local_put(w, batch[i]);
            } else if (got > 1) {
                runq_push_batch(&w->rq, batch, got - 1);
            }
            return f;
        }
    }
    return NULL;
}

static void stop_spinning(weft__worker *w)
{
    w->spinning = false;
    if (atomic_fetch_sub(&weft__rt.nspinning, 1) == 1)
        wakep();   /* we were the last one looking: there may be more work */
}

#define SPIN_NS 20000
#define TRIM_BATCH 512   /* stacks trimmed per trip to idle */

#define IDLE_WATCH_NS 1000000       /* an idle worker's first look while others are busy, */
#define IDLE_WATCH_MAX_NS 8000000   /* doubling up to this while it finds nothing */
#define TICKS_WATCHED 64
#define OUTSIDE_WAIT_NS 50000       /* main returned, a plain thread is queueing: look again */

/* "Stuck" is a worker whose schedule count (tick) has not moved since
 * snapshot_ticks while a fiber waits in its next slot: its owner has been
 * running one fiber all that time. */
static void snapshot_ticks(uint32_t ticks[TICKS_WATCHED])
{
    unsigned n = weft__rt.n < TICKS_WATCHED ? weft__rt.n : TICKS_WATCHED;
    for (unsigned i = 0; i < n; i++)
        ticks[i] = atomic_load_explicit(&weft__rt.workers[i].tick, memory_order_relaxed);
}

static weft__worker *find_stuck(weft__worker *w, const uint32_t ticks[TICKS_WATCHED])
{
    unsigned n = weft__rt.n < TICKS_WATCHED ? weft__rt.n : TICKS_WATCHED;
    for (unsigned i = 0; i < n; i++) {
        weft__worker *v = &weft__rt.workers[i];
        if (v != w && atomic_load_explicit(&v->tick, memory_order_relaxed) == ticks[i] &&
            atomic_load_explicit(&v->rq.next, memory_order_relaxed))
            return v;
    }
    return NULL;
}

/* Spin up to SPIN_NS for work to appear. Returns true to look again: work
 * appeared, or a victim's next slot went untouched for the whole window
 * (its owner is stuck in one fiber), in which case *stuck names it. */
static bool spin_for_work(weft__worker *w, weft__worker **stuck)
{
    uint32_t ticks[TICKS_WATCHED];
    snapshot_ticks(ticks);
    uint64_t until = weft__now() + SPIN_NS;
    do {
        for (int i = 0; i < 64; i++)
            weft__cpu_relax();
        if (any_work(w) || atomic_load_explicit(&weft__rt.shutdown, memory_order_relaxed))
            return true;
    } while (weft__now() < until);
    *stuck = find_stuck(w, ticks);
    return *stuck != NULL;
}

/* Look at the I/O poller without blocking, unless another worker is in it
 * (it sees the events). Returns how many fibers it readied. */
static int poll_now(weft__worker *w)
{
    const struct weft__poller *p = weft__rt.poller;
    int zero = 0;
    if (!p || atomic_load(&weft__rt.poll_owner) != 0 ||
        !atomic_compare_exchange_strong(&weft__rt.poll_owner, &zero, 1))
        return 0;
    int got = p->poll(w, 0);
    atomic_store_explicit(&weft__rt.polled_at, weft__now(), memory_order_relaxed);
    atomic_store(&weft__rt.poll_owner, 0);
    return got;
}

/* Workers look at the poller when they run out of work. If every worker
 * always has a fiber to run (fibers that yield and never park), none ever
 * does, and a fiber parked on a socket would never hear of its data. So on
 * its fairness tick a worker also looks, if nobody has for POLL_STALE_NS
 * (Go's sysmon does the same every 10 ms): at most a thousand non-blocking
 * polls a second, and only while every worker is busy. */
#define POLL_STALE_NS 1000000

static weft_fiber *local_work(weft__worker *w)
{
    weft_fiber *f;
    uint32_t tick = atomic_load_explicit(&w->tick, memory_order_relaxed) + 1;
    atomic_store_explicit(&w->tick, tick, memory_order_relaxed);   /* read by thieves */
    if (tick % 61 == 0 && (f = global_get(w, 1)))
        return f;
    if (tick % 61 == 0 && (f = inbox_take(w)))
        return f;
    if (tick % 61 == 0 && weft__rt.poller &&
        weft__now() - atomic_load_explicit(&weft__rt.polled_at, memory_order_relaxed) >= POLL_STALE_NS)
        poll_now(w);   /* what it readied is in our queues now */
    if (atomic_load_explicit(&w->tnext, memory_order_relaxed) != UINT64_MAX)
        fire_timers(w, weft__now(), false);   /* the clock only when a timer is armed */
    if ((f = local_pick(w)))
        return f;
    if ((f = inbox_take(w)))
        return f;
    return global_get(w, RUNQ_SIZE / 2);
}

static int64_t sleep_timeout(weft__worker *w)
{
    uint64_t next = atomic_load(&w->tnext);
    for (unsigned i = 0; i < weft__rt.n; i++) {
        weft__worker *v = &weft__rt.workers[i];
        uint64_t t = atomic_load(&v->tnext);
        if (v != w && t != UINT64_MAX && t + 1000000 < next)
            next = t + 1000000;
    }
    if (next == UINT64_MAX)
        return -1;
    uint64_t now = weft__now();
    return next > now ? (int64_t)(next - now) : 0;
}

/* Sleep until signalled or timeout; in the poller if nobody else is.
 * True if something woke us (a permit, or the poller readied fibers),
 * false if the time ran out. */
static bool worker_sleep(weft__worker *w, int64_t timeout)
{
    const struct weft__poller *p = weft__rt.poller;
    int zero = 0;
    if (p && atomic_compare_exchange_strong(&weft__rt.poll_owner, &zero, 1)) {
        atomic_store(&w->in_poll, 1);
        atomic_thread_fence(memory_order_seq_cst);   /* against signal_worker's */
        int got = 0;
        if (!atomic_load(&w->permit)) {
            weft__stat_add(w->st.polls, 1);
            got = p->poll(w, timeout);
        }
        atomic_store_explicit(&weft__rt.polled_at, weft__now(), memory_order_relaxed);
        atomic_store(&w->in_poll, 0);
        atomic_store(&weft__rt.poll_owner, 0);
        if (got > 0) {
            /* Readied fibers sit in our queue. We may still be on the idle
             * list: leave it, then wake someone else for the rest. */
            weft__lock_acquire(&weft__rt.idle_lock);
            idle_remove_locked(w);
            weft__lock_release(&weft__rt.idle_lock);
            wakep();
        }
        if (got > 0) {
            atomic_store(&w->permit, 0);
            return true;
        }
    } else if (!atomic_load(&w->permit)) {
        weft__futex_wait((uint32_t *)&w->permit, 0, timeout);
    }
    return atomic_exchange(&w->permit, 0) != 0;
}

/* Fibers spawned and not yet returned: counted per worker, so that spawn
 * and exit touch no shared cache line (a single atomic counter was the
 * hottest line of skynet on two workers). The sums are a snapshot. */
int64_t weft__live_fibers(void)
{
    int64_t n = (int64_t)atomic_load(&weft__rt.ext_spawned);
    for (unsigned i = 0; i < weft__rt.n; i++) {
        weft__worker *w = &weft__rt.workers[i];
        n += (int64_t)(atomic_load(&w->st.spawned) - atomic_load(&w->st.exited));
    }
    return n;
}

/* Have all fibers returned? Exact, although the counters move while we
 * read them, because they only grow and we read every exit count before
 * any spawn count: E (exits seen) is at most the exits up to the last of
 * those reads, S (spawns seen) at least the spawns up to then, and a
 * fiber's spawn is counted before it can run, let alone exit (the exit
 * count is stored with release, read with acquire). So S == E means that
 * at that moment nothing was alive, and with main returned nothing can
 * spawn again. */
static bool all_gone(void)
{
    uint64_t e = 0, s = 0;
    for (unsigned i = 0; i < weft__rt.n; i++)
        e += atomic_load_explicit(&weft__rt.workers[i].st.exited, memory_order_acquire);
    s += atomic_load(&weft__rt.ext_spawned);
    for (unsigned i = 0; i < weft__rt.n; i++)
        s += atomic_load_explicit(&weft__rt.workers[i].st.spawned, memory_order_acquire);
    return s == e;
}

static void shutdown_all(void);

/* Find a fiber to run, sleeping while there is none. NULL: shut down. */
static weft_fiber *find_runnable(weft__worker *w)
{
    for (;;) {
        if (atomic_load_explicit(&weft__rt.shutdown, memory_order_acquire))
            return NULL;
        weft_fiber *f = local_work(w);
        if (f)
            goto found;

        /* Ready I/O, without blocking, if nobody is blocked on it. */
        if (poll_now(w) > 0)
            continue;

        /* Steal, unless enough workers are already looking. */
        if (!w->spinning) {
            uint32_t busy = weft__rt.n - atomic_load(&weft__rt.nidle);
            if (2 * atomic_load(&weft__rt.nspinning) < busy) {
                w->spinning = true;
                atomic_fetch_add(&weft__rt.nspinning, 1);
            }
        }
        if (w->spinning && weft__rt.n > 1 && (f = steal_work(w, NULL)))
            goto found;
        /* A spinner keeps looking a little longer before it sleeps: while
         * it spins, producers' wakep() sees nspinning > 0 and makes no
         * system call, and a burst of spawns or wake-ups a few microseconds
         * apart is picked up without a futex round trip per fiber. Bounded
         * (SPIN_NS), and only for spinners (at most half the busy workers). */
        weft__worker *stuck = NULL;
        if (w->spinning && weft__rt.n > 1 && spin_for_work(w, &stuck)) {
            if (stuck && (f = steal_work(w, stuck)))
                goto found;
            continue;
        }

        /* Go idle: announce it, then look once more (see the protocol). */
        weft__lock_acquire(&weft__rt.idle_lock);
        /* Once on the list, w->spinning belongs to whoever pops us (wakep
         * sets it), so it is read and cleared before, under the lock. */
        bool was_spinning = w->spinning;
        w->spinning = false;
        w->idle = true;
        w->idle_next = weft__rt.idle;
        weft__rt.idle = w;
        atomic_fetch_add(&weft__rt.nidle, 1);
        weft__lock_release(&weft__rt.idle_lock);
        if (was_spinning)
            atomic_fetch_sub(&weft__rt.nspinning, 1);
        atomic_thread_fence(memory_order_seq_cst);
        /* The end of weft_run: main returned and every fiber with it. The
         * last worker to get here sees it: its exit counts came before its
         * fence, and a worker that exits a fiber after ours comes here
         * after it (see all_gone). A plain thread inside the outside gate
         * may be queueing one more (START-UP AND SHUTDOWN): look again
         * shortly, it cannot wake us on its way out. */
        bool outsider = false;
        if (atomic_load(&weft__rt.main_done)) {
            if (atomic_load(&weft__rt.outside) != 0)
                outsider = true;
            else if (all_gone())
                shutdown_all();
        }
        if (any_work(w) || atomic_load(&weft__rt.shutdown)) {
            weft__lock_acquire(&weft__rt.idle_lock);
            bool removed = idle_remove_locked(w);
            weft__lock_release(&weft__rt.idle_lock);
            if (removed) {
                w->spinning = true;
                atomic_fetch_add(&weft__rt.nspinning, 1);
            }
            /* else a waker took us off the list and will signal us: its
             * permit is consumed by the next sleep, harmlessly. */
            continue;
        }
        /* Every worker idle and no clock to wake anyone: with
         * WEFT_DEADLOCK=1, see whether the fibers wait only on each other. */
        if (WEFT_UNLIKELY(weft__deadlock_on) && atomic_load(&weft__rt.nidle) == weft__rt.n &&
            sleep_timeout(w) < 0)
            weft__deadlock_check();
        /* While another worker is busy, wake now and then to take a fiber
         * left in its next slot by a fiber that went on running (put_next).
         * A look that finds nothing stuck sleeps on at once, still on the
         * idle list (a waker's permit ends the sleep as before), rather
         * than spin through the loop, and twice as long each time, as Go's
         * sysmon backs off: beside a fiber that computes for seconds an
         * idle worker wakes 125 times a second. When every worker is idle
         * there is nothing to watch: no timeout. */
        weft__worker *stuck_v = NULL;
        int64_t watch_ns = IDLE_WATCH_NS;
        for (;;) {
            /* Idle time is when cached stacks beyond the hot reserve give
             * their memory back; with more to do, sleep at most 10 ms. */
            int64_t timeout = sleep_timeout(w);
            if (weft__stack_trim(TRIM_BATCH) && (timeout < 0 || timeout > 10000000))
                timeout = 10000000;
            if (outsider && (timeout < 0 || timeout > OUTSIDE_WAIT_NS))
                timeout = OUTSIDE_WAIT_NS;
            uint32_t ticks[TICKS_WATCHED];
            bool watched = false;
            if (weft__rt.n > 1 && atomic_load(&weft__rt.nidle) < weft__rt.n &&
                (timeout < 0 || timeout > watch_ns)) {
                snapshot_ticks(ticks);
                timeout = watch_ns;
                watched = true;
            }
            if (worker_sleep(w, timeout) || !watched || outsider ||
                atomic_load(&weft__rt.shutdown) || (stuck_v = find_stuck(w, ticks)))
                break;
            if (watch_ns < IDLE_WATCH_MAX_NS)
                watch_ns *= 2;
        }
        weft__lock_acquire(&weft__rt.idle_lock);
        idle_remove_locked(w);   /* timed out, or woken by a targeted wake */
        weft__lock_release(&weft__rt.idle_lock);
        if (stuck_v && (f = steal_work(w, stuck_v)))
            goto found;
        continue;
found:
        if (w->spinning)
            stop_spinning(w);
        return f;
    }
}

/* ----------------------------------------------------------- the workers */

static void worker_loop(weft__worker *w)
{
    weft_fiber *f;
    while ((f = find_runnable(w)))
        run_fiber(w, f);
}

static void worker_init_thread(weft__worker *w)
{
    weft__tls_set(w);
    w->errno_loc = &errno;
    w->tsan_fiber = san_tsan_current();
    weft__crash_thread_init(w);
    weft__diag_thread_init(w);
}

static void *worker_main(void *arg)
{
    weft__worker *w = arg;
    worker_init_thread(w);
    /* Until weft__sched_run has started every worker and fixed rt.n. */
    uint32_t p;
    while ((p = atomic_load(&weft__rt.phase)) == WEFT_RT_STARTING)
        weft__futex_wait((uint32_t *)&weft__rt.phase, p, -1);
    worker_loop(w);
    weft__crash_thread_fini(w);
    weft__tls_set(NULL);
    return NULL;
}

static void shutdown_all(void)
{
    atomic_store(&weft__rt.shutdown, 1);
    for (unsigned i = 0; i < weft__rt.n; i++) {
        weft__worker *w = &weft__rt.workers[i];
        weft__lock_acquire(&weft__rt.idle_lock);
        idle_remove_locked(w);
        weft__lock_release(&weft__rt.idle_lock);
        signal_worker(w);
    }
}

/* In the child of a fork() (POSIX; runtime.c calls it with the rest of the
 * child's reset). The child has one thread, the one that forked: a worker
 * whose fiber called fork(), or a plain thread. The other workers, the
 * pool, the watchdog and the dump thread are not in it, and they may have
 * held any of our locks. Forget the runtime without freeing anything: the
 * calling thread may be running on a fiber's stack, and the records others
 * were using are as fork copied them, mid-change. What is lost is leaked,
 * in the child only. The caller is a plain thread from here on. The
 * POSIX-only parts (signals, stacks) are reset beside this, in runtime.c. */
void weft__sched_atfork_child(void)
{
    struct weft__rt *rt = &weft__rt;
    weft__tls_set(NULL);
    uint64_t id = atomic_load(&rt->next_id);   /* ids stay unique in the process */
    memset(rt, 0, sizeof *rt);                 /* phase STOPPED, no workers, no counts */
    atomic_store(&rt->next_id, id);
    weft__fiber_atfork_child();
    weft__trace_atfork_child();
    weft__watchdog_atfork_child();
}

static unsigned env_unsigned(const char *name, unsigned dflt)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return dflt;
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    return (*end || v == 0 || v > 1024) ? dflt : (unsigned)v;
}

int weft__sched_run(const weft_config *cfg, const struct weft__poller *poller,
                    void *(*main_fn)(void *), void *arg, void **ret)
{
    struct weft__rt *rt = &weft__rt;
    unsigned n = cfg && cfg->workers ? cfg->workers : weft__cpu_count();
    n = env_unsigned("WEFT_WORKERS", n);
    if (n > 1024)
        return -EINVAL;
    size_t ss = cfg && cfg->stack_size ? cfg->stack_size : WEFT_STACK_DEFAULT;
    if (ss < WEFT_STACK_MIN || ss > WEFT_STACK_MAX)
        return -EINVAL;

    weft__worker *ws = weft__aligned_alloc(64, n * sizeof *ws);
    if (!ws)
        return -ENOMEM;
    memset(ws, 0, n * sizeof *ws);
    rt->workers = ws;
    rt->n = n;
    rt->stack_size = ss;
    rt->poller = poller;
    atomic_store(&rt->poll_owner, 0);
    atomic_store(&rt->polled_at, 0);
    const char *dm = getenv("WEFT_DEBUG_MIGRATE");
    rt->debug_migrate = dm && *dm && strcmp(dm, "0") != 0;
    weft__lock_init(&rt->glock);
    weft__lock_init(&rt->idle_lock);
    rt->gbuf = NULL;
    rt->gcap = rt->glen = rt->ghead = 0;
    atomic_store(&rt->gn, 0);
    rt->idle = NULL;
    atomic_store(&rt->nidle, 0);
    atomic_store(&rt->nspinning, 0);
    atomic_store(&rt->ext_spawned, 0);
    atomic_store(&rt->main_done, 0);
    atomic_store(&rt->cancel_all, 0);
    atomic_store(&rt->shutdown, 0);
    if (atomic_load(&rt->next_id) == 0)
        atomic_store(&rt->next_id, 1);
    for (unsigned i = 0; i < n; i++) {
        weft__worker *w = &ws[i];
        w->idx = i;
        w->rng = 0x9E3779B97F4A7C15ull * (i + 1);
        weft__lock_init(&w->inbox_lock);
        weft__lock_init(&w->tlock);
        atomic_store(&w->tnext, UINT64_MAX);
    }
    weft__crash_install();

    /* Worker 0 is this thread. */
    weft__worker *w0 = &ws[0];
    worker_init_thread(w0);

    weft_fiber *mainf;
    weft_attr ma = { .stack_size = ss, .name = "main", .flags = 0 };
    int err = weft_spawn(&mainf, &ma, main_fn, arg);
    if (err < 0)
        goto out;
    /* weft_spawn gave out a handle (fiber.c, HANDLES); no worker runs yet:
     * nobody reads the flags concurrently. */
    weft__handle_rec(mainf)->flags |= WEFT__MAIN;

    /* The workers wait for RUNNING (worker_main): until then nothing reads
     * rt.n, and a thread we could not create shrinks it unseen. Run with
     * the workers we got: the others never steal or sleep. Fewer threads
     * is a performance loss, not an error. */
    unsigned started = 1;
    for (unsigned i = 1; i < n; i++) {
        char name[16];
        snprintf(name, sizeof name, "weft/%u", i);
        if (weft__thread_start(&ws[i].thread, worker_main, &ws[i], name) < 0)
            break;
        started++;
    }
    rt->n = started;
    weft__diag_start(cfg);   /* dump signal, crash reports, trace, watchdog */
    atomic_store(&rt->phase, WEFT_RT_RUNNING);
    weft__futex_wake((uint32_t *)&rt->phase, INT32_MAX);
    worker_loop(w0);
    for (unsigned i = 1; i < started; i++)
        weft__thread_join(ws[i].thread);
    readers_shut_out();
    weft__diag_stop();
    if (ret)
        *ret = rt->main_ret;
    err = 0;
out:
    weft__crash_thread_fini(w0);
    weft__tls_set(NULL);
    weft__crash_uninstall();
    for (unsigned i = 0; i < n; i++) {
        weft__worker *w = &ws[i];
        weft__stack_free_many(w->scache, w->nscache);
        w->nscache = 0;
        weft__aligned_free(w->heap_mem);
        w->heap_mem = NULL;
        w->heap = NULL;
        w->heap_cap = w->heap_len = 0;
        weft__lock_destroy(&w->inbox_lock);
        weft__lock_destroy(&w->tlock);
    }
    weft__stack_release_all();
    weft__lock_destroy(&rt->glock);
    free(rt->gbuf);
    rt->gbuf = NULL;
    weft__lock_destroy(&rt->idle_lock);
    rt->workers = NULL;
    rt->n = 0;
    weft__aligned_free(ws);
    return err;
}
