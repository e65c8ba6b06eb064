/*
 * The scheduler through the public API: life cycle and its errors, yields,
 * sleeps in order, cancellation, deadlines, shutdown with live fibers,
 * several workers, pinned fibers, forced migration and errno.
 */
#define _GNU_SOURCE
#include "test.h"


#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#define MS 1000000ull

static weft_config one_worker = { .workers = 1 };
static weft_config two_workers = { .workers = 2 };
static weft_config four_workers = { .workers = 4 };

static void *nop(void *arg) { return arg; }

/* ------------------------------------------------------------ bad input */

static void *main_bad_spawn(void *arg)
{
    weft_fiber *f;
    weft_attr a = { 0 };
    ASSERT_EQ(weft_spawn(&f, NULL, NULL, NULL), -EINVAL);
    ASSERT_EQ(weft_spawn(NULL, NULL, nop, NULL), -EINVAL);      /* joinable needs a handle */
    a.flags = 1u << 7;
    ASSERT_EQ(weft_spawn(&f, &a, nop, NULL), -EINVAL);
    a.flags = 0;
    a.stack_size = 1;
    ASSERT_EQ(weft_spawn(&f, &a, nop, NULL), -EINVAL);
    a.stack_size = (size_t)1 << 40;
    ASSERT_EQ(weft_spawn(&f, &a, nop, NULL), -EINVAL);
    /* nothing was lost: the runtime still runs fibers */
    ASSERT_EQ(weft_spawn(&f, NULL, nop, (void *)5), 0);
    void *r;
    ASSERT_EQ(weft_join(f, &r), 0);
    ASSERT_PTR_EQ(r, (void *)5);
    return arg;
}

TEST(sched_spawn_bad_input)
{
    test_run(main_bad_spawn, NULL);
}

static void *main_join_errors(void *arg)
{
    weft_fiber *f, *d;
    ASSERT_EQ(weft_join(weft_self(), NULL), -EDEADLK);
    ASSERT_EQ(weft_join(NULL, NULL), -EINVAL);
    ASSERT_EQ(weft_detach(NULL), -EINVAL);
    ASSERT_EQ(weft_cancel(NULL), -EINVAL);

    ASSERT_EQ(weft_spawn(&d, NULL, nop, NULL), 0);
    ASSERT_EQ(weft_detach(d), 0);
    ASSERT_EQ(weft_detach(d), -EINVAL);
    ASSERT_EQ(weft_join(d, NULL), -EINVAL);

    ASSERT_EQ(weft_spawn(&f, NULL, nop, NULL), 0);
    weft_yield();                       /* let it finish: join of a dead fiber */
    ASSERT_EQ(weft_join(f, NULL), 0);
    ASSERT_EQ(weft_join(f, NULL), -EINVAL);   /* already joined (memory not reused yet) */
    return arg;
}

TEST(sched_join_errors)
{
    test_run_cfg(&one_worker, main_join_errors, NULL);
}

static void *main_nested(void *arg)
{
    ASSERT_EQ(weft_run(NULL, nop, NULL, NULL), -EBUSY);
    return arg;
}

TEST(sched_outside_and_nested)
{
    weft_fiber *f;
    ASSERT_EQ(weft_spawn(&f, NULL, nop, NULL), -EPERM);
    ASSERT(weft_self() == NULL);
    ASSERT_EQ(weft_worker_id(), -1);
    ASSERT_EQ(weft_deadline(5), -EPERM);
    ASSERT_EQ(weft_run(NULL, NULL, NULL, NULL), -EINVAL);
    weft_config bad = { .flags = 3 };
    ASSERT_EQ(weft_run(&bad, nop, NULL, NULL), -EINVAL);
    weft_config badstack = { .stack_size = 100 };
    ASSERT_EQ(weft_run(&badstack, nop, NULL, NULL), -EINVAL);
    test_run(main_nested, NULL);
    /* runs again afterwards, many times */
    for (int i = 0; i < 20; i++)
        ASSERT_PTR_EQ(test_run(nop, (void *)(intptr_t)i), (void *)(intptr_t)i);
}

/* --------------------------------------------------------- ids and names */

static void *main_names(void *arg)
{
    weft_fiber *a, *b;
    weft_attr at = { .name = "a-fiber-with-a-name-much-longer-than-31-bytes" };
    ASSERT_EQ(weft_spawn(&a, &at, nop, NULL), 0);
    ASSERT_EQ(weft_spawn(&b, NULL, nop, NULL), 0);
    ASSERT_STR_EQ(weft_name(a), "a-fiber-with-a-name-much-longer");
    ASSERT_STR_EQ(weft_name(b), "");
    ASSERT_STR_EQ(weft_name(weft_self()), "main");
    ASSERT_STR_EQ(weft_name(NULL), "");
    ASSERT_EQ(weft_id(NULL), 0);
    ASSERT_GT(weft_id(b), weft_id(a));
    ASSERT_GT(weft_id(a), weft_id(weft_self()));
    weft_join(a, NULL);
    weft_join(b, NULL);
    return arg;
}

TEST(sched_ids_and_names)
{
    test_run(main_names, NULL);
}

/* ------------------------------------------------------------- yielding */

static char order[64];
static _Atomic int order_n;

static void *yielder(void *arg)
{
    for (int i = 0; i < 3; i++) {
        order[atomic_fetch_add(&order_n, 1)] = *(char *)arg;
        weft_yield();
    }
    return NULL;
}

static void *main_yield(void *arg)
{
    weft_fiber *a, *b;
    weft_spawn(&a, NULL, yielder, "a");
    weft_spawn(&b, NULL, yielder, "b");
    weft_join(a, NULL);
    weft_join(b, NULL);
    return arg;
}

TEST(sched_yield_round_robin)
{
    atomic_store(&order_n, 0);
    test_run_cfg(&one_worker, main_yield, NULL);
    order[atomic_load(&order_n)] = 0;
    ASSERT_STR_EQ(order, "bababa");   /* the newest spawn runs first (next slot) */
}

/* --------------------------------------------------------------- sleeps */

/* Each fiber sleeps until an absolute time fixed before any of them runs,
 * 30 ms apart, so the order cannot depend on when each got to run. */
static uint64_t sleep_base;

static void *sleeper(void *arg)
{
    uint64_t k = (uint64_t)(uintptr_t)arg;
    uint64_t until = sleep_base + k * (uint64_t)(30 * MS * test_time_scale());
    uint64_t now = weft_now();
    ASSERT_LT(now, until);   /* the fiber started before its time */
    ASSERT_EQ(weft_sleep(until - now), 0);
    ASSERT_GE(weft_now(), until);
    order[atomic_fetch_add(&order_n, 1)] = (char)('0' + k);
    return NULL;
}

static void *main_sleep_order(void *arg)
{
    weft_fiber *f[5];
    static const int k[5] = { 5, 1, 4, 2, 3 };
    sleep_base = weft_now() + (uint64_t)(50 * MS * test_time_scale());
    for (int i = 0; i < 5; i++)
        weft_spawn(&f[i], NULL, sleeper, (void *)(uintptr_t)k[i]);
    for (int i = 0; i < 5; i++)
        weft_join(f[i], NULL);
    return arg;
}

TEST(sched_sleep_wakes_in_order)
{
    atomic_store(&order_n, 0);
    test_run_cfg(&two_workers, main_sleep_order, NULL);
    order[atomic_load(&order_n)] = 0;
    ASSERT_STR_EQ(order, "12345");
}

/* Many short sleeps across workers: a lost wake-up hangs (and times out). */
static void *short_sleeps(void *arg)
{
    for (int i = 0; i < 200; i++)
        ASSERT_EQ(weft_sleep(1000 + (uint64_t)(i % 7) * 1000), 0);
    return arg;
}

static void *main_many_sleeps(void *arg)
{
    weft_fiber *f[200];
    for (int i = 0; i < 200; i++)
        ASSERT_EQ(weft_spawn(&f[i], NULL, short_sleeps, NULL), 0);
    for (int i = 0; i < 200; i++)
        ASSERT_EQ(weft_join(f[i], NULL), 0);
    return arg;
}

TEST(sched_no_lost_wakeups_sleep)
{
    test_run_cfg(&four_workers, main_many_sleeps, NULL);
}

/* A thousand timers in one worker's heap (five levels), a third of them
 * taken out of the middle (cancelled) before they are due: every survivor
 * wakes, none early, and none after a timer due well after its own had
 * already fired (a heap whose order broke lets a timer wait behind later
 * ones, by hundreds of milliseconds here). The wake time is when the fiber
 * ran, not when its timer fired: the timers are spaced so that even under
 * TSan the worker keeps up, and the woken fibers never queue long enough
 * to overtake each other by the margin. */
#define HEAP_FIBERS 1000
#define HEAP_STEP_NS 400000ull   /* due times 0.4 ms apart: 400 ms in all */
static uint64_t heap_due[HEAP_FIBERS], heap_woke[HEAP_FIBERS];
static int heap_res[HEAP_FIBERS];
static atomic_size_t heap_at_gate, heap_armed;
static weft_wg heap_gate;

static void *heap_sleeper(void *arg)
{
    size_t i = (size_t)arg;
    atomic_fetch_add(&heap_at_gate, 1);
    ASSERT_EQ(weft_wg_wait(&heap_gate), 0);   /* the due times are set meanwhile */
    atomic_fetch_add(&heap_armed, 1);   /* one worker: it parks before anyone reads this */
    uint64_t now = weft_now();
    heap_res[i] = heap_due[i] > now ? weft_sleep(heap_due[i] - now) : 0;
    heap_woke[i] = weft_now();
    return NULL;
}

static void *main_timer_heap(void *arg)
{
    static weft_fiber *f[HEAP_FIBERS];
    weft_attr a = { .stack_size = 16 << 10 };
    atomic_store(&heap_at_gate, 0);
    atomic_store(&heap_armed, 0);
    ASSERT_EQ(weft_wg_add(&heap_gate, 1), 0);
    uint64_t t0 = weft_now();
    for (size_t i = 0; i < HEAP_FIBERS; i++)
        ASSERT_EQ(weft_spawn(&f[i], &a, heap_sleeper, (void *)i), 0);
    while (atomic_load(&heap_at_gate) < HEAP_FIBERS)
        weft_yield();
    /* Arming runs every fiber once more, as getting to the gate did: give
     * it twice that long before the first is due (TSan is slow at both). */
    uint64_t base = weft_now() + 2 * (weft_now() - t0) + (uint64_t)(300 * MS * test_time_scale());
    for (size_t i = 0; i < HEAP_FIBERS; i++) {
        /* a fixed shuffle of the due times: 7919 is prime, so i -> 7919 i
         * mod HEAP_FIBERS is a permutation */
        heap_due[i] = base + (uint64_t)((i * 7919) % HEAP_FIBERS) * HEAP_STEP_NS;
    }
    ASSERT_EQ(weft_wg_done(&heap_gate), 0);
    while (atomic_load(&heap_armed) < HEAP_FIBERS)
        weft_yield();   /* until every sleeper has armed its timer */
    ASSERT_LT(weft_now(), base);
    for (size_t i = 0; i < HEAP_FIBERS; i += 3)
        ASSERT_EQ(weft_cancel(f[i]), 0);
    for (size_t i = 0; i < HEAP_FIBERS; i++)
        ASSERT_EQ(weft_join(f[i], NULL), 0);

    /* by due time: the latest wake-up seen so far must never be far ahead */
    static size_t by_due[HEAP_FIBERS];
    for (size_t i = 0; i < HEAP_FIBERS; i++)
        by_due[(i * 7919) % HEAP_FIBERS] = i;
    uint64_t margin = (uint64_t)(30 * MS * test_time_scale()), latest = 0;
    size_t woke = 0;
    for (size_t k = 0; k < HEAP_FIBERS; k++) {
        size_t i = by_due[k];
        if (i % 3 == 0) {
            ASSERT_EQ(heap_res[i], -ECANCELED);
            continue;
        }
        ASSERT_EQ(heap_res[i], 0);
        ASSERT_GE(heap_woke[i], heap_due[i]);
        ASSERT_GE(heap_woke[i] + margin, latest);
        if (heap_woke[i] > latest)
            latest = heap_woke[i];
        woke++;
    }
    ASSERT_EQ(woke, (size_t)(HEAP_FIBERS - (HEAP_FIBERS + 2) / 3));
    return arg;
}

TEST(sched_timer_heap_many_in_order)
{
    test_run_cfg(&one_worker, main_timer_heap, NULL);
}

/* ---------------------------------------------------------- cancellation */

static void *sleep_forever(void *arg)
{
    int r = weft_sleep(1000000 * MS);
    *(int *)arg = r;
    /* sticky: every later blocking call is cancelled too */
    ASSERT_EQ(weft_sleep(1), -ECANCELED);
    ASSERT_EQ(weft_cancelled(), 1);
    return NULL;
}

static void *main_cancel(void *arg)
{
    weft_fiber *f;
    int r = 1;
    ASSERT_EQ(weft_cancelled(), 0);
    ASSERT_EQ(weft_spawn(&f, NULL, sleep_forever, &r), 0);
    weft_sleep(5 * MS);
    ASSERT_EQ(weft_cancel(f), 0);
    ASSERT_EQ(weft_join(f, NULL), 0);
    ASSERT_EQ(r, -ECANCELED);
    return arg;
}

TEST(sched_cancel_sleep)
{
    test_run_cfg(&two_workers, main_cancel, NULL);
}

/* Cancel arriving before the fiber blocks: its first blocking call fails. */
static void *main_cancel_before(void *arg)
{
    weft_fiber *f;
    int r = 1;
    ASSERT_EQ(weft_spawn(&f, NULL, sleep_forever, &r), 0);
    ASSERT_EQ(weft_cancel(f), 0);     /* it has not run yet */
    ASSERT_EQ(weft_join(f, NULL), 0);
    ASSERT_EQ(r, -ECANCELED);
    return arg;
}

TEST(sched_cancel_before_block)
{
    test_run_cfg(&one_worker, main_cancel_before, NULL);
}

/* A joiner cancelled while waiting: -ECANCELED, the target stays joinable. */
static weft_fiber *join_target;

static void *joiner(void *arg)
{
    *(int *)arg = weft_join(join_target, NULL);
    return NULL;
}

static void *main_cancel_join(void *arg)
{
    weft_fiber *j;
    int r = 1;
    ASSERT_EQ(weft_spawn(&join_target, NULL, sleep_forever, &(int){ 0 }), 0);
    ASSERT_EQ(weft_spawn(&j, NULL, joiner, &r), 0);
    weft_sleep(5 * MS);
    weft_cancel(j);
    ASSERT_EQ(weft_join(j, NULL), 0);
    ASSERT_EQ(r, -ECANCELED);
    weft_cancel(join_target);
    ASSERT_EQ(weft_join(join_target, NULL), 0);   /* still joinable, by us */
    return arg;
}

TEST(sched_cancel_join)
{
    test_run_cfg(&two_workers, main_cancel_join, NULL);
}

/* Cancel from a plain OS thread. */
static void *canceller_thread(void *arg)
{
    usleep(10000);
    weft_cancel(arg);
    return NULL;
}

static void *main_cancel_thread(void *arg)
{
    weft_fiber *f;
    int r = 1;
    pthread_t t;
    ASSERT_EQ(weft_spawn(&f, NULL, sleep_forever, &r), 0);
    pthread_create(&t, NULL, canceller_thread, f);
    ASSERT_EQ(weft_join(f, NULL), 0);
    pthread_join(t, NULL);
    ASSERT_EQ(r, -ECANCELED);
    return arg;
}

TEST(sched_cancel_from_thread)
{
    test_run_cfg(&two_workers, main_cancel_thread, NULL);
}

/* A cancel that lands while its target is entering a wait. The fiber
 * stores WAITING and then reads its cancel flag; weft_cancel stores the
 * flag and then reads wstate, with only the light half of a barrier on the
 * fiber's side (platform.h). Here a thread cancels each of many fibers at
 * a moment that sweeps across the fiber's way into weft_chan_recv, so
 * some cancels find it running, some waiting, and some in between. A lost
 * cancel leaves the fiber in a receive nobody answers, and its join
 * times out. */
/* valgrind runs one thread at a time, and the canceller spins */
#define CR_ROUNDS (RUNNING_ON_VALGRIND ? 200 : 3000)
static _Atomic(weft_fiber *) cr_target;
static atomic_int cr_done;   /* rounds the canceller has finished */

static void cr_spin(unsigned n)
{
    for (volatile unsigned i = 0; i < n; i++)
        ;
}

static void *cr_fiber(void *arg)
{
    weft_chan *c = arg;
    long v;
    atomic_store(&cr_target, weft_self());
    cr_spin(150);
    return (void *)(intptr_t)weft_chan_recv(c, &v);
}

static void *cr_canceller(void *arg)
{
    for (int k = 0; k < CR_ROUNDS; k++) {
        weft_fiber *f;
        while (!(f = atomic_exchange(&cr_target, NULL)))
            ;
        cr_spin((unsigned)(k * 7) % 400);   /* sweep the landing point */
        weft_cancel(f);
        atomic_store(&cr_done, k + 1);
    }
    return arg;
}

static void *main_cancel_race(void *arg)
{
    weft_chan *c = weft_chan_make(sizeof(long), 0);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, cr_canceller, NULL), 0);
    for (int k = 0; k < CR_ROUNDS; k++) {
        weft_fiber *f;
        ASSERT_EQ(weft_spawn(&f, NULL, cr_fiber, c), 0);
        while (atomic_load(&cr_done) != k + 1)   /* f stays valid until the cancel is over */
            weft_yield();
        void *r;
        weft_deadline(ms_from_now((unsigned)(5000 * test_time_scale())));
        ASSERT_EQ(weft_join(f, &r), 0);
        weft_deadline(-1);
        ASSERT_EQ((intptr_t)r, -ECANCELED);
    }
    ASSERT_EQ(pthread_join(t, NULL), 0);
    weft_chan_free(c);
    return arg;
}

TEST(sched_cancel_races_the_wait) { test_run_cfg(&one_worker, main_cancel_race, NULL); }

/* ------------------------------------------------------------- deadlines */

static void *main_deadline(void *arg)
{
    ASSERT_EQ(weft_deadline(-1), -1);
    uint64_t t0 = weft_now();
    ASSERT_EQ(weft_deadline((int64_t)(t0 + 20 * MS)), -1);
    ASSERT_EQ(weft_sleep(10000 * MS), -ETIMEDOUT);
    uint64_t took = weft_now() - t0;
    ASSERT_GE(took, 20 * MS);
    /* past the deadline every blocking call fails at once */
    ASSERT_EQ(weft_sleep(1), -ETIMEDOUT);
    weft_fiber *f;
    ASSERT_EQ(weft_spawn(&f, NULL, sleep_forever, &(int){ 0 }), 0);
    ASSERT_EQ(weft_join(f, NULL), -ETIMEDOUT);
    /* a sleep ending before the deadline is a normal sleep */
    ASSERT_EQ(weft_deadline((int64_t)(weft_now() + 1000 * MS)), (int64_t)(t0 + 20 * MS));
    ASSERT_EQ(weft_sleep(1 * MS), 0);
    ASSERT_GT(weft_deadline(-1), (int64_t)(t0 + 1000 * MS));
    ASSERT_EQ(weft_deadline(-1), -1);
    weft_cancel(f);
    ASSERT_EQ(weft_join(f, NULL), 0);
    return arg;
}

TEST(sched_deadline)
{
    test_run_cfg(&two_workers, main_deadline, NULL);
}

/* --------------------------------------------------- shutdown and leftovers */

static _Atomic int leftover_result;

static void *leftover(void *arg)
{
    atomic_store(&leftover_result, weft_sleep(1000000 * MS));
    return arg;
}

static void *main_leaves_fibers(void *arg)
{
    weft_attr a = { .flags = WEFT_DETACHED };
    weft_fiber *j;
    for (int i = 0; i < 100; i++)
        ASSERT_EQ(weft_spawn(NULL, &a, leftover, NULL), 0);
    ASSERT_EQ(weft_spawn(&j, NULL, leftover, NULL), 0);   /* joinable, never joined */
    weft_sleep(2 * MS);
    return (void *)99;
}

TEST(sched_main_return_cancels_the_rest)
{
    atomic_store(&leftover_result, 1);
    ASSERT_PTR_EQ(test_run_cfg(&two_workers, main_leaves_fibers, NULL), (void *)99);
    ASSERT_EQ(atomic_load(&leftover_result), -ECANCELED);
}

/* -------------------------------------------------------- several workers */

static _Atomic int used_workers[64];

/* CPU-bound without yielding: spins until both workers have run one of
 * these (or 20 ms, scaled for valgrind's one-thread-at-a-time), so the
 * only way both get used is that the idle one steals. */
static void *spin_a_while(void *arg)
{
    volatile uint64_t x = 0;
    int w = weft_worker_id();
    ASSERT(w >= 0 && w < 64);
    atomic_store(&used_workers[w], 1);
    uint64_t t0 = weft_now(), limit = (uint64_t)(20 * MS * test_time_scale());
    while (weft_now() - t0 < 20 * MS ||
           (weft_now() - t0 < limit && !(atomic_load(&used_workers[0]) && atomic_load(&used_workers[1]))))
        x++;
    return arg;
}

static void *main_spread(void *arg)
{
    weft_fiber *f[16];
    for (int i = 0; i < 16; i++)
        weft_spawn(&f[i], NULL, spin_a_while, NULL);
    for (int i = 0; i < 16; i++)
        weft_join(f[i], NULL);
    return arg;
}

TEST(sched_work_spreads_to_all_workers)
{
    /* valgrind runs one thread at a time, on its own schedule: whether the
     * idle worker gets to steal says nothing about ours there. */
    if (RUNNING_ON_VALGRIND) {
        test_skip("under valgrind");
    }
    test_run_cfg(&two_workers, main_spread, NULL);
    ASSERT(atomic_load(&used_workers[0]) && atomic_load(&used_workers[1]));
}

/* ------------------------------------------------ pinning and migration */

static void *pinned_body(void *arg)
{
    int home = weft_worker_id();
    for (int i = 0; i < 300; i++) {
        if (i % 2)
            weft_yield();
        else
            weft_sleep(10000);
        ASSERT_EQ(weft_worker_id(), home);
    }
    return arg;
}

static void *main_pinned(void *arg)
{
    weft_attr a = { .flags = WEFT_PINNED };
    weft_fiber *p[4], *q[4];
    for (int i = 0; i < 4; i++) {
        ASSERT_EQ(weft_spawn(&p[i], &a, pinned_body, NULL), 0);
        ASSERT_EQ(weft_spawn(&q[i], NULL, spin_a_while, NULL), 0);   /* load to steal */
    }
    for (int i = 0; i < 4; i++) {
        weft_join(p[i], NULL);
        weft_join(q[i], NULL);
    }
    return arg;
}

TEST(sched_pinned_never_migrates)
{
    test_run_cfg(&four_workers, main_pinned, NULL);
}

/* The WEFT_DEBUG_MIGRATE=1 variants run in a child process (the scheduler
 * reads the variable when weft_run starts). On Windows the child is a new
 * process that gets only the function, so each variant has its own. */
static void migrating(const weft_config *cfg, void *(*main_fn)(void *))
{
    setenv("WEFT_DEBUG_MIGRATE", "1", 1);
    test_run_cfg(cfg, main_fn, NULL);
}

static void run_migrating(void (*child)(void *))
{
    char out[4096];
    int st = test_child(child, NULL, out, sizeof out);
    if (st != 0)
        test_fail(__FILE__, __LINE__, "child status %d: %s", st, out);
}

static void pinned_migrating(void *arg) { (void)arg; migrating(&four_workers, main_pinned); }

TEST(sched_pinned_never_migrates_debug_migrate)
{
    run_migrating(pinned_migrating);
}

static void *migrating_body(void *arg)
{
    int moves = 0, last = weft_worker_id();
    for (int i = 0; i < 100; i++) {
        if (i % 2)
            /* long enough never to expire before it parks: under qemu, 1 ms
             * once did, and that sleep returned where it was */
            weft_sleep((uint64_t)(1 * MS * test_time_scale()));
        else
            weft_yield();
        int now = weft_worker_id();
        moves += now != last;
        last = now;
    }
    /* every park but yields moves it: yields requeue locally */
    ASSERT_GE(moves, 50);
    return arg;
}

static void moving_migrating(void *arg) { (void)arg; migrating(&two_workers, migrating_body); }

TEST(sched_debug_migrate_moves_at_every_park)
{
    run_migrating(moving_migrating);
}

/* errno is per fiber, across switches and migrations. glibc declares
 * __errno_location() const, so the compiler may keep &errno in a register
 * across weft_yield(): after a migration that address is another thread's
 * errno. Code that reads errno after a park must take its address afresh,
 * as these non-inlined accessors do (docs/scheduler.md, "errno and TLS"). */
__attribute__((noinline)) static void set_errno(int v) { errno = v; }
__attribute__((noinline)) static int get_errno(void) { return errno; }

static void *errno_body(void *arg)
{
    int mine = (int)(intptr_t)arg;
    for (int i = 0; i < 200; i++) {
        set_errno(mine);
        if (i % 2)
            weft_yield();
        else
            weft_sleep(1000);
        ASSERT_EQ(get_errno(), mine);
    }
    return NULL;
}

static void *main_errno(void *arg)
{
    weft_fiber *f[8];
    for (int i = 0; i < 8; i++)
        weft_spawn(&f[i], NULL, errno_body, (void *)(intptr_t)(100 + i));
    for (int i = 0; i < 8; i++)
        weft_join(f[i], NULL);
    return arg;
}

TEST(sched_errno_is_per_fiber)
{
    test_run_cfg(&four_workers, main_errno, NULL);
}

static void errno_migrating(void *arg) { (void)arg; migrating(&four_workers, main_errno); }

TEST(sched_errno_is_per_fiber_debug_migrate)
{
    run_migrating(errno_migrating);
}

/* ---------------------------------------------------- fiber-local storage */

static weft_key key;
static _Atomic int destructed;

static void dtor(void *v)
{
    atomic_fetch_add(&destructed, (int)(intptr_t)v);
}

static void *fls_body(void *arg)
{
    ASSERT(weft_getspecific(key) == NULL);
    ASSERT_EQ(weft_setspecific(key, arg), 0);
    weft_yield();
    ASSERT_PTR_EQ(weft_getspecific(key), arg);
    return NULL;
}

static void *main_fls(void *arg)
{
    ASSERT_EQ(weft_key_create(NULL, NULL), -EINVAL);
    ASSERT_EQ(weft_key_create(&key, dtor), 0);
    weft_fiber *f[4];
    for (int i = 0; i < 4; i++)
        weft_spawn(&f[i], NULL, fls_body, (void *)(intptr_t)(i + 1));
    for (int i = 0; i < 4; i++)
        weft_join(f[i], NULL);
    ASSERT_EQ(atomic_load(&destructed), 1 + 2 + 3 + 4);
    ASSERT_EQ(weft_setspecific(key + 5000, NULL), -EINVAL);
    ASSERT_EQ(weft_key_delete(key), 0);
    ASSERT_EQ(weft_key_delete(key), -EINVAL);
    ASSERT_EQ(weft_setspecific(key, (void *)1), -EINVAL);
    ASSERT(weft_getspecific(key) == NULL);
    return arg;
}

TEST(sched_fiber_local_storage)
{
    test_run_cfg(&two_workers, main_fls, NULL);
}

/* --------------------------------------------------------- idle is idle */

static void *main_idle(void *arg)
{
    weft_attr a = { .flags = WEFT_DETACHED, .stack_size = 16 << 10 };
    for (int i = 0; i < 10000; i++)
        ASSERT_EQ(weft_spawn(NULL, &a, leftover, NULL), 0);
    weft_sleep(50 * MS);   /* let them all park */
    unsigned long long t0 = test_cpu_time_us();
    weft_sleep(500 * MS);
    long us = (long)(test_cpu_time_us() - t0);
    printf("cpu while idle: %ld us over 500 ms\n", us);
    /* Not a speed check: a worker that spins while idle burns ~500 ms here. */
    ASSERT_LT(us, 250000 * test_time_scale());
    return arg;
}

TEST(sched_idle_runtime_does_not_spin)
{
    test_run_cfg(&two_workers, main_idle, NULL);
}

/* A timer armed on a worker that then runs a fiber which never parks: the
 * other worker was asleep before the timer existed, and must still come
 * and fire it. (Without a wake-up when the timer is armed, main sleeps
 * for ever: the spinner waits for main, main for its timer.) */
static _Atomic int hog_go, main_woke;

static void *hog_until_main_wakes(void *arg)
{
    atomic_store(&hog_go, 1);
    while (!atomic_load(&main_woke))
        ;   /* never parks, never yields */
    return arg;
}

static void *main_timer_busy_owner(void *arg)
{
    weft_fiber *h;
    /* Let the other worker settle into a sleep with no timer to wait for:
     * after our 20 ms sleep it wakes once more, 1 ms past our timer, finds
     * nothing, and sleeps for good; we do not park meanwhile. */
    weft_sleep(20 * MS);
    uint64_t t0 = weft_now();
    while (weft_now() - t0 < 10 * MS)
        ;
    /* Pinned: spawning it wakes nobody, and nobody can steal it. */
    weft_attr pin = { .flags = WEFT_PINNED };
    ASSERT_EQ(weft_spawn(&h, &pin, hog_until_main_wakes, NULL), 0);
    /* Our timer goes in this worker's heap; the hog runs here next. */
    ASSERT_EQ(weft_sleep(2 * MS), 0);
    atomic_store(&main_woke, 1);
    ASSERT_EQ(weft_join(h, NULL), 0);
    return arg;
}

TEST_TIMEOUT(sched_timer_fires_while_owner_busy, 20)
{
    test_run_cfg(&two_workers, main_timer_busy_owner, NULL);
}

/* A fiber left in the next slot of a worker whose fiber runs on without
 * parking is taken by the other worker (sched.c, IDLING: filling the next
 * slot wakes nobody; an idle worker watches for a stuck owner). With the
 * watchdog off, nothing else would ever move it. Both ways into the slot:
 * spawned, and readied by a channel send. */
static _Atomic int next_ran, next_worker;

static void *next_victim(void *arg)
{
    weft_chan *c = arg;
    if (c) {
        int v;
        ASSERT_EQ(weft_chan_recv(c, &v), 0);
    }
    atomic_store(&next_worker, weft_worker_id());
    atomic_store(&next_ran, 1);
    return NULL;
}

/* Spin without parking until the fiber in our next slot ran elsewhere. */
static void spin_until_next_ran(void)
{
    uint64_t t0 = weft_now();
    while (!atomic_load(&next_ran) && weft_now() - t0 < 5000 * MS)
        ;
    ASSERT_EQ(atomic_load(&next_ran), 1);
    printf("spun %llu us until it ran on the other worker\n",
           (unsigned long long)((weft_now() - t0) / 1000));
    ASSERT_NE(atomic_load(&next_worker), weft_worker_id());
}

/* Let the other worker settle into a sleep with no timer to wait for
 * (as in sched_timer_fires_while_owner_busy): after our sleep it wakes
 * once more, 1 ms past our timer, finds nothing and sleeps again while we
 * spin. From then on only its watch over our next slot can wake it. */
static void settle(void)
{
    ASSERT_EQ(weft_sleep(20 * MS), 0);
    uint64_t t0 = weft_now();
    while (weft_now() - t0 < 10 * MS)
        ;
}

static void *main_next_stuck(void *arg)
{
    weft_fiber *f;
    /* spawned */
    atomic_store(&next_ran, 0);
    settle();
    ASSERT_EQ(weft_spawn(&f, NULL, next_victim, NULL), 0);
    spin_until_next_ran();
    ASSERT_EQ(weft_join(f, NULL), 0);
    /* readied: it waits in recv (on either worker); our send finds it
     * waiting, readies it into our next slot and returns at once. Not
     * under WEFT_DEBUG_MIGRATE, which readies every fiber into the inbox
     * of the worker after the one it parked on instead: that may be ours,
     * and an inbox is never stolen from (like a pinned fiber's). */
    const char *dm = getenv("WEFT_DEBUG_MIGRATE");
    if (dm && *dm && strcmp(dm, "0") != 0)
        return arg;
    weft_chan *c = weft_chan_make(sizeof(int), 0);
    ASSERT(c != NULL);
    atomic_store(&next_ran, 0);
    ASSERT_EQ(weft_spawn(&f, NULL, next_victim, c), 0);
    settle();   /* it runs, and parks in recv */
    int one = 1;
    ASSERT_EQ(weft_chan_send(c, &one), 0);
    spin_until_next_ran();
    ASSERT_EQ(weft_join(f, NULL), 0);
    weft_chan_free(c);
    return arg;
}

TEST_TIMEOUT(sched_next_slot_of_busy_worker_is_taken, 20)
{
    weft_config cfg = { .workers = 2, .watchdog_ms = -1u };
    test_run_cfg(&cfg, main_next_stuck, NULL);
}
