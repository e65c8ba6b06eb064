/*
 * Calls whose errors used to be ambiguous, and their siblings that keep
 * them apart: weft_deadline_set/get (weft_deadline's -1 is both "none" and
 * -EPERM), weft_chan_new (weft_chan_make's NULL is both bad arguments and
 * no memory), weft_resolve (weft_getaddrinfo's EAI_* codes collide with
 * negative errnos); weft_sem_destroy and weft_wg_destroy; weft_select's
 * limit on the number of cases.
 */
#include "test.h"

#include <errno.h>
#include <stdint.h>

#ifdef _WIN32
#include <ws2tcpip.h>
#else
#include <netdb.h>
#include <netinet/in.h>
#endif

/* Sanitizer allocators abort on an absurd malloc instead of returning NULL. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define HUGE_MALLOC_ABORTS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define HUGE_MALLOC_ABORTS 1
#endif
#endif
#ifndef HUGE_MALLOC_ABORTS
#define HUGE_MALLOC_ABORTS 0
#endif

#define MS 1000000ull

/* ---------------------------------------------------------- deadlines */

static void *main_deadline_set(void *arg)
{
    int64_t old = 123, now;
    ASSERT_EQ(weft_deadline_get(&now), 0);
    ASSERT_EQ(now, -1);
    ASSERT_EQ(weft_deadline_set(ms_from_now(60000), &old), 0);
    ASSERT_EQ(old, -1);
    ASSERT_EQ(weft_deadline_get(&now), 0);
    ASSERT_GT(now, 0);
    /* a bad value changes nothing */
    ASSERT_EQ(weft_deadline_set(-2, &old), -EINVAL);
    ASSERT_EQ(weft_deadline_set(INT64_MIN, NULL), -EINVAL);
    int64_t again;
    ASSERT_EQ(weft_deadline_get(&again), 0);
    ASSERT_EQ(again, now);
    ASSERT_EQ(weft_deadline_get(NULL), -EINVAL);
    /* the sibling and the old call agree */
    ASSERT_EQ(weft_deadline(-1), now);
    ASSERT_EQ(weft_deadline_set(-1, &old), 0);
    ASSERT_EQ(old, -1);
    /* a deadline set by the sibling acts like one set by weft_deadline */
    ASSERT_EQ(weft_deadline_set(ms_from_now(20), NULL), 0);
    ASSERT_EQ(weft_sleep(60000 * MS), -ETIMEDOUT);
    ASSERT_EQ(weft_deadline_set(-1, &old), 0);
    ASSERT_GT(old, 0);
    return arg;
}

TEST(api_deadline_set_get)
{
    test_run(main_deadline_set, NULL);
    /* outside a fiber: the error is told apart from "no deadline" */
    int64_t old = 7, now = 7;
    ASSERT_EQ(weft_deadline_set(ms_from_now(10), &old), -EPERM);
    ASSERT_EQ(old, 7);
    ASSERT_EQ(weft_deadline_get(&now), -EPERM);
    ASSERT_EQ(now, 7);
    ASSERT_EQ(weft_deadline(5), -EPERM);   /* the old contract, unchanged */
}

/* ----------------------------------------------------------- channels */

TEST(api_chan_new_errors)
{
    weft_chan *c = (weft_chan *)(uintptr_t)1;
    ASSERT_EQ(weft_chan_new(NULL, sizeof(int), 1), -EINVAL);
    ASSERT_EQ(weft_chan_new(&c, (size_t)1 << 20, 1), -EINVAL);
    ASSERT_PTR_EQ(c, NULL);
    ASSERT_EQ(weft_chan_new(&c, SIZE_MAX, 0), -EINVAL);
    ASSERT_EQ(weft_chan_new(&c, 8, SIZE_MAX / 4), -EINVAL);   /* would not fit in memory */
    if (!HUGE_MALLOC_ABORTS) {
        /* within the size check, far beyond any address space: malloc fails */
        c = (weft_chan *)(uintptr_t)1;
        ASSERT_EQ(weft_chan_new(&c, 1, SIZE_MAX / 2 - 4096), -ENOMEM);
        ASSERT_PTR_EQ(c, NULL);
    }
    ASSERT_EQ(weft_chan_new(&c, sizeof(int), 1), 0);
    ASSERT(c != NULL);
    int v = 42, w = 0;
    ASSERT_EQ(weft_chan_trysend(c, &v), 0);
    ASSERT_EQ(weft_chan_tryrecv(c, &w), 0);
    ASSERT_EQ(w, 42);
    weft_chan_free(c);
}

/* ------------------------------------------------------------- select */

static void *main_select_limit(void *arg)
{
    size_t n = WEFT_SELECT_MAX + 1;
    weft_case *cs = calloc(n, sizeof *cs);
    ASSERT(cs != NULL);
    weft_chan *full, *empty;
    ASSERT_EQ(weft_chan_new(&full, sizeof(int), 1), 0);
    ASSERT_EQ(weft_chan_new(&empty, sizeof(int), 1), 0);
    int one = 1, got = 0, out = 7;
    ASSERT_EQ(weft_chan_trysend(full, &one), 0);
    cs[0] = (weft_case){ .chan = full, .op = WEFT_RECV, .elem = &got };
    cs[n - 1] = (weft_case){ .chan = empty, .op = WEFT_SEND, .elem = &out };
    /* one past the limit: refused, nothing received or sent */
    ASSERT_EQ(weft_select(cs, n), -EINVAL);
    ASSERT_EQ(weft_tryselect(cs, n), -EINVAL);
    ASSERT_EQ(weft_select(cs, SIZE_MAX), -EINVAL);
    ASSERT_EQ(got, 0);
    ASSERT_EQ(weft_chan_tryrecv(empty, NULL), -EAGAIN);
    /* at the limit: it works (the ready receive, or the send) */
    cs[n - 2] = cs[n - 1];
    cs[n - 1] = (weft_case){ 0 };
    int r = weft_select(cs, WEFT_SELECT_MAX);
    ASSERT(r == 0 || r == (int)(n - 2));
    if (r == 0) {
        ASSERT_EQ(got, 1);
        ASSERT_EQ(weft_chan_tryrecv(empty, NULL), -EAGAIN);
    } else {
        ASSERT_EQ(weft_chan_tryrecv(full, &got), 0);
        ASSERT_EQ(got, 1);
        ASSERT_EQ(weft_chan_tryrecv(empty, &got), 0);
        ASSERT_EQ(got, 7);
    }
    weft_chan_free(full);
    weft_chan_free(empty);
    free(cs);
    return arg;
}

TEST(api_select_case_limit) { test_run(main_select_limit, NULL); }

/* ----------------------------------------------------- sem and wg destroy */

static weft_sem dsem;
static weft_wg dwg;

static void *sem_waiter(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)weft_sem_wait(&dsem);
}

static void *wg_waiter(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)weft_wg_wait(&dwg);
}

/* Until a fiber waits on the object: destroy says -EBUSY (bounded). */
static int busy_soon(int (*destroy)(void *), void *obj)
{
    int r = 0;
    for (int i = 0; i < 5000 && (r = destroy(obj)) != -EBUSY; i++)
        weft_sleep(1 * MS);
    return r;
}
static int sem_destroy(void *s) { return weft_sem_destroy(s); }
static int wg_destroy(void *w) { return weft_wg_destroy(w); }

static void *main_destroy(void *arg)
{
    ASSERT_EQ(weft_sem_destroy(NULL), -EINVAL);
    ASSERT_EQ(weft_wg_destroy(NULL), -EINVAL);

    ASSERT_EQ(weft_sem_init(&dsem, 2), 0);
    ASSERT_EQ(weft_sem_destroy(&dsem), 0);   /* units left are no waiters */
    ASSERT_EQ(weft_sem_init(&dsem, 0), 0);
    weft_fiber *f;
    ASSERT_EQ(weft_spawn(&f, NULL, sem_waiter, NULL), 0);
    ASSERT_EQ(busy_soon(sem_destroy, &dsem), -EBUSY);
    ASSERT_EQ(weft_sem_post(&dsem), 0);      /* nothing was lost: the waiter gets it */
    void *ret = (void *)1;
    ASSERT_EQ(weft_join(f, &ret), 0);
    ASSERT_PTR_EQ(ret, NULL);
    ASSERT_EQ(weft_sem_destroy(&dsem), 0);

    ASSERT_EQ(weft_wg_init(&dwg), 0);
    ASSERT_EQ(weft_wg_destroy(&dwg), 0);
    ASSERT_EQ(weft_wg_add(&dwg, 1), 0);
    ASSERT_EQ(weft_wg_destroy(&dwg), 0);     /* a count without waiters */
    ASSERT_EQ(weft_spawn(&f, NULL, wg_waiter, NULL), 0);
    ASSERT_EQ(busy_soon(wg_destroy, &dwg), -EBUSY);
    ASSERT_EQ(weft_wg_done(&dwg), 0);
    ret = (void *)1;
    ASSERT_EQ(weft_join(f, &ret), 0);
    ASSERT_PTR_EQ(ret, NULL);
    ASSERT_EQ(weft_wg_destroy(&dwg), 0);

    /* a waiter that gave up (cancel) leaves the object destroyable */
    ASSERT_EQ(weft_spawn(&f, NULL, sem_waiter, NULL), 0);
    ASSERT_EQ(busy_soon(sem_destroy, &dsem), -EBUSY);
    ASSERT_EQ(weft_cancel(f), 0);
    ASSERT_EQ(weft_join(f, &ret), 0);
    ASSERT_EQ((intptr_t)ret, -ECANCELED);
    ASSERT_EQ(weft_sem_destroy(&dsem), 0);
    return arg;
}

TEST(api_sem_wg_destroy)
{
    static const weft_config two = { .workers = 2 };
    test_run_cfg(&two, main_destroy, NULL);
}

/* ------------------------------------------------------------ resolve */

static void *main_resolve(void *arg)
{
    struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV, .ai_family = AF_INET,
                              .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    int eai = 99;
    ASSERT_EQ(weft_resolve("127.0.0.1", "80", &hints, &res, &eai), 0);
    ASSERT_EQ(eai, 0);
    ASSERT(res != NULL);
    ASSERT_EQ(res->ai_family, AF_INET);
    freeaddrinfo(res);

    /* a resolver failure: an errno, and the exact code beside it */
    res = (struct addrinfo *)(uintptr_t)1;
    ASSERT_EQ(weft_resolve("not an address", "80", &hints, &res, &eai), -ENOENT);
    ASSERT_EQ(eai, EAI_NONAME);
    ASSERT_PTR_EQ(res, NULL);
    ASSERT_EQ(weft_resolve("not an address", "80", &hints, &res, NULL), -ENOENT);
    /* the old call keeps its meaning: the code itself (negated if positive) */
    int old = weft_getaddrinfo("not an address", "80", &hints, &res);
    ASSERT_EQ(old, EAI_NONAME < 0 ? EAI_NONAME : -EAI_NONAME);
    hints.ai_family = 12345;
    ASSERT_EQ(weft_resolve("127.0.0.1", "80", &hints, &res, &eai), -EAFNOSUPPORT);
    ASSERT_EQ(eai, EAI_FAMILY);

    /* weft's own failures: eai says 0 */
    eai = 99;
    ASSERT_EQ(weft_resolve("127.0.0.1", "80", NULL, NULL, &eai), -EINVAL);
    ASSERT_EQ(eai, 0);
    weft_cancel(weft_self());
    eai = 99;
    ASSERT_EQ(weft_resolve("127.0.0.1", "80", NULL, &res, &eai), -ECANCELED);
    ASSERT_EQ(eai, 0);
    return arg;
}

TEST(api_resolve_errno_only) { test_run(main_resolve, NULL); }
