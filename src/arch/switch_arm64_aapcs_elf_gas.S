/*
 * Context switch for AArch64, AAPCS64, ELF, GNU as.
 *
 * AAPCS64 lets a called function clobber every register except x19-x28,
 * the frame pointer x29, sp, and the low 64 bits of v8-v15 (d8-d15). The
 * link register x30 is not callee-saved, but it holds the address the
 * switch returns to, so it is part of a suspended context like the return
 * address pushed by `call` on x86-64. So a switch, which to its caller is
 * a function call that returns later (maybe on another thread), stores
 * those 12 general registers and 8 FP registers on the current stack,
 * stores sp in *from, loads sp from *to and reloads the other context's
 * copies. Everything else the compiler already assumed destroyed.
 *
 * FPCR (rounding mode, flush-to-zero, default-NaN) is saved too. AAPCS64
 * treats its control bits as global state that a callee must leave as it
 * found them, which a switch does for the caller that called it; but C's
 * fenv (fesetround) is per thread of control, and a fiber is one. Without
 * saving it, a fiber that sets FE_UPWARD and parks would hand its rounding
 * mode to whatever ran next on the worker, and find a foreign one when it
 * resumed on another. x86-64 saves MXCSR and the x87 control word for the
 * same reason. Writing FPCR can be a synchronising operation on some cores,
 * so it is written only when the incoming value differs from the one in
 * the register (almost never: nearly every program runs with FPCR = 0);
 * FPSR, the cumulative exception flags, is caller-saved and not kept.
 *
 * A suspended context, as seen from its saved stack pointer (ctx->sp):
 *
 *     +------------------------------------------------------------------+
 *     | offset  contents                       saved by                  |
 *     |------------------------------------------------------------------|
 *     | +0x00   FPCR             (8 bytes)     mrs + str                 |
 *     | +0x08   (padding: keeps sp 16-aligned)                           |
 *     | +0x10   d8       +0x18   d9            stp d8, d9                |
 *     | +0x20   d10      +0x28   d11           stp d10, d11              |
 *     | +0x30   d12      +0x38   d13           stp d12, d13              |
 *     | +0x40   d14      +0x48   d15           stp d14, d15              |
 *     | +0x50   x19      +0x58   x20           stp x19, x20              |
 *     | +0x60   x21      +0x68   x22           stp x21, x22              |
 *     | +0x70   x23      +0x78   x24           stp x23, x24              |
 *     | +0x80   x25      +0x88   x26           stp x25, x26              |
 *     | +0x90   x27      +0x98   x28           stp x27, x28              |
 *     | +0xa0   x29 (fp) +0xa8   x30 (lr)      stp x29, x30: a frame     |
 *     |                                        record, as the ABI lays   |
 *     |                                        them out                  |
 *     | +0xb0   (the suspended caller's frame continues here)            |
 *     +------------------------------------------------------------------+
 *
 * x29/x30 sit at the top as a standard frame record, so a frame-pointer
 * walker standing at sp + 0xa0 sees a well-formed link to the caller. The
 * C view of this layout is kept honest by static assertions in
 * switch_arm64_aapcs.c.
 *
 * Returning. `ret` goes through the return-address predictor, which after
 * a stack swap predicts the caller of the context we just left. That is
 * right when both contexts called the switch from the same place (two
 * fibers handing over in weft__switch_out: see weft__ctx_handoff in
 * arch.h, an alias of this switch here) and wrong otherwise (the run
 * loop's switches into and out of fibers), which pay one misprediction.
 * `br x30` would avoid that predictor, but with BTI enforced an indirect
 * `br` may only land on a `bti j` pad, and a return address never is one;
 * `ret` is exempt from BTI. The loop's miss is the price of BTI-correctness.
 *
 * BTI. The only indirect entry into this file is a `blr` to
 * weft__ctx_switch (through a function pointer or a PLT), which lands on
 * its `bti c`. The trampoline is entered by `ret`, which BTI does not
 * check, and it leaves through `blr x19` into a C function that carries
 * its own pad when built with branch protection. Every path is therefore
 * BTI-correct and the file carries the GNU property note that says so (the
 * linker keeps it only if every other object says so too).
 *
 * The CFI below describes each store as it happens. After sp is swapped
 * the frame being reloaded has exactly the same shape, so the same CFI
 * stays true for the other context: a debugger stopped anywhere in here
 * unwinds correctly.
 */

    .file   "switch_arm64_aapcs_elf_gas.S"
    .text

/* void *weft__ctx_switch(weft__ctx *from, weft__ctx *to, void *arg)
 *                        x0               x1             x2         -> x0   */
    .globl  weft__ctx_switch
    .hidden weft__ctx_switch
    .type   weft__ctx_switch, %function
    .p2align 4
weft__ctx_switch:
    .cfi_startproc
    hint    #34                     /* bti c: landing pad for blr */
    sub     sp, sp, #0xb0           /* room for the whole frame at once */
    .cfi_def_cfa_offset 0xb0
    stp     x29, x30, [sp, #0xa0]   /* frame pointer and return address */
    .cfi_offset x29, -0x10
    .cfi_offset x30, -0x08
    stp     x27, x28, [sp, #0x90]
    .cfi_offset x27, -0x20
    .cfi_offset x28, -0x18
    stp     x25, x26, [sp, #0x80]
    .cfi_offset x25, -0x30
    .cfi_offset x26, -0x28
    stp     x23, x24, [sp, #0x70]
    .cfi_offset x23, -0x40
    .cfi_offset x24, -0x38
    stp     x21, x22, [sp, #0x60]
    .cfi_offset x21, -0x50
    .cfi_offset x22, -0x48
    stp     x19, x20, [sp, #0x50]
    .cfi_offset x19, -0x60
    .cfi_offset x20, -0x58
    stp     d14, d15, [sp, #0x40]   /* callee-saved halves of v8-v15 */
    .cfi_offset d14, -0x70
    .cfi_offset d15, -0x68
    stp     d12, d13, [sp, #0x30]
    .cfi_offset d12, -0x80
    .cfi_offset d13, -0x78
    stp     d10, d11, [sp, #0x20]
    .cfi_offset d10, -0x90
    .cfi_offset d11, -0x88
    stp     d8, d9, [sp, #0x10]
    .cfi_offset d8, -0xa0
    .cfi_offset d9, -0x98
    mrs     x9, fpcr                /* rounding mode, FZ, DN: this context's fenv */
    str     x9, [sp, #0x00]

    mov     x10, sp
    str     x10, [x0]               /* from->sp: this context is now suspended */
    ldr     x10, [x1]
    mov     sp, x10                 /* to->sp:   from here on we run the other one */

    ldp     x29, x30, [sp, #0xa0]   /* its fp and return address, first: the ret's
                                       target resolves while the rest loads */
    .cfi_restore x29
    .cfi_restore x30
    ldr     x10, [sp, #0x00]        /* its FPCR; x9 still holds the one in force */
    cmp     x10, x9
    b.eq    1f                      /* equal (the usual case): skip the costly write */
    msr     fpcr, x10
1:
    ldp     d8, d9, [sp, #0x10]
    .cfi_restore d8
    .cfi_restore d9
    ldp     d10, d11, [sp, #0x20]
    .cfi_restore d10
    .cfi_restore d11
    ldp     d12, d13, [sp, #0x30]
    .cfi_restore d12
    .cfi_restore d13
    ldp     d14, d15, [sp, #0x40]
    .cfi_restore d14
    .cfi_restore d15
    ldp     x19, x20, [sp, #0x50]
    .cfi_restore x19
    .cfi_restore x20
    ldp     x21, x22, [sp, #0x60]
    .cfi_restore x21
    .cfi_restore x22
    ldp     x23, x24, [sp, #0x70]
    .cfi_restore x23
    .cfi_restore x24
    ldp     x25, x26, [sp, #0x80]
    .cfi_restore x25
    .cfi_restore x26
    ldp     x27, x28, [sp, #0x90]
    .cfi_restore x27
    .cfi_restore x28
    add     sp, sp, #0xb0
    .cfi_def_cfa_offset 0
    mov     x0, x2                  /* arg becomes the resumed call's return value */
    ret                             /* to where the other context called us from */
    .cfi_endproc
    .size   weft__ctx_switch, .-weft__ctx_switch

/* This switch already ends in `ret`: the hand-off (arch.h) is the same code. */
    .globl  weft__ctx_handoff
    .hidden weft__ctx_handoff
    .type   weft__ctx_handoff, %function
    .set    weft__ctx_handoff, weft__ctx_switch

/* The first switch into a fresh context "returns" here, with the frame
 * weft__ctx_make built: x19 = fn, x0 = arg, x29 = 0, sp 16-byte aligned.
 *
 * This is the root frame of every fiber. `.cfi_undefined x30` tells
 * unwinders (gdb, libunwind, the C++ runtime) that there is no caller
 * above it, and x29 = 0 ends the chain for frame-pointer walkers (perf,
 * the kernel's user stack sampler), so a backtrace of a fiber ends cleanly
 * at its entry function instead of wandering into whatever the stack
 * memory held before. It is entered by `ret`, so it needs no BTI pad. */
    .globl  weft__ctx_trampoline
    .hidden weft__ctx_trampoline
    .type   weft__ctx_trampoline, %function
    .p2align 4
weft__ctx_trampoline:
    .cfi_startproc
    .cfi_undefined x30
    mov     x29, xzr                /* already 0 from the frame: said again for readers */
    blr     x19                     /* fn(arg) */
    brk     #0x1                    /* fn must switch away for good, never return */
    .cfi_endproc
    .size   weft__ctx_trampoline, .-weft__ctx_trampoline

/* GNU property note: this object is BTI-compatible (see BTI above).
 * GNU_PROPERTY_AARCH64_FEATURE_1_AND = 0xc0000000, bit 0 = BTI. */
    .section .note.gnu.property, "a"
    .p2align 3
    .word   4                       /* name size: "GNU\0" */
    .word   16                      /* descriptor size */
    .word   5                       /* NT_GNU_PROPERTY_TYPE_0 */
    .asciz  "GNU"
    .word   0xc0000000              /* GNU_PROPERTY_AARCH64_FEATURE_1_AND */
    .word   4                       /* its data size */
    .word   1                       /* GNU_PROPERTY_AARCH64_FEATURE_1_BTI */
    .word   0                       /* pad to 8 bytes */

    .section .note.GNU-stack, "", %progbits
