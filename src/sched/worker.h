/*
 * Private to src/sched: the worker and the runtime record, shared by
 * sched.c (run loop, queues, idling, timers, waits), fiber.c (the fiber
 * API) and crash_posix.c / crash_win32.c. Other layers use sched.h only.
 */
#ifndef WEFT_WORKER_H
#define WEFT_WORKER_H

#include "deque.h"
#include "runq.h"
#include "sched.h"

/* Internal fiber flag, beside the public WEFT_DETACHED and WEFT_PINNED. */
#define WEFT__MAIN (1u << 31)   /* weft_run's main fiber */

/* What a fiber asked its worker to do once it has switched away. */
enum { WEFT_POST_PARK = 1, WEFT_POST_YIELD, WEFT_POST_EXIT };

/* Per-worker counters. Each is written only by its own worker's thread,
 * so a relaxed load and store suffice (weft__stat_add): no lock-prefixed
 * read-modify-write on the hot path. Readers (weft_stats) load relaxed. */
typedef struct weft__wstats {
    _Atomic uint64_t switches, steals, stolen, parks, polls, spawned, exited, timers_fired;
} weft__wstats;
#define weft__stat_add(ctr, n) \
    atomic_store_explicit(&(ctr), atomic_load_explicit(&(ctr), memory_order_relaxed) + (n), \
                          memory_order_relaxed)

/* An entry of a worker's timer heap: the due time beside the timer, so that
 * ordering the heap reads this array only, never the timers themselves. */
struct weft__heap_ent {
    uint64_t when;
    weft__timer *t;
};

struct weft__worker {
    struct weft__runq rq;           /* first: the hottest lines */
    struct weft__deque dq;          /* spawns pushed out of the next slot (deque.h) */
    weft__ctx sched_ctx;            /* the worker's own stack, where the run loop lives */
    weft_fiber *cur;                /* fiber running now, NULL in the run loop */
    int post;                       /* WEFT_POST_* left by the fiber that switched away */
    unsigned idx;
    _Atomic uint32_t tick;          /* schedules: the every-61 checks; thieves watch it move */
    uint32_t streak;                /* consecutive picks from the next slot or the deque */
    int *errno_loc;                 /* &errno of this worker's thread (switch_out) */
    bool spinning;                  /* counted in rt.nspinning */
    uint64_t rng;

    /* inbox: fibers that must run here (pinned, forced migration) */
    weft__lock inbox_lock;
    weft_fiber *inbox_head, *inbox_tail;
    _Atomic uint32_t inbox_n;

    /* timers: a 4-ary min-heap of the timers armed by fibers running here
     * (sched.c, TIMERS); heap_mem is its allocation, heap its root */
    weft__lock tlock;
    struct weft__heap_ent *heap;
    void *heap_mem;
    size_t heap_len, heap_cap;
    uint64_t tseq;
    _Atomic uint64_t tnext;         /* earliest when, UINT64_MAX if none */

    /* sleeping */
    _Atomic uint32_t permit;        /* futex word: 1 = wake up */
    _Atomic int in_poll;            /* blocked in the poller rather than the futex */
    bool idle;                      /* on rt.idle (under rt.idle_lock) */
    weft__worker *idle_next;

    uint64_t id_next, id_end;       /* this worker's block of fiber ids */

    /* freed stacks kept for the next spawn on this worker, the most
     * recently freed (hottest) last; filled and spilled in batches of
     * STACK_BATCH through the allocator's lock (fiber.c) */
#define STACK_CACHE_MAX 256
#define STACK_BATCH 64
    weft__stack *scache[STACK_CACHE_MAX];
    unsigned nscache;

    weft__wstats st;

    weft__thread thread;
    void *altstack;

    /* sanitizers: the worker's own stack, and its bookkeeping */
    const void *sched_bottom;
    size_t sched_size;
    void *asan_fake;
    void *tsan_fiber;
};

/* The phases of a runtime's life (rt.phase; see START-UP AND SHUTDOWN in
 * sched.c). Only weft_run's thread and the worker that runs main to its end
 * change it. */
enum weft__phase {
    WEFT_RT_STOPPED = 0,    /* no runtime: weft_run may start one */
    WEFT_RT_STARTING,       /* weft_run is building it: nothing runs yet */
    WEFT_RT_RUNNING,        /* main runs: plain threads may spawn and read */
    WEFT_RT_DRAINING,       /* main returned: no more spawns from plain threads */
    WEFT_RT_STOPPING        /* every fiber and worker is gone: records are freed */
};

struct weft__rt {
    _Atomic uint32_t phase;         /* enum weft__phase; futex word for starting workers */
    _Atomic uint32_t outside;       /* plain threads inside the queues (spawn, ready) */
    _Atomic uint32_t readers;       /* plain threads reading the records (stats, dump);
                                       futex word for the teardown */
    weft__worker *workers;
    unsigned n;
    size_t stack_size;
    const struct weft__poller *poller;
    _Atomic int poll_owner;         /* a worker is blocked in poller->poll */
    _Atomic uint64_t polled_at;     /* weft__now() when a poll last returned */
    bool debug_migrate;

    /* global queue: spawns from outside, overflow of local rings */
    weft__lock glock;
    weft_fiber **gbuf;              /* circular: glen fibers from ghead */
    size_t gcap, glen, ghead;
    _Atomic uint32_t gn;

    /* idle workers */
    weft__lock idle_lock;
    weft__worker *idle;
    _Atomic uint32_t nidle;
    _Atomic uint32_t nspinning;

    _Atomic uint64_t next_id;       /* handed to workers ID_BLOCK at a time (fiber.c) */
    _Atomic uint64_t ext_spawned;   /* spawned by threads that are not workers */
    _Atomic int main_done;
    _Atomic int cancel_all;         /* main returned: every fiber is born cancelled */
    _Atomic int shutdown;
    void *main_ret;
};

extern struct weft__rt weft__rt;

/* sched.c */
void weft__switch_out(weft_fiber *self, int post);
void weft__fiber_entry_finish(weft_fiber *self, weft_fiber *prev);   /* a fresh fiber's first steps */
void weft__timer_arm(weft_fiber *f, uint64_t when);
void weft__timer_disarm(weft_fiber *f);
void weft__ready_new(weft_fiber *f, weft__worker *w);

int64_t weft__live_fibers(void);   /* sched.c: spawned and not yet returned */

/* fiber.c */
void weft__fiber_finish(weft__worker *w, weft_fiber *f);   /* on the worker's stack, after exit */
void weft__fiber_free(weft__worker *w, weft_fiber *f);
void weft__fiber_atfork_child(void);

/* crash.c: the report, NUL-terminated; its length. overflow: say so even
 * if addr is not in f's guard (Windows reports some overflows by code). */
size_t weft__crash_message(char *buf, size_t cap, weft_fiber *f, const void *addr,
                           bool overflow, const char *fault);
/* richer reports: diag_posix.c sets the hook */
extern void (*weft__crash_report_hook)(weft_fiber *f, int sig, void *uctx);

/* crash_posix.c, crash_win32.c: naming the fiber that faulted */
void weft__crash_install(void);
void weft__crash_uninstall(void);
void weft__crash_thread_init(weft__worker *w);
void weft__crash_thread_fini(weft__worker *w);
void weft__crash_atfork_child(void);   /* POSIX: see weft__sched_atfork_child */
#ifndef _WIN32
#include <signal.h>
/* crash_posix.c: call old, the handler there was before ours, as the
 * kernel would have (its mask blocked). 1 if old is a function and ran,
 * 0 for SIG_DFL and SIG_IGN: what happens then is the caller's choice. */
int weft__sig_chain(const struct sigaction *old, int sig, siginfo_t *info, void *uctx);
#endif

/* sanitizer hooks (san.h) are static inline in sched.c and fiber.c */

#endif
