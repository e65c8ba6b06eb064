/*
 * The deadlock report (src/sched/deadlock.c, WEFT_DEADLOCK=1): fibers that
 * wait only on each other are reported once, with the dump; fibers that
 * also wait on I/O are not, and nothing is reported unless it was asked
 * for. Each case runs in a child process whose stderr is a file, and a
 * plain thread plays the part that makes the report inexact: it is what
 * finally wakes the fibers, with calls that are legal from any thread.
 */
#define _GNU_SOURCE
#include "test.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

#define MS 1000000ull

static weft_chan *ca, *cb;
static int pfd[2] = { -1, -1 };
static bool with_reader;

static void *recv_a(void *arg) { int x; return (void *)(intptr_t)weft_chan_recv(ca, &x); }
static void *recv_b(void *arg) { int x; return (void *)(intptr_t)weft_chan_recv(cb, &x); }
static void *read_pipe(void *arg)
{
    char c;
    return (void *)(intptr_t)weft_read(pfd[0], &c, 1);
}

static void *main_blocked(void *arg)
{
    weft_fiber *a, *b, *r = NULL;
    ASSERT_EQ(weft_spawn(&a, NULL, recv_a, NULL), 0);
    ASSERT_EQ(weft_spawn(&b, NULL, recv_b, NULL), 0);
    if (with_reader)
        ASSERT_EQ(weft_spawn(&r, NULL, read_pipe, NULL), 0);
    void *ret;
    ASSERT_EQ(weft_join(a, &ret), 0);   /* main waits on a fiber too */
    ASSERT_EQ((intptr_t)ret, 0);
    ASSERT_EQ(weft_join(b, &ret), 0);
    ASSERT_EQ((intptr_t)ret, 0);
    if (r) {
        ASSERT_EQ(weft_join(r, &ret), 0);
        ASSERT_EQ((intptr_t)ret, 1);
    }
    return arg;
}

/* stderr is a file (test_child): has the whole report been written? */
static bool report_done(void)
{
    static char buf[1 << 16];
    ssize_t n = pread(2, buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    return strstr(buf, "weft: end of dump") != NULL;
}

/* The rescuer: waits until the report and its dump are written, or the
 * time is up, then sends on both channels from outside any fiber, and only
 * then writes the pipe. */
static void *rescuer(void *arg)
{
    uint64_t wait_ms = (uint64_t)(intptr_t)arg;
    uint64_t end = weft_now() + wait_ms * MS;
    while (weft_now() < end && !report_done())
        usleep(5000);
    int one = 1;
    /* a receiver is parked on each: the sends go through at once */
    while (weft_chan_trysend(ca, &one) == -EAGAIN)
        usleep(1000);
    while (weft_chan_trysend(cb, &one) == -EAGAIN)
        usleep(1000);
    if (with_reader)
        ASSERT_EQ(write(pfd[1], "x", 1), 1);
    return NULL;
}

struct dl_case { bool on, reader; unsigned wait_ms; };

static void child(void *arg)
{
    const struct dl_case *c = arg;
    if (c->on)
        setenv("WEFT_DEADLOCK", "1", 1);
    else
        unsetenv("WEFT_DEADLOCK");
    with_reader = c->reader;
    if (with_reader)
        ASSERT_EQ(pipe(pfd), 0);
    ASSERT((ca = weft_chan_make(sizeof(int), 0)) != NULL);
    ASSERT((cb = weft_chan_make(sizeof(int), 0)) != NULL);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, rescuer, (void *)(intptr_t)c->wait_ms), 0);
    weft_config cfg = { .workers = 2 };
    ASSERT_EQ(weft_run(&cfg, main_blocked, NULL, NULL), 0);
    pthread_join(t, NULL);
}

static char out[1 << 16];

TEST(deadlock_reported_once_with_the_dump)
{
    struct dl_case c = { .on = true, .wait_ms = (unsigned)(5000 * test_time_scale()) };
    ASSERT_EQ(test_child(child, &c, out, sizeof out), 0);
    ASSERT_CONTAINS(out, "weft: deadlock: all 3 fibers are asleep");
    ASSERT_CONTAINS(out, "weft: dump of 3 fibers");
    ASSERT_CONTAINS(out, "parked on channel receive");
    ASSERT_CONTAINS(out, "(main): parked on join");
    /* once: the rescue that follows does not bring a second one */
    ASSERT(strstr(strstr(out, "weft: deadlock") + 1, "weft: deadlock") == NULL);
}

TEST(deadlock_not_reported_while_a_fiber_waits_for_io)
{
    struct dl_case c = { .on = true, .reader = true, .wait_ms = 300 };
    ASSERT_EQ(test_child(child, &c, out, sizeof out), 0);
    if (strstr(out, "deadlock"))
        test_fail(__FILE__, __LINE__, "reported with a fiber parked on a pipe:\n%s", out);
}

TEST(deadlock_not_reported_unless_asked)
{
    struct dl_case c = { .on = false, .wait_ms = 300 };
    ASSERT_EQ(test_child(child, &c, out, sizeof out), 0);
    if (strstr(out, "deadlock"))
        test_fail(__FILE__, __LINE__, "reported without WEFT_DEADLOCK:\n%s", out);
}
