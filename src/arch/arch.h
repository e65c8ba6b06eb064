/*
 * src/arch — the machine-dependent floor of weft.
 *
 * This layer knows nothing of schedulers, fibers or file descriptors. Its
 * whole contract is here:
 *
 *   1. a context: the saved stack pointer of a suspended flow of control;
 *   2. make a context on a stack, so that the first switch to it calls
 *      fn(arg) there;
 *   3. switch from one context to another, carrying one pointer across;
 *   4. allocate and free a guarded stack;
 *   5. (src/arch/unwind.c) unwind a suspended context without resuming it.
 *
 * One implementation of (2) and (3) is linked per build: our own assembly for
 * the ABI (switch_<cpu>_<abi>_<format>_gas.S), or switch_fcontext.c, which
 * rides on Boost.Context's assembly fcontext (make CTX=fcontext, and the
 * automatic choice on a CPU without our own assembly).
 */
#ifndef WEFT_ARCH_H
#define WEFT_ARCH_H

#include <stddef.h>
#include <stdint.h>

/* A suspended context is nothing but its stack pointer: everything else it
 * needs (callee-saved registers, FP control words, the address to resume at)
 * was pushed on its own stack by weft__ctx_switch. See the frame diagram at
 * the top of the assembly file for the exact layout. */
typedef struct weft__ctx {
    void *sp;
} weft__ctx;

/* Prepare ctx so that the first weft__ctx_switch(..., ctx, arg) calls
 * fn(arg) on the stack [lo, lo + size). fn must never return: a flow of
 * control ends by switching away for the last time. */
void weft__ctx_make(weft__ctx *ctx, void *lo, size_t size, void (*fn)(void *arg));

/* Save the running context into *from and resume *to. In the resumed
 * context, the weft__ctx_switch call that suspended it returns arg (or, for
 * a fresh context, fn receives arg). */
void *weft__ctx_switch(weft__ctx *from, weft__ctx *to, void *arg);

/* The same switch, for a `to` that was suspended by a switch called from
 * the same place in the code as this call: the scheduler's hand-off from
 * one fiber straight to another, both of which left their CPU through
 * weft__switch_out. Where the two endings differ (x86-64 System V: see
 * RETURNING in its assembly file) this one keeps the CPU's return-address
 * predictor right for such a pair; elsewhere it is weft__ctx_switch under
 * a second name. Either one resumes a context the other suspended. */
void *weft__ctx_handoff(weft__ctx *from, weft__ctx *to, void *arg);

/* Name of the switch implementation linked in, for messages and benchmarks. */
extern const char weft__ctx_impl[];

/* ------------------------------------------------------------------ stacks */

/* How stacks are protected; chosen once per process (see stack.c). */
enum weft__guard_mode {
    WEFT_GUARD_MADVISE = 1,   /* MADV_GUARD_INSTALL inside big slabs: no VMA per guard */
    WEFT_GUARD_MPROTECT,      /* PROT_NONE page per stack: 2 VMAs per stack */
    WEFT_GUARD_CANARY,        /* no hardware guard: a pattern checked at switch and free */
    WEFT_GUARD_WIN32          /* Windows: PAGE_GUARD pages above a reserved one (stack_win32.c) */
};

/* Windows: bytes of address space reserved below a stack's lo for its guard
 * region. The switch's first frame sets the TIB's DeallocationStack to
 * lo - WEFT_STACK_GUARD_WIN32, so both files must agree. */
#define WEFT_STACK_GUARD_WIN32 ((size_t)32 << 10)

typedef struct weft__stack {
    char *lo;            /* lowest usable byte */
    char *hi;            /* one past the highest usable byte */
    char *guard;         /* guard region below lo (NULL in canary mode) */
    size_t guard_len;
    size_t size;         /* usable size class (page multiple) of its pool */
    unsigned vg_id;      /* valgrind's id for the registered stack */
    struct weft__stack_pool *pool;
    struct weft__stack *next;   /* free-list link while cached */
} weft__stack;

/* Minimum and maximum usable sizes a caller may ask for. */
#define WEFT_STACK_MIN ((size_t)16 << 10)
#define WEFT_STACK_MAX ((size_t)1 << 30)
#define WEFT_STACK_DEFAULT ((size_t)256 << 10)

/* Allocate a stack of at least size usable bytes. The weft__stack record
 * itself is stored at the top of the stack (*out points into it), so one
 * allocation serves both. Returns 0, -EINVAL (size out of range) or
 * -ENOMEM. The caller may carve more of its own data just below s->hi. */
int  weft__stack_alloc(size_t size, weft__stack **out);
/* The size class a request of size bytes gets (page multiple). */
size_t weft__stack_class(size_t size);
void weft__stack_free(weft__stack *s);
/* The same for many at a time, under one lock: up to max stacks of one
 * class into out[] (at least one, or -EINVAL / -ENOMEM), and n stacks back.
 * For the scheduler's per-worker caches, which move stacks in batches:
 * one worker's fibers may all exit on another, whose cache then overflows
 * while the spawner's runs dry. */
int  weft__stack_alloc_many(size_t size, weft__stack **out, unsigned max);
void weft__stack_free_many(weft__stack *const *s, unsigned n);
/* Return the memory of up to max cached stacks beyond the hot reserve to
 * the kernel; the number still over it. Called by idle workers. */
size_t weft__stack_trim(size_t max);
/* Call fn on every stack carved before the call and not yet released,
 * free or in use: how the scheduler finds every fiber (their records sit
 * at the top of their stacks) without keeping a list. fn runs without the
 * allocator's lock (it may allocate and free stacks; others may meanwhile),
 * and the stacks it visits stay mapped until it returns. */
void weft__stack_each(void (*fn)(weft__stack *s, void *arg), void *arg);
/* Unmap every stack of every pool (runtime teardown: all must be free). */
void weft__stack_release_all(void);
/* POSIX, in the child of a fork() (runtime.c): forget every pool without
 * unmapping it. The caller may be running on one of those stacks, and the
 * parent's other threads, gone in the child, may have held the lock. */
void weft__stack_atfork_child(void);
int  weft__stack_guard_mode(void);
const char *weft__stack_guard_name(void);
/* 0 if s is intact: a stack with a hardware guard always is; in canary
 * mode, the pattern at its bottom must be. Called at every switch away. */
int  weft__stack_check_canary(const weft__stack *s);
static inline int weft__stack_check(const weft__stack *s)
{
    return s->guard ? 0 : weft__stack_check_canary(s);
}
/* Is addr inside s's guard region (or, in canary mode, its lowest page)? */
int  weft__stack_in_guard(const weft__stack *s, const void *addr);
/* Deepest byte ever written, measured from the bottom (high-water mark). */
size_t weft__stack_used(const weft__stack *s);
size_t weft__page_size(void);

#endif
