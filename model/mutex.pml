/*
 * mutex.pml: weft_mutex (src/sched/sync.c) on its word lock (waitq.h) and
 * the wait protocol (sched.h).
 *
 * NF fibers, each on its own worker thread, lock and unlock one mutex
 * (fiber 0 ITER0 times, the others once). Modelled step by step:
 * try_acquire, spin_acquire (one try, or none), mutex_lock_slow with its
 * QUEUED / WOKEN / STARVING transitions and the requeue at the front,
 * mutex_unlock_, unlock_wake, unlock_handoff, weft__waitq_claim, and the
 * word lock qlock with its asymmetric barrier: the unlocker's release
 * store of `held` and load of `sleepers` with only a compiler barrier
 * between; the sleeper's increment of `sleepers`, membarrier, and CAS of
 * `held`, and the futex. Time ("waited more than 1 ms", STARVE_NS) is a
 * free choice at each place the code reads the clock.
 *
 * Checked:
 *   - mutual exclusion: at most one fiber between lock and unlock, and a
 *     fiber handed the lock (M_OWNED) finds LOCKED set and itself owner;
 *   - no deadlock and no lost wake-up: every fiber finishes all its
 *     lock/unlock rounds (a fiber parked or a worker asleep on the word
 *     lock's futex at the end is an invalid end state), and the mutex
 *     ends unlocked with an empty queue;
 *   - with -DCANCEL, fiber 1's wait may be cancelled (weft_cancel's
 *     claim, then mutex_unlink): the hand-off's claim race.
 *
 * Not checked: a starvation bound. It is a statement about time (a waiter
 * that waited 1 ms turns the mutex to hand-off mode, and from then on
 * waiters are served in queue order), and time here is a free choice, so
 * a run where nobody ever waits "long" is as valid as any. What is
 * checked is the mechanism the bound rests on: in STARVING mode the lock
 * goes only to the queue's head (mutual exclusion would fail otherwise).
 *
 * Mutants (spin -D...), each must make Spin find the bug:
 *   MUTANT_NO_HEAVY      delete weft__wlock_slow's "weft__barrier_heavy();":
 *                        an unlock misses the sleeper, a worker sleeps
 *                        on qlock forever
 *   MUTANT_QUEUE_NO_CAS  set QUEUED with an unconditional fetch_or instead
 *                        of "atomic_compare_exchange_weak(&x->state, &s, ns)"
 *                        from the state seen locked: an unlock slips in
 *                        between, sees nobody queued, and the waiter is
 *                        never woken
 *   MUTANT_HANDOFF_SPLIT unlock_handoff clears STARVING before it sets
 *                        LOCKED (two steps instead of "one step: LOCKED is
 *                        back before STARVING can go"): a newcomer takes
 *                        the lock in between, beside the fiber handed it
 *                        (needs NF=3)
 *   MUTANT_HANDOFF_NO_RELEASE  (with -DCANCEL) unlock_handoff, finding
 *                        every waiter's claim lost to a cancel, leaves
 *                        STARVING set instead of "atomic_fetch_and(
 *                        &x->state, ~(M_STARVING | M_QUEUED))": nobody may
 *                        take the free lock, the next locker queues and
 *                        waits forever
 */
#ifndef NF
#define NF 3
#endif
#ifndef ITER0
#define ITER0 2
#endif
#ifdef CANCEL
#define NT (NF + 1)     /* the canceller has a thread of its own */
#define CT NF
#else
#define NT NF
#endif

/* shared words */
#define STATE    0      /* x->state */
#define OWNER    1      /* x->owner: fiber id + 1, 0 = none */
#define HELD     2      /* x->qlock.held */
#define SLEEPERS 3      /* x->qlock.sleepers */
#define WSTATE   4      /* f->wstate of fiber i: 4 + i */
#define NV (4 + NF)

#include "mem.pml"

#define M_LOCKED   1
#define M_QUEUED   2
#define M_WOKEN    4
#define M_STARVING 8
#define M_OWNED    0    /* claim results */
#define M_RETRY    1
#define M_CANCELED 2

#define WS_IDLE    0
#define WS_WAITING 1
#define WS_WOKEN   2

/* the wait queue (under qlock): fiber ids, head first */
byte q[3];
byte qn;
bool queued[NF];        /* rec.queued */
byte wres[NF];          /* f->wresult */
bool rdy[NF];           /* weft__ready(f) was called, not yet resumed */
bool fw[4];            /* thread asleep in futex_wait on qlock.held */
bool cancelled[NF];

byte incs;              /* fibers between lock and unlock */
byte finished;

inline rmw_or(t, v, m)  { d_step { drain(t); mem[v] = mem[v] | m } }
inline rmw_and(t, v, m) { d_step { drain(t); mem[v] = mem[v] & m } }

inline q_remove(i)      /* weft__waitq_remove, of fiber i */
{
    d_step {
        if
        :: q[0] == i -> q[0] = q[1]; q[1] = q[2]
        :: q[1] == i -> q[1] = q[2]
        :: else
        fi;
        qn--; q[qn] = 0;
        queued[i] = false
    }
}

/* weft__wlock(&x->qlock) */
inline wlock(t)
{
    rmw_cas(t, HELD, 0, 1, ok);           /* "atomic_compare_exchange_weak_explicit(&l->held, &zero, 1, ...)" */
    if
    :: !ok ->
        /* weft__wlock_slow: the spin, one look */
        ld(t, HELD, tmp);
        if
        :: tmp == 0 -> rmw_cas(t, HELD, 0, 1, ok)
        :: else
        fi;
        if
        :: !ok ->
            rmw_add(t, SLEEPERS, 1, tmp); /* "atomic_fetch_add_explicit(&l->sleepers, 1, relaxed)" */
#ifndef MUTANT_NO_HEAVY
            heavy();                      /* "weft__barrier_heavy()" */
#endif
            do
            :: rmw_cas(t, HELD, 0, 1, ok);    /* "atomic_compare_exchange_strong_explicit(&l->held, &zero, 1, ...)" */
                if
                :: ok -> break
                :: else
                fi;
                /* "weft__futex_wait(&l->held, 1, -1)": sleeps if held is still 1 */
                d_step { drain(t); if :: mem[HELD] == 1 -> fw[t] = true :: else fi };
                !fw[t]
            od;
            rmw_sub(t, SLEEPERS, 1, tmp)  /* "atomic_fetch_sub_explicit(&l->sleepers, 1, relaxed)" */
        :: else
        fi
    :: else
    fi
}

/* weft__wunlock(&x->qlock) */
inline wunlock(t)
{
    st_rel(t, HELD, 0);                   /* "atomic_store_explicit(&l->held, 0, release)" */
    /* "weft__barrier_light()": a compiler barrier, nothing here */
    ld(t, SLEEPERS, tmp);                 /* "if (atomic_load_explicit(&l->sleepers, relaxed))" */
    if
    :: tmp != 0 ->                        /* weft__wunlock_slow: "weft__futex_wake(&l->held, 1)" */
        atomic {
            drain(t);
            if
            :: fw[0] -> fw[0] = false
            :: fw[1] -> fw[1] = false
            :: NT > 2 && fw[2] -> fw[2] = false
            :: NT > 3 && fw[3] -> fw[3] = false
            :: else
            fi
        }
    :: else
    fi
}

/* try_acquire(x, self): ok if taken */
inline try_acquire(t)
{
    ld(t, STATE, s);                      /* "atomic_load_explicit(&x->state, relaxed)" */
    do
    :: (s & (M_LOCKED | M_STARVING)) -> ok = false; break
    :: else ->
        d_step {                          /* "atomic_compare_exchange_weak_explicit(&x->state, &s, s | M_LOCKED, ...)" */
            drain(t);
            if
            :: mem[STATE] == s -> mem[STATE] = s | M_LOCKED; ok = true
            :: else -> s = mem[STATE]; ok = false
            fi
        };
        if
        :: ok -> st_rel(t, OWNER, t + 1); break   /* "atomic_store_explicit(&x->owner, self, relaxed)" */
        :: else
        fi
    od
}

/* weft__wake_claim(f, result) for fiber i, by thread t */
inline claim(t, i, result, won)
{
    rmw_cas(t, WSTATE + i, WS_WAITING, WS_WOKEN, won);
    if :: won -> wres[i] = result :: else fi
}

/* weft__waitq_claim(&x->q, result): the popped fiber in w, NF if none */
inline waitq_claim(t, result, w)
{
    w = NF;
    do
    :: qn > 0 ->
        w = q[0];
        q_remove(w);                      /* "weft__waitq_remove(q, w)" */
        claim(t, w, result, won);         /* "if (weft__wake_claim(w->f, ...)) return w" */
        if
        :: won -> break
        :: else -> w = NF                 /* lost to a cancel: dropped */
        fi
    :: else -> break
    od
}

inline ready(i)
{
    d_step { assert(!rdy[i]); rdy[i] = true }
}

/* mutex_unlock_(x), by fiber t */
inline mutex_unlock(t)
{
    st_rel(t, OWNER, 0);                  /* "atomic_store_explicit(&x->owner, NULL, relaxed)" */
    rmw_sub(t, STATE, M_LOCKED, s);       /* "atomic_fetch_sub_explicit(&x->state, M_LOCKED, release)" */
    if
    :: s == M_LOCKED -> skip
    :: else ->
        if
        :: (s & M_STARVING) ->
            /* unlock_handoff */
            wlock(t);
            waitq_claim(t, M_OWNED, w);
            if
            :: w == NF ->                 /* "every waiter was cancelled or timed out meanwhile: release" */
#ifndef MUTANT_HANDOFF_NO_RELEASE
                d_step { drain(t); mem[STATE] = mem[STATE] & ~(M_STARVING | M_QUEUED) };
#endif
                wunlock(t)
            :: else ->
                st_rel(t, OWNER, w + 1);  /* "atomic_store_explicit(&x->owner, f, relaxed)" */
                if
                :: qn == 0 -> clr = M_QUEUED | M_STARVING     /* "if (weft__waitq_empty(&x->q))" */
                :: qn > 0 -> clr = M_STARVING                 /* "else if (weft__now() - w->since < STARVE_NS)" */
                :: qn > 0 -> clr = 0
                fi;
#ifndef MUTANT_HANDOFF_SPLIT
                /* "one step: LOCKED is back before STARVING can go" */
                d_step { drain(t); mem[STATE] = (mem[STATE] | M_LOCKED) & ~clr };
#else
                d_step { drain(t); mem[STATE] = mem[STATE] & ~clr };
                d_step { drain(t); mem[STATE] = mem[STATE] | M_LOCKED };
#endif
                wunlock(t);
                ready(w)
            fi
        :: else ->
            if
            :: (s & M_QUEUED) && !(s & M_WOKEN) ->
                /* unlock_wake */
                wlock(t);
                ld_sc(t, STATE, s);       /* "uint32_t s = atomic_load(&x->state)" */
                if
                :: (s & (M_LOCKED | M_WOKEN | M_STARVING)) || !(s & M_QUEUED) ->
                    wunlock(t)
                :: else ->
                    waitq_claim(t, M_RETRY, w);
                    if
                    :: w != NF -> rmw_or(t, STATE, M_WOKEN)      /* "atomic_fetch_or(&x->state, M_WOKEN)" */
                    :: else
                    fi;
                    if
                    :: qn == 0 -> rmw_and(t, STATE, ~M_QUEUED)   /* "atomic_fetch_and(&x->state, ~M_QUEUED)" */
                    :: else
                    fi;
                    wunlock(t);
                    if
                    :: w != NF -> ready(w)
                    :: else
                    fi
                fi
            :: else
            fi
        fi
    fi
}

/* mutex_unlink(f) of fiber i, by thread t (a canceller that won the claim) */
inline mutex_unlink(t, i)
{
    wlock(t);
    if
    :: queued[i] ->                       /* "if (w->queued)" */
        q_remove(i);
        if
        :: qn == 0 -> rmw_and(t, STATE, ~M_QUEUED)
        :: else
        fi
    :: else
    fi;
    wunlock(t)
}

proctype fiber(byte me; byte iters)
{
    byte s, ns, tmp, w, clr, r;
    bool ok, won, woken, requeue;

    do
    :: iters > 0 ->
        iters--;
        /* weft_mutex_lock */
        try_acquire(me);                  /* "if (WEFT_LIKELY(try_acquire(x, self)))" */
        if
        :: ok -> goto locked
        :: else
        fi;
        /* mutex_lock_slow */
        woken = false; requeue = false;
slow:
        if
        :: !woken ->                      /* spin_acquire: one look, or none */
            if
            :: ld(me, STATE, s);
                if
                :: !(s & (M_LOCKED | M_STARVING)) ->
                    try_acquire(me);
                    if
                    :: ok -> goto locked
                    :: else
                    fi
                :: else
                fi
            :: skip
            fi
        :: else
        fi;
        wlock(me);                        /* "weft__wlock(&x->qlock)" */
        ld_sc(me, STATE, s);              /* "uint32_t s = atomic_load(&x->state)" */
        do
        :: ns = (woken -> s & ~M_WOKEN : s);
            if
            :: !(s & (M_LOCKED | M_STARVING)) ->
                d_step {                  /* "atomic_compare_exchange_weak(&x->state, &s, ns | M_LOCKED)" */
                    drain(me);
                    if
                    :: mem[STATE] == s -> mem[STATE] = ns | M_LOCKED; ok = true
                    :: else -> s = mem[STATE]; ok = false
                    fi
                };
                if
                :: ok ->
                    wunlock(me);
                    st_rel(me, OWNER, me + 1);
                    goto locked
                :: else
                fi
            :: else ->
                ns = ns | M_QUEUED;       /* "ns |= M_QUEUED" */
                if
                :: woken -> ns = ns | M_STARVING   /* "if (woken && weft__now() - rec.since > STARVE_NS)" */
                :: true
                fi;
#ifndef MUTANT_QUEUE_NO_CAS
                d_step {                  /* "if (atomic_compare_exchange_weak(&x->state, &s, ns)) break" */
                    drain(me);
                    if
                    :: mem[STATE] == s -> mem[STATE] = ns; ok = true
                    :: else -> s = mem[STATE]; ok = false
                    fi
                };
#else
                d_step { drain(me); mem[STATE] = mem[STATE] | (ns & ~M_LOCKED); ok = true };
#endif
                if
                :: ok -> break
                :: else
                fi
            fi
        od;
        woken = false;
        d_step {
            if
            :: requeue -> q[2] = q[1]; q[1] = q[0]; q[0] = me   /* "weft__waitq_push_front(&x->q, &rec)" */
            :: else -> q[qn] = me                               /* "weft__waitq_push(&x->q, &rec)" */
            fi;
            qn++;
            queued[me] = true
        };
        st_rel(me, WSTATE + me, WS_WAITING);  /* weft__wait_prepare */
        wunlock(me);                      /* "weft__wunlock(&x->qlock)" */
        /* weft__wait_park(self, -1) */
#ifdef CANCEL
        if
        :: cancelled[me] ->               /* "if (atomic_load(&self->cancelled))": self-claim */
            claim(me, me, M_CANCELED, won);
            if
            :: won -> mutex_unlink(me, me); r = M_CANCELED; goto waited
            :: else
            fi
        :: else
        fi;
#endif
        atomic { rdy[me] -> rdy[me] = false };   /* parked until readied */
        r = wres[me];                     /* "int r = self->wresult" */
waited:
        skip;
        st_rel(me, WSTATE + me, WS_IDLE); /* wait_done */
        if
        :: r == M_OWNED ->                /* "return 0;   /* handed over: unlock recorded us as the owner" */
            ld(me, STATE, s);
            ld(me, OWNER, tmp);
            assert((s & M_LOCKED) && tmp == me + 1);
            goto locked
        :: r == M_RETRY -> woken = true; requeue = true; goto slow
        :: r == M_CANCELED -> goto unlocked   /* "return r;   /* cancelled or timed out" */
        fi;
locked:
        atomic { incs++; assert(incs == 1) };   /* the critical section */
        d_step { incs-- };
        mutex_unlock(me);                 /* weft_mutex_unlock */
unlocked:
        atomic { s = 0; ns = 0; tmp = 0; w = 0; clr = 0; r = 0; ok = false; won = false; woken = false; requeue = false }
    :: else -> break
    od;
    finished++
}

#ifdef CANCEL
/* weft_cancel on fiber 1: store the flag; claim if it waits. The store /
 * look race with wait_prepare is claim.pml's; here the flag is seen at
 * once and the look is one step. */
active proctype canceller()
{
    bool won;
    byte tmp, s, w;
    bool ok;
end:
    if
    :: true -> skip
    :: true -> goto end_c
    fi;
    cancelled[1] = true;
    claim(CT, 1, M_CANCELED, won);    /* cancel_interrupt: weft__wake_interrupt */
    if
    :: won -> mutex_unlink(CT, 1); ready(1)
    :: else
    fi;
end_c:
    skip
}
#endif

init {
    byte i;
    atomic {
        i = 0;
        do
        :: i < NT -> run flusher(i); i++
        :: else -> break
        od;
        run fiber(0, ITER0);
        i = 1;
        do
        :: i < NF -> run fiber(i, 1); i++
        :: else -> break
        od
    }
}

active proctype monitor()
{
    timeout ->
    assert(finished == NF);
    assert(incs == 0 && qn == 0);
    assert(mem[STATE] == 0 && mem[HELD] == 0)
}
