/*
 * Context switch for x86-64, Microsoft x64 ABI, PE/COFF, GNU as.
 *
 * The Windows x64 ABI lets a called function clobber rax, rcx, rdx, r8-r11
 * and xmm0-xmm5; everything else is the caller's: rbx, rbp, rdi, rsi,
 * r12-r15, xmm6-xmm15 (all 128 bits), the control bits of MXCSR and the x87
 * control word. A switch is, to its caller, a function call that returns
 * later (maybe on another thread), so it preserves exactly those, as the
 * System V switch does, plus rdi, rsi and ten xmm registers.
 *
 * Windows also keeps the bounds of "the current stack" in the thread's TIB,
 * reached through gs:
 *
 *   gs:0x08  StackBase          one past the highest byte of the stack
 *   gs:0x10  StackLimit         lowest committed byte (a guard page lies below)
 *   gs:0x1478 DeallocationStack  base of the stack's reservation
 *
 * and the system reads them on our fibers' stacks too: the exception
 * dispatcher rejects a frame outside [StackLimit, StackBase) and gives up on
 * the exception (SEH, C++ throw, and a vectored handler's report all need
 * it); MSVC-built code's __chkstk probes only the pages below StackLimit;
 * the memory manager grows a stack (and raises STATUS_STACK_OVERFLOW)
 * only for a guard page between DeallocationStack and StackBase; Wine kills
 * a thread whose faulting stack pointer lies below DeallocationStack. So the
 * three fields belong to a context exactly like its registers: saved here
 * on the way out, loaded from the other context's frame on the way in.
 *
 * and one more that only looks obsolete:
 *
 *   gs:0x00  ExceptionList      the x86 SEH chain
 *
 * x64 SEH is table-driven (.pdata/.xdata, see below) and Windows leaves
 * the field alone, but Wine keeps its own builtin code's __TRY frames
 * there and its dispatcher calls every frame on that list whose address is
 * below the stack pointer being unwound. Frames on the worker's thread
 * stack are meaningless to a fiber (and, depending on where the stacks lie,
 * would be called for a fiber's exception and unwound to, across stacks),
 * so each context has its own list: empty (-1) for a fresh one. The slot
 * was free (alignment padding), and on Windows proper this is one load and
 * one store that nothing reads.
 *
 * Not saved, on purpose:
 *   gs:0x20 FiberData      belongs to Windows' own fibers (CreateFiber);
 *                          ours are not Windows fibers, and a thread that
 *                          was converted with ConvertThreadToFiber keeps its
 *                          fiber data whichever weft fiber runs on it;
 *   gs:0x1748 GuaranteedStackBytes  a property of the thread (set with
 *                          SetThreadStackGuarantee, see crash_win32.c):
 *                          every stack run on that thread gets the same.
 *
 * A suspended context, as seen from its saved stack pointer (ctx->sp),
 * which is 16-byte aligned so that the xmm saves can use movaps:
 *
 *     offset   contents                        saved by
 *     +0x00    xmm6             (16 bytes)     movaps
 *     +0x10    xmm7
 *     +0x20    xmm8
 *     +0x30    xmm9
 *     +0x40    xmm10
 *     +0x50    xmm11
 *     +0x60    xmm12
 *     +0x70    xmm13
 *     +0x80    xmm14
 *     +0x90    xmm15
 *     +0xa0    MXCSR             (4 bytes)     stmxcsr
 *     +0xa4    x87 control word  (2 bytes)     fnstcw   (+2 bytes padding)
 *     +0xa8    TIB DeallocationStack           gs:0x1478
 *     +0xb0    TIB StackLimit                  gs:0x10
 *     +0xb8    TIB StackBase                   gs:0x08
 *     +0xc0    TIB ExceptionList               gs:0x00
 *     +0xc8    r15                             push
 *     +0xd0    r14
 *     +0xd8    r13
 *     +0xe0    r12
 *     +0xe8    rsi
 *     +0xf0    rdi
 *     +0xf8    rbx
 *     +0x100   rbp
 *     +0x108   return address                  the caller's `call`
 *     +0x110   (the suspended caller's frame continues here)
 *
 * The C view of this layout is kept honest by static assertions in
 * switch_x86_64_ms.c, which also builds the first frame of a fresh context.
 *
 * Unwinding: the .seh_* directives emit the function's unwind codes
 * (.pdata/.xdata), the x64 equivalent of DWARF CFI. They describe the
 * prologue; after the stack pointer is swapped the frame being restored has
 * the same shape, so they stay true for the other context, and the
 * restore ends in the canonical epilogue (add rsp; pop...; ret) that the
 * Windows unwinder recognises and simulates. A debugger stopped anywhere in
 * here, or a walker given a suspended context, unwinds correctly.
 *
 * Not compatible with CET shadow stacks (/CETCOMPAT); neither is any
 * stack-switching code that does not maintain one per context, and mingw
 * does not mark its binaries so.
 */

    .file   "switch_x86_64_ms_pe_gas.S"
    .text

/* void *weft__ctx_switch(weft__ctx *from, weft__ctx *to, void *arg)
 *                        rcx              rdx            r8         -> rax   */
    .globl  weft__ctx_switch
    .def    weft__ctx_switch; .scl 2; .type 32; .endef
    .p2align 4
    .seh_proc weft__ctx_switch
weft__ctx_switch:
    pushq   %rbp
    .seh_pushreg %rbp
    pushq   %rbx
    .seh_pushreg %rbx
    pushq   %rdi
    .seh_pushreg %rdi
    pushq   %rsi
    .seh_pushreg %rsi
    pushq   %r12
    .seh_pushreg %r12
    pushq   %r13
    .seh_pushreg %r13
    pushq   %r14
    .seh_pushreg %r14
    pushq   %r15
    .seh_pushreg %r15
    subq    $0xc8, %rsp             /* xmm, FP control and TIB slots; rsp now 16-aligned */
    .seh_stackalloc 0xc8
    movaps  %xmm6, 0x00(%rsp)
    .seh_savexmm %xmm6, 0x00
    movaps  %xmm7, 0x10(%rsp)
    .seh_savexmm %xmm7, 0x10
    movaps  %xmm8, 0x20(%rsp)
    .seh_savexmm %xmm8, 0x20
    movaps  %xmm9, 0x30(%rsp)
    .seh_savexmm %xmm9, 0x30
    movaps  %xmm10, 0x40(%rsp)
    .seh_savexmm %xmm10, 0x40
    movaps  %xmm11, 0x50(%rsp)
    .seh_savexmm %xmm11, 0x50
    movaps  %xmm12, 0x60(%rsp)
    .seh_savexmm %xmm12, 0x60
    movaps  %xmm13, 0x70(%rsp)
    .seh_savexmm %xmm13, 0x70
    movaps  %xmm14, 0x80(%rsp)
    .seh_savexmm %xmm14, 0x80
    movaps  %xmm15, 0x90(%rsp)
    .seh_savexmm %xmm15, 0x90
    .seh_endprologue
    stmxcsr 0xa0(%rsp)              /* SSE rounding mode, exception masks, DAZ/FTZ */
    fnstcw  0xa4(%rsp)              /* x87 precision and rounding control */
    movq    %gs:0x1478, %rax        /* TIB DeallocationStack */
    movq    %rax, 0xa8(%rsp)
    movq    %gs:0x10, %rax          /* TIB StackLimit */
    movq    %rax, 0xb0(%rsp)
    movq    %gs:0x08, %rax          /* TIB StackBase */
    movq    %rax, 0xb8(%rsp)
    movq    %gs:0x00, %rax          /* TIB ExceptionList (Wine's __TRY frames) */
    movq    %rax, 0xc0(%rsp)

    movq    %rsp, (%rcx)            /* from->sp: this context is now suspended */
    movq    (%rdx), %rsp            /* to->sp:   from here on we run the other one */

    movq    0xa8(%rsp), %rax        /* its stack bounds become the thread's */
    movq    %rax, %gs:0x1478
    movq    0xb0(%rsp), %rax
    movq    %rax, %gs:0x10
    movq    0xb8(%rsp), %rax
    movq    %rax, %gs:0x08
    movq    0xc0(%rsp), %rax
    movq    %rax, %gs:0x00
    ldmxcsr 0xa0(%rsp)
    fldcw   0xa4(%rsp)
    movaps  0x00(%rsp), %xmm6
    movaps  0x10(%rsp), %xmm7
    movaps  0x20(%rsp), %xmm8
    movaps  0x30(%rsp), %xmm9
    movaps  0x40(%rsp), %xmm10
    movaps  0x50(%rsp), %xmm11
    movaps  0x60(%rsp), %xmm12
    movaps  0x70(%rsp), %xmm13
    movaps  0x80(%rsp), %xmm14
    movaps  0x90(%rsp), %xmm15
    movq    %r8, %rax               /* arg becomes the resumed call's return value */
    /* canonical epilogue: add rsp, pops, ret (nothing else in between) */
    addq    $0xc8, %rsp
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %rsi
    popq    %rdi
    popq    %rbx
    popq    %rbp
    ret                             /* to the address the other context called us from */
    .seh_endproc

/* This switch already ends in `ret`: the hand-off (arch.h) is the same code. */
    .globl  weft__ctx_handoff
    .set    weft__ctx_handoff, weft__ctx_switch

/* The first switch into a fresh context "returns" here, with the frame
 * weft__ctx_make built: r12 = fn, rax = arg, rsp 16-byte aligned, and the
 * quadword at (%rsp) zero.
 *
 * This is the root frame of every fiber. Its unwind codes say "0x20 bytes
 * allocated, then the return address": the unwinder finds the zero that
 * weft__ctx_make left there, and a return address of 0 is where Windows
 * stack walkers (RtlVirtualUnwind's callers, debuggers, the exception
 * dispatcher) stop, as they do above RtlUserThreadStart. The 0x20 bytes are
 * the shadow space the Win64 ABI makes every caller provide: fn may spill
 * its four register arguments there. */
    .globl  weft__ctx_trampoline
    .def    weft__ctx_trampoline; .scl 2; .type 32; .endef
    .p2align 4
    .seh_proc weft__ctx_trampoline
    .seh_handler weft__ctx_root_handler, @except
weft__ctx_trampoline:
    subq    $0x20, %rsp             /* shadow space for fn; rsp stays 16-aligned */
    .seh_stackalloc 0x20
    .seh_endprologue
    movq    %rax, %rcx              /* fn(arg) */
    callq   *%r12
    ud2                             /* fn must switch away for good, never return */
    .seh_endproc
