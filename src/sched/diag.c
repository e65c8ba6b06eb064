/*
 * Seeing inside a running runtime: backtraces of fibers, the dump of every
 * fiber, the counters, and the start and stop of the rest of the
 * diagnostics layer (the dump signal and crash reports in diag_posix.c, the
 * trace in trace.c, the watchdog in watchdog.c).
 *
 * HOLDING A FIBER STILL
 *   A suspended fiber's registers are on its own stack, in the switch frame
 *   its ctx.sp points to (see src/arch/unwind_posix.c), so it can be walked
 *   from any thread — as long as nobody resumes it meanwhile: a resumed
 *   fiber overwrites the very frames the unwinder is reading, and libunwind
 *   follows the pointers it finds there. f->on_cpu already says "some
 *   thread owns this stack"; the run loop takes it with a compare-and-swap
 *   from 0 to 1 before resuming a fiber and spins while it is taken. A walker
 *   takes it the same way (weft__fiber_hold), so for the duration of a walk
 *   it is, to the scheduler, just a fiber whose old worker is slow to let go
 *   (the on_cpu handshake in sched.h). It can only succeed while the fiber is
 *   off every CPU: parked, runnable in a queue, or not yet started. A fiber
 *   running on a worker cannot be walked from outside; weft_backtrace says
 *   -EBUSY and the dump says "running on worker N" (the watchdog asks the
 *   worker's own thread instead: weft__diag_capture_running).
 *
 * A DUMP DOES NOT STOP THE PROGRAM
 *   A dump of ten thousand fibers takes a few hundred milliseconds, most of
 *   it naming pcs and formatting. None of that may happen under a lock the
 *   scheduler or the stack allocator needs: the stack pool's lock, held
 *   across the whole walk, once stalled every worker for seconds (idle
 *   workers take it to trim, spawns to refill their caches). So:
 *     - the walk (weft__each_fiber) holds the allocator's lock only to note
 *       where the stacks lie, and visits them without it; the allocator
 *       keeps the stacks mapped until the walk ends;
 *     - each fiber is held only while its state, wait record and frames are
 *       read (dump_one), which is one unwind: tens of microseconds. A
 *       worker that wants to resume it meanwhile waits that long, as above;
 *     - frames are named after the release, through a cache of the pcs
 *       already named in this dump (parked fibers share most of theirs);
 *     - the text is written once, at the end, with no lock held.
 *   The dumping thread itself is busy for the whole dump: call weft_dump
 *   from a plain thread (the dump signal's is one), or expect the calling
 *   fiber's worker to be taken for that long (the watchdog will say so).
 *
 * WHAT A DUMP MAY GET WRONG
 *   It does not stop the world: fibers keep running, parking, waking,
 *   returning and being spawned while it walks. A fiber the dump managed
 *   to hold is described consistently (its wait record —
 *   wkind, wobj, wsince, its timer's time — is written only by the fiber
 *   itself, which cannot run while held; the timer's place in its heap can
 *   change, and is only tested for "armed"); only its state word may already
 *   say RUNNABLE where the wait record still names what it waited for (a
 *   waker claimed it and readied it a moment ago): the dump prints
 *   "runnable (woken from ...)" then. A fiber it could not hold is printed
 *   from a racy read of its state and worker: "running on worker N" may be
 *   a few microseconds stale, and its record may be reused by a new spawn
 *   while it is read — its id and name are read with weft__fiber_ident,
 *   so they are one fiber's or the other's. Stack sizes come from the
 *   stack's own record, written once. Counters are relaxed loads: each is
 *   exact, they are not a consistent snapshot of one instant.
 *
 * The dump and the reports are built in memory and written once, after the
 * locks are released: writing to a pipe nobody reads must not stall spawns.
 */
#define _GNU_SOURCE
#include "diag.h"

#include "../arch/unwind.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Atomic uint32_t weft__pool_threads;
int (*weft__wait_fd)(const void *wobj);

/* ------------------------------------------------------------- holding */

int weft__fiber_hold(weft_fiber *f)
{
    /* A fiber between "switched away" and "on_cpu dropped" is a few
     * instructions from being holdable: try a little before giving up. */
    for (int tries = 0; tries < 100; tries++) {
        int off = 0;
        if (atomic_compare_exchange_weak_explicit(&f->on_cpu, &off, 1, memory_order_acquire,
                                                  memory_order_relaxed)) {
            int st = atomic_load_explicit(&f->state, memory_order_relaxed);
            if (st == WEFT_F_PARKED || st == WEFT_F_RUNNABLE)
                return 1;
            atomic_store_explicit(&f->on_cpu, 0, memory_order_release);
            return 0;
        }
        int st = atomic_load_explicit(&f->state, memory_order_relaxed);
        if (st == WEFT_F_RUNNING || st == WEFT_F_DEAD || st == WEFT_F_FREED)
            return 0;
    }
    return 0;
}

void weft__fiber_release(weft_fiber *f)
{
    atomic_store_explicit(&f->on_cpu, 0, memory_order_release);
}

void weft__fiber_ident(const weft_fiber *f, uint64_t *id, char name[WEFT_NAME_MAX])
{
    /* Atomic loads, as spawn's stores are (set_ident in fiber.c), then an
     * acquire fence: whatever the caller reads after this to check that
     * f is still the fiber it meant (its sequence) is not older than the
     * words read here. */
    const uint64_t *src = (const uint64_t *)(const void *)f->name;
    uint64_t w[WEFT_NAME_MAX / 8];
    for (size_t i = 0; i < WEFT_NAME_MAX / 8; i++)
        w[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
    *id = __atomic_load_n(&f->id, __ATOMIC_RELAXED);
    atomic_thread_fence(memory_order_acquire);
    memcpy(name, w, WEFT_NAME_MAX);
    name[WEFT_NAME_MAX - 1] = 0;
}

/* ----------------------------------------------------------- backtraces */

__attribute__((noinline)) int weft_backtrace(weft_fiber *h, void **pcs, int max)
{
    if (max < 0 || (max > 0 && !pcs))
        return -EINVAL;
    weft_fiber *self = weft__cur_fiber();
    if (!h || (self && h == weft__handle(self))) {
        int n = weft__unwind_self(pcs, max, 1);
        __asm__ volatile("" ::: "memory");   /* keep our frame: no tail call */
        return n;
    }
    /* A handle whose fiber was joined, or detached and returned, is stale
     * (fiber.c, HANDLES): that fiber has returned. Pinned, f is not freed
     * while we walk it. */
    weft_fiber *f = weft__handle_pin(h);
    if (!f)
        return weft__handle_rec(h) ? -ESRCH : -EINVAL;
    int n;
    int st = atomic_load_explicit(&f->state, memory_order_relaxed);
    if (st == WEFT_F_DEAD) {
        n = -ESRCH;
    } else if (!weft__fiber_hold(f)) {
        st = atomic_load_explicit(&f->state, memory_order_relaxed);
        n = st == WEFT_F_DEAD || st == WEFT_F_FREED ? -ESRCH : -EBUSY;
    } else {
        n = weft__unwind_ctx(&f->ctx, pcs, max);
        weft__fiber_release(f);
    }
    weft__handle_unpin(f);
    return n;
}

/* ------------------------------------------------------------------ text */

void weft__text_printf(struct weft__text *t, const char *fmt, ...)
{
    for (;;) {
        if (t->oom)
            return;
        size_t room = t->cap - t->len;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf ? t->buf + t->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if ((size_t)n < room) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap ? t->cap : 4096;
        while (cap - t->len <= (size_t)n)
            cap *= 2;
        char *b = realloc(t->buf, cap);
        if (!b) {
            t->oom = 1;
            return;
        }
        t->buf = b;
        t->cap = cap;
    }
}

/* What follows "#i pc" on a frame's line: " name+0xoff (object)". The
 * first frame's pc is the instruction itself, the others' a return
 * address (looked up one byte earlier), so the two are named apart. */
static void frame_text(struct weft__text *t, const char *pc, bool first)
{
    /* Return addresses point after the call: name the call itself. */
    const char *look = first ? pc : pc - 1;
    char name[256];
    uintptr_t off = 0;
    if (weft__unwind_symbol(look, name, sizeof name, &off) < 0)
        weft__text_printf(t, " ??");
    else
        weft__text_printf(t, " %s+0x%lx", name,
                          (unsigned long)(off + !first));   /* the return address's offset */
    const char *obj = weft__unwind_object(look);
    if (obj)
        weft__text_printf(t, " (%s)", obj);
}

/* Naming a pc is the dearest step of a dump (libunwind reads the object's
 * symbol table from its file each time), and ten thousand parked fibers
 * mostly show the same few dozen pcs: a dump names each one once. A
 * table of the last text per slot, overwritten on collision. */
#define SYM_SLOTS 1024
struct weft__symcache {
    struct { const void *pc; bool first; char *text; } slot[SYM_SLOTS];
};

static void backtrace_cached(struct weft__text *t, void *const *pcs, int n,
                             struct weft__symcache *c)
{
    for (int i = 0; i < n; i++) {
        const char *pc = (const char *)pcs[i];
        weft__text_printf(t, "    #%-2d %p", i, (void *)pc);
        if (!c) {
            frame_text(t, pc, i == 0);
        } else {
            size_t h = ((uintptr_t)pc * 0x9e3779b97f4a7c15ull >> 40) % SYM_SLOTS;
            if (!c->slot[h].text || c->slot[h].pc != pc || c->slot[h].first != (i == 0)) {
                struct weft__text one = { 0 };
                frame_text(&one, pc, i == 0);
                if (one.oom) {
                    free(one.buf);
                    t->oom = 1;
                    return;
                }
                free(c->slot[h].text);
                c->slot[h].pc = pc;
                c->slot[h].first = i == 0;
                c->slot[h].text = one.buf;   /* never NULL: frame_text writes at least " ??" */
            }
            weft__text_printf(t, "%s", c->slot[h].text);
        }
        weft__text_printf(t, "\n");
    }
}

void weft__text_backtrace(struct weft__text *t, void *const *pcs, int n)
{
    backtrace_cached(t, pcs, n, NULL);
}

void weft__text_write(struct weft__text *t, int fd)
{
    if (t->oom) {
        static const char m[] = "weft: out of memory for the report\n";
        ssize_t r = write(fd, m, sizeof m - 1);
        (void)r;
    }
    size_t done = 0;
    while (done < t->len) {
        ssize_t r = write(fd, t->buf + done, t->len - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        done += (size_t)r;
    }
    free(t->buf);
    *t = (struct weft__text){ 0 };
}

int weft_backtrace_print(int fd, void *const *pcs, int n)
{
    if (fd < 0 || n < 0 || (n > 0 && !pcs))
        return -EINVAL;
    struct weft__text t = { 0 };
    weft__text_backtrace(&t, pcs, n);
    int err = t.oom ? -ENOMEM : 0;
    weft__text_write(&t, fd);
    return err;
}

/* ------------------------------------------------------------------ dump */

#define DUMP_FRAMES 48

struct dump {
    struct weft__text t;
    void *self_pcs[DUMP_FRAMES];   /* the caller's stack, taken before the walk */
    int self_n;
    struct weft__symcache syms;
};

/* The stack record just above f: the inverse of fiber.c's fiber_of (the
 * record is the first 64-byte-aligned slot past the fiber's). Written
 * once, when the stack was carved, and never unmapped while a walk runs,
 * so it is read without holding f. */
static const weft__stack *stack_of(const weft_fiber *f)
{
    return (const weft__stack *)(((uintptr_t)f + sizeof *f + 63) & ~(uintptr_t)63);
}

/* A duration for people: ms below ten seconds, then s. */
static void put_duration(struct weft__text *t, int64_t ns)
{
    int64_t a = ns < 0 ? -ns : ns;
    if (a < 10000000000ll)
        weft__text_printf(t, "%.1f ms", (double)ns / 1e6);
    else
        weft__text_printf(t, "%.1f s", (double)ns / 1e9);
}

static void describe_wait(struct weft__text *t, weft_fiber *f, uint64_t now)
{
    int k = f->wkind;
    const char *what = k > 0 && k < WEFT_W_KINDS && weft__wait_names[k] ? weft__wait_names[k] : "?";
    switch (k) {
    case WEFT_W_SLEEP:
        weft__text_printf(t, "sleep");
        break;
    case WEFT_W_JOIN: {
        const weft_fiber *j = f->wobj;
        weft__text_printf(t, "join of fiber %llu", j ? (unsigned long long)j->id : 0ull);
        break;
    }
    case WEFT_W_FD_READ:
    case WEFT_W_FD_WRITE:
    case WEFT_W_IO: {
        /* the I/O layer's operation, on the parked fiber's stack */
        int (*fd_of)(const void *) = weft__wait_fd;
        if (f->wobj && fd_of)
            weft__text_printf(t, "fd %d %s", fd_of(f->wobj),
                              k == WEFT_W_FD_READ ? "read" : k == WEFT_W_FD_WRITE ? "write" : "io");
        else
            weft__text_printf(t, "%s", what);
        break;
    }
    case WEFT_W_POOL:
    case WEFT_W_SELECT:
        weft__text_printf(t, "%s", what);
        break;
    default:
        /* sync.c and chan.c pass their wait record (waitq.h), whose first
         * field is the object waited on; it lives on the fiber's stack,
         * which cannot change while we hold the fiber. */
        weft__text_printf(t, "%s %p", what, f->wobj ? *(void *const *)f->wobj : NULL);
        break;
    }
    /* A timer armed for this wait: a sleep's end, a timeout or a deadline.
     * Its owner is set and cleared by the fiber itself (stable while we hold
     * it); its place in the heap moves under the heap's lock. */
    const weft__timer *tm = &f->timer;
    weft__worker *ow = tm->owner;
    if (ow) {
        weft__lock_acquire(&ow->tlock);
        bool armed = tm->idx != SIZE_MAX;
        uint64_t when = tm->when;
        weft__lock_release(&ow->tlock);
        if (armed) {
            int64_t d = (int64_t)(when - now);
            weft__text_printf(t, d >= 0 ? " until now+" : " until now");
            put_duration(t, d);
        }
    }
    uint64_t coarse = weft__now_coarse();   /* wsince is taken from the coarse clock */
    if (f->wsince && coarse >= f->wsince) {
        weft__text_printf(t, ", for ");
        put_duration(t, (int64_t)(coarse - f->wsince));
    }
}

/* One fiber. Held (weft__fiber_hold) only while what can change is read:
 * its state and wait record, and its frames — the unwinder reads the
 * stack in place, which is what the hold protects. Naming the frames,
 * measuring the stack's high-water mark and formatting come after the
 * release: by then the fiber may be running again. */
static void dump_one(weft_fiber *f, void *arg)
{
    struct dump *d = arg;
    struct weft__text *t = &d->t;
    uint64_t now = weft__now();
    void *pcs[DUMP_FRAMES];
    int n = 0;
    uint64_t id;
    char name[WEFT_NAME_MAX];
    weft__fiber_ident(f, &id, name);
    unsigned flags = __atomic_load_n(&f->flags, __ATOMIC_RELAXED);
    weft__text_printf(t, "fiber %llu \"%s\"%s%s: ", (unsigned long long)id, name,
                      flags & WEFT__MAIN ? " (main)" : "", flags & WEFT_PINNED ? " (pinned)" : "");
    if (f == weft__cur_fiber()) {
        weft__text_printf(t, "running on worker %d (the caller)", weft__worker_index(f->worker));
        n = d->self_n;
        memcpy(pcs, d->self_pcs, (size_t)(n > 0 ? n : 0) * sizeof *pcs);
    } else if (weft__fiber_hold(f)) {
        int st = atomic_load_explicit(&f->state, memory_order_relaxed);
        if (st == WEFT_F_PARKED || (st == WEFT_F_RUNNABLE && f->wkind != WEFT_W_NONE)) {
            weft__text_printf(t, st == WEFT_F_PARKED ? "parked on " : "runnable (woken from ");
            describe_wait(t, f, now);
            if (st != WEFT_F_PARKED)
                weft__text_printf(t, ")");
        } else {
            weft__text_printf(t, "runnable");
        }
        n = weft__unwind_ctx(&f->ctx, pcs, DUMP_FRAMES);
        weft__fiber_release(f);
    } else {
        int st = atomic_load_explicit(&f->state, memory_order_relaxed);
        const weft__worker *w = __atomic_load_n(&f->worker, __ATOMIC_RELAXED);
        if (st == WEFT_F_DEAD)
            weft__text_printf(t, "returned, not yet joined");
        else
            weft__text_printf(t, "running on worker %d", weft__worker_index(w));
    }
    const weft__stack *s = stack_of(f);
    weft__text_printf(t, "; stack %llu KiB, high-water %llu KiB\n",
                      (unsigned long long)((size_t)(s->hi - s->lo) >> 10),
                      (unsigned long long)((weft__stack_used(s) + 1023) >> 10));
    if (n > 0)
        backtrace_cached(t, pcs, n, &d->syms);
}

/* A plain thread reads the runtime's records only inside the readers'
 * gate, which the teardown waits on before it frees them (sched.c, START-UP
 * AND SHUTDOWN). A worker's thread needs none: the runtime outlives it. */
static bool read_begin(bool *gated)
{
    *gated = weft__cur_worker() == NULL;
    return !*gated || weft__reader_enter();
}

static void read_end(bool gated)
{
    if (gated)
        weft__reader_leave();
}

__attribute__((noinline)) int weft_dump(int fd)
{
    if (fd < 0)
        return -EINVAL;
    bool gated;
    if (!read_begin(&gated))
        return -EPERM;
    struct dump *d = calloc(1, sizeof *d);
    if (!d) {
        read_end(gated);
        return -ENOMEM;
    }
    d->self_n = weft__unwind_self(d->self_pcs, DUMP_FRAMES, 1);
    struct weft__text *t = &d->t;
    int64_t nlive = weft__live_fibers();
    uint64_t alive = nlive > 0 ? (uint64_t)nlive : 0;
    weft__text_printf(t, "weft: dump of %llu fibers on %u workers\n",
                      (unsigned long long)alive, weft__rt.n);
    for (unsigned i = 0; i < weft__rt.n; i++) {
        weft__worker *w = &weft__rt.workers[i];
        weft__text_printf(t, "worker %u: %u queued, %llu switches, %llu steals, %llu parks\n", i,
                          runq_len(&w->rq) + (unsigned)deque_len(&w->dq) +
                              (atomic_load(&w->rq.next) != NULL),
                          (unsigned long long)atomic_load(&w->st.switches),
                          (unsigned long long)atomic_load(&w->st.steals),
                          (unsigned long long)atomic_load(&w->st.parks));
    }
    weft__each_fiber(dump_one, d);
    read_end(gated);
    weft__text_printf(t, "weft: end of dump\n");
    int err = t->oom ? -ENOMEM : 0;
    weft__text_write(t, fd);
    for (size_t i = 0; i < SYM_SLOTS; i++)
        free(d->syms.slot[i].text);
    free(d);
    return err;
}

/* ----------------------------------------------------------------- stats */

int weft_stats(weft_stats_t *st)
{
    if (!st)
        return -EINVAL;
    bool gated;
    if (!read_begin(&gated))
        return -EPERM;
    memset(st, 0, sizeof *st);
    st->workers = weft__rt.n;
    st->reported = st->workers < WEFT_STATS_WORKERS ? st->workers : WEFT_STATS_WORKERS;
    int64_t live = weft__live_fibers();
    st->alive = live > 0 ? (uint64_t)live : 0;
    st->pool_threads = atomic_load(&weft__pool_threads);
    st->watchdog_reports = atomic_load(&weft__wd_reports);
    st->watchdog_moved = atomic_load(&weft__wd_moved);
    for (unsigned i = 0; i < weft__rt.n; i++) {
        weft__worker *w = &weft__rt.workers[i];
        weft_worker_stats s = {
            .switches = atomic_load_explicit(&w->st.switches, memory_order_relaxed),
            .steals = atomic_load_explicit(&w->st.steals, memory_order_relaxed),
            .stolen = atomic_load_explicit(&w->st.stolen, memory_order_relaxed),
            .parks = atomic_load_explicit(&w->st.parks, memory_order_relaxed),
            .polls = atomic_load_explicit(&w->st.polls, memory_order_relaxed),
            .spawned = atomic_load_explicit(&w->st.spawned, memory_order_relaxed),
            .exited = atomic_load_explicit(&w->st.exited, memory_order_relaxed),
            .timers_fired = atomic_load_explicit(&w->st.timers_fired, memory_order_relaxed),
        };
        if (i < st->reported)
            st->worker[i] = s;
        st->total.switches += s.switches;
        st->total.steals += s.steals;
        st->total.stolen += s.stolen;
        st->total.parks += s.parks;
        st->total.polls += s.polls;
        st->total.spawned += s.spawned;
        st->total.exited += s.exited;
        st->total.timers_fired += s.timers_fired;
    }
    read_end(gated);
    return 0;
}

/* --------------------------------------------------------- start / stop */

void weft__diag_start(const weft_config *cfg)
{
    weft__diag_os_start();
    weft__deadlock_start();
    weft__trace_start();
    weft__watchdog_start(cfg);
}

void weft__diag_stop(void)
{
    weft__watchdog_stop();
    weft__trace_stop();
    weft__diag_os_stop();
}
