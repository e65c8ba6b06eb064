/* Diagnostics must not hurt the program they diagnose: a dump of 10,000
 * fibers does not stall the workers, the watchdog's report reads a fiber's
 * identity without racing its reuse, weft's SIGSEGV handler chains to the
 * program's own on every fault and stays installed, and the watchdog's
 * signal does not make raw blocking calls fail with EINTR. */
#define _GNU_SOURCE
#include "diag_test.h"
#include "sched/sched.h"   /* weft__handle_rec: which record a handle names */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MS 1000000ull

/* Built with a sanitizer (UBSan has no feature macro: the Makefile
 * defines WEFT_SAN_UBSAN). */
#if defined(WEFT_SAN_UBSAN) || defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define UNDER_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define UNDER_SANITIZER 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif

/* ------------------------------------------------ a dump does not stall */

#define PARKED 10000

static weft_chan *park_chan;
static atomic_int parked;
static atomic_int hb_stop, dumping;
static atomic_llong hb_late_dump, hb_late_base, hb_beats_dump;

static void *parker(void *arg)
{
    (void)arg;
    char c;
    atomic_fetch_add(&parked, 1);
    weft_chan_recv(park_chan, &c);   /* -EPIPE when the test closes it */
    return NULL;
}

static void note_max(atomic_llong *m, long long v)
{
    long long old = atomic_load(m);
    while (v > old && !atomic_compare_exchange_weak(m, &old, v))
        ;
}

/* Sleep 1 ms at a time; how late each wake-up comes, split by whether a
 * dump was running at any point of that sleep. */
static void *heartbeat(void *arg)
{
    (void)arg;
    while (!atomic_load(&hb_stop)) {
        int before = atomic_load(&dumping);
        uint64_t t0 = weft_now();
        weft_sleep(MS);
        long long late = (long long)(weft_now() - t0 - MS);
        if (before || atomic_load(&dumping)) {
            note_max(&hb_late_dump, late);
            atomic_fetch_add(&hb_beats_dump, 1);
        } else {
            note_max(&hb_late_base, late);
        }
    }
    return NULL;
}

#define DUMPS 2
struct dumper { long long ns[DUMPS]; int ret[DUMPS]; int lines; atomic_int done; };

static int count_lines(const char *buf, size_t len, const char *needle)
{
    int c = 0;
    size_t nl = strlen(needle);
    for (const char *p = buf; (p = memmem(p, len - (size_t)(p - buf), needle, nl)); p += nl)
        c++;
    return c;
}

/* The dumping thread and the control's spinning one run at the lowest
 * priority: the test is about what the runtime waits for, not about how
 * the OS shares two busy cores between threads. */
static void lowest_priority(void)
{
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
}

/* A plain thread, as the dump signal's is: the first dump into a file, to
 * check that every fiber is in it, the others to /dev/null. */
static void *dump_thread(void *arg)
{
    struct dumper *d = arg;
    lowest_priority();
    FILE *tmp = tmpfile();
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    ASSERT(tmp && null >= 0);
    for (int i = 0; i < DUMPS; i++) {
        uint64_t t0 = weft_now();
        d->ret[i] = weft_dump(i == 0 ? fileno(tmp) : null);
        d->ns[i] = (long long)(weft_now() - t0);
    }
    long len = lseek(fileno(tmp), 0, SEEK_END);
    char *buf = malloc((size_t)len + 1);
    ASSERT(buf);
    ASSERT_EQ(pread(fileno(tmp), buf, (size_t)len, 0), len);
    buf[len] = 0;
    d->lines = count_lines(buf, (size_t)len, "\"parker\": parked on channel receive");
    free(buf);
    fclose(tmp);
    close(null);
    atomic_store(&d->done, 1);
    return NULL;
}

/* The control: a thread as busy as the dumper, for as long, that takes
 * no lock of the runtime's. */
static void *spin_thread(void *arg)
{
    lowest_priority();
    uint64_t end = weft_now() + *(uint64_t *)arg;
    while (weft_now() < end)
        diag_sink++;
    return NULL;
}

/* One round: DUMPS dumps from a plain thread while the heartbeat beats,
 * then as long again with a thread that only spins (the control: what the
 * machine and one more busy thread do to the heartbeat). True if the worst
 * lateness while dumping stayed within limit, or within twice the
 * control's worst. */
static bool dump_round(int round, long long limit)
{
    atomic_store(&hb_late_dump, 0);
    atomic_store(&hb_late_base, 0);
    atomic_store(&hb_beats_dump, 0);
    struct dumper d = { .lines = 0 };
    uint64_t t0 = weft_now();
    atomic_store(&dumping, 1);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, dump_thread, &d), 0);
    while (!atomic_load(&d.done))
        weft_sleep(10 * MS);
    pthread_join(t, NULL);   /* it has finished: no wait */
    weft_sleep(20 * MS);     /* let a beat that began during the last dump end */
    atomic_store(&dumping, 0);
    uint64_t took = weft_now() - t0;
    if (took > 1000 * MS)
        took = 1000 * MS;
    ASSERT_EQ(pthread_create(&t, NULL, spin_thread, &took), 0);
    weft_sleep(took + 20 * MS);
    pthread_join(t, NULL);   /* done spinning by now, or a moment from it */
    long long late = atomic_load(&hb_late_dump), base = atomic_load(&hb_late_base);
    printf("round %d: dumps", round);
    for (int i = 0; i < DUMPS; i++) {
        printf(" %.1f ms", (double)d.ns[i] / 1e6);
        ASSERT_EQ(d.ret[i], 0);
    }
    printf("; heartbeat late by at most %.2f ms over %lld beats while dumping, "
           "%.2f ms beside a thread that only spins\n", (double)late / 1e6, atomic_load(&hb_beats_dump),
           (double)base / 1e6);
    fflush(stdout);
    ASSERT_EQ(d.lines, PARKED);   /* the dump still names every parked fiber */
    return late <= limit || late <= 2 * base;
}

static void *main_dump_stall(void *arg)
{
    (void)arg;
    park_chan = weft_chan_make(1, 0);
    ASSERT(park_chan);
    weft_attr pa = { .name = "parker", .stack_size = 32 << 10, .flags = WEFT_DETACHED };
    for (int i = 0; i < PARKED; i++)
        ASSERT_EQ(weft_spawn(NULL, &pa, parker, NULL), 0);
    while (atomic_load(&parked) < PARKED)
        weft_sleep(MS);
    weft_fiber *hb;
    weft_attr ha = { .name = "heartbeat" };
    ASSERT_EQ(weft_spawn(&hb, &ha, heartbeat, NULL), 0);
    /* The machine is shared: the OS alone sometimes keeps a worker off the
     * CPU for longer than the limit, and the control shows it. A stall
     * the dump causes comes back at every dump of every round (the stack
     * pool's lock held across the walk made it seconds long each time,
     * against a control of milliseconds); such a hiccup does not. So a
     * round may be repeated, twice at most. */
    long long limit = (long long)(20e6 * test_time_scale());
    bool ok = false;
#ifdef UNDER_TSAN
    /* Every access and atomic of every thread goes through TSan's runtime,
     * a dump runs ten times slower and TSan's own bookkeeping stalls
     * threads (the lateness seen there, 40-300 ms, measures TSan): there
     * one round checks the dump's text and that it races nothing, not
     * its time. */
    dump_round(0, limit);
    ok = true;
#endif
    for (int round = 0; round < 3 && !ok; round++)
        ok = dump_round(round, limit);
    atomic_store(&hb_stop, 1);
    ASSERT_EQ(weft_join(hb, NULL), 0);
    weft_chan_close(park_chan);
    ASSERT(ok);
    return NULL;
}

TEST_TIMEOUT(diag_dump_does_not_stall_workers, 60)
{
    if (RUNNING_ON_VALGRIND)
        test_skip("a timing test, valgrind runs one thread at a time");
    weft_config cfg = { .workers = 2 };
    test_run_cfg(&cfg, main_dump_stall, NULL);
}

/* ------------------------------------- the watchdog names a hog safely */

/* The watchdog reads the hog's id and name from its own thread. Once the
 * hog returns and is joined, the next spawn on that worker reuses its
 * record (the worker's stack cache is last in, first out) and rewrites
 * both: a plain read there is a data race, which TSan reports when the
 * rewrite comes, however long after the read. */
static void *wd_hog(void *arg)
{
    (void)arg;
    weft_stats_t st;
    uint64_t until = 0;
    for (;;) {   /* never yields: weft_stats and weft_now do not park */
        ASSERT_EQ(weft_stats(&st), 0);
        if (st.watchdog_reports && !until)
            until = weft_now() + (uint64_t)(200e6 * test_time_scale());   /* the report's writing */
        if (until && weft_now() > until)
            break;
    }
    return NULL;
}

static void *wd_next(void *arg) { return arg; }

static void *main_wd_reuse(void *arg)
{
    (void)arg;
    weft_fiber *h, *n;
    weft_attr ha = { .name = "hog-to-reuse" }, na = { .name = "next-in-its-record" };
    ASSERT_EQ(weft_spawn(&h, &ha, wd_hog, NULL), 0);
    ASSERT_EQ(weft_join(h, NULL), 0);
    ASSERT_EQ(weft_spawn(&n, &na, wd_next, NULL), 0);
    /* the same record (what the test is about), under a new handle */
    ASSERT_PTR_EQ(weft__handle_rec(n), weft__handle_rec(h));
    ASSERT(n != h);
    ASSERT_EQ(weft_join(n, NULL), 0);
    weft_stats_t st;
    ASSERT_EQ(weft_stats(&st), 0);
    ASSERT_EQ(st.watchdog_reports, 1);
    return NULL;
}

TEST(diag_watchdog_names_hog_without_racing_reuse)
{
    weft_config cfg = { .workers = 1, .watchdog_ms = 20 };
    unsetenv("WEFT_WATCHDOG_MS");
    /* In this process, not a child: TSan's report fails the test through
     * its exit status. The watchdog's report is caught from stderr. */
    FILE *tmp = tmpfile();
    ASSERT(tmp);
    fflush(stderr);
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    test_run_cfg(&cfg, main_wd_reuse, NULL);
    dup2(saved, 2);
    close(saved);
    static char out[1 << 16];
    rewind(tmp);
    out[fread(out, 1, sizeof out - 1, tmp)] = 0;
    fclose(tmp);
    fputs(out, stderr);
    ASSERT_CONTAINS(out, "\"hog-to-reuse\" has held worker 0");
}

/* ------------------------------------ SIGSEGV: the program's handler first */

/* The program's own SIGSEGV handler, as a garbage collector's write
 * barrier has one: a fault on its page makes the page writable and
 * returns, and the store runs again. Any other fault is not its business:
 * it puts the default back and returns, and the fault kills the process. */
static char *gc_page;
static volatile sig_atomic_t gc_faults;

static void gc_on_segv(int sig, siginfo_t *info, void *uctx)
{
    (void)uctx;
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    char *a = info->si_addr;
    if (a >= gc_page && a < gc_page + pg) {
        mprotect(gc_page, pg, PROT_READ | PROT_WRITE);
        gc_faults++;
        return;
    }
    signal(sig, SIG_DFL);
}

/* The faults below are the point: UBSan must not stop them first. */
#define FAULTS __attribute__((no_sanitize("undefined")))

NOINLINE FAULTS static int dive(volatile char *above, int depth)
{
    volatile char frame[768];
    frame[0] = (char)depth;
    frame[767] = above ? above[0] : 0;
    if (depth < 0)   /* never: keeps the recursion from being folded away */
        return frame[0];
    return dive(frame, depth + 1) + frame[767];
}

static void *gc_mutator(void *arg)
{
    (void)arg;
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < 2; i++) {
        mprotect(gc_page, pg, PROT_READ);   /* the barrier is armed */
        ((volatile char *)gc_page)[i] = 'x';   /* faults; the handler lets it through */
        printf("store %d went through, %d faults\n", i, (int)gc_faults);
    }
    return NULL;
}

static void *diver(void *arg)
{
    (void)arg;
    dive(NULL, 0);
    return NULL;
}

static void *main_gc(void *arg)
{
    (void)arg;
    weft_fiber *f;
    weft_attr a = { .name = "mutator" };
    ASSERT_EQ(weft_spawn(&f, &a, gc_mutator, NULL), 0);
    ASSERT_EQ(weft_join(f, NULL), 0);
    fflush(stdout);
    weft_attr d = { .name = "diver", .stack_size = 64 << 10 };
    ASSERT_EQ(weft_spawn(&f, &d, diver, NULL), 0);
    weft_join(f, NULL);
    return NULL;
}

static void child_gc(void *arg)
{
    (void)arg;
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    gc_page = mmap(NULL, pg, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT(gc_page != MAP_FAILED);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = gc_on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(sigaction(SIGSEGV, &sa, NULL), 0);
    weft_config cfg = { .workers = 2 };
    weft_run(&cfg, main_gc, NULL, NULL);
}

TEST(diag_segv_chains_to_program_handler_every_time)
{
    static char out[1 << 16];
    int r = test_child(child_gc, NULL, out, sizeof out);
    printf("%s", out);
    ASSERT_EQ(r, -SIGSEGV);
    /* both faults went to the program's handler, which fixed them */
    ASSERT_CONTAINS(out, "store 0 went through, 1 faults");
    ASSERT_CONTAINS(out, "store 1 went through, 2 faults");
#ifndef UNDER_SANITIZER
    /* and not as crashes of ours (under a sanitizer weft reports first,
     * taking the handler before it for the sanitizer's: crash_posix.c) */
    ASSERT(!strstr(out, "\"mutator\" crashed"));
#endif
    /* weft's handler is still there for the overflow that followed */
    ASSERT_CONTAINS(out, "\"diver\" overflowed its stack");
}

/* ------------------------------------------- the watchdog and EINTR */

/* A fiber stuck in a raw blocking call (outside weft's I/O layer) while
 * the other worker is busy: the watchdog reports it, and must not make
 * the call fail with EINTR. read(2) on a blocking pipe restarts after the
 * backtrace signal's handler (SA_RESTART); poll, nanosleep and
 * epoll_wait would fail after any handler, so their thread is left alone. */
enum { RAW_READ, RAW_POLL, RAW_NANOSLEEP, RAW_EPOLL, RAW_KINDS };
static const char *const raw_names[RAW_KINDS] = { "read", "poll", "nanosleep", "epoll_wait" };
static int raw_pipe[2];
static atomic_int raw_busy_stop;

static void *raw_busy(void *arg)
{
    (void)arg;
    while (!atomic_load(&raw_busy_stop))
        weft_yield();
    return NULL;
}

static void *raw_writer(void *arg)
{
    (void)arg;
    struct timespec ts = { 0, 300 * 1000000 };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    ssize_t r = write(raw_pipe[1], "x", 1);
    (void)r;
    return NULL;
}

NOINLINE static void *raw_blocker(void *arg)
{
    int kind = *(int *)arg;
    long r = -2;
    int err = 0;
    errno = 0;
    switch (kind) {
    case RAW_READ: {
        char c;
        r = read(raw_pipe[0], &c, 1);
        break;
    }
    case RAW_POLL:
        r = poll(NULL, 0, 300);
        break;
    case RAW_NANOSLEEP: {
        struct timespec ts = { 0, 300 * 1000000 };
        r = nanosleep(&ts, NULL);
        break;
    }
    case RAW_EPOLL: {
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev;
        r = epoll_wait(ep, &ev, 1, 300);
        err = errno;
        close(ep);
        errno = err;
        break;
    }
    }
    err = errno;
    printf("%s returned %ld, %s\n", kind >= 0 && kind < RAW_KINDS ? raw_names[kind] : "?", r,
           r < 0 ? strerror(err) : "no error");
    fflush(stdout);
    atomic_store(&raw_busy_stop, 1);
    return NULL;
}

static void *main_raw(void *arg)
{
    weft_fiber *b, *f;
    weft_attr ba = { .name = "busy" }, fa = { .name = "blocker" };
    ASSERT_EQ(weft_spawn(&b, &ba, raw_busy, NULL), 0);
    weft_yield();
    pthread_t t;
    if (*(int *)arg == RAW_READ)
        ASSERT_EQ(pthread_create(&t, NULL, raw_writer, NULL), 0);
    ASSERT_EQ(weft_spawn(&f, &fa, raw_blocker, arg), 0);
    ASSERT_EQ(weft_join(f, NULL), 0);
    ASSERT_EQ(weft_join(b, NULL), 0);
    if (*(int *)arg == RAW_READ)
        pthread_join(t, NULL);   /* it wrote: done */
    return NULL;
}

static void child_raw(void *arg)
{
    ASSERT_EQ(pipe(raw_pipe), 0);
    unsetenv("WEFT_WATCHDOG_MS");
    weft_config cfg = { .workers = 2, .watchdog_ms = 20 };
    weft_run(&cfg, main_raw, arg, NULL);
}

TEST(diag_watchdog_signal_does_not_interrupt_raw_calls)
{
    if (RUNNING_ON_VALGRIND)
        test_skip("valgrind runs one thread at a time");
    /* qemu-user shows the host's system calls in /proc: only read(2),
     * which SA_RESTART covers, can be checked there. */
    int kinds = test_under_qemu() ? 1 : RAW_KINDS;
    static char out[1 << 16];
    for (int kind = 0; kind < kinds; kind++) {
        int r = test_child(child_raw, &kind, out, sizeof out);
        printf("---- %s\n%s", raw_names[kind], out);
        ASSERT_EQ(r, 0);
        ASSERT_CONTAINS(out, "\"blocker\" has held worker");   /* the watchdog did fire */
        char want[64];
        snprintf(want, sizeof want, "%s returned %d, no error", raw_names[kind],
                 kind == RAW_READ ? 1 : 0);
        ASSERT_CONTAINS(out, want);
    }
}
