/*
 * The edges of the fd layer, on both backends (IO_TEST): accept from a
 * plain thread; reads that stop short with more queued (TCP's urgent mark
 * and FIN, a unix stream's SCM_RIGHTS message), which epoll's read
 * shortcut must not take for "empty"; a new file behind a number closed
 * with close(2) or dup2'ed over; a wait for POLLRDHUP alone whose edge
 * lands between its attempt and its park.
 *
 * Each read that could hang runs under a deadline, so a lost wake-up is a
 * failed assertion (-ETIMEDOUT), not a hung test.
 */
#define _GNU_SOURCE
#include "test_io.h"

#include "io/io.h"   /* the park seam (weft__io_park_hook) and the fd record */

#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MS 1000000ull

static uint64_t scaled_ms(unsigned ms) { return (uint64_t)(ms * test_time_scale()) * MS; }
static void deadline_in(unsigned ms) { weft_deadline((int64_t)(weft_now() + scaled_ms(ms))); }

/* Park once in a read on fd with nothing to read: epoll registers it. */
static void register_by_parking(int fd)
{
    char c;
    weft_deadline(ms_from_now(20));
    ASSERT_EQ(weft_read(fd, &c, 1), -ETIMEDOUT);
    weft_deadline(-1);
}

/* Read until n bytes came, each read under the deadline set by the caller. */
static void read_n(int fd, char *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = weft_read(fd, buf + got, 100);   /* more than is left: reads come back short */
        ASSERT_GT(r, 0);
        got += (size_t)r;
    }
    ASSERT_EQ(got, n);
}

/* A fiber that writes after a pause, raw (the peer is not weft's). */
struct later { int fd; const char *data; unsigned ms; };

static void *write_later(void *arg)
{
    struct later *l = arg;
    weft_sleep(scaled_ms(l->ms));
    ASSERT_EQ(write(l->fd, l->data, strlen(l->data)), (ssize_t)strlen(l->data));
    return NULL;
}

/* ------------------------------------------ accept from a plain thread */

static void check_accepted(int fd)
{
    ASSERT_GE(fd, 0);
    ASSERT(fcntl(fd, F_GETFL) & O_NONBLOCK);
    ASSERT(fcntl(fd, F_GETFD) & FD_CLOEXEC);
}

struct plain_accept { int lfd, fd; };

static void *accept_on_plain_thread(void *arg)
{
    struct plain_accept *a = arg;
    struct sockaddr_in from;
    socklen_t len = sizeof from;
    a->fd = weft_accept(a->lfd, (struct sockaddr *)&from, &len);
    return NULL;
}

static void *main_accept_plain(void *arg)
{
    uint16_t port;
    int lfd = io_listen(4, &port);
    /* Leave a stale record (registered, short read seen) at the number the
     * accept will most likely return: the new socket's record must not be it. */
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    register_by_parking(sv[0]);
    close(sv[0]);
    int c = io_connect_plain(port);   /* waits in the backlog */
    struct plain_accept a = { .lfd = lfd, .fd = -1 };
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, accept_on_plain_thread, &a), 0);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    check_accepted(a.fd);

    char buf[16];
    ASSERT_EQ(write(c, "hi", 2), 2);
    deadline_in(2000);
    ASSERT_EQ(weft_read(a.fd, buf, sizeof buf), 2);
    struct later l = { c, "yo", 30 };
    weft_fiber *w;
    ASSERT_EQ(weft_spawn(&w, NULL, write_later, &l), 0);
    ASSERT_EQ(weft_read(a.fd, buf, sizeof buf), 2);   /* parks first */
    ASSERT(memcmp(buf, "yo", 2) == 0);
    ASSERT_EQ(weft_write(a.fd, "ok", 2), 2);
    ASSERT_EQ(read(c, buf, sizeof buf), 2);
    weft_deadline(-1);
    ASSERT_EQ(weft_join(w, NULL), 0);
    ASSERT_EQ(weft_close(a.fd), 0);
    close(c);
    close(sv[1]);
    ASSERT_EQ(weft_close(lfd), 0);
    return arg;
}

IO_TEST(io_accept_from_plain_thread)
{
    /* no runtime at all */
    uint16_t port;
    int lfd = io_listen(4, &port);
    int c = io_connect_plain(port);
    struct plain_accept a = { .lfd = lfd, .fd = -1 };
    accept_on_plain_thread(&a);
    check_accepted(a.fd);
    ASSERT_EQ(write(c, "x", 1), 1);
    char ch;
    ASSERT_EQ(weft_read(a.fd, &ch, 1), 1);
    close(a.fd);
    close(c);
    close(lfd);
    /* a plain thread beside a running runtime */
    test_run(main_accept_plain, NULL);
}

/* ------------------------------------ short reads with more still queued */

/* The reader parks once (epoll registers the fd), the peer then sends
 * everything, and the reader waits until the poller has dispatched every
 * edge before it reads: no edge is left to come after its first, short,
 * read. What that read left must still be read. */
static void settle(void) { weft_sleep(scaled_ms(50)); }

/* A TCP pair: b, registered by a park, and its peer a, which has sent
 * "abc", the urgent byte "d" and "efg". */
static void urgent_pair(int *a, int *b)
{
    io_tcp_pair(a, b);
    int one = 1;
    ASSERT_EQ(setsockopt(*a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one), 0);   /* no Nagle delay */
    register_by_parking(*b);
    ASSERT_EQ(send(*a, "abc", 3, 0), 3);
    ASSERT_EQ(send(*a, "d", 1, MSG_OOB), 1);   /* the urgent mark: a read stops before it */
    ASSERT_EQ(send(*a, "efg", 3, 0), 3);
}

/* Read what urgent_pair sent in band, all of it, then close the pair. */
static void urgent_rest(int a, int b)
{
    char buf[100];
    deadline_in(1000);
    read_n(b, buf, 6);   /* the urgent byte is not among them */
    ASSERT(memcmp(buf, "abcefg", 6) == 0);
    weft_deadline(-1);
    close(a);
    ASSERT_EQ(weft_close(b), 0);
}

static void *main_urgent(void *arg)
{
    int a, b;
    urgent_pair(&a, &b);
    settle();
    urgent_rest(a, b);
    return arg;
}

IO_TEST(io_tcp_read_stops_at_urgent_mark)
{
    test_run(main_urgent, NULL);
}

/* The urgent byte read with MSG_OOB before the poller saw EPOLLPRI (one
 * worker, busy with this fiber: nobody polls until it sleeps), so no
 * dispatch ever sees EPOLLPRI: weft notes the MSG_OOB receive itself. */
static void *main_urgent_taken(void *arg)
{
    int a, b;
    urgent_pair(&a, &b);
    char buf[100];
    ASSERT_EQ(weft_recv(b, buf, 1, MSG_OOB), 1);
    ASSERT_EQ(buf[0], 'd');
    settle();   /* the poller dispatches the edges now, without EPOLLPRI */
    urgent_rest(a, b);
    return arg;
}

IO_TEST(io_tcp_urgent_byte_taken_first)
{
    static const weft_config one = { .workers = 1 };
    test_run_cfg(&one, main_urgent_taken, NULL);
}

static void *main_fin(void *arg)
{
    int a, b;
    io_tcp_pair(&a, &b);
    register_by_parking(b);
    ASSERT_EQ(send(a, "abc", 3, 0), 3);
    ASSERT_EQ(shutdown(a, SHUT_WR), 0);   /* a read stops at the FIN */
    settle();
    char buf[100];
    deadline_in(1000);
    read_n(b, buf, 3);
    ASSERT_EQ(weft_read(b, buf, sizeof buf), 0);   /* the end, at once */
    weft_deadline(-1);
    close(a);
    ASSERT_EQ(weft_close(b), 0);
    return arg;
}

IO_TEST(io_tcp_read_stops_at_fin)
{
    test_run(main_fin, NULL);
}

static void *main_rights(void *arg)
{
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    register_by_parking(sv[1]);
    ASSERT_EQ(send(sv[0], "abc", 3, 0), 3);
    int passed = eventfd(0, EFD_CLOEXEC);
    ASSERT_GE(passed, 0);
    union { struct cmsghdr h; char space[CMSG_SPACE(sizeof(int))]; } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = { "d", 1 };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof ctl };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &passed, sizeof passed);
    ASSERT_EQ(sendmsg(sv[0], &m, 0), 1);   /* a read stops after the message with the fd */
    ASSERT_EQ(send(sv[0], "efg", 3, 0), 3);
    close(passed);
    settle();
    char buf[100];
    deadline_in(1000);
    read_n(sv[1], buf, 7);   /* read(2) has no room for the fd: the kernel drops it */
    ASSERT(memcmp(buf, "abcdefg", 7) == 0);
    weft_deadline(-1);
    close(sv[0]);
    ASSERT_EQ(weft_close(sv[1]), 0);
    return arg;
}

IO_TEST(io_unix_read_stops_at_rights)
{
    test_run(main_rights, NULL);
}

/* ------------------------------------ a new file behind an old number */

/* socket -> weft_connect -> close(2) -> socket (the same number) ->
 * weft_connect: the old socket's record said registered, drained and
 * non-blocking. */
static void *main_reuse_connect(void *arg)
{
    uint16_t port;
    int lfd = io_listen(4, &port);
    struct sockaddr_in to = io_addr(port);
    char buf[100];

    int s1 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_EQ(weft_connect(s1, (struct sockaddr *)&to, sizeof to), 0);
    int p1 = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    ASSERT_GE(p1, 0);
    ASSERT_EQ(write(p1, "x", 1), 1);
    deadline_in(1000);
    ASSERT_EQ(weft_read(s1, buf, sizeof buf), 1);   /* short: the next read may skip the kernel */
    weft_deadline(-1);
    register_by_parking(s1);
    close(s1);                                       /* behind weft's back */
    close(p1);

    int s2 = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);   /* blocking, like any new socket */
    ASSERT_EQ(s2, s1);
    ASSERT_EQ(weft_connect(s2, (struct sockaddr *)&to, sizeof to), 0);
    ASSERT(fcntl(s2, F_GETFL) & O_NONBLOCK);
    int p2 = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    ASSERT_GE(p2, 0);
    struct later l = { p2, "hello", 30 };
    weft_fiber *w;
    ASSERT_EQ(weft_spawn(&w, NULL, write_later, &l), 0);
    deadline_in(2000);
    ASSERT_EQ(weft_read(s2, buf, sizeof buf), 5);
    ASSERT(memcmp(buf, "hello", 5) == 0);
    ASSERT_EQ(weft_write(s2, "back", 4), 4);
    weft_deadline(-1);
    ASSERT_EQ(read(p2, buf, sizeof buf), 4);
    ASSERT_EQ(weft_join(w, NULL), 0);
    ASSERT_EQ(weft_close(s2), 0);
    close(p2);
    ASSERT_EQ(weft_close(lfd), 0);
    return arg;
}

IO_TEST(io_close2_then_socket_same_number)
{
    test_run(main_reuse_connect, NULL);
}

/* A pipe closed with close(2), a new pipe on the same numbers, no connect
 * to notice it: the park finds that the registration was the old file's. */
static void *main_reuse_pipe(void *arg)
{
    int p[2], q[2];
    char buf[16];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    register_by_parking(p[0]);
    close(p[0]);
    close(p[1]);
    ASSERT_EQ(pipe2(q, O_CLOEXEC | O_NONBLOCK), 0);
    ASSERT_EQ(q[0], p[0]);
    struct later l = { q[1], "pipe", 30 };
    weft_fiber *w;
    ASSERT_EQ(weft_spawn(&w, NULL, write_later, &l), 0);
    deadline_in(2000);
    ASSERT_EQ(weft_read(q[0], buf, sizeof buf), 4);
    weft_deadline(-1);
    ASSERT_EQ(weft_join(w, NULL), 0);
    ASSERT_EQ(weft_close(q[0]), 0);
    close(q[1]);
    return arg;
}

IO_TEST(io_close2_then_pipe_same_number)
{
    test_run(main_reuse_pipe, NULL);
}

/* A blocking socket behind the record of a non-blocking one, on one
 * worker: the fiber's first read must not block the worker, or the writer
 * fiber never runs. If it does, a plain thread writes something else after
 * a while, so the test fails instead of hanging. */
struct rescue { int fd, done; };

static void *rescue_thread(void *arg)
{
    struct rescue *r = arg;
    struct pollfd p = { .fd = r->done, .events = POLLIN };
    if (poll(&p, 1, (int)(3000 * test_time_scale())) == 0)
        ASSERT_EQ(write(r->fd, "t", 1), 1);
    return NULL;
}

static void *main_reuse_blocking(void *arg)
{
    int sv[2], nv[2];
    char buf[16];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    register_by_parking(sv[0]);
    close(sv[0]);
    close(sv[1]);
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, nv), 0);   /* blocking */
    ASSERT_EQ(nv[0], sv[0]);
    struct rescue rs = { nv[1], eventfd(0, EFD_CLOEXEC) };
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, rescue_thread, &rs), 0);
    struct later l = { nv[1], "w", 30 };
    weft_fiber *w;
    ASSERT_EQ(weft_spawn(&w, NULL, write_later, &l), 0);
    deadline_in(5000);   /* past the rescue: parked for ever is -ETIMEDOUT */
    ASSERT_EQ(weft_read(nv[0], buf, sizeof buf), 1);
    weft_deadline(-1);
    ASSERT_EQ(buf[0], 'w');   /* 't': the worker was blocked in the read */
    uint64_t one = 1;
    ASSERT_EQ(write(rs.done, &one, sizeof one), 8);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_EQ(weft_join(w, NULL), 0);
    close(rs.done);
    ASSERT_EQ(weft_close(nv[0]), 0);
    close(nv[1]);
    return arg;
}

IO_TEST(io_close2_then_blocking_socket)
{
    static const weft_config one = { .workers = 1 };
    test_run_cfg(&one, main_reuse_blocking, NULL);
}

/* dup2 over a registered number, the old file still open elsewhere (its
 * registration stays in the epoll set, under the same number) and then
 * gone. */
static void *main_dup2(void *arg)
{
    int sv[2], nv[2];
    char buf[16];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, nv), 0);
    register_by_parking(sv[0]);
    int old = dup(sv[0]);
    ASSERT_GE(old, 0);
    ASSERT_EQ(dup3(nv[0], sv[0], O_CLOEXEC), sv[0]);
    struct later l = { nv[1], "new", 30 };
    weft_fiber *w;
    ASSERT_EQ(weft_spawn(&w, NULL, write_later, &l), 0);
    deadline_in(2000);
    ASSERT_EQ(weft_read(sv[0], buf, sizeof buf), 3);
    ASSERT(memcmp(buf, "new", 3) == 0);
    ASSERT_EQ(weft_join(w, NULL), 0);
    /* the old file's readiness still names this number: it must not confuse it */
    ASSERT_EQ(write(sv[1], "old", 3), 3);
    l.data = "two";
    ASSERT_EQ(weft_spawn(&w, NULL, write_later, &l), 0);
    ASSERT_EQ(weft_read(sv[0], buf, sizeof buf), 3);
    ASSERT(memcmp(buf, "two", 3) == 0);
    ASSERT_EQ(weft_join(w, NULL), 0);
    /* now over it again, the old file released this time */
    close(old);
    int xv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, xv), 0);
    register_by_parking(sv[0]);
    ASSERT_EQ(dup3(xv[0], sv[0], O_CLOEXEC), sv[0]);
    l = (struct later){ xv[1], "three", 30 };
    ASSERT_EQ(weft_spawn(&w, NULL, write_later, &l), 0);
    deadline_in(2000);
    ASSERT_EQ(weft_read(sv[0], buf, sizeof buf), 5);
    weft_deadline(-1);
    ASSERT_EQ(weft_join(w, NULL), 0);
    ASSERT_EQ(weft_close(sv[0]), 0);
    close(sv[1]);
    close(nv[0]);
    close(nv[1]);
    close(xv[0]);
    close(xv[1]);
    return arg;
}

IO_TEST(io_dup2_over_registered_fd)
{
    test_run(main_dup2, NULL);
}

/* ------------------------------------- POLLRDHUP alone, a late edge */

/* The peer shuts down after the waiter's attempt found nothing and before
 * its park check, and the poller (on the other worker) dispatches that
 * edge in between: the check must see the count move, as it does for
 * POLLIN. The seam makes the window; on io_uring it is never called and a
 * fiber shuts down instead. */
static int rdhup_fd = -1, rdhup_peer = -1;
static atomic_int rdhup_done;

static void rdhup_in_window(weft__io_op *op)
{
    if (op->fd != rdhup_fd || op->kind != WEFT_IO_POLL || atomic_exchange(&rdhup_done, 1))
        return;
    uint32_t rs = __atomic_load_n(&op->rec->rseq, __ATOMIC_ACQUIRE);
    ASSERT_EQ(shutdown(rdhup_peer, SHUT_WR), 0);
    uint64_t until = weft_now() + scaled_ms(2000);
    while (__atomic_load_n(&op->rec->rseq, __ATOMIC_ACQUIRE) == rs && weft_now() < until)
        usleep(100);   /* the other worker's poller dispatches the edge meanwhile */
    ASSERT(__atomic_load_n(&op->rec->rseq, __ATOMIC_ACQUIRE) != rs);
}

static void *shut_later(void *arg)
{
    weft_sleep(scaled_ms(30));
    if (!atomic_exchange(&rdhup_done, 1))
        ASSERT_EQ(shutdown(rdhup_peer, SHUT_WR), 0);
    return arg;
}

static void *main_rdhup(void *arg)
{
    for (int round = 0; round < 3; round++) {
        int sv[2];
        ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        register_by_parking(sv[0]);
        rdhup_fd = sv[0];
        rdhup_peer = sv[1];
        atomic_store(&rdhup_done, 0);
        weft_fiber *f;
        ASSERT_EQ(weft_spawn(&f, NULL, shut_later, NULL), 0);
        __atomic_store_n(&weft__io_park_hook, rdhup_in_window, __ATOMIC_RELAXED);
        deadline_in(1000);
        int r = weft_wait_fd(sv[0], POLLRDHUP);
        weft_deadline(-1);
        __atomic_store_n(&weft__io_park_hook, NULL, __ATOMIC_RELAXED);
        ASSERT_GT(r, 0);
        ASSERT(r & POLLRDHUP);
        ASSERT_EQ(weft_join(f, NULL), 0);
        ASSERT_EQ(weft_close(sv[0]), 0);
        close(sv[1]);
    }
    return arg;
}

IO_TEST(io_wait_rdhup_alone_late_edge)
{
    static const weft_config two = { .workers = 2 };
    test_run_cfg(&two, main_rdhup, NULL);
}
