/* Diagnostics that need POSIX: the dump signal, crash reports, the gdb
 * extension, the watchdog's backtrace of a running fiber, the trace. */
#define _GNU_SOURCE
#include "test.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline, noclone))

static volatile int sink;

NOINLINE static void *sleeper_fiber(void *arg)
{
    (void)arg;
    int r = weft_sleep(60ull * 1000000000);
    sink += r;
    return NULL;
}

static int backtrace_parked(weft_fiber *f, void **pcs, int max)
{
    for (int i = 0; i < 1000; i++) {
        int n = weft_backtrace(f, pcs, max);
        if (n > 3)
            return n;
        weft_sleep(1000000);
    }
    return -1;
}

/* ------------------------------------------------------------ dump signal */

static void *main_dump_signal(void *arg)
{
    (void)arg;
    weft_fiber *sl;
    weft_attr a = { .name = "sleepy" };
    ASSERT_EQ(weft_spawn(&sl, &a, sleeper_fiber, NULL), 0);
    void *pcs[8];
    backtrace_parked(sl, pcs, 8);
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
    ASSERT_CONTAINS(out, "sleeper_fiber");
    ASSERT_CONTAINS(out, "still running");
    /* by name, from the environment */
    ASSERT_EQ(test_child(child_dump_signal, "USR1", out, sizeof out), 0);
    ASSERT_CONTAINS(out, "\"sleepy\": parked on sleep");
}

