/*
 * Unwinding a suspended fiber with libunwind (1.6, Debian's), without
 * resuming it.
 *
 * libunwind's local unwinder starts from a unw_context_t, and on x86-64 that
 * type *is* a ucontext_t (libunwind-x86_64.h: typedef ucontext_t
 * unw_tdep_context_t): unw_init_local reads the general registers straight
 * out of uc_mcontext.gregs and then walks by DWARF CFI, reading stack memory
 * in place. So a suspended context is turned into a ucontext by hand: the
 * switch frame (see the diagram at the top of switch_x86_64_sysv_elf_gas.S)
 * holds exactly the registers a caller of weft__ctx_switch may rely on —
 * rbx, rbp, r12-r15 — and the return address; rsp is the saved sp plus the
 * frame's 0x40 bytes, i.e. the value it has right after the switch returns.
 * That is a complete, honest register state for the caller's frame (the
 * other registers are dead across a call, so the CFI never asks for them),
 * and the walk begins in weft__switch_out and ends at the fiber's root,
 * whose trampoline says `.cfi_undefined rip`.
 *
 * Two alternatives were tried and dropped. unw_init_remote with our own
 * accessors (reading a *copy* of the stack) would let us walk a fiber that
 * may run meanwhile, but needs the generic libunwind-x86_64 library and
 * a find_proc_info of our own; the scheduler can instead hold a fiber still
 * for the few microseconds of a walk (see diag.c). Walking frame pointers by
 * hand is what gdb-less tools do, but weft is built without them.
 *
 * The same approach carries over to any ABI whose switch saves a fixed frame:
 * fill the callee-saved registers, sp and pc of the platform's ucontext.
 * Only x86-64 SysV with our own assembly is done here; other switch
 * implementations (Boost's fcontext lays its frame out differently) get
 * -ENOTSUP from weft__unwind_ctx, while the other two entry points, which
 * need no frame knowledge, work wherever libunwind does.
 */
#define _GNU_SOURCE
#define UNW_LOCAL_ONLY
#include "unwind.h"

#include <dlfcn.h>
#include <errno.h>
#include <libunwind.h>
#include <string.h>
#include <ucontext.h>

/* Step cursor c, collecting up to max pcs. */
static int collect(unw_cursor_t *c, void **pcs, int max, int skip)
{
    int n = 0;
    do {
        unw_word_t ip = 0;
        if (unw_get_reg(c, UNW_REG_IP, &ip) < 0 || ip == 0)
            break;
        if (skip > 0) {
            skip--;
            continue;
        }
        pcs[n++] = (void *)(uintptr_t)ip;
    } while (n < max && unw_step(c) > 0);
    return n;
}

#if defined(__x86_64__)
/* The frame of switch_x86_64_sysv_elf_gas.S, as unwinding needs it. */
struct frame {
    uint32_t mxcsr;
    uint16_t fpucw, pad;
    uint64_t r15, r14, r13, r12, rbx, rbp;
    uint64_t ret;
};
_Static_assert(sizeof(struct frame) == 0x40, "frame layout");

static int ctx_known(void)
{
    return strncmp(weft__ctx_impl, "weft x86_64 sysv", 16) == 0;
}

static void ctx_to_ucontext(const weft__ctx *ctx, ucontext_t *uc)
{
    const struct frame *fr = ctx->sp;
    memset(uc, 0, sizeof *uc);
    greg_t *g = uc->uc_mcontext.gregs;
    g[REG_RBX] = (greg_t)fr->rbx;
    g[REG_RBP] = (greg_t)fr->rbp;
    g[REG_R12] = (greg_t)fr->r12;
    g[REG_R13] = (greg_t)fr->r13;
    g[REG_R14] = (greg_t)fr->r14;
    g[REG_R15] = (greg_t)fr->r15;
    g[REG_RSP] = (greg_t)(uintptr_t)(fr + 1);
    g[REG_RIP] = (greg_t)fr->ret;
}
#else
static int ctx_known(void) { return 0; }
static void ctx_to_ucontext(const weft__ctx *ctx, ucontext_t *uc) { (void)ctx; (void)uc; }
#endif

int weft__unwind_ctx(const weft__ctx *ctx, void **pcs, int max)
{
    if (!ctx_known())
        return -ENOTSUP;
    if (!ctx->sp || max <= 0)
        return 0;
    ucontext_t uc;
    unw_cursor_t c;
    ctx_to_ucontext(ctx, &uc);
    /* Not a signal frame: the pc is a return address. */
    if (unw_init_local(&c, (unw_context_t *)&uc) < 0)
        return -EINVAL;
    return collect(&c, pcs, max, 0);
}

int weft__unwind_signal(void *uctx, void **pcs, int max)
{
    unw_cursor_t c;
    if (!uctx || max <= 0)
        return 0;
    /* UNW_INIT_SIGNAL_FRAME: the first pc is the interrupted instruction,
     * not a return address, so its CFI row is looked up at pc, not pc - 1. */
    if (unw_init_local2(&c, (unw_context_t *)uctx, UNW_INIT_SIGNAL_FRAME) < 0)
        return -EINVAL;
    return collect(&c, pcs, max, 0);
}

int weft__unwind_signal_ends(void *uctx, void **head, int nhead, void **tail, int ntail,
                             int limit)
{
    unw_cursor_t c;
    if (!uctx || nhead < 0 || ntail <= 0)
        return 0;
    if (ntail > 64)
        ntail = 64;   /* unrolled through a buffer on the (signal) stack */
    if (unw_init_local2(&c, (unw_context_t *)uctx, UNW_INIT_SIGNAL_FRAME) < 0)
        return -EINVAL;
    int n = 0;
    do {
        unw_word_t ip = 0;
        if (unw_get_reg(&c, UNW_REG_IP, &ip) < 0 || ip == 0)
            break;
        if (n < nhead)
            head[n] = (void *)(uintptr_t)ip;
        else
            tail[(n - nhead) % ntail] = (void *)(uintptr_t)ip;   /* a ring */
        n++;
    } while (n < limit && unw_step(&c) > 0);
    /* Unroll the ring so that tail[] runs from older to oldest. */
    int kept = n - nhead < ntail ? n - nhead : ntail;
    if (kept > 0 && n - nhead > ntail) {
        int start = (n - nhead) % ntail;   /* the oldest entry still kept */
        void *tmp[64];
        for (int i = 0; i < kept; i++)
            tmp[i] = tail[(start + i) % ntail];
        for (int i = 0; i < kept; i++)
            tail[i] = tmp[i];
    }
    return n;
}

int weft__unwind_self(void **pcs, int max, int skip)
{
    unw_context_t uc;
    unw_cursor_t c;
    if (max <= 0)
        return 0;
    unw_getcontext(&uc);
    if (unw_init_local(&c, &uc) < 0)
        return -EINVAL;
    return collect(&c, pcs, max, skip + 1);
}

int weft__unwind_symbol(const void *pc, char *buf, size_t len, uintptr_t *off)
{
    /* libunwind names a pc only through a cursor. Make one for this
     * thread, then move its ip: the signal-frame flag stops libunwind from
     * subtracting one again (our caller already adjusted return addresses).
     * Unlike dladdr, this reads the full ELF symbol table, so static
     * functions and hidden library internals get their names too. */
    unw_context_t uc;
    unw_cursor_t c;
    unw_word_t o = 0;
    if (!len)
        return -EINVAL;
    buf[0] = 0;
    unw_getcontext(&uc);
    if (unw_init_local2(&c, &uc, UNW_INIT_SIGNAL_FRAME) < 0 ||
        unw_set_reg(&c, UNW_REG_IP, (unw_word_t)(uintptr_t)pc) < 0)
        return -ENOENT;
    int r = unw_get_proc_name(&c, buf, len, &o);
    if (r < 0 && r != -UNW_ENOMEM) {   /* ENOMEM: truncated, still useful */
        buf[0] = 0;
        return -ENOENT;
    }
    if (off)
        *off = (uintptr_t)o;
    return 0;
}

const char *weft__unwind_object(const void *pc)
{
    Dl_info di;
    if (!dladdr(pc, &di) || !di.dli_fname)
        return NULL;
    const char *slash = strrchr(di.dli_fname, '/');
    return slash ? slash + 1 : di.dli_fname;
}
