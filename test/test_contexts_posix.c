/*
 * Every public call of weft.h from every context (issue 15, "close the
 * classes"). One row of the table below is one call with one input, wrapped
 * in a small function that sets up what it needs, makes the call, cleans
 * up and returns the call's result. Each row says what that result must be
 * in each context, as weft.h's CONTEXTS table promises:
 *
 *   fiber    from a fiber (the main fiber of a weft_run);
 *   thread   from a plain thread while a runtime runs;
 *   outside  with no weft_run active at all;
 *   edge     from a plain thread calling it in a loop while the main thread
 *            runs weft_run again and again with short main fibers, so that
 *            calls land while weft_run starts and stops. EDGE there means
 *            "what the thread or the outside column says": during start-up
 *            and shut-down a call sees either a runtime or none, never a
 *            crash, a hang or a third answer.
 *
 * Every test runs once per Linux backend (contexts_<ctx>_epoll/_uring). A
 * failing cell prints call, input, context, expected and got, and the test
 * fails after the whole table ran. A hang is caught by a watchdog thread
 * that names the cell, a crash by a signal handler that does the same.
 *
 * Cells whose correct result depends on a fix not merged yet carry the
 * issue item in `pending` and the contexts it covers in `pmask`: they are
 * skipped (and listed) unless WEFT_TEST_PENDING=1. Once the fix is in, the
 * mark goes and the cell runs always.
 *
 * Adding a call: write `static long c_name(void)` and add a ROW. See
 * docs/testing.md.
 */
#define _GNU_SOURCE
#include "test_io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define MS 1000000ull

enum { FIBER, THREAD, OUTSIDE, EDGE_CTX, NCTX };
static const char *const ctx_name[NCTX] = {
    "from a fiber", "from a plain thread during weft_run", "outside weft_run",
    "from a plain thread while weft_run starts and stops",
};

/* Expectations other than one exact value. */
#define OK   (LONG_MIN + 1)   /* >= 0 */
#define NA   (LONG_MIN + 2)   /* not meaningful in this context: not run */
#define EDGE (LONG_MIN + 3)   /* edge column: the thread's or the outside's result */
#define OK_OR_NEG (LONG_MIN + 4)  /* >= 0, or a negative errno: only no crash or hang */
#define POS  (LONG_MIN + 5)   /* > 0 */

/* pmask bits */
#define P_FIBER   (1u << FIBER)
#define P_THREAD  (1u << THREAD)
#define P_OUTSIDE (1u << OUTSIDE)
#define P_EDGE    (1u << EDGE_CTX)

struct row {
    const char *call;
    const char *input;
    long (*fn)(void);
    long want[NCTX];
    unsigned pmask;
    const char *pending;
};

/* ------------------------------------------------------------- fixtures */

#define CLOSED_FD 30000   /* above any RLIMIT_NOFILE these tests run with: never open */

static _Atomic int spawned, ran;   /* detached fibers the rows spawned, and those that ran */
static _Atomic int in_ctx;         /* the context the rows run in now */

static void *count_run(void *arg) { atomic_fetch_add(&ran, 1); return arg; }
static void *ret_arg(void *arg) { return arg; }

static _Atomic int sleeper_done;
static void *sleeper(void *arg)
{
    weft_sleep(10000 * MS);   /* until cancelled */
    atomic_fetch_add(&sleeper_done, 1);
    return arg;
}

/* A joinable fiber that sleeps until cancelled; 0 or the spawn's error. */
static int spawn_sleeper(weft_fiber **f) { return weft_spawn(f, NULL, sleeper, NULL); }

/* Be done with a fiber of spawn_sleeper: cancel it, then join it from a
 * fiber, detach it from a plain thread (which cannot join). */
static void finish(weft_fiber *f)
{
    weft_cancel(f);
    if (weft_self())
        weft_join(f, NULL);
    else
        weft_detach(f);
}

static int devnull(void) { return open("/dev/null", O_WRONLY | O_CLOEXEC); }

static void close2(int p[2]) { weft_close(p[0]); weft_close(p[1]); }

/* A pipe with one byte in it. */
static void full_pipe(int p[2])
{
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    ASSERT_EQ(write(p[1], "x", 1), 1);
}

static void stream_pair(int sv[2]) { ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0); }
static void dgram_pair(int sv[2]) { ASSERT_EQ(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0); }

/* --------------------------------------------------------------- runtime */

static void *nothing(void *arg) { return arg; }

static long c_run(void) { return weft_run(NULL, nothing, NULL, NULL); }
static long c_run_null_main(void) { return weft_run(NULL, NULL, NULL, NULL); }
static long c_run_flags(void) { weft_config c = { .flags = 1 }; return weft_run(&c, nothing, NULL, NULL); }
static long c_run_workers(void) { weft_config c = { .workers = 5000 }; return weft_run(&c, nothing, NULL, NULL); }
static long c_run_stack(void) { weft_config c = { .stack_size = 1 }; return weft_run(&c, nothing, NULL, NULL); }

/* ---------------------------------------------------------------- fibers */

static long c_spawn_detached(void)
{
    weft_attr a = { .flags = WEFT_DETACHED };
    int r = weft_spawn(NULL, &a, count_run, NULL);
    if (r == 0)
        atomic_fetch_add(&spawned, 1);
    return r;
}

static long c_spawn_join(void)
{
    weft_fiber *f;
    int r = weft_spawn(&f, NULL, ret_arg, (void *)7);
    if (r < 0)
        return r;
    void *ret = NULL;
    r = weft_join(f, &ret);
    if (r < 0) {
        weft_detach(f);
        return r;
    }
    return ret == (void *)7 ? 0 : -1000;
}

static long c_spawn_null_out(void) { return weft_spawn(NULL, NULL, ret_arg, NULL); }
static long c_spawn_null_fn(void) { weft_fiber *f; return weft_spawn(&f, NULL, NULL, NULL); }
static long c_spawn_bad_flags(void) { weft_fiber *f; weft_attr a = { .flags = 1u << 7 }; return weft_spawn(&f, &a, ret_arg, NULL); }
static long c_spawn_tiny_stack(void) { weft_fiber *f; weft_attr a = { .stack_size = 1 }; return weft_spawn(&f, &a, ret_arg, NULL); }
static long c_spawn_huge_stack(void) { weft_fiber *f; weft_attr a = { .stack_size = (size_t)4 << 30 }; return weft_spawn(&f, &a, ret_arg, NULL); }

static long c_join_null(void) { return weft_join(NULL, NULL); }
static long c_join_self(void) { return weft_join(weft_self(), NULL); }   /* NULL outside a fiber */

/* join a live fiber: 0 from a fiber, -EPERM from anywhere else */
static long c_join_live(void)
{
    weft_fiber *f;
    int r = spawn_sleeper(&f);
    if (r < 0)
        return r;
    if (weft_self())
        weft_cancel(f);
    r = weft_join(f, NULL);
    if (r < 0)
        finish(f);
    return r;
}

static long c_join_twice(void)
{
    weft_fiber *f;
    int r = weft_spawn(&f, NULL, ret_arg, NULL);
    if (r < 0)
        return r;
    if ((r = weft_join(f, NULL)) < 0)
        return -1000 + r;
    return weft_join(f, NULL);
}

/* A handle to a joined fiber whose record a new fiber took over (the
 * fiber context runs on one worker: the new spawn reuses the stack). */
static long c_join_stale(void)
{
    weft_fiber *a, *b;
    if (weft_spawn(&a, NULL, ret_arg, NULL) < 0 || weft_join(a, NULL) < 0)
        return -1000;
    if (spawn_sleeper(&b) < 0)
        return -1001;
    weft_cancel(b);
    long r = weft_join(a, NULL);
    if (r < 0)
        weft_join(b, NULL);   /* else the stale join took b */
    return r;
}

static long c_cancel_stale(void)
{
    weft_fiber *a, *b;
    if (weft_spawn(&a, NULL, ret_arg, NULL) < 0 || weft_join(a, NULL) < 0)
        return -1000;
    int before = atomic_load(&sleeper_done);
    if (spawn_sleeper(&b) < 0)
        return -1001;
    long r = weft_cancel(a);
    weft_sleep(2 * MS);
    if (atomic_load(&sleeper_done) != before && r == 0)
        r = 1;   /* worse than a wrong 0: the new fiber was cancelled */
    finish(b);
    return r;
}

static long c_detach_stale(void)
{
    weft_fiber *a, *b;
    if (weft_spawn(&a, NULL, ret_arg, NULL) < 0 || weft_join(a, NULL) < 0)
        return -1000;
    if (spawn_sleeper(&b) < 0)
        return -1001;
    long r = weft_detach(a);
    weft_cancel(b);
    if (r < 0)
        weft_join(b, NULL);   /* else b is detached now and goes by itself */
    return r;
}

static long c_detach_null(void) { return weft_detach(NULL); }
static long c_detach_live(void)
{
    weft_fiber *f;
    int r = spawn_sleeper(&f);
    if (r < 0)
        return r;
    weft_cancel(f);
    return weft_detach(f);
}

static long c_cancel_null(void) { return weft_cancel(NULL); }
static long c_cancel_live(void)
{
    weft_fiber *f;
    int r = spawn_sleeper(&f);
    if (r < 0)
        return r;
    r = weft_cancel(f);
    finish(f);
    return r;
}

static long c_cancelled(void) { return weft_cancelled(); }
static long c_yield(void) { weft_yield(); return 0; }
static long c_self(void) { return weft_self() != NULL; }
static long c_id_null(void) { return (long)weft_id(NULL); }
static long c_id_self(void) { return weft_id(weft_self()) > 0; }
static long c_name_null(void) { return strcmp(weft_name(NULL), "") == 0 ? 0 : -1; }
static long c_name_self(void) { return strcmp(weft_name(weft_self()), weft_self() ? "main" : "") == 0 ? 0 : -1; }
static long c_worker_id(void) { return weft_worker_id(); }

/* ------------------------------------------------------------------ time */

static long c_now(void) { return weft_now() > 0; }
static long c_sleep(void) { return weft_sleep(1000); }
static long c_sleep_zero(void) { return weft_sleep(0); }

/* Set a deadline and take it back: returns the one that was set. */
static long c_deadline(void)
{
    int64_t d = (int64_t)weft_now() + 1000 * (int64_t)MS;
    int64_t old = weft_deadline(d);
    if (old < 0 && old != -1)
        return old;
    int64_t back = weft_deadline(old);
    if (back < 0)
        return back;
    return back == d ? 0 : -1000;
}

static long c_deadline_past(void)
{
    int64_t old = weft_deadline(1);   /* long past */
    if (!weft_self())
        return old;   /* -EPERM: no fiber to give a deadline to */
    long r = weft_sleep(MS);
    weft_deadline(old);
    return r;
}

/* ------------------------------------------------------ fiber-local */

static long c_key_create_null(void) { return weft_key_create(NULL, NULL); }
static long c_key_create_delete(void)
{
    weft_key k;
    int r = weft_key_create(&k, NULL);
    return r < 0 ? r : weft_key_delete(k);
}
static long c_key_delete_twice(void)
{
    weft_key k;
    int r = weft_key_create(&k, NULL);
    if (r < 0)
        return -1000;
    weft_key_delete(k);
    return weft_key_delete(k);
}
static long c_key_delete_bad(void) { return weft_key_delete(1u << 30); }
static long c_setspecific(void)
{
    weft_key k;
    if (weft_key_create(&k, NULL) < 0)
        return -1000;
    int r = weft_setspecific(k, &k);
    if (r == 0 && weft_getspecific(k) != &k)
        r = -1001;
    weft_key_delete(k);
    return r;
}
static long c_setspecific_bad(void) { return weft_setspecific(1u << 30, NULL); }
static long c_getspecific_bad(void) { return weft_getspecific(1u << 30) == NULL ? 0 : -1; }

/* ------------------------------------------------------------------- sync */

static long c_mutex_init_null(void) { return weft_mutex_init(NULL); }
static long c_mutex_lock_null(void) { return weft_mutex_lock(NULL); }
static long c_mutex_trylock_null(void) { return weft_mutex_trylock(NULL); }
static long c_mutex_unlock_null(void) { return weft_mutex_unlock(NULL); }
static long c_mutex_destroy_null(void) { return weft_mutex_destroy(NULL); }
static long c_mutex_lock(void)
{
    weft_mutex m = WEFT_MUTEX_INIT;
    int r = weft_mutex_lock(&m);
    if (r < 0)
        return r;
    return weft_mutex_unlock(&m);
}
static long c_mutex_trylock(void)
{
    weft_mutex m;
    weft_mutex_init(&m);
    int r = weft_mutex_trylock(&m);
    if (r < 0)
        return r;
    return weft_mutex_unlock(&m);
}
static long c_mutex_relock(void)
{
    weft_mutex m = WEFT_MUTEX_INIT;
    int r = weft_mutex_lock(&m);
    if (r < 0)
        return r;
    r = weft_mutex_lock(&m);
    weft_mutex_unlock(&m);
    return r;
}
static long c_mutex_unlock_unowned(void) { weft_mutex m = WEFT_MUTEX_INIT; return weft_mutex_unlock(&m); }
static long c_mutex_destroy(void) { weft_mutex m = WEFT_MUTEX_INIT; return weft_mutex_destroy(&m); }
static long c_mutex_destroy_locked(void)
{
    weft_mutex m = WEFT_MUTEX_INIT;
    int r = weft_mutex_lock(&m);
    if (r < 0)
        return r;
    r = weft_mutex_destroy(&m);
    weft_mutex_unlock(&m);
    return r;
}

static long c_cond_init_null(void) { return weft_cond_init(NULL); }
static long c_cond_signal_null(void) { return weft_cond_signal(NULL); }
static long c_cond_broadcast_null(void) { return weft_cond_broadcast(NULL); }
static long c_cond_destroy_null(void) { return weft_cond_destroy(NULL); }
static long c_cond_wait_null(void) { weft_mutex m = WEFT_MUTEX_INIT; return weft_cond_wait(NULL, &m); }
static long c_cond_ops(void)
{
    weft_cond c;
    int r = weft_cond_init(&c);
    if (r == 0) r = weft_cond_signal(&c);
    if (r == 0) r = weft_cond_broadcast(&c);
    if (r == 0) r = weft_cond_destroy(&c);
    return r;
}
static long c_cond_wait_unlocked(void)
{
    weft_cond c = WEFT_COND_INIT;
    weft_mutex m = WEFT_MUTEX_INIT;
    return weft_cond_wait(&c, &m);
}
static long c_cond_wait_timed(void)
{
    weft_cond c = WEFT_COND_INIT;
    weft_mutex m = WEFT_MUTEX_INIT;
    int r = weft_mutex_lock(&m);
    if (r < 0)
        return r;
    int64_t old = weft_deadline((int64_t)(weft_now() + MS));
    r = weft_cond_wait(&c, &m);
    weft_deadline(old);
    weft_mutex_unlock(&m);
    return r;
}

static long c_sem_init_null(void) { return weft_sem_init(NULL, 0); }
static long c_sem_wait_null(void) { return weft_sem_wait(NULL); }
static long c_sem_trywait_null(void) { return weft_sem_trywait(NULL); }
static long c_sem_post_null(void) { return weft_sem_post(NULL); }
static long c_sem_wait(void) { weft_sem s; weft_sem_init(&s, 1); return weft_sem_wait(&s); }
static long c_sem_trywait(void) { weft_sem s = WEFT_SEM_INIT(1); return weft_sem_trywait(&s); }
static long c_sem_trywait_empty(void) { weft_sem s = WEFT_SEM_INIT(0); return weft_sem_trywait(&s); }
static long c_sem_post(void) { weft_sem s = WEFT_SEM_INIT(0); return weft_sem_post(&s); }
static long c_sem_post_overflow(void)
{
    weft_sem s;
    if (weft_sem_init(&s, UINT_MAX) < 0)
        return -1000;
    return weft_sem_post(&s);
}

static long c_wg_init_null(void) { return weft_wg_init(NULL); }
static long c_wg_add_null(void) { return weft_wg_add(NULL, 1); }
static long c_wg_done_null(void) { return weft_wg_done(NULL); }
static long c_wg_wait_null(void) { return weft_wg_wait(NULL); }
static long c_wg_add_done(void)
{
    weft_wg w;
    int r = weft_wg_init(&w);
    if (r == 0) r = weft_wg_add(&w, 2);
    if (r == 0) r = weft_wg_done(&w);
    if (r == 0) r = weft_wg_done(&w);
    return r;
}
static long c_wg_done_zero(void) { weft_wg w = WEFT_WG_INIT; return weft_wg_done(&w); }
static long c_wg_add_negative(void)
{
    weft_wg w = WEFT_WG_INIT;
    weft_wg_add(&w, 2);
    long r = weft_wg_add(&w, -3);
    weft_wg_add(&w, -2);
    return r;
}
static long c_wg_wait_zero(void) { weft_wg w = WEFT_WG_INIT; return weft_wg_wait(&w); }

/* --------------------------------------------------------------- channels */

static long c_chan_make(void)
{
    weft_chan *c = weft_chan_make(sizeof(int), 4);
    weft_chan_free(c);
    return c ? 0 : -1;
}
/* elem_size 0 is Go's chan struct{}: a channel, whose values carry nothing */
static long c_chan_make_zero(void)
{
    weft_chan *c = weft_chan_make(0, 1);
    if (!c)
        return -1;
    long r = weft_chan_trysend(c, NULL) == 0 && weft_chan_tryrecv(c, NULL) == 0 ? 0 : -2;
    weft_chan_free(c);
    return r;
}
static long c_chan_make_big_elem(void) { weft_chan *c = weft_chan_make(1 << 20, 1); weft_chan_free(c); return c ? -1 : 0; }
static long c_chan_make_huge(void) { weft_chan *c = weft_chan_make(8, SIZE_MAX / 4); weft_chan_free(c); return c ? -1 : 0; }
static long c_chan_free_null(void) { weft_chan_free(NULL); return 0; }
/* Go's len and cap: plain reads of the channel, from any thread */
static long c_chan_len_cap(void)
{
    weft_chan *c = weft_chan_make(sizeof(int), 4);
    int v = 7;
    if (!c || weft_chan_trysend(c, &v) != 0 || weft_chan_trysend(c, &v) != 0)
        return -1000;
    long r = (long)weft_chan_len(c) * 10 + (long)weft_chan_cap(c);   /* 24 */
    weft_chan_free(c);
    return r;
}
static long c_chan_len_cap_null(void) { return (long)(weft_chan_len(NULL) + weft_chan_cap(NULL)); }

static long c_chan_send(void)
{
    weft_chan *c = weft_chan_make(sizeof(int), 1);
    int v = 1;
    long r = weft_chan_send(c, &v);
    weft_chan_free(c);
    return r;
}
static long c_chan_recv(void)
{
    weft_chan *c = weft_chan_make(sizeof(int), 1);
    int v = 5;
    weft_chan_trysend(c, &v);
    v = 0;
    long r = weft_chan_recv(c, &v);
    weft_chan_free(c);
    return r == 0 && v != 5 ? -1000 : r;
}
static long c_chan_trysend(void)
{
    weft_chan *c = weft_chan_make(sizeof(int), 1);
    int v = 1;
    long r = weft_chan_trysend(c, &v);
    weft_chan_free(c);
    return r;
}
static long c_chan_trysend_full(void)
{
    weft_chan *c = weft_chan_make(sizeof(int), 0);
    int v = 1;
    long r = weft_chan_trysend(c, &v);
    weft_chan_free(c);
    return r;
}
static long c_chan_tryrecv_empty(void)
{
    weft_chan *c = weft_chan_make(sizeof(int), 1);
    long r = weft_chan_tryrecv(c, NULL);
    weft_chan_free(c);
    return r;
}
static long c_chan_close(void)
{
    weft_chan *c = weft_chan_make(sizeof(int), 1);
    long r = weft_chan_close(c);
    weft_chan_free(c);
    return r;
}
static long c_chan_close_twice(void)
{
    weft_chan *c = weft_chan_make(sizeof(int), 1);
    weft_chan_close(c);
    long r = weft_chan_close(c);
    weft_chan_free(c);
    return r;
}
static long c_chan_send_closed(void)
{
    weft_chan *c = weft_chan_make(sizeof(int), 1);
    weft_chan_close(c);
    int v = 1;
    long r = weft_chan_trysend(c, &v);
    weft_chan_free(c);
    return r;
}
static long c_chan_recv_closed(void)
{
    weft_chan *c = weft_chan_make(sizeof(int), 1);
    weft_chan_close(c);
    long r = weft_chan_tryrecv(c, NULL);
    weft_chan_free(c);
    return r;
}
static long c_chan_send_null(void) { int v = 0; return weft_chan_send(NULL, &v); }
static long c_chan_recv_null(void) { return weft_chan_recv(NULL, NULL); }
static long c_chan_trysend_null(void) { int v = 0; return weft_chan_trysend(NULL, &v); }
static long c_chan_tryrecv_null(void) { return weft_chan_tryrecv(NULL, NULL); }
static long c_chan_close_null(void) { return weft_chan_close(NULL); }
static long c_chan_send_null_elem(void)
{
    weft_chan *c = weft_chan_make(sizeof(int), 1);
    long r = weft_chan_trysend(c, NULL);
    long r2 = weft_chan_send(c, NULL);
    weft_chan_free(c);
    return r != r2 ? -1000 : r;
}

static long select_on(int block)
{
    weft_chan *c = weft_chan_make(sizeof(int), 1);
    int v = 3, out = 0;
    weft_chan_trysend(c, &v);
    weft_case cs[2] = { { NULL, WEFT_SEND, &v, 0 }, { c, WEFT_RECV, &out, 0 } };
    long r = block ? weft_select(cs, 2) : weft_tryselect(cs, 2);
    weft_chan_free(c);
    return r == 1 && out != 3 ? -1000 : r;
}
static long c_select(void) { return select_on(1); }
static long c_tryselect(void) { return select_on(0); }
static long c_select_null(void) { return weft_select(NULL, 1); }
static long c_tryselect_null(void) { return weft_tryselect(NULL, 1); }
static long c_select_bad_op(void)
{
    weft_chan *c = weft_chan_make(sizeof(int), 1);
    weft_case cs[1] = { { c, 99, NULL, 0 } };
    long r = weft_select(cs, 1);
    weft_chan_free(c);
    return r;
}
static long c_tryselect_bad_op(void)
{
    weft_chan *c = weft_chan_make(sizeof(int), 1);
    weft_case cs[1] = { { c, 99, NULL, 0 } };
    long r = weft_tryselect(cs, 1);
    weft_chan_free(c);
    return r;
}
static long c_select_too_many(void) { weft_case cs[1] = { { 0 } }; return weft_select(cs, (size_t)1 << 20); }
static long c_tryselect_empty(void) { return weft_tryselect(NULL, 0); }
static long c_select_empty_deadline(void)
{
    int64_t old = weft_deadline((int64_t)(weft_now() + MS));
    long r = weft_select(NULL, 0);
    weft_deadline(old);
    return r;
}

/* -------------------------------------------------------------------- I/O */

static long c_read(void) { int p[2]; full_pipe(p); char b; long r = weft_read(p[0], &b, 1); close2(p); return r; }
static long c_write(void) { int p[2]; full_pipe(p); long r = weft_write(p[1], "y", 1); close2(p); return r; }
static long c_readv(void)
{
    int p[2]; full_pipe(p);
    char b;
    struct iovec v = { &b, 1 };
    long r = weft_readv(p[0], &v, 1);
    close2(p);
    return r;
}
static long c_writev(void)
{
    int p[2]; full_pipe(p);
    struct iovec v = { "y", 1 };
    long r = weft_writev(p[1], &v, 1);
    close2(p);
    return r;
}
static long c_recv(void)
{
    int sv[2]; stream_pair(sv);
    ASSERT_EQ(write(sv[1], "x", 1), 1);
    char b;
    long r = weft_recv(sv[0], &b, 1, 0);
    close2(sv);
    return r;
}
static long c_send(void) { int sv[2]; stream_pair(sv); long r = weft_send(sv[0], "x", 1, 0); close2(sv); return r; }
static long c_recvfrom(void)
{
    int sv[2]; dgram_pair(sv);
    ASSERT_EQ(write(sv[1], "x", 1), 1);
    char b;
    struct sockaddr_storage from;
    socklen_t len = sizeof from;
    long r = weft_recvfrom(sv[0], &b, 1, 0, (struct sockaddr *)&from, &len);
    close2(sv);
    return r;
}
static long c_sendto(void) { int sv[2]; dgram_pair(sv); long r = weft_sendto(sv[0], "x", 1, 0, NULL, 0); close2(sv); return r; }

static long c_accept(void)
{
    uint16_t port;
    int l = io_listen(4, &port);
    int c = io_connect_plain(port);
    long r = weft_accept(l, NULL, NULL);
    if (r >= 0)
        weft_close((int)r);
    weft_close(c);
    weft_close(l);
    return r >= 0 ? 0 : r;
}
static long c_connect(void)
{
    uint16_t port;
    int l = io_listen(4, &port);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = io_addr(port);
    long r = weft_connect(s, (struct sockaddr *)&a, sizeof a);
    weft_close(s);
    weft_close(l);
    return r;
}
static long c_connect_refused(void)
{
    uint16_t port;
    int l = io_listen(1, &port);
    weft_close(l);   /* nobody listens there now */
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = io_addr(port);
    long r = weft_connect(s, (struct sockaddr *)&a, sizeof a);
    weft_close(s);
    return r;
}
static long c_wait_fd(void)
{
    int sv[2]; stream_pair(sv);
    long r = weft_wait_fd(sv[0], POLLOUT);
    close2(sv);
    return r < 0 ? r : (r & POLLOUT) ? 0 : -1000 - r;
}
static long c_close(void) { int p[2]; ASSERT_EQ(pipe2(p, O_CLOEXEC), 0); weft_close(p[1]); return weft_close(p[0]); }

/* bad input */
static long c_read_neg(void) { char b; return weft_read(-1, &b, 1); }
static long c_read_closed(void) { char b; return weft_read(CLOSED_FD, &b, 1); }
static long c_read_null(void) { int p[2]; full_pipe(p); long r = weft_read(p[0], NULL, 1); close2(p); return r; }
static long c_read_huge(void) { int p[2]; full_pipe(p); char b; long r = weft_read(p[0], &b, (size_t)SSIZE_MAX + 1); close2(p); return r; }
static long c_write_neg(void) { return weft_write(-1, "x", 1); }
static long c_write_closed(void) { return weft_write(CLOSED_FD, "x", 1); }
static long c_write_null(void) { int p[2]; full_pipe(p); long r = weft_write(p[1], NULL, 1); close2(p); return r; }
static long c_write_huge(void) { int p[2]; full_pipe(p); long r = weft_write(p[1], "x", (size_t)SSIZE_MAX + 1); close2(p); return r; }
static long c_readv_negcnt(void) { char b; struct iovec v = { &b, 1 }; return weft_readv(0, &v, -1); }
static long c_readv_bigcnt(void) { char b; struct iovec v = { &b, 1 }; return weft_readv(0, &v, IOV_MAX + 1); }
static long c_readv_null(void) { return weft_readv(0, NULL, 1); }
static long c_readv_null_base(void) { struct iovec v = { NULL, 1 }; return weft_readv(0, &v, 1); }
static long c_readv_neg(void) { char b; struct iovec v = { &b, 1 }; return weft_readv(-1, &v, 1); }
static long c_writev_negcnt(void) { struct iovec v = { "x", 1 }; return weft_writev(1, &v, -1); }
static long c_writev_null(void) { return weft_writev(1, NULL, 1); }
static long c_writev_closed(void) { struct iovec v = { "x", 1 }; return weft_writev(CLOSED_FD, &v, 1); }
static long c_recv_neg(void) { char b; return weft_recv(-1, &b, 1, 0); }
static long c_recv_null(void) { return weft_recv(0, NULL, 1, 0); }
static long c_recv_notsock(void) { int p[2]; full_pipe(p); char b; long r = weft_recv(p[0], &b, 1, 0); close2(p); return r; }
static long c_send_neg(void) { return weft_send(-1, "x", 1, 0); }
static long c_send_null(void) { return weft_send(1, NULL, 1, 0); }
static long c_send_closed(void) { return weft_send(CLOSED_FD, "x", 1, 0); }
static long c_recvfrom_nolen(void) { char b; struct sockaddr_storage s; return weft_recvfrom(0, &b, 1, 0, (struct sockaddr *)&s, NULL); }
static long c_recvfrom_neg(void) { char b; return weft_recvfrom(-1, &b, 1, 0, NULL, NULL); }
static long c_sendto_noaddr(void) { return weft_sendto(1, "x", 1, 0, NULL, 16); }
static long c_sendto_neg(void) { return weft_sendto(-1, "x", 1, 0, NULL, 0); }
static long c_accept_neg(void) { return weft_accept(-1, NULL, NULL); }
static long c_accept_closed(void) { return weft_accept(CLOSED_FD, NULL, NULL); }
static long c_accept_nolen(void) { struct sockaddr_storage s; return weft_accept(0, (struct sockaddr *)&s, NULL); }
static long c_accept_notlistening(void)
{
    int sv[2]; stream_pair(sv);
    long r = weft_accept(sv[0], NULL, NULL);
    close2(sv);
    return r;
}
static long c_connect_null(void) { return weft_connect(0, NULL, 16); }
static long c_connect_neg(void) { struct sockaddr_in a = io_addr(1); return weft_connect(-1, (struct sockaddr *)&a, sizeof a); }
static long c_wait_fd_noevents(void) { return weft_wait_fd(0, 0); }
static long c_wait_fd_badevents(void) { return weft_wait_fd(0, 1 << 20); }
static long c_wait_fd_neg(void) { return weft_wait_fd(-1, POLLIN); }
static long c_wait_fd_closed(void) { return weft_wait_fd(CLOSED_FD, POLLIN); }
static long c_close_neg(void) { return weft_close(-1); }
static long c_close_closed(void) { return weft_close(CLOSED_FD); }

static void *forty_two(void *arg) { return (void *)42; }
static long c_blocking(void)
{
    void *ret = NULL;
    int r = weft_blocking(forty_two, NULL, &ret);
    return r < 0 ? r : ret == (void *)42 ? 0 : -1000;
}
static long c_blocking_null(void) { return weft_blocking(NULL, NULL, NULL); }

static long c_getaddrinfo(void)
{
    struct addrinfo h = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    int r = weft_getaddrinfo("127.0.0.1", "80", &h, &res);
    if (r == 0) {
        if (!res)
            return -1000;
        freeaddrinfo(res);
    }
    return r;
}
static long c_getaddrinfo_nores(void) { return weft_getaddrinfo("127.0.0.1", "80", NULL, NULL); }
static long c_getaddrinfo_noname(void)
{
    struct addrinfo *res = (struct addrinfo *)1;
    int r = weft_getaddrinfo(NULL, NULL, NULL, &res);
    return r < 0 && res != NULL ? -1000 : r;
}

static long c_io_backend(void)
{
    const char *b = weft_io_backend(), *want = getenv("WEFT_IO");
    return !strcmp(b, "none") ? 0 : want && !strcmp(b, want) ? 1 : -1000;
}

/* ------------------------------------------------------------ diagnostics */

static long c_backtrace_self(void) { void *pcs[16]; return weft_backtrace(NULL, pcs, 16); }
static long c_backtrace_nopcs(void) { return weft_backtrace(NULL, NULL, 4); }
static long c_backtrace_negmax(void) { void *pcs[1]; return weft_backtrace(NULL, pcs, -1); }
static long c_backtrace_other(void)
{
    weft_fiber *f;
    int r = spawn_sleeper(&f);
    if (r < 0)
        return r;
    void *pcs[16];
    long n = weft_backtrace(f, pcs, 16);
    finish(f);
    return n == -EBUSY ? 0 : n;   /* it may be on a worker just now */
}
static long c_backtrace_print(void)
{
    void *pcs[4];
    int n = weft_backtrace(NULL, pcs, 4);
    int fd = devnull();
    long r = weft_backtrace_print(fd, pcs, n > 0 ? n : 0);
    close(fd);
    return r;
}
static long c_backtrace_print_neg(void) { void *pcs[1] = { 0 }; return weft_backtrace_print(-1, pcs, 1); }
static long c_backtrace_print_negn(void) { return weft_backtrace_print(2, NULL, -1); }
static long c_backtrace_print_nopcs(void) { return weft_backtrace_print(2, NULL, 3); }
static long c_dump(void) { int fd = devnull(); long r = weft_dump(fd); close(fd); return r; }
static long c_dump_neg(void) { return weft_dump(-1); }
static long c_stats(void) { weft_stats_t st; return weft_stats(&st); }
static long c_stats_null(void) { return weft_stats(NULL); }

/* ------------------------------------------ siblings that report errors */

/* Calls added to weft.h on main while this table was written (issue 15
 * #10). Declared weak: in a tree without them their rows say NOT_BUILT and
 * are skipped; merged, they run like every other row. */
#define NOT_BUILT (LONG_MIN + 6)
#define WEAK __attribute__((weak))
WEFT_API int weft_deadline_set(int64_t abs_ns, int64_t *old) WEAK;
WEFT_API int weft_deadline_get(int64_t *abs_ns) WEAK;
WEFT_API int weft_sem_destroy(weft_sem *s) WEAK;
WEFT_API int weft_wg_destroy(weft_wg *w) WEAK;
WEFT_API int weft_chan_new(weft_chan **c, size_t elem_size, size_t capacity) WEAK;
WEFT_API int weft_resolve(const char *node, const char *service,
                          const struct addrinfo *hints, struct addrinfo **res, int *eai) WEAK;
#define HAVE(fn) if (!(fn)) return NOT_BUILT

static long c_deadline_set(void)
{
    HAVE(weft_deadline_set);
    int64_t old = 5, again = 5;
    int r = weft_deadline_set((int64_t)(weft_now() + 1000 * MS), &old);
    if (r < 0)
        return r;
    r = weft_deadline_set(old, &again);
    return r < 0 ? r : old == -1 && again > 0 ? 0 : -1000;
}
static long c_deadline_set_bad(void) { HAVE(weft_deadline_set); return weft_deadline_set(-5, NULL); }
static long c_deadline_get(void) { HAVE(weft_deadline_get); int64_t d = 0; int r = weft_deadline_get(&d); return r < 0 ? r : d == -1 ? 0 : -1000; }
static long c_deadline_get_null(void) { HAVE(weft_deadline_get); return weft_deadline_get(NULL); }
static long c_sem_destroy(void) { HAVE(weft_sem_destroy); weft_sem s = WEFT_SEM_INIT(2); return weft_sem_destroy(&s); }
static long c_sem_destroy_null(void) { HAVE(weft_sem_destroy); return weft_sem_destroy(NULL); }
static long c_wg_destroy(void) { HAVE(weft_wg_destroy); weft_wg w = WEFT_WG_INIT; weft_wg_add(&w, 1); return weft_wg_destroy(&w); }
static long c_wg_destroy_null(void) { HAVE(weft_wg_destroy); return weft_wg_destroy(NULL); }
static long c_chan_new(void)
{
    HAVE(weft_chan_new);
    weft_chan *c = NULL;
    int r = weft_chan_new(&c, sizeof(int), 2);
    if (r == 0 && !c)
        return -1000;
    weft_chan_free(c);
    return r;
}
static long c_chan_new_null(void) { HAVE(weft_chan_new); return weft_chan_new(NULL, 4, 1); }
static long c_chan_new_zero(void)
{
    HAVE(weft_chan_new);
    weft_chan *c = NULL;
    int r = weft_chan_new(&c, 0, 1);   /* elem_size 0: a channel of empty values */
    if (r == 0 && !c)
        return -1000;
    weft_chan_free(c);
    return r;
}
static long c_resolve(void)
{
    HAVE(weft_resolve);
    struct addrinfo h = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    int eai = -1;
    int r = weft_resolve("127.0.0.1", "80", &h, &res, &eai);
    if (r == 0) {
        if (!res || eai != 0)
            return -1000;
        freeaddrinfo(res);
    }
    return r;
}
static long c_resolve_nores(void) { HAVE(weft_resolve); return weft_resolve("127.0.0.1", "80", NULL, NULL, NULL); }
static long c_resolve_noname(void)
{
    HAVE(weft_resolve);
    struct addrinfo *res = NULL;
    int eai = 0;
    int r = weft_resolve(NULL, NULL, NULL, &res, &eai);
    return r == -ENOENT && eai != EAI_NONAME ? -1000 : r;
}

/* ----------------------------------------------------------------- table */

/* The thread, outside and edge columns of a call that needs a fiber
 * (waits, mutex ownership, deadlines, fiber-local storage) */
#define NOFIBER -EPERM, -EPERM, EDGE
/* A call that behaves the same everywhere */
#define ALL(v) v, v, v, EDGE
/* Needs a runtime: fine from a thread during weft_run, -EPERM outside */
#define RUNTIME(v) v, v, -EPERM, EDGE

#define ROW(call, input, fn, ...) { call, input, fn, { __VA_ARGS__ }, 0, NULL }
#define ROWP(mask, why, call, input, fn, ...) { call, input, fn, { __VA_ARGS__ }, mask, why }

#define ISSUE1 "issue 15 #1: weft_accept from a plain thread or outside weft_run reads op.rec (NULL) on success"
#define ISSUE2 "issue 15 #2: weft_spawn/weft_stats/weft_dump from a plain thread while weft_run starts or stops"
#define ISSUE9 "issue 15 #9: a stale handle acts on the fiber that reuses its record"
#define WAITFD "weft_wait_fd(-1) from a plain thread polls a negative fd, which poll(2) ignores: blocks forever"

static const struct row rows[] = {
    /* runtime */
    ROW("weft_run", "main returns", c_run, -EBUSY, -EBUSY, 0, OK_OR_NEG),
    ROW("weft_run", "main_fn NULL", c_run_null_main, ALL(-EINVAL)),
    ROW("weft_run", "cfg.flags 1", c_run_flags, ALL(-EINVAL)),
    ROW("weft_run", "cfg.workers 5000", c_run_workers, -EBUSY, -EBUSY, -EINVAL, EDGE),
    ROW("weft_run", "cfg.stack_size 1", c_run_stack, -EBUSY, -EBUSY, -EINVAL, EDGE),
    /* fibers. Spawns from a plain thread wait for ISSUE2 in the edge column;
     * its fix may accept such a spawn (the fiber then runs: checked at the
     * end) or refuse it with an errno, so the rows that spawn there take
     * OK_OR_NEG. */
    ROW("weft_spawn", "detached", c_spawn_detached, 0, 0, -EPERM, OK_OR_NEG),
    ROW("weft_spawn", "then weft_join", c_spawn_join, 0, -EPERM, -EPERM, OK_OR_NEG),
    ROW("weft_spawn", "f NULL, joinable", c_spawn_null_out, RUNTIME(-EINVAL)),
    ROW("weft_spawn", "fn NULL", c_spawn_null_fn, RUNTIME(-EINVAL)),
    ROW("weft_spawn", "unknown flag", c_spawn_bad_flags, RUNTIME(-EINVAL)),
    ROW("weft_spawn", "stack_size 1", c_spawn_tiny_stack, RUNTIME(-EINVAL)),
    ROW("weft_spawn", "stack_size 4 GiB", c_spawn_huge_stack, RUNTIME(-EINVAL)),
    ROW("weft_join", "NULL", c_join_null, ALL(-EINVAL)),
    ROW("weft_join", "weft_self()", c_join_self, -EDEADLK, -EINVAL, -EINVAL, EDGE),
    ROW("weft_join", "a live fiber", c_join_live, 0, -EPERM, -EPERM, OK_OR_NEG),
    ROW("weft_join", "joined already", c_join_twice, -EINVAL, NA, NA, NA),
    ROW("weft_join", "stale handle, record reused", c_join_stale, -EINVAL, NA, NA, NA),
    ROW("weft_detach", "NULL", c_detach_null, ALL(-EINVAL)),
    ROW("weft_detach", "a live fiber", c_detach_live, 0, 0, -EPERM, OK_OR_NEG),
    ROW("weft_detach", "stale handle, record reused", c_detach_stale, -EINVAL, NA, NA, NA),
    ROW("weft_cancel", "NULL", c_cancel_null, ALL(-EINVAL)),
    ROW("weft_cancel", "a live fiber", c_cancel_live, 0, 0, -EPERM, OK_OR_NEG),
    ROW("weft_cancel", "stale handle, record reused", c_cancel_stale, -EINVAL, NA, NA, NA),
    ROW("weft_cancelled", "", c_cancelled, ALL(0)),
    ROW("weft_yield", "", c_yield, ALL(0)),
    ROW("weft_self", "!= NULL", c_self, 1, 0, 0, EDGE),
    ROW("weft_id", "NULL", c_id_null, ALL(0)),
    ROW("weft_id", "weft_self() > 0", c_id_self, 1, 0, 0, EDGE),
    ROW("weft_name", "NULL is \"\"", c_name_null, ALL(0)),
    ROW("weft_name", "weft_self()", c_name_self, ALL(0)),
    ROW("weft_worker_id", "", c_worker_id, OK, -1, -1, EDGE),
    /* time */
    ROW("weft_now", "> 0", c_now, ALL(1)),
    ROW("weft_sleep", "1 us", c_sleep, ALL(0)),
    ROW("weft_sleep", "0", c_sleep_zero, ALL(0)),
    ROW("weft_deadline", "set and take back", c_deadline, 0, NOFIBER),
    ROW("weft_deadline", "in the past, then sleep", c_deadline_past, -ETIMEDOUT, NOFIBER),
    /* fiber-local storage */
    ROW("weft_key_create", "key NULL", c_key_create_null, ALL(-EINVAL)),
    ROW("weft_key_create", "then weft_key_delete", c_key_create_delete, ALL(0)),
    ROW("weft_key_delete", "deleted already", c_key_delete_twice, ALL(-EINVAL)),
    ROW("weft_key_delete", "key 1<<30", c_key_delete_bad, ALL(-EINVAL)),
    ROW("weft_setspecific", "then weft_getspecific", c_setspecific, 0, NOFIBER),
    ROW("weft_setspecific", "key 1<<30", c_setspecific_bad, ALL(-EINVAL)),
    ROW("weft_getspecific", "key 1<<30 is NULL", c_getspecific_bad, ALL(0)),
    /* sync */
    ROW("weft_mutex_init", "NULL", c_mutex_init_null, ALL(-EINVAL)),
    ROW("weft_mutex_lock", "NULL", c_mutex_lock_null, ALL(-EINVAL)),
    ROW("weft_mutex_trylock", "NULL", c_mutex_trylock_null, ALL(-EINVAL)),
    ROW("weft_mutex_unlock", "NULL", c_mutex_unlock_null, ALL(-EINVAL)),
    ROW("weft_mutex_destroy", "NULL", c_mutex_destroy_null, ALL(-EINVAL)),
    ROW("weft_mutex_lock", "then unlock", c_mutex_lock, 0, NOFIBER),
    ROW("weft_mutex_trylock", "then unlock", c_mutex_trylock, 0, NOFIBER),
    ROW("weft_mutex_lock", "held by the caller", c_mutex_relock, -EDEADLK, NOFIBER),
    ROW("weft_mutex_unlock", "not locked", c_mutex_unlock_unowned, -EPERM, NOFIBER),
    ROW("weft_mutex_destroy", "unlocked", c_mutex_destroy, ALL(0)),
    ROW("weft_mutex_destroy", "locked", c_mutex_destroy_locked, -EBUSY, NOFIBER),
    ROW("weft_cond_init", "NULL", c_cond_init_null, ALL(-EINVAL)),
    ROW("weft_cond_signal", "NULL", c_cond_signal_null, ALL(-EINVAL)),
    ROW("weft_cond_broadcast", "NULL", c_cond_broadcast_null, ALL(-EINVAL)),
    ROW("weft_cond_destroy", "NULL", c_cond_destroy_null, ALL(-EINVAL)),
    ROW("weft_cond_wait", "cond NULL", c_cond_wait_null, ALL(-EINVAL)),
    ROW("weft_cond_init", "signal, broadcast, destroy", c_cond_ops, ALL(0)),
    ROW("weft_cond_wait", "mutex not held", c_cond_wait_unlocked, -EPERM, NOFIBER),
    ROW("weft_cond_wait", "deadline 1 ms", c_cond_wait_timed, -ETIMEDOUT, NOFIBER),
    ROW("weft_sem_init", "NULL", c_sem_init_null, ALL(-EINVAL)),
    ROW("weft_sem_wait", "NULL", c_sem_wait_null, ALL(-EINVAL)),
    ROW("weft_sem_trywait", "NULL", c_sem_trywait_null, ALL(-EINVAL)),
    ROW("weft_sem_post", "NULL", c_sem_post_null, ALL(-EINVAL)),
    ROW("weft_sem_wait", "count 1", c_sem_wait, 0, NOFIBER),
    ROW("weft_sem_trywait", "count 1", c_sem_trywait, ALL(0)),
    ROW("weft_sem_trywait", "count 0", c_sem_trywait_empty, ALL(-EAGAIN)),
    ROW("weft_sem_post", "count 0", c_sem_post, ALL(0)),
    ROW("weft_sem_post", "count UINT_MAX", c_sem_post_overflow, ALL(-EOVERFLOW)),
    ROW("weft_wg_init", "NULL", c_wg_init_null, ALL(-EINVAL)),
    ROW("weft_wg_add", "NULL", c_wg_add_null, ALL(-EINVAL)),
    ROW("weft_wg_done", "NULL", c_wg_done_null, ALL(-EINVAL)),
    ROW("weft_wg_wait", "NULL", c_wg_wait_null, ALL(-EINVAL)),
    ROW("weft_wg_add", "2, then done twice", c_wg_add_done, ALL(0)),
    ROW("weft_wg_done", "count 0", c_wg_done_zero, ALL(-EINVAL)),
    ROW("weft_wg_add", "below zero", c_wg_add_negative, ALL(-EINVAL)),
    ROW("weft_wg_wait", "count 0", c_wg_wait_zero, 0, NOFIBER),
    /* channels */
    ROW("weft_chan_make", "int, capacity 4", c_chan_make, ALL(0)),
    ROW("weft_chan_make", "elem_size 0, a token through it", c_chan_make_zero, ALL(0)),
    ROW("weft_chan_make", "elem_size 1 MiB is NULL", c_chan_make_big_elem, ALL(0)),
    ROW("weft_chan_make", "capacity SIZE_MAX/4 is NULL", c_chan_make_huge, ALL(0)),
    ROW("weft_chan_free", "NULL", c_chan_free_null, ALL(0)),
    ROW("weft_chan_len", "two of four buffered (len*10+cap)", c_chan_len_cap, ALL(24)),
    ROW("weft_chan_cap", "NULL (len+cap)", c_chan_len_cap_null, ALL(0)),
    ROW("weft_chan_send", "room in the buffer", c_chan_send, 0, NOFIBER),
    ROW("weft_chan_recv", "one queued", c_chan_recv, 0, NOFIBER),
    ROW("weft_chan_trysend", "room in the buffer", c_chan_trysend, ALL(0)),
    ROW("weft_chan_trysend", "unbuffered, no receiver", c_chan_trysend_full, ALL(-EAGAIN)),
    ROW("weft_chan_tryrecv", "empty", c_chan_tryrecv_empty, ALL(-EAGAIN)),
    ROW("weft_chan_close", "open", c_chan_close, ALL(0)),
    ROW("weft_chan_close", "closed already", c_chan_close_twice, ALL(-EPIPE)),
    ROW("weft_chan_trysend", "closed", c_chan_send_closed, ALL(-EPIPE)),
    ROW("weft_chan_tryrecv", "closed and drained", c_chan_recv_closed, ALL(-EPIPE)),
    ROW("weft_chan_send", "chan NULL", c_chan_send_null, ALL(-EINVAL)),
    ROW("weft_chan_recv", "chan NULL", c_chan_recv_null, ALL(-EINVAL)),
    ROW("weft_chan_trysend", "chan NULL", c_chan_trysend_null, ALL(-EINVAL)),
    ROW("weft_chan_tryrecv", "chan NULL", c_chan_tryrecv_null, ALL(-EINVAL)),
    ROW("weft_chan_close", "NULL", c_chan_close_null, ALL(-EINVAL)),
    ROW("weft_chan_send", "elem NULL", c_chan_send_null_elem, ALL(-EINVAL)),
    ROW("weft_select", "one ready case", c_select, 1, NOFIBER),
    ROW("weft_select", "cases NULL, n 1", c_select_null, ALL(-EINVAL)),
    ROW("weft_select", "bad op", c_select_bad_op, -EINVAL, NOFIBER),
    ROW("weft_select", "n 1<<20", c_select_too_many, ALL(-EINVAL)),
    ROW("weft_select", "no case, deadline 1 ms", c_select_empty_deadline, -ETIMEDOUT, NOFIBER),
    ROW("weft_tryselect", "one ready case", c_tryselect, ALL(1)),
    ROW("weft_tryselect", "cases NULL, n 1", c_tryselect_null, ALL(-EINVAL)),
    ROW("weft_tryselect", "bad op", c_tryselect_bad_op, ALL(-EINVAL)),
    ROW("weft_tryselect", "no case", c_tryselect_empty, ALL(-EAGAIN)),
    /* I/O: from a plain thread or outside weft_run, the blocking syscall */
    ROW("weft_read", "pipe with a byte", c_read, ALL(1)),
    ROW("weft_write", "pipe with room", c_write, ALL(1)),
    ROW("weft_readv", "pipe with a byte", c_readv, ALL(1)),
    ROW("weft_writev", "pipe with room", c_writev, ALL(1)),
    ROW("weft_recv", "socket with a byte", c_recv, ALL(1)),
    ROW("weft_send", "socket with room", c_send, ALL(1)),
    ROW("weft_recvfrom", "datagram queued", c_recvfrom, ALL(1)),
    ROW("weft_sendto", "connected datagram socket", c_sendto, ALL(1)),
    ROW("weft_accept", "connection queued", c_accept, ALL(0)),
    ROW("weft_connect", "listening port", c_connect, ALL(0)),
    ROW("weft_connect", "closed port", c_connect_refused, ALL(-ECONNREFUSED)),
    ROW("weft_wait_fd", "POLLOUT, writable socket", c_wait_fd, ALL(0)),
    ROW("weft_close", "open pipe", c_close, ALL(0)),
    ROW("weft_read", "fd -1", c_read_neg, ALL(-EBADF)),
    ROW("weft_read", "closed fd", c_read_closed, ALL(-EBADF)),
    ROW("weft_read", "buf NULL", c_read_null, ALL(-EINVAL)),
    ROW("weft_read", "n > SSIZE_MAX", c_read_huge, ALL(-EINVAL)),
    ROW("weft_write", "fd -1", c_write_neg, ALL(-EBADF)),
    ROW("weft_write", "closed fd", c_write_closed, ALL(-EBADF)),
    ROW("weft_write", "buf NULL", c_write_null, ALL(-EINVAL)),
    ROW("weft_write", "n > SSIZE_MAX", c_write_huge, ALL(-EINVAL)),
    ROW("weft_readv", "iovcnt -1", c_readv_negcnt, ALL(-EINVAL)),
    ROW("weft_readv", "iovcnt IOV_MAX+1", c_readv_bigcnt, ALL(-EINVAL)),
    ROW("weft_readv", "iov NULL", c_readv_null, ALL(-EINVAL)),
    ROW("weft_readv", "iov_base NULL", c_readv_null_base, ALL(-EINVAL)),
    ROW("weft_readv", "fd -1", c_readv_neg, ALL(-EBADF)),
    ROW("weft_writev", "iovcnt -1", c_writev_negcnt, ALL(-EINVAL)),
    ROW("weft_writev", "iov NULL", c_writev_null, ALL(-EINVAL)),
    ROW("weft_writev", "closed fd", c_writev_closed, ALL(-EBADF)),
    ROW("weft_recv", "fd -1", c_recv_neg, ALL(-EBADF)),
    ROW("weft_recv", "buf NULL", c_recv_null, ALL(-EINVAL)),
    ROW("weft_recv", "a pipe", c_recv_notsock, ALL(-ENOTSOCK)),
    ROW("weft_send", "fd -1", c_send_neg, ALL(-EBADF)),
    ROW("weft_send", "buf NULL", c_send_null, ALL(-EINVAL)),
    ROW("weft_send", "closed fd", c_send_closed, ALL(-EBADF)),
    ROW("weft_recvfrom", "from without fromlen", c_recvfrom_nolen, ALL(-EINVAL)),
    ROW("weft_recvfrom", "fd -1", c_recvfrom_neg, ALL(-EBADF)),
    ROW("weft_sendto", "to NULL, tolen 16", c_sendto_noaddr, ALL(-EINVAL)),
    ROW("weft_sendto", "fd -1", c_sendto_neg, ALL(-EBADF)),
    ROW("weft_accept", "fd -1", c_accept_neg, ALL(-EBADF)),
    ROW("weft_accept", "closed fd", c_accept_closed, ALL(-EBADF)),
    ROW("weft_accept", "addr without addrlen", c_accept_nolen, ALL(-EINVAL)),
    ROW("weft_accept", "not listening", c_accept_notlistening, ALL(-EINVAL)),
    ROW("weft_connect", "addr NULL", c_connect_null, ALL(-EINVAL)),
    ROW("weft_connect", "fd -1", c_connect_neg, ALL(-EBADF)),
    ROW("weft_wait_fd", "events 0", c_wait_fd_noevents, ALL(-EINVAL)),
    ROW("weft_wait_fd", "unknown event", c_wait_fd_badevents, ALL(-EINVAL)),
    ROW("weft_wait_fd", "fd -1", c_wait_fd_neg, ALL(-EBADF)),
    ROW("weft_wait_fd", "closed fd", c_wait_fd_closed, ALL(-EBADF)),
    ROW("weft_close", "fd -1", c_close_neg, ALL(-EBADF)),
    ROW("weft_close", "closed fd", c_close_closed, ALL(-EBADF)),
    ROW("weft_blocking", "fn returns 42", c_blocking, ALL(0)),
    ROW("weft_blocking", "fn NULL", c_blocking_null, ALL(-EINVAL)),
    ROW("weft_getaddrinfo", "127.0.0.1:80, numeric", c_getaddrinfo, ALL(0)),
    ROW("weft_getaddrinfo", "res NULL", c_getaddrinfo_nores, ALL(-EINVAL)),
    ROW("weft_getaddrinfo", "node and service NULL", c_getaddrinfo_noname, ALL(EAI_NONAME)),
    ROW("weft_io_backend", "WEFT_IO's name, \"none\" outside", c_io_backend, 1, 1, 0, EDGE),
    /* the error-reporting siblings (weak: skipped where not built yet) */
    ROW("weft_deadline_set", "set and take back", c_deadline_set, 0, NOFIBER),
    ROW("weft_deadline_set", "abs_ns -5", c_deadline_set_bad, ALL(-EINVAL)),
    ROW("weft_deadline_get", "none set", c_deadline_get, 0, NOFIBER),
    ROW("weft_deadline_get", "NULL", c_deadline_get_null, ALL(-EINVAL)),
    ROW("weft_sem_destroy", "count 2, no waiter", c_sem_destroy, ALL(0)),
    ROW("weft_sem_destroy", "NULL", c_sem_destroy_null, ALL(-EINVAL)),
    ROW("weft_wg_destroy", "count 1, no waiter", c_wg_destroy, ALL(0)),
    ROW("weft_wg_destroy", "NULL", c_wg_destroy_null, ALL(-EINVAL)),
    ROW("weft_chan_new", "int, capacity 2", c_chan_new, ALL(0)),
    ROW("weft_chan_new", "c NULL", c_chan_new_null, ALL(-EINVAL)),
    ROW("weft_chan_new", "elem_size 0", c_chan_new_zero, ALL(0)),
    ROW("weft_resolve", "127.0.0.1:80, numeric", c_resolve, ALL(0)),
    ROW("weft_resolve", "res NULL", c_resolve_nores, ALL(-EINVAL)),
    ROW("weft_resolve", "node and service NULL", c_resolve_noname, ALL(-ENOENT)),
    /* diagnostics */
    ROW("weft_backtrace", "NULL: own stack", c_backtrace_self, ALL(POS)),
    ROW("weft_backtrace", "pcs NULL, max 4", c_backtrace_nopcs, ALL(-EINVAL)),
    ROW("weft_backtrace", "max -1", c_backtrace_negmax, ALL(-EINVAL)),
    ROW("weft_backtrace", "a parked fiber", c_backtrace_other, OK, OK, -EPERM, OK_OR_NEG),
    ROW("weft_backtrace_print", "to /dev/null", c_backtrace_print, ALL(0)),
    ROW("weft_backtrace_print", "fd -1", c_backtrace_print_neg, ALL(-EINVAL)),
    ROW("weft_backtrace_print", "n -1", c_backtrace_print_negn, ALL(-EINVAL)),
    ROW("weft_backtrace_print", "pcs NULL, n 3", c_backtrace_print_nopcs, ALL(-EINVAL)),
    ROW("weft_dump", "to /dev/null", c_dump, RUNTIME(0)),
    ROW("weft_dump", "fd -1", c_dump_neg, ALL(-EINVAL)),
    ROW("weft_stats", "", c_stats, RUNTIME(0)),
    ROW("weft_stats", "NULL", c_stats_null, ALL(-EINVAL)),
};
#define NROWS (sizeof rows / sizeof rows[0])

/* ------------------------------------------------------------ the runner */

static const char *errname(long v)
{
    const char *n = v < 0 && v > -4096 ? strerrorname_np((int)-v) : NULL;
    return n ? n : "?";
}

static void fmt_want(char *buf, size_t n, const struct row *r, int ctx)
{
    long w = r->want[ctx];
    if (w == EDGE) {
        char a[64], b[64];
        fmt_want(a, sizeof a, r, THREAD);
        fmt_want(b, sizeof b, r, OUTSIDE);
        snprintf(buf, n, "%s or %s", a, b);
    } else if (w == OK) {
        snprintf(buf, n, ">= 0");
    } else if (w == POS) {
        snprintf(buf, n, "> 0");
    } else if (w == OK_OR_NEG) {
        snprintf(buf, n, ">= 0 or -errno");
    } else if (w < 0 && w > -4096) {
        snprintf(buf, n, "%ld (-%s)", w, errname(w));
    } else {
        snprintf(buf, n, "%ld", w);
    }
}

static bool match(long w, long got)
{
    switch (w) {
    case OK: return got >= 0;
    case POS: return got > 0;
    case OK_OR_NEG: return got >= 0 || got > -4096;
    default: return got == w;
    }
}

static bool row_ok(const struct row *r, int ctx, long got)
{
    if (r->want[ctx] == EDGE)
        return match(r->want[THREAD], got) || match(r->want[OUTSIDE], got);
    return match(r->want[ctx], got);
}

/* WEFT_TEST_PENDING=1 runs every pending cell; any other value, those
 * whose `pending` text contains it ("#2"). */
static bool run_pending(const char *why)
{
    const char *e = getenv("WEFT_TEST_PENDING");
    if (!e || !*e || !strcmp(e, "0"))
        return false;
    return !strcmp(e, "1") || strstr(why, e);
}

/* The cell running now, for the hang watchdog and the crash handler. */
static _Atomic(const struct row *) cur_row;
static _Atomic uint64_t cur_since;
static char crash_msg[256];
static _Atomic int watch_stop;

static void note_cell(const struct row *r, int ctx)
{
    snprintf(crash_msg, sizeof crash_msg, "\ncell died: %s(%s) %s\n", r->call, r->input, ctx_name[ctx]);
    atomic_store(&cur_since, weft_now());
    atomic_store(&cur_row, r);
}

static void on_crash(int sig)
{
    ssize_t w = write(2, crash_msg, strlen(crash_msg));
    (void)w;
    signal(sig, SIG_DFL);
    raise(sig);
}

static void *hang_watch(void *arg)
{
    uint64_t limit = (uint64_t)(5e9 * test_time_scale());
    while (!atomic_load(&watch_stop)) {
        usleep(50000);
        uint64_t since = atomic_load(&cur_since);
        if (atomic_load(&cur_row) && since && weft_now() - since > limit) {
            fprintf(stderr, "%s(hung for more than %.0f s)\n", crash_msg + 1, limit / 1e9);
            _exit(3);
        }
    }
    return arg;
}

static pthread_t watcher;

static void guard_start(void)
{
    ASSERT(fcntl(CLOSED_FD, F_GETFD) < 0);
    signal(SIGSEGV, on_crash);
    signal(SIGBUS, on_crash);
    signal(SIGABRT, on_crash);
    atomic_store(&watch_stop, 0);
    ASSERT_EQ(pthread_create(&watcher, NULL, hang_watch, NULL), 0);
}

static void guard_stop(void)
{
    atomic_store(&watch_stop, 1);
    pthread_join(watcher, NULL);
}

static _Atomic int failures, skipped;
static _Atomic bool told[sizeof rows / sizeof rows[0]];   /* the edge loop reports a cell once */

/* Run every row meant for ctx once; failures are printed and counted. */
static void run_rows(int ctx)
{
    const char *only = getenv("WEFT_CONTEXTS_CALL");   /* one call's rows, to chase a cell */
    for (size_t i = 0; i < NROWS; i++) {
        const struct row *r = &rows[i];
        if (r->want[ctx] == NA || (only && *only && strcmp(only, r->call)))
            continue;
        if ((r->pmask & (1u << ctx)) && !run_pending(r->pending)) {
            if (ctx != EDGE_CTX || atomic_load(&in_ctx) == 0)
                atomic_fetch_add(&skipped, 1);
            continue;
        }
        note_cell(r, ctx);
        long got = r->fn();
        atomic_store(&cur_row, NULL);
        if (got == NOT_BUILT)
            continue;
        if (!row_ok(r, ctx, got) && !atomic_exchange(&told[i], true)) {
            char w[160];
            fmt_want(w, sizeof w, r, ctx);
            fprintf(stderr, "FAILED CELL  %s(%s) %s: expected %s, got %ld%s%s%s\n", r->call,
                    r->input, ctx_name[ctx], w, got, got < 0 ? " (-" : "",
                    got < 0 ? errname(got) : "", got < 0 ? ")" : "");
            if (r->pending)
                fprintf(stderr, "             (waits for %s)\n", r->pending);
            atomic_fetch_add(&failures, 1);
        }
    }
}

static void report(int ctx)
{
    if (atomic_load(&skipped))
        printf("%d cells %s skipped: they wait for a fix (WEFT_TEST_PENDING=1 runs them; or =#N, those of item N)\n",
               atomic_load(&skipped), ctx_name[ctx]);
    if (atomic_load(&failures))
        test_fail(__FILE__, __LINE__, "%d cells %s failed", atomic_load(&failures), ctx_name[ctx]);
}

/* Wait (bounded) until every fiber the rows spawned detached has run. */
static void settle_spawns(void)
{
    for (int i = 0; i < 2000 && atomic_load(&ran) != atomic_load(&spawned); i++)
        weft_sleep(MS);
    ASSERT_EQ(atomic_load(&ran), atomic_load(&spawned));
}

static void *fiber_main(void *arg)
{
    run_rows(FIBER);
    settle_spawns();
    return arg;
}

IO_TEST(contexts_fiber)
{
    guard_start();
    /* One worker: a new spawn takes the record the last join freed, which
     * the stale-handle rows rely on. */
    weft_config cfg = { .workers = 1 };
    test_run_cfg(&cfg, fiber_main, NULL);
    guard_stop();
    report(FIBER);
}

static void *thread_rows(void *arg) { run_rows(THREAD); return arg; }
static void *join_thread(void *arg) { pthread_join(*(pthread_t *)arg, NULL); return NULL; }

static void *thread_main(void *arg)
{
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, thread_rows, NULL), 0);
    ASSERT_EQ(weft_blocking(join_thread, &t, NULL), 0);
    settle_spawns();
    return arg;
}

IO_TEST(contexts_thread)
{
    guard_start();
    test_run(thread_main, NULL);
    guard_stop();
    report(THREAD);
}

IO_TEST(contexts_outside)
{
    guard_start();
    run_rows(OUTSIDE);
    guard_stop();
    ASSERT_EQ(atomic_load(&spawned), 0);
    report(OUTSIDE);
}

/* ---------------------------------------------------------- start / stop */

static _Atomic int edge_stop, edge_passes;

static void *edge_rows(void *arg)
{
    atomic_store(&in_ctx, 0);
    while (!atomic_load(&edge_stop)) {
        run_rows(EDGE_CTX);
        atomic_store(&in_ctx, 1);   /* count skipped cells once */
        atomic_fetch_add(&edge_passes, 1);
    }
    return arg;
}

static void *short_main(void *arg)
{
    if ((uintptr_t)arg & 1)
        weft_yield();
    return arg;
}

IO_TEST(contexts_edge)
{
    guard_start();
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, edge_rows, NULL), 0);
    /* A second; on a slow machine (valgrind, qemu) up to a second per unit
     * of WEFT_TEST_TIME_SCALE, until the table went round a few times. */
    uint64_t start = weft_now(), end = start + (uint64_t)(1e9 * test_time_scale());
    unsigned runs = 0, busy = 0;
    weft_config cfg = { .workers = 2 };
    for (uintptr_t i = 0; weft_now() < end; i++) {
        if (weft_now() - start > 1000 * MS && atomic_load(&edge_passes) >= 3 && runs >= 20)
            break;
        int r = weft_run(&cfg, short_main, (void *)i, NULL);
        if (r == -EBUSY)
            busy++;   /* the other thread's weft_run row got there first */
        else
            ASSERT_EQ(r, 0);
        runs++;
    }
    atomic_store(&edge_stop, 1);
    pthread_join(t, NULL);
    guard_stop();
    /* every spawn that said 0 ran in the runtime that accepted it */
    ASSERT_EQ(atomic_load(&ran), atomic_load(&spawned));
    printf("%u runs of weft_run (%u busy), %d passes over the table\n", runs, busy,
           atomic_load(&edge_passes));
    report(EDGE_CTX);
}
