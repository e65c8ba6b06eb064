/*
 * The public socket calls whose shape is the same on every system: check
 * the arguments, build the operation (io.h) on the caller's stack, and hand
 * it to the system's half (calls_posix.c, calls_win32.c) through
 * weft__io_run, which parks a fiber on the backend or blocks a plain
 * thread. weft__socket_fd turns the public socket type into the layer's fd.
 */
#include "io.h"

#include <errno.h>
#include <limits.h>

#ifndef SSIZE_MAX
#define SSIZE_MAX PTRDIFF_MAX
#endif

ssize_t weft_recv(weft_socket fd, void *buf, size_t n, int flags)
{
    if ((!buf && n) || n > SSIZE_MAX)
        return -EINVAL;
    weft__io_op op = { .kind = WEFT_IO_RECV, .fd = weft__socket_fd(fd), .buf = buf, .len = n, .flags = flags };
    return weft__io_run(&op);
}

ssize_t weft_send(weft_socket fd, const void *buf, size_t n, int flags)
{
    if ((!buf && n) || n > SSIZE_MAX)
        return -EINVAL;
    weft__io_op op = { .kind = WEFT_IO_SEND, .fd = weft__socket_fd(fd), .buf = (void *)buf, .len = n, .flags = flags };
    return weft__io_run(&op);
}

ssize_t weft_recvfrom(weft_socket fd, void *buf, size_t n, int flags,
                      struct sockaddr *from, socklen_t *fromlen)
{
    if ((!buf && n) || n > SSIZE_MAX || (from && !fromlen))
        return -EINVAL;
    weft__io_op op = { .kind = WEFT_IO_RECVFROM, .fd = weft__socket_fd(fd), .buf = buf, .len = n, .flags = flags,
                       .addr = from, .addrlen = from ? fromlen : NULL };
    return weft__io_run(&op);
}

ssize_t weft_sendto(weft_socket fd, const void *buf, size_t n, int flags,
                    const struct sockaddr *to, socklen_t tolen)
{
    if ((!buf && n) || n > SSIZE_MAX || (!to && tolen))
        return -EINVAL;
    weft__io_op op = { .kind = WEFT_IO_SENDTO, .fd = weft__socket_fd(fd), .buf = (void *)buf, .len = n, .flags = flags,
                       .addr = (struct sockaddr *)to, .tolen = tolen };
    return weft__io_run(&op);
}

/* The record of a brand-new fd from accept: whatever the number meant
 * before is stale. From a fiber we know what the new socket is (accept
 * keeps the listener's family, type and protocol); from a plain thread the
 * listener's record may not exist, and the first fiber to use the fd
 * classifies it. */
void weft__fd_fresh(int fd, const struct weft__fd *listener)
{
    bool fiber = weft__cur_fiber() != NULL;
    if (!weft__io_plain_enter(fiber))
        return;   /* no runtime: the next one starts with an empty table */
    struct weft__fd *rec = weft__io ? weft__fd_get(fd) : NULL;
    if (!rec) {
        weft__io_plain_leave(fiber);
        return;
    }
    weft__lock_acquire(&rec->lock);
    rec->registered = false;
    rec->socket = true;
    rec->stream = listener && listener->stream;
    rec->tcp = listener && listener->tcp;
    __atomic_store_n(&rec->rdmark, false, __ATOMIC_RELAXED);
    __atomic_store_n(&rec->rdrained, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&rec->cls, listener ? WEFT_FD_POLL : WEFT_FD_UNKNOWN, __ATOMIC_RELEASE);
    weft__lock_release(&rec->lock);
    weft__io_plain_leave(fiber);
}
