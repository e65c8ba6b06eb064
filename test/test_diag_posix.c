/* Diagnostics that need POSIX: the dump signal, crash reports, the gdb
 * extension, the watchdog's backtrace of a running fiber, the trace. */
#define _GNU_SOURCE
#include "diag_test.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

/* Under ASan, TSan or UBSan the fault goes on to the sanitizer's own
 * handler (ours chains to it), which reports and exits with its status
 * instead of dying of the signal. (UBSan has no feature macro: the
 * Makefile defines WEFT_SAN_UBSAN.) */
#if defined(WEFT_SAN_UBSAN)
#define SAN_FAULT_EXIT 1
#elif defined(__SANITIZE_ADDRESS__)
#define SAN_FAULT_EXIT 1
#elif defined(__SANITIZE_THREAD__)
#define SAN_FAULT_EXIT 66
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SAN_FAULT_EXIT 1
#elif __has_feature(thread_sanitizer)
#define SAN_FAULT_EXIT 66
#endif
#endif

#define sink diag_sink

/* ------------------------------------------------------------ dump signal */

static void *main_dump_signal(void *arg)
{
    (void)arg;
    weft_fiber *sl;
    weft_attr a = { .name = "sleepy" };
    ASSERT_EQ(weft_spawn(&sl, &a, sleeper_fiber, NULL), 0);
    void *pcs[8];
    printf("frames: %s\n", backtrace_parked(sl, pcs, 8) == -ENOTSUP ? "no" : "yes");
    fflush(stdout);
    kill(getpid(), *(int *)arg);
    weft_sleep(300 * 1000000ull);   /* the dump thread writes meanwhile */
    weft_cancel(sl);
    weft_join(sl, NULL);
    printf("still running\n");
    return NULL;
}

static void child_dump_signal(void *arg)
{
    if (arg)
        setenv("WEFT_DUMP_SIGNAL", "USR1", 1);
    int sig = arg ? SIGUSR1 : SIGQUIT;
    weft_run(NULL, main_dump_signal, &sig, NULL);
}

TEST(diag_dump_on_signal)
{
    static char out[1 << 16];
    ASSERT_EQ(test_child(child_dump_signal, NULL, out, sizeof out), 0);
    ASSERT_CONTAINS(out, "weft: dump of");
    ASSERT_CONTAINS(out, "\"sleepy\": parked on sleep");
    if (strstr(out, "frames: yes"))
        ASSERT_CONTAINS(out, "sleeper_fiber");
    ASSERT_CONTAINS(out, "still running");
    /* by name, from the environment */
    ASSERT_EQ(test_child(child_dump_signal, "USR1", out, sizeof out), 0);
    ASSERT_CONTAINS(out, "\"sleepy\": parked on sleep");
}

/* ---------------------------------------------------------- crash reports */

/* The faults below are the point: UBSan must not stop them first. */
#define FAULTS __attribute__((no_sanitize("undefined")))

NOINLINE FAULTS static int overflow_recurse(volatile char *p)
{
    volatile char buf[512];
    buf[0] = p ? p[0] : 0;
    if (buf[0] == 'x')   /* never: keeps the compiler from calling this infinite */
        return 0;
    return overflow_recurse(buf) + buf[1];
}

NOINLINE FAULTS static void crash_null_store(void)
{
    *(volatile int *)(uintptr_t)sink = 42;
}

NOINLINE static void crash_abort(void)
{
    abort();
}

NOINLINE FAULTS static void crash_divide(void)
{
#if defined(__x86_64__) || defined(__i386__)
    volatile int zero = 0;
    sink = 7 / zero;
#else
    raise(SIGFPE);   /* AArch64's integer division by zero gives 0, no trap */
    sink++;
#endif
}

static void *crasher(void *arg)
{
    /* from here: the spawner may not get to print before we crash */
    printf("crasher is fiber %llu\n", (unsigned long long)weft_id(weft_self()));
    fflush(stdout);
    switch (*(int *)arg) {
    case 0: overflow_recurse(NULL); break;
    case 1: crash_null_store(); break;
    case 2: crash_abort(); break;
    case 3: crash_divide(); break;
    }
    return NULL;
}

static void *main_crash(void *arg)
{
    weft_fiber *f;
    weft_attr a = { .name = "crasher", .stack_size = 64 << 10 };
    ASSERT_EQ(weft_spawn(&f, &a, crasher, arg), 0);
    weft_join(f, NULL);
    return NULL;
}

static void child_crash(void *arg)
{
    weft_run(NULL, main_crash, arg, NULL);
}

static const char *expect_crash(int kind, int sig, const char *what, const char *frame)
{
    static char out[1 << 16];
    int r = test_child(child_crash, &kind, out, sizeof out);
    printf("---- %s\n%s", what, out);
#ifdef SAN_FAULT_EXIT
    if (sig != SIGABRT) {
        ASSERT_EQ(r, SAN_FAULT_EXIT);
        ASSERT_CONTAINS(out, "Sanitizer");
    } else
#endif
    ASSERT_EQ(r, -sig);
    unsigned long long id = 0;
    char *p = strstr(out, "crasher is fiber ");
    ASSERT(p);
    ASSERT_EQ(sscanf(p, "crasher is fiber %llu", &id), 1);
    char want[128];
    snprintf(want, sizeof want, "weft: fiber %llu \"crasher\" %s", id, what);
    ASSERT_CONTAINS(out, want);
    ASSERT_CONTAINS(out, frame);
    ASSERT_CONTAINS(out, "#0 ");
    return out;
}

TEST(diag_crash_overflow_report)
{
    const char *out = expect_crash(0, SIGSEGV, "overflowed its stack", "overflow_recurse+0x");
    /* and where the recursion began, past the elided middle */
    ASSERT_CONTAINS(out, "more frames ...");
    ASSERT_CONTAINS(out, "crasher+0x");
}

TEST(diag_crash_segv_report)
{
    expect_crash(1, SIGSEGV, "crashed: SIGSEGV", "crash_null_store+0x");
}

TEST(diag_crash_abort_report)
{
    expect_crash(2, SIGABRT, "crashed: SIGABRT", "crash_abort+0x");
}

TEST(diag_crash_fpe_report)
{
    expect_crash(3, SIGFPE, "crashed: SIGFPE", "crash_divide+0x");
}

/* A handler of the program's own still gets the signal. */
static void on_fpe(int sig)
{
    (void)sig;
    static const char m[] = "own handler ran\n";
    ssize_t r = write(1, m, sizeof m - 1);
    (void)r;
    _exit(3);
}

static void child_crash_chained(void *arg)
{
    signal(SIGFPE, on_fpe);
    weft_run(NULL, main_crash, arg, NULL);
}

TEST(diag_crash_chains_to_program_handler)
{
    static char out[1 << 16];
    int kind = 3;
    ASSERT_EQ(test_child(child_crash_chained, &kind, out, sizeof out), 3);
    ASSERT_CONTAINS(out, "crashed: SIGFPE");
    ASSERT_CONTAINS(out, "own handler ran");
}

/* ---------------------------------------------------------------- watchdog */

/* The scene: two workers. The hog holds worker A without ever yielding;
 * a "busy" fiber keeps worker B occupied but yields all the time, so B
 * always finds local work and never steals. Twenty little fibers queued on
 * A behind the hog can only run if somebody moves them: the watchdog. */
static atomic_int ran, busy_worker = -1, busy_stop;
static atomic_llong spin_limit_ms;

static void *busy(void *arg)
{
    (void)arg;
    atomic_store(&busy_worker, weft_worker_id());
    while (!atomic_load(&busy_stop))
        weft_yield();
    return NULL;
}

static void *nudge(void *arg) { return arg; }

static void *little(void *arg)
{
    (void)arg;
    atomic_fetch_add(&ran, 1);
    return NULL;
}

/* Spin without yielding until the little ones ran or the limit passed. */
NOINLINE static void hog_spin(uint64_t limit_ns)
{
    uint64_t end = weft_now() + limit_ns;
    while (weft_now() < end && atomic_load(&ran) < 20)
        for (int i = 0; i < 100000; i++)   /* mostly here, not in the clock */
            sink++;
}

static void *hog(void *arg)
{
    (void)arg;
    weft_attr d = { .flags = WEFT_DETACHED };
    ASSERT_EQ(weft_spawn(NULL, &d, busy, NULL), 0);
    /* B must steal `busy` while we never yield. Each spawn pushes the one
     * before it from our next slot to the ring, where thieves take it, and
     * wakes an idle worker: repeat until B has it. */
    while (atomic_load(&busy_worker) < 0) {
        ASSERT_EQ(weft_spawn(NULL, &d, nudge, NULL), 0);
        uint64_t until = weft_now() + 20 * 1000000;
        while (atomic_load(&busy_worker) < 0 && weft_now() < until)
            sink++;
    }
    ASSERT_NE(atomic_load(&busy_worker), weft_worker_id());
    for (int i = 0; i < 20; i++)
        ASSERT_EQ(weft_spawn(NULL, &d, little, NULL), 0);
    hog_spin((uint64_t)atomic_load(&spin_limit_ms) * 1000000);
    printf("little fibers that ran while the hog held its worker: %d\n", atomic_load(&ran));
    atomic_store(&busy_stop, 1);
    return NULL;
}

static void *main_watchdog(void *arg)
{
    (void)arg;
    weft_fiber *h;
    weft_attr a = { .name = "hog" };
    ASSERT_EQ(weft_spawn(&h, &a, hog, NULL), 0);
    ASSERT_EQ(weft_join(h, NULL), 0);
    weft_stats_t st;
    ASSERT_EQ(weft_stats(&st), 0);
    printf("watchdog reports %llu, moved %llu\n", (unsigned long long)st.watchdog_reports,
           (unsigned long long)st.watchdog_moved);
    return NULL;
}

static void child_watchdog(void *arg)
{
    atomic_store(&spin_limit_ms, arg ? 300 : 5000);
    if (arg)
        setenv("WEFT_WATCHDOG_MS", arg, 1);
    weft_config cfg = { .workers = 2, .watchdog_ms = 50 };
    weft_run(&cfg, main_watchdog, NULL, NULL);
}

static int count(const char *h, const char *n)
{
    int c = 0;
    for (const char *p = h; (p = strstr(p, n)); p++)
        c++;
    return c;
}

TEST(diag_watchdog_reports_hog_once_and_hands_off)
{
    static char out[1 << 16];
    int r = test_child(child_watchdog, NULL, out, sizeof out);
    printf("%s", out);
    ASSERT_EQ(r, 0);
    /* once for the hog (on a loaded machine another worker the OS kept
     * off the CPU may be reported too: not the hog's doing) */
    ASSERT_EQ(count(out, "\"hog\" has held worker"), 1);
    /* The backtrace comes from a signal to the hog's thread. qemu-user
     * delivers a guest's signals late, sometimes after the moved fibers
     * ran and the hog stopped: there the report says so instead. */
    if (test_under_qemu() && strstr(out, "yielded before its backtrace was taken"))
        printf("qemu: backtrace came too late, as reported\n");
    else if (!strstr(out, " hog+"))   /* under valgrind the report may come while it still spawns */
        ASSERT_CONTAINS(out, "hog_spin");
    /* Moved: the twenty little fibers, and whichever nudges the other
     * worker had not taken yet (how many depends on how fast it stole
     * `busy`: a dozen under valgrind). */
    const char *m = strstr(out, "watchdog reports 1, moved ");
    ASSERT(m != NULL);
    ASSERT_GE(atoi(m + strlen("watchdog reports 1, moved ")), 20);
    ASSERT_CONTAINS(out, "held its worker: 20");
}

/* The same scene without a watchdog: the little fibers starve until the
 * hog lets go (this is what the test above relies on the watchdog for). */
TEST(diag_watchdog_off_starves)
{
    static char out[1 << 16];
    int r = test_child(child_watchdog, "off", out, sizeof out);
    printf("%s", out);
    ASSERT_EQ(r, 0);
    ASSERT_EQ(count(out, "weft: watchdog:"), 0);
    ASSERT_CONTAINS(out, "held its worker: 0");
    ASSERT_CONTAINS(out, "watchdog reports 0, moved 0");
}

/* ------------------------------------------------------------------ trace */

static void *pinger(void *arg)
{
    for (int i = 0; i < 50; i++)
        weft_yield();
    weft_sleep(1000000);
    return arg;
}

static void *main_trace(void *arg)
{
    (void)arg;
    weft_fiber *f[4];
    weft_attr a = { .name = "pinger \"quoted\"" };
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(weft_spawn(&f[i], &a, pinger, NULL), 0);
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(weft_join(f[i], NULL), 0);
    return NULL;
}

/* The checker: valid JSON, and the events we expect. */
static const char trace_check[] =
    "import json,sys\n"
    "d = json.load(open(sys.argv[1]))\n"
    "ev = d['traceEvents']\n"
    "runs = [e for e in ev if e['ph'] == 'X' and e['name'] == 'pinger \"quoted\"']\n"
    "assert len(runs) >= 4 * 50, len(runs)\n"
    "assert all(e['dur'] >= 0 for e in runs)\n"
    "ends = {e['args']['end'] for e in runs}\n"
    "assert {'yield', 'exit', 'park: sleep'} <= ends, ends\n"
    "assert any(e['ph'] == 'i' and e['name'] == 'park: sleep' for e in ev)\n"
    "assert any(e['ph'] == 'i' and e['name'] == 'park: join' for e in ev)\n"
    "names = {e['args']['name'] for e in ev if e['ph'] == 'M' and e['name'] == 'thread_name'}\n"
    "assert names == {'worker 0', 'worker 1'}, names\n"
    "print('trace ok', len(ev))\n";

TEST(diag_trace_json)
{
    char path[] = "/tmp/weft-trace-XXXXXX.json";
    int fd = mkstemps(path, 5);
    ASSERT(fd >= 0);
    close(fd);
    setenv("WEFT_TRACE", path, 1);
    weft_config cfg = { .workers = 2 };
    test_run_cfg(&cfg, main_trace, NULL);
    unsetenv("WEFT_TRACE");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "python3 -c '%s' %s", "exec(open(\"/dev/stdin\").read())", path);
    FILE *p = popen(cmd, "w");
    ASSERT(p);
    fputs(trace_check, p);
    int st = pclose(p);
    if (st == 0)
        unlink(path);
    ASSERT_EQ(st, 0);
}

/* ------------------------------------------------- I/O waits in the dump */

static int io_fds[2];

NOINLINE static void *reader_fiber(void *arg)
{
    (void)arg;
    char c;
    sink += (int)weft_read(io_fds[0], &c, 1);   /* nothing comes until we write */
    return NULL;
}

static void *slow_job(void *arg)
{
    weft_sleep(10 * 1000000);   /* a plain thread here: nanosleep */
    return arg;
}

static void *main_dump_io(void *arg)
{
    (void)arg;
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, io_fds), 0);
    weft_fiber *r;
    weft_attr a = { .name = "reader" };
    ASSERT_EQ(weft_spawn(&r, &a, reader_fiber, NULL), 0);
    void *pcs[8];
    backtrace_parked(r, pcs, 8);
    char path[] = "/tmp/weft-dump-XXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    unlink(path);
    ASSERT_EQ(weft_dump(fd), 0);
    static char out[1 << 16];
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, out, sizeof out - 1);
    out[n > 0 ? n : 0] = 0;
    close(fd);
    printf("%s", out);
    char want[96];
    snprintf(want, sizeof want, "\"reader\": parked on fd %d read", io_fds[0]);
    ASSERT_CONTAINS(out, want);
    ASSERT_EQ(weft_write(io_fds[1], "x", 1), 1);
    ASSERT_EQ(weft_join(r, NULL), 0);

    /* the blocking pool's threads show in the counters */
    void *ret = NULL;
    ASSERT_EQ(weft_blocking(slow_job, (void *)7, &ret), 0);
    weft_stats_t st;
    ASSERT_EQ(weft_stats(&st), 0);
    ASSERT_GE(st.pool_threads, 1);
    close(io_fds[0]);
    close(io_fds[1]);
    return NULL;
}

TEST(diag_dump_io_wait_and_pool)
{
    test_run(main_dump_io, NULL);
}
