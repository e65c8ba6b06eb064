/*
 * wakeup.pml: idling without lost wake-ups (src/sched/sched.c).
 *
 * Two workers run find_runnable; a plain thread (the blocking pool, a
 * user's thread) readies NF fibers through weft__ready, which for a caller
 * that is not a worker is global_put_batch + wakep. Workers run what they
 * find and otherwise go idle and sleep on their futex or in the poller.
 *
 * Checked: no lost wake-up. Whenever the whole system stops (every worker
 * asleep, the submitter done: Spin's `timeout`), every fiber readied has
 * been run, and the global queue is empty. Sleeping is a valid end state
 * (end labels), so Spin's own invalid-end-state check reports any other
 * place a worker gets stuck.
 *
 * Each step is the C line it stands for (function: quoted line). The
 * shared words on which the protocol races (gn, nidle, nspinning, the
 * permits, in_poll, poll_owner, wake_pending, the two locks) go through
 * the store-buffer model of mem.pml; the lists they guard are plain.
 *
 * Left out, on purpose: local rings and next slots of a readying worker
 * (the next slot wakes nobody by design, see put_next; offer() ends in the
 * same wakep as here), timers, the inbox, stealing (nothing to steal in a
 * model whose only queue is the global one), shutdown, stack trimming.
 * Sleep timeouts are kept where the code has them: a worker that sleeps
 * "watched" (another worker is busy) may time out, and then, finding no
 * stuck next slot, sleeps again without looking at the queues.
 *
 * Mutants (spin -D...), each must make Spin find a lost wake-up:
 *   MUTANT_NO_SUBMIT_FENCE  delete wakep's
 *                           "atomic_thread_fence(memory_order_seq_cst);"
 *   MUTANT_NO_RECHECK       delete find_runnable's second look after going
 *                           idle: "if (any_work(w) || ...)"
 */
#define NW 2            /* workers: threads 0 and 1 */
#define SUBMITTER 2     /* the plain thread: thread 2 */
#define NT 3
#ifndef NF
#define NF 1            /* fibers readied; make check-model runs 2 as well */
#endif

/* shared words */
#define GN        0     /* rt.gn: length of the global queue, read without the lock */
#define NIDLE     1     /* rt.nidle */
#define NSPIN     2     /* rt.nspinning */
#define GLOCK     3     /* rt.glock */
#define IDLELOCK  4     /* rt.idle_lock */
#define PERMIT    5     /* workers[w].permit: 5, 6 */
#define INPOLL    7     /* workers[w].in_poll: 7, 8 */
#define POLLOWNER 9     /* rt.poll_owner */
#define WAKEPEND  10    /* epoll.c wake_pending */
#define NV 11

/* Whose stores go through a store buffer. The submitter's do: the fence
 * under test is in its wakep. The workers' stores are committed at once
 * unless WORKER_SB is defined: on the idle side every store the protocol
 * orders is a read-modify-write (nidle, nspinning, poll_owner, the permit
 * exchange) or a seq_cst store followed by a seq_cst load (in_poll, then
 * permit), which drain the buffer anyway; buffering the rest only
 * multiplies the interleavings: with WORKER_SB, 5.0 million states instead
 * of 3.0, and no error either (make check-model runs both). */
#ifdef WORKER_SB
#define BUFFERED(t) true
#else
#define BUFFERED(t) (t == SUBMITTER)
#endif

#include "mem.pml"

/* guarded by GLOCK */
byte glen;              /* rt.glen */
/* guarded by IDLELOCK */
byte idl[NW];           /* rt.idle, a stack: idl[nidl-1] is the head */
byte nidl;
bool idle[NW];          /* workers[w].idle */
bool spinning[NW];      /* workers[w].spinning: set by wakep for the worker it pops */
/* each worker's own */
byte ring[NW];          /* fibers a worker took into its ring (global_get) */
/* kernel objects: sequentially consistent */
bool fw[NW];            /* asleep in futex_wait on workers[w].permit */
byte evfd;              /* the poller's eventfd counter */

byte ran;               /* fibers run */
byte submitted;

/* idle_remove_locked(w), under IDLELOCK, for thread t */
inline idle_remove(t, w, removed)
{
    removed = idle[w];
    if
    :: idle[w] ->
        d_step {
            if
            :: idl[nidl - 1] == w -> skip
            :: else -> idl[0] = idl[1]   /* w is the bottom of the two */
            fi;
            nidl--; idl[nidl] = 0;
            idle[w] = false
        };
        rmw_sub(t, NIDLE, 1, tmp)      /* "atomic_fetch_sub(&weft__rt.nidle, 1)" */
    :: else
    fi
}

/* signal_worker(w) */
inline signal_worker(t, w)
{
    st_sc(t, PERMIT + w, 1);              /* "atomic_store(&w->permit, 1)" */
    ld_sc(t, INPOLL + w, tmp);            /* "if (atomic_load(&w->in_poll))" */
    if
    :: tmp ->                             /* "weft__rt.poller->wake()": epoll_wake */
        rmw_xchg(t, WAKEPEND, 1, tmp);    /* "if (atomic_exchange(&wake_pending, 1))" */
        if
        :: tmp == 0 -> d_step { drain(t); evfd = 1 }   /* "write(evfd, &one, ...)" */
        :: else
        fi
    :: else ->
        d_step { drain(t); fw[w] = false } /* "weft__futex_wake(&w->permit, 1)" */
    fi
}

/* wakep(), called by thread t */
inline wakep(t)
{
#ifndef MUTANT_NO_SUBMIT_FENCE
    fence(t);                             /* "atomic_thread_fence(memory_order_seq_cst);" */
#endif
    ld(t, NIDLE, tmp);                    /* "if (atomic_load_explicit(&weft__rt.nidle, relaxed) == 0)" */
    if
    :: tmp != 0 ->
        ld(t, NSPIN, tmp);                /* "atomic_load_explicit(&weft__rt.nspinning, relaxed) != 0" */
        if
        :: tmp == 0 ->
            rmw_cas(t, NSPIN, 0, 1, ok);  /* "!atomic_compare_exchange_strong(&weft__rt.nspinning, &zero, 1)" */
            if
            :: ok ->
                atomic {
                    lock(t, IDLELOCK);    /* "weft__lock_acquire(&weft__rt.idle_lock)" */
                    if
                    :: nidl > 0 ->        /* "weft__worker *w = weft__rt.idle; if (w)" */
                        who = idl[nidl - 1];
                        idle_remove(t, who, ok);   /* "idle_remove_locked(w)" */
                        spinning[who] = true       /* "w->spinning = true" */
                    :: else -> who = NW   /* nobody */
                    fi;
                    unlock(t, IDLELOCK)
                };
                if
                :: who == NW ->
                    rmw_sub(t, NSPIN, 1, tmp)      /* "atomic_fetch_sub(&weft__rt.nspinning, 1)" */
                :: else ->
                    signal_worker(t, who)          /* "signal_worker(w)" */
                fi
            :: else
            fi
        :: else
        fi
    :: else
    fi
}

/* The plain thread: weft__ready(f) with no current worker, NF times. */
active proctype submitter()
{
    byte tmp, who;
    bool ok;
    do
    :: submitted < NF ->
        atomic {                          /* global_put_batch(&f, 1) */
            lock(SUBMITTER, GLOCK);
            glen++;
            submitted++;
            st_sc(SUBMITTER, GN, glen);   /* "atomic_store(&rt->gn, (uint32_t)rt->glen)" */
            unlock(SUBMITTER, GLOCK)      /* buffered, after gn */
        };
        wakep(SUBMITTER);                 /* weft__ready: "wakep();" */
        d_step { tmp = 0; who = 0; ok = false }
    :: else -> break
    od
}

/* any_work(w), for worker me: the global queue and every ring
 * ("atomic_load(&weft__rt.gn)" seq_cst; runq_len) */
inline any_work(me, r)
{
    ld_sc(me, GN, r);
    r = r + ring[0] + ring[1]
}

/* worker_sleep(w, timeout): r = "something woke us" */
inline worker_sleep(me, watched, r)
{
    rmw_cas(me, POLLOWNER, 0, 1, ok);     /* "atomic_compare_exchange_strong(&weft__rt.poll_owner, &zero, 1)" */
    if
    :: ok ->
        st_sc(me, INPOLL + me, 1);        /* "atomic_store(&w->in_poll, 1)" */
        ld_sc(me, PERMIT + me, r);        /* "if (!atomic_load(&w->permit))" */
        if
        :: r == 0 ->                      /* "got = p->poll(w, timeout)": epoll_wait */
end_poll:
            if
            :: atomic { evfd > 0 -> evfd = 0 };   /* the eventfd's edge: "read(evfd, ...)" */
                st_sc(me, WAKEPEND, 0)            /* "atomic_store(&wake_pending, 0)" */
            :: watched -> skip                    /* timed out */
            fi
        :: else
        fi;
        st_sc(me, INPOLL + me, 0);        /* "atomic_store(&w->in_poll, 0)" */
        st_sc(me, POLLOWNER, 0)           /* "atomic_store(&weft__rt.poll_owner, 0)" */
    :: else ->
        ld_sc(me, PERMIT + me, r);        /* "else if (!atomic_load(&w->permit))" */
        if
        :: r == 0 ->                      /* "weft__futex_wait(&w->permit, 0, timeout)" */
            d_step {
                drain(me);
                if :: mem[PERMIT + me] == 0 -> fw[me] = true :: else fi
            };
end_futex:
            if
            :: !fw[me]
            :: atomic { watched && fw[me] -> fw[me] = false }   /* timed out */
            fi
        :: else
        fi
    fi;
    rmw_xchg(me, PERMIT + me, 0, r)       /* "return atomic_exchange(&w->permit, 0) != 0" */
}

proctype worker(byte me)
{
    byte tmp, r, busy, who;
    bool ok, found, was_spinning, removed, watched;

loop:
    atomic {                              /* no stale locals: fewer distinct states */
        tmp = 0; r = 0; busy = 0; who = 0;
        ok = false; found = false; was_spinning = false; removed = false; watched = false
    };
    /* local_work: local_pick, then global_get */
    if
    :: ring[me] > 0 -> ring[me]--; found = true    /* "local_pick(w)" */
    :: else ->
        ld(me, GN, tmp);                  /* global_get: "atomic_load_explicit(&rt->gn, relaxed) == 0" */
        if
        :: tmp != 0 ->
            atomic {                      /* the critical section is one step */
                lock(me, GLOCK);
                if
                :: glen > 0 ->            /* "take = n / rt->n + 1" runs one, rings the rest */
                    tmp = glen / NW + 1;
                    if :: tmp > glen -> tmp = glen :: else fi;
                    glen = glen - tmp;
                    ring[me] = ring[me] + tmp - 1;
                    found = true;
                    st_sc(me, GN, glen)   /* "atomic_store(&rt->gn, (uint32_t)rt->glen)" */
                :: else
                fi;
                unlock(me, GLOCK)
            }
        :: else
        fi
    fi;
    if
    :: found -> goto found_it
    :: else
    fi;

    /* poll_now(w): look at the poller without blocking */
    rmw_cas(me, POLLOWNER, 0, 1, ok);
    if
    :: ok ->
        if
        :: atomic { evfd > 0 -> evfd = 0 }; st_sc(me, WAKEPEND, 0)
        :: else
        fi;
        st_sc(me, POLLOWNER, 0)
    :: else
    fi;

    /* "Steal, unless enough workers are already looking." */
    if
    :: !spinning[me] ->
        atomic {                          /* a heuristic: one step */
            ld_sc(me, NIDLE, tmp);
            busy = NW - tmp;              /* "busy = weft__rt.n - atomic_load(&weft__rt.nidle)" */
            ld_sc(me, NSPIN, tmp);
            if
            :: 2 * tmp < busy ->          /* "if (2 * atomic_load(&weft__rt.nspinning) < busy)" */
                spinning[me] = true;
                rmw_add(me, NSPIN, 1, tmp)
            :: else
            fi
        }
    :: else
    fi;
    /* steal_work finds nothing here (no rings but those filled by their
     * owners' global_get, whose fibers the owner runs next) */
    if
    :: spinning[me] ->                    /* spin_for_work: "if (any_work(w) || ...) return true" */
        any_work(me, tmp);
        if
        :: tmp != 0 -> goto loop
        :: else
        fi
    :: else
    fi;

    /* Go idle: announce it, then look once more. */
    atomic {
        lock(me, IDLELOCK);
        was_spinning = spinning[me];      /* "bool was_spinning = w->spinning" */
        spinning[me] = false;
        idle[me] = true;                  /* "w->idle = true; ... weft__rt.idle = w" */
        idl[nidl] = me;
        nidl++;
        rmw_add(me, NIDLE, 1, tmp);       /* "atomic_fetch_add(&weft__rt.nidle, 1)" */
        unlock(me, IDLELOCK)
    }
    if
    :: was_spinning -> rmw_sub(me, NSPIN, 1, tmp)   /* "atomic_fetch_sub(&weft__rt.nspinning, 1)" */
    :: else
    fi;
    fence(me);                            /* "atomic_thread_fence(memory_order_seq_cst)" */
#ifndef MUTANT_NO_RECHECK
    any_work(me, tmp);                    /* "if (any_work(w) || atomic_load(&weft__rt.shutdown))" */
#else
    tmp = 0;                              /* the second look deleted */
#endif
    if
    :: tmp != 0 ->
        atomic { lock(me, IDLELOCK); idle_remove(me, me, removed); unlock(me, IDLELOCK) };
        if
        :: removed ->
            spinning[me] = true;
            rmw_add(me, NSPIN, 1, tmp)
        :: else
        fi;
        goto loop
    :: else
    fi;
    /* sleep until signalled; watched (may time out) while another worker is busy */
    do
    :: ld_sc(me, NIDLE, tmp);
        watched = tmp < NW;               /* "atomic_load(&weft__rt.nidle) < weft__rt.n" */
        worker_sleep(me, watched, r);
        if
        :: r != 0 || !watched -> break    /* "if (worker_sleep(w, timeout) || !watched || ...) break" */
        :: else                           /* find_stuck: no next slot in this model */
        fi
    od;
    atomic {                              /* "idle_remove_locked(w); /* timed out, or woken ..." */
        lock(me, IDLELOCK); idle_remove(me, me, removed); unlock(me, IDLELOCK)
    };
    goto loop;

found_it:
    if
    :: spinning[me] ->                    /* stop_spinning(w) */
        spinning[me] = false;
        rmw_sub(me, NSPIN, 1, tmp);     /* "if (atomic_fetch_sub(&weft__rt.nspinning, 1) == 1)" */
        if
        :: tmp == 1 -> wakep(me)          /* "wakep();" */
        :: else
        fi
    :: else
    fi;
    ran++;                                /* run_fiber: the fiber runs and returns */
    goto loop
}

init {
    atomic {
        run worker(0); run worker(1);
#ifdef WORKER_SB
        run flusher(0); run flusher(1);
#endif
        run flusher(SUBMITTER)
    }
}

/* No lost wake-up: when nothing can move any more, everything readied ran. */
active proctype monitor()
{
    timeout -> assert(submitted == NF && ran == NF && glen == 0 && ring[0] + ring[1] == 0)
}
