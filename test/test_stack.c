/*
 * Guarded stacks (src/arch/stack.c, stack_win32.c) and what the scheduler
 * makes of them: deep recursion fits, one frame too many dies loudly
 * (hardware guard and canary), bad sizes are -EINVAL, stacks are reused.
 * Linux's own guard modes, faults on a forked child's copy of a stack and
 * the million fibers are in test_stack_posix.c.
 */
#define _GNU_SOURCE
#include "test.h"

#include "arch/arch.h"
#include "test_stack.h"

#include <errno.h>
#include <stdint.h>

/* ------------------------------------------------------------ recursion */

static void *deep_fn(void *arg)
{
    weft__stack *s = my_stack();
    size_t size = (size_t)(s->hi - s->lo);
    /* leave 10% unused: recursion uses ~90% of the stack */
    dive(s->lo + size / 10, 1);
    return (void *)weft__stack_used(s);
}

static void *deep_main(void *arg)
{
    weft_attr a = { .stack_size = SMALL, .name = "deep" };
    weft_fiber *f;
    ASSERT_EQ(weft_spawn(&f, &a, deep_fn, NULL), 0);
    void *used = NULL;
    ASSERT_EQ(weft_join(f, &used), 0);
    return used;
}

TEST(stack_deep_recursion_fits)
{
    size_t used = (size_t)test_run(deep_main, NULL);
    /* the high-water mark saw the recursion: between 85% and 100% of 64 KiB */
    ASSERT_GE(used, SMALL * 85 / 100);
    ASSERT_LT(used, SMALL);
}

TEST(stack_overflow_dies_with_message)
{
    check_overflow(NULL);
}

/* Canary mode has no hardware guard: the fiber writes 2 KiB into the
 * canary zone below its stack (well inside it: the zone is 16 KiB), then
 * returns, and the worker finds the pattern destroyed when it switches
 * back. */
static void *canary_main(void *arg)
{
    weft_attr a = { .stack_size = SMALL, .name = "canary" };
    weft_fiber *f;
    ASSERT_EQ(weft_spawn(&f, &a, overflow_fn, (void *)2048), 0);
    weft_join(f, NULL);
    return NULL;
}

static void canary_child(void *arg)
{
    setenv("WEFT_STACK_GUARD", "canary", 1);
    weft_config cfg = { .workers = 1 };
    weft_run(&cfg, canary_main, NULL, NULL);
}

TEST(stack_overflow_canary_mode)
{
    char out[8192];
    int st = test_child(canary_child, NULL, out, sizeof out);
    if (st != -SIGABRT)
        test_fail(__FILE__, __LINE__, "status %d, output:\n%s", st, out);
    ASSERT_CONTAINS(out, "weft: stack guards: canary (forced by WEFT_STACK_GUARD)");
    ASSERT_CONTAINS(out, "\"canary\" overflowed its");
    ASSERT_CONTAINS(out, "(canary destroyed)");
}

/* ------------------------------------------------------------ bad sizes */

static void *ret_arg(void *arg) { return arg; }

static void *bad_sizes_main(void *arg)
{
    weft_fiber *f = NULL;
    size_t bad[] = { 1, WEFT_STACK_MIN - 1, WEFT_STACK_MAX + 1, (size_t)1 << 40, SIZE_MAX };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        weft_attr a = { .stack_size = bad[i] };
        ASSERT_EQ(weft_spawn(&f, &a, ret_arg, NULL), -EINVAL);
    }
    /* the runtime still runs fibers, at the smallest and a large size */
    size_t good[] = { WEFT_STACK_MIN, (size_t)8 << 20 };
    for (size_t i = 0; i < 2; i++) {
        weft_attr a = { .stack_size = good[i] };
        void *r = NULL;
        ASSERT_EQ(weft_spawn(&f, &a, ret_arg, (void *)(i + 1)), 0);
        ASSERT_EQ(weft_join(f, &r), 0);
        ASSERT_PTR_EQ(r, (void *)(i + 1));
    }
    return arg;
}

TEST(stack_bad_sizes_einval)
{
    weft__stack *s;
    ASSERT_EQ(weft__stack_alloc(0, &s), -EINVAL);
    ASSERT_EQ(weft__stack_alloc(WEFT_STACK_MIN - 1, &s), -EINVAL);
    ASSERT_EQ(weft__stack_alloc(WEFT_STACK_MAX + 1, &s), -EINVAL);
    weft_config bad = { .stack_size = 1 };
    ASSERT_EQ(weft_run(&bad, ret_arg, NULL, NULL), -EINVAL);
    bad.stack_size = (size_t)1 << 40;
    ASSERT_EQ(weft_run(&bad, ret_arg, NULL, NULL), -EINVAL);
    ASSERT_PTR_EQ(test_run(bad_sizes_main, (void *)9), (void *)9);
}

/* ---------------------------------------------------------------- reuse */

static void *self_fn(void *arg) { return weft_self(); }

static void *reuse_main(void *arg)
{
    weft_attr a = { .stack_size = SMALL };
    weft_fiber *f, *g;
    void *r1, *r2;
    ASSERT_EQ(weft_spawn(&f, &a, self_fn, NULL), 0);
    ASSERT_EQ(weft_join(f, &r1), 0);
    ASSERT_EQ(weft_spawn(&g, &a, self_fn, NULL), 0);
    ASSERT_EQ(weft_join(g, &r2), 0);
    /* the fiber record lives at the top of its stack: same record, same
     * stack; the handles differ in the record's generation (fiber.c) */
    ASSERT_PTR_EQ(weft__handle_rec(r2), weft__handle_rec(r1));
    ASSERT(r2 != r1);
    return NULL;
}

TEST(stack_freed_and_reused)
{
    weft__stack *a, *b;
    ASSERT_EQ(weft__stack_alloc(SMALL, &a), 0);
    ASSERT_EQ(a->size, SMALL);
    ASSERT((uintptr_t)a->lo % weft__page_size() == 0);
    ASSERT_GE((size_t)(a->hi - a->lo), SMALL - 256);
    char *lo = a->lo;
    weft__stack_free(a);
    ASSERT_EQ(weft__stack_alloc(SMALL, &b), 0);
    ASSERT_PTR_EQ(b->lo, lo);
    weft__stack_free(b);
    test_run(reuse_main, NULL);
}

/* ---------------------------------- big frames, and faults off the stack */

/* Frames larger than a page are probed page by page by the compiler (and
 * some system code does not probe at all: see stack_win32.c); either way
 * the overflow is reported. A bad pointer is named too, without the word
 * "overflowed". Under valgrind they are skipped: valgrind ends the process
 * itself on such a fault, before any handler of ours. */


static void skip_under_valgrind(void)
{
    if (RUNNING_ON_VALGRIND)
        test_skip("under valgrind: it takes SIGSEGV on guard pages for itself");
}

/* A limit the compiler cannot see through, so that the recursion below is
 * not "infinite" to it; no stack holds this many frames. */
static volatile int depth_limit = 1 << 30;

/* Frames of several pages: stack probes (__chkstk, -fstack-clash-protection)
 * walk into the guard one page at a time. */
__attribute__((noinline)) static int recurse_big(volatile char *up, int n)
{
    volatile char frame[3 * 4096 + 100];
    frame[0] = (char)n;
    frame[sizeof frame - 1] = up ? up[0] : 0;
    __asm__ volatile("" ::: "memory");
    if (n > depth_limit)
        return 0;
    return recurse_big(frame, n + 1) + frame[0];
}

static void *deep(void *arg)
{
    return (void *)(intptr_t)recurse_big(NULL, 0);
}

static volatile uintptr_t bad_address = 16;

static void *bad_pointer(void *arg)
{
    volatile int *p = (volatile int *)bad_address;
    return (void *)(intptr_t)*p;
}

/* A fiber that faults, named, on a 64 KiB stack, on two workers. Static,
 * so that test_child can hand it to a re-run child on Windows. */
struct crash { const char *name; void *(*fn)(void *); void *arg; };

static void *spawn_crasher(void *arg)
{
    const struct crash *c = arg;
    weft_attr a = { .stack_size = 64 << 10, .name = c->name };
    weft_fiber *f;
    ASSERT_EQ(weft_spawn(&f, &a, c->fn, c->arg), 0);
    weft_join(f, NULL);
    return NULL;
}

static void crash_child(void *arg)
{
    weft_config cfg = { .workers = 2 };
    test_run_cfg(&cfg, spawn_crasher, arg);
}

/* Run c in a child, its output in out. */
static void run_crash(const struct crash *c, char *out, size_t outsz)
{
    skip_under_valgrind();
    int st = test_child(crash_child, (void *)c, out, outsz);
    if (!died_of_segv(st, out))
        test_fail(__FILE__, __LINE__, "status %d, output:\n%s", st, out);
}

static const struct crash big_overflow = { "deep", deep, NULL };
static const struct crash bad_access = { "bad", bad_pointer, NULL };

TEST(stack_overflow_big_frames_dies_with_message)
{
    char out[4096];
    run_crash(&big_overflow, out, sizeof out);
    ASSERT_CONTAINS(out, "\"deep\" overflowed its stack of ");
    ASSERT_CONTAINS(out, "guard page hit at 0x");
}

TEST(stack_bad_pointer_names_the_fiber)
{
    char out[4096];
    run_crash(&bad_access, out, sizeof out);
    ASSERT_CONTAINS(out, "\"bad\" crashed: ");
    ASSERT_CONTAINS(out, " at 0x10");
    ASSERT(!strstr(out, "overflowed"));
}
