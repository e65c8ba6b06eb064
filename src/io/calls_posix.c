/*
 * The public I/O calls of weft.h on POSIX. Each builds an operation
 * (io.h) on the caller's stack and runs it one of three ways:
 *
 *   - from a fiber, on a pollable fd (socket, pipe, fifo, eventfd, tty):
 *     the running backend's io(), which parks the fiber, not the worker;
 *   - from a fiber, on a regular file or block device: io_uring when it is
 *     the backend, else the blocking pool (epoll cannot poll files);
 *   - from a plain thread, or with no runtime: the blocking syscall. An fd
 *     that is non-blocking gets poll(2) on EAGAIN and a retry, so the call
 *     still blocks, as the same call from a fiber would appear to.
 *
 * O_NONBLOCK: the first time a fiber uses a pollable fd, weft sets
 * O_NONBLOCK on it (the flag belongs to the open file description: a
 * shared tty or pipe sees it too; weft does not clear it again). Calls
 * from plain threads keep working on such fds through poll(2).
 *
 * SIGPIPE: socket writes pass MSG_NOSIGNAL. Pipe and tty writes cannot,
 * so SIGPIPE is blocked on the workers (io.c) and, around each such write,
 * on a plain thread; a write that gets EPIPE consumes the queued signal.
 * A broken pipe is therefore always -EPIPE, never a dead process.
 *
 * A NEW FILE BEHIND AN OLD NUMBER: the fd record (io.h) describes the file
 * the number had when a fiber first used it. A program that closes with
 * close(2) instead of weft_close, or dup2's over a number, puts a new file
 * behind the old record: "registered" with epoll when it is not (its
 * first park would wait for ever), "drained" (its first read would park
 * without trying), a socket when it is a pipe, non-blocking when it
 * blocks. Asking the kernel what the file is at every call would cost a
 * system call each time, on the path whose system calls weft counts; so
 * each way the record can lie is caught where it matters, at no cost on
 * the fast path:
 *   - registration and the read shortcut: epoll checks its registration at
 *     every park, after the shortcut too (epoll.c, A NEW FILE), and
 *     returns WEFT__IO_NEWFILE when it was for an older file;
 *   - "non-blocking": a fiber's socket attempt passes MSG_DONTWAIT
 *     (weft__io_try), so it cannot block the worker whatever O_NONBLOCK
 *     says; connect and accept, which have no such flag, check O_NONBLOCK
 *     (one fcntl per connection: weft sets it on every pollable fd, so its
 *     absence means a new file);
 *   - "socket" on a pipe fails with ENOTSOCK, "file" on a pollable fd
 *     says EAGAIN from the pool: neither happens to a true record.
 * Each makes run() learn the fd again (renew) and retry. What is left: a
 * blocking pipe or tty behind the record of a non-blocking one blocks its
 * worker on the first attempt (read(2) has no MSG_DONTWAIT), until it
 * parks and the check above re-learns it. And fibers parked on the old
 * file when it was closed behind weft's back stay parked until cancelled
 * or a deadline: only weft_close ends them.
 *
 * EMFILE: an accept that finds the process out of fds parks for a short,
 * doubling backoff (1 ms .. 100 ms) and retries, honouring cancel and the
 * deadline. Readiness would report the listening socket ready at once
 * again: retrying without a pause is a busy loop; returning the error makes
 * the caller's accept loop the busy loop instead. Connections wait in the
 * kernel's backlog meanwhile.
 */
#define _GNU_SOURCE
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ----------------------------------------------------------- plain threads */

static ssize_t plain(weft__io_op *op)
{
    /* A plain thread's writes keep SIGPIPE away with a temporary mask. */
    bool wr = op->kind == WEFT_IO_WRITE || op->kind == WEFT_IO_WRITEV;
    sigset_t pipe, old;
    if (wr) {
        sigemptyset(&pipe);
        sigaddset(&pipe, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &pipe, &old);
    }
    ssize_t r;
    for (;;) {
        if (op->kind == WEFT_IO_POLL) {
            struct pollfd p = { .fd = op->fd, .events = (short)op->events };
            r = poll(&p, 1, -1);
            if (r < 0 && errno == EINTR)
                continue;
            r = r < 0 ? -errno : (p.revents & POLLNVAL) ? -EBADF : p.revents;
            break;
        }
        r = weft__io_try(op);   /* blocks if the fd is blocking */
        if (r != -EAGAIN)
            break;
        if ((op->kind == WEFT_IO_RECV || op->kind == WEFT_IO_SEND || op->kind == WEFT_IO_RECVFROM ||
             op->kind == WEFT_IO_SENDTO) && (op->flags & MSG_DONTWAIT))
            break;
        struct pollfd p = { .fd = op->fd, .events = (short)weft__io_op_events(op) };
        if (poll(&p, 1, -1) < 0 && errno != EINTR) {
            r = -errno;
            break;
        }
    }
    if (wr) {
        if (r == -EPIPE)
            weft__io_sigpipe_drain();
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    return r;
}

/* ---------------------------------------------------------------- fibers */

/* An int socket option of fd, or -1. */
static int sockopt(int fd, int name)
{
    int v = -1;
    socklen_t len = sizeof v;
    return getsockopt(fd, SOL_SOCKET, name, &v, &len) == 0 ? v : -1;
}

/* Learn what fd is; make a pollable one non-blocking. Under rec->lock. */
static int classify(struct weft__fd *rec, int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode) || S_ISDIR(st.st_mode)) {
        rec->socket = false;
        __atomic_store_n(&rec->cls, WEFT_FD_FILE, __ATOMIC_RELEASE);   /* read unlocked */
        return 0;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    rec->socket = S_ISSOCK(st.st_mode);
    rec->stream = rec->socket && sockopt(fd, SO_TYPE) == SOCK_STREAM;
    /* TCP proper: not SCTP or MPTCP, whose SO_PROTOCOL differs, nor a unix
     * stream (see epoll.c, NO READ THAT MUST FAIL) */
    int domain = rec->stream ? sockopt(fd, SO_DOMAIN) : -1;
    rec->tcp = (domain == AF_INET || domain == AF_INET6) && sockopt(fd, SO_PROTOCOL) == IPPROTO_TCP;
    __atomic_store_n(&rec->rdmark, false, __ATOMIC_RELAXED);
    __atomic_store_n(&rec->rdrained, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&rec->cls, WEFT_FD_POLL, __ATOMIC_RELEASE);
    return 0;
}

/* The file behind fd is not the one rec describes (A NEW FILE BEHIND AN
 * OLD NUMBER): learn it again. A fiber between its edge count and its park
 * sees the counts move and tries again. The registration stays as it is:
 * epoll's check at the next park corrects it. */
static int renew(struct weft__fd *rec, int fd)
{
    weft__lock_acquire(&rec->lock);
    int err = classify(rec, fd);
    __atomic_add_fetch(&rec->rseq, 1, __ATOMIC_RELEASE);
    __atomic_add_fetch(&rec->wseq, 1, __ATOMIC_RELEASE);
    weft__lock_release(&rec->lock);
    return err;
}

/* connect and accept cannot say MSG_DONTWAIT: a pollable fd that is not
 * O_NONBLOCK is a new file behind a classified record (weft set the flag
 * on the old one), or someone cleared the flag; learn it again either way. */
static int nonblock_check(struct weft__fd *rec, int fd)
{
    if (__atomic_load_n(&rec->cls, __ATOMIC_RELAXED) != WEFT_FD_POLL)
        return 0;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    return fl & O_NONBLOCK ? 0 : renew(rec, fd);
}

static struct weft__fd *fd_ready(int fd, int *err)
{
    struct weft__fd *rec = weft__fd_get(fd);
    if (!rec) {
        /* out of the table's range, closed, or no memory for its chunk */
        *err = fd < 0 || fcntl(fd, F_GETFD) < 0 ? -EBADF : -ENOMEM;
        return NULL;
    }
    if (WEFT_UNLIKELY(__atomic_load_n(&rec->cls, __ATOMIC_ACQUIRE) == WEFT_FD_UNKNOWN)) {
        weft__lock_acquire(&rec->lock);
        *err = __atomic_load_n(&rec->cls, __ATOMIC_RELAXED) == WEFT_FD_UNKNOWN ? classify(rec, fd) : 0;
        weft__lock_release(&rec->lock);
        if (*err < 0)
            return NULL;
    }
    return rec;
}

static void *file_job(void *arg)
{
    return (void *)(intptr_t)weft__io_try(arg);
}

/* A receive with MSG_OOB takes the urgent byte, and with it the EPOLLPRI
 * that would tell epoll a short read may stop at the mark: say so in the
 * record first (epoll.c, NO READ THAT MUST FAIL). From a plain thread too,
 * for fibers may read the same fd. */
static void oob_note(const weft__io_op *op)
{
    if ((op->kind != WEFT_IO_RECV && op->kind != WEFT_IO_RECVFROM) || !(op->flags & MSG_OOB))
        return;
    bool fiber = weft__cur_fiber() != NULL;
    if (!weft__io_plain_enter(fiber))
        return;
    struct weft__fd *rec = weft__io ? weft__fd_peek(op->fd) : NULL;
    if (rec)
        __atomic_store_n(&rec->rdmark, true, __ATOMIC_RELAXED);
    weft__io_plain_leave(fiber);
}

/* One run of op on the record as it stands. */
static ssize_t run(const struct weft__io_backend *b, weft__io_op *op, struct weft__fd *rec, bool *pooled)
{
    *pooled = false;
    if (__atomic_load_n(&rec->cls, __ATOMIC_RELAXED) == WEFT_FD_FILE && !b->files) {
        void *ret;
        *pooled = true;
        int err = weft__pool_run(file_job, op, &ret, false, NULL);
        return err < 0 ? err : (ssize_t)(intptr_t)ret;
    }
    if (op->kind == WEFT_IO_ACCEPT) {
        int err = nonblock_check(rec, op->fd);
        if (err < 0)
            return err;
    }
    if ((op->kind == WEFT_IO_RECV || op->kind == WEFT_IO_SEND || op->kind == WEFT_IO_RECVFROM ||
         op->kind == WEFT_IO_SENDTO) && (op->flags & MSG_DONTWAIT))
        return weft__io_try(op);   /* the caller asked not to wait */
    return b->io(op);
}

ssize_t weft__io_run(weft__io_op *op)
{
    if (WEFT_UNLIKELY(op->flags))
        oob_note(op);
    weft_fiber *self = weft__cur_fiber();
    const struct weft__io_backend *b = weft__io;
    if (!self || !b)
        return plain(op);
    int err = weft__wait_check(self);
    if (err < 0)
        return err;
    struct weft__fd *rec = fd_ready(op->fd, &err);
    if (!rec)
        return err;
    op->rec = rec;
    for (bool renewed = false;;) {
        bool pooled;
        ssize_t r = run(b, op, rec, &pooled);
        /* The record lied (A NEW FILE BEHIND AN OLD NUMBER): a socket call
         * on what is not a socket, a "file" that would block, a
         * registration that was gone. The first two happen once per new
         * file; a gone registration was replaced by the check that found it. */
        bool lied = r == WEFT__IO_NEWFILE || (pooled && r == -EAGAIN) ||
                    (r == -ENOTSOCK && (op->kind == WEFT_IO_READ || op->kind == WEFT_IO_READV ||
                                        op->kind == WEFT_IO_WRITE || op->kind == WEFT_IO_WRITEV));
        if (!lied || (renewed && r != WEFT__IO_NEWFILE))
            return r;
        renewed = true;
        err = renew(rec, op->fd);
        if (err < 0)
            return err;
    }
}

/* -------------------------------------------------------------- the calls */

int weft__socket_fd(weft_socket s) { return s; }

ssize_t weft_read(int fd, void *buf, size_t n)
{
    if ((!buf && n) || n > SSIZE_MAX)
        return -EINVAL;
    weft__io_op op = { .kind = WEFT_IO_READ, .fd = fd, .buf = buf, .len = n };
    return weft__io_run(&op);
}

ssize_t weft_write(int fd, const void *buf, size_t n)
{
    if ((!buf && n) || n > SSIZE_MAX)
        return -EINVAL;
    weft__io_op op = { .kind = WEFT_IO_WRITE, .fd = fd, .buf = (void *)buf, .len = n };
    return weft__io_run(&op);
}

static int iov_check(const struct iovec *iov, int iovcnt)
{
    if (iovcnt < 0 || iovcnt > IOV_MAX || (!iov && iovcnt))
        return -EINVAL;
    for (int i = 0; i < iovcnt; i++)
        if (!iov[i].iov_base && iov[i].iov_len)
            return -EINVAL;
    return 0;
}

ssize_t weft_readv(int fd, const struct iovec *iov, int iovcnt)
{
    int err = iov_check(iov, iovcnt);
    if (err < 0)
        return err;
    weft__io_op op = { .kind = WEFT_IO_READV, .fd = fd, .iov = iov, .iovcnt = iovcnt };
    return weft__io_run(&op);
}

ssize_t weft_writev(int fd, const struct iovec *iov, int iovcnt)
{
    int err = iov_check(iov, iovcnt);
    if (err < 0)
        return err;
    weft__io_op op = { .kind = WEFT_IO_WRITEV, .fd = fd, .iov = iov, .iovcnt = iovcnt };
    return weft__io_run(&op);
}

weft_socket weft_accept(weft_socket fd, struct sockaddr *addr, socklen_t *addrlen)
{
    if (addr && !addrlen)
        return -EINVAL;
    weft__io_op op = { .kind = WEFT_IO_ACCEPT, .fd = fd, .addr = addr, .addrlen = addr ? addrlen : NULL };
    uint64_t backoff = 1000000;   /* 1 ms */
    for (;;) {
        ssize_t r = weft__io_run(&op);
        if (r >= 0) {
            weft__fd_fresh((int)r, op.rec);   /* op.rec: NULL from a plain thread */
            return (int)r;
        }
        if (r == -ECONNABORTED)
            continue;   /* the peer gave up while queued: take the next */
        if (r != -EMFILE && r != -ENFILE && r != -ENOBUFS && r != -ENOMEM)
            return (int)r;
        int s = weft_sleep(backoff);   /* a plain thread sleeps too */
        if (s < 0)
            return s;
        if (backoff < 100000000)
            backoff *= 2;
    }
}

int weft_connect(weft_socket fd, const struct sockaddr *addr, socklen_t addrlen)
{
    if (!addr || addrlen == 0)
        return -EINVAL;
    weft_fiber *self = weft__cur_fiber();
    if (self && weft__io) {
        int err = weft__wait_check(self);
        if (err < 0)
            return err;
        struct weft__fd *rec = fd_ready(fd, &err);   /* makes it non-blocking */
        if (!rec)
            return err;
        err = nonblock_check(rec, fd);   /* ...unless the record is an old file's */
        if (err < 0)
            return err;
    }
    if (connect(fd, addr, addrlen) == 0)
        return 0;
    if (errno != EINPROGRESS && errno != EINTR)
        return -errno;
    /* In progress: wait until writable, then ask how it went. */
    int r = weft_wait_fd(fd, POLLOUT);
    if (r < 0)
        return r;
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        return -errno;
    return -soerr;
}

int weft_wait_fd(int fd, int events)
{
    if (!events || (events & ~(POLLIN | POLLOUT | POLLPRI | POLLRDHUP)))
        return -EINVAL;
    if (fd < 0)
        return -EBADF;   /* poll(2) would skip it and wait for nothing, forever */
    weft__io_op op = { .kind = WEFT_IO_POLL, .fd = fd, .events = events };
    return (int)weft__io_run(&op);
}

int weft_close(int fd)
{
    if (fd < 0)
        return -EBADF;
    bool fiber = weft__cur_fiber() != NULL;
    bool in = weft__io_plain_enter(fiber);   /* a plain thread: no teardown under us */
    const struct weft__io_backend *b = in ? weft__io : NULL;
    struct weft__fd *rec = b ? weft__fd_peek(fd) : NULL;
    if (rec)
        weft__lock_acquire(&rec->lock);
    if (rec) {
        b->close(rec, fd);
        weft__fd_forget(rec);
    }
    /* Under the lock: nobody registers or submits on the old file between
     * the cleanup above and the close. Linux closes even on EINTR. */
    int r = close(fd) < 0 && errno != EINTR ? -errno : 0;
    if (rec)
        weft__lock_release(&rec->lock);
    if (in)
        weft__io_plain_leave(fiber);
    return r;
}
