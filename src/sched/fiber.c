/*
 * The fiber API: spawn, join, detach, cancel, sleep, deadlines and
 * fiber-local storage, on top of the scheduler's park/ready (sched.c).
 *
 * Memory: a fiber's record lives at the top of its own stack, just below the
 * stack's own record (arch.h), so spawning is one stack allocation, usually
 * a pop from the worker's cache of freed stacks:
 *
 *     hi ┌──────────────────┐
 *        │ weft__stack      │  which stack, its guard, its pool
 *        │ weft_fiber       │  this file's record
 *        │ first frame  ... │  weft__ctx_make's frame, then fn's frames
 *        │        ↓         │
 *     lo ├──────────────────┤
 *        │ guard            │  faults on touch (see stack.c)
 *        └──────────────────┘
 *
 * Life cycle (f->state): RUNNABLE -> RUNNING -> (PARKED -> RUNNABLE ->
 * RUNNING)* -> DEAD -> FREED (sched.h, enum weft__fstate). A joinable
 * fiber stays DEAD, its stack allocated, until joined; a detached one is
 * freed as it returns.
 *
 * HANDLES
 *   A record is reused by the next fiber that gets its stack, usually the
 *   next one spawned on the same worker, so a bare pointer would let a
 *   stale handle (a fiber already joined, or detached and returned) join
 *   or cancel whichever fiber lives there now. So a handle carries the
 *   record's generation, f->gen, in pointer bits the record's address
 *   never uses (sched.h: the low 6, and the top 16 on 64-bit machines;
 *   22 bits in all), and every call that takes one checks it:
 *
 *     - f->gen grows by one each time the record is retired, which is
 *       always inside the jlock section that decides to free it (the
 *       joiner's, weft_detach's for a returned fiber, a detached fiber's
 *       own exit: retire()); spawn leaves gen, pins and jlock alone;
 *     - a call with a handle takes jlock and compares generations: equal,
 *       the fiber is not retired and cannot be until the lock is dropped;
 *       different, the handle is stale and the call answers -EINVAL (0 and
 *       "" for weft_id and weft_name, -ESRCH for weft_backtrace, as for a
 *       fiber that has returned);
 *     - a call that acts after dropping jlock (weft_cancel, weft_backtrace)
 *       counts itself in f->pins first, under the lock; the free that
 *       follows a retirement waits for pins to drain (weft__fiber_free), so
 *       the record is not reused under it.
 *
 *   The cost is a few plain loads, compares and stores: the generation
 *   packed at spawn, compared and bumped under the jlock a joiner takes
 *   anyway, and pins read once at the free (with the state word's
 *   assertions, spawn + join on one worker went up about 5% in CPU time;
 *   no locked instruction was added). Handles stay one word, equal for
 *   equal fibers (weft_self returns the same value every time, and the
 *   value spawn gave out), and differ between two fibers that used one
 *   record, unless 2^22 fibers used it in between. The one thing a handle cannot survive is its
 *   runtime: stacks are unmapped when weft_run returns, so outside a
 *   runtime every handle is stale and nothing is read through it.
 *
 *   Rejected: handles as ids looked up in a table (a lookup and a shared
 *   structure on every spawn); keeping a record out of reuse while a
 *   handle to it may exist (every handle may exist forever).
 */
#define _GNU_SOURCE
#include "worker.h"

#include "san.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------- all fibers */

/* There is no list of fibers: every record sits at the top of a stack, so
 * walking the stacks finds them all, and spawn and exit touch nothing but
 * the fiber itself. */
static weft_fiber *fiber_of(weft__stack *s)
{
    return (weft_fiber *)(((uintptr_t)s->hi - sizeof(weft_fiber)) & ~(uintptr_t)63);
}

struct each { void (*fn)(weft_fiber *, void *); void *arg; };

static void each_stack(weft__stack *s, void *arg)
{
    struct each *e = arg;
    weft_fiber *f = fiber_of(s);
    int st = atomic_load_explicit(&f->state, memory_order_acquire);
    if (st >= WEFT_F_RUNNABLE && st <= WEFT_F_DEAD &&
        atomic_load_explicit(&f->magic, memory_order_relaxed) == WEFT_FIBER_MAGIC)
        e->fn(f, e->arg);
}

void weft__each_fiber(void (*fn)(weft_fiber *, void *), void *arg)
{
    struct each e = { fn, arg };
    weft__stack_each(each_stack, &e);
}

#define KEYS_MAX 1024
#define DESTRUCTOR_ROUNDS 4

/* A key's generation is odd while it is in use. Both fields change only
 * under keys_lock. gen is also read without it, on every get and set, so
 * every write of it is atomic (a release: a reader that sees the new
 * generation sees the rest of the change); dtor is read only under the
 * lock, together with gen, so that a destructor always belongs to the
 * generation its value was set under (a delete and a create of the same
 * slot between the two reads would otherwise pair an old value with the
 * new key's destructor). */
struct fls_slot { void *v; unsigned gen; };
static struct { unsigned gen; void (*dtor)(void *); } keys[KEYS_MAX];
static weft__lock keys_lock = WEFT__LOCK_INIT;

void weft__fiber_atfork_child(void)
{
    weft__lock_init(&keys_lock);   /* keys stay: the child's fibers use them too */
}

static void key_bump(unsigned k)
{
    __atomic_store_n(&keys[k].gen, keys[k].gen + 1, __ATOMIC_RELEASE);
}

/* ---------------------------------------------------------------- handles */

weft_fiber *weft__handle(const weft_fiber *f)
{
    uint32_t g = atomic_load_explicit(&f->gen, memory_order_relaxed) & WEFT__HANDLE_GEN_MASK;
    uintptr_t v = (uintptr_t)f | (g & 63);
#if WEFT__HANDLE_HIGH
    v |= (uintptr_t)(g >> 6) << 48;
#endif
    return (weft_fiber *)v;
}

/* The record behind h, if it is a record at all, without touching memory
 * a runtime no longer maps. */
static weft_fiber *record(const weft_fiber *h)
{
    weft_fiber *f = weft__handle_rec(h);
    if (!f || !weft__running() ||
        atomic_load_explicit(&f->magic, memory_order_relaxed) != WEFT_FIBER_MAGIC)
        return NULL;
    return f;
}

/* With f->jlock held: is h a handle to the fiber living in f now? */
static bool current(const weft_fiber *f, const weft_fiber *h)
{
    return (atomic_load_explicit(&f->gen, memory_order_relaxed) & WEFT__HANDLE_GEN_MASK) ==
           weft__handle_gen(h);
}

/* With f->jlock held, deciding to free f: every handle to it is stale from
 * here on. */
static void retire(weft_fiber *f)
{
    atomic_store_explicit(&f->gen, atomic_load_explicit(&f->gen, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* A handle call from a plain thread reads a record the runtime's teardown
 * unmaps with its stack: it runs inside the readers' gate (sched.c,
 * START-UP AND SHUTDOWN), which the teardown waits out. A fiber's call
 * needs no gate: its runtime cannot stop under it. Refused (no runtime, or
 * one starting or stopping), the handle is stale to the caller. */
static bool gate_in(bool *plain)
{
    *plain = !weft__cur_fiber();
    return !*plain || weft__reader_enter();
}

static void gate_out(bool plain)
{
    if (plain)
        weft__reader_leave();
}

weft_fiber *weft__handle_pin(const weft_fiber *h)
{
    bool plain;
    if (!gate_in(&plain))
        return NULL;
    weft_fiber *f = record(h);
    bool ok = false;
    if (f) {
        weft__spin_lock(&f->jlock);
        ok = current(f, h);
        if (ok)
            atomic_fetch_add_explicit(&f->pins, 1, memory_order_relaxed);
        weft__spin_unlock(&f->jlock);
    }
    if (!ok)
        gate_out(plain);
    return ok ? f : NULL;
}

void weft__handle_unpin(weft_fiber *f)
{
    atomic_fetch_sub_explicit(&f->pins, 1, memory_order_release);
    gate_out(!weft__cur_fiber());   /* the thread that pinned: no park between */
}

/* ------------------------------------------------------------ fiber-local */

int weft_key_create(weft_key *key, void (*destructor)(void *))
{
    if (!key)
        return -EINVAL;
    weft__lock_acquire(&keys_lock);
    for (unsigned i = 0; i < KEYS_MAX; i++) {
        if (!(keys[i].gen & 1)) {
            keys[i].dtor = destructor;
            key_bump(i);
            weft__lock_release(&keys_lock);
            *key = i;
            return 0;
        }
    }
    weft__lock_release(&keys_lock);
    return -EAGAIN;
}

int weft_key_delete(weft_key key)
{
    if (key >= KEYS_MAX)
        return -EINVAL;
    weft__lock_acquire(&keys_lock);
    int err = 0;
    if (keys[key].gen & 1) {
        key_bump(key);   /* values set under the old generation become invisible */
        keys[key].dtor = NULL;
    } else {
        err = -EINVAL;
    }
    weft__lock_release(&keys_lock);
    return err;
}

void *weft_getspecific(weft_key key)
{
    weft_fiber *self = weft__cur_fiber();
    if (!self || key >= self->fls_len)
        return NULL;
    struct fls_slot *s = &((struct fls_slot *)self->fls)[key];
    unsigned gen = __atomic_load_n(&keys[key].gen, __ATOMIC_ACQUIRE);
    return s->gen == gen ? s->v : NULL;
}

int weft_setspecific(weft_key key, const void *value)
{
    weft_fiber *self = weft__cur_fiber();
    if (key >= KEYS_MAX)
        return -EINVAL;
    unsigned gen = __atomic_load_n(&keys[key].gen, __ATOMIC_ACQUIRE);
    if (!(gen & 1))
        return -EINVAL;
    if (!self)
        return -EPERM;
    if (key >= self->fls_len) {
        unsigned len = self->fls_len ? self->fls_len : 16;
        while (len <= key)
            len *= 2;
        struct fls_slot *n = realloc(self->fls, len * sizeof *n);
        if (!n)
            return -ENOMEM;
        memset(n + self->fls_len, 0, (len - self->fls_len) * sizeof *n);
        self->fls = (void **)n;
        self->fls_len = len;
    }
    struct fls_slot *s = &((struct fls_slot *)self->fls)[key];
    s->v = (void *)value;
    s->gen = gen;
    return 0;
}

/* Run on the fiber's own stack as it returns: destructors may block. */
static void fls_run_destructors(weft_fiber *self)
{
    struct fls_slot *slots = (struct fls_slot *)self->fls;
    for (int round = 0; round < DESTRUCTOR_ROUNDS; round++) {
        bool any = false;
        for (unsigned k = 0; k < self->fls_len; k++) {
            slots = (struct fls_slot *)self->fls;   /* a destructor may have grown it */
            void *v = slots[k].v;
            if (!v)
                continue;
            weft__lock_acquire(&keys_lock);
            void (*dtor)(void *) = slots[k].gen == keys[k].gen ? keys[k].dtor : NULL;
            weft__lock_release(&keys_lock);
            if (!dtor)
                continue;
            slots[k].v = NULL;
            dtor(v);
            any = true;
        }
        if (!any)
            break;
    }
}

/* --------------------------------------------------------- life cycle */

/* The first switch to a fiber calls this with the switch's value: the
 * fiber that handed over the CPU, or NULL from the loop (weft__switch_out). */
static void fiber_entry(void *prev)
{
    weft_fiber *self = weft__cur_fiber();
    weft__fiber_entry_finish(self, prev);
    self->ret = self->fn(self->arg);
    if (self->fls)
        fls_run_destructors(self);
    /* A joiner already waiting is readied now, into this worker's next
     * slot, so that we switch straight to it instead of through the loop.
     * jlock stays held until our switch is finished (weft__fiber_finish,
     * on the joiner's stack or the loop's): a joiner that runs before
     * then, here or stolen elsewhere, waits on it before freeing this
     * stack, as it always has; and nobody can detach us meanwhile. */
    /* Atomic: weft_detach may be setting WEFT_DETACHED in the same word
     * right now, from any thread (it holds jlock; we do not yet). */
    if (!(__atomic_load_n(&self->flags, __ATOMIC_RELAXED) & WEFT__MAIN)) {
        weft__spin_lock(&self->jlock);
        weft__fstate_set(self, WEFT_F_RUNNING, WEFT_F_DEAD);
        weft_fiber *j = self->joiner;   /* none if detached */
        if (j && weft__wake_claim(j, 0))
            weft__ready(j);
    }
    weft__switch_out(self, WEFT_POST_EXIT);
    weft__panic(__FILE__, __LINE__, "a returned fiber was resumed");
}

/* Fiber ids: unique for the life of the process, increasing in spawn order
 * on each worker. A worker takes them ID_BLOCK at a time from the global
 * counter, so that spawns on different workers do not fight over its line. */
#define ID_BLOCK 1024

static uint64_t next_id(weft__worker *w)
{
    if (!w)
        return atomic_fetch_add_explicit(&weft__rt.next_id, 1, memory_order_relaxed);
    if (w->id_next == w->id_end) {
        w->id_next = atomic_fetch_add_explicit(&weft__rt.next_id, ID_BLOCK, memory_order_relaxed);
        w->id_end = w->id_next + ID_BLOCK;
    }
    return w->id_next++;
}

/* A stack for a new fiber: from the worker's cache, refilled from the
 * allocator a batch at a time when it is empty. A cache of another size
 * class is left alone (most programs spawn one size). */
static int stack_get(weft__worker *w, size_t size, weft__stack **out)
{
    if (!w)
        return weft__stack_alloc(size, out);
    if (w->nscache == 0) {
        int n = weft__stack_alloc_many(size, w->scache, STACK_BATCH);
        if (n < 0)
            return n;
        w->nscache = (unsigned)n;
    } else if (w->scache[w->nscache - 1]->size != weft__stack_class(size)) {
        return weft__stack_alloc(size, out);
    }
    *out = w->scache[--w->nscache];
    return 0;
}

/* Zero n bytes (a multiple of 8) with 16-byte stores. For a memset of a
 * couple of hundred bytes of known size, GCC's generic tuning emits `rep
 * stosq`, whose start-up on the AMD EPYC we measure on costs more than the
 * stores themselves: spawn + join on one worker took 105 ns with it and 90
 * with this loop (medians of 10 alternating runs, bench_switch
 * spawn_join_1w). The empty asm keeps the compiler from turning the loop
 * back into that memset. */
static inline __attribute__((always_inline)) void zero_record(void *p, size_t n)
{
    typedef uint64_t pair __attribute__((vector_size(16), aligned(8)));
    pair *q = p;
    for (size_t i = 0; i < n / 16; i++) {
        q[i] = (pair){ 0, 0 };
        __asm__("" ::: "memory");
    }
    if (n % 16)
        *(uint64_t *)((char *)p + n - 8) = 0;
}

/* id and name are read by the watchdog and the dump from other threads
 * while the fiber may be returning and this very code reusing its record
 * (weft__fiber_ident in diag.c). So they lie outside the range
 * zero_record clears and are stored word by word with atomic stores,
 * after a release fence: such a reader gets old or new words, never a
 * data race, and tells which by checking its own sequence afterwards. */
static void set_ident(weft_fiber *f, uint64_t id, const char *name)
{
    _Static_assert(offsetof(weft_fiber, name) % 8 == 0 && WEFT_NAME_MAX % 8 == 0,
                   "the name is stored in whole words");
    union { char c[WEFT_NAME_MAX]; uint64_t w[WEFT_NAME_MAX / 8]; } u = { .w = { 0 } };
    if (name)
        strncpy(u.c, name, WEFT_NAME_MAX - 1);
    atomic_thread_fence(memory_order_release);
    uint64_t *dst = (uint64_t *)(void *)f->name;
    for (size_t i = 0; i < WEFT_NAME_MAX / 8; i++)
        __atomic_store_n(&dst[i], u.w[i], __ATOMIC_RELAXED);
    __atomic_store_n(&f->id, id, __ATOMIC_RELAXED);
}


/* Spawn on worker w, or from a plain thread (w == NULL) that passed the
 * outside gate (sched.c, START-UP AND SHUTDOWN). */
static inline __attribute__((always_inline)) int
spawn_on(weft__worker *w, weft_fiber **out, const weft_attr *attr, void *(*fn)(void *), void *arg)
{
    unsigned flags = attr ? attr->flags : 0;
    if (!fn || (flags & ~(unsigned)(WEFT_DETACHED | WEFT_PINNED)))
        return -EINVAL;
    if (!out && !(flags & WEFT_DETACHED))
        return -EINVAL;
    size_t size = attr && attr->stack_size ? attr->stack_size : weft__rt.stack_size;
    if (size < WEFT_STACK_MIN || size > WEFT_STACK_MAX)
        return -EINVAL;

    weft__stack *s = NULL;
    int err = stack_get(w, size, &s);
    if (err < 0)
        return err;

    weft_fiber *f = fiber_of(s);
    /* Zero all but the header (published last, below), the identity
     * (set_ident) and what outlives the fiber (gen, pins, jlock): under
     * 256 bytes. The whole record is four cache lines. */
    _Static_assert(sizeof(weft_fiber) <= 256, "the record grew past four cache lines");
    _Static_assert((offsetof(weft_fiber, id) - offsetof(weft_fiber, ctx)) % 8 == 0,
                   "zero_record stores whole words");
    zero_record(&f->ctx, offsetof(weft_fiber, id) - offsetof(weft_fiber, ctx));
    f->flags = flags;
    f->stack = s;
    f->fn = fn;
    f->arg = arg;
    f->deadline = -1;
    f->timer.idx = SIZE_MAX;
    set_ident(f, next_id(w), attr ? attr->name : NULL);
    if (atomic_load(&weft__rt.cancel_all))
        atomic_store(&f->cancelled, 1);
    if (flags & WEFT_PINNED)
        f->home = w ? w : &weft__rt.workers[0];
    weft__ctx_make(&f->ctx, s->lo, (size_t)((char *)f - s->lo), fiber_entry);
    f->tsan_fiber = san_tsan_create();

    /* Counted before anyone can see it run (weft__live_fibers, all_gone). */
    if (w)
        weft__stat_add(w->st.spawned, 1);
    else
        atomic_fetch_add(&weft__rt.ext_spawned, 1);
    atomic_store_explicit(&f->magic, WEFT_FIBER_MAGIC, memory_order_relaxed);
    weft__assert(weft__fstate_legal(atomic_load_explicit(&f->state, memory_order_relaxed),
                                    WEFT_F_RUNNABLE));
    atomic_store_explicit(&f->state, WEFT_F_RUNNABLE, memory_order_release);   /* visible to walkers */
    if (!w) {
        /* Main may have returned since we read cancel_all, its walk of
         * the stacks missing f: a fence against the barrier between its
         * two walks (weft__fiber_finish). Either it sees f, or we see
         * cancel_all. A fiber spawning here is cancelled itself then. */
        atomic_thread_fence(memory_order_seq_cst);
        if (atomic_load(&weft__rt.cancel_all))
            atomic_store(&f->cancelled, 1);
    }
    /* The handle carries the address in 48 bits (sched.h). */
    weft__assert(((uintptr_t)f & ~WEFT__HANDLE_ADDR_MASK & ~(uintptr_t)63) == 0);
    if (out)
        *out = weft__handle(f);
    weft__ready_new(f, w);
    return 0;
}

/* A plain thread: only while the runtime is RUNNING, and counted so that
 * it cannot end, or be freed, under us. Out of line: the spawns from
 * fibers pay neither its code nor its atomics. */
static __attribute__((noinline, cold)) int
spawn_outside(weft_fiber **out, const weft_attr *attr, void *(*fn)(void *), void *arg)
{
    if (!weft__outside_enter())
        return -EPERM;
    int err = spawn_on(NULL, out, attr, fn, arg);
    weft__outside_leave();
    return err;
}

int weft_spawn(weft_fiber **out, const weft_attr *attr, void *(*fn)(void *), void *arg)
{
    weft__worker *w = weft__cur_worker();
    if (WEFT_LIKELY(w))
        return spawn_on(w, out, attr, fn, arg);
    return spawn_outside(out, attr, fn, arg);
}

void weft__fiber_free(weft__worker *w, weft_fiber *f)
{
    /* Retired already (HANDLES): a handle call that pinned f before that
     * is still using it, for microseconds at most. */
    for (unsigned spins = 0; atomic_load_explicit(&f->pins, memory_order_acquire); spins++) {
        if (spins < 100)
            weft__cpu_relax();
        else
            weft__os_yield();
    }
    weft__fstate_set(f, WEFT_F_DEAD, WEFT_F_FREED);
    san_tsan_destroy(f->tsan_fiber);
    free(f->fls);
    f->fls = NULL;
    weft__stack *s = f->stack;
    if (!w) {
        weft__stack_free(s);
        return;
    }
    if (w->nscache == STACK_CACHE_MAX) {
        /* full: the oldest (coldest) batch goes back to the allocator */
        weft__stack_free_many(w->scache, STACK_BATCH);
        memmove(w->scache, w->scache + STACK_BATCH,
                (STACK_CACHE_MAX - STACK_BATCH) * sizeof *w->scache);
        w->nscache -= STACK_BATCH;
    }
    w->scache[w->nscache++] = s;
}

/* Interrupt f's wait if it has one now; true if this call woke it. */
static bool cancel_interrupt(weft_fiber *f)
{
    return atomic_load(&f->wstate) == WEFT_WS_WAITING && weft__wake_interrupt(f, -ECANCELED);
}

/* Main returned: cancel everyone, with one heavy barrier for all of them
 * (weft_cancel's second look, batched). The second walk marks too: a plain
 * thread's spawn the first one missed is in it (spawn_on). */
static void cancel_mark(weft_fiber *f, void *arg)
{
    (void)arg;
    atomic_store(&f->cancelled, 1);
    cancel_interrupt(f);
}

/* After f switched away for the last time, on whichever stack took over
 * (the loop's, or the next fiber's: finish_switch in sched.c). */
void weft__fiber_finish(weft__worker *w, weft_fiber *f)
{
    /* Release: whoever counts this exit sees the spawns that led to it
     * (all_gone in sched.c). */
    atomic_store_explicit(&w->st.exited,
                          atomic_load_explicit(&w->st.exited, memory_order_relaxed) + 1,
                          memory_order_release);
    if (f->flags & WEFT__MAIN) {
        weft__rt.main_ret = f->ret;
        /* Plain threads may spawn no more; DRAINING comes before main_done,
         * which the worker that ends the runtime reads before it looks at
         * the outside gate (sched.c, START-UP AND SHUTDOWN). */
        atomic_store(&weft__rt.phase, WEFT_RT_DRAINING);
        atomic_store(&weft__rt.cancel_all, 1);
        atomic_store(&weft__rt.main_done, 1);
        weft__each_fiber(cancel_mark, NULL);
        weft__barrier_heavy();
        weft__each_fiber(cancel_mark, NULL);
        weft__fstate_set(f, WEFT_F_RUNNING, WEFT_F_DEAD);
        weft__spin_lock(&f->jlock);
        retire(f);
        weft__spin_unlock(&f->jlock);
        weft__fiber_free(w, f);
        return;
    }
    /* fiber_entry marked f dead and readied its joiner, and holds jlock */
    bool detached = f->flags & WEFT_DETACHED;   /* read while jlock still pins it */
    if (detached)
        retire(f);
    weft__spin_unlock(&f->jlock);   /* a joiner or weft_detach may free f from here on */
    if (detached)
        weft__fiber_free(w, f);
}

static void join_unlink(weft_fiber *self)
{
    weft_fiber *f = self->wobj;
    weft__spin_lock(&f->jlock);
    if (f->joiner == self) {
        f->joiner = NULL;
        f->joined = 0;
    }
    weft__spin_unlock(&f->jlock);
}

static int join(weft_fiber *h, void **ret)
{
    weft_fiber *f = record(h);
    if (!f)
        return -EINVAL;
    weft_fiber *self = weft__cur_fiber();
    weft__spin_lock(&f->jlock);
    int r = !current(f, h) || (f->flags & WEFT_DETACHED) || f->joined ? -EINVAL
          : !self ? -EPERM
          : f == self ? -EDEADLK : 0;
    if (r < 0) {
        weft__spin_unlock(&f->jlock);
        return r;
    }
    if (atomic_load(&f->state) != WEFT_F_DEAD) {
        if ((r = weft__wait_check(self)) < 0) {
            weft__spin_unlock(&f->jlock);
            return r;
        }
        f->joined = 1;
        f->joiner = self;
        weft__wait_prepare(self, WEFT_W_JOIN, f, join_unlink);
        weft__spin_unlock(&f->jlock);
        r = weft__wait_park(self, -1);
        if (r < 0)
            return r;   /* cancelled or timed out: join_unlink made f joinable again */
        /* Woken by f's exit under jlock: pass through the lock so that its
         * worker is done with f before we free it. */
        weft__spin_lock(&f->jlock);
    }
    f->joined = 1;
    retire(f);
    weft__spin_unlock(&f->jlock);
    if (ret)
        *ret = f->ret;
    weft__fiber_free(weft__cur_worker(), f);
    return 0;
}

static int detach(weft_fiber *h)
{
    weft_fiber *f = record(h);
    if (!f)
        return -EINVAL;
    weft__spin_lock(&f->jlock);
    if (!current(f, h) || (f->flags & WEFT_DETACHED) || f->joined) {
        weft__spin_unlock(&f->jlock);
        return -EINVAL;
    }
    if (atomic_load(&f->state) == WEFT_F_DEAD) {
        f->joined = 1;
        retire(f);
        weft__spin_unlock(&f->jlock);
        weft__fiber_free(weft__cur_worker(), f);
        return 0;
    }
    /* jlock orders this against join and exit; fiber_entry and weft_dump
     * read the word without it (WEFT__MAIN, WEFT_PINNED), hence atomic. */
    __atomic_fetch_or(&f->flags, WEFT_DETACHED, __ATOMIC_RELAXED);
    weft__spin_unlock(&f->jlock);
    return 0;
}

/* The flag is sticky: every blocking call f makes from now on returns
 * -ECANCELED, and a wait f is in now is interrupted.
 *
 * A fiber going to wait stores WAITING and then reads `cancelled`
 * (weft__wait_prepare, weft__wait_park); we store `cancelled` and then
 * read wstate. If f is waiting when we look, we win its claim and are
 * done: the common case, a fiber blocked in a read or a sleep. Otherwise
 * f may be just entering a wait, its WAITING still in its CPU's store
 * buffer while its read of `cancelled` went ahead of our store: then
 * neither of us would see the other. The heavy half of the asymmetric
 * barrier (platform.h) rules that out, and we look again. It costs a
 * system call (about 20 us on a 2-vCPU VM), paid only when cancelling a
 * fiber that is not blocked; in exchange, every wait of every fiber is
 * one locked instruction cheaper. */
int weft_cancel(weft_fiber *h)
{
    weft_fiber *f = weft__handle_pin(h);
    if (!f)
        return -EINVAL;
    atomic_store(&f->cancelled, 1);
    if (!cancel_interrupt(f) && atomic_load(&f->state) != WEFT_F_DEAD) {
        weft__barrier_heavy();
        cancel_interrupt(f);
    }
    weft__handle_unpin(f);
    return 0;
}

int weft_cancelled(void)
{
    weft_fiber *self = weft__cur_fiber();
    return self && atomic_load(&self->cancelled) ? 1 : 0;
}

void weft_yield(void)
{
    weft_fiber *self = weft__cur_fiber();
    if (!self) {
        weft__os_yield();
        return;
    }
    weft__yield(self);
}

weft_fiber *weft_self(void)
{
    weft_fiber *self = weft__cur_fiber();
    return self ? weft__handle(self) : NULL;
}

/* Read under jlock, with the generation checked: a record being reused
 * for a new fiber rewrites its id and name only after a retirement. The
 * name stays readable until the fiber is joined (or, detached, returns). */
static uint64_t id_of(const weft_fiber *h)
{
    weft_fiber *f = record(h);
    if (!f)
        return 0;
    weft__spin_lock(&f->jlock);
    uint64_t id = current(f, h) ? f->id : 0;
    weft__spin_unlock(&f->jlock);
    return id;
}

static const char *name_of(const weft_fiber *h)
{
    weft_fiber *f = record(h);
    if (!f)
        return "";
    weft__spin_lock(&f->jlock);
    const char *name = current(f, h) ? f->name : "";
    weft__spin_unlock(&f->jlock);
    return name;
}

/* The handle calls, through the plain threads' gate (gate_in). */
int weft_join(weft_fiber *h, void **ret)
{
    bool plain;
    if (!gate_in(&plain))
        return -EINVAL;
    int r = join(h, ret);
    gate_out(plain);
    return r;
}

int weft_detach(weft_fiber *h)
{
    bool plain;
    if (!gate_in(&plain))
        return -EINVAL;
    int r = detach(h);
    gate_out(plain);
    return r;
}

uint64_t weft_id(const weft_fiber *h)
{
    bool plain;
    if (!gate_in(&plain))
        return 0;
    uint64_t id = id_of(h);
    gate_out(plain);
    return id;
}

const char *weft_name(const weft_fiber *h)
{
    bool plain;
    if (!gate_in(&plain))
        return "";
    const char *name = name_of(h);
    gate_out(plain);
    return name;
}
uint64_t weft_now(void) { return weft__now(); }

int weft_worker_id(void)
{
    return weft__worker_index(weft__cur_worker());
}

int weft_sleep(uint64_t ns)
{
    weft_fiber *self = weft__cur_fiber();
    if (!self) {
        weft__os_sleep_ns(ns);
        return 0;
    }
    int r = weft__wait_check(self);
    if (r < 0)
        return r;
    if (ns == 0) {
        weft__yield(self);
        return 0;
    }
    uint64_t now = weft__now();
    int64_t until = ns > (uint64_t)INT64_MAX - now ? -1 : (int64_t)(now + ns);
    weft__wait_prepare(self, WEFT_W_SLEEP, NULL, NULL);
    r = weft__wait_park(self, until);
    /* Our own timer firing is the normal end of a sleep; -ETIMEDOUT is
     * reserved for the fiber's deadline coming first. */
    if (r == -ETIMEDOUT && (self->deadline < 0 || (until >= 0 && self->deadline > until)))
        r = 0;
    return r;
}

int64_t weft_deadline(int64_t abs_ns)
{
    weft_fiber *self = weft__cur_fiber();
    if (!self)
        return -EPERM;
    int64_t old = self->deadline;
    self->deadline = abs_ns < 0 ? -1 : abs_ns;
    return old;
}

/* weft_deadline returns -EPERM, which is -1, "none": these two keep the
 * error apart from the value. */
int weft_deadline_set(int64_t abs_ns, int64_t *old)
{
    if (abs_ns < -1)
        return -EINVAL;
    weft_fiber *self = weft__cur_fiber();
    if (!self)
        return -EPERM;
    int64_t prev = weft_deadline(abs_ns);
    if (old)
        *old = prev;
    return 0;
}

int weft_deadline_get(int64_t *abs_ns)
{
    if (!abs_ns)
        return -EINVAL;
    weft_fiber *self = weft__cur_fiber();
    if (!self)
        return -EPERM;
    *abs_ns = self->deadline;
    return 0;
}
