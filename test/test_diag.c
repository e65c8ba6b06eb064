/* Diagnostics: backtraces of parked fibers, the dump, stats, bad input. */
#define _GNU_SOURCE
#include "diag_test.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>


/* Read everything written to a temporary file descriptor. */
static char *slurp(int fd)
{
    static char buf[1 << 16];
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    return buf;
}

static int tmpfd(void)
{
    FILE *f = tmpfile();
    ASSERT(f);
    return dup(fileno(f));
}

/* What weft_backtrace_print writes for pcs[0..n). */
static char *printed(void *const *pcs, int n)
{
    int fd = tmpfd();
    ASSERT_EQ(weft_backtrace_print(fd, pcs, n), 0);
    char *out = slurp(fd);
    close(fd);
    return out;
}

/* ---------------------------------------------- three calls deep, parked */

volatile int diag_sink;

NOINLINE static int deep_level3(void)
{
    int r = weft_sleep(60ull * 1000000000);
    diag_sink += r;
    return r + 1;
}

NOINLINE static int deep_level2(void)
{
    int r = deep_level3();
    diag_sink += r;
    return r + 1;
}

NOINLINE static int deep_level1(void)
{
    int r = deep_level2();
    diag_sink += r;
    return r + 1;
}

void *deep_fiber(void *arg)
{
    (void)arg;
    deep_level1();
    return NULL;
}

int backtrace_parked(weft_fiber *f, void **pcs, int max)
{
    for (int i = 0; i < 1000; i++) {
        int n = weft_backtrace(f, pcs, max);
        if (n > 3)
            return n;
        if (n == -ENOTSUP) {
            weft_sleep(50 * 1000000);
            return n;
        }
        weft_sleep(1000000);
    }
    return -1;
}

static void *main_backtrace_deep(void *arg)
{
    (void)arg;
    weft_fiber *f;
    weft_attr a = { .name = "deep" };
    ASSERT_EQ(weft_spawn(&f, &a, deep_fiber, NULL), 0);
    void *pcs[64];
    int n = backtrace_parked(f, pcs, 64);
    if (n == -ENOTSUP) {
        test_skip("no unwinding of suspended fibers in this build");
    }
    ASSERT_GT(n, 3);
    char *out = printed(pcs, n);
    ASSERT_CONTAINS(out, "deep_level3");
    ASSERT_CONTAINS(out, "deep_level2");
    ASSERT_CONTAINS(out, "deep_level1");
    ASSERT_CONTAINS(out, "weft_sleep");
    /* innermost first: level3 is printed before level1 */
    ASSERT(strstr(out, "deep_level3") < strstr(out, "deep_level1"));
    /* a short buffer is filled from the innermost frame */
    void *two[2];
    ASSERT_EQ(weft_backtrace(f, two, 2), 2);
    ASSERT_PTR_EQ(two[0], pcs[0]);
    ASSERT_EQ(weft_cancel(f), 0);
    ASSERT_EQ(weft_join(f, NULL), 0);
    return NULL;
}

TEST(diag_backtrace_three_deep)
{
    test_run(main_backtrace_deep, NULL);
}

NOINLINE static int self_marker(void **pcs, int max)
{
    int n = weft_backtrace(NULL, pcs, max);
    diag_sink += n;
    return n;
}

static void *main_backtrace_self(void *arg)
{
    (void)arg;
    void *pcs[32];
    int n = self_marker(pcs, 32);
    ASSERT_GT(n, 1);
    char *out = printed(pcs, n);
    /* the first frame is the caller of weft_backtrace */
    ASSERT_CONTAINS(out, "#0");
    char *first = strstr(out, "#0");
    char *eol = strchr(first, '\n');
    *eol = 0;
    ASSERT_CONTAINS(first, "self_marker");
    *eol = '\n';
    ASSERT_CONTAINS(out, "main_backtrace_self");
    /* weft_self() is the same as NULL */
    ASSERT_GT(weft_backtrace(weft_self(), pcs, 32), 1);
    return NULL;
}

TEST(diag_backtrace_self)
{
    test_run(main_backtrace_self, NULL);
    /* outside any fiber: the calling thread */
    void *pcs[16];
    ASSERT_GT(weft_backtrace(NULL, pcs, 16), 0);
}

static atomic_int spin_started, spin_stop;

static void *spinner(void *arg)
{
    (void)arg;
    atomic_store(&spin_started, 1);
    while (!atomic_load(&spin_stop))
        ;
    return NULL;
}

static void *quick(void *arg) { return arg; }

static void *main_backtrace_bad(void *arg)
{
    (void)arg;
    void *pcs[8];
    ASSERT_EQ(weft_backtrace(NULL, pcs, -1), -EINVAL);
    ASSERT_EQ(weft_backtrace(NULL, NULL, 4), -EINVAL);
    ASSERT_EQ(weft_backtrace(NULL, NULL, 0), 0);
    ASSERT_EQ(weft_backtrace_print(-1, pcs, 1), -EINVAL);
    ASSERT_EQ(weft_backtrace_print(1, NULL, 1), -EINVAL);
    ASSERT_EQ(weft_backtrace_print(1, pcs, -1), -EINVAL);

    /* running on the other worker: -EBUSY, and it is not disturbed */
    weft_fiber *s;
    ASSERT_EQ(weft_spawn(&s, NULL, spinner, NULL), 0);
    while (!atomic_load(&spin_started))
        weft_sleep(1000000);
    ASSERT_EQ(weft_backtrace(s, pcs, 8), -EBUSY);
    atomic_store(&spin_stop, 1);
    ASSERT_EQ(weft_join(s, NULL), 0);

    /* returned but not joined: -ESRCH */
    weft_fiber *q;
    ASSERT_EQ(weft_spawn(&q, NULL, quick, NULL), 0);
    int r = 0;
    for (int i = 0; i < 1000 && r != -ESRCH; i++) {
        weft_sleep(1000000);
        r = weft_backtrace(q, pcs, 8);
    }
    ASSERT_EQ(r, -ESRCH);
    ASSERT_EQ(weft_join(q, NULL), 0);
    return NULL;
}

TEST(diag_backtrace_bad_input)
{
    weft_config cfg = { .workers = 2 };
    test_run_cfg(&cfg, main_backtrace_bad, NULL);
}

/* ------------------------------------------------------------------ dump */

NOINLINE void *sleeper_fiber(void *arg)
{
    (void)arg;
    int r = weft_sleep(60ull * 1000000000);
    diag_sink += r;
    return NULL;
}

NOINLINE static void *joiner_fiber(void *arg)
{
    int r = weft_join(arg, NULL);
    diag_sink += r;
    return NULL;
}

static weft_mutex dump_mutex = WEFT_MUTEX_INIT;
static weft_mutex dump_cmutex = WEFT_MUTEX_INIT;
static weft_cond dump_cond = WEFT_COND_INIT;
static weft_chan *dump_chan;

NOINLINE static void *locker_fiber(void *arg)
{
    (void)arg;
    int r = weft_mutex_lock(&dump_mutex);   /* held by main: parks */
    if (r == 0)
        weft_mutex_unlock(&dump_mutex);
    return NULL;
}

NOINLINE static void *receiver_fiber(void *arg)
{
    (void)arg;
    int v;
    diag_sink += weft_chan_recv(dump_chan, &v);
    return NULL;
}

NOINLINE static void *waiter_fiber(void *arg)
{
    (void)arg;
    weft_mutex_lock(&dump_cmutex);
    diag_sink += weft_cond_wait(&dump_cond, &dump_cmutex);
    weft_mutex_unlock(&dump_cmutex);
    return NULL;
}

static void *main_dump(void *arg)
{
    (void)arg;
    weft_fiber *sl, *target, *jn, *lk, *rc, *cw;
    weft_attr a1 = { .name = "sleeper" }, a2 = { .name = "target" }, a3 = { .name = "joiner" },
              a4 = { .name = "locker" }, a5 = { .name = "receiver" }, a6 = { .name = "condwaiter" };
    dump_chan = weft_chan_make(sizeof(int), 0);
    ASSERT(dump_chan);
    ASSERT_EQ(weft_mutex_lock(&dump_mutex), 0);
    ASSERT_EQ(weft_spawn(&sl, &a1, sleeper_fiber, NULL), 0);
    ASSERT_EQ(weft_spawn(&target, &a2, sleeper_fiber, NULL), 0);
    ASSERT_EQ(weft_spawn(&jn, &a3, joiner_fiber, target), 0);
    ASSERT_EQ(weft_spawn(&lk, &a4, locker_fiber, NULL), 0);
    ASSERT_EQ(weft_spawn(&rc, &a5, receiver_fiber, NULL), 0);
    ASSERT_EQ(weft_spawn(&cw, &a6, waiter_fiber, NULL), 0);
    void *pcs[8];
    weft_fiber *all[] = { sl, target, jn, lk, rc, cw };
    bool frames = true;
    for (int i = 0; i < 6; i++)
        frames = backtrace_parked(all[i], pcs, 8) != -ENOTSUP;
    int fd = tmpfd();
    ASSERT_EQ(weft_dump(fd), 0);
    char *out = slurp(fd);
    close(fd);
    printf("%s", out);
    char want[128];
    ASSERT_CONTAINS(out, "weft: dump of 7 fibers");
    ASSERT_CONTAINS(out, "\"sleeper\": parked on sleep until now+");
    snprintf(want, sizeof want, "\"joiner\": parked on join of fiber %llu",
             (unsigned long long)weft_id(target));
    ASSERT_CONTAINS(out, want);
    snprintf(want, sizeof want, "\"locker\": parked on mutex %p", (void *)&dump_mutex);
    ASSERT_CONTAINS(out, want);
    snprintf(want, sizeof want, "\"receiver\": parked on channel receive %p", (void *)dump_chan);
    ASSERT_CONTAINS(out, want);
    snprintf(want, sizeof want, "\"condwaiter\": parked on condvar %p", (void *)&dump_cond);
    ASSERT_CONTAINS(out, want);
    ASSERT_CONTAINS(out, "\"main\" (main): running on worker 0 (the caller)");
    if (frames) {
        ASSERT_CONTAINS(out, "sleeper_fiber");
        ASSERT_CONTAINS(out, "joiner_fiber");
        ASSERT_CONTAINS(out, "locker_fiber");
        ASSERT_CONTAINS(out, "receiver_fiber");
        ASSERT_CONTAINS(out, "waiter_fiber");
    }
    ASSERT_CONTAINS(out, "high-water");
    ASSERT_CONTAINS(out, "weft: end of dump");
    ASSERT_EQ(weft_dump(-1), -EINVAL);
    weft_mutex_unlock(&dump_mutex);
    int v = 1;
    ASSERT_EQ(weft_chan_send(dump_chan, &v), 0);
    weft_cancel(cw);
    weft_cancel(sl);
    weft_cancel(target);
    for (int i = 0; i < 6; i++)
        if (all[i] != target)
            ASSERT_EQ(weft_join(all[i], NULL), 0);
    weft_chan_free(dump_chan);
    return NULL;
}

TEST(diag_dump_states)
{
    weft_config cfg = { .workers = 1 };
    test_run_cfg(&cfg, main_dump, NULL);
    ASSERT_EQ(weft_dump(1), -EPERM);
}

/* ----------------------------------------------------------------- stats */

static void *yielder(void *arg)
{
    for (int i = 0; i < 10; i++)
        weft_yield();
    weft_sleep(50 * 1000000);   /* long enough to park on a timer even under valgrind */
    return arg;
}

static void *main_stats(void *arg)
{
    (void)arg;
    weft_fiber *f[8];
    for (int i = 0; i < 8; i++)
        ASSERT_EQ(weft_spawn(&f[i], NULL, yielder, NULL), 0);
    weft_stats_t st;
    ASSERT_EQ(weft_stats(&st), 0);
    ASSERT_EQ(st.alive, 9);
    for (int i = 0; i < 8; i++)
        ASSERT_EQ(weft_join(f[i], NULL), 0);
    ASSERT_EQ(weft_stats(&st), 0);
    ASSERT_EQ(st.workers, 2);
    ASSERT_EQ(st.reported, 2);
    ASSERT_EQ(st.alive, 1);
    ASSERT_EQ(st.total.spawned, 9);
    ASSERT_EQ(st.total.exited, 8);
    ASSERT_GE(st.total.switches, 8 * 11);
    ASSERT_GE(st.total.parks, 8);
    ASSERT_GE(st.total.timers_fired, 1);   /* a sleep already over at park time fires none */
    ASSERT_EQ(st.worker[0].switches + st.worker[1].switches, st.total.switches);
    ASSERT_EQ(st.watchdog_reports, 0);
    ASSERT_EQ(weft_stats(NULL), -EINVAL);
    return NULL;
}

TEST(diag_stats)
{
    weft_config cfg = { .workers = 2 };
    test_run_cfg(&cfg, main_stats, NULL);
    weft_stats_t st;
    ASSERT_EQ(weft_stats(&st), -EPERM);
}
