/* Fiber handles and the corners of channels that Go's own tests check:
 * select's order among several cases of one channel (Go's
 * TestPseudoRandomSend, TestSelectFairness), stale handles after join and
 * after a detached fiber returned, fiber-local storage and the stack guard
 * raced from several threads, zero-size elements and a channel's length
 * and capacity (chan_test.go). Portable: runs on Windows too. */
#include "test.h"

#include "arch/arch.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

static const weft_config one = { .workers = 1 };
static const weft_config two = { .workers = 2 };

/* ------------------------------------------------- select: a parked select */

/* One worker, so the order of events is fixed: the selecting fiber runs
 * while the main fiber yields, finds no counterpart and parks with both of
 * its cases queued on the one channel; then the main fiber arrives and
 * takes whichever record is first in the queue. Before the fix that was
 * always case 0 (Go's TestPseudoRandomSend saw 100 to 0). A fair coin
 * lands under 100 of 1000 with probability below 1e-150: no flake. */
#define ROUNDS 1000

struct sel_arg { weft_chan *c; int op; int hits[2]; };

static void *selector(void *arg)
{
    struct sel_arg *a = arg;
    int v[2] = { 0, 1 }, got[2];
    for (int i = 0; i < ROUNDS; i++) {
        weft_case cs[2] = { { a->c, a->op, a->op == WEFT_SEND ? &v[0] : &got[0], 0 },
                            { a->c, a->op, a->op == WEFT_SEND ? &v[1] : &got[1], 0 } };
        int r = weft_select(cs, 2);
        ASSERT(r == 0 || r == 1);
        ASSERT_EQ(cs[r].err, 0);
        if (a->op == WEFT_RECV)
            ASSERT_EQ(got[r], i);
        a->hits[r]++;
    }
    return NULL;
}

static void *main_select_parked(void *arg)
{
    int op = *(int *)arg;
    struct sel_arg a = { weft_chan_make(sizeof(int), 0), op, { 0, 0 } };
    ASSERT(a.c != NULL);
    weft_fiber *f;
    ASSERT_EQ(weft_spawn(&f, NULL, selector, &a), 0);
    int seen[2] = { 0, 0 };
    for (int i = 0; i < ROUNDS; i++) {
        weft_yield();   /* the selector runs and parks */
        if (op == WEFT_SEND) {
            int v = -1;
            ASSERT_EQ(weft_chan_recv(a.c, &v), 0);
            ASSERT(v == 0 || v == 1);
            seen[v]++;   /* the receiver's view: which case sent */
        } else {
            ASSERT_EQ(weft_chan_send(a.c, &i), 0);
        }
    }
    ASSERT_EQ(weft_join(f, NULL), 0);
    if (op == WEFT_SEND) {
        ASSERT_EQ(seen[0], a.hits[0]);
        ASSERT_EQ(seen[1], a.hits[1]);
    }
    ASSERT_GE(a.hits[0], ROUNDS / 10);
    ASSERT_GE(a.hits[1], ROUNDS / 10);
    weft_chan_free(a.c);
    return NULL;
}

TEST(handles_select_parked_sends_random)
{
    int op = WEFT_SEND;
    test_run_cfg(&one, main_select_parked, &op);
}

TEST(handles_select_parked_recvs_random)
{
    int op = WEFT_RECV;
    test_run_cfg(&one, main_select_parked, &op);
}

/* ------------------------------------------------------- the state word */

/* A plain thread spins on weft_chan_trysend while a fiber receives in a
 * loop: the thread claims the fiber the moment its receive is queued,
 * often before the fiber has finished switching away (the early wake of
 * sched.h), and readies it onto the global queue. The state word then went
 * RUNNABLE (the waker) and PARKED (the parking worker, afterwards) while
 * the fiber sat on a run queue; the scheduler now asserts the state each
 * write leaves, so the old order aborts here. One worker: the worker and
 * the thread then have a CPU each on a two-core machine. */
#define PINGS 100000

struct spinner { weft_chan *c; atomic_int stop; };

static void *trysend_thread(void *arg)
{
    struct spinner *s = arg;
    for (int i = 0; i < PINGS && !atomic_load(&s->stop);) {
        int r = weft_chan_trysend(s->c, &i);
        if (r == 0)
            i++;
        else
            ASSERT_EQ(r, -EAGAIN);
    }
    weft_chan_close(s->c);
    return NULL;
}

static void *main_state_early_wake(void *arg)
{
    struct spinner s = { weft_chan_make(sizeof(int), 0), 0 };
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, trysend_thread, &s), 0);
    /* Not scaled: a window for the race to show, not a timing assertion. */
    uint64_t end = weft_now() + (uint64_t)2e9;
    /* A deadline makes every receive arm and disarm a timer as it parks:
     * a longer window between the wait's publication and the switch. */
    weft_deadline(ms_from_now(600000));
    int v, want = 0, r;
    while ((r = weft_chan_recv(s.c, &v)) == 0) {
        ASSERT_EQ(v, want);
        want++;
        if (weft_now() > end)
            atomic_store(&s.stop, 1);
    }
    ASSERT_EQ(r, -EPIPE);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    weft_chan_free(s.c);
    return NULL;
}

TEST(handles_state_word_forward_only) { test_run_cfg(&one, main_state_early_wake, NULL); }

/* ---------------------------------------- races TSan saw (make check-tsan) */

/* Keys created and deleted on a plain thread while fibers set values and
 * return (running destructors): a key's generation was written plainly
 * under the keys' lock but read atomically without it, and its destructor
 * was read with no lock at all, so a delete and a create between the two
 * reads could pair a value with another key's destructor. */
#define KEY_ROUNDS 2000

static atomic_uint cur_key;
static atomic_int key_stop;
static atomic_long dtor_calls;
static int key_marker;

static void key_dtor(void *v)
{
    ASSERT_PTR_EQ(v, &key_marker);
    atomic_fetch_add(&dtor_calls, 1);
}

static void *key_churn(void *arg)
{
    (void)arg;
    for (int i = 0; i < KEY_ROUNDS && !atomic_load(&key_stop); i++) {
        weft_key k;
        ASSERT_EQ(weft_key_create(&k, key_dtor), 0);
        atomic_store(&cur_key, k);
        ASSERT_EQ(weft_key_delete(k), 0);
    }
    atomic_store(&key_stop, 1);
    return NULL;
}

static void *key_user(void *arg)
{
    (void)arg;
    weft_key k = atomic_load(&cur_key);
    int r = weft_setspecific(k, &key_marker);
    ASSERT(r == 0 || r == -EINVAL);
    void *v = weft_getspecific(k);
    ASSERT(v == NULL || v == &key_marker);
    return NULL;
}

static void *main_key_race(void *arg)
{
    (void)arg;
    weft_key k0;
    ASSERT_EQ(weft_key_create(&k0, key_dtor), 0);   /* cur_key is valid from the start */
    atomic_store(&cur_key, k0);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, key_churn, NULL), 0);
    uint64_t end = weft_now() + (uint64_t)(2e9 * test_time_scale());
    while (!atomic_load(&key_stop)) {
        weft_fiber *f[8];
        for (int i = 0; i < 8; i++)
            ASSERT_EQ(weft_spawn(&f[i], NULL, key_user, NULL), 0);
        for (int i = 0; i < 8; i++)
            ASSERT_EQ(weft_join(f[i], NULL), 0);
        if (weft_now() > end)
            atomic_store(&key_stop, 1);
    }
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_EQ(weft_key_delete(k0), 0);
    return NULL;
}

TEST(handles_fls_keys_race) { test_run_cfg(&two, main_key_race, NULL); }

/* The stack guard mode is chosen once, under the stack allocator's lock,
 * and may be downgraded later under it; weft__stack_guard_mode returned
 * it, and weft__stack_guard_name and the canary check read it, with no
 * lock. Two threads ask at once in a fresh process (each test runs in its
 * own), one of them making the choice. */
static atomic_int mode_go;

static void *ask_mode(void *arg)
{
    while (!atomic_load(&mode_go))
        ;
    for (int i = 0; i < 1000; i++) {
        if (arg)
            ASSERT_GT(weft__stack_guard_mode(), 0);
        else
            ASSERT(weft__stack_guard_name() != NULL);
    }
    return NULL;
}

TEST(handles_stack_guard_mode_race)
{
    pthread_t t[2];
    ASSERT_EQ(pthread_create(&t[0], NULL, ask_mode, (void *)1), 0);
    ASSERT_EQ(pthread_create(&t[1], NULL, ask_mode, NULL), 0);
    atomic_store(&mode_go, 1);
    ASSERT_EQ(pthread_join(t[0], NULL), 0);
    ASSERT_EQ(pthread_join(t[1], NULL), 0);
    ASSERT_GT(weft__stack_guard_mode(), 0);
}

/* ------------------------------------------------------ stale handles */

static void *ret_arg(void *arg) { return arg; }

static void *wait_cancel(void *arg)
{
    (void)arg;
    int r = weft_sleep((uint64_t)60e9);   /* until cancelled */
    return (void *)(intptr_t)r;
}

static void *self_twice(void *arg)
{
    weft_fiber *a = weft_self(), *b = weft_self();
    ASSERT_PTR_EQ(a, b);
    return a;
}

/* After weft_join(f), the next spawn on this worker reuses f's record:
 * f must not reach the new fiber (it did: a second join returned 0 with
 * the new fiber's result, and a cancel cancelled it). */
static void *main_stale_joined(void *arg)
{
    (void)arg;
    weft_fiber *f, *g;
    void *r;
    ASSERT_EQ(weft_spawn(&f, NULL, ret_arg, (void *)1), 0);
    ASSERT_EQ(weft_join(f, &r), 0);
    ASSERT_PTR_EQ(r, (void *)1);

    weft_attr named = { .name = "second" };
    ASSERT_EQ(weft_spawn(&g, &named, wait_cancel, NULL), 0);
    weft_yield();   /* g runs and sleeps */
    ASSERT_EQ(weft_join(f, &r), -EINVAL);
    ASSERT_EQ(weft_cancel(f), -EINVAL);
    ASSERT_EQ(weft_detach(f), -EINVAL);
    ASSERT_EQ(weft_id(f), 0);
    ASSERT_STR_EQ(weft_name(f), "");
    void *pcs[8];
    ASSERT_EQ(weft_backtrace(f, pcs, 8), -ESRCH);
    ASSERT(weft_id(g) != 0);
    ASSERT_STR_EQ(weft_name(g), "second");
    ASSERT_EQ(weft_cancelled(), 0);

    /* g was untouched: still sleeping; cancel it for real now */
    ASSERT_EQ(weft_cancel(g), 0);
    ASSERT_EQ(weft_join(g, &r), 0);
    ASSERT_EQ((intptr_t)r, -ECANCELED);
    ASSERT_EQ(weft_join(g, &r), -EINVAL);

    /* a handle is the same value every time, for its whole life */
    ASSERT_EQ(weft_spawn(&g, NULL, self_twice, NULL), 0);
    ASSERT_EQ(weft_join(g, &r), 0);
    ASSERT_PTR_EQ(r, g);
    ASSERT_PTR_EQ(weft_self(), weft_self());
    return NULL;
}

TEST(handles_stale_after_join) { test_run_cfg(&one, main_stale_joined, NULL); }

/* A detached fiber's handle is good until the fiber returns (cancel works
 * on it); then it is stale like a joined one: -EINVAL, and a new fiber in
 * the same record is out of its reach. */
static void *main_stale_detached(void *arg)
{
    (void)arg;
    weft_fiber *d, *g;
    void *r;
    ASSERT_EQ(weft_spawn(&d, NULL, wait_cancel, NULL), 0);
    ASSERT_EQ(weft_detach(d), 0);
    weft_yield();                       /* d sleeps */
    ASSERT_EQ(weft_cancel(d), 0);       /* live: the handle works */
    ASSERT_EQ(weft_join(d, NULL), -EINVAL);
    for (int i = 0; i < 10; i++)        /* d wakes with -ECANCELED and returns */
        weft_yield();
    ASSERT_EQ(weft_cancel(d), -EINVAL);
    ASSERT_EQ(weft_detach(d), -EINVAL);

    ASSERT_EQ(weft_spawn(&g, NULL, wait_cancel, NULL), 0);   /* reuses d's record */
    weft_yield();
    ASSERT_EQ(weft_cancel(d), -EINVAL);
    ASSERT_EQ(weft_join(d, NULL), -EINVAL);
    ASSERT_EQ(weft_id(d), 0);
    ASSERT_EQ(weft_cancel(g), 0);
    ASSERT_EQ(weft_join(g, &r), 0);
    ASSERT_EQ((intptr_t)r, -ECANCELED);
    return NULL;
}

TEST(handles_stale_after_detached_exit) { test_run_cfg(&one, main_stale_detached, NULL); }

/* A plain thread cancels fibers by handle while they are joined and their
 * records reused: a cancel either reaches the fiber it named or answers
 * -EINVAL, and never a fiber spawned after it (those check they were not
 * cancelled). */
static _Atomic(weft_fiber *) race_target;
static atomic_int race_stop;

static void *race_canceller(void *arg)
{
    (void)arg;
    while (!atomic_load(&race_stop)) {
        weft_fiber *f = atomic_load(&race_target);
        if (f) {
            int r = weft_cancel(f);
            ASSERT(r == 0 || r == -EINVAL);
        }
    }
    return NULL;
}

static void *victim(void *arg)
{
    (void)arg;
    weft_yield();
    return (void *)(intptr_t)weft_cancelled();
}

static void *bystander(void *arg)
{
    (void)arg;
    weft_yield();
    return (void *)(intptr_t)weft_cancelled();
}

static void *main_stale_race(void *arg)
{
    (void)arg;
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, race_canceller, NULL), 0);
    uint64_t end = weft_now() + (uint64_t)(1e9 * test_time_scale());
    for (int i = 0; i < 20000 && weft_now() < end; i++) {
        weft_fiber *f, *g;
        void *r;
        ASSERT_EQ(weft_spawn(&f, NULL, victim, NULL), 0);
        atomic_store(&race_target, f);
        ASSERT_EQ(weft_join(f, &r), 0);
        /* f is stale from here on, while the thread may still cancel it */
        ASSERT_EQ(weft_spawn(&g, NULL, bystander, NULL), 0);
        ASSERT_EQ(weft_join(g, &r), 0);
        ASSERT_EQ((intptr_t)r, 0);
    }
    atomic_store(&race_stop, 1);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    return NULL;
}

TEST(handles_stale_cancel_from_thread) { test_run_cfg(&one, main_stale_race, NULL); }

/* Outside a runtime every handle is stale: nothing is read through it. */
static void *keep_self(void *arg) { return weft_self(); }

TEST(handles_outside_runtime)
{
    weft_fiber *f = test_run_cfg(&one, keep_self, NULL);
    ASSERT(f != NULL);
    ASSERT_EQ(weft_join(f, NULL), -EINVAL);
    ASSERT_EQ(weft_cancel(f), -EINVAL);
    ASSERT_EQ(weft_detach(f), -EINVAL);
    ASSERT_EQ(weft_id(f), 0);
    ASSERT_STR_EQ(weft_name(f), "");
}

/* ------------------------------------- zero-size elements: chan struct{} */

#define ZN 1000

static void *zero_sender(void *arg)
{
    weft_chan *c = arg;
    for (int i = 0; i < ZN; i++)
        ASSERT_EQ(weft_chan_send(c, NULL), 0);
    ASSERT_EQ(weft_chan_close(c), 0);
    return NULL;
}

/* Go: make(chan struct{}, cap) for cap 0 and buffered; c <- struct{}{};
 * <-c; select on it; close. Values carry nothing, so NULL is a value. */
static void *main_zero_size(void *arg)
{
    (void)arg;
    size_t caps[] = { 0, 1, 5 };
    for (size_t k = 0; k < 3; k++) {
        weft_chan *c = weft_chan_make(0, caps[k]);
        ASSERT(c != NULL);
        ASSERT_EQ(weft_chan_cap(c), caps[k]);
        weft_fiber *f;
        ASSERT_EQ(weft_spawn(&f, NULL, zero_sender, c), 0);
        int n = 0, r;
        char junk = 'x';
        while ((r = weft_chan_recv(c, n % 2 ? &junk : NULL)) == 0)
            n++;
        ASSERT_EQ(r, -EPIPE);
        ASSERT_EQ(n, ZN);
        ASSERT_EQ(junk, 'x');   /* nothing is written into a zero-size element */
        ASSERT_EQ(weft_join(f, NULL), 0);
        weft_chan_free(c);
    }

    /* buffered: a counting semaphore that holds no data */
    weft_chan *c = weft_chan_make(0, 3);
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(weft_chan_trysend(c, NULL), 0);
    ASSERT_EQ(weft_chan_trysend(c, NULL), -EAGAIN);
    ASSERT_EQ(weft_chan_len(c), 3);
    ASSERT_EQ(weft_chan_tryrecv(c, NULL), 0);
    ASSERT_EQ(weft_chan_len(c), 2);

    /* select: a send case with a NULL elem is fine on a zero-size channel */
    weft_case cs[2] = { { c, WEFT_SEND, NULL, 0 }, { c, WEFT_RECV, NULL, 0 } };
    int r = weft_select(cs, 2);
    ASSERT(r == 0 || r == 1);
    ASSERT_EQ(cs[r].err, 0);
    ASSERT_EQ(weft_chan_len(c), r == 0 ? 3 : 1);
    ASSERT_EQ(weft_chan_close(c), 0);
    while (weft_chan_tryrecv(c, NULL) == 0)
        ;
    ASSERT_EQ(weft_chan_len(c), 0);
    ASSERT_EQ(weft_chan_recv(c, NULL), -EPIPE);
    weft_chan_free(c);

    /* unbuffered select with a parked zero-size sender */
    c = weft_chan_make(0, 0);
    weft_fiber *f;
    ASSERT_EQ(weft_spawn(&f, NULL, zero_sender, c), 0);
    weft_case rc[1] = { { c, WEFT_RECV, NULL, 0 } };
    for (int i = 0; i < ZN; i++) {
        ASSERT_EQ(weft_select(rc, 1), 0);
        ASSERT_EQ(rc[0].err, 0);
    }
    ASSERT_EQ(weft_select(rc, 1), 0);
    ASSERT_EQ(rc[0].err, -EPIPE);
    ASSERT_EQ(weft_join(f, NULL), 0);
    weft_chan_free(c);

    /* any capacity: the ring takes no memory */
    c = weft_chan_make(0, (size_t)1 << 40);
    ASSERT(c != NULL);
    ASSERT_EQ(weft_chan_cap(c), (size_t)1 << 40);
    weft_chan_free(c);

    /* a NULL send is still bad input where elements have a size */
    c = weft_chan_make(sizeof(int), 1);
    ASSERT_EQ(weft_chan_trysend(c, NULL), -EINVAL);
    weft_case bad[1] = { { c, WEFT_SEND, NULL, 0 } };
    ASSERT_EQ(weft_tryselect(bad, 1), -EINVAL);
    weft_chan_free(c);
    return NULL;
}

TEST(handles_chan_zero_size) { test_run_cfg(&two, main_zero_size, NULL); }

/* ------------------------------------------------- len and cap (Go's) */

struct lenarg { weft_chan *c; atomic_int stop; size_t max_seen; };

static void *len_watcher(void *arg)
{
    struct lenarg *a = arg;
    while (!atomic_load(&a->stop)) {
        size_t n = weft_chan_len(a->c);
        ASSERT_LE(n, weft_chan_cap(a->c));
        if (n > a->max_seen)
            a->max_seen = n;
    }
    return NULL;
}

static void *blocked_sender(void *arg)
{
    int v = 7;
    return (void *)(intptr_t)weft_chan_send(arg, &v);
}

static void *main_len_cap(void *arg)
{
    (void)arg;
    ASSERT_EQ(weft_chan_len(NULL), 0);
    ASSERT_EQ(weft_chan_cap(NULL), 0);

    /* Go's TestLenCap-style walk: len follows the buffered items */
    weft_chan *c = weft_chan_make(sizeof(int), 5);
    ASSERT_EQ(weft_chan_cap(c), 5);
    ASSERT_EQ(weft_chan_len(c), 0);
    for (int i = 0; i < 5; i++) {
        ASSERT_EQ(weft_chan_send(c, &i), 0);
        ASSERT_EQ(weft_chan_len(c), (size_t)i + 1);
    }
    /* full, with a sender waiting: its value moves into the ring as one
     * is received, so len stays at cap */
    weft_fiber *f;
    ASSERT_EQ(weft_spawn(&f, NULL, blocked_sender, c), 0);
    weft_yield();
    ASSERT_EQ(weft_chan_len(c), 5);
    int v;
    ASSERT_EQ(weft_chan_recv(c, &v), 0);
    ASSERT_EQ(v, 0);
    ASSERT_EQ(weft_chan_len(c), 5);
    void *r;
    ASSERT_EQ(weft_join(f, &r), 0);
    ASSERT_EQ((intptr_t)r, 0);
    ASSERT_EQ(weft_chan_recv(c, &v), 0);
    ASSERT_EQ(weft_chan_len(c), 4);
    /* closed: len is what is left to drain, cap is unchanged */
    ASSERT_EQ(weft_chan_close(c), 0);
    ASSERT_EQ(weft_chan_len(c), 4);
    ASSERT_EQ(weft_chan_cap(c), 5);
    for (size_t left = 4; left > 0; left--) {
        ASSERT_EQ(weft_chan_recv(c, &v), 0);
        ASSERT_EQ(weft_chan_len(c), left - 1);
    }
    ASSERT_EQ(weft_chan_recv(c, &v), -EPIPE);
    ASSERT_EQ(weft_chan_len(c), 0);
    weft_chan_free(c);

    /* unbuffered: len 0, cap 0, even with a sender waiting */
    c = weft_chan_make(sizeof(int), 0);
    ASSERT_EQ(weft_spawn(&f, NULL, blocked_sender, c), 0);
    weft_yield();
    ASSERT_EQ(weft_chan_len(c), 0);
    ASSERT_EQ(weft_chan_cap(c), 0);
    ASSERT_EQ(weft_chan_recv(c, &v), 0);
    ASSERT_EQ(weft_join(f, NULL), 0);
    weft_chan_free(c);

    /* from a plain thread while fibers fill and drain the ring */
    struct lenarg a = { weft_chan_make(sizeof(int), 8), 0, 0 };
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, len_watcher, &a), 0);
    for (int round = 0; round < 2000; round++) {
        for (int i = 0; i < 8; i++)
            ASSERT_EQ(weft_chan_send(a.c, &i), 0);
        for (int i = 0; i < 8; i++)
            ASSERT_EQ(weft_chan_recv(a.c, &v), 0);
    }
    atomic_store(&a.stop, 1);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_LE(a.max_seen, 8);
    weft_chan_free(a.c);
    return NULL;
}

TEST(handles_chan_len_cap) { test_run_cfg(&two, main_len_cap, NULL); }
