/* Faults in fibers are reported by name, in a child process: a stack
 * overflow (small frames, and frames larger than a page, which the compiler
 * probes page by page), and a plain bad pointer. The child must die of the
 * fault (-SIGSEGV; on Windows the exception code maps to it) after saying
 * which fiber it was. */
#include "test.h"

#include <signal.h>

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

/* Valgrind does not deliver a fault on a guard page to the program's
 * handler (it ends the process itself), so there is no report to check. */
static int skip_under_valgrind(void)
{
    if (!RUNNING_ON_VALGRIND)
        return 0;
    printf("skipped under valgrind: it takes SIGSEGV on guard pages for itself\n");
    return 1;
}

/* The child must die of the fault: SIGSEGV (on Windows, the exception
 * code maps to it). Under a sanitizer, its own fault handler has the last
 * word (weft hands the fault on to the previous handler after its report)
 * and the child exits with the sanitizer's status after saying so. */
static void check_died_of_fault(int st, const char *out)
{
    if (st > 0 && strstr(out, "Sanitizer"))
        return;
    ASSERT_EQ(st, -SIGSEGV);
}

/* A limit the compiler cannot see through, so that the recursion below is
 * not "infinite" to it; no stack holds this many frames. */
static volatile int depth_limit = 1 << 30;

/* Deep recursion the compiler can neither flatten nor turn into a loop. */
__attribute__((noinline)) static int recurse(volatile char *up, int n)
{
    volatile char frame[200];
    frame[0] = (char)n;
    frame[199] = up ? up[0] : 0;
    __asm__ volatile("" ::: "memory");
    if (n > depth_limit)
        return 0;
    return recurse(frame, n + 1) + frame[199];
}

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
    return (void *)(intptr_t)(arg ? recurse_big(NULL, 0) : recurse(NULL, 0));
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

/* Run c in a child; 0 if skipped, else 1 with its output in out. */
static int run_crash(const struct crash *c, char *out, size_t outsz)
{
    if (skip_under_valgrind())
        return 0;
    int st = test_child(crash_child, (void *)c, out, outsz);
    check_died_of_fault(st, out);
    return 1;
}

static const char big_frames[] = "big";
static const struct crash small_overflow = { "deep", deep, NULL };
static const struct crash big_overflow = { "deep", deep, (void *)big_frames };
static const struct crash bad_access = { "bad", bad_pointer, NULL };

static void check_overflow(const struct crash *c)
{
    char out[4096];
    if (!run_crash(c, out, sizeof out))
        return;
    ASSERT_CONTAINS(out, "\"deep\" overflowed its stack of ");
    ASSERT_CONTAINS(out, "guard page hit at 0x");
}

TEST(crash_stack_overflow_names_the_fiber)
{
    check_overflow(&small_overflow);
}

TEST(crash_stack_overflow_big_frames_names_the_fiber)
{
    check_overflow(&big_overflow);
}

TEST(crash_bad_pointer_names_the_fiber)
{
    char out[4096];
    if (!run_crash(&bad_access, out, sizeof out))
        return;
    ASSERT_CONTAINS(out, "\"bad\" crashed: ");
    ASSERT_CONTAINS(out, " at 0x10");
    ASSERT(!strstr(out, "overflowed"));
}
