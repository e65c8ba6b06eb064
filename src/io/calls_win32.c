/*
 * The public I/O calls of weft.h on Windows. Sockets are what IOCP serves,
 * so the calls are about sockets; each builds an operation (io.h) on the
 * caller's stack and runs it one of two ways:
 *
 *   - from a fiber: the IOCP backend's io() (iocp.c), which parks the
 *     fiber, not the worker, until the completion arrives;
 *   - from a plain thread, or with no runtime: the blocking Winsock call.
 *
 * The layer below speaks of "fds": on Windows a socket's fd is its SOCKET
 * handle value (a multiple of 4 below 2^26, so it fits an int and indexes
 * the record table, see weft__fd_index). weft_read and weft_write accept a
 * socket too; on anything else (a CRT descriptor) they run _read/_write on
 * the blocking pool. weft_readv/weft_writev are not offered: Windows has no
 * struct iovec (-ENOSYS).
 *
 * Errors: Winsock reports through WSAGetLastError; weft__wsa_errno turns
 * those codes (and the Win32 codes overlapped calls surface) into the
 * negative errno values the rest of weft speaks.
 */
#include "io.h"

#include <errno.h>
#include <io.h>
#include <limits.h>
#include <stdint.h>

int weft__wsa_errno(int e)
{
    switch (e) {
    case 0: return 0;
    case WSAEWOULDBLOCK: return -EAGAIN;
    case WSAEINTR: return -EINTR;
    case WSAEBADF: case WSAENOTSOCK: case ERROR_INVALID_HANDLE: return -EBADF;
    case WSAEACCES: return -EACCES;
    case WSAEFAULT: return -EFAULT;
    case WSAEINVAL: case ERROR_INVALID_PARAMETER: return -EINVAL;
    case WSAEMFILE: return -EMFILE;
    case WSAEMSGSIZE: case ERROR_MORE_DATA: return -EMSGSIZE;
    case WSAEPROTOTYPE: return -EPROTOTYPE;
    case WSAENOPROTOOPT: return -ENOPROTOOPT;
    case WSAEPROTONOSUPPORT: return -EPROTONOSUPPORT;
    case WSAEOPNOTSUPP: return -EOPNOTSUPP;
    case WSAEAFNOSUPPORT: return -EAFNOSUPPORT;
    case WSAEADDRINUSE: return -EADDRINUSE;
    case WSAEADDRNOTAVAIL: return -EADDRNOTAVAIL;
    case WSAENETDOWN: return -ENETDOWN;
    case WSAENETUNREACH: case ERROR_NETWORK_UNREACHABLE: return -ENETUNREACH;
    case WSAENETRESET: return -ENETRESET;
    case WSAECONNABORTED: case ERROR_CONNECTION_ABORTED: return -ECONNABORTED;
    case WSAECONNRESET: case ERROR_NETNAME_DELETED: return -ECONNRESET;
    case WSAENOBUFS: case ERROR_NOT_ENOUGH_MEMORY: return -ENOBUFS;
    case WSAEISCONN: return -EISCONN;
    case WSAENOTCONN: return -ENOTCONN;
    case WSAESHUTDOWN: return -EPIPE;
    case WSAETIMEDOUT: case ERROR_SEM_TIMEOUT: return -ETIMEDOUT;
    case WSAECONNREFUSED: case ERROR_CONNECTION_REFUSED: return -ECONNREFUSED;
    case WSAEHOSTUNREACH: case ERROR_HOST_UNREACHABLE: return -EHOSTUNREACH;
    case WSAEALREADY: return -EALREADY;
    case WSAEINPROGRESS: return -EINPROGRESS;
    case WSA_OPERATION_ABORTED: return -ECANCELED;   /* == ERROR_OPERATION_ABORTED */
    case WSANOTINITIALISED: return -EPERM;
    }
    return -EIO;
}

static inline SOCKET sock_of(int fd) { return (SOCKET)(uintptr_t)(unsigned)fd; }

/* A SOCKET as the layer's fd, or -1 if it cannot be one. */
int weft__socket_fd(weft_socket s)
{
    if (s == INVALID_SOCKET || s > (weft_socket)INT_MAX || (s & 3))
        return -1;
    return (int)s;
}

static bool is_socket(int fd)
{
    int type, len = sizeof type;
    return fd >= 0 && getsockopt(sock_of(fd), SOL_SOCKET, SO_TYPE, (char *)&type, &len) == 0;
}

/* ----------------------------------------------------------- plain threads */

static ssize_t plain(weft__io_op *op)
{
    SOCKET s = sock_of(op->fd);
    int len = op->len > INT_MAX ? INT_MAX : (int)op->len;
    ssize_t r;
    switch (op->kind) {
    case WEFT_IO_READ:
    case WEFT_IO_RECV:
        r = recv(s, op->buf, len, op->kind == WEFT_IO_RECV ? op->flags : 0);
        break;
    case WEFT_IO_WRITE:
    case WEFT_IO_SEND:
        r = send(s, op->buf, len, op->kind == WEFT_IO_SEND ? op->flags : 0);
        break;
    case WEFT_IO_RECVFROM:
        r = recvfrom(s, op->buf, len, op->flags, op->addr, op->addrlen);
        break;
    case WEFT_IO_SENDTO:
        r = sendto(s, op->buf, len, op->flags, op->addr, op->tolen);
        break;
    case WEFT_IO_ACCEPT: {
        SOCKET a = accept(s, op->addr, op->addrlen);
        r = a == INVALID_SOCKET ? -1 : (ssize_t)a;
        break;
    }
    case WEFT_IO_CONNECT:
        r = connect(s, op->to, op->tolen);
        break;
    case WEFT_IO_POLL: {
        WSAPOLLFD p = { .fd = s, .events = (SHORT)op->events };
        r = WSAPoll(&p, 1, -1);
        if (r > 0)
            return p.revents & POLLNVAL ? -EBADF : p.revents;
        break;
    }
    default:
        return -EINVAL;
    }
    return r == SOCKET_ERROR ? weft__wsa_errno(WSAGetLastError()) : r;
}

/* ---------------------------------------------------------------- fibers */

static struct weft__fd *fd_ready(int fd, int *err)
{
    struct weft__fd *rec = weft__fd_get(fd);
    if (!rec) {
        *err = -EBADF;
        return NULL;
    }
    if (WEFT_UNLIKELY(__atomic_load_n(&rec->cls, __ATOMIC_ACQUIRE) == WEFT_FD_UNKNOWN)) {
        weft__lock_acquire(&rec->lock);
        *err = 0;
        if (rec->cls == WEFT_FD_UNKNOWN) {
            if (is_socket(fd)) {
                rec->socket = true;
                __atomic_store_n(&rec->cls, WEFT_FD_POLL, __ATOMIC_RELEASE);
            } else {
                *err = -ENOTSOCK;
            }
        }
        weft__lock_release(&rec->lock);
        if (*err < 0)
            return NULL;
    }
    return rec;
}

ssize_t weft__io_run(weft__io_op *op)
{
    if (op->fd < 0)
        return -EBADF;
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
    return b->io(op);
}

/* -------------------------------------------------------------- the calls */

struct crt_rw { int fd; void *buf; unsigned n; bool wr; };

static void *crt_job(void *arg)
{
    struct crt_rw *j = arg;
    int r = j->wr ? _write(j->fd, j->buf, j->n) : _read(j->fd, j->buf, j->n);
    return (void *)(intptr_t)(r < 0 ? -errno : r);
}

/* weft_read/weft_write on a CRT descriptor: the blocking pool for a fiber. */
static ssize_t crt(int fd, void *buf, size_t n, bool wr)
{
    struct crt_rw j = { fd, buf, n > INT_MAX ? INT_MAX : (unsigned)n, wr };
    if (!weft__cur_fiber() || !weft__io)
        return (ssize_t)(intptr_t)crt_job(&j);
    void *ret;
    int err = weft__pool_run(crt_job, &j, &ret, false, NULL);
    return err < 0 ? err : (ssize_t)(intptr_t)ret;
}

ssize_t weft_read(int fd, void *buf, size_t n)
{
    if ((!buf && n) || n > SSIZE_MAX)
        return -EINVAL;
    if (!is_socket(fd))
        return crt(fd, buf, n, false);
    weft__io_op op = { .kind = WEFT_IO_READ, .fd = fd, .buf = buf, .len = n };
    return weft__io_run(&op);
}

ssize_t weft_write(int fd, const void *buf, size_t n)
{
    if ((!buf && n) || n > SSIZE_MAX)
        return -EINVAL;
    if (!is_socket(fd))
        return crt(fd, (void *)buf, n, true);
    weft__io_op op = { .kind = WEFT_IO_WRITE, .fd = fd, .buf = (void *)buf, .len = n };
    return weft__io_run(&op);
}

ssize_t weft_readv(int fd, const struct iovec *iov, int iovcnt)
{
    (void)fd, (void)iov, (void)iovcnt;
    return -ENOSYS;
}

ssize_t weft_writev(int fd, const struct iovec *iov, int iovcnt)
{
    (void)fd, (void)iov, (void)iovcnt;
    return -ENOSYS;
}

/* Returns the new socket, or a negative errno cast to weft_socket: test
 * with (intptr_t)s < 0 (socket handle values are far below 2^63). */
weft_socket weft_accept(weft_socket s, struct sockaddr *addr, socklen_t *addrlen)
{
    if (addr && (!addrlen || *addrlen < 0))
        return (weft_socket)(intptr_t)-EINVAL;
    weft__io_op op = { .kind = WEFT_IO_ACCEPT, .fd = weft__socket_fd(s), .addr = addr, .addrlen = addr ? addrlen : NULL };
    for (;;) {
        ssize_t r = weft__io_run(&op);
        if (r >= 0) {
            weft__fd_fresh((int)r, op.rec);
            return (weft_socket)r;
        }
        if (r == -ECONNRESET || r == -ECONNABORTED)
            continue;   /* the peer gave up while queued: take the next */
        return (weft_socket)(intptr_t)r;
    }
}

int weft_connect(weft_socket s, const struct sockaddr *addr, socklen_t addrlen)
{
    if (!addr || addrlen <= 0)
        return -EINVAL;
    weft__io_op op = { .kind = WEFT_IO_CONNECT, .fd = weft__socket_fd(s), .to = addr, .tolen = addrlen };
    return (int)weft__io_run(&op);
}

int weft_wait_fd(int fd, int events)
{
    if (!events || (events & ~(POLLIN | POLLOUT | POLLPRI)))
        return -EINVAL;
    if (fd < 0)
        return -EBADF;
    if (!weft__cur_fiber() || !weft__io) {
        weft__io_op op = { .kind = WEFT_IO_POLL, .fd = fd, .events = events };
        return (int)plain(&op);
    }
    /* Readability of a connected socket is a completion (a zero-byte
     * receive). Writability has none (a zero-byte send completes at once),
     * and neither has a listening socket's "a connection is waiting" (a
     * receive on it is refused, or never completes). Those look with WSAPoll and, if
     * they must wait, look again after a doubling sleep (1 ms .. 64 ms),
     * which honours cancel and the deadline; a socket is nearly always
     * writable, and an accept is better waited for with weft_accept. */
    int listening = 0, len = sizeof listening;
    getsockopt(sock_of(fd), SOL_SOCKET, SO_ACCEPTCONN, (char *)&listening, &len);
    bool zero_byte = (events & POLLIN) && !listening;
    for (uint64_t backoff = 1000000;; backoff = backoff < 64000000 ? backoff * 2 : backoff) {
        WSAPOLLFD p = { .fd = sock_of(fd), .events = (SHORT)events };
        int r = WSAPoll(&p, 1, 0);
        if (r < 0)
            return weft__wsa_errno(WSAGetLastError());
        if (r > 0)
            return p.revents & POLLNVAL ? -EBADF : p.revents;
        if (zero_byte) {
            weft__io_op op = { .kind = WEFT_IO_POLL, .fd = fd, .events = POLLIN };
            return (int)weft__io_run(&op);
        }
        if ((r = weft_sleep(backoff)) < 0)
            return r;
    }
}

int weft_close(int fd)
{
    if (fd < 0)
        return -EBADF;
    if (!is_socket(fd))
        return _close(fd) < 0 ? -errno : 0;
    bool fiber = weft__cur_fiber() != NULL;
    bool in = weft__io_plain_enter(fiber);   /* a plain thread: no teardown under us */
    const struct weft__io_backend *b = in ? weft__io : NULL;
    struct weft__fd *rec = b ? weft__fd_peek(fd) : NULL;
    if (rec) {
        weft__lock_acquire(&rec->lock);
        b->close(rec, fd);
        weft__fd_forget(rec);
    }
    /* Under the lock: nobody starts an operation on the old socket between
     * the cancels above and the close. */
    int r = closesocket(sock_of(fd)) == 0 ? 0 : weft__wsa_errno(WSAGetLastError());
    if (rec)
        weft__lock_release(&rec->lock);
    if (in)
        weft__io_plain_leave(fiber);
    return r;
}
