/*
 * The blocking pool: OS threads that run what cannot park (a blocking
 * library call, getaddrinfo, reads of regular files under epoll) while the
 * calling fiber parks, not its worker.
 *
 * SIZE
 *   Threads are started on demand, one per queued item when none is idle,
 *   up to WEFT_POOL_MAX (env, default 64); beyond that items wait in FIFO
 *   order. When no thread serves the pool and none can be started (a pid
 *   limit, RLIMIT_NPROC, RLIMIT_AS), an item would wait for nobody: the
 *   call returns the start's error (-EAGAIN, as pthread_create reports)
 *   without queueing it. A failed start while threads run is no error.
 *   A thread idle for WEFT_POOL_IDLE_MS (env, default 10 s) exits.
 *   An exiting thread cannot join itself, so it leaves its handle on a
 *   list that the next grower, or weft__pool_stop, joins. weft__pool_stop
 *   (from weft__io_stop, when every fiber is done) wakes and joins every
 *   thread: nothing of the pool outlives weft_run.
 *
 * AN ITEM'S LIFE
 *   The fiber allocates the item (two references: its own and the pool's),
 *   queues it and parks on it (wobj = the item, wunlink = pool_unlink).
 *   A pool thread takes it (QUEUED -> RUNNING), runs fn(arg) without any
 *   lock, then under the pool lock marks it DONE and claims the fiber.
 *   Both sides drop their reference; the last frees it.
 *
 * CANCEL AND DEADLINE
 *   While queued: pool_unlink takes the item off the queue; the call
 *   returns -ECANCELED / -ETIMEDOUT and fn never runs.
 *   While running, two policies (the caller picks):
 *     - weft_blocking (intr): the call returns -ECANCELED at once; fn runs
 *       to the end on the pool, its result is dropped (the item's drop
 *       callback, if any, disposes of it). fn and arg must therefore stay
 *       valid until fn returns, whatever happens to the caller: do not
 *       point arg at the caller's stack if the caller may be cancelled.
 *       weft_getaddrinfo hands the pool copies of its arguments for that
 *       reason.
 *     - file I/O (not intr): the fiber waits until fn returns (its buffer
 *       is being written), then returns fn's result: a transfer that
 *       happened is reported, not hidden behind -ECANCELED.
 */
#define _GNU_SOURCE
#include "io.h"

#include <errno.h>
#include <stdlib.h>

#ifndef _WIN32
#include <signal.h>
#endif

enum { ITEM_QUEUED = 1, ITEM_RUNNING, ITEM_DONE, ITEM_DROPPED };

struct item {
    void *(*fn)(void *);
    void *arg;
    void *ret;
    void (*drop)(void *ret, void *arg);
    weft_fiber *f;             /* the waiting fiber; NULL once it gave up */
    int state;                 /* ITEM_*, under pool.lock */
    bool intr;
    _Atomic int refs;
    struct item *next;
};

struct pthr {
    weft__thread t;
    struct pthr *next;
};

static struct {
    weft__lock lock;
    bool inited;
    struct item *head, *tail;
    unsigned nthreads, nidle, max;
    uint64_t idle_ns;
    _Atomic uint32_t seq;      /* futex word the idle threads sleep on */
    bool stopping;
    struct pthr *live;         /* started, not exited */
    struct pthr *zombies;      /* exited, to be joined */
} pool = { .lock = WEFT__LOCK_INIT };

static unsigned env_num(const char *name, unsigned dflt, unsigned max)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return dflt;
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    return (*end || v == 0 || v > max) ? dflt : (unsigned)v;
}

static void item_release(struct item *it)
{
    if (atomic_fetch_sub(&it->refs, 1) == 1)
        free(it);
}

static struct item *queue_pop(void)
{
    struct item *it = pool.head;
    if (it) {
        pool.head = it->next;
        if (!pool.head)
            pool.tail = NULL;
    }
    return it;
}

static void queue_remove(struct item *it)
{
    struct item **pp = &pool.head, *prev = NULL;
    while (*pp && *pp != it) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return;
    *pp = it->next;
    if (pool.tail == it)
        pool.tail = prev;
}

/* Move this thread's record from live to zombies. Under pool.lock. */
static void thread_retire(struct pthr *me)
{
    struct pthr **pp = &pool.live;
    while (*pp != me)
        pp = &(*pp)->next;
    *pp = me->next;
    me->next = pool.zombies;
    pool.zombies = me;
    pool.nthreads--;
    atomic_store(&weft__pool_threads, pool.nthreads);   /* weft_stats */
}

static void join_zombies(void)
{
    weft__lock_acquire(&pool.lock);
    struct pthr *z = pool.zombies;
    pool.zombies = NULL;
    weft__lock_release(&pool.lock);
    while (z) {
        struct pthr *next = z->next;
        weft__thread_join(z->t);
        free(z);
        z = next;
    }
}

static void *pool_main(void *arg)
{
    struct pthr *me = arg;
#ifndef _WIN32
    /* Signals are for the application's threads, not ours. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
#endif
    weft__lock_acquire(&pool.lock);
    uint64_t idle_since = weft__now();
    for (;;) {
        struct item *it = queue_pop();
        if (!it) {
            if (pool.stopping)
                break;
            uint64_t now = weft__now();
            if (now - idle_since >= pool.idle_ns)
                break;   /* idle long enough: shrink */
            uint32_t seq = atomic_load(&pool.seq);
            pool.nidle++;
            weft__lock_release(&pool.lock);
            weft__futex_wait((uint32_t *)&pool.seq, seq, (int64_t)(pool.idle_ns - (now - idle_since)));
            weft__lock_acquire(&pool.lock);
            pool.nidle--;
            continue;
        }
        it->state = ITEM_RUNNING;
        weft__lock_release(&pool.lock);

        void *ret = it->fn(it->arg);

        weft__lock_acquire(&pool.lock);
        it->ret = ret;
        it->state = ITEM_DONE;
        weft_fiber *f = it->f;
        bool wake = f && weft__wake_claim(f, 0);
        weft__lock_release(&pool.lock);
        if (wake)
            weft__ready(f);   /* from a non-worker: the global queue */
        else if (!f && it->drop)
            it->drop(ret, it->arg);   /* the caller gave up: dispose of the result */
        item_release(it);
        weft__lock_acquire(&pool.lock);
        idle_since = weft__now();
    }
    thread_retire(me);
    weft__lock_release(&pool.lock);
    return NULL;
}

/* wunlink: a cancel or deadline claimed the waiting fiber. */
static void pool_unlink(weft_fiber *f)
{
    struct item *it = f->wobj;
    weft__lock_acquire(&pool.lock);
    if (it->state == ITEM_QUEUED) {
        queue_remove(it);
        it->state = ITEM_DROPPED;
        it->f = NULL;
        atomic_fetch_sub(&it->refs, 1);   /* the pool's; the fiber still holds one */
    } else if (it->state == ITEM_RUNNING && it->intr) {
        it->f = NULL;   /* abandoned: the pool disposes of it */
    }
    weft__lock_release(&pool.lock);
}

/* Make sure a thread will take the item about to be queued: wake an idle
 * one or start one. Under pool.lock, before the item is queued (a woken or
 * new thread needs the lock to look at the queue, so it finds the item).
 * 0, or -errno when no thread serves the pool and none can be started (a
 * pid or thread limit, RLIMIT_AS, no memory): queued then, the item would
 * wait forever, so the caller returns the error instead. With threads
 * running, a failed start is no error: the item waits its turn. */
static int pool_kick(void)
{
    if (pool.nidle > 0) {
        atomic_fetch_add(&pool.seq, 1);
        weft__futex_wake((uint32_t *)&pool.seq, 1);
        return 0;
    }
    if (pool.nthreads >= pool.max)
        return 0;   /* it waits its turn */
    struct pthr *t = malloc(sizeof *t);
    int err = t ? weft__thread_start(&t->t, pool_main, t, "weft/pool") : -ENOMEM;
    if (err < 0) {
        free(t);
        return pool.nthreads > 0 ? 0 : err;   /* a running thread will get to it */
    }
    t->next = pool.live;
    pool.live = t;
    pool.nthreads++;
    atomic_store(&weft__pool_threads, pool.nthreads);   /* weft_stats */
    return 0;
}

int weft__pool_run(void *(*fn)(void *), void *arg, void **ret, bool intr,
                   void (*drop)(void *ret, void *arg))
{
    weft_fiber *self = weft__cur_fiber();
    if (!self || !weft__io) {
        void *r = fn(arg);
        if (ret)
            *ret = r;
        return 0;
    }
    int err = weft__wait_check(self);
    if (err < 0) {
        if (drop)
            drop(NULL, arg);
        return err;
    }
    struct item *it = calloc(1, sizeof *it);
    if (!it) {
        if (drop)
            drop(NULL, arg);
        return -ENOMEM;
    }
    it->fn = fn;
    it->arg = arg;
    it->drop = drop;
    it->intr = intr;
    it->f = self;
    it->state = ITEM_QUEUED;
    atomic_store(&it->refs, 2);

    join_zombies();
    weft__lock_acquire(&pool.lock);
    if (!pool.inited) {
        pool.inited = true;
        pool.max = env_num("WEFT_POOL_MAX", 64, 4096);
        pool.idle_ns = (uint64_t)env_num("WEFT_POOL_IDLE_MS", 10000, 86400000) * 1000000u;
    }
    err = pool_kick();
    if (err < 0) {
        weft__lock_release(&pool.lock);
        free(it);
        if (drop)
            drop(NULL, arg);
        return err;
    }
    if (pool.tail)
        pool.tail->next = it;
    else
        pool.head = it;
    pool.tail = it;
    weft__wait_prepare(self, WEFT_W_POOL, it, pool_unlink);
    weft__lock_release(&pool.lock);

    int r = weft__wait_park(self, -1);
    if (r < 0) {
        weft__lock_acquire(&pool.lock);
        if (it->state == ITEM_RUNNING && !intr) {
            /* fn writes into the caller's memory: wait for it */
            while (it->state != ITEM_DONE) {
                weft__wait_prepare(self, WEFT_W_POOL, it, NULL);
                weft__lock_release(&pool.lock);
                weft__wait_park_nointr(self);
                weft__lock_acquire(&pool.lock);
            }
        }
        int st = it->state;
        weft__lock_release(&pool.lock);
        if (st == ITEM_DONE)
            r = 0;   /* finished while we were being cancelled: report it */
        else if (st == ITEM_DROPPED && drop)
            drop(NULL, arg);
    }
    if (r == 0 && ret)
        *ret = it->ret;
    item_release(it);
    return r;
}

int weft_blocking(void *(*fn)(void *), void *arg, void **ret)
{
    if (!fn)
        return -EINVAL;
    return weft__pool_run(fn, arg, ret, true, NULL);
}

void weft__pool_atfork_child(void)
{
    /* Its threads are not in the child: their records and the items they
     * ran are leaked; the next weft_blocking starts afresh. */
    weft__lock_init(&pool.lock);
    pool.inited = false;
    pool.stopping = false;
    pool.head = pool.tail = NULL;
    pool.nthreads = pool.nidle = 0;
    pool.live = pool.zombies = NULL;
    atomic_store(&pool.seq, 0);
    atomic_store(&weft__pool_threads, 0);
}

void weft__pool_stop(void)
{
    weft__lock_acquire(&pool.lock);
    if (!pool.inited) {
        weft__lock_release(&pool.lock);
        return;
    }
    pool.stopping = true;
    atomic_fetch_add(&pool.seq, 1);
    weft__futex_wake((uint32_t *)&pool.seq, INT32_MAX);
    weft__lock_release(&pool.lock);
    /* Threads finish what they run (abandoned items too), see the queue
     * empty and stopping, and retire. */
    for (;;) {
        weft__lock_acquire(&pool.lock);
        bool any = pool.live != NULL;
        weft__lock_release(&pool.lock);
        join_zombies();
        if (!any)
            break;
        /* one is still running an abandoned item: look again shortly */
        uint32_t never = 1;
        weft__futex_wait(&never, 1, 1000000);
    }
    weft__lock_acquire(&pool.lock);
    pool.inited = false;
    pool.stopping = false;
    pool.head = pool.tail = NULL;
    weft__lock_release(&pool.lock);
}
