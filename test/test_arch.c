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


#include "test_arch.h"

/* --------------------------------------------------------- ping-pong */

static struct rctx pp;

struct ball { int hits; struct ball *self; };

/* Both sides switch through this one helper: for the hand-off that is the
 * shape it is made for (the scheduler's weft__switch_out, arch.h). */
static void *(*pp_sw)(weft__ctx *, weft__ctx *, void *);

__attribute__((noinline)) static void *pp_hop(struct rctx *from, struct rctx *to, void *arg)
{
    announce(from, to, 0);
    void *r = pp_sw(&from->c, &to->c, arg);
    arrived(from);
    return r;
}

static void pingpong_fn(void *arg)
{
    rentry(&pp);
    struct ball *b = arg;
    while (b) {
        ASSERT_PTR_EQ(b->self, b);
        b->hits++;
        b = pp_hop(&pp, &main_ctx, b);   /* hand the same pointer back */
    }
    rexit(&pp, &main_ctx, (void *)0x5eed);
}

static void pingpong_check(void *(*sw)(weft__ctx *, weft__ctx *, void *))
{
    pp_sw = sw;
    rmake(&pp, pingpong_fn);
    struct ball b = { 0, &b };
    for (int i = 0; i < 1000; i++) {
        struct ball *back = pp_hop(&main_ctx, &pp, &b);   /* the first one starts it */
        ASSERT_PTR_EQ(back, &b);
        ASSERT_EQ(b.hits, i + 1);
    }
    ASSERT_PTR_EQ(pp_hop(&main_ctx, &pp, NULL), (void *)0x5eed);
    rfree(&pp);
}

TEST(arch_pingpong_pointers)
{
    ASSERT(weft__ctx_impl[0] != 0);
    printf("switch: %s\n", weft__ctx_impl);
    pingpong_check(weft__ctx_switch);
}

TEST(arch_handoff_pointers)
{
    pingpong_check(weft__ctx_handoff);
}

/* ---------------------------------------------- callee-saved registers */

/* regs_switch(from, to, seed) loads seed+1, seed+2, ... into every
 * callee-saved register, switches, and on return reports as a bit mask
 * which registers no longer hold their value. It is written in assembly
 * because C cannot name registers across a call. Both contexts run it
 * with different seeds, so a register that leaks from one context into
 * the other shows up. */
unsigned regs_switch(weft__ctx *from, weft__ctx *to, uint64_t seed);
/* The switch regs_switch calls: weft__ctx_switch or weft__ctx_handoff. */
void *(*regs_sw)(weft__ctx *, weft__ctx *, void *) = weft__ctx_switch;

#if defined(__x86_64__) && defined(_WIN32)
/* Windows x64 (from rcx, to rdx, seed r8): rbx, rbp, rdi, rsi, r12-r15:
 * bits 0-7; xmm6-xmm15 (low halves): bits 8-17. The function keeps the
 * shadow space below the call and saves the xmm registers it clobbers,
 * which its own caller expects preserved. */
#define CHKQ(reg, off, bit) \
    "    leaq " #off "(%rdx), %rcx\n cmpq %rcx, " reg "\n je 1f\n orl $" #bit ", %eax\n1:\n"
#define CHKX(reg, off, bit) \
    "    movq " reg ", %r9\n leaq " #off "(%rdx), %rcx\n cmpq %rcx, %r9\n je 1f\n orl $" #bit ", %eax\n1:\n"
#define SETX(reg, off) "    leaq " #off "(%r8), %rax\n movq %rax, " reg "\n"
__asm__(
    "    .text\n"
    "    .globl regs_switch\n"
    "    .def regs_switch; .scl 2; .type 32; .endef\n"
    "regs_switch:\n"
    "    pushq %rbp\n pushq %rbx\n pushq %rdi\n pushq %rsi\n"
    "    pushq %r12\n pushq %r13\n pushq %r14\n pushq %r15\n"
    "    subq $0xd8, %rsp\n"          /* shadow 0x20, seed at 0x20, xmm saves from 0x30 */
    "    movq %r8, 0x20(%rsp)\n"
    "    movaps %xmm6, 0x30(%rsp)\n movaps %xmm7, 0x40(%rsp)\n movaps %xmm8, 0x50(%rsp)\n"
    "    movaps %xmm9, 0x60(%rsp)\n movaps %xmm10, 0x70(%rsp)\n movaps %xmm11, 0x80(%rsp)\n"
    "    movaps %xmm12, 0x90(%rsp)\n movaps %xmm13, 0xa0(%rsp)\n movaps %xmm14, 0xb0(%rsp)\n"
    "    movaps %xmm15, 0xc0(%rsp)\n"
    "    leaq 1(%r8), %rbx\n leaq 2(%r8), %rbp\n leaq 3(%r8), %rdi\n leaq 4(%r8), %rsi\n"
    "    leaq 5(%r8), %r12\n leaq 6(%r8), %r13\n leaq 7(%r8), %r14\n leaq 8(%r8), %r15\n"
    SETX("%xmm6", 9) SETX("%xmm7", 10) SETX("%xmm8", 11) SETX("%xmm9", 12) SETX("%xmm10", 13)
    SETX("%xmm11", 14) SETX("%xmm12", 15) SETX("%xmm13", 16) SETX("%xmm14", 17) SETX("%xmm15", 18)
    "    call *regs_sw(%rip)\n"
    "    movq 0x20(%rsp), %rdx\n"
    "    xorl %eax, %eax\n"
    CHKQ("%rbx", 1, 1) CHKQ("%rbp", 2, 2) CHKQ("%rdi", 3, 4) CHKQ("%rsi", 4, 8)
    CHKQ("%r12", 5, 16) CHKQ("%r13", 6, 32) CHKQ("%r14", 7, 64) CHKQ("%r15", 8, 128)
    CHKX("%xmm6", 9, 0x100) CHKX("%xmm7", 10, 0x200) CHKX("%xmm8", 11, 0x400)
    CHKX("%xmm9", 12, 0x800) CHKX("%xmm10", 13, 0x1000) CHKX("%xmm11", 14, 0x2000)
    CHKX("%xmm12", 15, 0x4000) CHKX("%xmm13", 16, 0x8000) CHKX("%xmm14", 17, 0x10000)
    CHKX("%xmm15", 18, 0x20000)
    "    movaps 0x30(%rsp), %xmm6\n movaps 0x40(%rsp), %xmm7\n movaps 0x50(%rsp), %xmm8\n"
    "    movaps 0x60(%rsp), %xmm9\n movaps 0x70(%rsp), %xmm10\n movaps 0x80(%rsp), %xmm11\n"
    "    movaps 0x90(%rsp), %xmm12\n movaps 0xa0(%rsp), %xmm13\n movaps 0xb0(%rsp), %xmm14\n"
    "    movaps 0xc0(%rsp), %xmm15\n"
    "    addq $0xd8, %rsp\n"
    "    popq %r15\n popq %r14\n popq %r13\n popq %r12\n"
    "    popq %rsi\n popq %rdi\n popq %rbx\n popq %rbp\n"
    "    ret\n");
#define REGS_NAMES "rbx rbp rdi rsi r12..r15 (bits 0-7), xmm6..xmm15 (bits 8-17)"
#elif defined(__x86_64__)
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
    "    call *regs_sw(%rip)\n"
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
    "    adrp x9, regs_sw\n ldr x9, [x9, :lo12:regs_sw]\n blr x9\n"
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

/* How each side switches on round i: mode 0 both plain, mode 1 both
 * hand-off, mode 2 mixed (each side takes the other switch every other
 * round, so that a context suspended by one is resumed by the other). */
static int regs_mode;

static void *(*regs_pick(int i, int fiber_side))(weft__ctx *, weft__ctx *, void *)
{
    if (regs_mode == 0)
        return weft__ctx_switch;
    if (regs_mode == 1)
        return weft__ctx_handoff;
    return ((i + fiber_side) & 1) ? weft__ctx_handoff : weft__ctx_switch;
}

static void regs_fn(void *arg)
{
    rentry(&rc);
    for (int i = 0; i < 100; i++) {
        regs_sw = regs_pick(i, 1);
        fiber_bad |= regs_roundtrip(&rc, &main_ctx, 0x20000 + (uint64_t)i * 64);
    }
    rexit(&rc, &main_ctx, NULL);
}

static void regs_check(int mode)
{
    regs_mode = mode;
    fiber_bad = 0;
    rmake(&rc, regs_fn);
    unsigned bad = 0;
    for (int i = 0; i < 100; i++) {
        regs_sw = regs_pick(i, 0);
        bad |= regs_roundtrip(&main_ctx, &rc, 0x10000 + (uint64_t)i * 64);
    }
    rswitch(&main_ctx, &rc, NULL);   /* let it finish */
    regs_sw = weft__ctx_switch;
    if (bad || fiber_bad)
        test_fail(__FILE__, __LINE__, "mode %d: clobbered (" REGS_NAMES "): main %#x, fiber %#x",
                  mode, bad, fiber_bad);
    rfree(&rc);
}
#endif

TEST(arch_callee_saved_registers)
{
#ifdef REGS_NONE
    printf("no register check for this CPU\n");
#else
    regs_check(0);
#endif
}

/* The hand-off keeps the same registers, and either switch resumes a
 * context the other one suspended (arch.h). */
TEST(arch_handoff_callee_saved_registers)
{
#ifdef REGS_NONE
    printf("no register check for this CPU\n");
#else
    regs_check(1);
    regs_check(2);
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
        test_skip("under valgrind");
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
