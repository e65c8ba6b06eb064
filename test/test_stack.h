/*
 * What the stack tests share (test_stack.c, test_stack_posix.c): a dive
 * that overflows a fiber's stack on purpose, and the checks of how it died.
 */
#ifndef WEFT_TEST_STACK_H
#define WEFT_TEST_STACK_H

#include "test.h"

#include "arch/arch.h"
#include "sched/san.h"
#include "sched/sched.h"

#include <signal.h>
#include <stdatomic.h>

#define SMALL ((size_t)64 << 10)

/* One frame of about 600 bytes, every byte of its buffer written, so that
 * a frame crossing the bottom of the stack writes the guard (or canary)
 * region whatever the compiler does with the rest of the frame. Recurses
 * while the next frame would still end above `floor`. */
static __attribute__((noinline, unused)) int dive(const char *floor, int depth)
{
    volatile char buf[512];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (char)(depth | 1);
    int r = buf[0];
    if ((uintptr_t)buf - sizeof buf > (uintptr_t)floor && depth < 1000000)
        r += dive(floor, depth + 1);
    return r + buf[sizeof buf - 1];
}

static __attribute__((unused)) weft__stack *my_stack(void)
{
    return weft_self()->stack;
}

/* One frame past the bottom: the fiber prints what the crash message must
 * say, then recurses until it faults. */
static __attribute__((unused)) void *overflow_fn(void *arg)
{
    weft__stack *s = my_stack();
    printf("expect: fiber %llu \"%s\" overflowed its stack of %zu bytes\n",
           (unsigned long long)weft_id(weft_self()), weft_name(weft_self()),
           (size_t)(s->hi - s->lo));
    fflush(stdout);
    const char *floor = arg ? s->lo - (uintptr_t)arg : NULL;   /* NULL: until it faults */
    dive(floor, 1);
    return NULL;
}

static __attribute__((unused)) void *overflow_main(void *arg)
{
    weft_attr a = { .stack_size = SMALL, .name = "diver" };
    weft_fiber *f;
    ASSERT_EQ(weft_spawn(&f, &a, overflow_fn, arg), 0);
    weft_join(f, NULL);
    return NULL;
}

static __attribute__((unused)) void overflow_child(void *arg)
{
    const char *mode = arg;
    if (mode)
        setenv("WEFT_STACK_GUARD", mode, 1);
    weft_config cfg = { .workers = 1 };
    weft_run(&cfg, overflow_main, NULL, NULL);
}

/* Killed by SIGSEGV. Under a sanitizer, its own SIGSEGV handler runs
 * after ours (we hand the fault back to the previous handler) and exits
 * with its exit code (1 for ASan and UBSan, 66 for TSan) instead of dying
 * of the signal; our message, if any, comes first all the same. */
static __attribute__((unused)) int died_of_segv(int st, const char *out)
{
    return st == -SIGSEGV || (st > 0 && strstr(out, "Sanitizer") &&
                              (strstr(out, "SEGV") || strstr(out, "stack-overflow")));
}

/* The message the fiber announced, as the crash handler must print it. */
static __attribute__((unused)) void expect_named(const char *out)
{
    const char *e = strstr(out, "expect: ");
    ASSERT(e != NULL);
    char want[256];
    size_t n = strcspn(e + 8, "\n");
    ASSERT_LT(n, sizeof want);
    memcpy(want, e + 8, n);
    want[n] = 0;
    const char *rest = e + 8 + n;
    if (!strstr(rest, want))
        test_fail(__FILE__, __LINE__, "want \"weft: %s\" in:\n%s", want, out);
}

static __attribute__((unused)) void check_overflow(const char *mode)
{
    char out[8192];
    int st = test_child(overflow_child, (void *)mode, out, sizeof out);
    if (!died_of_segv(st, out))
        test_fail(__FILE__, __LINE__, "status %d, output:\n%s", st, out);
    expect_named(out);
    ASSERT_CONTAINS(out, "guard page hit at");
}

#endif
