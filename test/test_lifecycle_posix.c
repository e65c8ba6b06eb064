/*
 * The runtime's start-up and shutdown seen from outside: plain threads that
 * spawn fibers and read the counters while weft_run starts and ends over
 * and over, a worker thread that cannot be created, and fork() from a fiber
 * and from a plain thread while a runtime runs (see "START-UP AND SHUTDOWN"
 * in docs/scheduler.md).
 */
#define _GNU_SOURCE
#include "test.h"
#include "test_io.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__has_feature)
#  if __has_feature(thread_sanitizer)
#    define UNDER_TSAN 1
#  endif
#endif
#if defined(__SANITIZE_THREAD__)
#  define UNDER_TSAN 1
#endif
#ifndef UNDER_TSAN
#  define UNDER_TSAN 0
#endif

/* weft_dump reads the records of fibers that run, and of stacks being
 * handed to new fibers, without holding them (the racy reads diag.c
 * describes, and issue 15's items on the dump and the re-zeroed record).
 * This file is about the runtime's life, not those: under TSan the dump's
 * reads go unchecked here; weft_stats' reads of the same records of the
 * runtime are still checked. */
#if UNDER_TSAN
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
#define DUMP_READS_BEGIN() AnnotateIgnoreReadsBegin(__FILE__, __LINE__)
#define DUMP_READS_END()   AnnotateIgnoreReadsEnd(__FILE__, __LINE__)
#else
#define DUMP_READS_BEGIN() ((void)0)
#define DUMP_READS_END()   ((void)0)
#endif

/* ------------------------------------------------ the start/stop window */

#define MAX_SPAWNS (1u << 20)
#define WORKERS 2

static struct {
    _Atomic int stop;
    _Atomic uint32_t next;                 /* spawn attempts, each with its own slot */
    _Atomic uint8_t accepted[MAX_SPAWNS];
    _Atomic uint8_t ran[MAX_SPAWNS];
    _Atomic uint64_t refused, bad_spawn, bad_stats, bad_dump, stats_ok, dumps_ok;
    _Atomic int last_bad;
} h;

/* The outside threads pause between calls: on a shared two-core machine
 * they would otherwise starve the runtime they are hammering. */
static void nap(void)
{
    struct timespec ts = { 0, 20000 };
    nanosleep(&ts, NULL);
}

static void *counted(void *arg)
{
    uint32_t i = (uint32_t)(uintptr_t)arg;
    atomic_fetch_add(&h.ran[i], 1);
    if (i % 3 == 1)
        weft_detach(weft_self());   /* spawned joinable: it lets itself go */
    if (i % 4 == 0)
        weft_yield();
    return NULL;
}

static void *spawner(void *arg)
{
    (void)arg;
    while (!atomic_load(&h.stop)) {
        uint32_t i = atomic_fetch_add(&h.next, 1);
        if (i >= MAX_SPAWNS)
            break;
        weft_attr a = { .flags = i % 3 == 1 ? 0 : WEFT_DETACHED };
        weft_fiber *f = NULL;
        /* marked before the call: the fiber may run before it returns */
        atomic_store(&h.accepted[i], 1);
        int r = weft_spawn(i % 3 == 1 ? &f : NULL, &a, counted, (void *)(uintptr_t)i);
        if (r == 0)
            continue;
        atomic_store(&h.accepted[i], 0);
        if (r == -EPERM) {
            atomic_fetch_add(&h.refused, 1);
        } else {
            atomic_fetch_add(&h.bad_spawn, 1);
            atomic_store(&h.last_bad, r);
        }
        nap();   /* between two runtimes: let the next one start */
    }
    return NULL;
}

static void stats_once(void)
{
    weft_stats_t st;
    int r = weft_stats(&st);
    if (r == 0 && st.workers == WORKERS && st.reported == WORKERS)
        atomic_fetch_add(&h.stats_ok, 1);
    else if (r != -EPERM)
        atomic_fetch_add(&h.bad_stats, 1);
}

/* weft_stats without a pause: one of them is in it whenever a runtime
 * ends, and now and then preempted there. */
static void *stats_reader(void *arg)
{
    (void)arg;
    for (unsigned k = 0; !atomic_load(&h.stop); k++) {
        stats_once();
        if (k % 64 == 0)
            nap();
    }
    return NULL;
}

static void *reader(void *arg)
{
    int fd = *(int *)arg;
    for (unsigned k = 0; !atomic_load(&h.stop); k++) {
        stats_once();
        if (k % 8 == 0) {
            DUMP_READS_BEGIN();
            int r = weft_dump(fd);
            DUMP_READS_END();
            if (r == 0)
                atomic_fetch_add(&h.dumps_ok, 1);
            else if (r != -EPERM)
                atomic_fetch_add(&h.bad_dump, 1);
        }
        nap();
    }
    return NULL;
}

/* A plain thread that wakes fibers: a send on an unbuffered channel that
 * finds a receiver readies it from this thread, which is then still waking
 * a worker as that fiber returns and the runtime ends. */
static weft_chan *wake_chan;
static _Atomic uint64_t handed;

static void *waker(void *arg)
{
    (void)arg;
    for (int v = 0; !atomic_load(&h.stop); v++) {
        if (weft_chan_trysend(wake_chan, &v) == 0)
            atomic_fetch_add(&handed, 1);
        else
            nap();
    }
    return NULL;
}

static void *child_fiber(void *arg)
{
    (void)arg;
    weft_yield();
    return NULL;
}

static void *receiver(void *arg)
{
    (void)arg;
    int v;
    weft_deadline(ms_from_now(2));
    weft_chan_recv(wake_chan, &v);
    return NULL;
}

static void *short_main(void *arg)
{
    (void)arg;
    weft_fiber *f[3];
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(weft_spawn(&f[i], NULL, i == 2 ? receiver : child_fiber, NULL), 0);
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(weft_join(f[i], NULL), 0);
    return NULL;
}

/* Plain threads spawn, read weft_stats and write weft_dump while the main
 * thread starts and stops runtimes as fast as it can. Nothing may crash;
 * every spawn is either accepted and run exactly once before its weft_run
 * returns, or refused with -EPERM. */
TEST(lifecycle_outside_callers_across_start_and_stop)
{
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    ASSERT_GE(devnull, 0);
    pthread_t sp[2], rd, srd;
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_create(&sp[i], NULL, spawner, NULL), 0);
    ASSERT_EQ(pthread_create(&rd, NULL, reader, &devnull), 0);
    ASSERT_EQ(pthread_create(&srd, NULL, stats_reader, NULL), 0);
    wake_chan = weft_chan_make(sizeof(int), 0);
    ASSERT(wake_chan);
    pthread_t wk;
    ASSERT_EQ(pthread_create(&wk, NULL, waker, NULL), 0);

    weft_config cfg = { .workers = WORKERS, .watchdog_ms = -1u };
    uint64_t until = weft_now() + (uint64_t)(2e9 * test_time_scale());
    unsigned runs = 0;
    while ((weft_now() < until || runs < 3) && atomic_load(&h.next) < MAX_SPAWNS) {
        ASSERT_EQ(weft_run(&cfg, short_main, NULL, NULL), 0);
        runs++;
    }
    atomic_store(&h.stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(sp[i], NULL);
    pthread_join(rd, NULL);
    pthread_join(srd, NULL);
    pthread_join(wk, NULL);
    weft_chan_free(wake_chan);
    close(devnull);

    /* no runtime is left: whatever was accepted has run by now */
    uint32_t n = atomic_load(&h.next);
    if (n > MAX_SPAWNS)
        n = MAX_SPAWNS;
    uint64_t accepted = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (atomic_load(&h.ran[i]) != atomic_load(&h.accepted[i]))
            test_fail(__FILE__, __LINE__, "spawn %u: accepted %d, ran %d times", i,
                      atomic_load(&h.accepted[i]), atomic_load(&h.ran[i]));
        accepted += atomic_load(&h.accepted[i]);
    }
    ASSERT_EQ(atomic_load(&h.bad_spawn), 0);
    ASSERT_EQ(atomic_load(&h.bad_stats), 0);
    ASSERT_EQ(atomic_load(&h.bad_dump), 0);
    ASSERT_EQ(accepted + atomic_load(&h.refused), n);
    printf("%u runs, %llu spawns accepted, %llu refused, %llu stats, %llu dumps, %llu wakes\n",
           runs, (unsigned long long)accepted, (unsigned long long)atomic_load(&h.refused),
           (unsigned long long)atomic_load(&h.stats_ok),
           (unsigned long long)atomic_load(&h.dumps_ok), (unsigned long long)atomic_load(&handed));
}

/* ------------------------------------------------------------------ fork */

static void *pipe_writer(void *arg)
{
    int fd = *(int *)arg;
    if (weft_sleep(5 * 1000000ull) != 0)
        return (void *)0;
    return (void *)(uintptr_t)(weft_write(fd, "ping", 4) == 4);
}

/* A fiber that sleeps and writes a pipe, and the main fiber that reads it. */
static void *child_main(void *arg)
{
    (void)arg;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return (void *)0;
    weft_fiber *w;
    if (weft_spawn(&w, NULL, pipe_writer, &p[1]) != 0)
        return (void *)0;
    char buf[4] = { 0 };
    ssize_t n = weft_read(p[0], buf, sizeof buf);
    void *wrote = NULL;
    if (weft_join(w, &wrote) != 0)
        return (void *)0;
    weft_close(p[0]);
    weft_close(p[1]);
    return (void *)(uintptr_t)(n == 4 && !memcmp(buf, "ping", 4) && wrote == (void *)1);
}

/* In the child of a fork() taken while a runtime ran: an exit status. */
static int child_runs_runtimes(void)
{
    alarm(20);   /* never outlive the test, whatever goes wrong */
    if (weft_self() != NULL)
        return 10;   /* the forking fiber's code runs as a plain thread's now */
    weft_stats_t st;
    if (weft_stats(&st) != -EPERM || weft_spawn(NULL, &(weft_attr){ .flags = WEFT_DETACHED },
                                                child_fiber, NULL) != -EPERM)
        return 11;   /* no runtime is left */
    /* TSan stops a child of a multithreaded parent that starts threads */
    weft_config cfg = { .workers = UNDER_TSAN ? 1 : 2, .watchdog_ms = -1u };
    for (int i = 0; i < 2; i++) {
        void *ret = NULL;
        int r = weft_run(&cfg, child_main, NULL, &ret);
        if (r != 0)
            return 20 + i;
        if (ret != (void *)1)
            return 30 + i;
    }
    return 0;
}

static _Atomic int ticks;

static void *ticker(void *arg)
{
    (void)arg;
    while (weft_sleep(1000000) == 0)
        atomic_fetch_add(&ticks, 1);
    return NULL;
}

/* Wait for pid without blocking the worker: the parent's runtime goes on. */
static int wait_child(pid_t pid)
{
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        ASSERT_EQ(r, 0);
        weft_sleep(1000000);
    }
    if (!WIFEXITED(status))
        test_fail(__FILE__, __LINE__, "child died: status %#x", status);
    return WEXITSTATUS(status);
}

/* The parent's runtime after the fork: its I/O and timers work, and the
 * ticker ends with it. */
static void parent_goes_on(weft_fiber *ticker_fiber)
{
    void *ok = child_main(NULL);
    ASSERT_PTR_EQ(ok, (void *)1);
    weft_cancel(ticker_fiber);
    ASSERT_EQ(weft_join(ticker_fiber, NULL), 0);
}

static void *fork_in_fiber_main(void *arg)
{
    (void)arg;
    weft_fiber *t;
    ASSERT_EQ(weft_spawn(&t, NULL, ticker, NULL), 0);
    pid_t pid = fork();
    if (pid == 0)
        _exit(child_runs_runtimes());
    ASSERT_GT(pid, 0);
    int before = atomic_load(&ticks);
    ASSERT_EQ(wait_child(pid), 0);
    /* the parent kept running meanwhile, and still does */
    ASSERT_GT(atomic_load(&ticks), before);
    ASSERT_EQ(weft_run(NULL, child_main, NULL, NULL), -EBUSY);
    parent_goes_on(t);
    return NULL;
}

/* fork() from a fiber: the child can start runtimes of its own. */
/* qemu-user 7.2 itself aborts now and then in the child of a fork from a
 * multithreaded guest ("cpu == current_cpu" in cpu_exec, the plugin vCPU
 * hook): the emulator, not the child's runtime, and no exit status of
 * ours to check there. */
static void skip_under_qemu(const char *why)
{
    if (test_under_qemu())
        test_skip("under qemu-user: %s", why);
}
#define QEMU_FORK "its forked child of a threaded guest may abort"


IO_TEST(lifecycle_fork_in_fiber)
{
    skip_under_qemu(QEMU_FORK);
    setenv("WEFT_DUMP_SIGNAL", "0", 1);   /* no dump thread: see child_runs_runtimes */
    weft_config cfg = { .workers = 2, .watchdog_ms = -1u };
    ASSERT_EQ(weft_run(&cfg, fork_in_fiber_main, NULL, NULL), 0);
    ASSERT_EQ(weft_run(&cfg, child_main, NULL, NULL), 0);   /* and so can the parent */
}

static _Atomic int forked_status = -1;

static void *forking_thread(void *arg)
{
    (void)arg;
    pid_t pid = fork();
    if (pid == 0)
        _exit(child_runs_runtimes());
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        atomic_store(&forked_status, 100);
    else
        atomic_store(&forked_status, WIFEXITED(status) ? WEXITSTATUS(status) : 200);
    return NULL;
}

static void *fork_from_thread_main(void *arg)
{
    (void)arg;
    weft_fiber *t;
    ASSERT_EQ(weft_spawn(&t, NULL, ticker, NULL), 0);
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, forking_thread, NULL), 0);
    while (atomic_load(&forked_status) < 0)
        weft_sleep(1000000);
    pthread_join(th, NULL);   /* it has returned: no wait */
    int status = atomic_load(&forked_status);
    ASSERT_EQ(status, 0);
    parent_goes_on(t);
    return NULL;
}

/* fork() from a plain thread while a runtime runs on others. */
IO_TEST(lifecycle_fork_from_plain_thread)
{
    skip_under_qemu(QEMU_FORK);
    setenv("WEFT_DUMP_SIGNAL", "0", 1);
    weft_config cfg = { .workers = 2, .watchdog_ms = -1u };
    ASSERT_EQ(weft_run(&cfg, fork_from_thread_main, NULL, NULL), 0);
}

/* ------------------------------------------- a worker that cannot start */

static _Atomic int bad_worker_ids;

static void *note_worker(void *arg)
{
    unsigned n = *(unsigned *)arg;
    for (int i = 0; i < 5; i++) {
        int id = weft_worker_id();
        if (id < 0 || (unsigned)id >= n)
            atomic_fetch_add(&bad_worker_ids, 1);
        weft_sleep(200000);
    }
    return NULL;
}

static void *fewer_workers_main(void *arg)
{
    (void)arg;
    weft_stats_t st;
    ASSERT_EQ(weft_stats(&st), 0);
    /* this thread and the three that could start (TSan's own thread, started
     * with the first one, may take the place of one) */
    ASSERT_GE(st.workers, 3);
    ASSERT_LE(st.workers, 4);
    unsigned n = st.workers;
    weft_fiber *f[64];
    for (int i = 0; i < 64; i++)
        ASSERT_EQ(weft_spawn(&f[i], NULL, note_worker, &n), 0);
    for (int i = 0; i < 64; i++)
        ASSERT_EQ(weft_join(f[i], NULL), 0);
    ASSERT_EQ(atomic_load(&bad_worker_ids), 0);
    return NULL;
}

static int count_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    ASSERT(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Worker threads that cannot be created: weft_run goes on with those it
 * got. Thread creation fails for real: under a user id of our own,
 * RLIMIT_NPROC admits three more threads than we have, so workers 1 to 3
 * start and the rest (and the dump and watchdog threads) do not. The
 * workers that did start run while the count of workers is settled: TSan
 * checks that they never read it as it changes. */
TEST(lifecycle_worker_threads_fail_to_start)
{
    if (geteuid() != 0)
        test_skip("needs root to count threads under a user id of its own");
    /* qemu-user runs threads of its own beside the guest's, under the same
     * limit: the count of threads to admit is not ours to know there. */
    skip_under_qemu("its own threads count against RLIMIT_NPROC");
    uid_t uid = 40000 + (uid_t)(getpid() % 20000);
    if (setresuid(uid, uid, uid) != 0)
        test_skip("setresuid(%u): %s", (unsigned)uid, strerror(errno));
    struct rlimit rl = { .rlim_cur = (rlim_t)count_threads() + 3 };
    rl.rlim_max = rl.rlim_cur;
    ASSERT_EQ(setrlimit(RLIMIT_NPROC, &rl), 0);
    weft_config cfg = { .workers = 6 };
    for (int i = 0; i < 3; i++)
        ASSERT_EQ(weft_run(&cfg, fewer_workers_main, NULL, NULL), 0);
}
