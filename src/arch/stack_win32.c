/*
 * Guarded fiber stacks on Windows.
 *
 * The contract is stack.c's (arch.h): a stack of at least the requested
 * size with a guard region below it, its record in its top bytes, pools
 * of stacks per size class, freed stacks cached for reuse, everything
 * released when the runtime ends. What differs is how Windows protects and
 * grows a stack, and we lay out each fiber stack the way Windows lays out a
 * thread's, so that the system's own machinery works on it unchanged:
 *
 *   base = TIB DeallocationStack                              TIB StackBase
 *   | hard page | PAGE_GUARD pages ............... | committed RW ...... top |
 *   ^ reserved, never committed                    ^ lo = TIB StackLimit
 *   |<------------ WEFT_STACK_GUARD_WIN32 -------->|<------- usable ------->|
 *
 * When code runs off the bottom of the usable part it touches a PAGE_GUARD
 * page. Because the switch (switch_x86_64_ms_pe_gas.S) keeps the TIB's
 * stack fields pointing at the running fiber's stack, the memory manager
 * treats that exactly as it treats a thread stack: it lifts the guard from
 * that page, moves StackLimit down and lets the code go on, until the
 * guard would come within one page plus the thread's guaranteed bytes
 * (SetThreadStackGuarantee; at least two pages) of DeallocationStack. Then
 * it commits the guaranteed bytes and raises EXCEPTION_STACK_OVERFLOW,
 * which crash_win32.c reports (fiber id, name, size) with the guaranteed
 * bytes as its stack. Past those, the hard page faults with nowhere left to
 * report from and the process dies; it was dying anyway.
 *
 * Every page of the guard region but the hard one carries PAGE_GUARD, not
 * just the top one as on a thread stack: code built without stack probes
 * (some system DLLs) can put a frame of several pages below the stack
 * pointer and write its far end first, skipping a single guard page. A
 * fault on reserved memory there would be an access violation that Wine
 * cannot even dispatch (the exception records go below the stack pointer,
 * into the same hole). With the whole region guarded, any first touch is
 * the memory manager's business. The cost is commit charge for the guard
 * region, not memory: guard pages are never touched unless overflowed.
 *
 * The usable part is committed when a stack is carved, and StackLimit set to
 * its bottom. Growing usable stacks on demand from the top, as Windows does
 * for threads, would commit less, but a stack reused by another fiber would
 * then start with a StackLimit that no longer matches what is committed:
 * too high and the exception dispatcher rejects frames below it, too low
 * and MSVC's __chkstk skips the probes that move the guard page. Windows
 * charges committed memory against the page file, not RAM: an untouched
 * page costs no physical memory, only commit charge.
 *
 * Windows reserves address space in 64 KiB units, so stacks are carved from
 * 64 MiB slabs (one VirtualAlloc reservation each), as stack.c does on Linux.
 *
 * Under Wine every guard region is a separate mapping of the host, two per
 * stack, and Linux caps a process at vm.max_map_count mappings (65530 by
 * default). Past that even changing a page's protection fails, so, as
 * stack.c does with mprotect guards, we keep a budget: three quarters of the
 * host's limit, two mappings per guarded stack. Beyond it (or if the system
 * refuses a guard anyway) stacks fall back to stack.c's canary mode, said
 * once on stderr: the whole stride committed read-write (neighbouring stacks
 * merge into one mapping), and a pattern below lo that the scheduler checks
 * at every switch away. Overflow is detected then, not prevented. Windows
 * itself has no such limit.
 */
#include "stack_pool.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <winsock2.h>   /* before windows.h, as everywhere in weft */
#include <windows.h>

#define GUARD_LEN WEFT_STACK_GUARD_WIN32
#define SLAB_BYTES ((size_t)64 << 20)     /* address space reserved per slab */
#define HOT_FREE 1024                     /* freed stacks kept resident per pool (see trim) */
#define CANARY_LEN 256                    /* bytes of pattern below lo in canary mode */

static SRWLOCK lock = SRWLOCK_INIT;
static struct weft__stack_pool *pools;
static size_t page;
/* WEFT_GUARD_WIN32, or WEFT_GUARD_CANARY until the stacks are released.
 * Written under the lock, read without it (weft__stack_guard_mode/name):
 * atomic, relaxed, as in stack.c. */
static _Atomic int mode = WEFT_GUARD_WIN32;
static long guard_budget = -1;        /* guarded stacks we may still carve; -1: not known yet */

/* Under Wine, the host's mapping limit bounds the guarded stacks. */
static long host_guard_budget(void)
{
    HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");
    if (!ntdll || !GetProcAddress(ntdll, "wine_get_version"))
        return LONG_MAX;   /* Windows */
    long max_maps = 65530;
    FILE *fp = fopen("Z:\\proc\\sys\\vm\\max_map_count", "r");
    if (fp) {
        if (fscanf(fp, "%ld", &max_maps) != 1)
            max_maps = 65530;
        fclose(fp);
    }
    return (max_maps - max_maps / 4) / 2;
}

size_t weft__page_size(void)
{
    if (!page) {
        SYSTEM_INFO si;
        GetSystemInfo(&si);
        page = si.dwPageSize;
    }
    return page;
}

int weft__stack_guard_mode(void) { return atomic_load_explicit(&mode, memory_order_relaxed); }

const char *weft__stack_guard_name(void)
{
    return weft__stack_guard_mode() == WEFT_GUARD_CANARY ? "canary" : "virtualalloc";
}

/* Only the top of the canary zone is checked on the hot path: an overflow
 * writes it first. Guarded stacks (s->guard set) never get here. */
int weft__stack_check_canary(const weft__stack *s)
{
    return weft__stack_canary_intact(s) ? 0 : -1;
}

/* The usable part read-write, the guard region below it guard pages but
 * its lowest page, which stays reserved: see the picture above. */
static bool carve_guarded(char *g, size_t usable)
{
    char *lo = g + GUARD_LEN;
    if (VirtualAlloc(lo, usable, MEM_COMMIT, PAGE_READWRITE) &&
        VirtualAlloc(g + page, GUARD_LEN - page, MEM_COMMIT, PAGE_READWRITE | PAGE_GUARD))
        return true;
    VirtualFree(g + page, GUARD_LEN - page + usable, MEM_DECOMMIT);
    return false;
}

static bool carve_canary(char *g, size_t usable)
{
    if (!VirtualAlloc(g, GUARD_LEN + usable, MEM_COMMIT, PAGE_READWRITE))
        return false;
    weft__stack_fill_canary(g + GUARD_LEN - CANARY_LEN, CANARY_LEN);
    return true;
}

static int grow(struct weft__stack_pool *p)
{
    size_t len = SLAB_BYTES / p->stride * p->stride;
    if (len < p->stride)
        len = p->stride;
    struct slab *sl = malloc(sizeof *sl);
    if (!sl)
        return -ENOMEM;
    char *base = VirtualAlloc(NULL, len, MEM_RESERVE, PAGE_NOACCESS);
    if (!base) {
        free(sl);
        return -ENOMEM;
    }
    sl->base = base;
    sl->len = len;
    sl->next = p->slabs;
    p->slabs = sl;
    p->carve = base;
    p->carve_end = base + len;
    return 0;
}

int weft__stack_alloc(size_t size, weft__stack **out)
{
    if (size < WEFT_STACK_MIN || size > WEFT_STACK_MAX)
        return -EINVAL;
    size_t usable = weft__stack_class(size);
    AcquireSRWLockExclusive(&lock);
    struct weft__stack_pool *p = weft__stack_pool_for(&pools, usable, GUARD_LEN);
    int err = -ENOMEM;
    if (!p)
        goto fail;
    weft__stack *s = weft__stack_pool_take(p);
    if (s) {
        ReleaseSRWLockExclusive(&lock);
        s->next = NULL;
        *out = s;
        return 0;
    }
    if (p->carve == p->carve_end && (err = grow(p)) < 0)
        goto fail;
    char *g = p->carve;
    char *lo = g + GUARD_LEN;
    if (guard_budget < 0) {
        guard_budget = host_guard_budget();
        const char *env = getenv("WEFT_STACK_GUARD");
        if (env && !strcmp(env, "canary")) {   /* as on Linux: for tests */
            mode = WEFT_GUARD_CANARY;
            fprintf(stderr, "weft: stack guards: canary (forced by WEFT_STACK_GUARD)\n");
        }
    }
    bool guarded = mode == WEFT_GUARD_WIN32 && guard_budget > 0 && carve_guarded(g, usable);
    if (guarded) {
        guard_budget--;
    } else if (mode == WEFT_GUARD_WIN32) {
        mode = WEFT_GUARD_CANARY;
        fprintf(stderr, "weft: stack guards: canary (%s)\n", guard_budget > 0 ?
                "the system refused a guard page" : "the host's mapping budget is spent");
    }
    if (!guarded && !carve_canary(g, usable)) {
        err = -ENOMEM;
        goto fail;
    }
    p->carve += p->stride;
    /* The record lives in the top bytes of the stack it describes. */
    s = weft__stack_at(p, g);
    s->lo = lo;
    s->hi = (char *)s;
    s->guard = guarded ? g : NULL;
    s->guard_len = GUARD_LEN;
    s->size = usable;
    s->vg_id = 0;
    s->pool = p;
    s->next = NULL;
    ReleaseSRWLockExclusive(&lock);
    *out = s;
    return 0;
fail:
    ReleaseSRWLockExclusive(&lock);
    return err;
}

/* Freeing only caches: giving memory back costs a system call now and a
 * page fault at the next reuse, so it is left to weft__stack_trim, which
 * idle workers call. */
void weft__stack_free_many(weft__stack *const *s, unsigned n)
{
    AcquireSRWLockExclusive(&lock);
    for (unsigned i = 0; i < n; i++)
        weft__stack_pool_put(s[i]->pool, s[i]);
    ReleaseSRWLockExclusive(&lock);
}

void weft__stack_free(weft__stack *s)
{
    weft__stack_free_many(&s, 1);
}

/* One: each new stack here is carved and guarded alone, so taking more
 * than asked for would carve stacks nobody may need. */
int weft__stack_alloc_many(size_t size, weft__stack **out, unsigned max)
{
    if (max == 0)
        return -EINVAL;
    int err = weft__stack_alloc(size, out);
    return err < 0 ? err : 1;
}

/* Give back the memory of cached stacks beyond HOT_FREE per pool, at most
 * max of them: all but the top page, which holds the stack's record, so
 * the stack stays reusable. MEM_RESET is Windows' MADV_FREE: the pages stay
 * committed (and the guard pages below stay guards), but the system may
 * take them without writing them to the page file; a fresh stack may hold
 * anything. Returns how many stacks are still over the limit. */
size_t weft__stack_trim(size_t max)
{
    size_t done = 0, left = 0;
    AcquireSRWLockExclusive(&lock);
    for (struct weft__stack_pool *p = pools; p; p = p->next) {
        while (p->nfree > HOT_FREE && done < max) {
            weft__stack *s = weft__stack_pool_take_oldest(p);
            ReleaseSRWLockExclusive(&lock);
            char *keep = (char *)((uintptr_t)s & ~(uintptr_t)(page - 1));
            if (keep > s->lo)
                VirtualAlloc(s->lo, (size_t)(keep - s->lo), MEM_RESET, PAGE_READWRITE);
            AcquireSRWLockExclusive(&lock);
            s->next = p->cold;
            p->cold = s;
            p->ncold++;
            done++;
        }
        if (p->nfree > HOT_FREE)
            left += p->nfree - HOT_FREE;
    }
    ReleaseSRWLockExclusive(&lock);
    return left;
}

/* As in stack.c: the lock only for the picture, fn without it, and
 * weft__stack_release_all waits for the walks in progress. */
static int walkers;
static CONDITION_VARIABLE walkers_gone = CONDITION_VARIABLE_INIT;

void weft__stack_each(void (*fn)(weft__stack *s, void *arg), void *arg)
{
    struct weft__stack_snap snap;
    AcquireSRWLockExclusive(&lock);
    if (weft__stack_snap_take(pools, &snap) < 0) {
        weft__stack_pools_each(pools, fn, arg);   /* no memory: the old way */
        ReleaseSRWLockExclusive(&lock);
        return;
    }
    walkers++;
    ReleaseSRWLockExclusive(&lock);
    weft__stack_snap_each(&snap, fn, arg);
    AcquireSRWLockExclusive(&lock);
    if (--walkers == 0)
        WakeAllConditionVariable(&walkers_gone);
    ReleaseSRWLockExclusive(&lock);
    weft__stack_snap_free(&snap);
}

void weft__stack_release_all(void)
{
    AcquireSRWLockExclusive(&lock);
    while (walkers)
        SleepConditionVariableSRW(&walkers_gone, &lock, INFINITE, 0);
    while (pools) {
        struct weft__stack_pool *p = pools;
        pools = p->next;
        while (p->slabs) {
            struct slab *sl = p->slabs;
            p->slabs = sl->next;
            VirtualFree(sl->base, 0, MEM_RELEASE);
            free(sl);
        }
        weft__stack_pool_destroy(p);
    }
    mode = WEFT_GUARD_WIN32;   /* every mapping is gone: start afresh */
    guard_budget = -1;
    ReleaseSRWLockExclusive(&lock);
}
