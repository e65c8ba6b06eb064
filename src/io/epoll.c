/*
 * The epoll backend: readiness, turned into the completion contract of
 * io.h by trying the syscall, parking on EAGAIN, and retrying on readiness.
 *
 * REGISTRATION
 *   Edge-triggered, each fd registered once, for both directions
 *   (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET), the first time an
 *   operation on it gets EAGAIN: an fd that never blocks never costs an
 *   epoll_ctl. EPOLL_CTL_ADD reports the fd's current state as an event,
 *   so readiness that arrived between the EAGAIN and the registration is
 *   not lost.
 *
 * A NEW FILE BEHIND AN OLD NUMBER
 *   epoll keys a registration by (open file, fd number), and drops it when
 *   the file is released. An fd closed with close(2) behind weft's back
 *   and its number reused (or dup2'ed over) leaves the record saying
 *   "registered" for a file that is not: a park trusting it would wait for
 *   ever. So every park repeats the EPOLL_CTL_ADD, under rec->lock. EEXIST
 *   says the registration is for the file the number holds now (the cost:
 *   one epoll_ctl that changes nothing, per park, not per operation). A
 *   success on a record that said "registered" says the file is new: it
 *   is registered now, and io() returns WEFT__IO_NEWFILE for the caller
 *   to learn the fd again (calls_posix.c). EPOLL_CTL_MOD would answer too
 *   (ENOENT), but re-polls the file and may queue an event each time; a
 *   comparison of st_dev/st_ino would cost an fstat and cannot tell two
 *   eventfds or timerfds apart (one anonymous inode serves them all).
 *   The read shortcut below parks through this same check.
 *
 * NO LOST EDGES
 *   An edge is reported once. A fiber that saw EAGAIN must not park if an
 *   edge arrived since its attempt began, even if that edge woke nobody (it
 *   had not parked yet) or woke another fiber that took only part of the
 *   data. So each record counts edges per direction (rec->rseq / wseq,
 *   bumped under rec->lock by the poller): the fiber reads the count
 *   before its syscall and, under the lock, parks only if it is unchanged;
 *   otherwise it retries. Every edge wakes every operation waiting in that
 *   direction (several fibers may accept on one listening socket); those
 *   that find nothing park again. An operation waits in the read direction
 *   if it waits for any of POLLIN, POLLPRI or POLLRDHUP (a weft_wait_fd for
 *   POLLRDHUP alone included): dispatch counts all three as read edges.
 *
 * NO READ THAT MUST FAIL
 *   A server fiber reads a request, answers, and reads again: that read
 *   nearly always finds nothing yet and returns EAGAIN, one system call of
 *   the three each request costs. So when a read comes back short, the
 *   record remembers the edge count it began with (rec->rdrained); the
 *   next read on that fd, if the count has not moved since, parks at once,
 *   under the same check of the count as a read that got EAGAIN, without
 *   asking the kernel. That is right only if a short read leaves nothing
 *   to read, or if what it left raises an edge after the count was read.
 *   It is kept where that can be shown, TCP (rec->tcp: AF_INET/AF_INET6,
 *   SOCK_STREAM, SO_PROTOCOL IPPROTO_TCP), and only until the poller has
 *   seen EPOLLPRI, EPOLLRDHUP, EPOLLHUP or EPOLLERR on the fd (rec->rdmark,
 *   sticky until the record is reset). The proof, from tcp_recvmsg and
 *   tcp_poll (net/ipv4/tcp.c):
 *
 *   1. A non-blocking TCP read that returns n > 0 bytes, fewer than asked,
 *      stopped for one of three reasons: (a) the receive queue and the
 *      backlog were empty; (b) it reached the urgent mark (tp->urg_data set,
 *      urg_seq == copied_seq: it never reads across the mark in one call);
 *      (c) it reached a FIN. Its other exits (an error, a shutdown, a
 *      signal) are taken only after (a). In (a), anything queued later
 *      comes with a wake-up (sk_data_ready) after the read, hence an event
 *      harvested after it and a count bumped after the count the read
 *      began with: the shortcut's check sees the count move, or parks and
 *      is woken by that edge, as for EAGAIN.
 *   2. (b) needs urg_data VALID or READ. It becomes VALID in tcp_urg, which
 *      then calls sk_data_ready; while VALID, tcp_poll reports EPOLLPRI,
 *      which we registered. epoll polls the file anew at each harvest and
 *      every wake-up is followed by a harvest, so some dispatch after
 *      VALID was set sees EPOLLPRI, unless the urgent byte was read first
 *      with MSG_OOB (VALID becomes READ): weft's receives with MSG_OOB set
 *      rdmark themselves (calls_posix.c, oob_note), before the byte goes.
 *      (c) needs the FIN queued, and tcp_fin then set RCV_SHUTDOWN, which
 *      never clears and makes tcp_poll report EPOLLRDHUP, and called
 *      sk_state_change: some dispatch after it sees EPOLLRDHUP. (A reset
 *      raises EPOLLHUP and EPOLLERR the same way.)
 *   3. dispatch sets rdmark before it bumps rseq (a release). If that
 *      dispatch came before the fiber loaded the count its read began
 *      with (an acquire), the fiber sees rdmark after the read and does
 *      not record the short read. If it came after, the count moves past
 *      the one recorded: the next read asks the kernel, or, if it looks
 *      before the bump, parks under the lock and is woken by that edge.
 *
 *   Not kept elsewhere, for a short read there says nothing: a datagram,
 *   a seqpacket record, a pipe's or a tty's line; a unix stream read stops
 *   at a message carrying SCM_RIGHTS and, with SO_PASSCRED, between two
 *   writers' data, with no edge to come; SCTP, MPTCP and TCP with a ULP
 *   installed later (kTLS, which stops at a record of another type) are
 *   left to try. Peeking or flagged receives neither set nor use it.
 *   On a record that lies (a new file behind an old number) the shortcut
 *   still goes through the park's registration check above, which finds
 *   the new file.
 *
 * WAKE-UP
 *   An eventfd in the same epoll set, edge-triggered: wake() writes to it
 *   once per poll (wake_pending) and poll() resets the flag when it sees it.
 */
#define _GNU_SOURCE
#include "io.h"

#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define WAKE_TAG UINT64_MAX
#define MAX_EVENTS 256

void (*weft__io_park_hook)(weft__io_op *op);

static int epfd = -1;
static int evfd = -1;
static _Atomic int wake_pending;
static bool have_pwait2;

static int epoll_init(void)
{
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        return -errno;
    evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (evfd < 0) {
        int e = -errno;
        close(epfd);
        epfd = -1;
        return e;
    }
    struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.u64 = WAKE_TAG };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, evfd, &ev) < 0) {
        int e = -errno;
        close(evfd);
        close(epfd);
        epfd = evfd = -1;
        return e;
    }
    atomic_store(&wake_pending, 0);
    /* epoll_pwait2 (Linux 5.11) takes a timespec: timers keep their ns. */
    struct timespec zero = { 0, 0 };
    struct epoll_event dummy;
    have_pwait2 = epoll_pwait2(epfd, &dummy, 1, &zero, NULL) >= 0 || errno != ENOSYS;
    return 0;
}

static void epoll_fini(void)
{
    close(evfd);
    close(epfd);
    epfd = evfd = -1;
}

static void epoll_fork_child(void)
{
    epoll_fini();   /* our copies only: the set lives on in the parent */
}

static void epoll_wake(void)
{
    if (atomic_exchange(&wake_pending, 1))
        return;   /* a write is already on its way to the poller */
    uint64_t one = 1;
    while (write(evfd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

/* The poller saw events on rec: count the edges and wake the operations
 * waiting for them. Claims are made under rec->lock (see io.h). */
static int dispatch(struct weft__fd *rec, uint32_t events)
{
    int mask = 0;
    weft__lock_acquire(&rec->lock);
    if (events & (EPOLLPRI | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        __atomic_store_n(&rec->rdmark, true, __ATOMIC_RELAXED);   /* before the bump: NO READ THAT MUST FAIL, 3 */
    if (events & (EPOLLIN | EPOLLPRI | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
        __atomic_add_fetch(&rec->rseq, 1, __ATOMIC_RELEASE);
        mask |= POLLIN | POLLPRI | POLLRDHUP;
    }
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
        __atomic_add_fetch(&rec->wseq, 1, __ATOMIC_RELEASE);
        mask |= POLLOUT;
    }
    weft_fiber *woke = NULL;
    int n = 0;
    for (weft__io_op *op = rec->ops, *next; op; op = next) {
        next = op->next;
        if (!(weft__io_op_events(op) & mask))
            continue;
        weft__fd_unlink(rec, op);
        weft_fiber *f = op->fiber;
        if (weft__wake_claim(f, 0)) {
            f->next = woke;
            woke = f;
            n++;
        }
    }
    weft__lock_release(&rec->lock);
    while (woke) {
        weft_fiber *f = woke;
        woke = f->next;
        weft__ready(f);
    }
    return n;
}

static int epoll_poll(weft__worker *w, int64_t timeout_ns)
{
    (void)w;
    struct epoll_event evs[MAX_EVENTS];
    int n;
    if (have_pwait2) {
        struct timespec ts = { (time_t)(timeout_ns / 1000000000), (long)(timeout_ns % 1000000000) };
        n = epoll_pwait2(epfd, evs, MAX_EVENTS, timeout_ns < 0 ? NULL : &ts, NULL);
    } else {
        /* round up: waking early would only make the worker sleep again */
        int ms = timeout_ns < 0 ? -1 : (int)((timeout_ns + 999999) / 1000000);
        n = epoll_wait(epfd, evs, MAX_EVENTS, ms);
    }
    if (n < 0) {
        weft__assert(errno == EINTR);
        return 0;
    }
    int woke = 0;
    for (int i = 0; i < n; i++) {
        if (evs[i].data.u64 == WAKE_TAG) {
            uint64_t v;
            while (read(evfd, &v, sizeof v) < 0 && errno == EINTR)
                ;
            atomic_store(&wake_pending, 0);
            continue;
        }
        struct weft__fd *rec = weft__fd_peek(evs[i].data.fd);
        if (rec)
            woke += dispatch(rec, evs[i].events);
    }
    return woke;
}

/* wunlink of a parked operation: a cancel or a deadline claimed it. */
static void op_unlink(weft_fiber *f)
{
    weft__io_op *op = f->wobj;
    struct weft__fd *rec = op->rec;
    weft__lock_acquire(&rec->lock);
    weft__fd_unlink(rec, op);
    weft__lock_release(&rec->lock);
}

static ssize_t epoll_io(weft__io_op *op)
{
    struct weft__fd *rec = op->rec;
    weft_fiber *self = weft__cur_fiber();
    int events = weft__io_op_events(op);
    bool rd = events & (POLLIN | POLLPRI | POLLRDHUP), wr = events & POLLOUT;
    size_t want = rec->tcp ? weft__io_drain_len(op) : 0;
    for (;;) {
        uint32_t rs = __atomic_load_n(&rec->rseq, __ATOMIC_ACQUIRE);
        uint32_t ws = __atomic_load_n(&rec->wseq, __ATOMIC_ACQUIRE);
        ssize_t r;
        if (want && __atomic_load_n(&rec->rdrained, __ATOMIC_RELAXED) == rs + 1) {
            r = -EAGAIN;   /* emptied by our last read, and no edge since */
        } else {
            r = weft__io_try(op);
            if (want && r > 0 && (size_t)r < want && !__atomic_load_n(&rec->rdmark, __ATOMIC_RELAXED))
                __atomic_store_n(&rec->rdrained, rs + 1, __ATOMIC_RELAXED);
        }
        if (r != -EAGAIN)
            return r;
        void (*hook)(weft__io_op *) = __atomic_load_n(&weft__io_park_hook, __ATOMIC_RELAXED);
        if (WEFT_UNLIKELY(hook != NULL))
            hook(op);
        weft__lock_acquire(&rec->lock);
        /* Registered, and for the file the number holds now? (A NEW FILE) */
        struct epoll_event ev = {
            .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET,
            .data.fd = op->fd,
        };
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, op->fd, &ev) == 0) {
            bool stale = rec->registered;
            rec->registered = true;
            if (stale) {
                weft__lock_release(&rec->lock);
                return WEFT__IO_NEWFILE;
            }
        } else if (errno == EEXIST) {
            rec->registered = true;
        } else {
            int e = -errno;
            weft__lock_release(&rec->lock);
            return e;
        }
        if ((rd && rec->rseq != rs) || (wr && rec->wseq != ws)) {
            weft__lock_release(&rec->lock);
            continue;   /* an edge came after our attempt began */
        }
        op->fiber = self;
        op->closed = false;
        weft__fd_link(rec, op);
        weft__wait_prepare(self, wr && !rd ? WEFT_W_FD_WRITE : WEFT_W_FD_READ, op, op_unlink);
        weft__lock_release(&rec->lock);
        r = weft__wait_park(self, -1);
        if (r < 0)
            return r;   /* -ECANCELED, -ETIMEDOUT, or -EBADF from weft_close */
    }
}

static void epoll_close(struct weft__fd *rec, int fd)
{
    for (weft__io_op *op = rec->ops, *next; op; op = next) {
        next = op->next;
        weft__fd_unlink(rec, op);
        op->closed = true;
        if (weft__wake_claim(op->fiber, -EBADF))
            weft__ready(op->fiber);
    }
    if (rec->registered) {
        /* close(2) would drop it too, unless the file is dup'ed elsewhere */
        epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
        rec->registered = false;
    }
}

const struct weft__io_backend weft__io_epoll = {
    .name = "epoll",
    .init = epoll_init,
    .fini = epoll_fini,
    .poll = epoll_poll,
    .wake = epoll_wake,
    .io = epoll_io,
    .close = epoll_close,
    .files = false,
    .fork_child = epoll_fork_child,
};
