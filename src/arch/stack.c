/*
 * Guarded fiber stacks.
 *
 * Every fiber runs on its own stack with a guard region below it, so that a
 * stack overflow faults at once instead of silently overwriting whatever
 * memory lies below (usually another fiber's stack or the heap).
 *
 * The classic guard is a PROT_NONE page made with mprotect(). It costs two
 * VMAs per stack (the guard splits the mapping), and Linux caps a process at
 * vm.max_map_count mappings, 65530 by default: about 32k guarded stacks, far
 * short of a million fibers. Linux 6.13 added madvise(MADV_GUARD_INSTALL),
 * which marks pages inside an existing mapping as guards by installing
 * markers in the page tables: no VMA split, no extra mapping. So stacks are
 * carved from large slabs, each stack with a guard region at its low end:
 *
 *   slab:  | guard | stack 0 ...... top | guard | stack 1 ...... top | ...
 *            ^ faults on touch                    (grows down, toward its guard)
 *
 * Mode selection, once per process (env WEFT_STACK_GUARD forces one):
 *   madvise  - MADV_GUARD_INSTALL works: the normal case;
 *   mprotect - older kernel: PROT_NONE guards, while the max_map_count budget
 *              lasts (we keep a reserve for the rest of the process);
 *   canary   - budget exhausted or forced: the guard region is filled with a
 *              pattern that is checked when the fiber switches out and when
 *              its stack is freed. Overflow is detected, not prevented.
 * Leaving madvise mode is said once on stderr.
 *
 * Slabs are reserved with MAP_NORESERVE: only the pages a fiber touches
 * become resident, so a 256 KiB stack that uses 4 KiB costs 4 KiB of RAM.
 */
#define _GNU_SOURCE
#include "stack_pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define VALGRIND_STACK_REGISTER(lo, hi) 0u
#define RUNNING_ON_VALGRIND 0
#define VALGRIND_STACK_DEREGISTER(id) ((void)(id))
#define VALGRIND_DISABLE_ERROR_REPORTING ((void)0)
#define VALGRIND_ENABLE_ERROR_REPORTING ((void)0)
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define GUARD_LEN ((size_t)16 << 10)      /* 4 pages: catches frames up to 16 KiB */
#define SLAB_BYTES ((size_t)64 << 20)     /* address space reserved per slab */
#define HOT_FREE 1024                     /* freed stacks kept resident per pool (see trim) */
#define CARVE_BATCH 32                    /* stacks prepared per trip to the kernel */
#define PIDFD_SELF_ (-10000)              /* PIDFD_SELF: "this process" for pidfd calls */

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct weft__stack_pool *pools;
/* enum weft__guard_mode, 0 = not chosen yet. Written under the lock, read
 * without it too (weft__stack_guard_name, the canary check at every switch
 * away): atomic, relaxed, since a reader needs the value only, never what
 * was written before it (each stack records its own guard). */
static _Atomic int mode;
static size_t page;
static long map_budget;            /* mprotect mode: guards we may still install */

size_t weft__page_size(void)
{
    if (!page)
        page = (size_t)sysconf(_SC_PAGESIZE);
    return page;
}

static void say_mode(const char *why)
{
    static int said;
    if (said++)
        return;
    fprintf(stderr, "weft: stack guards: %s (%s)\n", weft__stack_guard_name(), why);
}

/* Does touching p fault? Success of madvise is not proof: an emulator
 * (qemu-user 7.2) answers 0 to advice it does not know and installs
 * nothing. A write(2) from p makes the kernel read it for us: a guard
 * makes that EFAULT, where a plain page would be copied. */
static bool guard_faults(const char *p)
{
    int fd[2];
    if (pipe(fd) < 0)
        return false;
    bool faults = write(fd[1], p, 1) < 0 && errno == EFAULT;
    close(fd[0]);
    close(fd[1]);
    return faults;
}

/* Probe once: can this kernel install guards inside a mapping? */
static void choose_mode(void)
{
    weft__page_size();
    const char *env = getenv("WEFT_STACK_GUARD");
    long max_maps = 65530;
    FILE *fp = fopen("/proc/sys/vm/max_map_count", "r");
    if (fp) {
        if (fscanf(fp, "%ld", &max_maps) != 1)
            max_maps = 65530;
        fclose(fp);
    }
    /* Each mprotect guard costs up to 2 mappings; keep a quarter of the
     * limit for the rest of the process (malloc arenas, libraries, files). */
    map_budget = (max_maps - max_maps / 4) / 2;

    if (env && !strcmp(env, "canary")) {
        mode = WEFT_GUARD_CANARY;
        say_mode("forced by WEFT_STACK_GUARD");
        return;
    }
    if (env && !strcmp(env, "mprotect")) {
        mode = WEFT_GUARD_MPROTECT;
        say_mode("forced by WEFT_STACK_GUARD");
        return;
    }
    char *p = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) {
        if (madvise(p, page, MADV_GUARD_INSTALL) == 0 && guard_faults(p))
            mode = WEFT_GUARD_MADVISE;
        munmap(p, 2 * page);
    }
    if (!mode) {
        mode = WEFT_GUARD_MPROTECT;
        say_mode("MADV_GUARD_INSTALL does not take effect here");
    }
}

int weft__stack_guard_mode(void)
{
    pthread_mutex_lock(&lock);
    if (!mode)
        choose_mode();
    int m = mode;
    pthread_mutex_unlock(&lock);
    return m;
}

const char *weft__stack_guard_name(void)
{
    switch (atomic_load_explicit(&mode, memory_order_relaxed)) {
    case WEFT_GUARD_MADVISE: return "madvise";
    case WEFT_GUARD_MPROTECT: return "mprotect";
    case WEFT_GUARD_CANARY: return "canary";
    }
    return "none";
}

int weft__stack_check_canary(const weft__stack *s)
{
    if (atomic_load_explicit(&mode, memory_order_relaxed) != WEFT_GUARD_CANARY)
        return 0;
    return weft__stack_canary_intact(s) ? 0 : -1;
}

/* Install the protection of one stack's guard region at g. Called with the
 * lock held. May downgrade mprotect mode to canary when the budget is gone. */
static int protect(char *g, size_t len, int *guarded)
{
    *guarded = 0;
    if (mode == WEFT_GUARD_MADVISE) {
        if (madvise(g, len, MADV_GUARD_INSTALL) == 0) {
            *guarded = 1;
            return 0;
        }
        return -errno;
    }
    if (mode == WEFT_GUARD_MPROTECT) {
        if (map_budget > 0 && mprotect(g, len, PROT_NONE) == 0) {
            map_budget--;
            *guarded = 1;
            return 0;
        }
        mode = WEFT_GUARD_CANARY;
        say_mode("vm.max_map_count budget exhausted");
    }
    weft__stack_fill_canary(g, len);
    return 0;
}

static int grow(struct weft__stack_pool *p)
{
    size_t len = SLAB_BYTES / p->stride * p->stride;
    if (len < p->stride)
        len = p->stride;
    struct slab *sl = malloc(sizeof *sl);
    if (!sl)
        return -ENOMEM;
    char *base = mmap(NULL, len, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
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

/* Install the guards of n stacks at once. process_madvise() on our own
 * process (PIDFD_SELF, Linux 6.13+) takes a vector of ranges: one system
 * call for the whole batch instead of one per stack (~0.5 us instead of
 * ~0.9 us a stack, measured here). 0 on success, -1 to fall back. */
static int guard_batch(char *first, size_t stride, size_t n)
{
#if defined(SYS_process_madvise)
    if (RUNNING_ON_VALGRIND)   /* valgrind 3.19 does not know the call */
        return -1;
    struct iovec iov[CARVE_BATCH];
    for (size_t i = 0; i < n; i++) {
        iov[i].iov_base = first + i * stride;
        iov[i].iov_len = GUARD_LEN;
    }
    long r = syscall(SYS_process_madvise, PIDFD_SELF_, iov, n, MADV_GUARD_INSTALL, 0);
    return r == (long)(n * GUARD_LEN) ? 0 : -1;
#else
    (void)first; (void)stride; (void)n;
    return -1;
#endif
}

/* Carve up to CARVE_BATCH new stacks from the newest slab onto the free
 * list. Called with the lock held and room in the slab. */
static int carve_batch(struct weft__stack_pool *p)
{
    size_t n = (size_t)(p->carve_end - p->carve) / p->stride;
    if (n > CARVE_BATCH)
        n = CARVE_BATCH;
    char *first = p->carve;
    bool batched = mode == WEFT_GUARD_MADVISE && n > 1 && guard_batch(first, p->stride, n) == 0;
    for (size_t i = 0; i < n; i++) {
        char *g = first + i * p->stride;
        int guarded = batched;
        if (!batched) {
            int err = protect(g, GUARD_LEN, &guarded);
            if (err < 0) {
                if (i == 0)
                    return err;
                n = i;
                break;
            }
        }
        /* The record lives in the top bytes of the stack it describes. */
        weft__stack *s = weft__stack_at(p, g);
        s->lo = g + GUARD_LEN;
        s->hi = (char *)s;
        s->guard = guarded ? g : NULL;
        s->guard_len = GUARD_LEN;
        s->size = p->usable;
        s->pool = p;
        /* valgrind must know where each stack is, or it takes a switch for
         * a huge stack frame and complains about every access. */
        s->vg_id = VALGRIND_STACK_REGISTER(s->lo, s->hi);
        weft__stack_pool_put(p, s);
    }
    p->carve = first + n * p->stride;
    return 0;
}

int weft__stack_alloc_many(size_t size, weft__stack **out, unsigned max)
{
    if (size < WEFT_STACK_MIN || size > WEFT_STACK_MAX || max == 0)
        return -EINVAL;
    pthread_mutex_lock(&lock);
    if (!mode)
        choose_mode();
    size_t usable = (size + page - 1) & ~(page - 1);
    struct weft__stack_pool *p = weft__stack_pool_for(&pools, usable, GUARD_LEN);
    int err = -ENOMEM;
    if (!p)
        goto fail;
    if (!p->nfree && !p->cold) {
        if (p->carve == p->carve_end && (err = grow(p)) < 0)
            goto fail;
        if ((err = carve_batch(p)) < 0)
            goto fail;
    }
    unsigned n = 0;
    weft__stack *s;
    while (n < max && (s = weft__stack_pool_take(p)))
        out[n++] = s;   /* a pointer copy: the stack itself is not touched */
    pthread_mutex_unlock(&lock);
    return (int)n;
fail:
    pthread_mutex_unlock(&lock);
    return err;
}

int weft__stack_alloc(size_t size, weft__stack **out)
{
    int n = weft__stack_alloc_many(size, out, 1);
    return n < 0 ? n : 0;
}

/* Freeing only caches: giving memory back costs a system call now and a
 * page fault at the next reuse, so it is left to weft__stack_trim, which
 * idle workers call. */
void weft__stack_free_many(weft__stack *const *s, unsigned n)
{
    pthread_mutex_lock(&lock);
    for (unsigned i = 0; i < n; i++)
        weft__stack_pool_put(s[i]->pool, s[i]);
    pthread_mutex_unlock(&lock);
}

void weft__stack_free(weft__stack *s)
{
    weft__stack_free_many(&s, 1);
}

/* Give back the memory of cached stacks beyond HOT_FREE per pool, at most
 * max of them: all but the top page, which holds the stack's record, so
 * the stack stays reusable. Guards installed with madvise survive
 * MADV_DONTNEED. Returns how many stacks are still over the limit. */
size_t weft__stack_trim(size_t max)
{
    enum { BATCH = CARVE_BATCH };
    size_t done = 0, left = 0;
    pthread_mutex_lock(&lock);
    for (struct weft__stack_pool *p = pools; p; p = p->next) {
        while (p->nfree > HOT_FREE && done < max) {
            weft__stack *batch[BATCH];
            size_t n = 0;
            while (n < BATCH && p->nfree > HOT_FREE && done + n < max)
                batch[n++] = weft__stack_pool_take_oldest(p);
            pthread_mutex_unlock(&lock);
            struct iovec iov[BATCH];
            for (size_t i = 0; i < n; i++) {
                char *keep = (char *)((uintptr_t)batch[i] & ~(uintptr_t)(page - 1));
                iov[i].iov_base = batch[i]->lo;
                iov[i].iov_len = (size_t)(keep - batch[i]->lo);
            }
            long r = -1;
#if defined(SYS_process_madvise)
            if (!RUNNING_ON_VALGRIND)
                r = syscall(SYS_process_madvise, PIDFD_SELF_, iov, n, MADV_DONTNEED, 0);
#endif
            if (r < 0)
                for (size_t i = 0; i < n; i++)
                    madvise(iov[i].iov_base, iov[i].iov_len, MADV_DONTNEED);
            pthread_mutex_lock(&lock);
            for (size_t i = 0; i < n; i++) {
                batch[i]->next = p->cold;
                p->cold = batch[i];
                p->ncold++;
            }
            done += n;
        }
        if (p->nfree > HOT_FREE)
            left += p->nfree - HOT_FREE;
    }
    pthread_mutex_unlock(&lock);
    return left;
}

/* The lock is held only to take the picture of where the stacks lie: fn
 * (the dump's walk, which unwinds and formats) runs without it, so that
 * allocation, freeing and idle workers' trims never wait for it. Slabs
 * are only ever added while a runtime runs; walkers counts the walks in
 * progress, and weft__stack_release_all waits for them before it unmaps. */
static int walkers;
static pthread_cond_t walkers_gone = PTHREAD_COND_INITIALIZER;

void weft__stack_each(void (*fn)(weft__stack *s, void *arg), void *arg)
{
    struct weft__stack_snap snap;
    pthread_mutex_lock(&lock);
    if (weft__stack_snap_take(pools, &snap) < 0) {
        weft__stack_pools_each(pools, fn, arg);   /* no memory: the old way */
        pthread_mutex_unlock(&lock);
        return;
    }
    walkers++;
    pthread_mutex_unlock(&lock);
    weft__stack_snap_each(&snap, fn, arg);
    pthread_mutex_lock(&lock);
    if (--walkers == 0)
        pthread_cond_broadcast(&walkers_gone);
    pthread_mutex_unlock(&lock);
    weft__stack_snap_free(&snap);
}

void weft__stack_atfork_child(void)
{
    pthread_mutex_init(&lock, NULL);
    pools = NULL;   /* left mapped: leaked in the child, as fork made it */
}

void weft__stack_release_all(void)
{
    pthread_mutex_lock(&lock);
    while (walkers)
        pthread_cond_wait(&walkers_gone, &lock);
    while (pools) {
        struct weft__stack_pool *p = pools;
        pools = p->next;
        bool newest = true;
        while (p->slabs) {
            struct slab *sl = p->slabs;
            p->slabs = sl->next;
            /* Stacks were carved from the bottom of each slab; only the
             * newest slab may be partly carved. */
            char *end = newest ? p->carve : sl->base + sl->len;
            size_t carved = 0;
            for (char *g = sl->base; g + p->stride <= end; g += p->stride, carved++) {
                weft__stack *st = weft__stack_at(p, g);
                VALGRIND_STACK_DEREGISTER(st->vg_id);
            }
            if (mode != WEFT_GUARD_MADVISE)
                map_budget += (long)carved;   /* mprotect guards given back */
            newest = false;
            munmap(sl->base, sl->len);
            free(sl);
        }
        weft__stack_pool_destroy(p);
    }
    pthread_mutex_unlock(&lock);
}
