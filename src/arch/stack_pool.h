/*
 * Private to the stack allocators (stack.c on Linux, stack_win32.c on
 * Windows): the bookkeeping they share. Each system carves, protects and
 * gives memory back its own way; the pools, the slabs they are carved from,
 * where a stack's record sits and the canary pattern are the same.
 */
#ifndef WEFT_STACK_POOL_H
#define WEFT_STACK_POOL_H

#include "arch.h"

#include <stdbool.h>

#define WEFT_STACK_CANARY 0x5a17c0de5a17c0deull

/* One reservation of address space that stacks are carved from. */
struct slab {
    struct slab *next;
    char *base;
    size_t len;
};

/* All stacks of one size. */
struct weft__stack_pool {
    struct weft__stack_pool *next;
    size_t usable;          /* usable bytes per stack (page multiple) */
    size_t stride;          /* guard + usable */
    /* Cached stacks, resident: a ring of pointers, oldest at the head, the
     * most recently freed at the tail. Pointers, not a list through the
     * stacks' records, so that moving a batch between the pool and a
     * worker's cache touches no stack: walking a list of stacks another
     * worker freed was a cache and TLB miss per stack. */
    weft__stack **ring;
    size_t ring_cap, ring_head, nfree;   /* ring_cap: 0 or a power of two */
    weft__stack *cold;      /* cached stacks whose memory was given back (trim); also
                               where a stack goes if the ring cannot grow */
    size_t ncold;
    struct slab *slabs;
    char *carve, *carve_end;   /* unused part of the newest slab */
};

/* stack_common.c; the callers hold their allocator's lock. */

/* The pool of stacks of usable bytes in *pools, made on first use. */
struct weft__stack_pool *weft__stack_pool_for(struct weft__stack_pool **pools, size_t usable,
                                              size_t guard_len);
/* A cached stack of p, the most recently freed resident one first; NULL if none. */
weft__stack *weft__stack_pool_take(struct weft__stack_pool *p);
/* Cache s in p (resident). */
void weft__stack_pool_put(struct weft__stack_pool *p, weft__stack *s);
/* The least recently freed resident stack of p (for trimming), or NULL. */
weft__stack *weft__stack_pool_take_oldest(struct weft__stack_pool *p);
/* Free p's own bookkeeping (its slabs are the caller's). */
void weft__stack_pool_destroy(struct weft__stack_pool *p);
/* The record of the stack carved at g (its guard region's start): the
 * top bytes of the stack, 64-byte aligned. */
static inline weft__stack *weft__stack_at(const struct weft__stack_pool *p, char *g)
{
    return (weft__stack *)((uintptr_t)(g + p->stride - sizeof(weft__stack)) & ~(uintptr_t)63);
}
/* fn on every stack carved from pools' slabs (the newest slab only up to
 * its carve point). */
void weft__stack_pools_each(struct weft__stack_pool *pools, void (*fn)(weft__stack *s, void *arg),
                            void *arg);
/* The same walk in two halves, so that the lock is held only for the
 * first: weft__stack_snap_take (lock held) notes where the carved stacks
 * lie — one span per slab, a few dozen for ten thousand stacks — and
 * weft__stack_snap_each (lock released) visits them. Stacks carved after
 * the picture are not visited. The caller keeps the spans' memory mapped
 * until the visit ends (its allocator counts walkers, and
 * weft__stack_release_all waits for them). Take returns -ENOMEM when the
 * picture cannot be allocated: the caller then walks under its lock. */
struct weft__stack_span { const struct weft__stack_pool *p; char *base, *end; };
struct weft__stack_snap { struct weft__stack_span *spans; size_t n; };
int  weft__stack_snap_take(struct weft__stack_pool *pools, struct weft__stack_snap *snap);
void weft__stack_snap_each(const struct weft__stack_snap *snap,
                           void (*fn)(weft__stack *s, void *arg), void *arg);
void weft__stack_snap_free(struct weft__stack_snap *snap);
void weft__stack_fill_canary(char *g, size_t len);
/* Is the top of the pattern below s->lo intact? An overflow writes it
 * first, so that is all the hot path checks. */
bool weft__stack_canary_intact(const weft__stack *s);

#endif
