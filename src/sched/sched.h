/*
 * Internal interface of the scheduler (src/sched), used by the sync
 * primitives, the channels and the I/O layer. Nothing here knows about file
 * descriptors: src/io talks to the scheduler through park/ready and the
 * poller hooks at the bottom of this file.
 *
 * The one protocol every blocking call follows (a "wait"):
 *
 *     lock the object's queue; enqueue self;
 *     weft__wait_prepare(self, kind, obj, unlink);   wstate := WAITING
 *     unlock;
 *     r = weft__wait_park(self, timeout);            switches away
 *
 * and every waker:
 *
 *     if (weft__wake_claim(f, result)) ... weft__ready(f);
 *
 * Exactly one party wins the claim (the compare-and-swap of f->wstate from
 * WAITING to WOKEN): the object's signaller, the timer of a timeout or
 * deadline, weft_cancel, or weft_close. A winner that is not the object's
 * own signaller calls f->wunlink(f) to take f off the object's queue before
 * readying it, because the wait record may live on f's stack.
 *
 * A waker may claim and ready a fiber before that fiber has finished
 * switching away (it unlocked the queue, then parks). The worker that later
 * picks it up waits for f->on_cpu to drop to 0, which its old worker stores
 * just after the switch away completed: the same handshake as Linux's
 * try_to_wake_up and p->on_cpu. The window is a few instructions long.
 */
#ifndef WEFT_SCHED_H
#define WEFT_SCHED_H

#include "../arch/arch.h"
#include "platform.h"
#include "weft.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WEFT_LIKELY(x)   __builtin_expect(!!(x), 1)
#define WEFT_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Broken invariants abort loudly with file:line (never bad user input). */
#define weft__assert(cond) \
    do { if (WEFT_UNLIKELY(!(cond))) weft__panic(__FILE__, __LINE__, #cond); } while (0)
_Noreturn void weft__panic(const char *file, int line, const char *what);

typedef struct weft__worker weft__worker;

/* A spin-wait hint to the CPU (lets its sibling hyperthread run). */
static inline void weft__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* A spinlock for critical sections of a few instructions (a fiber's join
 * state, a fiber list). Uncontended it is one exchange and one store; a
 * waiter spins briefly, then yields the CPU, because with more workers
 * than cores the holder may have been preempted. */
typedef struct weft__spin { _Atomic uint32_t v; } weft__spin;
void weft__spin_lock_slow(weft__spin *l);
static inline void weft__spin_lock(weft__spin *l)
{
    if (WEFT_LIKELY(!atomic_exchange_explicit(&l->v, 1, memory_order_acquire)))
        return;
    weft__spin_lock_slow(l);
}
static inline void weft__spin_unlock(weft__spin *l)
{
    atomic_store_explicit(&l->v, 0, memory_order_release);
}

/* What a parked fiber waits for (weft_dump prints it). */
enum weft__wait_kind {
    WEFT_W_NONE = 0, WEFT_W_SLEEP, WEFT_W_JOIN, WEFT_W_MUTEX, WEFT_W_COND,
    WEFT_W_SEM, WEFT_W_WG, WEFT_W_CHAN_SEND, WEFT_W_CHAN_RECV, WEFT_W_SELECT,
    WEFT_W_FD_READ, WEFT_W_FD_WRITE,  /* wobj: the I/O layer's operation (weft__wait_fd) */
    WEFT_W_POOL, WEFT_W_IO,
    WEFT_W_KINDS
};
extern const char *const weft__wait_names[WEFT_W_KINDS];

/* A fiber's life, f->state (the counterpart of Go's G states, runtime2.go):
 * for each state, who owns the stack (may run on it, requeue it or free it)
 * and where the fiber is.
 *
 *   RUNNABLE  on exactly one run queue (ring, next slot, spawn deque, inbox,
 *             global queue), or being put on one. Whoever takes it off the
 *             queue owns it. Its previous worker may still be finishing the
 *             switch away (a waker readied it early): the taker waits for
 *             on_cpu to drop before running on the stack (take_cpu).
 *   RUNNING   its worker owns the stack and runs on it; on no queue. on_cpu
 *             is 1 until that worker has finished switching away.
 *   PARKED    in a wait, on no run queue. The one party that wins its wait's
 *             claim (weft__wake_claim) owns the right to ready it. Its own
 *             worker may still be switching away from it (on_cpu is 1 until
 *             done); after that nobody runs on the stack, and weft_backtrace
 *             may hold it still (on_cpu).
 *   DEAD      returned, joinable, on no queue; the stack is idle. The joiner
 *             (or weft_detach) owns it and frees it.
 *   FREED     back in a stack cache; only magic, state and gen mean anything.
 *
 * Legal edges, each written by the one party that owns the fiber then.
 * Every write goes through weft__fstate_set, which asserts that the fiber
 * is in the state its caller owns and that the edge is in this list:
 *
 *   (new memory), FREED -> RUNNABLE   weft_spawn
 *   RUNNABLE -> RUNNING               take_cpu, by whoever took it off a queue
 *   RUNNING  -> RUNNABLE              a yield (finish_switch)
 *   RUNNING  -> PARKED                weft__wait_prepare, by the fiber itself,
 *                                     before its wait is published
 *   PARKED   -> RUNNABLE              weft__ready, by the claim's winner
 *   PARKED   -> RUNNING               the fiber won its own claim before
 *                                     switching away (weft__wait_abort, an
 *                                     early return of weft__wait_park)
 *   RUNNING  -> DEAD                  fiber_entry, fn returned
 *   DEAD     -> FREED                 weft__fiber_free
 *
 * PARKED is written before the wait is published, not after the switch
 * away: a waker may claim the fiber in between (the early wake above) and
 * store RUNNABLE, and a PARKED written after that would step backwards
 * while the fiber sits on a run queue. Written first, it is ordered before
 * any waker's RUNNABLE by the claim itself (the waker's compare-and-swap
 * reads the WAITING that wait_prepare releases after it), at the price of
 * one plain store and no locked instruction.
 */
enum weft__fstate { WEFT_F_RUNNABLE = 1, WEFT_F_RUNNING, WEFT_F_PARKED, WEFT_F_DEAD, WEFT_F_FREED };
enum weft__wstate { WEFT_WS_IDLE = 0, WEFT_WS_WAITING, WEFT_WS_WOKEN };

typedef struct weft__timer {
    uint64_t when;              /* weft__now() ns */
    size_t idx;                 /* position in owner's heap; SIZE_MAX when not queued */
    weft__worker *owner;        /* heap it is queued in */
} weft__timer;

#define WEFT_FIBER_MAGIC 0x77656674u   /* "weft" */
#define WEFT_NAME_MAX 32

struct weft_fiber {
    /* Read by whoever walks the stacks looking for fibers (dump, cancel
     * on exit), so spawn publishes them last, atomically, and zeroes
     * only what follows. */
    _Atomic uint32_t magic;         /* WEFT_FIBER_MAGIC once a fiber was spawned here */
    _Atomic int state;              /* enum weft__fstate */
    weft__ctx ctx;                  /* saved stack pointer while suspended */
    _Atomic int on_cpu;             /* 1 from resume until its worker finished switching away */
    unsigned flags;                 /* WEFT_DETACHED, WEFT_PINNED */
    weft__worker *worker;           /* the worker it runs/ran on */
    weft__worker *home;             /* pinned: the only worker it may run on */
    weft_fiber *next;               /* run-queue / inbox / global-queue link */
    int saved_errno;

    /* wait protocol */
    _Atomic int wstate;             /* enum weft__wstate */
    int wresult;                    /* set by the claim winner */
    int wkind;                      /* enum weft__wait_kind */
    void *wobj;                     /* the object waited on, or (sync.c, chan.c) the
                                       wait record naming it: see waitq.h */
    void (*wunlink)(weft_fiber *);  /* take me off wobj's queue (claim winners) */
    uint64_t wsince;                /* weft__now() when the wait began */
    weft__timer timer;
    int64_t deadline;               /* absolute ns, -1 none */
    _Atomic int cancelled;

    /* life cycle and join (under jlock) */
    int joined;                     /* a joiner took it (or is waiting) */
    weft_fiber *joiner;
    void *(*fn)(void *);
    void *arg;
    void *ret;

    void **fls;                     /* fiber-local values, lazily allocated */
    unsigned fls_len;
    bool started;                   /* has run: suspended in weft__switch_out, not fresh */
    weft__stack *stack;

    /* sanitizer bookkeeping */
    void *asan_fake;
    void *tsan_fiber;

    /* Identity: spawn zeroes everything from ctx to here, then stores
     * these two with atomic stores (the watchdog and the dump read them
     * while the record may be reused: weft__fiber_ident in diag.c). */
    uint64_t id;
    char name[WEFT_NAME_MAX];

    /* Outlive each fiber that uses the record, for stale handles (fiber.c,
     * HANDLES): spawn leaves them alone. Here, in what was padding, the
     * record stays 256 bytes: four cache lines, as before they existed. */
    _Atomic uint32_t gen;           /* +1 each time the record is retired; handles carry it */
    _Atomic uint32_t pins;          /* handle calls acting on the fiber now: free waits */
    weft__spin jlock;               /* join state; always unlocked while FREED */
};

/* ------------------------------------------------------------ state word */

/* The legal edges of enum weft__fstate as one constant: bit from * 8 + to
 * (from 0: memory no fiber ever used). Tested with a shift of an
 * immediate, no table in memory. */
#define WEFT__EDGE(from, to) (1ull << ((from) * 8 + (to)))
#define WEFT__FSTATE_EDGES                                                      \
    (WEFT__EDGE(0, WEFT_F_RUNNABLE) | WEFT__EDGE(WEFT_F_FREED, WEFT_F_RUNNABLE) | \
     WEFT__EDGE(WEFT_F_RUNNABLE, WEFT_F_RUNNING) |                              \
     WEFT__EDGE(WEFT_F_RUNNING, WEFT_F_RUNNABLE) |                              \
     WEFT__EDGE(WEFT_F_RUNNING, WEFT_F_PARKED) |                                \
     WEFT__EDGE(WEFT_F_PARKED, WEFT_F_RUNNABLE) |                               \
     WEFT__EDGE(WEFT_F_PARKED, WEFT_F_RUNNING) |                                \
     WEFT__EDGE(WEFT_F_RUNNING, WEFT_F_DEAD) |                                  \
     WEFT__EDGE(WEFT_F_DEAD, WEFT_F_FREED))

static inline bool weft__fstate_legal(int from, int to)
{
    return (unsigned)from <= WEFT_F_FREED && (unsigned)to <= WEFT_F_FREED &&
           ((WEFT__FSTATE_EDGES >> ((unsigned)from * 8 + (unsigned)to)) & 1);
}

/* Move f from state `from` to `to`: the caller owns f in state `from`
 * (see the enum), so nobody else writes the word meanwhile. Asserts that
 * f is in `from` now, and that the edge is legal (with constant arguments
 * the second check folds away at compile time): a compare with an
 * immediate on a line the caller is about to write. */
static inline void weft__fstate_set(weft_fiber *f, int from, int to)
{
    weft__assert(weft__fstate_legal(from, to));
    weft__assert(atomic_load_explicit(&f->state, memory_order_relaxed) == from);
    atomic_store_explicit(&f->state, to, memory_order_relaxed);
}

/* ----------------------------------------------------------------- handles */

/* What a user holds is not the record's address but the address with the
 * record's generation in bits it never uses (fiber.c, HANDLES): the low 6
 * (records are 64-byte aligned) and, on 64-bit machines, the top 16 (user
 * addresses fit in 48 bits on x86-64, AArch64 and Windows x64). */
#if UINTPTR_MAX > 0xffffffffu
#define WEFT__HANDLE_HIGH 1                       /* the top 16 bits carry 16 more */
#define WEFT__HANDLE_GEN_BITS 22
#define WEFT__HANDLE_ADDR_MASK ((((uintptr_t)1 << 48) - 1) & ~(uintptr_t)63)
#else
#define WEFT__HANDLE_HIGH 0
#define WEFT__HANDLE_GEN_BITS 6
#define WEFT__HANDLE_ADDR_MASK (~(uintptr_t)63)
#endif
#define WEFT__HANDLE_GEN_MASK ((1u << WEFT__HANDLE_GEN_BITS) - 1)

static inline weft_fiber *weft__handle_rec(const weft_fiber *h)
{
    return (weft_fiber *)((uintptr_t)h & WEFT__HANDLE_ADDR_MASK);
}

static inline uint32_t weft__handle_gen(const weft_fiber *h)
{
    uintptr_t v = (uintptr_t)h;
    uint32_t g = (uint32_t)(v & 63);
#if WEFT__HANDLE_HIGH
    g |= (uint32_t)(v >> 48) << 6;
#endif
    return g;
}

/* The handle of live fiber f (what weft_spawn and weft_self give out). */
weft_fiber *weft__handle(const weft_fiber *f);
/* The record behind handle h, pinned so that it is not freed (and so not
 * reused) until weft__handle_unpin; NULL if h is NULL, bad or stale. */
weft_fiber *weft__handle_pin(const weft_fiber *h);
void weft__handle_unpin(weft_fiber *f);

/* ---------------------------------------------------------- current fiber */

/* Thread-locals are read through these non-inlined accessors. A fiber can
 * move to another thread at any park, and the compiler may keep the address
 * of a __thread variable in a register across a call: reading it afresh
 * through a call that cannot be inlined is what keeps us honest. */
weft__worker *weft__cur_worker(void) __attribute__((noinline));
weft_fiber   *weft__cur_fiber(void) __attribute__((noinline));

/* ------------------------------------------------------------ wait/wake */

/* The three small steps of the protocol above, inline: every blocking call
 * and every wake-up takes one or two of them. */

/* Announce the wait (the caller holds obj's lock and has queued self). */
static inline void weft__wait_prepare(weft_fiber *self, int kind, void *obj,
                                      void (*unlink)(weft_fiber *))
{
    /* before the wait is published: see enum weft__fstate */
    weft__fstate_set(self, WEFT_F_RUNNING, WEFT_F_PARKED);
    self->wkind = kind;
    self->wobj = obj;
    self->wunlink = unlink;
    self->wresult = 0;
    /* Against weft_cancel, which stores `cancelled` and then reads wstate,
     * while weft__wait_park reads `cancelled` after this store: the light
     * half of an asymmetric barrier here, the heavy half in weft_cancel
     * (platform.h). One of the two sees the other's store. */
    atomic_store_explicit(&self->wstate, WEFT_WS_WAITING, memory_order_release);
    weft__barrier_light();
}

/* Win f's wait, with result for it to return: 1 if won, 0 if another
 * waker (or the fiber itself, giving up) got there first. */
static inline int weft__wake_claim(weft_fiber *f, int result)
{
    int expect = WEFT_WS_WAITING;
    if (!atomic_compare_exchange_strong(&f->wstate, &expect, WEFT_WS_WOKEN))
        return 0;
    f->wresult = result;
    return 1;
}

/* -ECANCELED / -ETIMEDOUT if self may not block now, else 0. */
static inline int weft__wait_check(weft_fiber *self)
{
    if (atomic_load_explicit(&self->cancelled, memory_order_relaxed))
        return -ECANCELED;
    if (self->deadline >= 0 && (uint64_t)self->deadline <= weft__now())
        return -ETIMEDOUT;
    return 0;
}

/* Park until claimed. timeout: absolute weft__now() ns, or -1. The fiber's
 * deadline also applies. Returns the winner's result: whatever the object
 * passed to weft__wake_claim, -ETIMEDOUT or -ECANCELED. */
int  weft__wait_park(weft_fiber *self, int64_t timeout);
/* Park until claimed, with no timer and no early return for a pending
 * cancel or a past deadline: for a wait that must see its object finish
 * (an io_uring operation being cancelled still owns the fiber's buffer until
 * its completion arrives). weft_cancel may still claim it (-ECANCELED):
 * callers loop until their object is done. */
int  weft__wait_park_nointr(weft_fiber *self);
/* Abandon a prepared wait without parking (the caller found it could
 * proceed after all). Returns 1 if it was still unclaimed; the fiber is
 * RUNNING again then. The one way to take back a prepared wait: a fiber
 * that claimed itself with weft__wake_claim and returned would stay PARKED
 * (enum weft__fstate). Returns 0 if a waker won: then park to receive it. */
int  weft__wait_abort(weft_fiber *self);
void weft__ready(weft_fiber *f);
/* Claim with result and, if won, unlink and ready: for wakers that are not
 * the object's signaller (cancel, close, timers). */
int  weft__wake_interrupt(weft_fiber *f, int result);

/* Has the calling worker other fibers queued to run (next slot, deque,
 * ring)? For spin-or-park decisions. */
bool weft__has_local_work(void);

/* Yield-style park used by the run loop: put self at the back of the queue. */
void weft__yield(weft_fiber *self);

/* ------------------------------------------------------------------ misc */

unsigned weft__nworkers(void);
weft__worker *weft__worker_at(unsigned i);
int  weft__worker_index(const weft__worker *w);
/* The gates of plain threads (not workers) into a runtime: see START-UP AND
 * SHUTDOWN in sched.c. enter is false, and nothing is held, when the phase
 * does not admit the caller: outside (queueing fibers) only while RUNNING,
 * a reader (anything that reads the runtime's records, which are freed at
 * the end) while RUNNING or DRAINING. Workers' threads need neither. */
bool weft__outside_enter(void);
void weft__outside_leave(void);
bool weft__reader_enter(void);
void weft__reader_leave(void);
bool weft__running(void);          /* RUNNING or DRAINING: a hint only, plain threads use the gates (worker.h) */
bool weft__debug_migrate(void);

/* Threads of the blocking pool, kept up to date by src/io (weft_stats). */
extern _Atomic uint32_t weft__pool_threads;
/* Set by src/io while it runs: the fd behind the object of an FD_READ,
 * FD_WRITE or IO wait, for weft_dump (the scheduler knows no fds). */
extern int (*weft__wait_fd)(const void *wobj);

/* Visit every fiber spawned and not yet freed (running, runnable, parked,
 * or returned and not yet joined). fn runs without the stack allocator's
 * lock, while fibers keep running, returning and being spawned: fields
 * other than magic and state may be changing under it (a fiber held with
 * weft__fiber_hold is stable), and a record may even be freed and reused
 * by a new spawn while fn looks at it; its memory stays mapped. */
void weft__each_fiber(void (*fn)(weft_fiber *, void *), void *arg);

/* ------------------------------------------------------- the poller hooks */
/* Installed by src/io when the runtime starts. A worker with nothing to run
 * calls poll(w, timeout_ns) instead of sleeping on its futex; at most one
 * worker blocks in poll at a time, the others sleep on their futex.
 * poll() readies fibers with weft__ready() and returns how many; 0 timeout
 * means "just look". wake() makes a blocked poll() return soon. */
struct weft__poller {
    const char *name;
    int  (*poll)(weft__worker *w, int64_t timeout_ns);
    void (*wake)(void);
};

/* POSIX, in the child of a fork(): forget the runtime (see sched.c). */
void weft__sched_atfork_child(void);

/* Start workers and run main_fn as the first fiber (see weft_run). */
int weft__sched_run(const weft_config *cfg, const struct weft__poller *poller,
                    void *(*main_fn)(void *), void *arg, void **ret);

#endif
