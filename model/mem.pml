/*
 * The memory model the three weft models share: a store buffer per thread.
 *
 * Promela is sequentially consistent: every assignment is seen by every
 * process at once. weft's protocols are written for weaker hardware (x86's
 * TSO, AArch64) and the C11 model, where a thread's store can sit in its
 * CPU's store buffer while its own later load goes ahead and reads memory.
 * That reordering is exactly what the fences in weft are there to stop, so
 * the models make it explicit:
 *
 *   - the shared words a protocol races on live in mem[], not in plain
 *     Promela variables;
 *   - a store goes into the storing thread's FIFO buffer (st_rel, st_sc);
 *     the thread's own loads see it at once (store forwarding), everybody
 *     else only once a flusher process commits it to mem[], at any moment
 *     of the flusher's choosing;
 *   - a relaxed or acquire load (ld) may pass the thread's own buffered
 *     stores; a seq_cst load (ld_sc) may not pass a buffered seq_cst store
 *     (C11 orders seq_cst operations in one total order: on x86 the seq_cst
 *     store is an xchg, on AArch64 an stlr that a later ldar does not pass),
 *     but may pass a buffered release store;
 *   - a fence (atomic_thread_fence(seq_cst)) and every read-modify-write
 *     (CAS, fetch_add, exchange: locked instructions on x86) drain the
 *     thread's buffer first;
 *   - membarrier(2) (weft__barrier_heavy) drains every thread's buffer: a
 *     full fence executed on the other threads' side;
 *   - weft__barrier_light, with membarrier available, is a compiler barrier
 *     only: nothing in this model.
 *
 * A model defines NT (threads) and NV (shared words) and names the words
 * with #defines before including this file, and runs one flusher(t) per
 * thread that buffers stores. Data protected by a lock is kept in plain
 * variables: the lock's acquire and release order it.
 */
#ifndef SB
#define SB 3            /* buffer depth: no thread in the models has more pending */
#endif

byte mem[NV];

typedef sbuf_t {
    byte var[SB];
    byte val[SB];
    bit  sc[SB];
    byte n;             /* pending stores */
    byte nsc;           /* of which seq_cst */
};
sbuf_t sb[NT];

/* Commit thread t's oldest pending store to memory. */
inline commit_one(t)
{
    mem[sb[t].var[0]] = sb[t].val[0];
    sb[t].nsc = sb[t].nsc - sb[t].sc[0];
    sb[t].var[0] = sb[t].var[1]; sb[t].val[0] = sb[t].val[1]; sb[t].sc[0] = sb[t].sc[1];
    sb[t].var[1] = sb[t].var[2]; sb[t].val[1] = sb[t].val[2]; sb[t].sc[1] = sb[t].sc[2];
    sb[t].var[2] = 0; sb[t].val[2] = 0; sb[t].sc[2] = 0;
    sb[t].n--
}

inline drain(t)
{
    do
    :: sb[t].n > 0 -> commit_one(t)
    :: else -> break
    od
}

/* Buffered stores: release (or relaxed), and seq_cst. A model may say
 * that some threads' stores need no buffer (BUFFERED(t) false): they are
 * then committed at once, after the thread's older stores. */
#ifndef BUFFERED
#define BUFFERED(t) true
#endif
inline st_rel(t, v, x)
{
    d_step {
        if
        :: BUFFERED(t) ->
            assert(sb[t].n < SB);
            sb[t].var[sb[t].n] = v; sb[t].val[sb[t].n] = x; sb[t].sc[sb[t].n] = 0;
            sb[t].n++
        :: else -> drain(t); mem[v] = x
        fi
    }
}
inline st_sc(t, v, x)
{
    d_step {
        if
        :: BUFFERED(t) ->
            assert(sb[t].n < SB);
            sb[t].var[sb[t].n] = v; sb[t].val[sb[t].n] = x; sb[t].sc[sb[t].n] = 1;
            sb[t].n++; sb[t].nsc++
        :: else -> drain(t); mem[v] = x
        fi
    }
}

/* The value thread t sees: its own newest pending store to v, else memory. */
inline fwd(t, v, r)
{
    r = mem[v];
    if :: sb[t].n > 0 && sb[t].var[0] == v -> r = sb[t].val[0] :: else fi;
    if :: sb[t].n > 1 && sb[t].var[1] == v -> r = sb[t].val[1] :: else fi;
    if :: sb[t].n > 2 && sb[t].var[2] == v -> r = sb[t].val[2] :: else fi
}

/* relaxed / acquire load: may pass the thread's buffered stores */
inline ld(t, v, r)
{
    d_step { fwd(t, v, r) }
}
/* seq_cst load: waits for the thread's seq_cst stores to be visible */
inline ld_sc(t, v, r)
{
    d_step { sb[t].nsc == 0; fwd(t, v, r) }
}

/* atomic_thread_fence(memory_order_seq_cst) */
inline fence(t)
{
    d_step { drain(t) }
}

/* weft__barrier_heavy: its own fence, then membarrier(2): a full fence on
 * every other thread, i.e. every store buffer drains. */
byte hb_i;
inline heavy()
{
    d_step {
        hb_i = 0;
        do
        :: hb_i < NT -> drain(hb_i); hb_i++
        :: else -> break
        od;
        hb_i = 0
    }
}

/* Read-modify-writes: drain the buffer, then act on memory at once. */
inline rmw_add(t, v, d, old)    /* old = fetch_add(v, d) */
{
    d_step { drain(t); old = mem[v]; mem[v] = mem[v] + d }
}
inline rmw_sub(t, v, d, old)    /* old = fetch_sub(v, d) */
{
    d_step { drain(t); old = mem[v]; assert(mem[v] >= d); mem[v] = mem[v] - d }
}
inline rmw_cas(t, v, e, x, ok)  /* ok = compare_exchange(v, e -> x) */
{
    d_step {
        drain(t);
        if :: mem[v] == e -> mem[v] = x; ok = true
           :: else -> ok = false
        fi
    }
}
inline rmw_xchg(t, v, x, old)   /* old = exchange(v, x) */
{
    d_step { drain(t); old = mem[v]; mem[v] = x }
}

/* A spin lock / pthread mutex held for a few instructions (weft__lock,
 * weft__spin): acquire is a CAS that waits for the word to be 0, release a
 * buffered release store. */
inline lock(t, l)
{
    d_step { mem[l] == 0; drain(t); mem[l] = 1 }
}
inline unlock(t, l)
{
    st_rel(t, l, 0)
}

/* Commits a thread's buffered stores whenever it likes. */
proctype flusher(byte t)
{
end:
    do
    :: d_step { sb[t].n > 0 -> commit_one(t) }
    od
}
