/*
 * The I/O layer's internal contract (src/io), in the manner of Go's
 * netpoll.go: what every poller backend implements, function by function,
 * and the records they share.
 *
 * The layer depends on the scheduler (sched.h), never the reverse: it hands
 * the scheduler a poller (struct weft__poller) when the runtime starts and
 * takes it back when the runtime stops. Idle workers wait in that poller
 * until their nearest timer; the scheduler knows nothing of fds.
 *
 * ONE MODEL FOR READINESS AND COMPLETION
 *   Every blocking call becomes an operation (struct weft__io_op) built on
 *   the calling fiber's stack, handed to the backend whole:
 *
 *       submit the operation, park the fiber, be resumed with its result.
 *
 *   That is the completion model of io_uring and IOCP, and it is what each
 *   backend's io() does. A readiness backend (epoll) implements it by
 *   trying the non-blocking syscall, parking on EAGAIN until the fd becomes
 *   ready, and retrying: the fiber sees the same thing, a result.
 *
 *   Readiness is the weaker model, so the contract never asks a backend
 *   for it: "wait until readable" is itself an operation (WEFT_IO_POLL,
 *   IORING_OP_POLL_ADD, a zero-byte overlapped read on IOCP).
 *
 * THE BACKEND (struct weft__io_backend), function by function
 *
 *   init()      Create the kernel object (epoll set, ring, port) and the
 *               wake-up channel. 0, or -errno: weft__io_start then tries the
 *               next backend (io_uring is forbidden by seccomp, by
 *               kernel.io_uring_disabled, or absent: EPERM, ENOSYS).
 *   fini()      Release them. Called after every fiber has finished and
 *               every worker has stopped: no operation is in flight.
 *   poll(w, timeout_ns)
 *               The scheduler's idle hook: wait at most timeout_ns (-1: no
 *               limit, 0: just look) for completions or readiness, ready
 *               each fiber whose operation finished with weft__ready(), and
 *               return how many. At most one worker is in poll() at a time
 *               (the scheduler guarantees it), so the reaping side of a
 *               backend needs no lock against itself.
 *   wake()      Make a blocked poll() return soon. Called from any thread,
 *               often: cheap when nobody sleeps.
 *   io(op)      Run op to its end for the calling fiber: returns the result
 *               (>= 0) or -errno. Honours cancel and the fiber's deadline
 *               through the wait protocol of sched.h (weft__wait_prepare /
 *               weft__wait_park); -ECANCELED / -ETIMEDOUT are returned only
 *               when nothing was transferred. When io() returns, the kernel
 *               holds no reference to op or to the caller's buffer: an
 *               operation that was cancelled is waited for until its own
 *               completion arrives (weft__wait_park_nointr). op->fd's record
 *               (op->rec) is known and classified before io() is called.
 *               WEFT__IO_NEWFILE instead of a result: the record was an
 *               older file's (calls_posix.c learns the fd again, retries).
 *   close(rec, fd)
 *               Called with rec->lock held, before close(2): end every
 *               operation on fd (they return -EBADF) and forget any
 *               registration. It may return before the ended operations
 *               have completed; their fibers wait for that themselves.
 *   files       Whether io() takes regular files (io_uring does; epoll
 *               cannot poll them, so io.c sends them to the blocking pool).
 *   fork_child()
 *               In the child of a fork() (POSIX): forget the kernel objects
 *               without tearing them down (the parent still uses them),
 *               so that the child can start a runtime of its own.
 *
 * THE FD RECORD (struct weft__fd)
 *   One per fd number, created on first use and never freed while the
 *   runtime runs (a completion or a late readiness event can therefore
 *   never touch freed memory; records are reset by weft_close). It caches
 *   what the fd is (pollable or a file, socket or not), whether the epoll
 *   backend registered it, and the list of operations parked or in flight
 *   on it, under a lock. The list is how weft_close finds them.
 *
 *   The record describes the open file the number had when weft first
 *   used it. weft_close resets it, and weft_accept resets the record of
 *   the fd it returns. A number closed with close(2) behind weft's back, or
 *   dup2'ed over, gets a new file under an old record; weft finds that out
 *   instead of trusting the record (calls_posix.c, A NEW FILE BEHIND AN
 *   OLD NUMBER): epoll's registration is checked at every park, a socket
 *   attempt passes MSG_DONTWAIT so a blocking new socket never blocks a
 *   worker, and a call that fails because the record lied (ENOTSOCK, a
 *   "file" that says EAGAIN) learns the fd again and retries. weft_close
 *   remains the way to close: it also ends the operations parked on the
 *   fd, which close(2) cannot.
 *
 * WHO WAKES A PARKED FIBER
 *   The backend's reaping side (poll), weft_close, weft_cancel, or the
 *   fiber's deadline timer: exactly one wins the claim of sched.h. The
 *   backend claims under rec->lock, and a parked operation's wunlink takes
 *   the same lock, so a claimer never reads a wait record (it lives on the
 *   parked fiber's stack) after that fiber could have returned.
 */
#ifndef WEFT_IO_H
#define WEFT_IO_H

#include "../sched/sched.h"

#include <stdbool.h>

#ifndef _WIN32
#include <sys/socket.h>
#include <sys/uio.h>
#endif

/* ------------------------------------------------------ runtime entry */

/* Choose and start a backend for this runtime (cfg->io, env WEFT_IO).
 * *out receives the poller the scheduler's idle workers wait in, or NULL. */
int  weft__io_start(const weft_config *cfg, const struct weft__poller **out);
/* After every fiber has finished and every worker has stopped. */
void weft__io_stop(void);
/* POSIX, in the child of a fork() while a runtime ran (runtime.c): forget
 * the backend, the fd table and the pool; restore the signal mask if the
 * forking thread was a worker. Leaks, in the child, what the parent's
 * threads were using; frees nothing. */
void weft__io_atfork_child(bool was_worker);
void weft__pool_atfork_child(void);
void weft__fd_atfork_child(void);

/* ---------------------------------------------------------- operations */

enum weft__io_kind {
    WEFT_IO_READ = 1, WEFT_IO_WRITE, WEFT_IO_READV, WEFT_IO_WRITEV,
    WEFT_IO_RECV, WEFT_IO_SEND, WEFT_IO_RECVFROM, WEFT_IO_SENDTO,
    WEFT_IO_ACCEPT, WEFT_IO_POLL,
    WEFT_IO_CONNECT                 /* IOCP only (ConnectEx); POSIX connects then polls */
};

/* What an fd is, learnt on first use (fstat) and cached in its record. */
enum weft__fd_class {
    WEFT_FD_UNKNOWN = 0,
    WEFT_FD_POLL,      /* socket, pipe, fifo, eventfd, tty...: parks on the poller */
    WEFT_FD_FILE       /* regular file or block device: io_uring or the pool */
};

struct weft__fd;

typedef struct weft__io_op {
    /* the operation */
    int kind;                       /* enum weft__io_kind */
    int fd;
    void *buf;                      /* READ, WRITE, RECV, SEND, RECVFROM, SENDTO */
    size_t len;
    const struct iovec *iov;        /* READV, WRITEV */
    int iovcnt;
    int flags;                      /* send/recv flags (MSG_NOSIGNAL is added) */
    int events;                     /* POLL: POLLIN|POLLOUT... */
    struct sockaddr *addr;          /* RECVFROM from, SENDTO to, ACCEPT peer */
    socklen_t *addrlen;             /* RECVFROM, ACCEPT (in/out) */
    socklen_t tolen;                /* SENDTO */
#ifndef _WIN32
    struct msghdr msg;              /* io_uring's RECVMSG/SENDMSG need them to live on */
    struct iovec one;
#else
    /* IOCP: the kernel owns these from the overlapped call to its completion */
    OVERLAPPED ov;                  /* the completion names the operation by it */
    WSABUF wsabuf;
    DWORD wsaflags;
    SOCKET accepted;                /* ACCEPT: the socket AcceptEx fills */
    char accept_addrs[2 * (sizeof(SOCKADDR_STORAGE) + 16)];
    const struct sockaddr *to;      /* CONNECT: the peer */
#endif

    /* its wait, owned by the backend */
    struct weft__fd *rec;
    weft_fiber *fiber;
    struct weft__io_op *prev, *next;   /* rec->ops */
    bool linked;                    /* on rec->ops */
    bool done;                      /* completion seen (io_uring), under rec->lock */
    bool closed;                    /* ended by weft_close: the result is -EBADF */
    ssize_t res;                    /* the completion's result */
} weft__io_op;

/* poll(2) bits an operation waits for: POLLIN for reads, POLLOUT for writes. */
int weft__io_op_events(const weft__io_op *op);

/* ----------------------------------------------------------- fd records */

struct weft__fd {
    weft__lock lock;
    uint32_t rseq, wseq;            /* bumped at each read/write readiness edge and at close */
    uint8_t cls;                    /* enum weft__fd_class */
    bool socket;                    /* writes use MSG_NOSIGNAL, attempts MSG_DONTWAIT */
    bool stream;                    /* a SOCK_STREAM socket: a short read nearly always empties it */
    bool tcp;                       /* TCP over IPv4/IPv6: a short read empties it, but at the
                                       urgent mark or the end (epoll.c, NO READ THAT MUST FAIL) */
    bool rdmark;                    /* epoll saw EPOLLPRI, RDHUP, HUP or ERR on it, or a weft call
                                       read its urgent byte: no more reads skipped (until reset) */
    bool registered;                /* epoll: in the interest set (checked at each park) */
    uint32_t rdrained;              /* a short read emptied it: epoll rseq + 1, io_uring 1; else 0 */
    weft__io_op *ops;               /* parked or in flight */
};

/* The slot of fd in the table of records (fd.c), -1 if it has none. On
 * Windows the "fd" of a socket is its SOCKET handle value, a multiple of 4
 * below 2^26 (the kernel's handle table holds at most 2^24 handles). */
static inline long weft__fd_index(int fd)
{
#ifdef _WIN32
    return fd < 0 || (fd & 3) ? -1 : (long)(fd >> 2);
#else
    return fd;
#endif
}

/* The record of fd, created on first use; NULL for a negative or absurd fd
 * (-EBADF) or no memory. */
struct weft__fd *weft__fd_get(int fd);
/* The record of fd if it exists, else NULL (for the poller). */
struct weft__fd *weft__fd_peek(int fd);

/* Completion backends (io_uring, IOCP), their poller: op completed with
 * res; record it (op->done) and claim op's fiber, under rec->lock. Returns
 * the fiber to ready, or NULL if a cancel or deadline claimed it first. */
weft_fiber *weft__io_complete(weft__io_op *op, ssize_t res);

/* Completion backends (io_uring, IOCP): the fiber was woken before op
 * completed (cancel, deadline) and has asked the kernel to cancel it; wait,
 * uninterruptibly, until the poller has seen op's completion (op->done,
 * set under rec->lock). Only then may op and the buffer go. */
void weft__io_wait_done(weft__io_op *op, weft_fiber *self);

/* weft_close, under rec->lock, after the backend's close(): forget what
 * the record knew of the file, on every system alike, so the next file
 * with this number is learnt afresh. Edges are counted past (rseq, wseq),
 * so that no attempt begun on the old file parks on the strength of it. */
void weft__fd_forget(struct weft__fd *rec);

/* rec->ops, under rec->lock. */
void weft__fd_link(struct weft__fd *rec, weft__io_op *op);
void weft__fd_unlink(struct weft__fd *rec, weft__io_op *op);

/* One non-blocking attempt at op: its result, or -EAGAIN. Retries EINTR.
 * Writes never raise SIGPIPE (see io.c). */
ssize_t weft__io_try(weft__io_op *op);

/* How many bytes op reads, if it is a read whose short answer nearly
 * always empties its fd: a plain read, readv or unflagged recv on a stream
 * socket (a datagram, a seqpacket record, a pipe's or a tty's line say
 * nothing of what else is queued). 0 for any other operation. Exact only
 * on TCP, and there only with the care of epoll.c, NO READ THAT MUST FAIL;
 * io_uring uses it as a hint. */
size_t weft__io_drain_len(const weft__io_op *op);

/* What a backend's io() returns when it found that the file behind op->fd
 * is not the one op->rec describes (epoll: the registration it checks at
 * a park was gone). Not an errno: weft__io_run learns the fd again and
 * retries; no caller ever sees it. */
#define WEFT__IO_NEWFILE (-0x10000L)

/* Record that a write got -EPIPE on this thread: consume the SIGPIPE the
 * kernel queued for it (SIGPIPE is blocked on workers, see io.c). */
void weft__io_sigpipe_drain(void);

/* Test seam (test/test_io_edges_posix.c): when set, epoll's io() calls it
 * after an attempt that got EAGAIN, before its park check, so that a test
 * can land an edge in that window on purpose. NULL but in tests. */
extern void (*weft__io_park_hook)(weft__io_op *op);

/* ------------------------------------------------------------- backends */

struct weft__io_backend {
    const char *name;
    int  (*init)(void);
    void (*fini)(void);
    int  (*poll)(weft__worker *w, int64_t timeout_ns);
    void (*wake)(void);
    ssize_t (*io)(weft__io_op *op);
    void (*close)(struct weft__fd *rec, int fd);
    bool files;
    /* POSIX, in the child of a fork() while the backend ran: close the
     * child's copies of its fds and forget its state, touching nothing the
     * parent still uses (an epoll set, a ring are shared with it). */
    void (*fork_child)(void);
};

extern const struct weft__io_backend weft__io_epoll;
extern const struct weft__io_backend weft__io_uring;
extern const struct weft__io_backend weft__io_iocp;

/* calls_posix.c, calls_win32.c: run op for the caller (a fiber parks on the
 * backend, a plain thread blocks); the public socket type as the layer's
 * fd (-1 if it cannot be one). calls.c: reset the record of a socket that
 * accept just returned (whatever the number meant before is stale):
 * listener is the listening socket's record, whose kind the new socket
 * has, or NULL (an accept from a plain thread): then the first fiber to
 * use the fd learns what it is. */
ssize_t weft__io_run(weft__io_op *op);
int  weft__socket_fd(weft_socket s);
void weft__fd_fresh(int fd, const struct weft__fd *listener);

#ifdef _WIN32
/* calls_win32.c: a Winsock (or Win32) error code as a negative errno. */
int weft__wsa_errno(int wsa_error);
#endif

/* The running backend, or NULL outside a runtime. Atomic: weft_run sets
 * and clears it while plain threads' calls read it (a plain load on x86
 * and AArch64). A fiber may use what it reads: its runtime cannot stop
 * under it. A plain thread may use it only to choose the plain path; to
 * touch the backend or the fd table it passes the readers' gate
 * (weft__reader_enter), which the runtime's teardown waits out before it
 * frees either (weft__io_plain_enter below). */
extern const struct weft__io_backend *_Atomic weft__io;

/* The caller may touch the backend and the fd table until
 * weft__io_plain_leave: true for a fiber (its runtime cannot stop under
 * it), and for a plain thread that the readers' gate let in; false when
 * no runtime runs or it is starting or stopping (use the plain path, and
 * do not call leave). */
static inline bool weft__io_plain_enter(bool fiber)
{
    return fiber || weft__reader_enter();
}
static inline void weft__io_plain_leave(bool fiber)
{
    if (!fiber)
        weft__reader_leave();
}

/* -------------------------------------------------------- blocking pool */

/* pool.c: run fn(arg) on the pool for the calling fiber. intr: a cancel or
 * deadline while fn runs returns at once and leaves the item to the pool
 * (weft_blocking); otherwise the fiber waits for fn to finish (file I/O, whose
 * buffer belongs to the caller). -ECANCELED while queued in both cases. */
int  weft__pool_run(void *(*fn)(void *), void *arg, void **ret, bool intr,
                    void (*drop)(void *ret, void *arg));
void weft__pool_stop(void);

#endif
