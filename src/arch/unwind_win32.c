/*
 * Unwinding on Windows x64: the system's own unwinder, RtlVirtualUnwind,
 * over the .pdata/.xdata tables every x64 function has (the switch and the
 * trampoline carry theirs, see switch_x86_64_ms_pe_gas.S). A suspended
 * context is read from the switch frame (the layout in that file) into a
 * CONTEXT: what the switch saved, its return address as Rip, and the stack
 * pointer just above the frame. The walk ends at the zero return address
 * the trampoline leaves at the root of every fiber.
 *
 * Not written yet: signal-style walks (crash reports come from the
 * vectored handler, which names the fiber without frames) and symbols
 * (mingw's are DWARF, which the system's dbghelp does not read).
 */
#include "unwind.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <winsock2.h>
#include <windows.h>

/* The saved switch frame, as switch_x86_64_ms.c describes it. */
struct frame {
    uint64_t xmm[10][2];
    uint32_t mxcsr;
    uint16_t fpucw, pad0;
    uint64_t dealloc, limit, base, except;
    uint64_t r15, r14, r13, r12, rsi, rdi, rbx, rbp;
    uint64_t ret;
};

static int walk(CONTEXT *c, void **pcs, int max)
{
    int n = 0;
    while (n < max && c->Rip) {
        pcs[n++] = (void *)c->Rip;
        DWORD64 base = 0;
        PRUNTIME_FUNCTION fn = RtlLookupFunctionEntry(c->Rip, &base, NULL);
        if (!fn) {
            /* a leaf: the return address is at the top of the stack */
            c->Rip = *(DWORD64 *)c->Rsp;
            c->Rsp += 8;
            continue;
        }
        void *handler_data;
        DWORD64 frame;
        RtlVirtualUnwind(UNW_FLAG_NHANDLER, base, c->Rip, fn, c, &handler_data, &frame, NULL);
    }
    return n;
}

int weft__unwind_ctx(const weft__ctx *ctx, void **pcs, int max)
{
    if (max <= 0)
        return 0;
    const struct frame *fr = ctx->sp;
    CONTEXT c;
    memset(&c, 0, sizeof c);
    c.ContextFlags = CONTEXT_FULL;
    c.Rip = fr->ret;
    c.Rsp = (DWORD64)(uintptr_t)(fr + 1);
    c.Rbx = fr->rbx;
    c.Rbp = fr->rbp;
    c.Rdi = fr->rdi;
    c.Rsi = fr->rsi;
    c.R12 = fr->r12;
    c.R13 = fr->r13;
    c.R14 = fr->r14;
    c.R15 = fr->r15;
    return walk(&c, pcs, max);
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
    if (max <= 0)
        return 0;
    /* +1: this function */
    return RtlCaptureStackBackTrace((DWORD)skip + 1, (DWORD)(max > 62 ? 62 : max), pcs, NULL);
}

/* Symbols from the COFF symbol table mingw leaves in the image file (the
 * loaded image does not map it): read once per module and kept. Function
 * symbols only; the nearest one at or below pc names it. */
struct coff_fn { uintptr_t addr; const char *name; };
struct coff_mod { HMODULE mod; struct coff_fn *fns; size_t n; char *strings; struct coff_mod *next; };
static struct coff_mod *mods;
static SRWLOCK mods_lock = SRWLOCK_INIT;

static int by_addr(const void *a, const void *b)
{
    uintptr_t x = ((const struct coff_fn *)a)->addr, y = ((const struct coff_fn *)b)->addr;
    return x < y ? -1 : x > y;
}

static struct coff_mod *load_module(HMODULE m)
{
    struct coff_mod *cm = calloc(1, sizeof *cm);
    if (!cm)
        return NULL;
    cm->mod = m;
    char path[MAX_PATH];
    HANDLE h = INVALID_HANDLE_VALUE;
    if (GetModuleFileNameA(m, path, sizeof path))
        h = CreateFileA(path, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING, 0, NULL);
    LARGE_INTEGER size;
    char *file = NULL;
    DWORD got = 0;
    if (h != INVALID_HANDLE_VALUE && GetFileSizeEx(h, &size) && size.QuadPart < (1ll << 30) &&
        (file = malloc((size_t)size.QuadPart)) && ReadFile(h, file, (DWORD)size.QuadPart, &got, NULL) &&
        got == (DWORD)size.QuadPart) {
        const IMAGE_DOS_HEADER *dos = (const IMAGE_DOS_HEADER *)file;
        const IMAGE_NT_HEADERS *nt = (const IMAGE_NT_HEADERS *)(file + dos->e_lfanew);
        const IMAGE_SECTION_HEADER *sec = IMAGE_FIRST_SECTION(nt);
        DWORD symoff = nt->FileHeader.PointerToSymbolTable, nsym = nt->FileHeader.NumberOfSymbols;
        if (symoff && (uint64_t)symoff + (uint64_t)nsym * 18 + 4 <= got) {
            const unsigned char *syms = (const unsigned char *)file + symoff;
            const char *strtab = (const char *)syms + nsym * 18;
            uint32_t strsz;
            memcpy(&strsz, strtab, 4);
            cm->strings = malloc(strsz + 1);
            cm->fns = calloc(nsym, sizeof *cm->fns);
            if (cm->strings && cm->fns && (uint64_t)symoff + nsym * 18 + strsz <= got) {
                memcpy(cm->strings, strtab, strsz);
                cm->strings[strsz] = 0;
                for (DWORD i = 0; i < nsym; i++) {
                    const unsigned char *sy = syms + (size_t)i * 18;
                    int16_t secno;
                    uint16_t type;
                    uint32_t value;
                    memcpy(&value, sy + 8, 4);
                    memcpy(&secno, sy + 12, 2);
                    memcpy(&type, sy + 14, 2);
                    uint8_t naux = sy[17];
                    if (secno > 0 && secno <= nt->FileHeader.NumberOfSections && (type & 0x30) == 0x20) {
                        uint32_t zero, off;
                        memcpy(&zero, sy, 4);
                        memcpy(&off, sy + 4, 4);
                        const char *name;
                        if (zero == 0 && off < strsz) {
                            name = cm->strings + off;
                        } else {
                            char *n8 = malloc(9);   /* short names live in the record */
                            if (!n8)
                                continue;
                            memcpy(n8, sy, 8);
                            n8[8] = 0;
                            name = n8;
                        }
                        cm->fns[cm->n].addr = (uintptr_t)m + sec[secno - 1].VirtualAddress + value;
                        cm->fns[cm->n].name = name;
                        cm->n++;
                    }
                    i += naux;
                }
                qsort(cm->fns, cm->n, sizeof *cm->fns, by_addr);
            }
        }
    }
    free(file);
    if (h != INVALID_HANDLE_VALUE)
        CloseHandle(h);
    return cm;
}

int weft__unwind_symbol(const void *pc, char *buf, size_t len, uintptr_t *off)
{
    if (len)
        buf[0] = 0;
    HMODULE m;
    if (!GetModuleHandleExA(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_UNCHANGED_REFCOUNT,
                            (LPCSTR)pc, &m))
        return -ENOENT;
    AcquireSRWLockExclusive(&mods_lock);
    struct coff_mod *cm = mods;
    while (cm && cm->mod != m)
        cm = cm->next;
    if (!cm && (cm = load_module(m))) {
        cm->next = mods;
        mods = cm;
    }
    ReleaseSRWLockExclusive(&mods_lock);
    if (!cm || !cm->n)
        return -ENOENT;
    size_t lo = 0, hi = cm->n;   /* the last function at or below pc */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (cm->fns[mid].addr <= (uintptr_t)pc)
            lo = mid;
        else
            hi = mid;
    }
    if (cm->fns[lo].addr > (uintptr_t)pc)
        return -ENOENT;
    if (len)
        snprintf(buf, len, "%s", cm->fns[lo].name);
    if (off)
        *off = (uintptr_t)pc - cm->fns[lo].addr;
    return 0;
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
