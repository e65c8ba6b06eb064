/* Mutex, condvar, semaphore and wait group: correctness on one worker and
 * across workers, cancellation and deadlines with nothing lost, hand-off
 * under starvation, bad input. */
#include "test.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

static const weft_config one = { .workers = 1 };
static const weft_config four = { .workers = 4 };

static void spawn_ok(weft_fiber **f, void *(*fn)(void *), void *arg)
{
    ASSERT_EQ(weft_spawn(f, NULL, fn, arg), 0);
}

static void join_ok(weft_fiber *f)
{
    ASSERT_EQ(weft_join(f, NULL), 0);
}

/* ---------------------------------------------------------------- mutex */

#define NCOUNT 16
#define NINCR 100000
static weft_mutex cmu = WEFT_MUTEX_INIT;
static long counter;   /* deliberately not atomic: the mutex protects it */

static void *incr(void *arg)
{
    for (int i = 0; i < NINCR; i++) {
        ASSERT_EQ(weft_mutex_lock(&cmu), 0);
        long v = counter;
        if ((i & 1023) == (int)(intptr_t)arg)
            weft_yield();   /* hold it across a switch now and then */
        counter = v + 1;
        ASSERT_EQ(weft_mutex_unlock(&cmu), 0);
    }
    return NULL;
}

static void *main_counter(void *arg)
{
    weft_fiber *f[NCOUNT];
    for (int i = 0; i < NCOUNT; i++)
        spawn_ok(&f[i], incr, (void *)(intptr_t)i);
    for (int i = 0; i < NCOUNT; i++)
        join_ok(f[i]);
    ASSERT_EQ(counter, (long)NCOUNT * NINCR);
    ASSERT_EQ(weft_mutex_destroy(&cmu), 0);
    return NULL;
}

TEST_TIMEOUT(mutex_counter_1worker, 60) { test_run_cfg(&one, main_counter, NULL); }
TEST_TIMEOUT(mutex_counter_4workers, 60) { test_run_cfg(&four, main_counter, NULL); }

static void *other_unlocks(void *arg)
{
    ASSERT_EQ(weft_mutex_unlock(arg), -EPERM);
    ASSERT_EQ(weft_mutex_trylock(arg), -EBUSY);
    return NULL;
}

static void *blocked_locker(void *arg)
{
    int r = weft_mutex_lock(arg);
    ASSERT_EQ(r, 0);
    ASSERT_EQ(weft_mutex_unlock(arg), 0);
    return NULL;
}

static void *main_mutex_errors(void *arg)
{
    weft_mutex m = WEFT_MUTEX_INIT, z;
    ASSERT_EQ(weft_mutex_init(NULL), -EINVAL);
    ASSERT_EQ(weft_mutex_lock(NULL), -EINVAL);
    ASSERT_EQ(weft_mutex_trylock(NULL), -EINVAL);
    ASSERT_EQ(weft_mutex_unlock(NULL), -EINVAL);
    ASSERT_EQ(weft_mutex_destroy(NULL), -EINVAL);
    ASSERT_EQ(weft_mutex_init(&z), 0);
    ASSERT_EQ(weft_mutex_unlock(&m), -EPERM);        /* not locked */
    ASSERT_EQ(weft_mutex_trylock(&m), 0);
    ASSERT_EQ(weft_mutex_trylock(&m), -EBUSY);
    ASSERT_EQ(weft_mutex_lock(&m), -EDEADLK);
    ASSERT_EQ(weft_mutex_destroy(&m), -EBUSY);       /* locked */
    weft_fiber *f;
    spawn_ok(&f, other_unlocks, &m);
    join_ok(f);
    spawn_ok(&f, blocked_locker, &m);
    while (weft_mutex_destroy(&m) != -EBUSY)
        ;
    weft_sleep(5000000);                             /* f queues on m */
    ASSERT_EQ(weft_mutex_unlock(&m), 0);
    join_ok(f);
    ASSERT_EQ(weft_mutex_destroy(&m), 0);
    ASSERT_EQ(weft_mutex_destroy(&z), 0);
    return NULL;
}

TEST(mutex_errors) { test_run_cfg(&one, main_mutex_errors, NULL); }

/* Waiting is -EPERM from a plain thread; signalling works. */
TEST(sync_plain_thread)
{
    weft_mutex m = WEFT_MUTEX_INIT;
    weft_cond c = WEFT_COND_INIT;
    weft_sem s = WEFT_SEM_INIT(1);
    weft_wg g = WEFT_WG_INIT;
    ASSERT_EQ(weft_mutex_lock(&m), -EPERM);
    ASSERT_EQ(weft_mutex_trylock(&m), -EPERM);
    ASSERT_EQ(weft_mutex_unlock(&m), -EPERM);
    ASSERT_EQ(weft_cond_wait(&c, &m), -EPERM);
    ASSERT_EQ(weft_cond_signal(&c), 0);
    ASSERT_EQ(weft_cond_broadcast(&c), 0);
    ASSERT_EQ(weft_sem_trywait(&s), 0);
    ASSERT_EQ(weft_sem_wait(&s), -EPERM);
    ASSERT_EQ(weft_sem_post(&s), 0);
    ASSERT_EQ(weft_wg_add(&g, 1), 0);
    ASSERT_EQ(weft_wg_wait(&g), -EPERM);
    ASSERT_EQ(weft_wg_done(&g), 0);
}

/* Cancel and deadline while blocked in lock: -ECANCELED / -ETIMEDOUT, the
 * mutex not acquired, and still usable. */
static weft_mutex hm = WEFT_MUTEX_INIT;
static atomic_int locked_ok, lock_errs;

static void *lock_until_cancelled(void *arg)
{
    int r = weft_mutex_lock(&hm);
    if (r == 0) {
        atomic_fetch_add(&locked_ok, 1);
        ASSERT_EQ(weft_mutex_unlock(&hm), 0);
    } else {
        ASSERT_EQ(r, -ECANCELED);
        ASSERT_EQ(weft_mutex_unlock(&hm), -EPERM);   /* not ours */
        atomic_fetch_add(&lock_errs, 1);
    }
    return NULL;
}

static void *lock_with_deadline(void *arg)
{
    weft_deadline(ms_from_now(20));
    ASSERT_EQ(weft_mutex_lock(&hm), -ETIMEDOUT);
    weft_deadline(-1);
    return NULL;
}

static void *main_mutex_cancel(void *arg)
{
    ASSERT_EQ(weft_mutex_lock(&hm), 0);
    weft_fiber *a, *b, *c;
    spawn_ok(&a, lock_until_cancelled, NULL);
    spawn_ok(&b, lock_with_deadline, NULL);
    spawn_ok(&c, lock_until_cancelled, NULL);
    weft_sleep(5000000);
    ASSERT_EQ(weft_cancel(a), 0);
    join_ok(a);
    join_ok(b);                 /* timed out while we held it */
    ASSERT_EQ(weft_mutex_unlock(&hm), 0);
    join_ok(c);                 /* got it after all */
    ASSERT_EQ(atomic_load(&locked_ok), 1);
    ASSERT_EQ(atomic_load(&lock_errs), 1);
    ASSERT_EQ(weft_mutex_trylock(&hm), 0);
    ASSERT_EQ(weft_mutex_unlock(&hm), 0);
    ASSERT_EQ(weft_mutex_destroy(&hm), 0);
    return NULL;
}

TEST(mutex_cancel_deadline_1worker) { test_run_cfg(&one, main_mutex_cancel, NULL); }
TEST(mutex_cancel_deadline_4workers) { test_run_cfg(&four, main_mutex_cancel, NULL); }

/* The claim race: unlocks hand the lock over (in both modes) while the
 * waiters are being cancelled and timing out. Every lock call either got
 * the lock (and released it) or failed without it; at the end the mutex is
 * free and nobody is left queued. A lock handed to a waiter whose claim was
 * lost, and never passed on, would hang the final trylock loop or the
 * holders. */
#define RACERS 32
static weft_mutex rm = WEFT_MUTEX_INIT;
static atomic_llong race_ok, race_err;
static atomic_int race_stop;

static void *racer(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    while (!atomic_load(&race_stop)) {
        seed = seed * 1103515245u + 12345u;
        if (seed % 4 == 0)
            weft_deadline(ms_from_now((seed >> 8) % 3));
        int r = weft_mutex_lock(&rm);
        weft_deadline(-1);
        if (r == 0) {
            atomic_fetch_add(&race_ok, 1);
            if (seed % 8 == 1)
                weft_sleep(1200000);   /* > 1 ms: the queue starves, hand-off mode */
            else if (seed % 8 == 2)
                weft_yield();
            ASSERT_EQ(weft_mutex_unlock(&rm), 0);
        } else if (r == -ECANCELED) {
            atomic_fetch_add(&race_err, 1);
            return NULL;
        } else {
            ASSERT_EQ(r, -ETIMEDOUT);
            atomic_fetch_add(&race_err, 1);
        }
    }
    return NULL;
}

static void *main_mutex_race(void *arg)
{
    enum { MAXF = 4096 };
    static weft_fiber *all[MAXF];
    weft_fiber *f[RACERS];
    int nall = 0;
    for (int i = 0; i < RACERS; i++)
        spawn_ok(&f[i], racer, (void *)(uintptr_t)(i * 7919 + 1));
    uint64_t end = weft_now() + 600000000ull;
    unsigned seed = 42;
    while (weft_now() < end && nall < MAXF - RACERS) {
        weft_sleep(300000);
        seed = seed * 1103515245u + 12345u;
        int i = (int)((seed >> 8) % RACERS);
        weft_cancel(f[i]);
        all[nall++] = f[i];
        spawn_ok(&f[i], racer, (void *)(uintptr_t)seed);   /* keep the pressure up */
    }
    atomic_store(&race_stop, 1);
    for (int i = 0; i < RACERS; i++)
        all[nall++] = f[i];
    for (int i = 0; i < nall; i++)
        join_ok(all[i]);
    ASSERT_EQ(weft_mutex_trylock(&rm), 0);
    ASSERT_EQ(weft_mutex_unlock(&rm), 0);
    ASSERT_EQ(weft_mutex_destroy(&rm), 0);
    ASSERT_GT(atomic_load(&race_ok), 0);
    ASSERT_GT(atomic_load(&race_err), 0);
    return NULL;
}

TEST(mutex_claim_race_4workers) { test_run_cfg(&four, main_mutex_race, NULL); }

/* No starvation: a fiber re-locking in a tight loop on one worker cannot
 * keep a waiter on another out forever; after 1 ms of waiting the lock is
 * handed to the waiter. (Without the hand-off the barger wins nearly every
 * time, as the unlock-then-lock gap is a few nanoseconds.) */
static weft_mutex sm = WEFT_MUTEX_INIT;
static atomic_int waiter_got;

/* Now and then the hog yields *holding* the lock, so that the waiter runs
 * even when it was readied onto the hog's own worker (WEFT_DEBUG_MIGRATE
 * sends it to an inbox that is never stolen from): it finds the lock taken
 * and queues again; only the hand-off rule ever gives it the lock. */
static void *hog(void *arg)
{
    uint64_t give_up = weft_now() + 10000000000ull;
    long n = 0;
    while (!atomic_load(&waiter_got)) {
        ASSERT_EQ(weft_mutex_lock(&sm), 0);
        for (volatile int k = 0; k < 2000; k++)
            ;
        if (n % 64 == 0)
            weft_yield();
        ASSERT_EQ(weft_mutex_unlock(&sm), 0);
        if (++n % 4096 == 0)
            ASSERT_LT(weft_now(), give_up);   /* starved for 10 s: broken */
    }
    return NULL;
}

static void *starved(void *arg)
{
    weft_sleep(2000000);
    ASSERT_EQ(weft_mutex_lock(&sm), 0);
    atomic_store(&waiter_got, 1);
    ASSERT_EQ(weft_mutex_unlock(&sm), 0);
    return NULL;
}

static void *main_starve(void *arg)
{
    weft_fiber *a, *b;
    spawn_ok(&a, hog, NULL);
    spawn_ok(&b, starved, NULL);
    join_ok(b);
    join_ok(a);
    return NULL;
}

TEST(mutex_hog_does_not_starve_waiter) { test_run_cfg(&(weft_config){ .workers = 2 }, main_starve, NULL); }

/* The hand-off rule, step by step on one worker: a waiter woken after
 * more than 1 ms that loses to a barger switches the mutex to starvation
 * mode, and the next unlock hands it the lock directly: the unlocker can
 * no longer take it back. */
static weft_mutex hand = WEFT_MUTEX_INIT;
static atomic_int hand_stage;

static void *hand_waiter(void *arg)
{
    atomic_store(&hand_stage, 1);
    ASSERT_EQ(weft_mutex_lock(&hand), 0);
    atomic_store(&hand_stage, 2);
    ASSERT_EQ(weft_mutex_unlock(&hand), 0);
    return NULL;
}

static void *main_handoff(void *arg)
{
    weft_fiber *w;
    ASSERT_EQ(weft_mutex_lock(&hand), 0);
    spawn_ok(&w, hand_waiter, NULL);
    while (atomic_load(&hand_stage) != 1)
        weft_yield();               /* w is queued on the mutex */
    weft_sleep(2000000);            /* ... for more than 1 ms */
    ASSERT_EQ(weft_mutex_unlock(&hand), 0);   /* normal mode: w woken to retry */
    ASSERT_EQ(weft_mutex_trylock(&hand), 0);  /* we barge in before it runs */
    weft_yield();                   /* w retries, loses, turns on starvation mode */
    ASSERT_EQ(atomic_load(&hand_stage), 1);
    ASSERT_EQ(weft_mutex_unlock(&hand), 0);   /* hands the lock to w */
    ASSERT_EQ(weft_mutex_trylock(&hand), -EBUSY);
    ASSERT_EQ(weft_mutex_unlock(&hand), -EPERM);   /* w owns it now */
    join_ok(w);
    ASSERT_EQ(atomic_load(&hand_stage), 2);
    ASSERT_EQ(weft_mutex_trylock(&hand), 0);  /* queue drained: normal mode again */
    ASSERT_EQ(weft_mutex_unlock(&hand), 0);
    ASSERT_EQ(weft_mutex_destroy(&hand), 0);
    return NULL;
}

TEST(mutex_starvation_handoff) { test_run_cfg(&one, main_handoff, NULL); }

/* The claim race, forced: the unlocker hands the lock over in starvation
 * mode while the head waiter has just been claimed by a cancel that has
 * not unlinked it yet (both wait for the mutex's queue lock, which a plain
 * thread holds meanwhile; the unlocker queued first, so it goes first).
 * The hand-off must skip the lost waiter and give the lock to the next one.
 * Reaches into sync.c's layout: state word at 0, queue lock at 4. */
#include "sched/waitq.h"

static weft_mutex cl = WEFT_MUTEX_INIT;
static atomic_int cl_queued;

static void *cl_waiter(void *arg)
{
    atomic_fetch_add(&cl_queued, 1);
    int r = weft_mutex_lock(&cl);
    if (arg) {
        ASSERT_EQ(r, -ECANCELED);
    } else {
        ASSERT_EQ(r, 0);
        ASSERT_EQ(weft_mutex_unlock(&cl), 0);
    }
    return NULL;
}

static weft_fiber *cl_victim;

/* Plain threads, so that neither depends on which worker is free. */
static void *cl_canceller(void *arg)
{
    /* the unlocker waits for the queue lock by now (slower under valgrind) */
    long ns = (long)(20000000 * test_time_scale());
    struct timespec ts = { ns / 1000000000, ns % 1000000000 };
    nanosleep(&ts, NULL);
    ASSERT_EQ(weft_cancel(cl_victim), 0);   /* claims, then waits in unlink */
    return NULL;
}

static void *cl_hold_qlock(void *arg)
{
    long ns = (long)(60000000 * test_time_scale());
    struct timespec ts = { ns / 1000000000, ns % 1000000000 };
    nanosleep(&ts, NULL);
    weft__wunlock(arg);
    return NULL;
}

static void *main_claim_lost(void *arg)
{
    _Atomic uint32_t *state = (_Atomic uint32_t *)(void *)&cl;
    weft__wordlock *qlock = (weft__wordlock *)(void *)(state + 1);
    weft_fiber *w2;
    ASSERT_EQ(weft_mutex_lock(&cl), 0);
    spawn_ok(&cl_victim, cl_waiter, (void *)1);
    while (atomic_load(&cl_queued) != 1)
        weft_yield();
    weft_sleep((uint64_t)(2000000 * test_time_scale()));
    spawn_ok(&w2, cl_waiter, NULL);
    while (atomic_load(&cl_queued) != 2)
        weft_yield();
    weft_sleep((uint64_t)(2000000 * test_time_scale()));
    atomic_fetch_or(state, 8);   /* starvation mode: unlock hands over */
    weft__wlock(qlock);
    pthread_t t, c;
    ASSERT_EQ(pthread_create(&t, NULL, cl_hold_qlock, (void *)qlock), 0);
    ASSERT_EQ(pthread_create(&c, NULL, cl_canceller, NULL), 0);
    ASSERT_EQ(weft_mutex_unlock(&cl), 0);   /* blocks this worker on the queue lock */
    pthread_join(t, NULL);
    pthread_join(c, NULL);
    join_ok(cl_victim);
    weft_deadline(ms_from_now((unsigned)(2000 * test_time_scale())));
    ASSERT_EQ(weft_join(w2, NULL), 0);   /* a leaked hand-off would hang it */
    weft_deadline(-1);
    ASSERT_EQ(weft_mutex_trylock(&cl), 0);
    ASSERT_EQ(weft_mutex_unlock(&cl), 0);
    return NULL;
}

TEST(mutex_handoff_claim_lost) { test_run_cfg(&four, main_claim_lost, NULL); }

/* The word lock's unlock is a plain store followed by a read of
 * `sleepers` (waitq.h). If that read could miss a sleeper, or the sleeper
 * could miss the store, a taker would sleep for good and the test would
 * hang. Holders now and then keep the lock for 100 us, long enough for the
 * others to spin out and sleep; `slept` checks that they did. Run with the
 * membarrier split and with plain fences on both sides. */
#define WL_THREADS 4
#define WL_ROUNDS 3000
static weft__wordlock wl;
static long wl_count;
static atomic_int wl_slept;

static void *wl_thread(void *arg)
{
    for (int i = 0; i < WL_ROUNDS; i++) {
        weft__wlock(&wl);
        wl_count++;
        if (i % 50 == 0) {
            /* Sleep, so that one-thread-at-a-time valgrind runs the
             * others meanwhile; then wait out the rest by the clock, since
             * Windows' sleeps are whole milliseconds and a 100 us one
             * returns at once. */
            uint64_t until = weft_now() + 100000;
            struct timespec ts = { 0, 100000 };
            nanosleep(&ts, NULL);
            while (weft_now() < until)
                ;
            if (atomic_load_explicit(&wl.sleepers, memory_order_relaxed))
                atomic_fetch_add(&wl_slept, 1);
        }
        weft__wunlock(&wl);
    }
    return arg;
}

static void wordlock_run(void)
{
    pthread_t t[WL_THREADS];
    for (int i = 0; i < WL_THREADS; i++)
        ASSERT_EQ(pthread_create(&t[i], NULL, wl_thread, NULL), 0);
    for (int i = 0; i < WL_THREADS; i++)
        ASSERT_EQ(pthread_join(t[i], NULL), 0);
    ASSERT_EQ(wl_count, (long)WL_THREADS * WL_ROUNDS);
    ASSERT_EQ(atomic_load(&wl.sleepers), 0);
    ASSERT_GT(atomic_load(&wl_slept), 0);
}

TEST(wordlock_sleepers_always_woken) { wordlock_run(); }

TEST(wordlock_sleepers_always_woken_fences)
{
    weft__membarrier = 0;   /* this test's own process, before its threads */
    wordlock_run();
}

/* ----------------------------------------------------------------- cond */

#define QCAP 8
#define NPROD 4
#define NCONS 4
#define PER_PROD 20000
static weft_mutex qm = WEFT_MUTEX_INIT;
static weft_cond not_empty = WEFT_COND_INIT, not_full = WEFT_COND_INIT;
static long q[QCAP];
static int qhead, qlen, producers_left = NPROD;
static atomic_llong consumed_sum, consumed_n;

static void *producer(void *arg)
{
    long base = (long)(intptr_t)arg * PER_PROD;
    for (long i = 0; i < PER_PROD; i++) {
        ASSERT_EQ(weft_mutex_lock(&qm), 0);
        while (qlen == QCAP)
            ASSERT_EQ(weft_cond_wait(&not_full, &qm), 0);
        q[(qhead + qlen++) % QCAP] = base + i;
        ASSERT_EQ(weft_cond_signal(&not_empty), 0);
        ASSERT_EQ(weft_mutex_unlock(&qm), 0);
    }
    ASSERT_EQ(weft_mutex_lock(&qm), 0);
    if (--producers_left == 0)
        ASSERT_EQ(weft_cond_broadcast(&not_empty), 0);
    ASSERT_EQ(weft_mutex_unlock(&qm), 0);
    return NULL;
}

static void *consumer(void *arg)
{
    for (;;) {
        ASSERT_EQ(weft_mutex_lock(&qm), 0);
        while (qlen == 0 && producers_left > 0)
            ASSERT_EQ(weft_cond_wait(&not_empty, &qm), 0);
        if (qlen == 0) {
            ASSERT_EQ(weft_mutex_unlock(&qm), 0);
            return NULL;
        }
        long v = q[qhead];
        qhead = (qhead + 1) % QCAP;
        qlen--;
        ASSERT_EQ(weft_cond_signal(&not_full), 0);
        ASSERT_EQ(weft_mutex_unlock(&qm), 0);
        atomic_fetch_add(&consumed_sum, v);
        atomic_fetch_add(&consumed_n, 1);
    }
}

static void *main_prodcons(void *arg)
{
    weft_fiber *p[NPROD], *c[NCONS];
    for (int i = 0; i < NCONS; i++)
        spawn_ok(&c[i], consumer, NULL);
    for (int i = 0; i < NPROD; i++)
        spawn_ok(&p[i], producer, (void *)(intptr_t)i);
    for (int i = 0; i < NPROD; i++)
        join_ok(p[i]);
    for (int i = 0; i < NCONS; i++)
        join_ok(c[i]);
    long long n = (long long)NPROD * PER_PROD;
    ASSERT_EQ(atomic_load(&consumed_n), n);
    ASSERT_EQ(atomic_load(&consumed_sum), n * (n - 1) / 2);
    ASSERT_EQ(weft_cond_destroy(&not_empty), 0);
    ASSERT_EQ(weft_cond_destroy(&not_full), 0);
    return NULL;
}

TEST(cond_prodcons_1worker) { test_run_cfg(&one, main_prodcons, NULL); }
TEST(cond_prodcons_4workers) { test_run_cfg(&four, main_prodcons, NULL); }

/* signal wakes in FIFO order */
static weft_mutex om = WEFT_MUTEX_INIT;
static weft_cond oc = WEFT_COND_INIT;
static int order[3], norder, ready_n;

static void *ordered_waiter(void *arg)
{
    ASSERT_EQ(weft_mutex_lock(&om), 0);
    ready_n++;
    ASSERT_EQ(weft_cond_wait(&oc, &om), 0);
    order[norder++] = (int)(intptr_t)arg;
    ASSERT_EQ(weft_mutex_unlock(&om), 0);
    return NULL;
}

static void *main_cond_fifo(void *arg)
{
    weft_fiber *f[3];
    for (int i = 0; i < 3; i++) {
        spawn_ok(&f[i], ordered_waiter, (void *)(intptr_t)i);
        while (1) {   /* queue them in a known order */
            ASSERT_EQ(weft_mutex_lock(&om), 0);
            int n = ready_n;
            ASSERT_EQ(weft_mutex_unlock(&om), 0);
            if (n == i + 1)
                break;
            weft_yield();
        }
    }
    ASSERT_EQ(weft_cond_destroy(&oc), -EBUSY);
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(weft_mutex_lock(&om), 0);
        ASSERT_EQ(weft_cond_signal(&oc), 0);
        ASSERT_EQ(weft_mutex_unlock(&om), 0);
        join_ok(f[i]);   /* the oldest waiter, and only it, woke */
    }
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(order[i], i);
    ASSERT_EQ(weft_cond_destroy(&oc), 0);
    return NULL;
}

TEST(cond_signal_fifo) { test_run_cfg(&four, main_cond_fifo, NULL); }

/* Cancel and deadline in cond_wait: the error comes back with the mutex
 * held again, even when someone else holds it at the time of the cancel. */
static weft_mutex cm2 = WEFT_MUTEX_INIT;
static weft_cond cc2 = WEFT_COND_INIT;
static atomic_int cw_state;

static void *cond_cancelled(void *arg)
{
    ASSERT_EQ(weft_mutex_lock(&cm2), 0);
    atomic_store(&cw_state, 1);
    int r = weft_cond_wait(&cc2, &cm2);
    ASSERT_EQ(r, -ECANCELED);
    atomic_store(&cw_state, 2);
    ASSERT_EQ(weft_mutex_unlock(&cm2), 0);      /* we hold it again */
    ASSERT_EQ(weft_cancelled(), 1);             /* still sticky */
    ASSERT_EQ(weft_mutex_lock(&cm2), 0);        /* free: acquired despite the cancel */
    ASSERT_EQ(weft_cond_wait(&cc2, &cm2), -ECANCELED);   /* m never released */
    ASSERT_EQ(weft_mutex_unlock(&cm2), 0);
    return NULL;
}

static void *cond_deadline(void *arg)
{
    ASSERT_EQ(weft_mutex_lock(&cm2), 0);
    weft_deadline(ms_from_now(10));
    ASSERT_EQ(weft_cond_wait(&cc2, &cm2), -ETIMEDOUT);
    ASSERT_EQ(weft_mutex_unlock(&cm2), 0);
    weft_deadline(-1);
    return NULL;
}

static void *main_cond_cancel(void *arg)
{
    weft_fiber *f;
    spawn_ok(&f, cond_cancelled, NULL);
    while (atomic_load(&cw_state) != 1)
        weft_yield();
    ASSERT_EQ(weft_mutex_lock(&cm2), 0);   /* f is parked in the wait */
    ASSERT_EQ(weft_cancel(f), 0);
    weft_sleep(10000000);
    ASSERT_EQ(atomic_load(&cw_state), 1);  /* cannot return without the mutex */
    ASSERT_EQ(weft_mutex_unlock(&cm2), 0);
    join_ok(f);
    ASSERT_EQ(atomic_load(&cw_state), 2);
    spawn_ok(&f, cond_deadline, NULL);
    join_ok(f);
    ASSERT_EQ(weft_cond_destroy(&cc2), 0);
    ASSERT_EQ(weft_mutex_destroy(&cm2), 0);
    return NULL;
}

TEST(cond_cancel_deadline_1worker) { test_run_cfg(&one, main_cond_cancel, NULL); }
TEST(cond_cancel_deadline_4workers) { test_run_cfg(&four, main_cond_cancel, NULL); }

static void *main_cond_errors(void *arg)
{
    weft_cond c;
    weft_mutex m = WEFT_MUTEX_INIT;
    ASSERT_EQ(weft_cond_init(NULL), -EINVAL);
    ASSERT_EQ(weft_cond_init(&c), 0);
    ASSERT_EQ(weft_cond_wait(NULL, &m), -EINVAL);
    ASSERT_EQ(weft_cond_wait(&c, NULL), -EINVAL);
    ASSERT_EQ(weft_cond_wait(&c, &m), -EPERM);   /* m not held */
    ASSERT_EQ(weft_cond_signal(NULL), -EINVAL);
    ASSERT_EQ(weft_cond_broadcast(NULL), -EINVAL);
    ASSERT_EQ(weft_cond_destroy(NULL), -EINVAL);
    ASSERT_EQ(weft_cond_destroy(&c), 0);
    return NULL;
}

TEST(cond_errors) { test_run_cfg(&one, main_cond_errors, NULL); }

/* ------------------------------------------------------------ semaphore */

static void *main_sem_basic(void *arg)
{
    weft_sem s = WEFT_SEM_INIT(3), t;
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(weft_sem_trywait(&s), 0);
    ASSERT_EQ(weft_sem_trywait(&s), -EAGAIN);
    ASSERT_EQ(weft_sem_post(&s), 0);
    ASSERT_EQ(weft_sem_wait(&s), 0);
    ASSERT_EQ(weft_sem_init(&t, UINT_MAX), 0);
    ASSERT_EQ(weft_sem_post(&t), -EOVERFLOW);
    ASSERT_EQ(weft_sem_trywait(&t), 0);
    ASSERT_EQ(weft_sem_post(&t), 0);
    ASSERT_EQ(weft_sem_init(NULL, 1), -EINVAL);
    ASSERT_EQ(weft_sem_wait(NULL), -EINVAL);
    ASSERT_EQ(weft_sem_trywait(NULL), -EINVAL);
    ASSERT_EQ(weft_sem_post(NULL), -EINVAL);
    weft_deadline(ms_from_now(5));
    ASSERT_EQ(weft_sem_wait(&s), -ETIMEDOUT);
    weft_deadline(-1);
    return NULL;
}

TEST(sem_basic) { test_run_cfg(&one, main_sem_basic, NULL); }

/* Units are conserved while waiters are cancelled and time out: every
 * post either went to a waiter that returned 0 or stayed in the count. */
#define SEMW 64
static weft_sem cs = WEFT_SEM_INIT(0);
static atomic_llong sem_got;

static void *sem_waiter(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    for (;;) {
        seed = seed * 1103515245u + 12345u;
        if (seed % 3 == 0)
            weft_deadline(ms_from_now(seed % 2));
        int r = weft_sem_wait(&cs);
        weft_deadline(-1);
        if (r == 0)
            atomic_fetch_add(&sem_got, 1);
        else if (r == -ECANCELED)
            return NULL;
        else
            ASSERT_EQ(r, -ETIMEDOUT);
    }
}

static void *main_sem_cancel(void *arg)
{
    weft_fiber *f[SEMW];
    for (int i = 0; i < SEMW; i++)
        spawn_ok(&f[i], sem_waiter, (void *)(uintptr_t)(i + 1));
    long posts = 0;
    for (int round = 0; round < 2000; round++) {
        for (int k = 0; k < 5; k++, posts++)
            ASSERT_EQ(weft_sem_post(&cs), 0);
        if (round % 50 == 49)
            weft_cancel(f[(round / 50) % SEMW]);
        weft_yield();
    }
    for (int i = 0; i < SEMW; i++)
        weft_cancel(f[i]);
    for (int i = 0; i < SEMW; i++)
        join_ok(f[i]);
    long left = 0;
    while (weft_sem_trywait(&cs) == 0)
        left++;
    ASSERT_EQ(atomic_load(&sem_got) + left, posts);
    return NULL;
}

TEST(sem_cancel_conserves_1worker) { test_run_cfg(&one, main_sem_cancel, NULL); }
TEST(sem_cancel_conserves_4workers) { test_run_cfg(&four, main_sem_cancel, NULL); }

/* ----------------------------------------------------------- wait group */

static weft_wg wg = WEFT_WG_INIT;
static atomic_int wg_done_n;

static void *wg_worker(void *arg)
{
    weft_sleep((uint64_t)(intptr_t)arg * 100000);
    atomic_fetch_add(&wg_done_n, 1);
    ASSERT_EQ(weft_wg_done(&wg), 0);
    return NULL;
}

static void *wg_waiter(void *arg)
{
    ASSERT_EQ(weft_wg_wait(&wg), 0);
    ASSERT_EQ(atomic_load(&wg_done_n), (int)(intptr_t)arg);
    return NULL;
}

static void *wg_cancelled(void *arg)
{
    ASSERT_EQ(weft_wg_wait(&wg), -ECANCELED);
    return NULL;
}

static void *main_wg(void *arg)
{
    ASSERT_EQ(weft_wg_wait(&wg), 0);   /* zero: no wait */
    for (int round = 1; round <= 3; round++) {   /* reusable after reaching zero */
        atomic_store(&wg_done_n, 0);
        int n = 10 * round;
        ASSERT_EQ(weft_wg_add(&wg, n), 0);
        weft_fiber *w[4], *x;
        for (int i = 0; i < 4; i++)
            spawn_ok(&w[i], wg_waiter, (void *)(intptr_t)n);
        spawn_ok(&x, wg_cancelled, NULL);
        weft_yield();
        ASSERT_EQ(weft_cancel(x), 0);
        join_ok(x);
        for (int i = 0; i < n; i++) {
            weft_fiber *f;
            ASSERT_EQ(weft_spawn(&f, &(weft_attr){ .flags = WEFT_DETACHED }, wg_worker,
                                 (void *)(intptr_t)i), 0);
        }
        ASSERT_EQ(weft_wg_wait(&wg), 0);
        ASSERT_EQ(atomic_load(&wg_done_n), n);
        for (int i = 0; i < 4; i++)
            join_ok(w[i]);
    }
    ASSERT_EQ(weft_wg_add(&wg, -1), -EINVAL);   /* below zero: refused, unchanged */
    ASSERT_EQ(weft_wg_add(&wg, 2), 0);
    ASSERT_EQ(weft_wg_add(&wg, -3), -EINVAL);
    ASSERT_EQ(weft_wg_add(&wg, -2), 0);
    ASSERT_EQ(weft_wg_done(&wg), -EINVAL);
    ASSERT_EQ(weft_wg_add(NULL, 1), -EINVAL);
    ASSERT_EQ(weft_wg_wait(NULL), -EINVAL);
    ASSERT_EQ(weft_wg_done(NULL), -EINVAL);
    ASSERT_EQ(weft_wg_init(NULL), -EINVAL);
    ASSERT_EQ(weft_wg_add(&wg, 1), 0);
    weft_deadline(ms_from_now(5));
    ASSERT_EQ(weft_wg_wait(&wg), -ETIMEDOUT);
    weft_deadline(-1);
    ASSERT_EQ(weft_wg_done(&wg), 0);
    return NULL;
}

TEST(wg_1worker) { test_run_cfg(&one, main_wg, NULL); }
TEST(wg_4workers) { test_run_cfg(&four, main_wg, NULL); }

/* wg_done from a plain thread releases a fiber's wait */
static void *thread_done(void *arg)
{
    struct timespec ts = { 0, 5000000 };
    nanosleep(&ts, NULL);
    ASSERT_EQ(weft_wg_done(arg), 0);
    return NULL;
}

static void *main_wg_thread(void *arg)
{
    weft_wg g = WEFT_WG_INIT;
    ASSERT_EQ(weft_wg_add(&g, 1), 0);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, thread_done, &g), 0);
    ASSERT_EQ(weft_wg_wait(&g), 0);
    pthread_join(t, NULL);
    return NULL;
}

TEST(wg_done_from_thread) { test_run_cfg(&four, main_wg_thread, NULL); }
/* The only worker sleeps (in the poller) while the thread is about to
 * wake the fiber: nobody else could take the wake-up. */
TEST(wg_done_from_thread_1worker) { test_run_cfg(&one, main_wg_thread, NULL); }
