/*
 * What every backend shares, on every system: the table of fd records, the
 * list of operations on each, and the completion backends' wait for an
 * operation the kernel still owns.
 *
 * The table is two-level, indexed by the descriptor's slot (weft__fd_index:
 * the fd number on POSIX, a SOCKET's handle value / 4 on Windows): a fixed
 * top array of chunk pointers, each chunk 256 records allocated on first
 * use and published with a compare-and-swap. Lookups take no lock; records
 * never move and are never freed while the runtime runs (see io.h), so an
 * event or a completion that names a closed fd finds a valid, reset record.
 */
#include "io.h"

#include <stdlib.h>

#ifndef _WIN32
#include <poll.h>
#endif

#define CHUNK_BITS 8
#define CHUNK_SIZE (1u << CHUNK_BITS)
#define TOP_SIZE   (1u << 16)            /* slots below 2^24: above Linux's nr_open default and
                                            Windows' handle limit; untouched, it costs no memory */

static struct weft__fd *_Atomic table[TOP_SIZE];

static struct weft__fd *chunk_get(unsigned top, bool create)
{
    struct weft__fd *c = atomic_load_explicit(&table[top], memory_order_acquire);
    if (c || !create)
        return c;
    c = calloc(CHUNK_SIZE, sizeof *c);
    if (!c)
        return NULL;
    for (unsigned i = 0; i < CHUNK_SIZE; i++)
        weft__lock_init(&c[i].lock);
    struct weft__fd *expect = NULL;
    if (!atomic_compare_exchange_strong(&table[top], &expect, c)) {
        for (unsigned i = 0; i < CHUNK_SIZE; i++)
            weft__lock_destroy(&c[i].lock);
        free(c);
        c = expect;
    }
    return c;
}

static struct weft__fd *lookup(int fd, bool create)
{
    long i = weft__fd_index(fd);
    if (i < 0 || (unsigned long)i >= TOP_SIZE * CHUNK_SIZE)
        return NULL;
    struct weft__fd *c = chunk_get((unsigned)i >> CHUNK_BITS, create);
    return c ? &c[i & (CHUNK_SIZE - 1)] : NULL;
}

struct weft__fd *weft__fd_get(int fd) { return lookup(fd, true); }
struct weft__fd *weft__fd_peek(int fd) { return lookup(fd, false); }

void weft__fd_table_free(void);
void weft__fd_table_free(void)
{
    for (unsigned t = 0; t < TOP_SIZE; t++) {
        struct weft__fd *c = atomic_load(&table[t]);
        if (!c)
            continue;
        for (unsigned i = 0; i < CHUNK_SIZE; i++) {
            weft__assert(c[i].ops == NULL);
            weft__lock_destroy(&c[i].lock);
        }
        free(c);
        atomic_store(&table[t], NULL);
    }
}

/* In the child of a fork(): records may be locked by threads that are not
 * there and list operations of fibers that will never run again. Leave
 * them; the child's next runtime starts with an empty table. */
void weft__fd_atfork_child(void)
{
    for (unsigned t = 0; t < TOP_SIZE; t++)
        atomic_store_explicit(&table[t], NULL, memory_order_relaxed);
}

void weft__fd_forget(struct weft__fd *rec)
{
    __atomic_store_n(&rec->cls, WEFT_FD_UNKNOWN, __ATOMIC_RELAXED);   /* read unlocked */
    rec->socket = false;
    rec->stream = false;
    rec->tcp = false;
    rec->registered = false;
    __atomic_store_n(&rec->rdmark, false, __ATOMIC_RELAXED);
    __atomic_store_n(&rec->rdrained, 0, __ATOMIC_RELAXED);
    __atomic_add_fetch(&rec->rseq, 1, __ATOMIC_RELEASE);
    __atomic_add_fetch(&rec->wseq, 1, __ATOMIC_RELEASE);
}

void weft__fd_link(struct weft__fd *rec, weft__io_op *op)
{
    /* op->rec was set by the caller before the operation was published
     * (io_uring's poller reads it without the lock) */
    weft__assert(op->rec == rec);
    op->prev = NULL;
    op->next = rec->ops;
    if (rec->ops)
        rec->ops->prev = op;
    rec->ops = op;
    op->linked = true;
}

void weft__fd_unlink(struct weft__fd *rec, weft__io_op *op)
{
    if (!op->linked)
        return;
    if (op->prev)
        op->prev->next = op->next;
    else
        rec->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->prev = op->next = NULL;
    op->linked = false;
}

int weft__io_op_events(const weft__io_op *op)
{
    switch (op->kind) {
    case WEFT_IO_READ: case WEFT_IO_READV: case WEFT_IO_RECV:
    case WEFT_IO_RECVFROM: case WEFT_IO_ACCEPT:
        return POLLIN;
    case WEFT_IO_POLL:
        return op->events;
    default:
        return POLLOUT;
    }
}

void weft__io_wait_done(weft__io_op *op, weft_fiber *self)
{
    struct weft__fd *rec = op->rec;
    for (;;) {
        weft__lock_acquire(&rec->lock);
        if (op->done)
            break;
        weft__wait_prepare(self, WEFT_W_IO, op, NULL);
        weft__lock_release(&rec->lock);
        weft__wait_park_nointr(self);
    }
    weft__lock_release(&rec->lock);
}

weft_fiber *weft__io_complete(weft__io_op *op, ssize_t res)
{
    /* Acquire: pairs with the release in the backend's io(). The record was
     * written before the submission and reaches us through the kernel,
     * which neither the compiler nor ThreadSanitizer can see. */
    weft_fiber *f = __atomic_load_n(&op->fiber, __ATOMIC_ACQUIRE), *woke = NULL;
    struct weft__fd *rec = op->rec;
    weft__lock_acquire(&rec->lock);
    op->res = res;
    op->done = true;
    if (weft__wake_claim(f, 0))
        woke = f;
    weft__lock_release(&rec->lock);   /* op may be gone from here on */
    return woke;
}
