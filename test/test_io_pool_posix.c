/*
 * The blocking pool (weft_blocking, weft_getaddrinfo): it grows on demand,
 * shrinks when idle, is gone after weft_run; cancel while queued and while
 * running. Runs once per backend like the rest of the I/O suite.
 */
#define _GNU_SOURCE
#include "test_io.h"

#include <errno.h>
#include <netdb.h>
#include <stdatomic.h>
#include <unistd.h>

#define MS 1000000ull

static void *nap(void *arg)
{
    usleep((useconds_t)(uintptr_t)arg);
    return (void *)0x5eed;
}

static void *napper(void *arg)
{
    void *ret = NULL;
    ASSERT_EQ(weft_blocking(nap, arg, &ret), 0);
    ASSERT_PTR_EQ(ret, (void *)0x5eed);
    return NULL;
}

static _Atomic int peak;

static void *watch(void *arg)
{
    for (int i = 0; i < 100; i++) {
        int n = io_count_threads("weft/pool");
        if (n > atomic_load(&peak))
            atomic_store(&peak, n);
        weft_sleep(2 * MS);
    }
    return arg;
}

static void *main_grow_shrink(void *arg)
{
    enum { N = 8 };
    weft_fiber *f[N], *w;
    ASSERT_EQ(weft_spawn(&w, NULL, watch, NULL), 0);
    for (int i = 0; i < N; i++)
        ASSERT_EQ(weft_spawn(&f[i], NULL, napper, (void *)(uintptr_t)100000), 0);
    for (int i = 0; i < N; i++)
        ASSERT_EQ(weft_join(f[i], NULL), 0);
    ASSERT_EQ(weft_join(w, NULL), 0);
    ASSERT_GT(atomic_load(&peak), 1);       /* grew: the naps overlapped */
    ASSERT_LE(atomic_load(&peak), 4);       /* but not past WEFT_POOL_MAX */
    /* idle for WEFT_POOL_IDLE_MS: the threads exit */
    int n = -1;
    for (int i = 0; i < 200 && (n = io_count_threads("weft/pool")) > 0; i++)
        weft_sleep(10 * MS);
    ASSERT_EQ(n, 0);
    /* and it grows again */
    napper((void *)(uintptr_t)1000);
    return arg;
}



IO_TEST(io_pool_grows_and_shrinks)
{
    setenv("WEFT_POOL_MAX", "4", 1);
    setenv("WEFT_POOL_IDLE_MS", "100", 1);
    io_run_leaving_no_thread(main_grow_shrink, NULL);
    ASSERT_EQ(io_count_threads("weft/pool"), 0);
}

static void *napper_cancelled(void *arg)
{
    /* main returns meanwhile: this is cancelled, the nap goes on */
    ASSERT_EQ(weft_blocking(nap, arg, NULL), -ECANCELED);
    return NULL;
}

static void *main_pool_left_running(void *arg)
{
    /* main returns while the pool still works: weft_run joins it all */
    weft_spawn(NULL, &(weft_attr){ .flags = WEFT_DETACHED }, napper_cancelled, (void *)(uintptr_t)50000);
    weft_sleep(5 * MS);
    return arg;
}

IO_TEST(io_pool_threads_gone_after_run)
{
    io_run_leaving_no_thread(main_pool_left_running, NULL);
}

static _Atomic int ran_a, ran_b, running_a, release_a;

static void *job_a(void *arg)
{
    atomic_store(&running_a, 1);
    while (!atomic_load(&release_a))   /* until the test has seen the cancel return */
        usleep(1000);
    atomic_store(&ran_a, 1);
    return arg;
}

static void *job_b(void *arg)
{
    atomic_store(&ran_b, 1);
    return arg;
}

static _Atomic int started;

static void *call(void *arg)
{
    void *(*fn)(void *) = arg;
    atomic_fetch_add(&started, 1);
    void *ret = (void *)1;
    int r = weft_blocking(fn, NULL, &ret);
    ASSERT_PTR_EQ(ret, (void *)1);   /* not written when the call failed */
    return (void *)(intptr_t)r;
}

static void *main_pool_cancel(void *arg)
{
    weft_fiber *a, *b;
    ASSERT_EQ(weft_spawn(&a, NULL, call, job_a), 0);
    for (int i = 0; i < 10000 && !atomic_load(&running_a); i++)
        weft_sleep(MS);
    ASSERT_EQ(atomic_load(&running_a), 1);   /* a runs on the only pool thread */
    ASSERT_EQ(weft_spawn(&b, NULL, call, job_b), 0);
    while (atomic_load(&started) < 2)
        weft_sleep(MS);
    weft_sleep(10 * MS);   /* b is queued behind it (WEFT_POOL_MAX=1) */
    weft_cancel(b);
    weft_cancel(a);
    void *ra, *rb;
    ASSERT_EQ(weft_join(b, &rb), 0);
    ASSERT_EQ(weft_join(a, &ra), 0);         /* while job_a is still running */
    ASSERT_EQ((intptr_t)rb, -ECANCELED);
    ASSERT_EQ((intptr_t)ra, -ECANCELED);
    ASSERT_EQ(atomic_load(&ran_a), 0);
    atomic_store(&release_a, 1);
    for (int i = 0; i < 10000 && !atomic_load(&ran_a); i++)
        weft_sleep(MS);
    ASSERT_EQ(atomic_load(&ran_a), 1);      /* job_a ran to its end anyway */
    ASSERT_EQ(atomic_load(&ran_b), 0);      /* job_b never ran */
    return arg;
}

IO_TEST(io_pool_cancel_queued_and_running)
{
    setenv("WEFT_POOL_MAX", "1", 1);
    test_run(main_pool_cancel, NULL);
}

static void *main_gai(void *arg)
{
    struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
    struct addrinfo *res = NULL;
    ASSERT_EQ(weft_getaddrinfo("127.0.0.1", "8080", &hints, &res), 0);
    ASSERT(res != NULL);
    ASSERT_EQ(res->ai_family, AF_INET);
    ASSERT_EQ(ntohs(((struct sockaddr_in *)res->ai_addr)->sin_port), 8080);
    freeaddrinfo(res);
    ASSERT_EQ(weft_getaddrinfo("not an address", NULL, &hints, &res), EAI_NONAME);
    ASSERT(EAI_NONAME < 0);
    ASSERT_EQ(weft_getaddrinfo(NULL, NULL, NULL, &res), EAI_NONAME);
    /* cancelled: returns at once, the pool cleans up */
    weft_cancel(weft_self());
    ASSERT_EQ(weft_getaddrinfo("127.0.0.1", NULL, &hints, &res), -ECANCELED);
    return arg;
}

IO_TEST(io_getaddrinfo)
{
    test_run(main_gai, NULL);
}
