/* The Windows x64 switch: what the Win64 ABI and the system expect of a
 * stack switch (switch_x86_64_ms_pe_gas.S, stack_win32.c):
 *   - the TIB describes the running fiber's stack, and the thread's own
 *     again once the runtime is gone;
 *   - the callee-saved set Win64 adds to SysV (rsi, rdi, xmm6-xmm15) and
 *     the FP control words survive switches, also across workers;
 *   - the unwind tables walk a fiber's stack down to its root and stop;
 *   - exceptions raised on a fiber are dispatched there: a vectored handler
 *     can resume it, and an unhandled one reaches the process's unhandled
 *     exception filter through the root frame, as on a thread. */
#include "test.h"

#include <fenv.h>
#include <stdint.h>
#include <windows.h>

extern void weft__ctx_trampoline(void);

struct tib { void *except, *base, *limit; };

/* The TIB through gs, as the switch reads it (NtCurrentTeb's inline form
 * trips a GCC 12 false -Warray-bounds). */
static void *gs(uintptr_t off)
{
    void *v;
    __asm__ volatile("movq %%gs:(%1), %0" : "=r"(v) : "r"(off));
    return v;
}

static struct tib read_tib(void) { return (struct tib){ gs(0x00), gs(0x08), gs(0x10) }; }
static void *dealloc_stack(void) { return gs(0x1478); }

static void check_tib_is_mine(void)
{
    volatile char here;
    struct tib t = read_tib();
    ASSERT((char *)&here < (char *)t.base);
    ASSERT((char *)&here >= (char *)t.limit);
    ASSERT((char *)dealloc_stack() < (char *)t.limit);
    ASSERT_PTR_EQ(t.except, (void *)-1);   /* a fiber's own, empty, x86 SEH list */
}

static void *tib_body(void *arg)
{
    for (int i = 0; i < 50; i++) {
        check_tib_is_mine();
        weft_yield();   /* may resume on the other worker */
    }
    return arg;
}

static void *main_tib(void *arg)
{
    weft_fiber *f[4];
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(weft_spawn(&f[i], NULL, tib_body, NULL), 0);
    check_tib_is_mine();
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(weft_join(f[i], NULL), 0);
    return arg;
}

TEST(win32_tib_follows_the_fiber)
{
    struct tib before = read_tib();
    void *dealloc = dealloc_stack();
    weft_config cfg = { .workers = 2 };
    test_run_cfg(&cfg, main_tib, NULL);
    struct tib after = read_tib();
    ASSERT_PTR_EQ(after.base, before.base);
    ASSERT_PTR_EQ(after.limit, before.limit);
    ASSERT_PTR_EQ(after.except, before.except);
    ASSERT_PTR_EQ(dealloc_stack(), dealloc);
}

/* Ten doubles and a handful of integers live across each yield: the
 * compiler keeps them in xmm6-xmm15 and rbx/rsi/rdi/r12-r15, the registers
 * only the switch preserves. Four fibers with different values interleave
 * on two workers, so a register the switch forgot shows up as another
 * fiber's value. */
static void *regs_body(void *arg)
{
    volatile double seed = (double)(intptr_t)arg;
    volatile uint64_t iseed = (uint64_t)(intptr_t)arg;
    double d0 = seed + 0.5, d1 = seed * 2, d2 = seed * 3, d3 = seed * 4, d4 = seed * 5,
           d5 = seed * 6, d6 = seed * 7, d7 = seed * 8, d8 = seed * 9, d9 = seed * 10;
    uint64_t a = iseed * 3, b = iseed * 5, c = iseed * 7, d = iseed * 11, e = iseed * 13,
             g = iseed * 17, h = iseed * 19;
    for (int i = 0; i < 200; i++) {
        weft_yield();
        d0 += 1; d1 += 1; d2 += 1; d3 += 1; d4 += 1; d5 += 1; d6 += 1; d7 += 1; d8 += 1; d9 += 1;
        a += 1; b += 1; c += 1; d += 1; e += 1; g += 1; h += 1;
    }
    double s = seed;
    ASSERT(d0 == s + 0.5 + 200 && d1 == s * 2 + 200 && d2 == s * 3 + 200 && d3 == s * 4 + 200);
    ASSERT(d4 == s * 5 + 200 && d5 == s * 6 + 200 && d6 == s * 7 + 200 && d7 == s * 8 + 200);
    ASSERT(d8 == s * 9 + 200 && d9 == s * 10 + 200);
    uint64_t k = iseed;
    ASSERT(a == k * 3 + 200 && b == k * 5 + 200 && c == k * 7 + 200 && d == k * 11 + 200);
    ASSERT(e == k * 13 + 200 && g == k * 17 + 200 && h == k * 19 + 200);
    return NULL;
}

/* Rounding mode (MXCSR and the x87 control word) is per fiber. */
static void *round_body(void *arg)
{
    int mode = arg ? FE_UPWARD : FE_DOWNWARD;
    ASSERT_EQ(fesetround(mode), 0);
    for (int i = 0; i < 100; i++) {
        weft_yield();
        ASSERT_EQ(fegetround(), mode);
    }
    return NULL;
}

static void *main_regs(void *arg)
{
    weft_fiber *f[6];
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(weft_spawn(&f[i], NULL, regs_body, (void *)(intptr_t)((i + 1) * 1000)), 0);
    ASSERT_EQ(weft_spawn(&f[4], NULL, round_body, NULL), 0);
    ASSERT_EQ(weft_spawn(&f[5], NULL, round_body, (void *)1), 0);
    for (int i = 0; i < 6; i++)
        ASSERT_EQ(weft_join(f[i], NULL), 0);
    ASSERT_EQ(fegetround(), FE_TONEAREST);   /* main's own mode untouched */
    return arg;
}

TEST(win32_callee_saved_and_fp_control_survive_switches)
{
    weft_config cfg = { .workers = 2 };
    test_run_cfg(&cfg, main_regs, NULL);
}

/* RtlCaptureStackBackTrace walks with the unwind tables (.pdata/.xdata):
 * through our frames, into the trampoline, and stops at its zero return
 * address instead of wandering off the top of the stack. */
__attribute__((noinline)) static int capture(void **frames, int max)
{
    return RtlCaptureStackBackTrace(0, (DWORD)max, frames, NULL);
}

static void *walk_body(void *arg)
{
    void *frames[64];
    int n = capture(frames, 64);
    ASSERT_GT(n, 2);
    ASSERT_LT(n, 64);
    char *last = frames[n - 1];
    char *tramp = (char *)(void *)weft__ctx_trampoline;
    if (!last)   /* some walkers report the terminating zero as a frame */
        last = frames[--n - 1];
    ASSERT(last > tramp && last < tramp + 32);
    return arg;
}

static void *main_walk(void *arg)
{
    weft_fiber *f;
    ASSERT_EQ(weft_spawn(&f, NULL, walk_body, NULL), 0);
    ASSERT_EQ(weft_join(f, NULL), 0);
    return arg;
}

TEST(win32_unwind_stops_at_the_fiber_root)
{
    test_run(main_walk, NULL);
}

/* A vectored handler resumes a fiber after a breakpoint trap. */
static LONG CALLBACK skip_breakpoint(EXCEPTION_POINTERS *ep)
{
    if (ep->ExceptionRecord->ExceptionCode != EXCEPTION_BREAKPOINT)
        return EXCEPTION_CONTINUE_SEARCH;
    ep->ContextRecord->Rip += 1;   /* past the int3 */
    return EXCEPTION_CONTINUE_EXECUTION;
}

static void *trap_body(void *arg)
{
    for (int i = 0; i < 10; i++) {
        __asm__ volatile("int3");
        weft_yield();
    }
    check_tib_is_mine();
    return arg;
}

static void *main_trap(void *arg)
{
    weft_fiber *f[2];
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(weft_spawn(&f[i], NULL, trap_body, (void *)7), 0);
    for (int i = 0; i < 2; i++) {
        void *r = NULL;
        ASSERT_EQ(weft_join(f[i], &r), 0);
        ASSERT_PTR_EQ(r, (void *)7);
    }
    return arg;
}

TEST(win32_exceptions_on_a_fiber_are_dispatched_there)
{
    PVOID h = AddVectoredExceptionHandler(1, skip_breakpoint);
    ASSERT(h != NULL);
    weft_config cfg = { .workers = 2 };
    test_run_cfg(&cfg, main_trap, NULL);
    RemoveVectoredExceptionHandler(h);
}

/* An exception nobody handles reaches the unhandled-exception filter from
 * a fiber too (the root frame's handler), which ends the process with the
 * exception's code. */
static LONG WINAPI report_filter(EXCEPTION_POINTERS *ep)
{
    fprintf(stderr, "filter saw 0x%08lx\n", (unsigned long)ep->ExceptionRecord->ExceptionCode);
    fflush(stderr);
    return EXCEPTION_EXECUTE_HANDLER;
}

static void *raise_body(void *arg)
{
    RaiseException(0xE0571234, 0, 0, NULL);
    return arg;
}

static void *main_raise(void *arg)
{
    weft_attr a = { .name = "raiser" };
    weft_fiber *f;
    ASSERT_EQ(weft_spawn(&f, &a, raise_body, NULL), 0);
    weft_join(f, NULL);
    return arg;
}

static void unhandled_child(void *arg)
{
    SetUnhandledExceptionFilter(report_filter);
    test_run(main_raise, arg);
}

TEST(win32_unhandled_exception_reaches_the_filter)
{
    char out[4096];
    int st = test_child(unhandled_child, NULL, out, sizeof out);
    ASSERT_EQ(st, 0x60571234);   /* the code, without the bit that makes it negative */
    ASSERT_CONTAINS(out, "filter saw 0xe0571234");
}
