/*
 * C half of the AArch64 AAPCS64 switch: building the first frame of a fresh
 * context. The frame must look exactly like one weft__ctx_switch stored
 * (see the diagram in switch_arm64_aapcs_elf_gas.S), so that the first
 * switch to it reloads it like any other and "returns" into the trampoline.
 */
#include "arch.h"

#include <stdint.h>
#include <string.h>

extern void weft__ctx_trampoline(void);

const char weft__ctx_impl[] = "weft arm64 aapcs";

/* The saved frame, as C sees it; offsets match the assembly's diagram. */
struct frame {
    uint64_t fpcr;
    uint64_t pad;
    uint64_t d[8];             /* d8 .. d15 */
    uint64_t x19, x20, x21, x22, x23, x24, x25, x26, x27, x28;
    uint64_t fp;               /* x29 */
    uint64_t lr;               /* x30: where the switch returns to */
};
_Static_assert(offsetof(struct frame, fpcr) == 0x00, "frame layout");
_Static_assert(offsetof(struct frame, d) == 0x10, "frame layout");
_Static_assert(offsetof(struct frame, d[7]) == 0x48, "frame layout");
_Static_assert(offsetof(struct frame, x19) == 0x50, "frame layout");
_Static_assert(offsetof(struct frame, x21) == 0x60, "frame layout");
_Static_assert(offsetof(struct frame, x27) == 0x90, "frame layout");
_Static_assert(offsetof(struct frame, fp) == 0xa0, "frame layout");
_Static_assert(offsetof(struct frame, lr) == 0xa8, "frame layout");
_Static_assert(sizeof(struct frame) == 0xb0, "frame layout");

void weft__ctx_make(weft__ctx *ctx, void *lo, size_t size, void (*fn)(void *))
{
    /* The top 16 bytes stay zero: a null frame record (fp = 0, lr = 0) for
     * anything that walks past the trampoline without reading its CFI. The
     * frame goes below; once its 0xb0 bytes are popped, sp is 16-byte
     * aligned at the trampoline, as AAPCS64 requires of sp at all times. */
    uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)15;
    struct frame *fr = (struct frame *)(top - 16 - sizeof(struct frame));
    memset(fr, 0, sizeof *fr + 16);
    fr->fpcr = 0;              /* round to nearest, no flush-to-zero: Linux's default */
    fr->x19 = (uint64_t)(uintptr_t)fn;
    fr->fp = 0;                /* ends frame-pointer chains at the root frame */
    fr->lr = (uint64_t)(uintptr_t)weft__ctx_trampoline;
    ctx->sp = fr;
}
