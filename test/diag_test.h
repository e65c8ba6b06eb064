/* What the diagnostics tests share (test_diag.c defines it): fibers parked
 * at known places, and waiting for a fiber to be parked there. */
#ifndef WEFT_DIAG_TEST_H
#define WEFT_DIAG_TEST_H

#include "test.h"

/* Keep every frame: no inlining, no .isra/.constprop clones renaming them. */
#ifdef __clang__
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE __attribute__((noinline, noclone))
#endif

extern volatile int diag_sink;   /* defeats tail calls and dead-code removal */

/* deep_fiber parks in weft_sleep (60 s) three calls deep:
 * deep_fiber -> deep_level1 -> deep_level2 -> deep_level3 -> weft_sleep. */
void *deep_fiber(void *arg);
/* Parks in weft_sleep (60 s) directly. */
void *sleeper_fiber(void *arg);
/* weft_backtrace of f once it is parked (retrying while it still runs);
 * the frame count, or -1 after a second. Where suspended fibers cannot be
 * unwound (a switch whose frame src/arch/unwind_posix.c does not know:
 * CTX=fcontext, AArch64 until its frame is added) it gives f a moment to
 * park and returns -ENOTSUP; tests then check what does not need frames. */
int backtrace_parked(weft_fiber *f, void **pcs, int max);

#endif
