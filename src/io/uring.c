/*
 * The io_uring backend: completion, the contract of io.h as the kernel
 * gives it. An operation becomes one SQE whose user_data is the operation
 * record on the parked fiber's stack; its CQE carries the result back and
 * the poller readies the fiber.
 *
 * ONE RING, A LOCK ON THE SUBMISSION SIDE
 *   Fibers on every worker submit; one worker at a time reaps (the
 *   scheduler lets at most one worker into poll()). A ring per worker
 *   would make submission lock-free, but then the one blocked poller would
 *   have to wait on every ring (or each ring's completions would sit until
 *   its own worker went idle), and a fiber that migrated would have its
 *   completion land on a ring another worker reaps. One ring matches the
 *   scheduler's "one poller" shape exactly: every completion is seen by
 *   whichever worker is idle. The submission queue takes a lock (sq_lock)
 *   held for one SQE and one io_uring_enter; the completion queue needs
 *   none, its only consumer being the poll owner. Busy sockets rarely get
 *   here at all: an operation first tries the non-blocking syscall and
 *   submits only on EAGAIN, as the epoll backend does.
 *
 * CANCEL AND CLOSE WITHOUT USE-AFTER-FREE
 *   Once submitted, the kernel owns the operation record and the caller's
 *   buffer until the CQE. A fiber woken early (weft_cancel, its deadline)
 *   therefore submits IORING_OP_ASYNC_CANCEL for its user_data and then
 *   waits, uninterruptibly (weft__wait_park_nointr), for the original CQE;
 *   only then does it return. If that CQE reports a transfer, the transfer
 *   is the result: nothing read is ever dropped. weft_close marks each
 *   operation on the fd closed and cancels it the same way; the owners see
 *   -EBADF. op->done is set under rec->lock by the poller, which also claims
 *   the fiber under that lock: a fiber leaves io() only after seeing done
 *   under the lock, so the poller never touches a record that is gone.
 *
 * WAKE-UP
 *   An eventfd with a read armed in the ring (user_data WAKE_TAG): wake()
 *   writes to it, the read completes, the blocked io_uring_enter returns,
 *   and poll() re-arms the read.
 */
#define _GNU_SOURCE
#include "io.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define WAKE_TAG   1ull   /* operation records are aligned: no clash */
#define IGNORE_TAG 2ull   /* completions of our own cancels */
#define SQ_ENTRIES 1024
#define CQ_ENTRIES 16384

static struct io_uring ring;
static weft__lock sq_lock;
static int evfd = -1;
static uint64_t evbuf;
static _Atomic int wake_pending;
static _Atomic bool sq_kept;     /* SQEs the kernel refused wait in the ring (sq_flush) */

/* Hand the queued SQEs to the kernel. Under sq_lock.
 *
 * -EBUSY, -EAGAIN and -ENOMEM mean "reap some completions, then try
 * again" (io_uring_enter(2): the CQ is full and its overflow could not be
 * flushed, or the kernel is short of memory for requests). The SQEs were
 * not consumed: they belong to whichever fibers queued them, so none can
 * be failed alone, and all are sent by the next submit. Retrying here
 * would spin with sq_lock held, and nothing would end it: the completions
 * are reaped by the poller, which may be this very worker's next job (on
 * one worker, never) and which takes sq_lock to re-arm its wake-up. So
 * the SQEs stay queued in the ring (liburing has already published them:
 * whoever submits next submits them too), sq_kept says so, and the caller
 * goes on to park; uring_poll, after it has reaped, submits what is left.
 * Busy workers poll too (sched.c, POLL_STALE_NS), so that happens even if
 * no worker ever idles. With IORING_FEAT_NODROP the kernel documents
 * -EBUSY for GETEVENTS waits only, and 6.18 took 20,000 submissions into
 * an 8-entry CQ without one: this is for the kernels and the memory
 * pressure that still say it. */
static void sq_flush(void)
{
    int r;
    while ((r = io_uring_submit(&ring)) == -EINTR)
        ;
    if (r == -EBUSY || r == -EAGAIN || r == -ENOMEM)
        atomic_store_explicit(&sq_kept, true, memory_order_relaxed);
}

/* Take an SQE, spilling the queue to the kernel when it is full. Under
 * sq_lock. A full queue that the kernel will not take (see sq_flush) waits
 * for the poller with sq_lock released: the lock's other holders hold it
 * for one SQE, and the poller needs it to submit after reaping. */
static struct io_uring_sqe *sqe_get(void)
{
    struct io_uring_sqe *sqe;
    while (!(sqe = io_uring_get_sqe(&ring))) {
        int r = io_uring_submit(&ring);
        if (r == -EBUSY || r == -EAGAIN || r == -ENOMEM) {
            atomic_store_explicit(&sq_kept, true, memory_order_relaxed);
            weft__lock_release(&sq_lock);
            sched_yield();
            weft__lock_acquire(&sq_lock);
        }
    }
    return sqe;
}

static void arm_wake_locked(void)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_read(sqe, evfd, &evbuf, sizeof evbuf, 0);
    io_uring_sqe_set_data64(sqe, WAKE_TAG);
}

static int uring_init(void)
{
    struct io_uring_params p = { .flags = IORING_SETUP_CQSIZE, .cq_entries = CQ_ENTRIES };
    int r = io_uring_queue_init_params(SQ_ENTRIES, &ring, &p);
    if (r < 0)
        return r;
    /* EXT_ARG: timed waits without a timeout SQE; RW_CUR_POS: offset -1
     * means the file position, as read(2) does; NODROP: no lost CQEs. */
    unsigned need = IORING_FEAT_EXT_ARG | IORING_FEAT_RW_CUR_POS | IORING_FEAT_NODROP;
    if ((p.features & need) != need) {
        io_uring_queue_exit(&ring);
        return -ENOSYS;
    }
    evfd = eventfd(0, EFD_CLOEXEC);
    if (evfd < 0) {
        r = -errno;
        io_uring_queue_exit(&ring);
        return r;
    }
    weft__lock_init(&sq_lock);
    atomic_store(&wake_pending, 0);
    atomic_store(&sq_kept, false);
    weft__lock_acquire(&sq_lock);
    arm_wake_locked();
    sq_flush();
    weft__lock_release(&sq_lock);
    return 0;
}

static void uring_fini(void)
{
    io_uring_queue_exit(&ring);   /* cancels the armed eventfd read */
    close(evfd);
    evfd = -1;
    weft__lock_destroy(&sq_lock);
}

static void uring_fork_child(void)
{
    /* Not io_uring_queue_exit: the rings' memory may be shared with the
     * parent. Close our fds, leave the mappings to the child's exit. */
    close(ring.ring_fd);   /* the only fd of the ring: we register none */
    memset(&ring, 0, sizeof ring);
    close(evfd);
    evfd = -1;
}

static void uring_wake(void)
{
    if (atomic_exchange(&wake_pending, 1))
        return;
    uint64_t one = 1;
    while (write(evfd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

static int uring_poll(weft__worker *w, int64_t timeout_ns)
{
    (void)w;
    struct io_uring_cqe *cqe;
    if (timeout_ns != 0) {
        struct __kernel_timespec ts = { timeout_ns / 1000000000, timeout_ns % 1000000000 };
        int r = io_uring_wait_cqe_timeout(&ring, &cqe, timeout_ns < 0 ? NULL : &ts);
        /* Out of memory (flushing overflowed completions allocates) passes
         * like EAGAIN: the worker looks at its queues and waits again. */
        if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ENOMEM)
            weft__panic(__FILE__, __LINE__, "io_uring_wait_cqe failed");
    } else if (io_uring_cq_has_overflow(&ring)) {
        /* completions the full CQ could not take wait in the kernel
         * (IORING_FEAT_NODROP); a blocking wait flushes them, a look must ask */
        io_uring_get_events(&ring);
    }
    int n = 0;
    bool rearm = false;
    weft_fiber *woke = NULL;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
        seen++;
        uint64_t ud = cqe->user_data;
        if (ud == WAKE_TAG) {
            atomic_store(&wake_pending, 0);
            rearm = true;
        } else if (ud != IGNORE_TAG) {
            weft_fiber *f = weft__io_complete((weft__io_op *)(uintptr_t)ud, cqe->res);
            if (f) {
                f->next = woke;
                woke = f;
                n++;
            }
        }
    }
    io_uring_cq_advance(&ring, seen);
    /* SQEs a full CQ kept out (sq_flush) go in now that there is room */
    if (rearm || atomic_load_explicit(&sq_kept, memory_order_relaxed)) {
        weft__lock_acquire(&sq_lock);
        atomic_store_explicit(&sq_kept, false, memory_order_relaxed);
        if (rearm)
            arm_wake_locked();
        sq_flush();
        weft__lock_release(&sq_lock);
    }
    while (woke) {
        weft_fiber *f = woke;
        woke = f->next;
        weft__ready(f);
    }
    return n;
}

/* Fill an SQE for op. Under sq_lock. */
static void prep(struct io_uring_sqe *sqe, weft__io_op *op)
{
    bool sock = op->rec->socket;
    int fd = op->fd;
    if (op->len > 0x7ffff000)
        op->len = 0x7ffff000;   /* read(2)'s own limit; SQE lengths are 32-bit */
    switch (op->kind) {
    case WEFT_IO_READ:
        io_uring_prep_read(sqe, fd, op->buf, (unsigned)op->len, (uint64_t)-1);
        break;
    case WEFT_IO_WRITE:
        if (sock)
            io_uring_prep_send(sqe, fd, op->buf, op->len, MSG_NOSIGNAL);
        else
            io_uring_prep_write(sqe, fd, op->buf, (unsigned)op->len, (uint64_t)-1);
        break;
    case WEFT_IO_READV:
        io_uring_prep_readv(sqe, fd, op->iov, (unsigned)op->iovcnt, (uint64_t)-1);
        break;
    case WEFT_IO_WRITEV:
        if (sock) {
            op->msg = (struct msghdr){ .msg_iov = (struct iovec *)op->iov, .msg_iovlen = (size_t)op->iovcnt };
            io_uring_prep_sendmsg(sqe, fd, &op->msg, MSG_NOSIGNAL);
        } else {
            io_uring_prep_writev(sqe, fd, op->iov, (unsigned)op->iovcnt, (uint64_t)-1);
        }
        break;
    case WEFT_IO_RECV:
        io_uring_prep_recv(sqe, fd, op->buf, op->len, op->flags);
        break;
    case WEFT_IO_SEND:
        io_uring_prep_send(sqe, fd, op->buf, op->len, op->flags | MSG_NOSIGNAL);
        break;
    case WEFT_IO_RECVFROM:
    case WEFT_IO_SENDTO:
        op->one = (struct iovec){ op->buf, op->len };
        op->msg = (struct msghdr){ .msg_iov = &op->one, .msg_iovlen = 1, .msg_name = op->addr };
        if (op->kind == WEFT_IO_RECVFROM) {
            op->msg.msg_namelen = op->addr && op->addrlen ? *op->addrlen : 0;
            io_uring_prep_recvmsg(sqe, fd, &op->msg, (unsigned)op->flags);
        } else {
            op->msg.msg_namelen = op->addr ? op->tolen : 0;
            io_uring_prep_sendmsg(sqe, fd, &op->msg, (unsigned)op->flags | MSG_NOSIGNAL);
        }
        break;
    case WEFT_IO_ACCEPT:
        io_uring_prep_accept(sqe, fd, op->addr, op->addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        break;
    case WEFT_IO_POLL:
        io_uring_prep_poll_add(sqe, fd, (unsigned)op->events);
        break;
    default:
        weft__panic(__FILE__, __LINE__, "unknown operation");
    }
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)op);
}

/* Ask the kernel to cancel op. Under sq_lock. */
static void cancel_locked(weft__io_op *op)
{
    struct io_uring_sqe *sqe = sqe_get();
    io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)op, 0);
    io_uring_sqe_set_data64(sqe, IGNORE_TAG);
    sq_flush();
}

/* A stream socket's last read came back short (want: weft__io_drain_len),
 * or did not: the next read skips its non-blocking try if so. */
static void note_short(struct weft__fd *rec, size_t want, ssize_t r)
{
    if (want && r >= 0)
        __atomic_store_n(&rec->rdrained, r > 0 && (size_t)r < want, __ATOMIC_RELAXED);
}

static ssize_t uring_io(weft__io_op *op)
{
    struct weft__fd *rec = op->rec;
    size_t want = weft__io_drain_len(op);
    /* A read right after a short one would nearly always get EAGAIN (see
     * epoll.c, NO READ THAT MUST FAIL): submit it at once. Here that is
     * safe without epoll's edge count, for the kernel tries the read itself
     * when the SQE is submitted and completes it on the spot if data came. */
    if (__atomic_load_n(&rec->cls, __ATOMIC_RELAXED) == WEFT_FD_POLL &&
        !(want && __atomic_load_n(&rec->rdrained, __ATOMIC_RELAXED))) {
        ssize_t r = weft__io_try(op);
        note_short(rec, want, r);
        if (r != -EAGAIN)
            return r;
    }
    weft_fiber *self = weft__cur_fiber();
    op->done = op->closed = false;
    op->res = 0;
    __atomic_store_n(&op->fiber, self, __ATOMIC_RELEASE);   /* see weft__io_complete */
    int events = weft__io_op_events(op);

    /* Link, prepare and submit under rec->lock: weft_close (which holds it)
     * then sees either no operation or one it can cancel. */
    weft__lock_acquire(&rec->lock);
    weft__fd_link(rec, op);
    weft__wait_prepare(self, events & POLLOUT && !(events & POLLIN) ? WEFT_W_FD_WRITE : WEFT_W_FD_READ,
                       op, NULL);
    weft__lock_acquire(&sq_lock);
    prep(sqe_get(), op);
    sq_flush();
    weft__lock_release(&sq_lock);
    weft__lock_release(&rec->lock);

    int r = weft__wait_park(self, -1);

    weft__lock_acquire(&rec->lock);
    bool done = op->done;
    weft__lock_release(&rec->lock);
    if (!done) {
        /* Woken by a cancel or the deadline: the kernel still owns op. */
        weft__lock_acquire(&sq_lock);
        cancel_locked(op);
        weft__lock_release(&sq_lock);
        weft__io_wait_done(op, self);
    }
    weft__lock_acquire(&rec->lock);
    weft__fd_unlink(rec, op);
    bool closed = op->closed;
    weft__lock_release(&rec->lock);

    ssize_t res = op->res;
    note_short(rec, want, res);
    if (res >= 0) {
        if (op->kind == WEFT_IO_RECVFROM && op->addr && op->addrlen)
            *op->addrlen = op->msg.msg_namelen;
        return res;   /* a transfer that raced a cancel is still the result */
    }
    if (closed)
        return -EBADF;
    if (!done && (res == -ECANCELED || res == -EINTR))
        return r;     /* -ECANCELED or -ETIMEDOUT */
    if (res == -EPIPE && !rec->socket)
        weft__io_sigpipe_drain();
    return res;
}

static void uring_close(struct weft__fd *rec, int fd)
{
    (void)fd;
    if (!rec->ops)
        return;
    weft__lock_acquire(&sq_lock);
    for (weft__io_op *op = rec->ops; op; op = op->next) {
        op->closed = true;
        if (!op->done)   /* a done one may be reused as soon as we unlock */
            cancel_locked(op);
    }
    weft__lock_release(&sq_lock);
}

const struct weft__io_backend weft__io_uring = {
    .name = "uring",
    .init = uring_init,
    .fini = uring_fini,
    .poll = uring_poll,
    .wake = uring_wake,
    .io = uring_io,
    .close = uring_close,
    .files = true,
    .fork_child = uring_fork_child,
};
