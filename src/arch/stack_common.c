/*
 * What the stack allocators share on every system: stack.c (Linux) and
 * stack_win32.c (Windows) reserve, protect and give memory back; the pools
 * they keep, the walk over their slabs, the canary and the arithmetic on a
 * carved stack are here (stack_pool.h).
 */
#include "stack_pool.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#include <valgrind/memcheck.h>
#else
#define VALGRIND_DISABLE_ERROR_REPORTING ((void)0)
#define VALGRIND_ENABLE_ERROR_REPORTING ((void)0)
#define VALGRIND_MAKE_MEM_DEFINED(p, n) ((void)(p), (void)(n))
#endif

struct weft__stack_pool *weft__stack_pool_for(struct weft__stack_pool **pools, size_t usable,
                                              size_t guard_len)
{
    for (struct weft__stack_pool *p = *pools; p; p = p->next)
        if (p->usable == usable)
            return p;
    struct weft__stack_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->usable = usable;
    p->stride = usable + guard_len;
    p->next = *pools;
    *pools = p;
    return p;
}

weft__stack *weft__stack_pool_take(struct weft__stack_pool *p)
{
    weft__stack *s;
    if (p->nfree) {
        p->nfree--;
        s = p->ring[(p->ring_head + p->nfree) & (p->ring_cap - 1)];
    } else if ((s = p->cold)) {
        p->cold = s->next;
        p->ncold--;
    }
    return s;
}

weft__stack *weft__stack_pool_take_oldest(struct weft__stack_pool *p)
{
    if (!p->nfree)
        return NULL;
    weft__stack *s = p->ring[p->ring_head];
    p->ring_head = (p->ring_head + 1) & (p->ring_cap - 1);
    p->nfree--;
    return s;
}

void weft__stack_pool_put(struct weft__stack_pool *p, weft__stack *s)
{
    if (p->nfree == p->ring_cap) {
        size_t cap = p->ring_cap ? 2 * p->ring_cap : 256;   /* a power of two: indices are masked */
        weft__stack **r = malloc(cap * sizeof *r);
        if (!r) {
            /* no memory for the ring: keep it on the list, still usable */
            s->next = p->cold;
            p->cold = s;
            p->ncold++;
            return;
        }
        for (size_t i = 0; i < p->nfree; i++)
            r[i] = p->ring[(p->ring_head + i) & (p->ring_cap - 1)];
        free(p->ring);
        p->ring = r;
        p->ring_cap = cap;
        p->ring_head = 0;
    }
    p->ring[(p->ring_head + p->nfree) & (p->ring_cap - 1)] = s;
    p->nfree++;
}

void weft__stack_pool_destroy(struct weft__stack_pool *p)
{
    free(p->ring);
    free(p);
}

void weft__stack_pools_each(struct weft__stack_pool *pools, void (*fn)(weft__stack *s, void *arg),
                            void *arg)
{
    for (struct weft__stack_pool *p = pools; p; p = p->next) {
        bool newest = true;
        for (struct slab *sl = p->slabs; sl; sl = sl->next, newest = false) {
            char *end = newest ? p->carve : sl->base + sl->len;
            for (char *g = sl->base; g + p->stride <= end; g += p->stride)
                fn(weft__stack_at(p, g), arg);
        }
    }
}

int weft__stack_snap_take(struct weft__stack_pool *pools, struct weft__stack_snap *snap)
{
    size_t n = 0;
    for (struct weft__stack_pool *p = pools; p; p = p->next)
        for (struct slab *sl = p->slabs; sl; sl = sl->next)
            n++;
    snap->n = 0;
    snap->spans = n ? malloc(n * sizeof *snap->spans) : NULL;
    if (n && !snap->spans)
        return -ENOMEM;
    for (struct weft__stack_pool *p = pools; p; p = p->next) {
        bool newest = true;
        for (struct slab *sl = p->slabs; sl; sl = sl->next, newest = false)
            snap->spans[snap->n++] = (struct weft__stack_span){
                p, sl->base, newest ? p->carve : sl->base + sl->len };
    }
    return 0;
}

void weft__stack_snap_each(const struct weft__stack_snap *snap,
                           void (*fn)(weft__stack *s, void *arg), void *arg)
{
    for (size_t i = 0; i < snap->n; i++) {
        const struct weft__stack_span *sp = &snap->spans[i];
        for (char *g = sp->base; g + sp->p->stride <= sp->end; g += sp->p->stride)
            fn(weft__stack_at(sp->p, g), arg);
    }
}

void weft__stack_snap_free(struct weft__stack_snap *snap)
{
    free(snap->spans);
    *snap = (struct weft__stack_snap){ 0 };
}

void weft__stack_fill_canary(char *g, size_t len)
{
    uint64_t *w = (uint64_t *)g;
    for (size_t i = 0; i < len / 8; i++)
        w[i] = WEFT_STACK_CANARY;
}

bool weft__stack_canary_intact(const weft__stack *s)
{
    const uint64_t *w = (const uint64_t *)(s->lo - 64);
    int bad = 0;
    /* After an overflow valgrind counts the zone as dead stack below the
     * stack pointer: reading it here is the point, not a bug. */
    VALGRIND_DISABLE_ERROR_REPORTING;
    for (int i = 0; i < 8; i++)
        bad |= w[i] != WEFT_STACK_CANARY;
    VALGRIND_ENABLE_ERROR_REPORTING;
    return !bad;
}

size_t weft__stack_class(size_t size)
{
    size_t pg = weft__page_size();
    return (size + pg - 1) & ~(pg - 1);
}

int weft__stack_in_guard(const weft__stack *s, const void *addr)
{
    const char *a = addr;
    const char *g = s->lo - s->guard_len;
    return a >= g && a < s->lo;
}

size_t weft__stack_used(const weft__stack *s)
{
    /* Pages never touched read as zero (and map nothing when read): the
     * first non-zero word from the bottom marks the deepest use. */
    const uint64_t *w = (const uint64_t *)s->lo;
    const uint64_t *end = (const uint64_t *)s->hi;
    /* The scan reads stack the fiber has left, below its stack pointer,
     * which valgrind rightly flags in any other code. */
    VALGRIND_DISABLE_ERROR_REPORTING;
    while (w < end && *w == 0)
        w++;
    size_t used = (size_t)((const char *)end - (const char *)w);
    /* The answer derives from that memory too: tell memcheck it is a
     * real number, or every later use of it is reported instead. */
    VALGRIND_MAKE_MEM_DEFINED(&used, sizeof used);
    VALGRIND_ENABLE_ERROR_REPORTING;
    return used;
}
