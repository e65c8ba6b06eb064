/*
 * What the backends share on POSIX: the table of fd records, and the one
 * non-blocking attempt at an operation (weft__io_try) that the epoll backend
 * retries on readiness and the io_uring backend tries before submitting.
 *
 * The table is two-level, indexed by fd number: a fixed top array of
 * chunk pointers, each chunk 256 records allocated on first use and
 * published with a compare-and-swap. Lookups take no lock; records never
 * move and are never freed while the runtime runs (see io.h), so an epoll
 * event or a completion that names a closed fd finds a valid, reset record.
 */
#define _GNU_SOURCE
#include "io.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK_BITS 8
#define CHUNK_SIZE (1u << CHUNK_BITS)
#define TOP_SIZE   (1u << 13)            /* fds below 2^21: above Linux's nr_open default */

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

struct weft__fd *weft__fd_get(int fd)
{
    if (fd < 0 || (unsigned)fd >= TOP_SIZE * CHUNK_SIZE)
        return NULL;
    struct weft__fd *c = chunk_get((unsigned)fd >> CHUNK_BITS, true);
    return c ? &c[fd & (CHUNK_SIZE - 1)] : NULL;
}

struct weft__fd *weft__fd_peek(int fd)
{
    if (fd < 0 || (unsigned)fd >= TOP_SIZE * CHUNK_SIZE)
        return NULL;
    struct weft__fd *c = chunk_get((unsigned)fd >> CHUNK_BITS, false);
    return c ? &c[fd & (CHUNK_SIZE - 1)] : NULL;
}

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

void weft__io_sigpipe_drain(void)
{
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    struct timespec zero = { 0, 0 };
    while (sigtimedwait(&pipe, NULL, &zero) == SIGPIPE)
        ;
}

static long write_nosig(weft__io_op *op)
{
    ssize_t r;
    if (op->kind == WEFT_IO_WRITE)
        r = write(op->fd, op->buf, op->len);
    else
        r = writev(op->fd, op->iov, op->iovcnt);
    if (r < 0 && errno == EPIPE) {
        weft__io_sigpipe_drain();   /* its sigtimedwait leaves errno at EAGAIN */
        errno = EPIPE;
    }
    return r;
}

long weft__io_try(weft__io_op *op)
{
    bool sock = op->rec && op->rec->socket;
    for (;;) {
        long r;
        switch (op->kind) {
        case WEFT_IO_READ:
            r = read(op->fd, op->buf, op->len);
            break;
        case WEFT_IO_READV:
            r = readv(op->fd, op->iov, op->iovcnt);
            break;
        case WEFT_IO_WRITE:
            r = sock ? send(op->fd, op->buf, op->len, MSG_NOSIGNAL) : write_nosig(op);
            break;
        case WEFT_IO_WRITEV:
            if (sock) {
                struct msghdr m = { .msg_iov = (struct iovec *)op->iov, .msg_iovlen = (size_t)op->iovcnt };
                r = sendmsg(op->fd, &m, MSG_NOSIGNAL);
            } else {
                r = write_nosig(op);
            }
            break;
        case WEFT_IO_RECV:
            r = recv(op->fd, op->buf, op->len, op->flags);
            break;
        case WEFT_IO_SEND:
            r = send(op->fd, op->buf, op->len, op->flags | MSG_NOSIGNAL);
            break;
        case WEFT_IO_RECVFROM:
            r = recvfrom(op->fd, op->buf, op->len, op->flags, op->addr, op->addrlen);
            break;
        case WEFT_IO_SENDTO:
            r = sendto(op->fd, op->buf, op->len, op->flags | MSG_NOSIGNAL, op->addr, op->tolen);
            break;
        case WEFT_IO_ACCEPT:
            r = accept4(op->fd, op->addr, op->addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
            break;
        case WEFT_IO_POLL: {
            struct pollfd p = { .fd = op->fd, .events = (short)op->events };
            r = poll(&p, 1, 0);
            if (r == 0)
                return -EAGAIN;
            if (r > 0) {
                if (p.revents & POLLNVAL)
                    return -EBADF;
                return p.revents;
            }
            break;
        }
        default:
            return -EINVAL;
        }
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno == EWOULDBLOCK)
            return -EAGAIN;
        return -errno;
    }
}
