/*
 * The deadlock report (WEFT_DEADLOCK=1): Go's "all goroutines are asleep",
 * as far as a C runtime can know it.
 *
 * WHEN IT LOOKS
 *   Only when the last worker goes idle with no timer armed anywhere
 *   (find_runnable calls weft__deadlock_check then): nothing is queued,
 *   nothing runs, and no clock will wake anybody. It then holds each
 *   fiber in turn (weft__fiber_hold, as the dump does) and reads what it
 *   waits for. The runtime is deadlocked if every fiber that has not
 *   returned is parked on something only another fiber can signal — a
 *   join, mutex, condvar, semaphore, wait group, channel or select — and
 *   none waits for I/O, the blocking pool or a sleep (the poller or a pool
 *   thread could still wake those). It then checks that nothing moved
 *   while it looked: every worker still idle, every queue still empty, no
 *   switch made since the walk began (a fiber readied meanwhile by a plain
 *   thread has either been queued or already run). Then it prints the
 *   report and the dump to stderr, once per weft_run, and goes to sleep
 *   like any idle worker: the program is not stopped.
 *
 * WHY IT IS OFF BY DEFAULT
 *   It cannot be exact. Go's can, because nothing outside the scheduler can
 *   signal a goroutine. weft's objects can be signalled by plain threads:
 *   weft_sem_post, weft_wg_done, weft_cond_signal, weft_chan_trysend,
 *   weft_chan_close, weft_cancel, all of them legal from any thread. A
 *   program whose fibers all wait for a plain thread that has not called
 *   yet looks deadlocked to the runtime and is not. So the report is a
 *   debugging aid to turn on (WEFT_DEADLOCK=1), never a verdict that stops
 *   the program; with it off the check costs one predictable branch when a
 *   worker goes idle.
 */
#define _GNU_SOURCE
#include "diag.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int weft__deadlock_on;
static _Atomic int reported;

void weft__deadlock_start(void)
{
    const char *e = getenv("WEFT_DEADLOCK");
    weft__deadlock_on = e && *e && strcmp(e, "0") != 0;
    atomic_store(&reported, 0);
}

struct look {
    uint64_t blocked;      /* parked on another fiber */
    uint64_t other;        /* anything else: running, runnable, I/O, pool, sleep */
};

static bool waits_on_fibers(int kind)
{
    switch (kind) {
    case WEFT_W_JOIN: case WEFT_W_MUTEX: case WEFT_W_COND: case WEFT_W_SEM:
    case WEFT_W_WG: case WEFT_W_CHAN_SEND: case WEFT_W_CHAN_RECV: case WEFT_W_SELECT:
        return true;
    default:
        return false;
    }
}

static void look_one(weft_fiber *f, void *arg)
{
    struct look *l = arg;
    if (l->other)
        return;   /* the answer is already no */
    if (atomic_load_explicit(&f->state, memory_order_acquire) == WEFT_F_DEAD)
        return;   /* returned, waiting to be joined: not blocked */
    if (!weft__fiber_hold(f)) {
        l->other++;   /* on a CPU a moment ago */
        return;
    }
    /* Held: its wait record is its own to write, and it cannot run. */
    int st = atomic_load_explicit(&f->state, memory_order_relaxed);
    if (st == WEFT_F_PARKED && waits_on_fibers(f->wkind) && !f->timer.owner)
        l->blocked++;
    else
        l->other++;
    weft__fiber_release(f);
}

static uint64_t switches(void)
{
    uint64_t n = 0;
    for (unsigned i = 0; i < weft__rt.n; i++)
        n += atomic_load(&weft__rt.workers[i].st.switches) + atomic_load(&weft__rt.workers[i].st.parks);
    return n;
}

static bool all_quiet(void)
{
    if (atomic_load(&weft__rt.nidle) != weft__rt.n || atomic_load(&weft__rt.gn))
        return false;
    for (unsigned i = 0; i < weft__rt.n; i++) {
        weft__worker *v = &weft__rt.workers[i];
        if (runq_len(&v->rq) || deque_len(&v->dq) || atomic_load(&v->rq.next) ||
            atomic_load(&v->inbox_n))
            return false;
    }
    return true;
}

void weft__deadlock_check(void)
{
    if (atomic_load(&reported) || !all_quiet())
        return;
    uint64_t before = switches();
    struct look l = { 0, 0 };
    weft__each_fiber(look_one, &l);
    if (l.other || !l.blocked || !all_quiet() || switches() != before)
        return;
    if (atomic_exchange(&reported, 1))
        return;
    char msg[200];
    int n = snprintf(msg, sizeof msg,
                     "weft: deadlock: all %llu fibers are asleep, each waiting on another fiber "
                     "(no timer, no I/O, no blocking-pool work); a plain thread could still wake "
                     "them (WEFT_DEADLOCK=1)\n",
                     (unsigned long long)l.blocked);
    if (n > 0 && write(2, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1) < 0)
        return;
    weft_dump(2);
}
