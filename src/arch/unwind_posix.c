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
 * The same approach carries over to any ABI whose switch saves a fixed
 * frame: fill the callee-saved registers, sp and pc of the platform's
 * ucontext (on AArch64 too, libunwind's unw_context_t is a ucontext_t). The
 * table below knows our x86-64 and AArch64 switches and Boost's fcontext on
 * both; an unknown switch gets -ENOTSUP from weft__unwind_ctx, while the
 * entry points that need no frame knowledge work wherever libunwind does.
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

/* Where each switch implementation leaves the registers of a suspended
 * context, relative to its saved sp. `size` is how far sp moves when the
 * switch returns (the caller's sp), `pc` the slot of the address it
 * returns to; regs[] the callee-saved registers, by their index in the
 * platform's mcontext. Offsets are checked against the assembly's own
 * diagrams (and, for Boost, against the disassembly of Debian's 1.74
 * jump_fcontext: on x86-64 r12-r15 come first, the reverse of ours). */
struct slot { int reg; unsigned short off; };
struct layout {
    const char *impl;               /* weft__ctx_impl of the switch */
    unsigned short size, pc;
    struct slot regs[12];
    int nregs;
};

#if defined(__x86_64__)
static const struct layout layouts[] = {
    { "weft x86_64 sysv", 0x40, 0x38,
      { { REG_R15, 0x08 }, { REG_R14, 0x10 }, { REG_R13, 0x18 }, { REG_R12, 0x20 },
        { REG_RBX, 0x28 }, { REG_RBP, 0x30 } }, 6 },
    { "boost fcontext", 0x40, 0x38,
      { { REG_R12, 0x08 }, { REG_R13, 0x10 }, { REG_R14, 0x18 }, { REG_R15, 0x20 },
        { REG_RBX, 0x28 }, { REG_RBP, 0x30 } }, 6 },
};
#define UC_REG(uc, r) ((uc)->uc_mcontext.gregs[r])
#define UC_SP(uc) ((uc)->uc_mcontext.gregs[REG_RSP])
#define UC_PC(uc) ((uc)->uc_mcontext.gregs[REG_RIP])
#elif defined(__aarch64__)
/* switch_arm64_aapcs_elf_gas.S: x19-x28 at 0x50.., fp/lr at 0xa0; it
 * returns through lr. Boost: x19-x28 at 0x40.., fp/lr at 0x90, and the pc
 * it returns to in its own slot at 0xa0. */
static const struct layout layouts[] = {
    { "weft arm64 aapcs", 0xb0, 0xa8,
      { { 19, 0x50 }, { 20, 0x58 }, { 21, 0x60 }, { 22, 0x68 }, { 23, 0x70 }, { 24, 0x78 },
        { 25, 0x80 }, { 26, 0x88 }, { 27, 0x90 }, { 28, 0x98 }, { 29, 0xa0 }, { 30, 0xa8 } }, 12 },
    { "boost fcontext", 0xb0, 0xa0,
      { { 19, 0x40 }, { 20, 0x48 }, { 21, 0x50 }, { 22, 0x58 }, { 23, 0x60 }, { 24, 0x68 },
        { 25, 0x70 }, { 26, 0x78 }, { 27, 0x80 }, { 28, 0x88 }, { 29, 0x90 }, { 30, 0x98 } }, 12 },
};
#define UC_REG(uc, r) ((uc)->uc_mcontext.regs[r])
#define UC_SP(uc) ((uc)->uc_mcontext.sp)
#define UC_PC(uc) ((uc)->uc_mcontext.pc)
#else
#define NO_LAYOUTS 1
#endif

#ifndef NO_LAYOUTS
static const struct layout *layout(void)
{
    static const struct layout *known;
    static int looked;
    if (!looked) {
        for (size_t i = 0; i < sizeof layouts / sizeof layouts[0]; i++)
            if (!strcmp(weft__ctx_impl, layouts[i].impl))
                known = &layouts[i];
        looked = 1;
    }
    return known;
}

static void ctx_to_ucontext(const struct layout *l, const weft__ctx *ctx, ucontext_t *uc)
{
    const char *sp = ctx->sp;
    memset(uc, 0, sizeof *uc);
    for (int i = 0; i < l->nregs; i++)
        UC_REG(uc, l->regs[i].reg) = *(const uint64_t *)(sp + l->regs[i].off);
    UC_SP(uc) = (uint64_t)(uintptr_t)(sp + l->size);
    UC_PC(uc) = *(const uint64_t *)(sp + l->pc);
}
#endif

int weft__unwind_ctx(const weft__ctx *ctx, void **pcs, int max)
{
#ifdef NO_LAYOUTS
    (void)ctx; (void)pcs; (void)max;
    return -ENOTSUP;
#else
    const struct layout *l = layout();
    if (!l)
        return -ENOTSUP;
    /* No saved frame yet: a fresh context (fcontext tags it in the low bit)
     * has not run, so it has no frames to show. */
    if (!ctx->sp || ((uintptr_t)ctx->sp & 1) || max <= 0)
        return 0;
    ucontext_t uc;
    unw_cursor_t c;
    ctx_to_ucontext(l, ctx, &uc);
    /* Not a signal frame: the pc is a return address. */
    if (unw_init_local(&c, (unw_context_t *)&uc) < 0)
        return -EINVAL;
    return collect(&c, pcs, max, 0);
#endif
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

/* ------------------------------------------- symbols without allocating */

#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_OBJS 128

struct obj {
    uintptr_t lo, hi;          /* executable segments, as loaded */
    uintptr_t bias;            /* load address - link address */
    const ElfW(Sym) *syms;
    size_t nsyms;
    const char *strs;
    size_t strs_len;
    void *map;
    size_t map_len;
    char name[64];
};

static struct obj objs[MAX_OBJS];
static int nobjs;

/* Map path and find its symbol table (.symtab, else .dynsym). */
static void load_symbols(struct obj *o, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat st;
    if (fstat(fd, &st) < 0 || (size_t)st.st_size < sizeof(ElfW(Ehdr))) {
        close(fd);
        return;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return;
    size_t len = (size_t)st.st_size;
    const char *base = map;
    const ElfW(Ehdr) *eh = map;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_shoff == 0 ||
        eh->e_shentsize != sizeof(ElfW(Shdr)) ||
        eh->e_shoff + (size_t)eh->e_shnum * sizeof(ElfW(Shdr)) > len) {
        munmap(map, len);
        return;
    }
    const ElfW(Shdr) *sh = (const ElfW(Shdr) *)(base + eh->e_shoff);
    const ElfW(Shdr) *best = NULL;
    for (unsigned i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type == SHT_SYMTAB)
            best = &sh[i];
        else if (sh[i].sh_type == SHT_DYNSYM && !best)
            best = &sh[i];
    }
    if (!best || best->sh_link >= eh->e_shnum || best->sh_offset + best->sh_size > len ||
        sh[best->sh_link].sh_offset + sh[best->sh_link].sh_size > len) {
        munmap(map, len);
        return;
    }
    o->syms = (const ElfW(Sym) *)(base + best->sh_offset);
    o->nsyms = best->sh_size / sizeof(ElfW(Sym));
    o->strs = base + sh[best->sh_link].sh_offset;
    o->strs_len = sh[best->sh_link].sh_size;
    o->map = map;
    o->map_len = len;
}

static int add_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    (void)arg;
    if (nobjs == MAX_OBJS)
        return 1;
    struct obj *o = &objs[nobjs];
    memset(o, 0, sizeof *o);
    o->lo = UINTPTR_MAX;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (lo < o->lo)
            o->lo = lo;
        if (hi > o->hi)
            o->hi = hi;
    }
    if (o->lo >= o->hi)
        return 0;
    o->bias = info->dlpi_addr;
    const char *path = info->dlpi_name && *info->dlpi_name ? info->dlpi_name : "/proc/self/exe";
    char exe[256];
    const char *shown = path;
    if (path[0] != '/' && strcmp(path, "/proc/self/exe") != 0) {
        shown = path;   /* the vDSO: no file behind it */
    } else {
        if (!strcmp(path, "/proc/self/exe")) {
            ssize_t n = readlink(path, exe, sizeof exe - 1);
            exe[n > 0 ? n : 0] = 0;
            shown = n > 0 ? exe : "exe";
        }
        load_symbols(o, path);
    }
    const char *slash = strrchr(shown, '/');
    const char *b = slash ? slash + 1 : shown;
    size_t k = 0;
    for (; b[k] && k + 1 < sizeof o->name; k++)
        o->name[k] = b[k];
    o->name[k] = 0;
    nobjs++;
    return 0;
}

void weft__unwind_prepare(void)
{
    /* libunwind sets up its globals (its signal mask, locks and caches) on
     * first use, unseen by TSan (the library is not instrumented). Do that
     * here, before the runtime starts its dump and watchdog threads: their
     * creation orders it before any walk of theirs, and a fiber's first
     * backtrace no longer races the dump thread's first one. */
    unw_context_t uc;
    unw_cursor_t c;
    unw_getcontext(&uc);
    (void)unw_init_local(&c, &uc);
    if (nobjs)
        return;
    dl_iterate_phdr(add_object, NULL);
}

void weft__unwind_release(void)
{
    for (int i = 0; i < nobjs; i++)
        if (objs[i].map)
            munmap(objs[i].map, objs[i].map_len);
    nobjs = 0;
}

int weft__unwind_symbol_safe(const void *pc, char *buf, size_t len, uintptr_t *off,
                             const char **obj, uintptr_t *obj_off)
{
    uintptr_t a = (uintptr_t)pc;
    if (len)
        buf[0] = 0;
    for (int i = 0; i < nobjs; i++) {
        const struct obj *o = &objs[i];
        if (a < o->lo || a >= o->hi)
            continue;
        *obj = o->name;
        *obj_off = a - o->bias;
        uintptr_t rel = a - o->bias;
        for (size_t k = 0; k < o->nsyms; k++) {
            const ElfW(Sym) *s = &o->syms[k];
            if (ELF64_ST_TYPE(s->st_info) != STT_FUNC || s->st_size == 0 ||
                rel < s->st_value || rel >= s->st_value + s->st_size ||
                s->st_name >= o->strs_len)
                continue;
            const char *n = o->strs + s->st_name;
            size_t j = 0;
            while (n[j] && j + 1 < len && s->st_name + j < o->strs_len) {
                buf[j] = n[j];
                j++;
            }
            if (len)
                buf[j] = 0;
            *off = rel - s->st_value;
            return 0;
        }
        return 0;
    }
    return -ENOENT;
}
