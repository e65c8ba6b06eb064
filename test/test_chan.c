/* Channels and select: FIFO order, rendezvous, close, try calls, select's
 * fairness and closed cases, cancel and deadline with nothing lost, bad
 * input, and the stress test that mixes every primitive over 100,000
 * fibers on 8 workers. */
#include "test.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

static const weft_config one = { .workers = 1 };
static const weft_config four = { .workers = 4 };

static void spawn_ok(weft_fiber **f, void *(*fn)(void *), void *arg)
{
    ASSERT_EQ(weft_spawn(f, NULL, fn, arg), 0);
}

static void join_ok(weft_fiber *f) { ASSERT_EQ(weft_join(f, NULL), 0); }

/* ------------------------------------------------------------ FIFO order */

#define NMSG 20000

static void *send_seq(void *arg)
{
    weft_chan *c = arg;
    for (long i = 0; i < NMSG; i++)
        ASSERT_EQ(weft_chan_send(c, &i), 0);
    ASSERT_EQ(weft_chan_close(c), 0);
    return NULL;
}

static void *main_fifo(void *arg)
{
    size_t caps[] = { 0, 1, 7, 64 };
    for (size_t k = 0; k < 4; k++) {
        weft_chan *c = weft_chan_make(sizeof(long), caps[k]);
        ASSERT(c != NULL);
        weft_fiber *f;
        spawn_ok(&f, send_seq, c);
        long v, want = 0;
        int r;
        while ((r = weft_chan_recv(c, &v)) == 0) {
            ASSERT_EQ(v, want);
            want++;
        }
        ASSERT_EQ(r, -EPIPE);
        ASSERT_EQ(want, NMSG);
        join_ok(f);
        weft_chan_free(c);
    }
    return NULL;
}

TEST(chan_fifo_1worker) { test_run_cfg(&one, main_fifo, NULL); }
TEST(chan_fifo_4workers) { test_run_cfg(&four, main_fifo, NULL); }

/* ---------------------------------------------------------- rendezvous */

static atomic_int receiver_in_recv;
static int received;   /* the receiver's buffer: the sender writes it */

static void *late_receiver(void *arg)
{
    weft_sleep(20000000);
    atomic_store(&receiver_in_recv, 1);
    ASSERT_EQ(weft_chan_recv(arg, &received), 0);
    ASSERT_EQ(received, 42);
    return NULL;
}

static void *main_rendezvous(void *arg)
{
    weft_chan *c = weft_chan_make(sizeof(int), 0);
    weft_fiber *f;
    spawn_ok(&f, late_receiver, c);
    int v = 42;
    ASSERT_EQ(weft_chan_trysend(c, &v), -EAGAIN);   /* nobody receiving yet */
    ASSERT_EQ(weft_chan_send(c, &v), 0);
    ASSERT_EQ(atomic_load(&receiver_in_recv), 1);   /* did not return before the receiver came */
    ASSERT_EQ(received, 42);                        /* ... and had handed it the value */
    join_ok(f);
    weft_chan_free(c);
    return NULL;
}

TEST(chan_unbuffered_rendezvous_1worker) { test_run_cfg(&one, main_rendezvous, NULL); }
TEST(chan_unbuffered_rendezvous_4workers) { test_run_cfg(&four, main_rendezvous, NULL); }

/* --------------------------------------------------------------- close */

static void *blocked_recv(void *arg)
{
    int v = 77;
    ASSERT_EQ(weft_chan_recv(arg, &v), -EPIPE);
    ASSERT_EQ(v, 0);   /* zeroed */
    return NULL;
}

static void *blocked_send(void *arg)
{
    int v = 5;
    ASSERT_EQ(weft_chan_send(arg, &v), -EPIPE);
    return NULL;
}

static void *main_close(void *arg)
{
    /* buffered: drained, then -EPIPE; send and a second close fail */
    weft_chan *c = weft_chan_make(sizeof(int), 4);
    for (int i = 1; i <= 3; i++)
        ASSERT_EQ(weft_chan_send(c, &i), 0);
    ASSERT_EQ(weft_chan_close(c), 0);
    ASSERT_EQ(weft_chan_close(c), -EPIPE);
    int v = 9;
    ASSERT_EQ(weft_chan_send(c, &v), -EPIPE);
    ASSERT_EQ(weft_chan_trysend(c, &v), -EPIPE);
    for (int i = 1; i <= 3; i++) {
        ASSERT_EQ(weft_chan_recv(c, &v), 0);
        ASSERT_EQ(v, i);
    }
    v = 9;
    ASSERT_EQ(weft_chan_recv(c, &v), -EPIPE);
    ASSERT_EQ(v, 0);
    ASSERT_EQ(weft_chan_tryrecv(c, &v), -EPIPE);
    weft_chan_free(c);

    /* close wakes every blocked receiver, and every blocked sender */
    weft_chan *r = weft_chan_make(sizeof(int), 0), *s = weft_chan_make(sizeof(int), 1);
    ASSERT_EQ(weft_chan_send(s, &v), 0);   /* s is full */
    weft_fiber *f[8];
    for (int i = 0; i < 4; i++)
        spawn_ok(&f[i], blocked_recv, r);
    for (int i = 4; i < 8; i++)
        spawn_ok(&f[i], blocked_send, s);
    weft_sleep(5000000);
    ASSERT_EQ(weft_chan_close(r), 0);
    ASSERT_EQ(weft_chan_close(s), 0);
    for (int i = 0; i < 8; i++)
        join_ok(f[i]);
    ASSERT_EQ(weft_chan_recv(s, &v), 0);   /* what was buffered before the close */
    ASSERT_EQ(weft_chan_recv(s, &v), -EPIPE);
    weft_chan_free(r);
    weft_chan_free(s);
    return NULL;
}

TEST(chan_close_1worker) { test_run_cfg(&one, main_close, NULL); }
TEST(chan_close_4workers) { test_run_cfg(&four, main_close, NULL); }

/* ------------------------------------------------------------ bad input */

static void *main_bad(void *arg)
{
    /* elem size 0 is Go's chan struct{} now, no longer bad input
     * (handles_chan_zero_size); one byte past the 64 KiB limit is */
    ASSERT(weft_chan_make(((size_t)1 << 16) + 1, 1) == NULL);
    ASSERT(weft_chan_make((size_t)1 << 20, 1) == NULL);
    ASSERT(weft_chan_make(SIZE_MAX, 0) == NULL);
    ASSERT(weft_chan_make(8, SIZE_MAX / 4) == NULL);
    weft_chan *c = weft_chan_make(sizeof(int), 2);
    int v = 1;
    ASSERT_EQ(weft_chan_send(NULL, &v), -EINVAL);
    ASSERT_EQ(weft_chan_send(c, NULL), -EINVAL);
    ASSERT_EQ(weft_chan_trysend(c, NULL), -EINVAL);
    ASSERT_EQ(weft_chan_recv(NULL, &v), -EINVAL);
    ASSERT_EQ(weft_chan_trysend(NULL, &v), -EINVAL);
    ASSERT_EQ(weft_chan_tryrecv(NULL, &v), -EINVAL);
    ASSERT_EQ(weft_chan_close(NULL), -EINVAL);
    weft_chan_free(NULL);
    ASSERT_EQ(weft_chan_tryrecv(c, &v), -EAGAIN);
    ASSERT_EQ(weft_chan_trysend(c, &v), 0);
    ASSERT_EQ(weft_chan_trysend(c, &v), 0);
    ASSERT_EQ(weft_chan_trysend(c, &v), -EAGAIN);
    ASSERT_EQ(weft_chan_recv(c, NULL), 0);   /* discard */
    ASSERT_EQ(weft_select(NULL, 1), -EINVAL);
    ASSERT_EQ(weft_tryselect(NULL, 1), -EINVAL);
    weft_case bad[] = { { c, 3, &v, 0 } };
    ASSERT_EQ(weft_select(bad, 1), -EINVAL);
    weft_case nosend[] = { { c, WEFT_SEND, NULL, 0 } };
    ASSERT_EQ(weft_select(nosend, 1), -EINVAL);
    ASSERT_EQ(weft_tryselect(NULL, 0), -EAGAIN);
    weft_case none[] = { { NULL, WEFT_RECV, &v, 0 } };
    ASSERT_EQ(weft_tryselect(none, 1), -EAGAIN);
    weft_chan_free(c);
    return NULL;
}

TEST(chan_bad_input) { test_run_cfg(&one, main_bad, NULL); }

TEST(chan_plain_thread)
{
    weft_chan *c = weft_chan_make(sizeof(int), 1);
    int v = 3;
    ASSERT_EQ(weft_chan_send(c, &v), -EPERM);
    ASSERT_EQ(weft_chan_recv(c, &v), -EPERM);
    ASSERT_EQ(weft_chan_trysend(c, &v), 0);
    weft_case cs[] = { { c, WEFT_RECV, &v, 0 } };
    ASSERT_EQ(weft_select(cs, 1), -EPERM);
    v = 0;
    ASSERT_EQ(weft_tryselect(cs, 1), 0);
    ASSERT_EQ(v, 3);
    ASSERT_EQ(weft_chan_close(c), 0);
    weft_chan_free(c);
}

/* freeing a channel that fibers wait on is a caller bug: abort, say why */
static void *wait_forever(void *arg)
{
    int v;
    weft_chan_recv(arg, &v);
    return NULL;
}

static void *main_free_waited(void *arg)
{
    weft_chan *c = weft_chan_make(sizeof(int), 0);
    weft_fiber *f;
    spawn_ok(&f, wait_forever, c);
    weft_yield();   /* one worker: f runs and parks in recv before we go on */
    weft_chan_free(c);
    return NULL;
}

static void free_waited_child(void *arg) { weft_run(&one, main_free_waited, NULL, NULL); }

TEST(chan_free_with_waiters_aborts)
{
    char out[512];
    ASSERT_EQ(test_child(free_waited_child, NULL, out, sizeof out), -SIGABRT);
    ASSERT_CONTAINS(out, "fibers are still waiting");
}

/* --------------------------------------- cancel and deadline, nothing lost */

/* Senders with deadlines and cancels against a slow receiver: every send
 * that returned 0 was received, every failed one was not. */
#define NSEND 16
static atomic_llong sent_sum, sent_n;

static void *flaky_sender(void *arg)
{
    weft_chan *c = arg;
    for (long i = 1;; i++) {
        if (i % 3 == 0)
            weft_deadline(ms_from_now((unsigned)(i % 2)));
        int r = weft_chan_send(c, &i);
        weft_deadline(-1);
        if (r == 0) {
            atomic_fetch_add(&sent_sum, i);
            atomic_fetch_add(&sent_n, 1);
        } else if (r == -ECANCELED || r == -EPIPE) {
            return NULL;
        } else {
            ASSERT_EQ(r, -ETIMEDOUT);
        }
    }
}

static void *main_send_cancel(void *arg)
{
    size_t caps[] = { 0, 3 };
    for (int k = 0; k < 2; k++) {
        atomic_store(&sent_sum, 0);
        atomic_store(&sent_n, 0);
        weft_chan *c = weft_chan_make(sizeof(long), caps[k]);
        weft_fiber *f[NSEND];
        for (int i = 0; i < NSEND; i++)
            spawn_ok(&f[i], flaky_sender, c);
        long long got_sum = 0, got_n = 0;
        long v;
        for (int i = 0; i < 20000; i++) {
            int r;
            if (i % 5 == 0) {
                weft_deadline(ms_from_now(1));
                r = weft_chan_recv(c, &v);
                weft_deadline(-1);
            } else {
                r = weft_chan_recv(c, &v);
            }
            if (r == -ETIMEDOUT)
                continue;
            ASSERT_EQ(r, 0);
            got_sum += v;
            got_n++;
            if (i % 2000 == 1999)
                weft_cancel(f[i / 2000]);   /* 10 of the 16 */
        }
        ASSERT_EQ(weft_chan_close(c), 0);
        for (int i = 0; i < NSEND; i++)
            join_ok(f[i]);
        while (weft_chan_recv(c, &v) == 0) {   /* what is left in the ring */
            got_sum += v;
            got_n++;
        }
        ASSERT_EQ(got_n, atomic_load(&sent_n));
        ASSERT_EQ(got_sum, atomic_load(&sent_sum));
        weft_chan_free(c);
    }
    return NULL;
}

TEST(chan_cancel_conserves_1worker) { test_run_cfg(&one, main_send_cancel, NULL); }
TEST(chan_cancel_conserves_4workers) { test_run_cfg(&four, main_send_cancel, NULL); }

static void *recv_cancelled(void *arg)
{
    int v;
    ASSERT_EQ(weft_chan_recv(arg, &v), -ECANCELED);
    return NULL;
}

static void *main_recv_cancel(void *arg)
{
    weft_chan *c = weft_chan_make(sizeof(int), 0);
    weft_fiber *f;
    spawn_ok(&f, recv_cancelled, c);
    weft_sleep(2000000);
    ASSERT_EQ(weft_cancel(f), 0);
    join_ok(f);
    int v = 1;
    ASSERT_EQ(weft_chan_trysend(c, &v), -EAGAIN);   /* the receiver is gone */
    weft_deadline(ms_from_now(5));
    ASSERT_EQ(weft_chan_recv(c, &v), -ETIMEDOUT);
    ASSERT_EQ(weft_chan_send(c, &v), -ETIMEDOUT);
    weft_deadline(-1);
    weft_chan_free(c);
    return NULL;
}

TEST(chan_recv_cancel_deadline) { test_run_cfg(&four, main_recv_cancel, NULL); }

/* --------------------------------------------------------------- select */

static void *main_select_basic(void *arg)
{
    weft_chan *a = weft_chan_make(sizeof(int), 1), *b = weft_chan_make(sizeof(int), 1);
    int x = 0, y = 7;
    weft_case cs[] = {
        { a, WEFT_RECV, &x, 0 },
        { NULL, WEFT_RECV, &x, 0 },   /* ignored */
        { b, WEFT_SEND, &y, 0 },
    };
    ASSERT_EQ(weft_select(cs, 3), 2);   /* only the send can go */
    ASSERT_EQ(cs[2].err, 0);
    ASSERT_EQ(weft_tryselect(cs, 1), -EAGAIN);
    int z = 0;
    ASSERT_EQ(weft_chan_recv(b, &z), 0);
    ASSERT_EQ(z, 7);
    /* select sees the closed channel: recv fires zeroed, with -EPIPE */
    ASSERT_EQ(weft_chan_close(a), 0);
    x = 99;
    ASSERT_EQ(weft_select(cs, 1), 0);
    ASSERT_EQ(cs[0].err, -EPIPE);
    ASSERT_EQ(x, 0);
    ASSERT_EQ(weft_chan_close(b), 0);
    weft_case snd[] = { { b, WEFT_SEND, &y, 0 } };
    ASSERT_EQ(weft_select(snd, 1), 0);
    ASSERT_EQ(snd[0].err, -EPIPE);
    /* nothing to wait for: only a deadline or a cancel ends it */
    weft_deadline(ms_from_now(5));
    ASSERT_EQ(weft_select(NULL, 0), -ETIMEDOUT);
    weft_case nil[] = { { NULL, WEFT_RECV, &x, 0 } };
    ASSERT_EQ(weft_select(nil, 1), -ETIMEDOUT);
    weft_deadline(-1);
    weft_chan_free(a);
    weft_chan_free(b);
    return NULL;
}

TEST(select_basic) { test_run_cfg(&one, main_select_basic, NULL); }

/* two always-ready channels: each chosen 40-60% of the time */
static void *main_select_fair(void *arg)
{
    weft_chan *a = weft_chan_make(sizeof(int), 1), *b = weft_chan_make(sizeof(int), 1);
    int one_v = 1, x;
    int hits[2] = { 0, 0 };
    weft_case cs[] = { { a, WEFT_RECV, &x, 0 }, { b, WEFT_RECV, &x, 0 } };
    ASSERT_EQ(weft_chan_send(a, &one_v), 0);
    ASSERT_EQ(weft_chan_send(b, &one_v), 0);
    for (int i = 0; i < 10000; i++) {
        int r = weft_select(cs, 2);
        ASSERT(r == 0 || r == 1);
        hits[r]++;
        ASSERT_EQ(weft_chan_send(r == 0 ? a : b, &one_v), 0);   /* ready again */
    }
    ASSERT_GE(hits[0], 4000);
    ASSERT_LE(hits[0], 6000);
    weft_chan_free(a);
    weft_chan_free(b);
    return NULL;
}

TEST(select_fairness) { test_run_cfg(&one, main_select_fair, NULL); }

/* Blocked select woken by a sender on one of its channels, by close, by
 * cancel and by the deadline; duplicate channels in one select. */
static void *sel_waiter(void *arg)
{
    weft_chan **ch = arg;
    int x = -1, y = -1;
    weft_case cs[] = {
        { ch[0], WEFT_RECV, &x, 0 },
        { ch[1], WEFT_RECV, &y, 0 },
        { ch[1], WEFT_RECV, &y, 0 },   /* same channel twice */
    };
    int r = weft_select(cs, 3);
    ASSERT(r == 1 || r == 2);
    ASSERT_EQ(cs[r].err, 0);
    ASSERT_EQ(y, 11);
    ASSERT_EQ(x, -1);   /* the other case's buffer untouched */
    r = weft_select(cs, 3);
    ASSERT_EQ(r, 0);
    ASSERT_EQ(cs[0].err, -EPIPE);   /* woken by close */
    ASSERT_EQ(x, 0);
    cs[0].chan = NULL;   /* Go's idiom: drop the closed channel */
    r = weft_select(cs, 3);
    ASSERT_EQ(r, -ECANCELED);
    return NULL;
}

static void *main_select_block(void *arg)
{
    weft_chan *ch[2] = { weft_chan_make(sizeof(int), 0), weft_chan_make(sizeof(int), 0) };
    weft_fiber *f;
    spawn_ok(&f, sel_waiter, ch);
    int v = 11;
    ASSERT_EQ(weft_chan_send(ch[1], &v), 0);
    weft_sleep(2000000);
    ASSERT_EQ(weft_chan_close(ch[0]), 0);
    weft_sleep(2000000);
    ASSERT_EQ(weft_cancel(f), 0);
    join_ok(f);
    ASSERT_EQ(weft_chan_trysend(ch[1], &v), -EAGAIN);   /* no record left behind */
    int x;
    weft_case cs[] = { { ch[1], WEFT_RECV, &x, 0 }, { ch[1], WEFT_SEND, &v, 0 } };
    weft_deadline(ms_from_now(5));
    ASSERT_EQ(weft_select(cs, 2), -ETIMEDOUT);   /* cannot pair with itself */
    weft_deadline(-1);
    weft_chan_free(ch[0]);
    weft_chan_free(ch[1]);   /* would abort if a record were still queued */
    return NULL;
}

TEST(select_block_1worker) { test_run_cfg(&one, main_select_block, NULL); }
TEST(select_block_4workers) { test_run_cfg(&four, main_select_block, NULL); }

/* Many selecting receivers and senders over shared channels, with cancels
 * and deadlines: every value sent is received exactly once. Also more
 * cases than fit the on-stack arrays. */
#define SELN 12
#define SELF 16
static weft_chan *selch[SELN];
static atomic_llong sel_sent, sel_got, sel_sent_n, sel_got_n;
static atomic_int sel_stop;

static void *sel_sender(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    long v = (long)seed;
    while (!atomic_load(&sel_stop)) {
        weft_case cs[SELN];
        for (int i = 0; i < SELN; i++)
            cs[i] = (weft_case){ (seed >> i) & 1 ? selch[i] : NULL, WEFT_SEND, &v, 0 };
        cs[seed % SELN].chan = selch[seed % SELN];
        seed = seed * 1103515245u + 12345u;
        if (seed % 7 == 0)
            weft_deadline(ms_from_now(1));
        int r = weft_select(cs, SELN);
        weft_deadline(-1);
        if (r >= 0) {
            ASSERT_EQ(cs[r].err, 0);
            atomic_fetch_add(&sel_sent, v);
            atomic_fetch_add(&sel_sent_n, 1);
            v++;
        } else if (r == -ECANCELED) {
            return NULL;
        } else {
            ASSERT_EQ(r, -ETIMEDOUT);
        }
    }
    return NULL;
}

static void *sel_receiver(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    long vals[SELN];
    for (;;) {
        weft_case cs[SELN];
        for (int i = 0; i < SELN; i++)
            cs[i] = (weft_case){ selch[i], WEFT_RECV, &vals[i], 0 };
        seed = seed * 1103515245u + 12345u;
        if (seed % 5 == 0)
            weft_deadline(ms_from_now(1));
        int r = weft_select(cs, SELN);
        weft_deadline(-1);
        if (r >= 0) {
            if (cs[r].err == -EPIPE)
                return NULL;   /* closed: the end */
            atomic_fetch_add(&sel_got, vals[r]);
            atomic_fetch_add(&sel_got_n, 1);
        } else if (r == -ECANCELED) {
            return NULL;
        } else {
            ASSERT_EQ(r, -ETIMEDOUT);
        }
    }
}

static void *main_select_many(void *arg)
{
    for (int i = 0; i < SELN; i++)
        selch[i] = weft_chan_make(sizeof(long), i % 3 == 0 ? 2 : 0);
    weft_fiber *s[SELF], *r[SELF];
    for (int i = 0; i < SELF; i++) {
        spawn_ok(&s[i], sel_sender, (void *)(uintptr_t)(i * 1000003u + 1));
        spawn_ok(&r[i], sel_receiver, (void *)(uintptr_t)(i * 7u + 3));
    }
    for (int i = 0; i < 40; i++) {
        weft_sleep(5000000);
        weft_cancel(i % 2 ? s[(i / 2) % SELF] : r[(i / 2) % SELF]);
    }
    atomic_store(&sel_stop, 1);
    for (int i = 0; i < SELF; i++)
        join_ok(s[i]);
    for (int i = 0; i < SELN; i++)
        ASSERT_EQ(weft_chan_close(selch[i]), 0);
    for (int i = 0; i < SELF; i++)
        join_ok(r[i]);
    long v;
    for (int i = 0; i < SELN; i++) {
        while (weft_chan_recv(selch[i], &v) == 0) {
            atomic_fetch_add(&sel_got, v);
            atomic_fetch_add(&sel_got_n, 1);
        }
        weft_chan_free(selch[i]);
    }
    ASSERT_GT(atomic_load(&sel_sent_n), 100);
    ASSERT_EQ(atomic_load(&sel_got_n), atomic_load(&sel_sent_n));
    ASSERT_EQ(atomic_load(&sel_got), atomic_load(&sel_sent));
    return NULL;
}

TEST(select_many_cancel_conserves_1worker) { test_run_cfg(&one, main_select_many, NULL); }
TEST(select_many_cancel_conserves_4workers) { test_run_cfg(&four, main_select_many, NULL); }

/* ---------------------------------------------------------------- stress */

/*
 * 100,000 fibers on 8 workers (on however few CPUs), for WEFT_STRESS_SECONDS
 * (default 10): senders and selecting receivers over a set of buffered and
 * unbuffered channels, a mutex-protected counter, a condvar token bank, a
 * semaphore pool, sleepers and yielders, fibers setting deadlines, and
 * cancellers hitting random fibers. At the end every fiber is cancelled
 * and joined, and the books must balance:
 *   values sent == values received (+ left in the rings),
 *   the plain counter == the increments counted by the fibers,
 *   tokens produced == tokens consumed + tokens left,
 *   the semaphore holds its initial units again.
 */
/* 100,000 by default; WEFT_STRESS_FIBERS lowers it where every instruction
 * is emulated or instrumented (valgrind, qemu, TSan), see the Makefile. */
static int SFIBERS = 100000;
#define SCHANS 64
#define SEM_UNITS 50

static weft_fiber **sf;
static weft_chan *sch[SCHANS];
static weft_mutex smu = WEFT_MUTEX_INIT, tmu = WEFT_MUTEX_INIT;
static weft_cond tcond = WEFT_COND_INIT;
static weft_sem ssem = WEFT_SEM_INIT(SEM_UNITS);
static long scounter, stokens;
static atomic_llong s_incr, s_sent, s_sent_n, s_got, s_got_n, s_prod, s_cons, s_cancels, s_done;
static atomic_int s_stop, s_go;

static unsigned next_rand(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return *seed >> 8;
}

/* -ETIMEDOUT: our own deadline passed; clear it and go on. */
static bool keep_going(int r)
{
    if (r == -ETIMEDOUT) {
        weft_deadline(-1);
        return true;
    }
    return false;
}

static void *stress_fiber(void *arg)
{
    uintptr_t id = (uintptr_t)arg;
    unsigned seed = (unsigned)id * 2654435761u + 1;
    int64_t v = (int64_t)id << 20;
    long long incr = 0, sent = 0, sent_n = 0, got = 0, got_n = 0, prod = 0, cons = 0;
    while (!atomic_load_explicit(&s_stop, memory_order_relaxed)) {
        unsigned x = next_rand(&seed);
        if (x % 16 == 0)
            weft_deadline(ms_from_now(x % 3));
        int r = 0;
        switch (id % 8) {
        case 0: {   /* send */
            r = weft_chan_send(sch[x % SCHANS], &v);
            if (r == 0) {
                sent += v;
                sent_n++;
                v++;
            }
            break;
        }
        case 1: {   /* select-receive over three channels */
            int64_t a, b, c;
            weft_case cs[] = { { sch[x % SCHANS], WEFT_RECV, &a, 0 },
                               { sch[(x >> 6) % SCHANS], WEFT_RECV, &b, 0 },
                               { sch[(x >> 12) % SCHANS], WEFT_RECV, &c, 0 } };
            r = weft_select(cs, 3);
            if (r >= 0) {
                ASSERT_EQ(cs[r].err, 0);
                got += r == 0 ? a : r == 1 ? b : c;
                got_n++;
                r = 0;
            }
            break;
        }
        case 2:   /* mutex */
            if ((r = weft_mutex_lock(&smu)) == 0) {
                long c = scounter;
                if (x % 4 == 0)
                    weft_yield();
                scounter = c + 1;
                incr++;
                ASSERT_EQ(weft_mutex_unlock(&smu), 0);
            }
            break;
        case 3:   /* condvar consumer */
            if ((r = weft_mutex_lock(&tmu)) == 0) {
                while (stokens == 0 && r == 0)
                    r = weft_cond_wait(&tcond, &tmu);
                if (r == 0) {
                    stokens--;
                    cons++;
                }
                ASSERT_EQ(weft_mutex_unlock(&tmu), 0);   /* held even after an error */
            }
            break;
        case 4:   /* condvar producer */
            if ((r = weft_mutex_lock(&tmu)) == 0) {
                stokens++;
                prod++;
                ASSERT_EQ(weft_cond_signal(&tcond), 0);
                ASSERT_EQ(weft_mutex_unlock(&tmu), 0);
                r = weft_sleep(100000 + x % 1000000);
            }
            break;
        case 5:   /* semaphore pool, sleeps, yields */
            if ((r = weft_sem_wait(&ssem)) == 0) {
                if (x % 2)
                    weft_yield();
                else
                    weft_sleep(x % 200000);
                ASSERT_EQ(weft_sem_post(&ssem), 0);
            }
            break;
        case 6:   /* sleeper / yielder */
            if (x % 3 == 0)
                weft_yield();
            else
                r = weft_sleep(x % 3000000);
            break;
        case 7:   /* one in eight of these cancels a random fiber now and then */
            if (id % 64 != 7) {
                r = weft_sleep(x % 3000000);
                break;
            }
            r = weft_sleep(200000000 + x % 400000000);
            if (r == 0 && atomic_load(&s_go) && !atomic_load(&s_stop)) {
                uintptr_t victim = next_rand(&seed) % SFIBERS;
                if (victim % 64 != 7) {   /* keep the cancellers alive */
                    ASSERT_EQ(weft_cancel(sf[victim]), 0);
                    atomic_fetch_add(&s_cancels, 1);
                }
            }
            break;
        }
        if (r < 0 && !keep_going(r)) {
            ASSERT_EQ(r, -ECANCELED);
            break;
        }
    }
    atomic_fetch_add(&s_incr, incr);
    atomic_fetch_add(&s_sent, sent);
    atomic_fetch_add(&s_sent_n, sent_n);
    atomic_fetch_add(&s_got, got);
    atomic_fetch_add(&s_got_n, got_n);
    atomic_fetch_add(&s_prod, prod);
    atomic_fetch_add(&s_cons, cons);
    atomic_fetch_add(&s_done, 1);
    return NULL;
}

static void *main_stress(void *arg)
{
    const char *e = getenv("WEFT_STRESS_SECONDS");
    double secs = e ? atof(e) : 10.0;
    if (secs <= 0)
        secs = 10.0;
    const char *nf = getenv("WEFT_STRESS_FIBERS");
    if (nf && atoi(nf) > 0)
        SFIBERS = atoi(nf);
    for (int i = 0; i < SCHANS; i++)
        ASSERT((sch[i] = weft_chan_make(sizeof(int64_t), i % 2 ? 0 : (size_t)i)) != NULL);
    sf = calloc(SFIBERS, sizeof *sf);
    ASSERT(sf != NULL);
    weft_attr attr = { .stack_size = 32 << 10 };
    /* every fiber exists before any can be a cancel victim */
    for (int i = 0; i < SFIBERS; i++)
        ASSERT_EQ(weft_spawn(&sf[i], &attr, stress_fiber, (void *)(uintptr_t)i), 0);
    atomic_store(&s_go, 1);
    uint64_t end = weft_now() + (uint64_t)(secs * 1e9);
    while (weft_now() < end)
        weft_sleep(50000000);
    atomic_store(&s_stop, 1);
    for (int i = 0; i < SFIBERS; i++)
        weft_cancel(sf[i]);
    for (int i = 0; i < SFIBERS; i++)
        join_ok(sf[i]);
    ASSERT_EQ(atomic_load(&s_done), SFIBERS);
    int64_t v;
    for (int i = 0; i < SCHANS; i++) {
        while (weft_chan_tryrecv(sch[i], &v) == 0) {
            atomic_fetch_add(&s_got, v);
            atomic_fetch_add(&s_got_n, 1);
        }
        weft_chan_free(sch[i]);
    }
    printf("stress: %.1f s, %lld sends, %lld increments, %lld tokens, %lld cancels\n", secs,
           atomic_load(&s_sent_n), atomic_load(&s_incr), atomic_load(&s_prod),
           atomic_load(&s_cancels));
    ASSERT_GT(atomic_load(&s_sent_n), 0);
    ASSERT_GT(atomic_load(&s_cancels), 0);
    ASSERT_EQ(atomic_load(&s_got_n), atomic_load(&s_sent_n));
    ASSERT_EQ(atomic_load(&s_got), atomic_load(&s_sent));
    ASSERT_EQ(scounter, atomic_load(&s_incr));
    ASSERT_EQ(atomic_load(&s_prod), atomic_load(&s_cons) + stokens);
    for (int i = 0; i < SEM_UNITS; i++)
        ASSERT_EQ(weft_sem_trywait(&ssem), 0);
    ASSERT_EQ(weft_sem_trywait(&ssem), -EAGAIN);
    ASSERT_EQ(weft_mutex_destroy(&smu), 0);
    ASSERT_EQ(weft_mutex_destroy(&tmu), 0);
    ASSERT_EQ(weft_cond_destroy(&tcond), 0);
    free(sf);
    return NULL;
}

static const weft_config eight = { .workers = 8 };

TEST_TIMEOUT(stress_100k_fibers_8workers, 120) { test_run_cfg(&eight, main_stress, NULL); }

TEST_TIMEOUT(stress_100k_fibers_8workers_migrate, 120)
{
#ifdef _WIN32
    _putenv_s("WEFT_DEBUG_MIGRATE", "1");
#else
    setenv("WEFT_DEBUG_MIGRATE", "1", 1);   /* read by weft_run */
#endif
    test_run_cfg(&eight, main_stress, NULL);
}
