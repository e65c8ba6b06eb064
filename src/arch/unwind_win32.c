/*
 * Unwinding on Windows: not written yet. The x86-64 MS switch frame would be
 * read the same way as the SysV one (src/arch/unwind_posix.c), into a
 * CONTEXT for RtlVirtualUnwind. Until then every walk says -ENOTSUP and the
 * diagnostics print what they can without frames.
 */
#include "unwind.h"

#include <errno.h>

int weft__unwind_ctx(const weft__ctx *ctx, void **pcs, int max)
{
    (void)ctx; (void)pcs; (void)max;
    return -ENOTSUP;
}

int weft__unwind_signal(void *uctx, void **pcs, int max)
{
    (void)uctx; (void)pcs; (void)max;
    return -ENOTSUP;
}

int weft__unwind_signal_ends(void *uctx, void **head, int nhead, void **tail, int ntail, int limit)
{
    (void)uctx; (void)head; (void)nhead; (void)tail; (void)ntail; (void)limit;
    return -ENOTSUP;
}

int weft__unwind_self(void **pcs, int max, int skip)
{
    (void)pcs; (void)max; (void)skip;
    return -ENOTSUP;
}

int weft__unwind_symbol(const void *pc, char *buf, size_t len, uintptr_t *off)
{
    (void)pc; (void)off;
    if (len)
        buf[0] = 0;
    return -ENOENT;
}

const char *weft__unwind_object(const void *pc)
{
    (void)pc;
    return NULL;
}

void weft__unwind_prepare(void) {}
void weft__unwind_release(void) {}

int weft__unwind_symbol_safe(const void *pc, char *buf, size_t len, uintptr_t *off,
                             const char **obj, uintptr_t *obj_off)
{
    (void)pc; (void)off; (void)obj; (void)obj_off;
    if (len)
        buf[0] = 0;
    return -ENOENT;
}
