/*
 * C half of the x86-64 System V switch: building the first frame of a fresh
 * context. The frame must look exactly like one weft__ctx_switch pushed
 * (see the diagram in switch_x86_64_sysv_elf_gas.S), so that the first
 * switch to it pops it like any other and "returns" into the trampoline.
 */
#include "arch.h"

#include <stdint.h>
#include <string.h>

extern void weft__ctx_trampoline(void);

const char weft__ctx_impl[] = "weft x86_64 sysv";

/* The saved frame, as C sees it; offsets match the assembly's diagram. */
struct frame {
    uint32_t mxcsr;
    uint16_t fpucw;
    uint16_t pad;
    uint64_t r15, r14, r13, r12, rbx, rbp;
    uint64_t ret;          /* where the switch returns to */
};
_Static_assert(offsetof(struct frame, mxcsr) == 0x00, "frame layout");
_Static_assert(offsetof(struct frame, fpucw) == 0x04, "frame layout");
_Static_assert(offsetof(struct frame, r15) == 0x08, "frame layout");
_Static_assert(offsetof(struct frame, r12) == 0x20, "frame layout");
_Static_assert(offsetof(struct frame, rbx) == 0x28, "frame layout");
_Static_assert(offsetof(struct frame, rbp) == 0x30, "frame layout");
_Static_assert(offsetof(struct frame, ret) == 0x38, "frame layout");
_Static_assert(sizeof(struct frame) == 0x40, "frame layout");

void weft__ctx_make(weft__ctx *ctx, void *lo, size_t size, void (*fn)(void *))
{
    /* The top 16 bytes stay zero: a null "caller" for anything that walks
     * past the trampoline without reading its CFI. The frame goes below, so
     * that after its 0x40 bytes are popped rsp is 16-byte aligned at the
     * trampoline's `call`, as the ABI requires before a call. */
    uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)15;
    struct frame *fr = (struct frame *)(top - 16 - sizeof(struct frame));
    memset(fr, 0, sizeof *fr + 16);
    fr->mxcsr = 0x1f80;    /* all SSE exceptions masked, round to nearest */
    fr->fpucw = 0x037f;    /* x87: all exceptions masked, extended precision */
    fr->r12 = (uint64_t)(uintptr_t)fn;
    fr->ret = (uint64_t)(uintptr_t)weft__ctx_trampoline;
    ctx->sp = fr;
}
