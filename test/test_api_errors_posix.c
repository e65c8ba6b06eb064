/*
 * The blocking pool when no thread can be started (a container's pid
 * limit, RLIMIT_NPROC, RLIMIT_AS): weft_blocking, weft_getaddrinfo,
 * weft_resolve and, under epoll, reads of regular files return the
 * thread start's error at once instead of parking for a thread that will
 * never come; nothing is lost; they work again once a thread can start;
 * and while pool threads exist, a call that cannot get a new one waits its
 * turn.
 *
 * How thread creation is made to fail: in a child process the test drops
 * root for an ordinary uid (root's own processes ignore RLIMIT_NPROC) and
 * sets RLIMIT_NPROC's soft limit to 1. The limit counts every task of the
 * uid, this process's threads included, so a new thread is refused with
 * EAGAIN whatever else runs under that uid; raising the soft limit back
 * (up to the hard one, which needs no privilege) lifts it.
 */
#define _GNU_SOURCE
#include "test_io.h"

#include <errno.h>
#include <grp.h>
#include <netdb.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#define MS 1000000ull

static const char content[] = "weft pool test file\n";
static struct rlimit nproc_orig;

/* 1: new threads are refused; 0: as before. */
static void limit_threads(int on)
{
    struct rlimit r = nproc_orig;
    if (on)
        r.rlim_cur = 1;
    if (setrlimit(RLIMIT_NPROC, &r) < 0)
        test_fail(__FILE__, __LINE__, "setrlimit(RLIMIT_NPROC): %s", strerror(errno));
}

static void *mark(void *arg)
{
    atomic_fetch_add((_Atomic int *)arg, 1);
    return (void *)0x600d;
}

static _Atomic int gate, gate_in;

/* Holds its pool thread until the gate opens. */
static void *hold(void *arg)
{
    atomic_fetch_add(&gate_in, 1);
    while (!atomic_load(&gate))
        usleep(1000);
    return arg;
}

static void *hold_fiber(void *arg)
{
    void *ret = NULL;
    return (void *)(intptr_t)(weft_blocking(hold, arg, &ret) == 0 && ret == arg ? 0 : -1);
}

static _Atomic int queued_done;

static void *queued_fiber(void *arg)
{
    void *ret = NULL;
    int r = weft_blocking(mark, arg, &ret);
    atomic_store(&queued_done, 1);
    return (void *)(intptr_t)(r == 0 && ret == (void *)0x600d ? 0 : r < 0 ? r : -1);
}

static const struct addrinfo numeric = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
                                         .ai_family = AF_INET, .ai_socktype = SOCK_STREAM };

/* Every pool call once: each returns -EAGAIN at once, or (lifted) works. */
static void pool_calls(int fd, int expect_fail)
{
    int pool_files = strcmp(weft_io_backend(), "epoll") == 0;
    _Atomic int ran = 0;
    void *ret = NULL;
    struct addrinfo *res = (struct addrinfo *)(uintptr_t)1;
    int eai = 99;
    char buf[64];

    if (expect_fail) {
        uint64_t t0 = weft_now();
        ASSERT_EQ(weft_blocking(mark, (void *)&ran, &ret), -EAGAIN);
        ASSERT_EQ(atomic_load(&ran), 0);   /* fn never ran, and never will */
        ASSERT_EQ(weft_getaddrinfo("127.0.0.1", "80", &numeric, &res), -EAGAIN);
        ASSERT_PTR_EQ(res, NULL);
        ASSERT_EQ(weft_resolve("127.0.0.1", "80", &numeric, &res, &eai), -EAGAIN);
        ASSERT_EQ(eai, 0);
        ssize_t n = weft_read(fd, buf, sizeof buf);
        if (pool_files) {
            ASSERT_EQ(n, -EAGAIN);
            ASSERT_EQ(lseek(fd, 0, SEEK_CUR), 0);   /* nothing was read */
        } else {
            ASSERT_EQ(n, (ssize_t)strlen(content));   /* io_uring reads files itself */
            ASSERT_EQ(lseek(fd, 0, SEEK_SET), 0);
        }
        ASSERT_LT(weft_now() - t0, (uint64_t)(2000 * MS * test_time_scale()));
        usleep(20000);
        ASSERT_EQ(atomic_load(&ran), 0);
        return;
    }
    ASSERT_EQ(weft_blocking(mark, (void *)&ran, &ret), 0);
    ASSERT_EQ(atomic_load(&ran), 1);
    ASSERT_PTR_EQ(ret, (void *)0x600d);
    ASSERT_EQ(weft_getaddrinfo("127.0.0.1", "80", &numeric, &res), 0);
    freeaddrinfo(res);
    ASSERT_EQ(weft_resolve("127.0.0.1", "80", &numeric, &res, &eai), 0);
    ASSERT_EQ(eai, 0);
    freeaddrinfo(res);
    memset(buf, 0, sizeof buf);
    ASSERT_EQ(weft_read(fd, buf, sizeof buf), (ssize_t)strlen(content));
    ASSERT_STR_EQ(buf, content);
    ASSERT_EQ(lseek(fd, 0, SEEK_SET), 0);
}

static void *main_no_pool_thread(void *arg)
{
    int fd = (int)(intptr_t)arg;
    ASSERT_EQ(io_count_threads("weft/pool"), 0);

    limit_threads(1);
    pool_calls(fd, 1);
    pool_calls(fd, 1);   /* no state left behind by the first failure */
    limit_threads(0);
    pool_calls(fd, 0);   /* lifted: everything works again */
    ASSERT_GE(io_count_threads("weft/pool"), 1);

    /* Threads exist: refused a new one, a call waits for a busy one. With
     * new threads refused, the pool keeps the ones it has (they idle for
     * 10 s before they exit): hold every one of them, then call. */
    limit_threads(1);
    int nthreads = io_count_threads("weft/pool");
    ASSERT_GE(nthreads, 1);
    weft_fiber *h[8], *q;
    ASSERT_LE(nthreads, 8);
    int held = 0;
    atomic_store(&gate, 0);
    for (int i = 0; i < nthreads; i++)
        ASSERT_EQ(weft_spawn(&h[i], NULL, hold_fiber, &held), 0);
    for (int i = 0; i < 5000 && atomic_load(&gate_in) < nthreads; i++)
        weft_sleep(1 * MS);
    ASSERT_EQ(atomic_load(&gate_in), nthreads);
    _Atomic int ran = 0;
    ASSERT_EQ(weft_spawn(&q, NULL, queued_fiber, (void *)&ran), 0);
    weft_sleep(50 * MS);
    ASSERT_EQ(atomic_load(&queued_done), 0);   /* queued, not refused */
    ASSERT_EQ(atomic_load(&ran), 0);
    atomic_store(&gate, 1);
    for (int i = 0; i < nthreads; i++) {
        void *r1 = (void *)1;
        ASSERT_EQ(weft_join(h[i], &r1), 0);
        ASSERT_PTR_EQ(r1, NULL);
    }
    void *r2 = (void *)1;
    ASSERT_EQ(weft_join(q, &r2), 0);
    ASSERT_PTR_EQ(r2, NULL);
    ASSERT_EQ(atomic_load(&ran), 1);
    ASSERT_EQ(io_count_threads("weft/pool"), nthreads);   /* it ran on one there was */
    limit_threads(0);
    return NULL;
}

static void child_no_pool_thread(void *arg)
{
    (void)arg;
    /* Before the fix the calls park forever: fail in seconds, not at the
     * runner's timeout. */
    alarm((unsigned)(10 * test_time_scale()));
    FILE *f = tmpfile();
    ASSERT(f != NULL);
    int fd = fileno(f);
    ASSERT_EQ(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    ASSERT_EQ(lseek(fd, 0, SEEK_SET), 0);
    if (geteuid() == 0) {
        /* nobody's uid; any ordinary one would do */
        if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0) {
            printf("cannot leave root (%s): skipped\n", strerror(errno));
            return;
        }
        prctl(PR_SET_DUMPABLE, 1);   /* sanitizers' tools attach to our threads */
    }
    ASSERT_EQ(getrlimit(RLIMIT_NPROC, &nproc_orig), 0);
    test_run(main_no_pool_thread, (void *)(intptr_t)fd);
    printf("child done\n");
}

IO_TEST(api_pool_no_thread_returns_eagain)
{
    if (RUNNING_ON_VALGRIND) {
        printf("valgrind cannot start a thread under RLIMIT_NPROC: skipped\n");
        return;
    }
    char out[4096];
    int st = test_child(child_no_pool_thread, NULL, out, sizeof out);
    if (st != 0 || (!strstr(out, "child done") && !strstr(out, "skipped")))
        test_fail(__FILE__, __LINE__, "child: status %d, output:\n%s", st, out);
    if (strstr(out, "skipped"))
        test_skip("%s", out);
}
