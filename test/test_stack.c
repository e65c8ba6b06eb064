/*
 * Guarded stacks (src/arch/stack.c) and what the scheduler makes of them:
 * deep recursion fits, one frame too many dies loudly (every guard mode),
 * bad sizes are -EINVAL, stacks are reused, guards really fault, and a
 * million fibers live at once on a default vm.max_map_count.
 */
#define _GNU_SOURCE
#include "test.h"

#include "arch/arch.h"
#include "sched/san.h"
#include "sched/sched.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>

#define SMALL ((size_t)64 << 10)

/* ------------------------------------------------------------ recursion */

/* One frame of about 600 bytes, every byte of its buffer written, so that
 * a frame crossing the bottom of the stack writes the guard (or canary)
 * region whatever the compiler does with the rest of the frame. Recurses
 * while the next frame would still end above `floor`. */
static __attribute__((noinline)) int dive(const char *floor, int depth)
{
    volatile char buf[512];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (char)(depth | 1);
    int r = buf[0];
    if ((uintptr_t)buf - sizeof buf > (uintptr_t)floor && depth < 1000000)
        r += dive(floor, depth + 1);
    return r + buf[sizeof buf - 1];
}

static weft__stack *my_stack(void)
{
    return weft_self()->stack;
}

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

/* One frame past the bottom: the fiber prints what the crash message must
 * say, then recurses until it faults. */
static void *overflow_fn(void *arg)
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

static void *overflow_main(void *arg)
{
    weft_attr a = { .stack_size = SMALL, .name = "diver" };
    weft_fiber *f;
    ASSERT_EQ(weft_spawn(&f, &a, overflow_fn, arg), 0);
    weft_join(f, NULL);
    return NULL;
}

static void overflow_child(void *arg)
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
static int died_of_segv(int st, const char *out)
{
    return st == -SIGSEGV || (st > 0 && strstr(out, "Sanitizer") &&
                              (strstr(out, "SEGV") || strstr(out, "stack-overflow")));
}

/* The message the fiber announced, as the crash handler must print it. */
static void expect_named(const char *out)
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

static void check_overflow(const char *mode)
{
    char out[8192];
    int st = test_child(overflow_child, (void *)mode, out, sizeof out);
    if (!died_of_segv(st, out))
        test_fail(__FILE__, __LINE__, "status %d, output:\n%s", st, out);
    expect_named(out);
    ASSERT_CONTAINS(out, "guard page hit at");
}

TEST(stack_overflow_dies_with_message)
{
    check_overflow(NULL);
}

TEST(stack_overflow_mprotect_mode)
{
    char out[8192];
    check_overflow("mprotect");
    test_child(overflow_child, "mprotect", out, sizeof out);
    ASSERT_CONTAINS(out, "weft: stack guards: mprotect (forced by WEFT_STACK_GUARD)");
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
    /* the fiber record lives at the top of its stack: same record, same stack */
    ASSERT_PTR_EQ(r2, r1);
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

/* ------------------------------------------------------ guards do fault */

static void touch(void *arg)
{
    *(volatile char *)arg = 1;
}

static void expect_fault(void *addr, int faults)
{
    char out[4096];
    int st = test_child(touch, addr, out, sizeof out);
    if (!faults) {
        ASSERT_EQ(st, 0);
        return;
    }
    if (!died_of_segv(st, out))
        test_fail(__FILE__, __LINE__, "touching %p: status %d, output:\n%s", addr, st, out);
}

TEST(stack_guards_fault)
{
    weft__stack *s;
    ASSERT_EQ(weft__stack_alloc(SMALL, &s), 0);
    printf("guard mode: %s\n", weft__stack_guard_name());
    ASSERT_NE(weft__stack_guard_mode(), WEFT_GUARD_CANARY);
    ASSERT(s->guard != NULL);
    ASSERT(weft__stack_in_guard(s, s->lo - 1));
    ASSERT(!weft__stack_in_guard(s, s->lo));
    expect_fault(s->lo, 0);                   /* lowest usable byte */
    expect_fault(s->lo - 1, 1);               /* the byte below */
    expect_fault(s->guard, 1);                /* bottom of the guard */
    /* still guarded after going through the cache */
    char *lo = s->lo;
    weft__stack_free(s);
    ASSERT_EQ(weft__stack_alloc(SMALL, &s), 0);
    ASSERT_PTR_EQ(s->lo, lo);
    expect_fault(s->lo - 1, 1);
    weft__stack_free(s);
}

/* ------------------------------------------------------ a million fibers */

#define MILLION 1000000

static atomic_long parked, finished;

static void *sleeper(void *arg)
{
    atomic_fetch_add(&parked, 1);
    int r = weft_sleep((uint64_t)3600 * 1000000000u);   /* until cancelled */
    if (r != -ECANCELED)
        test_fail(__FILE__, __LINE__, "sleep returned %d", r);
    atomic_fetch_add(&finished, 1);
    return NULL;
}

static long count_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    long n = 0;
    int c;
    if (!f)
        return -1;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

static void *million_main(void *arg)
{
    weft_fiber **fs = malloc(MILLION * sizeof *fs);
    ASSERT(fs != NULL);
    /* The default 256 KiB stacks: 272 GiB of address space in ~4300
     * slabs, but each live fiber makes only its top page resident (its
     * records and frames), 4 GiB in all. Measured: 14.8 s here, against
     * 12.9 s with 16 KiB stacks, so the default it is. */
    weft_attr a = { .stack_size = 0 };
    for (long i = 0; i < MILLION; i++) {
        int r = weft_spawn(&fs[i], &a, sleeper, NULL);
        if (r != 0)
            test_fail(__FILE__, __LINE__, "spawn %ld: %d", i, r);
    }
    while (atomic_load(&parked) < MILLION)
        weft_yield();
    /* all of them alive at once: started, none finished */
    ASSERT_EQ(atomic_load(&parked), MILLION);
    ASSERT_EQ(atomic_load(&finished), 0);
    long maps = count_maps();
    printf("1e6 fibers parked; guard mode %s; %ld mappings (vm.max_map_count default 65530)\n",
           weft__stack_guard_name(), maps);
    ASSERT_EQ(weft__stack_guard_mode(), WEFT_GUARD_MADVISE);
    ASSERT_LT(maps, 65530 / 4);
    for (long i = 0; i < MILLION; i++)
        ASSERT_EQ(weft_cancel(fs[i]), 0);
    for (long i = 0; i < MILLION; i++)
        ASSERT_EQ(weft_join(fs[i], NULL), 0);
    ASSERT_EQ(atomic_load(&finished), MILLION);
    free(fs);
    return NULL;
}

TEST_TIMEOUT(stack_million_fibers, 600)
{
    const char *heavy = getenv("WEFT_TEST_HEAVY");
    if (heavy && !strcmp(heavy, "0")) {
        printf("skipped: WEFT_TEST_HEAVY=0 (valgrind and qemu are too slow for it, TSan runs out of memory)\n");
        return;
    }
    test_run(million_main, NULL);
}
