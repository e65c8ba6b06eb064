/*
 * The IOCP backend: completion, the contract of io.h as Windows gives it.
 * An operation becomes one overlapped Winsock call (WSARecv, WSASend,
 * WSARecvFrom, WSASendTo, AcceptEx, ConnectEx) whose OVERLAPPED lives in
 * the operation record on the parked fiber's stack; the completion packet
 * carries that OVERLAPPED back, and the poller readies the fiber. It is
 * uring.c's design with Windows' plumbing; docs/completion-vs-readiness.md
 * compares the two.
 *
 * ONE PORT
 *   Every socket a fiber uses is associated with the runtime's one
 *   completion port on first use (rec->registered), and the scheduler lets
 *   one idle worker at a time wait in GetQueuedCompletionStatusEx: every
 *   completion is seen by whichever worker is idle, as with the single
 *   ring of uring.c. Submission needs no lock of ours: each overlapped call
 *   is its own system call.
 *
 * EVERY OPERATION WAITS FOR ITS PACKET
 *   An overlapped call that succeeds at once still queues a completion
 *   packet (unless FILE_SKIP_COMPLETION_PORT_ON_SUCCESS is set, which is
 *   not used: a packet that arrives anyway for a record already gone from
 *   the stack would be a use-after-free, and whether the mode is honoured
 *   for sockets depends on the provider). So the rule is simple: a call
 *   that did not fail at once owns its fiber's stack until its packet has
 *   been reaped. The fiber parks right after the call; if the packet comes
 *   first, the claim waits for the prepared wait under rec->lock.
 *
 * CANCEL AND CLOSE WITHOUT USE-AFTER-FREE
 *   A fiber woken early (weft_cancel, its deadline) calls CancelIoEx on its
 *   OVERLAPPED and then waits, uninterruptibly (weft__wait_park_nointr), for
 *   the packet; only then does it return. If the packet reports a transfer
 *   (or an accepted socket), that is the result: nothing is lost to the
 *   race. weft_close marks each operation on the socket closed and cancels
 *   them all; closesocket would too. op->done is set under rec->lock by the
 *   poller, which claims the fiber under that lock: a fiber leaves io() only
 *   after seeing done under the lock, so the poller never touches a record
 *   that is gone.
 *
 * RESULTS
 *   The packet says only how many bytes moved; the fiber asks
 *   WSAGetOverlappedResult for the status, on its own thread, which also
 *   translates the NTSTATUS into a Winsock error (weft__wsa_errno makes it
 *   a negative errno). One overlapped transfer may move up to 4 GiB - 1
 *   (a WSABUF's length is a ULONG), so results travel as ssize_t, never
 *   as long, which is 32 bits on Windows.
 *
 * WAKE-UP
 *   PostQueuedCompletionStatus with WAKE_KEY and no OVERLAPPED.
 */
#include "io.h"

#include <errno.h>
#include <limits.h>
#include <mswsock.h>
#include <string.h>

#define WAKE_KEY 1
#define BATCH 64                  /* completions reaped per call */
#define ADDR_SLOT (sizeof(SOCKADDR_STORAGE) + 16)   /* what AcceptEx wants per address */

static HANDLE port;
static _Atomic int wake_pending;
static LPFN_CONNECTEX connect_ex;

static int iocp_init(void)
{
    WSADATA wd;
    if (WSAStartup(MAKEWORD(2, 2), &wd) != 0)
        return -ENOSYS;
    port = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 0);
    if (!port) {
        WSACleanup();
        return -ENOMEM;
    }
    atomic_store(&wake_pending, 0);
    return 0;
}

static void iocp_fini(void)
{
    CloseHandle(port);
    port = NULL;
    WSACleanup();
}

static void iocp_wake(void)
{
    if (atomic_exchange(&wake_pending, 1))
        return;
    PostQueuedCompletionStatus(port, 0, WAKE_KEY, NULL);
}

static int iocp_poll(weft__worker *w, int64_t timeout_ns)
{
    (void)w;
    OVERLAPPED_ENTRY e[BATCH];
    ULONG got = 0;
    DWORD ms = INFINITE;
    if (timeout_ns >= 0) {
        /* rounded up: never return before the nearest timer */
        uint64_t r = ((uint64_t)timeout_ns + 999999) / 1000000;
        ms = r >= INFINITE ? INFINITE - 1 : (DWORD)r;
    }
    if (!GetQueuedCompletionStatusEx(port, e, BATCH, &got, ms, FALSE)) {
        if (GetLastError() == WAIT_TIMEOUT)
            return 0;
        weft__panic(__FILE__, __LINE__, "GetQueuedCompletionStatusEx failed");
    }
    int n = 0;
    weft_fiber *woke = NULL;
    for (ULONG i = 0; i < got; i++) {
        if (!e[i].lpOverlapped) {   /* WAKE_KEY */
            atomic_store(&wake_pending, 0);
            continue;
        }
        weft__io_op *op = CONTAINING_RECORD(e[i].lpOverlapped, weft__io_op, ov);
        weft_fiber *f = weft__io_complete(op, (ssize_t)e[i].dwNumberOfBytesTransferred);
        if (f) {
            f->next = woke;
            woke = f;
            n++;
        }
    }
    while (woke) {
        weft_fiber *f = woke;
        woke = f->next;
        weft__ready(f);
    }
    return n;
}

static int associate(struct weft__fd *rec, SOCKET s)
{
    if (rec->registered)
        return 0;
    /* A handle can belong to one port only, for life: a socket that a
     * previous runtime used cannot join this one's port. */
    if (!CreateIoCompletionPort((HANDLE)s, port, 0, 0))
        return GetLastError() == ERROR_INVALID_HANDLE ? -EBADF : -EINVAL;
    rec->registered = true;
    return 0;
}

static int socket_family(SOCKET s)
{
    SOCKADDR_STORAGE ss;
    int len = sizeof ss;
    if (getsockname(s, (struct sockaddr *)&ss, &len) != 0)
        return weft__wsa_errno(WSAGetLastError());   /* already negative */
    return ss.ss_family;
}

/* ConnectEx wants a bound socket; connect() binds implicitly, so do too. */
static int bind_any(SOCKET s, int family)
{
    SOCKADDR_STORAGE ss;
    int len = sizeof ss;
    if (getsockname(s, (struct sockaddr *)&ss, &len) == 0)
        return 0;   /* already bound */
    memset(&ss, 0, sizeof ss);
    ss.ss_family = (ADDRESS_FAMILY)family;
    len = family == AF_INET6 ? (int)sizeof(struct sockaddr_in6) : (int)sizeof(struct sockaddr_in);
    if (bind(s, (struct sockaddr *)&ss, len) != 0)
        return weft__wsa_errno(WSAGetLastError());
    return 0;
}

static LPFN_CONNECTEX get_connect_ex(SOCKET s)
{
    LPFN_CONNECTEX fn = __atomic_load_n(&connect_ex, __ATOMIC_ACQUIRE);
    if (fn)
        return fn;
    GUID id = WSAID_CONNECTEX;
    DWORD bytes;
    if (WSAIoctl(s, SIO_GET_EXTENSION_FUNCTION_POINTER, &id, sizeof id, &fn, sizeof fn,
                 &bytes, NULL, NULL) != 0)
        return NULL;
    __atomic_store_n(&connect_ex, fn, __ATOMIC_RELEASE);
    return fn;
}

/* Start op's overlapped call: 0 if a packet will come, or -errno if the
 * call failed at once (then no packet comes). Under rec->lock. */
static int start(weft__io_op *op)
{
    SOCKET s = (SOCKET)(uintptr_t)(unsigned)op->fd;
    memset(&op->ov, 0, sizeof op->ov);
    op->wsabuf.buf = op->buf;
    op->wsabuf.len = op->len > ULONG_MAX ? ULONG_MAX : (ULONG)op->len;
    op->wsaflags = 0;
    int r;
    switch (op->kind) {
    case WEFT_IO_READ:
    case WEFT_IO_RECV:
        op->wsaflags = op->kind == WEFT_IO_RECV ? (DWORD)op->flags : 0;
        r = WSARecv(s, &op->wsabuf, 1, NULL, &op->wsaflags, &op->ov, NULL);
        break;
    case WEFT_IO_POLL:
        /* readable: a zero-byte receive completes when data (or the end
         * of the stream) arrives, and consumes nothing */
        op->wsabuf.buf = NULL;
        op->wsabuf.len = 0;
        r = WSARecv(s, &op->wsabuf, 1, NULL, &op->wsaflags, &op->ov, NULL);
        break;
    case WEFT_IO_WRITE:
    case WEFT_IO_SEND:
        r = WSASend(s, &op->wsabuf, 1, NULL, op->kind == WEFT_IO_SEND ? (DWORD)op->flags : 0,
                    &op->ov, NULL);
        break;
    case WEFT_IO_RECVFROM:
        op->wsaflags = (DWORD)op->flags;
        r = WSARecvFrom(s, &op->wsabuf, 1, NULL, &op->wsaflags, op->addr, (INT *)op->addrlen,
                        &op->ov, NULL);
        break;
    case WEFT_IO_SENDTO:
        r = WSASendTo(s, &op->wsabuf, 1, NULL, (DWORD)op->flags, op->addr, op->tolen, &op->ov, NULL);
        break;
    case WEFT_IO_ACCEPT: {
        int fam = socket_family(s);
        if (fam < 0)
            return fam;
        op->accepted = WSASocketW(fam, SOCK_STREAM, IPPROTO_TCP, NULL, 0, WSA_FLAG_OVERLAPPED);
        if (op->accepted == INVALID_SOCKET)
            return weft__wsa_errno(WSAGetLastError());
        DWORD bytes;
        r = AcceptEx(s, op->accepted, op->accept_addrs, 0, ADDR_SLOT, ADDR_SLOT, &bytes, &op->ov) ? 0 : -1;
        break;
    }
    case WEFT_IO_CONNECT: {
        LPFN_CONNECTEX cx = get_connect_ex(s);
        if (!cx)
            return weft__wsa_errno(WSAGetLastError());
        int err = bind_any(s, op->to->sa_family);
        if (err < 0)
            return err;
        r = cx(s, op->to, (int)op->tolen, NULL, 0, NULL, &op->ov) ? 0 : -1;
        break;
    }
    default:
        return -EINVAL;   /* READV, WRITEV: calls_win32.c refuses them first */
    }
    if (r == 0)
        return 0;
    int e = WSAGetLastError();
    if (e == WSA_IO_PENDING)
        return 0;
    if (op->kind == WEFT_IO_ACCEPT) {
        closesocket(op->accepted);
        op->accepted = INVALID_SOCKET;
    }
    return weft__wsa_errno(e);
}

/* The packet arrived: what the operation came to. On the fiber. */
static ssize_t finish(weft__io_op *op)
{
    SOCKET s = (SOCKET)(uintptr_t)(unsigned)op->fd;
    DWORD bytes = 0, flags = 0;
    ssize_t res;
    if (WSAGetOverlappedResult(s, &op->ov, &bytes, FALSE, &flags))
        res = (ssize_t)bytes;   /* up to 4 GiB - 1: wider than Windows' 32-bit long */
    else
        res = weft__wsa_errno(WSAGetLastError());
    switch (op->kind) {
    case WEFT_IO_POLL:
        return res < 0 ? res : POLLIN;
    case WEFT_IO_CONNECT:
        if (res < 0)
            return res;
        setsockopt(s, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, NULL, 0);
        return 0;
    case WEFT_IO_ACCEPT: {
        SOCKET a = op->accepted;
        op->accepted = INVALID_SOCKET;
        if (res < 0) {
            closesocket(a);
            return res;
        }
        /* Make the new socket a full socket (getpeername, shutdown...). */
        setsockopt(a, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, (char *)&s, sizeof s);
        if (op->addr) {
            struct sockaddr *local, *remote;
            int llen = 0, rlen = 0;
            GetAcceptExSockaddrs(op->accept_addrs, 0, ADDR_SLOT, ADDR_SLOT, &local, &llen, &remote, &rlen);
            int n = rlen < *op->addrlen ? rlen : *op->addrlen;
            memcpy(op->addr, remote, (size_t)n);
            *op->addrlen = rlen;
        }
        return (ssize_t)a;
    }
    default:
        return res;
    }
}

static ssize_t iocp_io(weft__io_op *op)
{
    struct weft__fd *rec = op->rec;
    weft_fiber *self = weft__cur_fiber();
    op->done = op->closed = false;
    op->res = 0;
    op->accepted = INVALID_SOCKET;
    int events = weft__io_op_events(op);

    /* Associate, link, start and prepare under rec->lock: the poller's
     * claim takes it too, so a packet that comes at once waits for the
     * prepared wait; weft_close (which holds it) sees either no operation
     * or one it can cancel. */
    /* Release: the poller reads it without the lock (weft__io_complete). */
    __atomic_store_n(&op->fiber, self, __ATOMIC_RELEASE);
    weft__lock_acquire(&rec->lock);
    int err = associate(rec, (SOCKET)(uintptr_t)(unsigned)op->fd);
    if (err == 0)
        err = start(op);
    if (err < 0) {
        weft__lock_release(&rec->lock);
        return err;
    }
    weft__fd_link(rec, op);
    weft__wait_prepare(self, events & POLLOUT && !(events & POLLIN) ? WEFT_W_FD_WRITE : WEFT_W_FD_READ,
                       op, NULL);
    weft__lock_release(&rec->lock);

    int r = weft__wait_park(self, -1);

    weft__lock_acquire(&rec->lock);
    bool done = op->done;
    weft__lock_release(&rec->lock);
    if (!done) {
        /* Woken by a cancel or the deadline: the kernel still owns op. */
        CancelIoEx((HANDLE)(uintptr_t)(unsigned)op->fd, &op->ov);
        weft__io_wait_done(op, self);
    }
    weft__lock_acquire(&rec->lock);
    weft__fd_unlink(rec, op);
    bool closed = op->closed;
    weft__lock_release(&rec->lock);

    if (closed) {
        if (op->accepted != INVALID_SOCKET)
            closesocket(op->accepted);
        return -EBADF;
    }
    ssize_t res = finish(op);
    if (res >= 0)
        return res;   /* a transfer that raced a cancel is still the result */
    if (!done && res == -ECANCELED)
        return r;     /* -ECANCELED or -ETIMEDOUT */
    return res;
}

static void iocp_close(struct weft__fd *rec, int fd)
{
    if (!rec->ops)
        return;
    for (weft__io_op *op = rec->ops; op; op = op->next)
        op->closed = true;
    CancelIoEx((HANDLE)(uintptr_t)(unsigned)fd, NULL);   /* closesocket would too */
}

const struct weft__io_backend weft__io_iocp = {
    .name = "iocp",
    .init = iocp_init,
    .fini = iocp_fini,
    .poll = iocp_poll,
    .wake = iocp_wake,
    .io = iocp_io,
    .close = iocp_close,
    .files = false,
};
