/*
 * The context switch on its own contract (src/arch/arch.h), no scheduler:
 * pointers passed both ways, callee-saved registers and floating-point
 * control state preserved per context, stack alignment good enough for
 * printf of doubles. Run on every backend (asm, fcontext) and CPU.
 */
#define _GNU_SOURCE
#include "test.h"

#include "arch/arch.h"
#include "sched/san.h"

#include <stdint.h>

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

/* ------------------------------------------------ a context, announced */

/* The raw tests switch by hand, so they tell the sanitizers themselves,
 * as the scheduler does (see src/sched/san.h). */
struct rctx {
    weft__ctx c;
    weft__stack *st;
    const void *lo;
    size_t size;
    void *fake;
    void *tsan;
};

static struct rctx main_ctx;
static struct rctx *prev;   /* the context that switched last */

static void announce(struct rctx *from, struct rctx *to, int last)
{
    prev = from;
    san_asan_start(last ? NULL : &from->fake, to->lo, to->size);
    san_tsan_switch(to->tsan);
}

static void arrived(struct rctx *self)
{
    san_asan_finish(self->fake, &prev->lo, &prev->size);
}

static void *rswitch(struct rctx *from, struct rctx *to, void *arg)
{
    announce(from, to, 0);
    void *r = weft__ctx_switch(&from->c, &to->c, arg);
    arrived(from);
    return r;
}

/* First thing a fresh context does. */
static void rentry(struct rctx *self)
{
    (void)self;
    san_asan_finish(NULL, &prev->lo, &prev->size);
}

/* Last switch out of a context that will never run again. */
static _Noreturn void rexit(struct rctx *from, struct rctx *to, void *arg)
{
    announce(from, to, 1);
    weft__ctx_switch(&from->c, &to->c, arg);
    abort();
}

static void rmake(struct rctx *r, void (*fn)(void *))
{
    memset(r, 0, sizeof *r);
    ASSERT_EQ(weft__stack_alloc(64 << 10, &r->st), 0);
    r->lo = r->st->lo;
    r->size = (size_t)(r->st->hi - r->st->lo);
    weft__ctx_make(&r->c, r->st->lo, r->size, fn);
    r->tsan = san_tsan_create();
    if (!main_ctx.tsan)
        main_ctx.tsan = san_tsan_current();
}

static void rfree(struct rctx *r)
{
    san_tsan_destroy(r->tsan);
    weft__stack_free(r->st);
}

/* --------------------------------------------------------- ping-pong */

static struct rctx pp;

struct ball { int hits; struct ball *self; };

static void pingpong_fn(void *arg)
{
    rentry(&pp);
    struct ball *b = arg;
    while (b) {
        ASSERT_PTR_EQ(b->self, b);
        b->hits++;
        b = rswitch(&pp, &main_ctx, b);   /* hand the same pointer back */
    }
    rexit(&pp, &main_ctx, (void *)0x5eed);
}

TEST(arch_pingpong_pointers)
{
    ASSERT(weft__ctx_impl[0] != 0);
    printf("switch: %s\n", weft__ctx_impl);
    rmake(&pp, pingpong_fn);
    struct ball b = { 0, &b };
    for (int i = 0; i < 1000; i++) {
        struct ball *back = rswitch(&main_ctx, &pp, &b);
        ASSERT_PTR_EQ(back, &b);
        ASSERT_EQ(b.hits, i + 1);
    }
    ASSERT_PTR_EQ(rswitch(&main_ctx, &pp, NULL), (void *)0x5eed);
    rfree(&pp);
}

/* ---------------------------------------------- callee-saved registers */

/* regs_switch(from, to, seed) loads seed+1, seed+2, ... into every
 * callee-saved register, switches, and on return reports as a bit mask
 * which registers no longer hold their value. It is written in assembly
 * because C cannot name registers across a call. Both contexts run it
 * with different seeds, so a register that leaks from one context into
 * the other shows up. */
unsigned regs_switch(weft__ctx *from, weft__ctx *to, uint64_t seed);

#if defined(__x86_64__)
/* rbx, rbp, r12-r15: bits 0-5. */
__asm__(
    "    .text\n"
    "    .globl regs_switch\n"
    "    .type regs_switch, @function\n"
    "regs_switch:\n"
    "    pushq %rbp\n pushq %rbx\n pushq %r12\n pushq %r13\n pushq %r14\n pushq %r15\n"
    "    subq $8, %rsp\n"             /* 16-byte aligned at the call */
    "    movq %rdx, (%rsp)\n"
    "    leaq 1(%rdx), %rbx\n leaq 2(%rdx), %rbp\n leaq 3(%rdx), %r12\n"
    "    leaq 4(%rdx), %r13\n leaq 5(%rdx), %r14\n leaq 6(%rdx), %r15\n"
    "    call weft__ctx_switch\n"
    "    movq (%rsp), %rdx\n"
    "    xorl %eax, %eax\n"
    "    leaq 1(%rdx), %rcx\n cmpq %rcx, %rbx\n je 1f\n orl $1, %eax\n1:\n"
    "    leaq 2(%rdx), %rcx\n cmpq %rcx, %rbp\n je 1f\n orl $2, %eax\n1:\n"
    "    leaq 3(%rdx), %rcx\n cmpq %rcx, %r12\n je 1f\n orl $4, %eax\n1:\n"
    "    leaq 4(%rdx), %rcx\n cmpq %rcx, %r13\n je 1f\n orl $8, %eax\n1:\n"
    "    leaq 5(%rdx), %rcx\n cmpq %rcx, %r14\n je 1f\n orl $16, %eax\n1:\n"
    "    leaq 6(%rdx), %rcx\n cmpq %rcx, %r15\n je 1f\n orl $32, %eax\n1:\n"
    "    addq $8, %rsp\n"
    "    popq %r15\n popq %r14\n popq %r13\n popq %r12\n popq %rbx\n popq %rbp\n"
    "    ret\n"
    "    .size regs_switch, .-regs_switch\n");
#define REGS_NAMES "rbx rbp r12 r13 r14 r15"
#elif defined(__aarch64__)
/* x19-x29: bits 0-10; d8-d15: bits 11-18. */
#define CHK(reg, off, bit) \
    "    add x9, x2, #" #off "\n cmp " #reg ", x9\n cset w10, ne\n orr w0, w0, w10, lsl #" #bit "\n"
#define CHKD(reg, off, bit) \
    "    add x9, x2, #" #off "\n fmov x11, " #reg "\n cmp x11, x9\n cset w10, ne\n orr w0, w0, w10, lsl #" #bit "\n"
__asm__(
    "    .text\n"
    "    .globl regs_switch\n"
    "    .type regs_switch, %function\n"
    "regs_switch:\n"
    "    sub sp, sp, #0xb0\n"
    "    stp x19, x20, [sp, #0x00]\n stp x21, x22, [sp, #0x10]\n stp x23, x24, [sp, #0x20]\n"
    "    stp x25, x26, [sp, #0x30]\n stp x27, x28, [sp, #0x40]\n stp x29, x30, [sp, #0x50]\n"
    "    stp d8, d9, [sp, #0x60]\n stp d10, d11, [sp, #0x70]\n stp d12, d13, [sp, #0x80]\n"
    "    stp d14, d15, [sp, #0x90]\n str x2, [sp, #0xa0]\n"
    "    add x19, x2, #1\n add x20, x2, #2\n add x21, x2, #3\n add x22, x2, #4\n"
    "    add x23, x2, #5\n add x24, x2, #6\n add x25, x2, #7\n add x26, x2, #8\n"
    "    add x27, x2, #9\n add x28, x2, #10\n add x29, x2, #11\n"
    "    add x9, x2, #12\n fmov d8, x9\n add x9, x2, #13\n fmov d9, x9\n"
    "    add x9, x2, #14\n fmov d10, x9\n add x9, x2, #15\n fmov d11, x9\n"
    "    add x9, x2, #16\n fmov d12, x9\n add x9, x2, #17\n fmov d13, x9\n"
    "    add x9, x2, #18\n fmov d14, x9\n add x9, x2, #19\n fmov d15, x9\n"
    "    bl weft__ctx_switch\n"
    "    ldr x2, [sp, #0xa0]\n mov w0, #0\n"
    CHK(x19, 1, 0) CHK(x20, 2, 1) CHK(x21, 3, 2) CHK(x22, 4, 3) CHK(x23, 5, 4)
    CHK(x24, 6, 5) CHK(x25, 7, 6) CHK(x26, 8, 7) CHK(x27, 9, 8) CHK(x28, 10, 9)
    CHK(x29, 11, 10)
    CHKD(d8, 12, 11) CHKD(d9, 13, 12) CHKD(d10, 14, 13) CHKD(d11, 15, 14)
    CHKD(d12, 16, 15) CHKD(d13, 17, 16) CHKD(d14, 18, 17) CHKD(d15, 19, 18)
    "    ldp x19, x20, [sp, #0x00]\n ldp x21, x22, [sp, #0x10]\n ldp x23, x24, [sp, #0x20]\n"
    "    ldp x25, x26, [sp, #0x30]\n ldp x27, x28, [sp, #0x40]\n ldp x29, x30, [sp, #0x50]\n"
    "    ldp d8, d9, [sp, #0x60]\n ldp d10, d11, [sp, #0x70]\n ldp d12, d13, [sp, #0x80]\n"
    "    ldp d14, d15, [sp, #0x90]\n"
    "    add sp, sp, #0xb0\n"
    "    ret\n"
    "    .size regs_switch, .-regs_switch\n");
#define REGS_NAMES "x19..x29 (bits 0-10), d8..d15 (bits 11-18)"
#else
#define REGS_NONE 1
#endif

#ifndef REGS_NONE
static struct rctx rc;
static unsigned fiber_bad;

/* regs_switch with the announcements around it (they are C calls, so
 * they run outside the window in which the registers are checked). */
static unsigned regs_roundtrip(struct rctx *from, struct rctx *to, uint64_t seed)
{
    announce(from, to, 0);
    unsigned bad = regs_switch(&from->c, &to->c, seed);
    arrived(from);
    return bad;
}

static void regs_fn(void *arg)
{
    rentry(&rc);
    for (int i = 0; i < 100; i++)
        fiber_bad |= regs_roundtrip(&rc, &main_ctx, 0x20000 + (uint64_t)i * 64);
    rexit(&rc, &main_ctx, NULL);
}
#endif

TEST(arch_callee_saved_registers)
{
#ifdef REGS_NONE
    printf("no register check for this CPU\n");
#else
    rmake(&rc, regs_fn);
    unsigned bad = 0;
    for (int i = 0; i < 100; i++)
        bad |= regs_roundtrip(&main_ctx, &rc, 0x10000 + (uint64_t)i * 64);
    rswitch(&main_ctx, &rc, NULL);   /* let it finish */
    if (bad || fiber_bad)
        test_fail(__FILE__, __LINE__, "clobbered (" REGS_NAMES "): main %#x, fiber %#x",
                  bad, fiber_bad);
    rfree(&rc);
#endif
}

/* --------------------------------------------- floating-point control */

/* The control state the FP rounding mode lives in, per CPU, read and
 * written directly (fesetround touches both x87 and SSE on x86-64, and
 * we want to see each). */
struct fpctl { uint64_t a, b; };

static struct fpctl fp_get(void)
{
    struct fpctl c = { 0, 0 };
#if defined(__x86_64__)
    uint32_t mxcsr;
    uint16_t cw;
    __asm__ volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(mxcsr), "=m"(cw));
    c.a = mxcsr;
    c.b = cw;
#elif defined(__aarch64__)
    __asm__ volatile("mrs %0, fpcr" : "=r"(c.a));
#endif
    return c;
}

static void fp_set(struct fpctl c)
{
#if defined(__x86_64__)
    uint32_t mxcsr = (uint32_t)c.a;
    uint16_t cw = (uint16_t)c.b;
    __asm__ volatile("ldmxcsr %0\n\tfldcw %1" ::"m"(mxcsr), "m"(cw));
#elif defined(__aarch64__)
    __asm__ volatile("msr fpcr, %0" ::"r"(c.a));
#endif
}

#if defined(__x86_64__)
/* MXCSR: exceptions masked, RC in bits 13-14; x87 CW: RC in bits 10-11,
 * precision in bits 8-9. */
static const struct fpctl fp_default = { 0x1f80, 0x037f };
static const struct fpctl fp_main = { 0x1f80 | 0x4000, 0x027f | 0x0800 };   /* up; x87 double, up */
static const struct fpctl fp_fiber = { 0x1f80 | 0x6000, 0x037f | 0x0c00 };  /* toward zero */
#elif defined(__aarch64__)
/* FPCR.RMode is bits 22-23, FZ bit 24. */
static const struct fpctl fp_default = { 0, 0 };
static const struct fpctl fp_main = { 1u << 22, 0 };                   /* toward +inf */
static const struct fpctl fp_fiber = { (3u << 22) | (1u << 24), 0 };   /* toward zero, FZ */
#else
static const struct fpctl fp_default, fp_main, fp_fiber;
#endif

static struct rctx fc;
static struct fpctl fiber_saw_at_entry;
static int fiber_fp_bad;
static double fiber_third;

static int fp_eq(struct fpctl x, struct fpctl y) { return x.a == y.a && x.b == y.b; }

static double third(void)
{
    volatile double one = 1.0, three = 3.0;
    return one / three;
}

static void fp_fn(void *arg)
{
    rentry(&fc);
    fiber_saw_at_entry = fp_get();
    fp_set(fp_fiber);
    for (int i = 0; i < 50; i++) {
        rswitch(&fc, &main_ctx, NULL);
        if (!fp_eq(fp_get(), fp_fiber))
            fiber_fp_bad++;
    }
    fiber_third = third();
    rexit(&fc, &main_ctx, NULL);
}

TEST(arch_fp_control_per_context)
{
#if !defined(__x86_64__) && !defined(__aarch64__)
    printf("no FP control check for this CPU\n");
    return;
#endif
    if (RUNNING_ON_VALGRIND) {
        /* valgrind's CPU emulates round-to-nearest only and drops the x87
         * precision bits: it cannot keep what this test checks. */
        printf("skipped under valgrind\n");
        return;
    }
    struct fpctl saved = fp_get();
    fp_set(fp_main);
    rmake(&fc, fp_fn);
    for (int i = 0; i < 50; i++) {
        rswitch(&main_ctx, &fc, NULL);
        struct fpctl now = fp_get();
        if (!fp_eq(now, fp_main))
            test_fail(__FILE__, __LINE__, "main's FP control lost at switch %d: %#llx/%#llx",
                      i, (unsigned long long)now.a, (unsigned long long)now.b);
    }
    double main_third = third();
    rswitch(&main_ctx, &fc, NULL);
    fp_set(saved);
    rfree(&fc);
    /* A fresh context starts from the ABI's defaults, not the maker's. */
    ASSERT_EQ(fiber_saw_at_entry.a, fp_default.a);
    ASSERT_EQ(fiber_saw_at_entry.b, fp_default.b);
    ASSERT_EQ(fiber_fp_bad, 0);
    /* And the modes really act: 1/3 rounded up is above 1/3 rounded down. */
    ASSERT(main_third > fiber_third);
}

/* ------------------------------------ doubles on a fiber stack (alignment) */

static int format_doubles(char *out, size_t n)
{
    /* printf of doubles spills vector registers with aligned stores: a
     * misaligned stack faults or prints garbage here. */
    int len = snprintf(out, n, "%f %.3e %g %Lf", 3.14159265358979, 6.02214076e23, 0.1, 1.5L);
    double a = 0, b = 0;
    long double c = 0;
    if (sscanf("2.5 -1e-3 0.125", "%lf %lf %Lf", &a, &b, &c) != 3 || a != 2.5 || b != -1e-3 ||
        c != 0.125L)
        return -1;
    return len;
}

#define DOUBLES_TEXT "3.141593 6.022e+23 0.1 1.500000"

static struct rctx dc;
static char dbuf[128];
static int dlen;
static double xmm_acc;

static void doubles_fn(void *arg)
{
    rentry(&dc);
    dlen = format_doubles(dbuf, sizeof dbuf);
    /* vector-register state sanity: a running sum across switches */
    double acc = 0;
    for (int i = 1; i <= 100; i++) {
        acc += i * 0.5;
        rswitch(&dc, &main_ctx, NULL);
    }
    xmm_acc = acc;
    rexit(&dc, &main_ctx, NULL);
}

TEST(arch_printf_doubles_on_fiber_stack)
{
    rmake(&dc, doubles_fn);
    double acc = 0;
    for (int i = 1; i <= 100; i++) {
        acc += i * 0.25;
        rswitch(&main_ctx, &dc, NULL);
    }
    rswitch(&main_ctx, &dc, NULL);
    rfree(&dc);
    ASSERT_GT(dlen, 0);
    ASSERT_STR_EQ(dbuf, DOUBLES_TEXT);
    ASSERT(acc == 2525 * 0.5);
    ASSERT(xmm_acc == 2525.0);
}

/* The same through the scheduler, on a fiber of every default size. */
static void *doubles_main(void *arg)
{
    char *buf = arg;
    if (format_doubles(buf, 128) < 0)
        return NULL;
    weft_yield();
    return buf;
}

TEST(arch_printf_doubles_in_weft_fiber)
{
    char buf[128] = "";
    ASSERT_PTR_EQ(test_run(doubles_main, buf), buf);
    ASSERT_STR_EQ(buf, DOUBLES_TEXT);
}

/* ---------------------------------------------- the root frame ends unwinding */

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
