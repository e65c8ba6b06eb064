/*
 * Channels and select, with Go's semantics (runtime/chan.go, select.go).
 *
 * A channel is one allocation: the header below and, for capacity > 0, a
 * ring of `cap` elements. Two FIFO queues of wait records (waitq.h) hold
 * the fibers blocked in send and in receive; the word lock `lock` guards
 * everything. At any moment at most one of three things holds: the ring
 * has room and no sender waits, or it has elements and no receiver waits;
 * senders wait only on a full ring, receivers only on an empty one.
 *
 * Hand-over is direct, as in Go: a sender that finds a receiver waiting
 * claims it, copies the value into the receiver's own buffer and readies
 * it; the value never passes through the ring. A receiver that takes from
 * a full ring with a sender waiting moves that sender's value into the
 * slot it just emptied and readies the sender, so FIFO order holds. The
 * claim comes first and the copy second: a waiter whose claim was lost to
 * a cancel or a deadline is passed over, and its value stays with it.
 *
 * Close claims every waiter: receivers return -EPIPE with a zeroed element
 * (the ring was empty, or they would not wait), senders -EPIPE (their value
 * was not sent). Later receives drain the ring, then return -EPIPE.
 *
 * SELECT (Go's selectgo)
 *   1. lock the channels of all non-NULL cases in address order, each once
 *      (the order rules out deadlock between two selects, or a select and a
 *      close, that lock overlapping sets);
 *   2. visit the cases in a random permutation (fairness among ready ones)
 *      and take the first that can proceed now;
 *   3. if none: enqueue one record per case, all naming this fiber, on each
 *      channel's send or receive queue, in the order of step 2 (so that
 *      several cases on one channel are served in random order too);
 *      prepare one wait; unlock; park once;
 *   4. whichever counterpart claims the fiber first wins: the claim's result
 *      is the case index (sel records), the counterpart does the copy for
 *      that case only; records on other channels lose their claims and are
 *      skipped by everyone else;
 *   5. awake, lock all channels again and unlink every record still queued.
 *   A select parks with no unlink callback: its records are taken off by the
 *   fiber itself in step 5, which it must do anyway for the cases that did
 *   not fire; until then they stay valid on its stack, and a counterpart
 *   that meets one merely loses the claim.
 */
#include "waitq.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ELEM_MAX ((size_t)1 << 16)       /* Go's limit on a channel element, too */
#define SELECT_MAX ((size_t)1 << 16)
#define SELECT_STACK 8                   /* cases handled without malloc */

struct weft_chan {
    weft__wordlock lock;
    bool closed;
    size_t elem_size, cap;
    size_t count, recvx, sendx;     /* ring: count elements from recvx; sendx is next free */
    weft__waitq sendq, recvq;
    char *buf;
};

/* elem_size 0 is Go's chan struct{}: the values carry no data, only the
 * rendezvous or the count; the ring takes no memory whatever the capacity,
 * elements may be NULL, and every copy below is of 0 bytes. */
weft_chan *weft_chan_make(size_t elem_size, size_t capacity)
{
    if (elem_size > ELEM_MAX)
        return NULL;
    size_t hdr = (sizeof(weft_chan) + 15) & ~(size_t)15;
    if (elem_size && capacity > (SIZE_MAX / 2 - hdr) / elem_size)
        return NULL;
    weft_chan *c = malloc(hdr + capacity * elem_size);
    if (!c)
        return NULL;
    memset(c, 0, sizeof *c);
    c->elem_size = elem_size;
    c->cap = capacity;
    c->buf = (char *)c + hdr;
    return c;
}

void weft_chan_free(weft_chan *c)
{
    if (!c)
        return;
    weft__wlock(&c->lock);
    if (!weft__waitq_empty(&c->sendq) || !weft__waitq_empty(&c->recvq)) {
        fprintf(stderr, "weft: weft_chan_free(%p): fibers are still waiting on the channel "
                "(free it only when no send, receive or select can use it)\n", (void *)c);
        abort();
    }
    weft__wunlock(&c->lock);
    free(c);
}

/* ------------------------------------------------- the non-blocking core */

static inline void *slot(weft_chan *c, size_t i) { return c->buf + i * c->elem_size; }
static inline size_t inc(weft_chan *c, size_t i) { return ++i == c->cap ? 0 : i; }

/* Copy one element. Most channels carry a pointer or an integer: give the
 * compiler those sizes as constants, so the copy is one move instead of a
 * call into the C library's general memcpy. */
static inline void copy_elem(const weft_chan *c, void *dst, const void *src)
{
    switch (c->elem_size) {
    case 0: break;   /* zero-size elements: dst or src may be NULL */
    case 4: memcpy(dst, src, 4); break;
    case 8: memcpy(dst, src, 8); break;
    case 16: memcpy(dst, src, 16); break;
    default: memcpy(dst, src, c->elem_size); break;
    }
}

/* With c locked: send now if possible. 0 or -EPIPE when done, -EAGAIN when
 * it would block. *wake: a fiber to ready once c is unlocked. */
static inline __attribute__((always_inline)) int send_now(weft_chan *c, const void *elem, weft_fiber **wake)
{
    if (c->closed)
        return -EPIPE;
    weft__waiter *w = weft__waitq_claim(&c->recvq, 0);
    if (w) {
        if (w->elem)
            copy_elem(c, w->elem, elem);
        *wake = w->f;
        return 0;
    }
    if (c->count < c->cap) {
        copy_elem(c, slot(c, c->sendx), elem);
        c->sendx = inc(c, c->sendx);
        c->count++;
        return 0;
    }
    return -EAGAIN;
}

/* With c locked: receive now if possible (elem may be NULL: discard). */
static inline __attribute__((always_inline)) int recv_now(weft_chan *c, void *elem, weft_fiber **wake)
{
    if (c->count > 0) {
        void *s = slot(c, c->recvx);
        if (elem)
            copy_elem(c, elem, s);
        /* ring full with a sender waiting: its value takes the freed slot */
        weft__waiter *w = weft__waitq_claim(&c->sendq, 0);
        if (w) {
            copy_elem(c, s, w->elem);
            c->sendx = inc(c, c->sendx);
            *wake = w->f;
        } else {
            c->count--;
        }
        c->recvx = inc(c, c->recvx);
        return 0;
    }
    weft__waiter *w = weft__waitq_claim(&c->sendq, 0);
    if (w) {
        if (elem)
            copy_elem(c, elem, w->elem);
        *wake = w->f;
        return 0;
    }
    if (c->closed) {
        if (elem)
            memset(elem, 0, c->elem_size);
        return -EPIPE;
    }
    return -EAGAIN;
}

static void chan_unlink(weft_fiber *f)
{
    weft__waiter *w = f->wobj;
    weft_chan *c = w->obj;
    weft__wlock(&c->lock);
    if (w->queued)
        weft__waitq_remove(w->op == WEFT_SEND ? &c->sendq : &c->recvq, w);
    weft__wunlock(&c->lock);
}

/* send or receive, blocking or not */
static int chan_op(weft_chan *c, int op, void *elem, bool block)
{
    if (!c || (op == WEFT_SEND && !elem && c->elem_size))
        return -EINVAL;
    weft_fiber *self = NULL;
    if (block && !(self = weft__cur_fiber()))
        return -EPERM;
    weft_fiber *wake = NULL;
    weft__wlock(&c->lock);
    int r = op == WEFT_SEND ? send_now(c, elem, &wake) : recv_now(c, elem, &wake);
    if (r != -EAGAIN || !block || (r = weft__wait_check(self)) < 0) {
        weft__wunlock(&c->lock);
        if (wake)
            weft__ready(wake);
        return r;
    }
    weft__waiter rec = { .obj = c, .f = self, .op = op, .elem = elem };
    weft__waitq_push(op == WEFT_SEND ? &c->sendq : &c->recvq, &rec);
    weft__wait_prepare(self, op == WEFT_SEND ? WEFT_W_CHAN_SEND : WEFT_W_CHAN_RECV, &rec,
                       chan_unlink);
    weft__wunlock(&c->lock);
    /* 0: the counterpart copied the value; -EPIPE: closed meanwhile (a
     * receiver's buffer is zeroed below); -ECANCELED/-ETIMEDOUT: nothing
     * was transferred. */
    r = weft__wait_park(self, -1);
    if (r == -EPIPE && op == WEFT_RECV && elem)
        memset(elem, 0, c->elem_size);   /* c is still alive: freeing it with us waiting is a bug */
    return r;
}

int weft_chan_send(weft_chan *c, const void *elem) { return chan_op(c, WEFT_SEND, (void *)elem, true); }
int weft_chan_recv(weft_chan *c, void *elem) { return chan_op(c, WEFT_RECV, elem, true); }
int weft_chan_trysend(weft_chan *c, const void *elem) { return chan_op(c, WEFT_SEND, (void *)elem, false); }
int weft_chan_tryrecv(weft_chan *c, void *elem) { return chan_op(c, WEFT_RECV, elem, false); }

/* Go's len(c) and cap(c). The count changes under the lock, so it is read
 * under it too: exact at the moment it was read, from any thread. elem_size
 * and cap never change. */
size_t weft_chan_len(const weft_chan *c)
{
    if (!c)
        return 0;
    weft_chan *m = (weft_chan *)c;   /* the lock is not part of the value */
    weft__wlock(&m->lock);
    size_t n = m->count;
    weft__wunlock(&m->lock);
    return n;
}

size_t weft_chan_cap(const weft_chan *c) { return c ? c->cap : 0; }

/* Claim every record of q for close; chain the claimed ones on *list. */
static void close_queue(weft__waitq *q, weft__waiter ***tail)
{
    weft__waiter *w;
    while ((w = weft__waitq_claim(q, -EPIPE))) {
        w->closed = true;
        **tail = w;
        *tail = &w->next;
    }
}

int weft_chan_close(weft_chan *c)
{
    if (!c)
        return -EINVAL;
    weft__wlock(&c->lock);
    if (c->closed) {
        weft__wunlock(&c->lock);
        return -EPIPE;
    }
    c->closed = true;
    weft__waiter *list = NULL, **tail = &list, *w;
    close_queue(&c->recvq, &tail);
    close_queue(&c->sendq, &tail);
    *tail = NULL;
    weft__wunlock(&c->lock);
    while ((w = list)) {
        list = w->next;   /* read before ready: the record dies with the wait */
        weft__ready(w->f);
    }
    return 0;
}

/* ----------------------------------------------------------------- select */

/* Per-thread xorshift for the poll order. Not inlined, so the address of
 * the thread-local is computed afresh on each call (fibers migrate). */
static __thread uint64_t rng;

__attribute__((noinline)) static uint32_t sel_rand(void)
{
    uint64_t x = rng;
    if (!x)
        x = ((uint64_t)(uintptr_t)&rng * 0x9E3779B97F4A7C15ull) ^ weft__now() ^ 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng = x;
    return (uint32_t)((x * 0x2545F4914F6CDD1Dull) >> 32);
}

static void lock_all(weft_chan **locks, size_t n)
{
    for (size_t i = 0; i < n; i++)
        weft__wlock(&locks[i]->lock);
}

static void unlock_all(weft_chan **locks, size_t n)
{
    for (size_t i = n; i-- > 0;)
        weft__wunlock(&locks[i]->lock);
}

static int cmp_chan(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(weft_chan *const *)a, y = (uintptr_t)*(weft_chan *const *)b;
    return x < y ? -1 : x > y;
}

/* Sort by address and drop duplicates; returns how many remain. */
static size_t lock_order(weft_chan **v, size_t n)
{
    if (n <= 16) {
        for (size_t i = 1; i < n; i++) {
            weft_chan *x = v[i];
            size_t j = i;
            for (; j > 0 && (uintptr_t)v[j - 1] > (uintptr_t)x; j--)
                v[j] = v[j - 1];
            v[j] = x;
        }
    } else {
        qsort(v, n, sizeof *v, cmp_chan);
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (m == 0 || v[m - 1] != v[i])
            v[m++] = v[i];
    return m;
}

/* No case can ever fire: like Go's empty select, wait for cancel or deadline. */
static int select_nothing(weft_fiber *self)
{
    int r = weft__wait_check(self);
    if (r < 0)
        return r;
    weft__wait_prepare(self, WEFT_W_SELECT, NULL, NULL);
    return weft__wait_park(self, -1);
}

static int do_select(weft_case *cases, size_t n, bool block)
{
    if ((!cases && n) || n > SELECT_MAX)
        return -EINVAL;
    weft_fiber *self = NULL;
    if (block && !(self = weft__cur_fiber()))
        return -EPERM;
    size_t na = 0;
    for (size_t i = 0; i < n; i++) {
        if (!cases[i].chan)
            continue;
        if ((cases[i].op != WEFT_SEND && cases[i].op != WEFT_RECV) ||
            (cases[i].op == WEFT_SEND && !cases[i].elem && cases[i].chan->elem_size))
            return -EINVAL;
        na++;
    }
    if (na == 0)
        return block ? select_nothing(self) : -EAGAIN;

    /* order[]: active case indices, in random order; locks[]: their
     * channels, in address order; recs[]: one wait record per case. */
    uint32_t order_s[SELECT_STACK];
    weft_chan *locks_s[SELECT_STACK];
    weft__waiter recs_s[SELECT_STACK];
    uint32_t *order = order_s;
    weft_chan **locks = locks_s;
    weft__waiter *recs = recs_s;
    void *heap = NULL;
    if (na > SELECT_STACK) {
        heap = malloc(na * (sizeof *order + sizeof *locks + sizeof *recs));
        if (!heap)
            return -ENOMEM;
        recs = heap;
        locks = (weft_chan **)(recs + na);
        order = (uint32_t *)(locks + na);
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!cases[i].chan)
            continue;
        size_t j = sel_rand() % (k + 1);   /* inside-out Fisher-Yates */
        order[k] = order[j];
        order[j] = (uint32_t)i;
        locks[k] = cases[i].chan;
        k++;
    }
    size_t nl = lock_order(locks, na);

    int r, fired = -1;
    weft_fiber *wake = NULL;
    lock_all(locks, nl);
    for (k = 0; k < na; k++) {
        weft_case *cs = &cases[order[k]];
        r = cs->op == WEFT_SEND ? send_now(cs->chan, cs->elem, &wake)
                                : recv_now(cs->chan, cs->elem, &wake);
        if (r != -EAGAIN) {
            fired = (int)order[k];
            break;
        }
    }
    if (fired >= 0 || !block || (r = weft__wait_check(self)) < 0) {
        unlock_all(locks, nl);
        if (wake)
            weft__ready(wake);
        free(heap);
        if (fired < 0)
            return r;
        cases[fired].err = r;
        return fired;
    }

    /* Queue the records in the same random order as the poll above: with
     * several cases on one channel, the counterpart takes the first of them
     * in that queue, so queueing in case order would let the lowest index
     * win every time (Go's TestPseudoRandomSend). */
    weft__wait_prepare(self, WEFT_W_SELECT, recs, NULL);
    for (k = 0; k < na; k++) {
        weft_case *cs = &cases[order[k]];
        recs[k] = (weft__waiter){ .obj = cs->chan, .f = self, .sel = true, .op = cs->op,
                                  .idx = (int)order[k], .elem = cs->elem };
        weft__waitq_push(cs->op == WEFT_SEND ? &cs->chan->sendq : &cs->chan->recvq, &recs[k]);
    }
    unlock_all(locks, nl);
    r = weft__wait_park(self, -1);

    lock_all(locks, nl);
    weft__waiter *won = NULL;
    for (k = 0; k < na; k++) {
        weft__waiter *w = &recs[k];
        weft_chan *c = w->obj;
        if (w->queued)
            weft__waitq_remove(w->op == WEFT_SEND ? &c->sendq : &c->recvq, w);
        if (r >= 0 && w->idx == r)
            won = w;
    }
    unlock_all(locks, nl);
    if (r >= 0) {
        weft__assert(won != NULL);
        int err = won->closed ? -EPIPE : 0;
        if (err && won->op == WEFT_RECV && won->elem)
            memset(won->elem, 0, ((weft_chan *)won->obj)->elem_size);
        cases[r].err = err;
    }
    free(heap);
    return r;
}

int weft_select(weft_case *cases, size_t n) { return do_select(cases, n, true); }
int weft_tryselect(weft_case *cases, size_t n) { return do_select(cases, n, false); }

/* weft.h states the limit of a select. */
_Static_assert(SELECT_MAX == WEFT_SELECT_MAX, "WEFT_SELECT_MAX in weft.h is SELECT_MAX");

/* weft_chan_make answers NULL for bad arguments and for no memory alike.
 * Its bad-argument checks return before anything else is called, and its
 * one call that can fail is malloc, which sets errno to ENOMEM (POSIX and
 * the Windows CRT both say so): an errno cleared beforehand tells the two
 * NULLs apart without a second copy of the checks. */
int weft_chan_new(weft_chan **c, size_t elem_size, size_t capacity)
{
    if (!c)
        return -EINVAL;
    int saved = errno;
    errno = 0;
    *c = weft_chan_make(elem_size, capacity);
    int err = *c ? 0 : errno == ENOMEM ? -ENOMEM : -EINVAL;
    errno = saved;
    return err;
}
