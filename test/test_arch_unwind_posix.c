/*
 * The root frame ends a DWARF unwind (libgcc's, behind backtrace()): POSIX
 * only. On Windows the unwind tables are .pdata/.xdata and the walk stops
 * at the zero return address the trampoline leaves (test_arch_win32.c).
 */
#define _GNU_SOURCE
#include "test_arch.h"

#include <execinfo.h>

/* Weak: the fcontext backend has no trampoline of ours. */
extern void weft__ctx_trampoline(void) __attribute__((weak));

static struct rctx bc;
static void *frames[64];
static int nframes;

static __attribute__((noinline)) void bt_leaf(void)
{
    nframes = backtrace(frames, 64);
    __asm__ volatile("" ::: "memory");   /* not a tail call */
}

static void bt_fn(void *arg)
{
    rentry(&bc);
    bt_leaf();
    rexit(&bc, &main_ctx, NULL);
}

/* A DWARF unwinder (libgcc's, behind backtrace()) walking a fiber's stack
 * must stop at the root frame: the trampoline's return-address column is
 * undefined. Without that it would read the zeroed slot above the frame
 * (or worse, stale stack contents) as a caller. */
static __attribute__((noinline)) void bogus_caller(void)
{
    __asm__ volatile("nop\n\tnop\n\tnop\n\tnop");
}

TEST(arch_unwind_stops_at_root_frame)
{
    rmake(&bc, bt_fn);
    uintptr_t top = ((uintptr_t)bc.lo + bc.size) & ~(uintptr_t)15;
    void *bogus = (char *)bogus_caller + 4;
    if (weft__ctx_trampoline) {
        /* Plant a plausible return address in the zeroed slot above the
         * first frame, where an unwinder that ignored the CFI would look:
         * on x86-64 only .cfi_undefined keeps it out of the backtrace. (On
         * AArch64 the return address is x30, not a stack slot, and libgcc
         * stops at the trampoline even without the directive, which is
         * there for gdb: this test cannot tell its absence there.) */
        ((void **)(top - 16))[0] = bogus;
        ((void **)(top - 16))[1] = bogus;
    }
    rswitch(&main_ctx, &bc, NULL);
    rfree(&bc);
    ASSERT_GT(nframes, 1);
    ASSERT_LT(nframes, 16);
    if (!weft__ctx_trampoline) {
        /* Boost's entry trampoline has no unwind info: the walk stops
         * there, which is all we can ask of it. */
        printf("fcontext: %d frames\n", nframes);
        return;
    }
    for (int i = 0; i < nframes; i++)
        if (frames[i] == bogus)
            test_fail(__FILE__, __LINE__, "frame %d of %d is the planted caller", i, nframes);
    /* the last frame is the trampoline's call into fn */
    uintptr_t last = (uintptr_t)frames[nframes - 1];
    uintptr_t tramp = (uintptr_t)weft__ctx_trampoline;
    if (last < tramp || last > tramp + 32)
        test_fail(__FILE__, __LINE__, "last of %d frames at %#lx, trampoline at %#lx",
                  nframes, (unsigned long)last, (unsigned long)tramp);
}
