/*
 * What the backends share on POSIX: the one non-blocking attempt at an
 * operation (weft__io_try) that the epoll backend retries on readiness and
 * the io_uring backend tries before submitting. (The table of fd records
 * is fd.c's, for every system.)
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

void weft__io_sigpipe_drain(void)
{
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    struct timespec zero = { 0, 0 };
    while (sigtimedwait(&pipe, NULL, &zero) == SIGPIPE)
        ;
}

static ssize_t write_nosig(weft__io_op *op)
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

size_t weft__io_drain_len(const weft__io_op *op)
{
    if (!op->rec->stream)
        return 0;
    switch (op->kind) {
    case WEFT_IO_READ:
        return op->len;
    case WEFT_IO_RECV:
        return op->flags ? 0 : op->len;
    case WEFT_IO_READV: {
        size_t n = 0;
        for (int i = 0; i < op->iovcnt; i++)
            n += op->iov[i].iov_len;
        return n;
    }
    default:
        return 0;
    }
}

ssize_t weft__io_try(weft__io_op *op)
{
    /* A fiber's attempt (op->rec is set) on a socket never blocks, even on
     * a blocking socket behind the record of a non-blocking one (calls_posix.c,
     * A NEW FILE BEHIND AN OLD NUMBER); a plain thread's blocks as asked. */
    bool sock = op->rec && op->rec->socket;
    int nowait = op->rec ? MSG_DONTWAIT : 0;
    for (;;) {
        ssize_t r;
        switch (op->kind) {
        case WEFT_IO_READ:
            r = sock ? recv(op->fd, op->buf, op->len, MSG_DONTWAIT) : read(op->fd, op->buf, op->len);
            break;
        case WEFT_IO_READV:
            if (sock) {
                struct msghdr m = { .msg_iov = (struct iovec *)op->iov, .msg_iovlen = (size_t)op->iovcnt };
                r = recvmsg(op->fd, &m, MSG_DONTWAIT);
            } else {
                r = readv(op->fd, op->iov, op->iovcnt);
            }
            break;
        case WEFT_IO_WRITE:
            r = sock ? send(op->fd, op->buf, op->len, MSG_NOSIGNAL | MSG_DONTWAIT) : write_nosig(op);
            break;
        case WEFT_IO_WRITEV:
            if (sock) {
                struct msghdr m = { .msg_iov = (struct iovec *)op->iov, .msg_iovlen = (size_t)op->iovcnt };
                r = sendmsg(op->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
            } else {
                r = write_nosig(op);
            }
            break;
        case WEFT_IO_RECV:
            r = recv(op->fd, op->buf, op->len, op->flags | nowait);
            break;
        case WEFT_IO_SEND:
            r = send(op->fd, op->buf, op->len, op->flags | nowait | MSG_NOSIGNAL);
            break;
        case WEFT_IO_RECVFROM:
            r = recvfrom(op->fd, op->buf, op->len, op->flags | nowait, op->addr, op->addrlen);
            break;
        case WEFT_IO_SENDTO:
            r = sendto(op->fd, op->buf, op->len, op->flags | nowait | MSG_NOSIGNAL, op->addr, op->tolen);
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
