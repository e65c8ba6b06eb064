/*
 * The context switch on Boost.Context's assembly fcontext.
 *
 * Used with `make CTX=fcontext`, and automatically on a CPU for which weft
 * has no assembly of its own: Boost ships jump_fcontext/make_fcontext for
 * every CPU and ABI Debian builds for. Only the two assembly entry points
 * of libboost_context are used (no C++), declared here by hand with the
 * signatures of boost/context/detail/fcontext.hpp.
 *
 * TWO MODELS OF A SWITCH
 *
 * Ours (arch.h) names both ends: weft__ctx_switch(from, to, arg) saves the
 * running context into *from, resumes *to, and returns the arg of whoever
 * later resumes us. The caller owns the slot a suspended context lives in.
 *
 * Boost's is a "transfer": jump_fcontext(to, data) resumes `to` and hands
 * the *resumed* side a transfer_t { fctx, data }, where fctx is the context
 * that just suspended itself (the jumper). The jumper does not store its
 * own handle anywhere; whoever it jumped to receives it, and must keep it
 * if it ever wants to jump back.
 *
 * The mapping: every switch passes a small record (struct hop) through
 * `data`, saying where the jumper wants its handle stored (from) and what
 * to deliver (arg). The side that wakes up does the storing on the
 * jumper's behalf, before anything else:
 *
 *     A: weft__ctx_switch(&a, &b, x)       B (suspended in weft__ctx_switch)
 *        hop = { &a, x }
 *        jump_fcontext(b.sp, &hop) ------> returns t = { A's handle, &hop }
 *                                          t.data->from->sp = t.fctx  (a.sp)
 *                                          returns x
 *
 * The hop lives in A's frame, which stays intact while A is suspended, so
 * B reads it safely; B reads it at once, before anything could resume A.
 * So by the time weft__ctx_switch returns in B, a.sp holds A's context,
 * exactly as with the assembly switch, where A stores it itself just before
 * leaving. The scheduler's on_cpu handshake (sched.h) relies on nothing
 * more: the context is saved before the resumed side runs any code of its
 * own.
 *
 * A FRESH CONTEXT needs fn as well as arg, but make_fcontext's frame has no
 * room for our data and the entry function only receives the transfer.
 * So weft__ctx_make keeps a boot record { fctx, fn } at the top of the new
 * stack and stores its address with the low bit set as ctx->sp (fcontext
 * handles are stack pointers, 16-byte aligned, so bit 0 is free). The
 * switch recognises the tag, jumps to the real handle and adds fn to the
 * hop; `entry` finishes the jumper's save and calls fn(arg). That costs one
 * well-predicted branch per switch.
 *
 * FLOATING-POINT CONTROL. On x86-64 jump_fcontext saves MXCSR and the x87
 * control word like our assembly; on AArch64 it does not save FPCR, so the
 * C wrapper does (see the AArch64 assembly for why the rounding mode
 * belongs to a context). make_fcontext copies the maker's FP control into
 * the new context where ours starts from the ABI's defaults; entry resets
 * it, so a fresh context starts the same on both backends.
 */
#include "arch.h"

#include <stdint.h>
#include <stdlib.h>

typedef void *fcontext_t;
typedef struct {
    fcontext_t fctx;
    void *data;
} transfer_t;
transfer_t jump_fcontext(fcontext_t to, void *data);
fcontext_t make_fcontext(void *sp_top, size_t size, void (*fn)(transfer_t));

const char weft__ctx_impl[] = "boost fcontext";

/* What a jumper sends along through jump_fcontext's data. */
struct hop {
    weft__ctx *from;           /* store my handle here */
    void *arg;                 /* the value weft__ctx_switch returns over there */
    void (*fn)(void *);        /* set only when jumping into a fresh context */
};

/* Top of a fresh context's stack, until its first switch. */
struct boot {
    fcontext_t fctx;
    void (*fn)(void *);
};

#if defined(__aarch64__)
static inline uint64_t fpcr_get(void)
{
    uint64_t v;
    __asm__ volatile("mrs %0, fpcr" : "=r"(v));
    return v;
}
static inline void fpcr_set(uint64_t v)
{
    __asm__ volatile("msr fpcr, %0" ::"r"(v));
}
#endif

/* Reset the FP control state to the ABI's defaults (see the assembly
 * switches' weft__ctx_make). */
static inline void fp_defaults(void)
{
#if defined(__x86_64__)
    uint32_t mxcsr = 0x1f80;
    uint16_t fpucw = 0x037f;
    __asm__ volatile("ldmxcsr %0\n\tfldcw %1" ::"m"(mxcsr), "m"(fpucw));
#elif defined(__aarch64__)
    if (fpcr_get() != 0)
        fpcr_set(0);
#endif
}

static void entry(transfer_t t)
{
    struct hop *in = t.data;
    void (*fn)(void *) = in->fn;
    void *arg = in->arg;
    in->from->sp = t.fctx;     /* finish the jumper's save (see the top) */
    fp_defaults();
    fn(arg);
    abort();                   /* fn must switch away for good, never return */
}

void weft__ctx_make(weft__ctx *ctx, void *lo, size_t size, void (*fn)(void *))
{
    uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)15;
    struct boot *b = (struct boot *)(top - 16);
    _Static_assert(sizeof(struct boot) <= 16, "boot record fits its slot");
    b->fn = fn;
    b->fctx = make_fcontext(b, (size_t)((uintptr_t)b - (uintptr_t)lo), entry);
    ctx->sp = (char *)b + 1;   /* tagged: not a handle yet */
}

void *weft__ctx_switch(weft__ctx *from, weft__ctx *to, void *arg)
{
    struct hop h = { from, arg, NULL };
    fcontext_t target = to->sp;
    if (__builtin_expect((uintptr_t)target & 1, 0)) {
        struct boot *b = (struct boot *)((uintptr_t)target - 1);
        h.fn = b->fn;
        target = b->fctx;
    }
#if defined(__aarch64__)
    uint64_t fpcr = fpcr_get();
#endif
    transfer_t t = jump_fcontext(target, &h);
    /* Resumed: t.fctx is the context that jumped here, t.data its hop. */
    struct hop *in = t.data;
    in->from->sp = t.fctx;
#if defined(__aarch64__)
    if (fpcr_get() != fpcr)
        fpcr_set(fpcr);
#endif
    return in->arg;
}

/* Boost's jump decides how it returns, the same way for every caller: the
 * hand-off (arch.h) is this same function. */
void *weft__ctx_handoff(weft__ctx *from, weft__ctx *to, void *arg)
    __attribute__((alias("weft__ctx_switch")));
