/*
 * The per-worker spawn deque: where a freshly spawned fiber goes when it is
 * pushed out of the next slot by a younger sibling. Its owner pushes and
 * pops the young end (LIFO); thieves take from the old end (FIFO), one
 * fiber per CAS (steal_work repeats it for up to half). This is the
 * Chase-Lev deque (Chase and Lev 2005) with the C11 orderings proven
 * correct by Lê, Pop, Cohen and Zappa Nardelli ("Correct and Efficient
 * Work-Stealing for Weak Memory Models", PPoPP 2013), in its fixed-size
 * form: a full deque refuses the push and the caller puts the fiber on the
 * FIFO ring instead.
 *
 * WHY A SECOND QUEUE. The ring (runq.h) is FIFO, which is what woken fibers
 * need: the connection that has waited longest runs first. For spawned
 * fibers FIFO means breadth first. A tree of spawns (skynet: every node
 * spawns ten children, then waits for their sums) then keeps a whole level
 * of the tree alive at once, ~100,000 fibers, each on its own stack page,
 * and every resume is a cache and TLB miss. Running the youngest spawn
 * first walks the tree depth first: a few dozen fibers alive, their
 * stacks recycled hot from the worker's cache (measured on skynet, one
 * worker: 84,000 page faults and ~310 ms with FIFO, 336 and ~125 ms
 * LIFO). Thieves taking the *oldest* spawn get the biggest piece of work
 * there is (a whole subtree), so they come back rarely. That is the
 * classic work-stealing shape (Cilk, Rayon); woken fibers keep the ring.
 *
 * INDICES are 64-bit and only grow (no wrap, no ABA): top is advanced by
 * CAS by whoever takes the oldest fiber, a thief or the owner taking the
 * last one; bottom is written by the owner only. Slot = index % DEQUE_SIZE.
 *
 * THE ONE RACE is over the last fiber, between the owner popping it and a
 * thief stealing it. The owner publishes its claim (bottom - 1) and, after
 * a sequentially consistent fence, reads top; the thief reads top and,
 * after its own fence, bottom. The fences order each side's store before
 * its load, so they cannot both miss each other: if both think the item is
 * theirs (top == bottom - 1 for the owner, top < bottom for the thief),
 * both try the CAS on top and exactly one wins.
 *
 * Included by sched.c and by the test suite (test_runq.c).
 */
#ifndef WEFT_DEQUE_H
#define WEFT_DEQUE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DEQUE_SIZE 256

struct weft_fiber;

struct weft__deque {
    _Atomic int64_t top;            /* CAS by thieves: a line of its own */
    char pad0[56];
    _Atomic int64_t bottom;         /* owner only */
    char pad1[56];
    _Atomic(struct weft_fiber *) buf[DEQUE_SIZE];
};

/* Any thread: how many fibers it holds (a snapshot). */
static inline int64_t deque_len(struct weft__deque *q)
{
    int64_t t = atomic_load_explicit(&q->top, memory_order_acquire);
    int64_t b = atomic_load_explicit(&q->bottom, memory_order_acquire);
    return b > t ? b - t : 0;
}

/* Owner only. Push f at the young end; false if full. */
static inline bool deque_push(struct weft__deque *q, struct weft_fiber *f)
{
    int64_t b = atomic_load_explicit(&q->bottom, memory_order_relaxed);
    int64_t t = atomic_load_explicit(&q->top, memory_order_acquire);
    if (b - t >= DEQUE_SIZE)
        return false;
    atomic_store_explicit(&q->buf[b % DEQUE_SIZE], f, memory_order_relaxed);
    /* Release: a thief that sees the new bottom (acquire) sees the slot and
     * the fiber behind it. The paper's release fence before a relaxed store
     * is the same on x86 and AArch64; a release store is also what
     * ThreadSanitizer, which does not model fences, understands. */
    atomic_store_explicit(&q->bottom, b + 1, memory_order_release);
    return true;
}

/* Owner only. Take the youngest fiber, or NULL. */
static inline struct weft_fiber *deque_pop(struct weft__deque *q)
{
    int64_t b = atomic_load_explicit(&q->bottom, memory_order_relaxed);
    /* Empty as far as anyone can make it: only the owner adds. Checked
     * first so that an empty deque costs no fence. */
    if (b <= atomic_load_explicit(&q->top, memory_order_relaxed))
        return NULL;
    b--;
    atomic_store_explicit(&q->bottom, b, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);   /* see THE ONE RACE */
    int64_t t = atomic_load_explicit(&q->top, memory_order_relaxed);
    struct weft_fiber *f = NULL;
    if (t <= b) {
        f = atomic_load_explicit(&q->buf[b % DEQUE_SIZE], memory_order_relaxed);
        if (t == b) {
            /* the last one: race the thieves for it */
            if (!atomic_compare_exchange_strong_explicit(&q->top, &t, t + 1,
                                                         memory_order_seq_cst,
                                                         memory_order_relaxed))
                f = NULL;
            atomic_store_explicit(&q->bottom, b + 1, memory_order_relaxed);
        }
    } else {
        atomic_store_explicit(&q->bottom, b + 1, memory_order_relaxed);   /* was empty */
    }
    return f;
}

/* Any thread. Take the oldest fiber, or NULL when empty. A lost race with
 * another taker is retried: NULL always means "nothing there". */
static inline struct weft_fiber *deque_steal(struct weft__deque *q)
{
    for (;;) {
        int64_t t = atomic_load_explicit(&q->top, memory_order_acquire);
        atomic_thread_fence(memory_order_seq_cst);   /* see THE ONE RACE */
        int64_t b = atomic_load_explicit(&q->bottom, memory_order_acquire);
        if (t >= b)
            return NULL;
        struct weft_fiber *f = atomic_load_explicit(&q->buf[t % DEQUE_SIZE], memory_order_relaxed);
        if (atomic_compare_exchange_strong_explicit(&q->top, &t, t + 1, memory_order_seq_cst,
                                                    memory_order_relaxed))
            return f;
    }
}

#endif
