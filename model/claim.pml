/*
 * claim.pml: the wait protocol (src/sched/sched.h, sched.c, fiber.c,
 * waitq.h, src/io/epoll.c): one fiber waits on an object, and four parties
 * race to end that wait:
 *
 *   S  the object's signaller (weft__waitq_claim: a mutex unlock, a channel
 *      send, a semaphore post; epoll's dispatch is the same shape): pops
 *      the record under the object's lock, then claims;
 *   X  weft_close (epoll_close under rec->lock): unlinks the record, marks
 *      it closed, claims, readies, all under the lock;
 *   T  the fiber's timer (fire_timers): claims under the heap lock, then
 *      unlinks through f->wunlink and readies;
 *   C  weft_cancel: stores `cancelled`, looks at wstate, claims and
 *      unlinks (weft__wake_interrupt); if it saw no wait, the heavy
 *      barrier (membarrier) and a second look.
 *
 * Each of them may or may not happen; the fiber may find itself cancelled
 * or past its deadline when it goes to park (weft__wait_park's early
 * self-claim). A runner R stands for whichever worker picks the readied
 * fiber up (take_cpu's on_cpu handshake).
 *
 * Checked:
 *   - exactly one claim wins, and the fiber is readied once and resumes
 *     once (assertions at each claim, ready and resume);
 *   - nobody touches the wait record (it lives on the fiber's stack) once
 *     the fiber may have resumed: every read or write of the record
 *     asserts rec_live, which the fiber clears when it resumes;
 *   - no lost wake-up: when nothing can move, a fiber that any party set
 *     out to wake (or that was cancelled) is not still parked, and its
 *     result is the winner's.
 *
 * The fiber's and the canceller's stores go through store buffers
 * (mem.pml): that is where the cancel race is (a WAITING still in the
 * fiber's store buffer while its load of `cancelled` went ahead). S, X
 * and T act under locks: their stores are committed at once.
 *
 * Mutants (spin -D...), each must make Spin find the bug:
 *   MUTANT_NO_HEAVY        delete weft_cancel's "weft__barrier_heavy();":
 *                          a cancel is lost, the fiber stays parked
 *   MUTANT_CLAIM_NOT_CAS   weft__wake_claim as a load and a store instead
 *                          of "atomic_compare_exchange_strong(&f->wstate,
 *                          &expect, WEFT_WS_WOKEN)": two winners
 *   MUTANT_READY_FIRST     weft__wake_interrupt readies before it unlinks
 *                          ("if (f->wunlink) f->wunlink(f); weft__ready(f);"
 *                          swapped): the unlink touches a dead record
 */
#define F  0            /* the waiting fiber's thread */
#define C  1            /* weft_cancel's thread */
#define S  2
#define X  3
#define T  4
#define R  5
#define NT 6

#define WSTATE    0     /* f->wstate */
#define CANCELLED 1     /* f->cancelled */
#define OBJLOCK   2     /* the object's word lock, or rec->lock for X */
#define TLOCK     3     /* the timer heap's lock, workers[w].tlock */
#define ONCPU     4     /* f->on_cpu */
#define NV 5

#define BUFFERED(t) (t == F || t == C)
#include "mem.pml"

/* enum weft__wstate */
#define WS_IDLE    0
#define WS_WAITING 1
#define WS_WOKEN   2

/* claim results */
#define RES_SIGNAL   1
#define RES_CANCELED 2
#define RES_TIMEDOUT 3
#define RES_BADF     4

/* the record, on the fiber's stack, and what guards it */
bool rec_live;          /* the stack frame holding it is still the wait's */
bool queued;            /* rec.queued / op->linked: under OBJLOCK */
bool closed;            /* op->closed */
bool in_heap;           /* f->timer queued: under TLOCK */
byte wresult;           /* f->wresult: written by the winner */

byte wins;              /* claims won */
byte winner;            /* the result the winner passed */
byte readied;           /* weft__ready(f) calls */
bool resumed;           /* the fiber runs again */
bool done;              /* weft__wait_park returned */
byte ret;               /* what it returned */

/* who set out to end the wait */
bool s_acts, x_acts, t_acts, c_acts;

/* weft__wake_claim(f, result), by thread t: won = 1 if this call won */
inline claim(t, result, won)
{
#ifndef MUTANT_CLAIM_NOT_CAS
    rmw_cas(t, WSTATE, WS_WAITING, WS_WOKEN, won);  /* "atomic_compare_exchange_strong(&f->wstate, &expect, WEFT_WS_WOKEN)" */
#else
    ld(t, WSTATE, tmp);
    if
    :: tmp == WS_WAITING -> st_sc(t, WSTATE, WS_WOKEN); won = true
    :: else -> won = false
    fi;
#endif
    if
    :: won ->
        d_step {
            wins++;
            assert(wins == 1);            /* exactly one winner */
            wresult = result;             /* "f->wresult = result" */
            winner = result
        }
    :: else
    fi
}

/* f->wunlink(f): take the record off the object's queue, under its lock
 * (mutex_unlink, op_unlink, ...): "if (w->queued) weft__waitq_remove(...)" */
inline unlink(t)
{
    atomic {
        lock(t, OBJLOCK);
        assert(rec_live);                 /* reads w->queued */
        if
        :: queued -> queued = false
        :: else
        fi;
        unlock(t, OBJLOCK)
    }
}

/* weft__ready(f) */
inline ready()
{
    d_step {
        readied++;
        assert(readied == 1)              /* readied once */
    }
}

/* The fiber: the common prologue of every blocking call, then
 * weft__wait_park. */
active proctype fiber()
{
    byte c, early, tmp;
    bool won, armed;

    /* "lock the object's queue; enqueue self;" */
    atomic {
        mem[ONCPU] = 1;                   /* it is running */
        lock(F, OBJLOCK);
        rec_live = true;
        queued = true;                    /* weft__waitq_push: "w->queued = true" */
        wresult = 0;                      /* weft__wait_prepare: "self->wresult = 0" */
        st_rel(F, WSTATE, WS_WAITING)     /* "atomic_store_explicit(&self->wstate, WEFT_WS_WAITING, release)" */
    };
    /* "weft__barrier_light();": a compiler barrier, nothing here */
    unlock(F, OBJLOCK);                   /* "weft__wunlock(&x->qlock)" */

    /* weft__wait_park */
    ld_sc(F, CANCELLED, c);               /* "if (atomic_load(&self->cancelled))" */
    if
    :: c -> early = RES_CANCELED
    :: !c -> early = RES_TIMEDOUT         /* "when <= weft__now()": past the deadline */
    :: !c -> early = 0
    fi;
    if
    :: early ->
        claim(F, early, won);             /* "if (early && weft__wake_claim(self, early))" */
        if
        :: won ->
            unlink(F);                    /* "self->wunlink(self)" */
            d_step {
                st_rel(F, WSTATE, WS_IDLE);   /* wait_done */
                ret = early;
                rec_live = false;
                done = true
            };
            goto end_fiber
        :: else                           /* a waker claimed first: park to be readied */
        fi
    :: else ->
        atomic { lock(F, TLOCK); in_heap = true; unlock(F, TLOCK) };  /* weft__timer_arm */
        armed = true
    fi;
    /* weft__switch_out(self, WEFT_POST_PARK); finish_switch, on whatever
     * runs next on this worker: "atomic_store_explicit(&prev->on_cpu, 0, release)" */
    st_rel(F, ONCPU, 0);
end_parked:
    resumed;                              /* R took the CPU for us */
    d_step { rec_live = false };          /* from here the stack is the fiber's again */
    if
    :: armed -> atomic { lock(F, TLOCK); in_heap = false; unlock(F, TLOCK) }   /* weft__timer_disarm */
    :: else
    fi;
    d_step {
        ret = wresult;                    /* "int r = self->wresult" */
        done = true
    };
    st_rel(F, WSTATE, WS_IDLE);           /* wait_done */
end_fiber:
    skip
}

/* A worker picking the readied fiber up: take_cpu. */
active proctype runner()
{
end:
    readied > 0;
    d_step { mem[ONCPU] == 0 -> mem[ONCPU] = 1 };   /* "atomic_compare_exchange_strong_explicit(&f->on_cpu, &off, 1, ...)" */
    d_step { assert(!resumed); resumed = true }     /* resumes once */
}

/* The object's signaller: weft__waitq_claim, then weft__ready(w->f). */
active proctype signaller()
{
    bool won;
    byte tmp;
end:
    if
    :: queued -> skip                     /* the record is there to be found */
    :: true -> goto end_s                 /* or nothing is ever signalled */
    fi;
    atomic {
        lock(S, OBJLOCK);
        s_acts = true;
        if
        :: queued ->                      /* "while ((w = q->head))" */
            assert(rec_live);
            queued = false;               /* "weft__waitq_remove(q, w)" */
            claim(S, RES_SIGNAL, won)     /* "if (weft__wake_claim(w->f, ...)) return w" */
        :: else
        fi;
        unlock(S, OBJLOCK)
    };
    if
    :: won ->
        assert(rec_live);                 /* "weft__ready(w->f)": reads the record */
        ready()
    :: else
    fi;
end_s:
    skip
}

/* weft_close: epoll_close under rec->lock. */
active proctype closer()
{
    bool won;
    byte tmp;
end:
    if
    :: queued -> skip
    :: true -> goto end_x
    fi;
    atomic {
        lock(X, OBJLOCK);                 /* weft_close: "weft__lock_acquire(&rec->lock)" */
        x_acts = true;
        if
        :: queued ->                      /* "for (op = rec->ops ...)" */
            assert(rec_live);
            queued = false;               /* "weft__fd_unlink(rec, op)" */
            closed = true;                /* "op->closed = true" */
            claim(X, RES_BADF, won);      /* "if (weft__wake_claim(op->fiber, -EBADF))" */
            if
            :: won -> assert(rec_live); ready()   /* "weft__ready(op->fiber)" */
            :: else
            fi
        :: else
        fi;
        unlock(X, OBJLOCK)
    };
end_x:
    skip
}

/* The timer firing: fire_timers. */
active proctype timer()
{
    bool won;
    byte tmp;
end:
    if
    :: in_heap -> skip                    /* armed, and its time comes */
    :: true -> goto end_t
    fi;
    atomic {
        lock(T, TLOCK);
        if
        :: in_heap ->                     /* "while (v->heap_len && v->heap[0].when <= now)" */
            t_acts = true;
            in_heap = false;              /* "heap_remove(v, t)" */
            claim(T, RES_TIMEDOUT, won)   /* "if (weft__wake_claim(f, -ETIMEDOUT))" */
        :: else
        fi;
        unlock(T, TLOCK)
    };
    if
    :: won ->
        unlink(T);                        /* "if (f->wunlink) f->wunlink(f)" */
        ready()                           /* "weft__ready(f)" */
    :: else
    fi;
end_t:
    skip
}

/* weft__wake_interrupt(f, -ECANCELED) behind cancel_interrupt's look */
inline cancel_interrupt(hit)
{
    ld_sc(C, WSTATE, tmp);                /* "atomic_load(&f->wstate) == WEFT_WS_WAITING" */
    hit = false;
    if
    :: tmp == WS_WAITING ->
        claim(C, RES_CANCELED, hit);      /* "if (!weft__wake_claim(f, result)) return 0" */
        if
        :: hit ->
#ifndef MUTANT_READY_FIRST
            unlink(C);                    /* "if (f->wunlink) f->wunlink(f)" */
            ready()                       /* "weft__ready(f)" */
#else
            ready();
            unlink(C)
#endif
        :: else
        fi
    :: else
    fi
}

active proctype canceller()
{
    bool hit, won;
    byte tmp;
end:
    if
    :: true -> skip
    :: true -> goto end_c                 /* nobody cancels */
    fi;
    c_acts = true;
    st_sc(C, CANCELLED, 1);               /* "atomic_store(&f->cancelled, 1)" */
    cancel_interrupt(hit);                /* "if (cancel_interrupt(f) || ...) return 0" */
    if
    :: !hit ->
#ifndef MUTANT_NO_HEAVY
        heavy();                          /* "weft__barrier_heavy()" */
#endif
        cancel_interrupt(hit)             /* "cancel_interrupt(f)" */
    :: else
    fi;
end_c:
    skip
}

init {
    run flusher(F); run flusher(C)
}

/* No lost wake-up, and the result is the winner's. */
active proctype monitor()
{
    timeout ->
    assert(!(s_acts || x_acts || t_acts || c_acts) || done);
    assert(!done || wins == 1);
    assert(!done || ret == winner);
    assert(!done || readied == (resumed -> 1 : 0))
}
