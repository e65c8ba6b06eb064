/*
 * Faults injected on purpose (issue 15, "close the classes"): the system
 * calls weft depends on fail with ENOMEM, EAGAIN or EMFILE (test/fault.h),
 * at the first call or the Nth. Each test checks three things:
 *
 *   - the public call that hit the fault returns a negative errno (weft_run
 *     itself when start-up fails);
 *   - nothing leaks: no fd here (counted), no memory (LSan, make check-asan);
 *   - the runtime keeps serving: with the fault disarmed, spawn and I/O work
 *     in the same weft_run, or in the next one when start-up failed.
 *
 * Results that wait for a fix not merged yet are asserted only with
 * WEFT_TEST_PENDING=1 (or =#N for issue 15 item N), as in
 * test_contexts_posix.c; without it the test checks that the call returns
 * at all, within the deadline it set.
 */
#define _GNU_SOURCE
#include "fault.h"
#include "test_io.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MS 1000000ull

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    ASSERT(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* ---------------------------------------------- "keeps serving" afterwards */

static void *write_later(void *arg)
{
    weft_sleep(2 * MS);
    ASSERT_EQ(weft_write((int)(intptr_t)arg, "k", 1), 1);
    return NULL;
}

static void *ret_arg(void *arg) { return arg; }

/* From a fiber: a spawn, a join and a read that has to park. */
static void serves(void)
{
    weft_fiber *f;
    ASSERT_EQ(weft_spawn(&f, NULL, ret_arg, (void *)5), 0);
    void *ret = NULL;
    ASSERT_EQ(weft_join(f, &ret), 0);
    ASSERT_PTR_EQ(ret, (void *)5);
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    ASSERT_EQ(weft_spawn(&f, NULL, write_later, (void *)(intptr_t)p[1]), 0);
    char c = 0;
    ASSERT_EQ(weft_read(p[0], &c, 1), 1);
    ASSERT_EQ(c, 'k');
    ASSERT_EQ(weft_join(f, NULL), 0);
    weft_close(p[0]);
    weft_close(p[1]);
}

static void *serves_main(void *arg) { serves(); return arg; }

/* weft_run with `name` armed must fail with -err, leave no fd behind, and
 * the next weft_run must work. */
static void run_fails(const char *name, int err, unsigned nth, unsigned count, int want)
{
    int fds = count_fds();
    ASSERT_EQ(fault_arm(name, err, nth, count), 0);
    int r = weft_run(NULL, serves_main, NULL, NULL);
    fault_disarm_all();
    if (r != want)
        test_fail(__FILE__, __LINE__, "weft_run with %s failing (%s, call %u): expected %d, got %d",
                  name, strerrorname_np(err), nth, want, r);
    ASSERT_GT(fault_hits(name), 0);
    ASSERT_EQ(count_fds(), fds);
    test_run(serves_main, NULL);
}

/* ------------------------------------------------------------ start-up */

IO_TEST(faults_start_eventfd)
{
    run_fails("eventfd", EMFILE, 1, 1, -EMFILE);
    run_fails("eventfd", ENOMEM, 1, FAULT_ALWAYS, -ENOMEM);
}

IO_TEST(faults_start_mmap)
{
    /* every mmap: the main fiber's stack cannot be had (the first
     * weft_run of io_use_backend made a stack of the default size, so ask
     * for a size no runtime used yet) */
    weft_config cfg = { .stack_size = (size_t)3 << 20 };
    ASSERT_EQ(fault_arm("mmap", ENOMEM, 1, FAULT_ALWAYS), 0);
    int fds = count_fds();
    int r = weft_run(&cfg, serves_main, NULL, NULL);
    fault_disarm_all();
    ASSERT_EQ(r, -ENOMEM);
    ASSERT_EQ(count_fds(), fds);
    test_run_cfg(&cfg, serves_main, NULL);
}

static void *nothing(void *arg) { return arg; }

/* The Nth mmap of a start-up fails, whichever it is (a worker's alternate
 * signal stack, the slab of the main fiber's stack): weft_run fails with
 * -ENOMEM or does without what it could not have, and the next one works. */
IO_TEST(faults_start_mmap_nth)
{
    for (unsigned nth = 1; nth <= 6; nth++) {
        weft_config cfg = { .workers = 2, .stack_size = (size_t)(8 + nth) << 20 };
        ASSERT_EQ(fault_arm("mmap", ENOMEM, nth, 1), 0);
        int fds = count_fds();
        int r = weft_run(&cfg, nothing, NULL, NULL);
        fault_disarm_all();
        if (r != 0)
            ASSERT_EQ(r, -ENOMEM);
        ASSERT_EQ(count_fds(), fds);
    }
    test_run(serves_main, NULL);
}

TEST(faults_start_epoll_ctl)
{
    if (!io_use_backend("epoll"))
        return;
    run_fails("epoll_ctl", ENOMEM, 1, 1, -ENOMEM);
}

TEST(faults_start_uring_init)
{
    if (!io_use_backend("uring"))
        return;
    run_fails("io_uring_queue_init_params", ENOMEM, 1, 1, -ENOMEM);
    run_fails("io_uring_queue_init_params", EAGAIN, 1, 1, -EAGAIN);
}

static void *workers_main(void *arg)
{
    serves();
    weft_stats_t st;
    ASSERT_EQ(weft_stats(&st), 0);
    return (void *)(uintptr_t)st.workers;
}

/* No thread for a worker (or the watchdog): weft_run goes on with the
 * threads it got, as sched.c says; fewer workers is not an error. */
IO_TEST(faults_start_pthread_create)
{
    weft_config cfg = { .workers = 3 };
    /* Each of the first three threads the runtime starts fails in turn. */
    for (unsigned nth = 1; nth <= 3; nth++) {
        ASSERT_EQ(fault_arm("pthread_create", EAGAIN, nth, FAULT_ALWAYS), 0);
        void *ret = NULL;
        int r = weft_run(&cfg, workers_main, NULL, &ret);
        fault_disarm_all();
        ASSERT_EQ(r, 0);
        ASSERT_GE((uintptr_t)ret, 1);
        ASSERT_LE((uintptr_t)ret, 3);
    }
    test_run_cfg(&cfg, serves_main, NULL);
}

/* ------------------------------------------------------------- stacks */

struct spawn_from { size_t size; int err; };

static void *spawn_plain(void *arg)
{
    struct spawn_from *s = arg;
    weft_fiber *f;
    weft_attr a = { .stack_size = s->size };
    s->err = weft_spawn(&f, &a, ret_arg, NULL);
    if (s->err == 0)
        weft_detach(f);
    return NULL;
}

static void *main_spawn_mmap(void *arg)
{
    /* a size class of its own: its first stack needs a new slab */
    size_t size = (size_t)5 << 20;
    weft_attr a = { .stack_size = size };
    weft_fiber *f;
    ASSERT_EQ(fault_arm("mmap", ENOMEM, 1, FAULT_ALWAYS), 0);
    ASSERT_EQ(weft_spawn(&f, &a, ret_arg, NULL), -ENOMEM);
    /* from a plain thread too */
    struct spawn_from s = { size, 0 };
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, spawn_plain, &s), 0);
    pthread_join(t, NULL);
    ASSERT_EQ(s.err, -ENOMEM);
    fault_disarm_all();
    ASSERT_EQ(weft_spawn(&f, &a, ret_arg, (void *)9), 0);
    void *ret;
    ASSERT_EQ(weft_join(f, &ret), 0);
    ASSERT_PTR_EQ(ret, (void *)9);
    serves();
    return arg;
}

IO_TEST(faults_spawn_mmap) { test_run(main_spawn_mmap, NULL); }

static void *main_spawn_madvise(void *arg)
{
    /* 48 MiB: one stack per 64 MiB slab, so its guard goes in with
     * madvise(MADV_GUARD_INSTALL), not the batched process_madvise */
    weft_attr a = { .stack_size = (size_t)48 << 20 };
    weft_fiber *f;
    ASSERT_EQ(fault_arm("madvise", ENOMEM, 1, FAULT_ALWAYS), 0);
    int r = weft_spawn(&f, &a, ret_arg, NULL);
    unsigned hits = fault_hits("madvise");
    fault_disarm_all();
    if (hits > 0) {
        ASSERT_EQ(r, -ENOMEM);   /* madvise mode: no guard, no stack */
    } else {
        ASSERT_EQ(r, 0);         /* mprotect or canary mode: madvise unused */
        ASSERT_EQ(weft_join(f, NULL), 0);
    }
    ASSERT_EQ(weft_spawn(&f, &a, ret_arg, NULL), 0);
    ASSERT_EQ(weft_join(f, NULL), 0);
    serves();
    return arg;
}

IO_TEST(faults_spawn_madvise) { test_run(main_spawn_madvise, NULL); }

/* ------------------------------------------------------- blocking pool */

static void *forty_two(void *arg) { return (void *)42; }

static void *main_pool(void *arg)
{
    /* No pool thread can start: the call must fail, not park forever
     * (issue 15 #6). The deadline bounds it today. */
    ASSERT_EQ(fault_arm("pthread_create", EAGAIN, 1, FAULT_ALWAYS), 0);
    int64_t old = weft_deadline((int64_t)(weft_now() + 200 * MS));
    void *ret = NULL;
    int r = weft_blocking(forty_two, NULL, &ret);
    struct addrinfo *res = NULL;
    struct addrinfo h = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
    int g = weft_getaddrinfo("127.0.0.1", "80", &h, &res);
    weft_deadline(old);
    fault_disarm_all();
    ASSERT_EQ(r, -EAGAIN);   /* no pool thread could start: at once, not at the deadline */
    ASSERT_EQ(g, -EAGAIN);
    ASSERT_EQ(weft_blocking(forty_two, NULL, &ret), 0);
    ASSERT_PTR_EQ(ret, (void *)42);
    ASSERT_EQ(weft_getaddrinfo("127.0.0.1", "80", &h, &res), 0);
    freeaddrinfo(res);
    serves();
    return NULL;
}

IO_TEST(faults_pool_pthread_create) { test_run(main_pool, NULL); }

/* ------------------------------------------------------------ epoll_ctl */

static void *main_epoll_ctl(void *arg)
{
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    /* the read finds no data and registers the fd: that epoll_ctl fails */
    for (int i = 0; i < 3; i++) {
        static const int errs[] = { ENOMEM, ENOSPC, EAGAIN };
        ASSERT_EQ(fault_arm("epoll_ctl", errs[i], 1, 1), 0);
        char c;
        ASSERT_EQ(weft_read(p[0], &c, 1), -errs[i]);
        ASSERT_EQ(fault_hits("epoll_ctl"), (unsigned)i + 1);
    }
    /* a wait on it: the same registration */
    ASSERT_EQ(fault_arm("epoll_ctl", EMFILE, 1, 1), 0);
    ASSERT_EQ(weft_wait_fd(p[0], POLLIN), -EMFILE);
    /* and the next read registers it after all */
    weft_fiber *f;
    ASSERT_EQ(weft_spawn(&f, NULL, write_later, (void *)(intptr_t)p[1]), 0);
    char c = 0;
    ASSERT_EQ(weft_read(p[0], &c, 1), 1);
    ASSERT_EQ(weft_join(f, NULL), 0);
    /* the EPOLL_CTL_DEL of weft_close failing changes nothing visible:
     * the close itself drops the registration */
    ASSERT_EQ(fault_arm("epoll_ctl", ENOMEM, 1, 1), 0);
    ASSERT_EQ(weft_close(p[0]), 0);
    fault_disarm_all();
    weft_close(p[1]);
    serves();
    return arg;
}

TEST(faults_epoll_ctl)
{
    if (io_use_backend("epoll"))
        test_run(main_epoll_ctl, NULL);
}

/* ----------------------------------------------------------- diagnostics */

/* weft_dump into a temporary file; its text (static buffer). */
static const char *dump_text(void)
{
    static char buf[65536];
    FILE *f = tmpfile();
    ASSERT(f);
    ASSERT_EQ(weft_dump(fileno(f)), 0);
    rewind(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

static void *parked(void *arg) { weft_sleep(10000 * MS); return arg; }

/* Symbols for the dump come from the ELF files, mapped with mmap: without
 * them the dump still works, and names come back with the memory. */
static void *main_dump_mmap(void *arg)
{
    weft_fiber *f;
    ASSERT_EQ(weft_spawn(&f, NULL, parked, NULL), 0);
    weft_sleep(MS);
    ASSERT_EQ(fault_arm("mmap", ENOMEM, 1, FAULT_ALWAYS), 0);
    const char *t = dump_text();
    ASSERT_CONTAINS(t, "weft: end of dump");
    void *pcs[8];
    int n = weft_backtrace(f, pcs, 8);
    ASSERT_GT(n, 0);
    int dn = open("/dev/null", O_WRONLY | O_CLOEXEC);
    ASSERT_EQ(weft_backtrace_print(dn, pcs, n), 0);
    close(dn);
    fault_disarm_all();
    t = dump_text();
    ASSERT_CONTAINS(t, " parked+0x");   /* the function's name, in its frame */
    weft_cancel(f);
    ASSERT_EQ(weft_join(f, NULL), 0);
    serves();
    return arg;
}

IO_TEST(faults_dump_mmap) { test_run(main_dump_mmap, NULL); }

/* --------------------------------------------------------------- accept */

static void *main_accept(void *arg)
{
    uint16_t port;
    int l = io_listen(8, &port);
    /* out of fds, out of memory: weft_accept backs off and retries
     * (calls_posix.c), the connection waits in the backlog meanwhile. Not
     * EAGAIN: with a connection queued the kernel never says it, and on
     * epoll a made-up one waits for an edge that already came. */
    static const int errs[] = { EMFILE, ENFILE, ENOMEM, ENOBUFS };
    for (int i = 0; i < 4; i++) {
        int c = io_connect_plain(port);
        ASSERT_EQ(fault_arm("accept4", errs[i], 1, 3), 0);
        int s = weft_accept(l, NULL, NULL);
        ASSERT_GE(s, 0);
        weft_close(s);
        weft_close(c);
        fault_disarm_all();
    }
    /* for good: the deadline ends it, and then it works again */
    int c = io_connect_plain(port);
    ASSERT_EQ(fault_arm("accept4", EMFILE, 1, FAULT_ALWAYS), 0);
    int64_t old = weft_deadline((int64_t)(weft_now() + 30 * MS));
    ASSERT_EQ(weft_accept(l, NULL, NULL), -ETIMEDOUT);
    weft_deadline(old);
    fault_disarm_all();
    int s = weft_accept(l, NULL, NULL);
    ASSERT_GE(s, 0);
    weft_close(s);
    weft_close(c);
    weft_close(l);
    serves();
    return arg;
}

IO_TEST(faults_accept) { test_run(main_accept, NULL); }

/* -------------------------------------------------------------- io_uring */

static void *main_uring_submit(void *arg)
{
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    weft_fiber *f;
    /* EAGAIN, EBUSY, ENOMEM: the kernel had no room or no memory for the
     * requests; the SQEs stay in the ring (they may be other fibers' too,
     * so none can be failed alone) and the poller submits them again. */
    static const int errs[] = { EAGAIN, EBUSY, ENOMEM };
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(weft_spawn(&f, NULL, write_later, (void *)(intptr_t)p[1]), 0);
        ASSERT_EQ(fault_arm("io_uring_submit", errs[i], 1, 2), 0);
        char c = 0;
        ASSERT_EQ(weft_read(p[0], &c, 1), 1);
        ASSERT_EQ(weft_join(f, NULL), 0);
        fault_disarm_all();
    }
    weft_close(p[0]);
    weft_close(p[1]);
    serves();
    return arg;
}

TEST(faults_uring_submit)
{
    if (io_use_backend("uring"))
        test_run(main_uring_submit, NULL);
}

/* The poller's wait failing for want of memory is a passing condition,
 * not a broken invariant: the runtime waits again. */
static void *main_uring_wait(void *arg)
{
    static const int errs[] = { ENOMEM, EAGAIN, EINTR };
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(fault_arm("io_uring_wait_cqe_timeout", errs[i], 1, 3), 0);
        serves();
        fault_disarm_all();
    }
    return arg;
}

TEST(faults_uring_wait)
{
    if (!io_use_backend("uring"))
        return;
    weft_config cfg = { .workers = 1 };   /* every wait is the one worker's */
    test_run_cfg(&cfg, main_uring_wait, NULL);
}

/* ------------------------------------------------------------ the helper */

static _Atomic int spin_stop;
static void *hammer(void *arg)
{
    while (!atomic_load(&spin_stop))
        if (fault_arm("eventfd", EAGAIN, 1, 1) == 0) {
            int fd = eventfd(0, 0);
            if (fd >= 0)
                close(fd);
        }
    return arg;
}

/* Disarmed by default; armed, it fails exactly the calls asked for. */
TEST(faults_helper)
{
    ASSERT_EQ(fault_hits("mmap"), 0);
    ASSERT_EQ(fault_arm("nothing", ENOMEM, 1, 1), -EINVAL);
    ASSERT_EQ(fault_arm("eventfd", EMFILE, 2, 2), 0);
    int a = eventfd(0, EFD_CLOEXEC);
    int b = eventfd(0, EFD_CLOEXEC);
    int e = errno;
    int c = eventfd(0, EFD_CLOEXEC);
    int d = eventfd(0, EFD_CLOEXEC);
    ASSERT_GE(a, 0);
    ASSERT_EQ(b, -1);
    ASSERT_EQ(e, EMFILE);
    ASSERT_EQ(c, -1);
    ASSERT_GE(d, 0);
    ASSERT_EQ(fault_hits("eventfd"), 2);
    close(a);
    close(d);
    /* threads arming and calling at once: no crash, counts stay sane */
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_create(&t[i], NULL, hammer, NULL), 0);
    usleep(20000);
    atomic_store(&spin_stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    fault_disarm_all();
    int f = eventfd(0, EFD_CLOEXEC);
    ASSERT_GE(f, 0);
    close(f);
}
