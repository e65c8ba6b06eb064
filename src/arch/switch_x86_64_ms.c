/*
 * C half of the Windows x64 switch: building the first frame of a fresh
 * context. The frame must look exactly like one weft__ctx_switch saved (see
 * the diagram in switch_x86_64_ms_pe_gas.S), so that the first switch to it
 * restores it like any other and "returns" into the trampoline, with the
 * TIB describing the fiber's own stack from its first instruction on.
 */
#include "arch.h"

#include <stdint.h>
#include <string.h>
#include <windows.h>

extern void weft__ctx_trampoline(void);
EXCEPTION_DISPOSITION weft__ctx_root_handler(EXCEPTION_RECORD *rec, void *frame, CONTEXT *ctx,
                                             void *dispatch);

const char weft__ctx_impl[] = "weft x86_64 ms";

/* The saved frame, as C sees it; offsets match the assembly's diagram. */
struct frame {
    uint64_t xmm[10][2];   /* xmm6..xmm15 */
    uint32_t mxcsr;
    uint16_t fpucw;
    uint16_t pad0;
    uint64_t dealloc;      /* TIB DeallocationStack */
    uint64_t limit;        /* TIB StackLimit */
    uint64_t base;         /* TIB StackBase */
    uint64_t except;       /* TIB ExceptionList (Wine's frames) */
    uint64_t r15, r14, r13, r12, rsi, rdi, rbx, rbp;
    uint64_t ret;          /* where the switch returns to */
};
_Static_assert(offsetof(struct frame, xmm) == 0x00, "frame layout");
_Static_assert(offsetof(struct frame, mxcsr) == 0xa0, "frame layout");
_Static_assert(offsetof(struct frame, fpucw) == 0xa4, "frame layout");
_Static_assert(offsetof(struct frame, dealloc) == 0xa8, "frame layout");
_Static_assert(offsetof(struct frame, limit) == 0xb0, "frame layout");
_Static_assert(offsetof(struct frame, base) == 0xb8, "frame layout");
_Static_assert(offsetof(struct frame, except) == 0xc0, "frame layout");
_Static_assert(offsetof(struct frame, r15) == 0xc8, "frame layout");
_Static_assert(offsetof(struct frame, r12) == 0xe0, "frame layout");
_Static_assert(offsetof(struct frame, rsi) == 0xe8, "frame layout");
_Static_assert(offsetof(struct frame, rdi) == 0xf0, "frame layout");
_Static_assert(offsetof(struct frame, rbx) == 0xf8, "frame layout");
_Static_assert(offsetof(struct frame, rbp) == 0x100, "frame layout");
_Static_assert(offsetof(struct frame, ret) == 0x108, "frame layout");
_Static_assert(sizeof(struct frame) == 0x110, "frame layout");

void weft__ctx_make(weft__ctx *ctx, void *lo, size_t size, void (*fn)(void *))
{
    /* The top 16 bytes stay zero: the trampoline's "return address" (where
     * unwinders stop) and padding. The frame goes just below, 16-aligned,
     * so that once its 0x110 bytes are popped rsp is 16-aligned at the
     * trampoline, which allocates fn's 32-byte shadow space and calls. */
    uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)15;
    struct frame *fr = (struct frame *)(top - 16 - sizeof(struct frame));
    memset(fr, 0, sizeof *fr + 16);
    fr->mxcsr = 0x1f80;    /* all SSE exceptions masked, round to nearest */
    /* x87: all exceptions masked, extended precision: what mingw's CRT sets
     * at startup so that its 80-bit long double works (MSVC code does no
     * x87 arithmetic on x64 and does not care). */
    fr->fpucw = 0x037f;
    /* The TIB as the system would set it for a thread on this stack: the
     * fiber's usable bytes are committed down to lo; below lies the guard
     * region of stack_win32.c, whose base is the reservation's. */
    fr->base = (uint64_t)(uintptr_t)top;
    fr->limit = (uint64_t)(uintptr_t)lo;
    fr->dealloc = (uint64_t)((uintptr_t)lo - WEFT_STACK_GUARD_WIN32);
    fr->except = UINT64_MAX;   /* an empty x86-style SEH list ends at -1 */
    fr->r12 = (uint64_t)(uintptr_t)fn;
    fr->ret = (uint64_t)(uintptr_t)weft__ctx_trampoline;
    ctx->sp = fr;
}

/* The language handler of the root frame (the trampoline): what the
 * __except around a thread's start routine does. The exception reached the
 * bottom of the fiber's stack unhandled: ask the unhandled-exception filter,
 * and if it says "handle", end the process with the exception code, as
 * Windows ends a process whose thread let an exception escape. */
EXCEPTION_DISPOSITION weft__ctx_root_handler(EXCEPTION_RECORD *rec, void *frame, CONTEXT *ctx,
                                             void *dispatch)
{
    (void)frame;
    (void)dispatch;
    if (rec->ExceptionFlags & (EXCEPTION_UNWINDING | EXCEPTION_EXIT_UNWIND))
        return ExceptionContinueSearch;
    EXCEPTION_POINTERS ep = { rec, ctx };
    LONG r = UnhandledExceptionFilter(&ep);
    if (r == EXCEPTION_CONTINUE_EXECUTION)
        return ExceptionContinueExecution;
    if (r == EXCEPTION_EXECUTE_HANDLER)
        TerminateProcess(GetCurrentProcess(), rec->ExceptionCode);
    return ExceptionContinueSearch;
}
