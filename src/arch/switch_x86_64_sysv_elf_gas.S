/*
 * Context switch for x86-64, System V ABI, ELF, GNU as.
 *
 * The System V ABI lets a called function clobber every register except
 * rbx, rbp, r12-r15 and rsp, the control bits of MXCSR and the x87 control
 * word. So a switch, which to its caller is just a function call that
 * returns later (maybe on another thread), has to preserve exactly those:
 * it pushes them on the current stack, stores rsp in *from, loads rsp from
 * *to, and pops the other context's copies. Everything else the compiler
 * already assumed destroyed across the call.
 *
 * A suspended context, as seen from its saved stack pointer (ctx->sp):
 *
 *     offset   contents                    pushed/stored by
 *     +0x00    MXCSR            (4 bytes)  stmxcsr
 *     +0x04    x87 control word (2 bytes)  fnstcw    (+2 bytes padding)
 *     +0x08    r15
 *     +0x10    r14
 *     +0x18    r13
 *     +0x20    r12
 *     +0x28    rbx
 *     +0x30    rbp
 *     +0x38    return address              the caller's `call`
 *     +0x40    (the suspended caller's frame continues here)
 *
 * src/arch/unwind.c and tools/gdb/weft.py read this layout; the C view of it
 * is kept honest by static assertions in switch_x86_64_sysv.c.
 *
 * RETURNING. The switch ends with `jmp *%rcx`, not `ret`. The
 * CPU predicts a `ret` from its return stack buffer, which holds the
 * caller of *this* context's switch; after the stack swap we return into
 * the *other* context's caller, so a `ret` mispredicts on every switch.
 * An indirect `jmp` is predicted by the branch target buffer instead,
 * which learns the ping-pong pattern (Boost's jump_fcontext does the same).
 * Measured with bench/bench_switch on the development machine (AMD EPYC,
 * 2 vCPUs, noisy neighbours; best of 5, four alternating runs):
 * with `ret` 13.7-19.2 ns per switch against Boost's 8.4-9.8 ns (ratio
 * 1.4-2.1); with pop+jmp 6.2-12.9 ns against 6.4-13.4 ns (ratio 0.78-1.17).
 * Loading the return address into rcx first thing after the swap, as
 * Boost does, lets the jump's target resolve while the other registers
 * load: ratio 0.82-0.96 in four runs against pop+jmp's 0.90-1.17 beside it.
 * Skipping ldmxcsr/fldcw when the value is unchanged (as the AArch64 file
 * does for FPCR) measured slower here (ratio 1.3-1.7: the compares read
 * back the just-stored words), so both are loaded unconditionally.
 *
 * The `jmp` has a cost those loops cannot show, because they never return:
 * the `call` that entered the switch left an entry on the return stack
 * that no `ret` pops, so in the resumed context every later `ret` is
 * predicted one entry off and mispredicts. When the other context was
 * suspended by a call from the same place as ours, a `ret` is predicted
 * right and keeps the stack in step. That is the scheduler's common case
 * (every fiber leaves its CPU through one call in weft__switch_out), so
 * there are two entry points with one body: weft__ctx_switch ends with the
 * `jmp`, weft__ctx_handoff with `ret`. See docs/context-switch.md for the
 * measurements (a channel round trip 125 -> 105 ns).
 *
 * Neither choice is compatible with a CET shadow stack (a swap needs
 * rstorssp/saveprevssp); glibc on Debian 12 does not enable it, and user-
 * space IBT, which would want `notrack` on the jmp, is not in Linux.
 *
 * The CFI below describes each push as it happens. After rsp is swapped the
 * frame being popped has exactly the same shape, so the same CFI stays true
 * for the other context: a debugger stopped anywhere in here unwinds
 * correctly, and a suspended context (rsp at +0x00, pc just after the
 * `movq %rsp, (%rdi)`) can be unwound by reading the table above.
 */

    .file   "switch_x86_64_sysv_elf_gas.S"
    .text

/* The part both switches share: push the callee-saved registers and the FP
 * control words, store rsp in *from, load rsp from *to, reload the other
 * context's registers. It stops with the other context's return address
 * on top of the stack and arg moved to rax: how that address is reached is
 * the only difference between the two (RETURNING above). */
.macro SAVE_SWAP_RESTORE load_ret_early
    endbr64                         /* CET/IBT landing pad for indirect calls */
    pushq   %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset rbp, 0
    pushq   %rbx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset rbx, 0
    pushq   %r12
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r12, 0
    pushq   %r13
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r13, 0
    pushq   %r14
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r14, 0
    pushq   %r15
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r15, 0
    leaq    -8(%rsp), %rsp          /* room for the two FP control words */
    .cfi_adjust_cfa_offset 8
    stmxcsr (%rsp)                  /* SSE rounding mode, exception masks, DAZ/FTZ */
    fnstcw  4(%rsp)                 /* x87 precision and rounding control */

    movq    %rsp, (%rdi)            /* from->sp: this context is now suspended */
    movq    (%rsi), %rsp            /* to->sp:   from here on we run the other one */

.if \load_ret_early
    movq    0x38(%rsp), %rcx        /* its return address, loaded first: see RETURNING */
.endif
    ldmxcsr (%rsp)
    fldcw   4(%rsp)
    leaq    8(%rsp), %rsp
    .cfi_adjust_cfa_offset -8
    popq    %r15
    .cfi_adjust_cfa_offset -8
    .cfi_restore r15
    popq    %r14
    .cfi_adjust_cfa_offset -8
    .cfi_restore r14
    popq    %r13
    .cfi_adjust_cfa_offset -8
    .cfi_restore r13
    popq    %r12
    .cfi_adjust_cfa_offset -8
    .cfi_restore r12
    popq    %rbx
    .cfi_adjust_cfa_offset -8
    .cfi_restore rbx
    popq    %rbp
    .cfi_adjust_cfa_offset -8
    .cfi_restore rbp
    movq    %rdx, %rax              /* arg becomes the resumed call's return value */
.endm

/* void *weft__ctx_switch(weft__ctx *from, weft__ctx *to, void *arg)
 *                        rdi              rsi            rdx        -> rax   */
    .globl  weft__ctx_switch
    .hidden weft__ctx_switch
    .type   weft__ctx_switch, @function
    .p2align 4
weft__ctx_switch:
    .cfi_startproc
    SAVE_SWAP_RESTORE 1
    leaq    8(%rsp), %rsp           /* drop the return address, already in rcx... */
    .cfi_adjust_cfa_offset -8
    .cfi_register rip, rcx
    jmpq    *%rcx                   /* ...reached by jmp, not ret: see RETURNING above */
    .cfi_endproc
    .size   weft__ctx_switch, .-weft__ctx_switch

/* void *weft__ctx_handoff(weft__ctx *from, weft__ctx *to, void *arg)
 * The same switch, ending in `ret`: for a `to` suspended by a switch
 * called from the same place as this call (RETURNING above). */
    .globl  weft__ctx_handoff
    .hidden weft__ctx_handoff
    .type   weft__ctx_handoff, @function
    .p2align 4
weft__ctx_handoff:
    .cfi_startproc
    SAVE_SWAP_RESTORE 0
    ret                             /* predicted: we return where we were called from */
    .cfi_endproc
    .size   weft__ctx_handoff, .-weft__ctx_handoff

/* The first switch into a fresh context "returns" here, with the frame
 * weft__ctx_make built: r12 = fn, rax = arg, rsp 16-byte aligned.
 *
 * This is the root frame of every fiber. `.cfi_undefined rip` tells
 * unwinders (gdb, libunwind, the C++ runtime) that there is no caller above
 * it, so a backtrace of a fiber ends cleanly at its entry function instead
 * of wandering into whatever the stack memory held before. */
    .globl  weft__ctx_trampoline
    .hidden weft__ctx_trampoline
    .type   weft__ctx_trampoline, @function
    .p2align 4
weft__ctx_trampoline:
    .cfi_startproc
    .cfi_undefined rip
    movq    %rax, %rdi              /* fn(arg) */
    callq   *%r12
    ud2                             /* fn must switch away for good, never return */
    .cfi_endproc
    .size   weft__ctx_trampoline, .-weft__ctx_trampoline

    .section .note.GNU-stack, "", @progbits
