/*
 * The I/O suite: every IO_TEST runs once per backend (name_epoll,
 * name_uring). Echo under many fibers, resets, half-close, a full pipe,
 * cancel and deadline in read/write/accept/connect, close of a parked fd,
 * bad input, plain-thread calls, files, UDP.
 */
#define _GNU_SOURCE
#include "test_io.h"


#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define MS 1000000ull

static weft_attr small = { .stack_size = 64 * 1024 };

/* Read exactly n bytes (or fail). */
static void read_full(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = weft_read(fd, (char *)buf + got, n - got);
        ASSERT_GT(r, 0);
        got += (size_t)r;
    }
}

static void write_full(int fd, const void *buf, size_t n)
{
    size_t put = 0;
    while (put < n) {
        ssize_t r = weft_write(fd, (const char *)buf + put, n - put);
        ASSERT_GT(r, 0);
        put += (size_t)r;
    }
}

/* ---------------------------------------------------- an echo server */

struct server {
    int lfd;
    uint16_t port;
    weft_fiber *acceptor;
};

static void *echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[4096];
    for (;;) {
        ssize_t n = weft_read(fd, buf, sizeof buf);
        if (n <= 0)
            break;
        if (weft_write(fd, buf, (size_t)n) != n)
            break;
    }
    weft_close(fd);
    return NULL;
}

static void *acceptor(void *arg)
{
    struct server *s = arg;
    for (;;) {
        int fd = weft_accept(s->lfd, NULL, NULL);
        if (fd < 0)
            break;   /* cancelled when main is done */
        ASSERT_EQ(weft_spawn(NULL, &(weft_attr){ .stack_size = 64 * 1024, .flags = WEFT_DETACHED },
                             echo_conn, (void *)(intptr_t)fd), 0);
    }
    return NULL;
}

static void server_start(struct server *s, int backlog)
{
    s->lfd = io_listen(backlog, &s->port);
    ASSERT_EQ(weft_spawn(&s->acceptor, NULL, acceptor, s), 0);
}

static void server_stop(struct server *s)
{
    weft_cancel(s->acceptor);
    ASSERT_EQ(weft_join(s->acceptor, NULL), 0);
    ASSERT_EQ(weft_close(s->lfd), 0);
}

static int fiber_connect(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT(fd >= 0);
    struct sockaddr_in a = io_addr(port);
    int r = weft_connect(fd, (struct sockaddr *)&a, sizeof a);
    ASSERT_EQ(r, 0);
    return fd;
}

/* ------------------------------------------------------------- echo */

struct echo_client { uint16_t port; int id; };

static void *echo_client(void *arg)
{
    struct echo_client *c = arg;
    int fd = fiber_connect(c->port);
    char out[3000], in[3000];
    for (int round = 0; round < 20; round++) {
        size_t n = 1 + (size_t)(c->id * 7 + round * 131) % sizeof out;
        for (size_t i = 0; i < n; i++)
            out[i] = (char)(c->id + round + i);
        write_full(fd, out, n);
        read_full(fd, in, n);
        ASSERT(memcmp(in, out, n) == 0);
    }
    ASSERT_EQ(weft_close(fd), 0);
    return NULL;
}

static void *main_echo_many(void *arg)
{
    struct server s;
    server_start(&s, 128);
    enum { N = 200 };
    static struct echo_client cs[N];
    weft_fiber *f[N];
    for (int i = 0; i < N; i++) {
        cs[i] = (struct echo_client){ s.port, i };
        ASSERT_EQ(weft_spawn(&f[i], &small, echo_client, &cs[i]), 0);
    }
    for (int i = 0; i < N; i++)
        ASSERT_EQ(weft_join(f[i], NULL), 0);
    server_stop(&s);
    return arg;
}

IO_TEST(io_echo_many_fibers)
{
    ASSERT_PTR_EQ(io_run_leaving_no_thread(main_echo_many, (void *)1), (void *)1);
}

static void *main_backend_name(void *arg)
{
    return (void *)weft_io_backend();
}

IO_TEST(io_backend_named)
{
    const char *want = getenv("WEFT_IO");
    ASSERT_STR_EQ((const char *)test_run(main_backend_name, NULL), want);
    ASSERT_STR_EQ(weft_io_backend(), "none");
}

TEST(io_backend_default_and_bad_name)
{
    unsetenv("WEFT_IO");
    const char *name = test_run(main_backend_name, NULL);
    ASSERT(strcmp(name, "uring") == 0 || strcmp(name, "epoll") == 0);
    weft_config cfg = { .io = "epoll" };
    ASSERT_STR_EQ((const char *)test_run_cfg(&cfg, main_backend_name, NULL), "epoll");
    cfg.io = "kqueue";
    ASSERT_EQ(weft_run(&cfg, main_backend_name, NULL, NULL), -EINVAL);
    setenv("WEFT_IO", "nonsense", 1);
    ASSERT_EQ(weft_run(NULL, main_backend_name, NULL, NULL), -EINVAL);
}

/* ------------------------------------------------------ reset, half-close */

static void *main_reset(void *arg)
{
    int a, b;
    io_tcp_pair(&a, &b);
    char buf[65536];
    memset(buf, 'x', sizeof buf);
    write_full(a, buf, sizeof buf);   /* mid-transfer: b has unread data */
    ASSERT_EQ(weft_read(b, buf, 100), 100);
    struct linger lg = { 1, 0 };
    ASSERT_EQ(setsockopt(b, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    ASSERT_EQ(weft_close(b), 0);      /* RST */
    ssize_t r;
    while ((r = weft_read(a, buf, sizeof buf)) > 0)
        ;
    ASSERT_EQ(r, -ECONNRESET);
    r = weft_write(a, buf, 10);
    ASSERT(r == -EPIPE || r == -ECONNRESET);
    ASSERT_EQ(weft_close(a), 0);
    return arg;
}

IO_TEST(io_peer_reset)
{
    test_run(main_reset, NULL);
}

static void *main_half_close(void *arg)
{
    int a, b;
    io_tcp_pair(&a, &b);
    write_full(a, "hello", 5);
    ASSERT_EQ(shutdown(a, SHUT_WR), 0);
    char buf[16];
    read_full(b, buf, 5);
    ASSERT_EQ(weft_read(b, buf, sizeof buf), 0);     /* EOF */
    write_full(b, "back", 4);                        /* the other way still works */
    read_full(a, buf, 4);
    ASSERT(memcmp(buf, "back", 4) == 0);
    ASSERT_EQ(weft_close(b), 0);
    ASSERT_EQ(weft_read(a, buf, sizeof buf), 0);
    ASSERT_EQ(weft_close(a), 0);
    return arg;
}

IO_TEST(io_half_close)
{
    test_run(main_half_close, NULL);
}

/* ----------------------------------------------------------- full pipe */

static _Atomic int pipe_wrote, ticks;
static int pipe_fds[2];

static void *pipe_writer(void *arg)
{
    static char big[1 << 20];
    write_full(pipe_fds[1], big, sizeof big);   /* far more than the pipe holds */
    atomic_store(&pipe_wrote, 1);
    return arg;
}

static void *ticker(void *arg)
{
    while (!atomic_load(&pipe_wrote) && atomic_load(&ticks) < 1000) {
        atomic_fetch_add(&ticks, 1);
        weft_sleep(MS);
    }
    return arg;
}

static void *main_full_pipe(void *arg)
{
    ASSERT_EQ(pipe(pipe_fds), 0);
    int w0 = weft_worker_id();
    weft_fiber *wr, *tk;
    ASSERT_EQ(weft_spawn(&wr, &(weft_attr){ .flags = WEFT_PINNED }, pipe_writer, NULL), 0);
    ASSERT_EQ(weft_spawn(&tk, &(weft_attr){ .flags = WEFT_PINNED }, ticker, NULL), 0);
    /* The writer parks on the full pipe; this fiber and the ticker, on the
     * same worker, keep running. */
    for (int i = 0; i < 5000 && atomic_load(&ticks) < 20; i++)
        weft_sleep(MS);
    ASSERT_GE(atomic_load(&ticks), 20);
    ASSERT_EQ(atomic_load(&pipe_wrote), 0);
    ASSERT_EQ(weft_worker_id(), w0);
    /* Drain: the writer completes. */
    char buf[65536];
    while (!atomic_load(&pipe_wrote)) {
        ssize_t r = weft_read(pipe_fds[0], buf, sizeof buf);
        ASSERT_GT(r, 0);
    }
    ASSERT_EQ(weft_join(wr, NULL), 0);
    ASSERT_EQ(weft_join(tk, NULL), 0);
    weft_close(pipe_fds[0]);
    weft_close(pipe_fds[1]);
    return arg;
}

IO_TEST(io_full_pipe_blocks_only_writer)
{
    weft_config cfg = { .workers = 1 };
    test_run_cfg(&cfg, main_full_pipe, NULL);
}

/* ------------------------------------------------- cancel and deadline */

enum { OP_READ, OP_WRITE, OP_ACCEPT, OP_CONNECT };

struct blocker {
    int op, fd;
    uint16_t port;
    int64_t deadline;   /* relative ns, 0: none */
    _Atomic int parked;
    long result;
};

static void *blocker(void *arg)
{
    struct blocker *b = arg;
    if (b->deadline)
        weft_deadline((int64_t)weft_now() + b->deadline);
    static char buf[1 << 16];
    long r = 0;
    atomic_store(&b->parked, 1);
    switch (b->op) {
    case OP_READ:
        r = weft_read(b->fd, buf, sizeof buf);
        break;
    case OP_WRITE:
        while ((r = weft_write(b->fd, buf, sizeof buf)) > 0)
            ;   /* until the socket buffers are full and it parks */
        break;
    case OP_ACCEPT:
        r = weft_accept(b->fd, NULL, NULL);
        break;
    case OP_CONNECT: {
        struct sockaddr_in a = io_addr(b->port);
        r = weft_connect(b->fd, (struct sockaddr *)&a, sizeof a);
        break;
    }
    }
    b->result = r;
    return NULL;
}

/* Set up an fd on which op blocks; *extra: fds to close afterwards. */
static void setup_blocking(struct blocker *b, int extra[4])
{
    extra[0] = extra[1] = extra[2] = extra[3] = -1;
    switch (b->op) {
    case OP_READ:
    case OP_WRITE:
        io_tcp_pair(&b->fd, &extra[0]);
        break;
    case OP_ACCEPT:
        b->fd = io_listen(8, &b->port);
        break;
    case OP_CONNECT: {
        /* a listener whose backlog is full: the kernel drops further SYNs
         * and connect stays in progress (no blackhole address needed) */
        extra[0] = io_listen(0, &b->port);
        for (int i = 1; i < 4; i++) {
            extra[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
            struct sockaddr_in a = io_addr(b->port);
            connect(extra[i], (struct sockaddr *)&a, sizeof a);
        }
        weft_sleep(20 * MS);   /* let the handshakes fill the queue */
        b->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        break;
    }
    }
}

static void *main_interrupt(void *arg)
{
    int how = (int)(intptr_t)arg;   /* op * 2 + (deadline ? 1 : 0) */
    struct blocker b = { .op = how / 2, .deadline = how % 2 ? (int64_t)(50 * MS) : 0 };
    int extra[4];
    setup_blocking(&b, extra);
    weft_fiber *f;
    ASSERT_EQ(weft_spawn(&f, NULL, blocker, &b), 0);
    while (!atomic_load(&b.parked))
        weft_sleep(MS);
    weft_sleep(30 * MS);   /* it is parked by now (nothing will wake it) */
    if (how % 2 == 0)
        ASSERT_EQ(weft_cancel(f), 0);
    ASSERT_EQ(weft_join(f, NULL), 0);
    ASSERT_EQ(b.result, how % 2 ? -ETIMEDOUT : -ECANCELED);
    weft_close(b.fd);
    for (int i = 0; i < 4; i++)
        if (extra[i] >= 0)
            weft_close(extra[i]);
    return NULL;
}

#define INTERRUPT_TESTS(opname, op)                                                            \
    IO_TEST(io_cancel_##opname) { test_run(main_interrupt, (void *)(intptr_t)((op) * 2)); }  \
    IO_TEST(io_deadline_##opname) { test_run(main_interrupt, (void *)(intptr_t)((op) * 2 + 1)); }

INTERRUPT_TESTS(read, OP_READ)
INTERRUPT_TESTS(write, OP_WRITE)
INTERRUPT_TESTS(accept, OP_ACCEPT)
INTERRUPT_TESTS(connect, OP_CONNECT)

static void *main_refused(void *arg)
{
    uint16_t port;
    int l = io_listen(1, &port);
    weft_close(l);   /* nobody listens there now */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = io_addr(port);
    ASSERT_EQ(weft_connect(fd, (struct sockaddr *)&a, sizeof a), -ECONNREFUSED);
    weft_close(fd);
    return arg;
}

IO_TEST(io_connect_refused)
{
    test_run(main_refused, NULL);
}

static void *main_cancelled_before(void *arg)
{
    int a, b;
    io_tcp_pair(&a, &b);
    write_full(b, "x", 1);
    weft_cancel(weft_self());
    char c;
    ASSERT_EQ(weft_read(a, &c, 1), -ECANCELED);   /* sticky, even with data there */
    ASSERT_EQ(weft_close(a), 0);                 /* close is not a blocking call */
    ASSERT_EQ(weft_close(b), 0);
    return arg;
}

IO_TEST(io_cancelled_fiber_does_not_block)
{
    test_run(main_cancelled_before, NULL);
}

/* -------------------------------------------------- close while parked */

static void *main_close_parked(void *arg)
{
    int a, b;
    io_tcp_pair(&a, &b);
    struct blocker r1 = { .op = OP_READ, .fd = a }, r2 = { .op = OP_READ, .fd = a };
    weft_fiber *f1, *f2;
    ASSERT_EQ(weft_spawn(&f1, NULL, blocker, &r1), 0);
    ASSERT_EQ(weft_spawn(&f2, NULL, blocker, &r2), 0);
    while (!atomic_load(&r1.parked) || !atomic_load(&r2.parked))
        weft_sleep(MS);
    weft_sleep(20 * MS);
    ASSERT_EQ(weft_close(a), 0);
    ASSERT_EQ(weft_join(f1, NULL), 0);
    ASSERT_EQ(weft_join(f2, NULL), 0);
    ASSERT_EQ(r1.result, -EBADF);
    ASSERT_EQ(r2.result, -EBADF);
    /* the number may be reused at once; the new fd works normally */
    int c, d;
    io_tcp_pair(&c, &d);
    write_full(d, "ok", 2);
    char buf[2];
    read_full(c, buf, 2);
    weft_close(b);
    weft_close(c);
    weft_close(d);
    return arg;
}

IO_TEST(io_close_wakes_parked)
{
    test_run(main_close_parked, NULL);
}

/* ---------------------------------------------------------- bad input */

static void bad_input_checks(void)
{
    char buf[8] = { 0 };
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    close(p[0]);
    close(p[1]);
    ASSERT_EQ(weft_read(p[0], buf, sizeof buf), -EBADF);
    ASSERT_EQ(weft_write(p[1], buf, sizeof buf), -EBADF);
    ASSERT_EQ(weft_read(-1, buf, 1), -EBADF);
    ASSERT_EQ(weft_read(1 << 30, buf, 1), -EBADF);
    ASSERT_EQ(weft_read(0, NULL, 5), -EINVAL);
    ASSERT_EQ(weft_write(1, NULL, 5), -EINVAL);
    ASSERT_EQ(weft_recv(0, NULL, 5, 0), -EINVAL);
    ASSERT_EQ(weft_send(0, NULL, 5, 0), -EINVAL);
    ASSERT_EQ(weft_readv(0, NULL, 1), -EINVAL);
    ASSERT_EQ(weft_writev(0, NULL, 2), -EINVAL);
    ASSERT_EQ(weft_readv(0, (struct iovec[1]){ { NULL, 1 } }, -1), -EINVAL);
    ASSERT_EQ(weft_recvfrom(0, buf, 1, 0, (struct sockaddr *)buf, NULL), -EINVAL);
    ASSERT_EQ(weft_sendto(0, buf, 1, 0, NULL, 16), -EINVAL);
    ASSERT_EQ(weft_accept(0, (struct sockaddr *)buf, NULL), -EINVAL);
    ASSERT_EQ(weft_connect(0, NULL, 16), -EINVAL);
    ASSERT_EQ(weft_wait_fd(0, 0), -EINVAL);
    ASSERT_EQ(weft_wait_fd(0, 0x4000), -EINVAL);
    ASSERT_EQ(weft_wait_fd(p[0], POLLIN), -EBADF);
    ASSERT_EQ(weft_close(-1), -EBADF);
    ASSERT_EQ(weft_close(p[0]), -EBADF);
    ASSERT_EQ(weft_blocking(NULL, NULL, NULL), -EINVAL);
    ASSERT_EQ(weft_getaddrinfo("localhost", NULL, NULL, NULL), -EINVAL);
    /* a socket call on a pipe: the kernel's answer, as a negative errno */
    ASSERT_EQ(pipe(p), 0);
    ASSERT_EQ(weft_accept(p[0], NULL, NULL), -ENOTSOCK);
    ASSERT_EQ(weft_recv(p[0], buf, 1, 0), -ENOTSOCK);
    weft_close(p[0]);
    weft_close(p[1]);
}

static void *main_bad_input(void *arg)
{
    bad_input_checks();
    return arg;
}

IO_TEST(io_bad_input)
{
    test_run(main_bad_input, NULL);
    bad_input_checks();   /* and from a plain thread */
}

/* ------------------------------------------------------ plain threads */

static void *late_writer(void *arg)
{
    int fd = (int)(intptr_t)arg;
    usleep(50000);
    ASSERT_EQ(write(fd, "late", 4), 4);
    return NULL;
}

static void *len_job(void *arg)
{
    return (void *)strlen(arg);
}

static void plain_checks(void)
{
    /* A non-blocking pipe: the call still blocks, like read(2) on a
     * blocking one (poll(2) underneath). */
    int p[2];
    ASSERT_EQ(pipe2(p, O_NONBLOCK), 0);
    pthread_t t;
    pthread_create(&t, NULL, late_writer, (void *)(intptr_t)p[1]);
    char buf[8];
    ASSERT_EQ(weft_read(p[0], buf, sizeof buf), 4);
    pthread_join(t, NULL);
    ASSERT_EQ(weft_wait_fd(p[1], POLLOUT), POLLOUT);
    /* No SIGPIPE: the process would die of it. */
    weft_close(p[0]);
    ASSERT_EQ(weft_write(p[1], "x", 1), -EPIPE);
    weft_close(p[1]);
    int a, b;
    io_tcp_pair(&a, &b);
    weft_close(b);
    usleep(10000);
    ssize_t r;
    while ((r = weft_send(a, "y", 1, 0)) == 1)
        ;
    ASSERT(r == -EPIPE || r == -ECONNRESET);
    weft_close(a);
    /* weft_blocking runs in place */
    void *ret = NULL;
    ASSERT_EQ(weft_blocking(len_job, "four", &ret), 0);
    ASSERT_EQ((size_t)ret, 4);
}

static void *plain_thread(void *arg)
{
    plain_checks();
    return arg;
}

static void *main_plain_thread(void *arg)
{
    /* a plain thread while a runtime runs */
    pthread_t t;
    pthread_create(&t, NULL, plain_thread, NULL);
    pthread_join(t, NULL);   /* blocks this worker: fine for a test */
    return arg;
}

IO_TEST(io_plain_thread_calls_block)
{
    plain_checks();                          /* no runtime */
    test_run(main_plain_thread, NULL);       /* beside a runtime */
}

/* ------------------------------------------------------ SIGPIPE, EPIPE */

static void *main_epipe(void *arg)
{
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    weft_close(p[0]);
    ASSERT_EQ(weft_write(p[1], "x", 1), -EPIPE);
    struct iovec iov = { "yz", 2 };
    ASSERT_EQ(weft_writev(p[1], &iov, 1), -EPIPE);
    weft_close(p[1]);
    return arg;
}

IO_TEST(io_broken_pipe_is_epipe_not_sigpipe)
{
    test_run(main_epipe, NULL);
    /* the mask is restored after weft_run: SIGPIPE is not blocked here */
    sigset_t m;
    pthread_sigmask(SIG_SETMASK, NULL, &m);
    ASSERT_EQ(sigismember(&m, SIGPIPE), 0);
}

/* ------------------------------------------------------- files, UDP, ... */

static void *main_files(void *arg)
{
    char path[] = "/tmp/weft-io-XXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    unlink(path);
    char buf[8192];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (char)i;
    ASSERT_EQ(weft_write(fd, buf, sizeof buf), (ssize_t)sizeof buf);
    ASSERT_EQ(lseek(fd, 0, SEEK_SET), 0);
    char back[8192];
    ASSERT_EQ(weft_read(fd, back, 100), 100);   /* the file position moves */
    struct iovec iov[2] = { { back + 100, 1000 }, { back + 1100, sizeof back - 1100 } };
    ASSERT_EQ(weft_readv(fd, iov, 2), (ssize_t)sizeof back - 100);
    ASSERT(memcmp(buf, back, sizeof buf) == 0);
    ASSERT_EQ(weft_read(fd, back, 10), 0);   /* EOF */
    ASSERT_EQ(weft_close(fd), 0);
    /* /dev/null is a character device: pollable, always ready */
    int dn = open("/dev/null", O_RDWR | O_CLOEXEC);
    ASSERT_EQ(weft_write(dn, buf, 10), 10);
    ASSERT_EQ(weft_read(dn, buf, 10), 0);
    weft_close(dn);
    return arg;
}

IO_TEST(io_regular_files)
{
    test_run(main_files, NULL);
}

static void *main_udp(void *arg)
{
    int a = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int b = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = io_addr(0);
    ASSERT_EQ(bind(b, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    getsockname(b, (struct sockaddr *)&sa, &len);
    ASSERT_EQ(weft_sendto(a, "dgram", 5, 0, (struct sockaddr *)&sa, sizeof sa), 5);
    char buf[16];
    struct sockaddr_in from;
    socklen_t flen = sizeof from;
    ASSERT_EQ(weft_recvfrom(b, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen), 5);
    ASSERT_EQ(flen, sizeof from);
    ASSERT_EQ(from.sin_family, AF_INET);
    ASSERT(memcmp(buf, "dgram", 5) == 0);
    /* reply to the sender's address, then a recv that parks first */
    ASSERT_EQ(weft_sendto(b, "re", 2, 0, (struct sockaddr *)&from, flen), 2);
    ASSERT_EQ(weft_recv(a, buf, sizeof buf, 0), 2);
    ASSERT_EQ(weft_recv(a, buf, sizeof buf, MSG_DONTWAIT), -EAGAIN);
    weft_close(a);
    weft_close(b);
    return arg;
}

IO_TEST(io_udp)
{
    test_run(main_udp, NULL);
}

/* A read that comes back short lets the next read on a stream socket park
 * without a system call (epoll.c, NO READ THAT MUST FAIL). What must still
 * hold: data written right after the short read, with no poll in between,
 * is read; on datagram and seqpacket sockets, where a short read leaves the
 * next message queued, the next read returns it at once. On one worker the
 * writer's two messages arrive before the poller runs, so they make a
 * single edge, which the first read's wake-up consumes: a second read that
 * waited for another edge would wait for ever. A deadline turns that into
 * -ETIMEDOUT. */
static void *write_two(void *arg)
{
    int fd = (int)(intptr_t)arg;
    weft_sleep(20 * MS);   /* the reader has parked, so the fd is registered */
    ASSERT_EQ(weft_write(fd, "a", 1), 1);
    ASSERT_EQ(weft_write(fd, "bc", 2), 2);
    return NULL;
}

static void *main_short_read(void *arg)
{
    static const int types[] = { SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET };
    char buf[100];
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        int sv[2];
        weft_fiber *f;
        ASSERT_EQ(socketpair(AF_UNIX, types[t] | SOCK_CLOEXEC, 0, sv), 0);
        weft_deadline(ms_from_now((unsigned)(2000 * test_time_scale())));
        ASSERT_EQ(weft_spawn(&f, NULL, write_two, (void *)(intptr_t)sv[0]), 0);
        if (types[t] == SOCK_STREAM) {
            size_t got = 0;   /* "abc", short; io_uring may complete with "a" alone */
            while (got < 3) {
                ssize_t r = weft_read(sv[1], buf + got, sizeof buf - got);
                ASSERT_GT(r, 0);
                got += (size_t)r;
            }
            ASSERT_EQ(got, 3);
            ASSERT_EQ(weft_write(sv[0], "de", 2), 2);          /* no poll since */
            ASSERT_EQ(weft_read(sv[1], buf, sizeof buf), 2);
            ASSERT(memcmp(buf, "de", 2) == 0);
            ASSERT_EQ(weft_write(sv[0], "f", 1), 1);
            ASSERT_EQ(weft_recv(sv[1], buf, sizeof buf, 0), 1);
            ASSERT_EQ(buf[0], 'f');
        } else {
            ASSERT_EQ(weft_read(sv[1], buf, sizeof buf), 1);   /* short: one message */
            ASSERT_EQ(buf[0], 'a');
            ASSERT_EQ(weft_read(sv[1], buf, sizeof buf), 2);   /* the next, queued */
            ASSERT(memcmp(buf, "bc", 2) == 0);
        }
        ASSERT_EQ(weft_join(f, NULL), 0);
        weft_deadline(-1);
        weft_close(sv[0]);
        weft_close(sv[1]);
    }
    return arg;
}

IO_TEST(io_short_read_then_more)
{
    static const weft_config one = { .workers = 1 };
    test_run_cfg(&one, main_short_read, NULL);
}

/* Every worker always has a fiber to run (yielders that never park): a
 * fiber parked on a socket must still be woken when its data comes, though
 * no worker ever runs out of work and waits in the poller. */
static atomic_int yield_stop;

static void *yield_forever(void *arg)
{
    while (!atomic_load(&yield_stop))
        weft_yield();
    return arg;
}

static void *read_one(void *arg)
{
    char c;
    return (void *)(intptr_t)weft_read((int)(intptr_t)arg, &c, 1);
}

static void *main_busy_io(void *arg)
{
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    atomic_store(&yield_stop, 0);
    weft_fiber *r, *y[4];
    ASSERT_EQ(weft_spawn(&r, NULL, read_one, (void *)(intptr_t)sv[1]), 0);
    weft_sleep(10 * MS);   /* the reader is parked on the poller */
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(weft_spawn(&y[i], NULL, yield_forever, NULL), 0);
    weft_sleep(10 * MS);   /* a timer: the loop fires it between yields */
    ASSERT_EQ(weft_write(sv[0], "x", 1), 1);
    weft_deadline(ms_from_now((unsigned)(1000 * test_time_scale())));
    void *got;
    ASSERT_EQ(weft_join(r, &got), 0);   /* -ETIMEDOUT if nobody polled */
    weft_deadline(-1);
    ASSERT_EQ((intptr_t)got, 1);
    atomic_store(&yield_stop, 1);
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(weft_join(y[i], NULL), 0);
    weft_close(sv[0]);
    weft_close(sv[1]);
    return arg;
}

IO_TEST(io_wakes_while_every_worker_is_busy)
{
    static const weft_config two = { .workers = 2 };
    test_run_cfg(&two, main_busy_io, NULL);
}

static void *poke(void *arg)
{
    weft_sleep(20 * MS);
    uint64_t one = 1;
    ASSERT_EQ(weft_write((int)(intptr_t)arg, &one, 8), 8);
    return NULL;
}

static void *main_wait_fd_eventfd(void *arg)
{
    int e = eventfd(0, EFD_CLOEXEC);
    weft_fiber *f;
    ASSERT_EQ(weft_spawn(&f, NULL, poke, (void *)(intptr_t)e), 0);
    int r = weft_wait_fd(e, POLLIN);
    ASSERT(r & POLLIN);
    uint64_t v;
    ASSERT_EQ(weft_read(e, &v, 8), 8);
    ASSERT_EQ(v, 1);
    ASSERT_EQ(weft_wait_fd(e, POLLOUT), POLLOUT);
    weft_join(f, NULL);
    /* readv / writev on a socket pair */
    int a, b;
    io_tcp_pair(&a, &b);
    struct iovec out[3] = { { "ab", 2 }, { "", 0 }, { "cde", 3 } };
    ASSERT_EQ(weft_writev(a, out, 3), 5);
    char x[2], y[3];
    struct iovec in[2] = { { x, 2 }, { y, 3 } };
    size_t got = 0;
    while (got < 5) {
        ssize_t r2 = weft_readv(b, in, 2);
        ASSERT_GT(r2, 0);
        got += (size_t)r2;
        if (got < 5) {   /* rare short read: take the rest plainly */
            read_full(b, (char[5]){ 0 }, 5 - got);
            break;
        }
    }
    ASSERT(memcmp(x, "ab", 2) == 0 && memcmp(y, "cde", 3) == 0);
    weft_close(a);
    weft_close(b);
    weft_close(e);
    return arg;
}

IO_TEST(io_wait_fd_eventfd_vectors)
{
    test_run(main_wait_fd_eventfd, NULL);
}

/* ------------------------------------------------------------- EMFILE */

static void *main_emfile(void *arg)
{
    /* Using up every descriptor starves valgrind's own too, and it hangs. */
    if (RUNNING_ON_VALGRIND) {
        test_skip("under valgrind");
    }
    uint16_t port;
    int l = io_listen(8, &port);
    int c = io_connect_plain(port);   /* waits in the backlog */
    /* use up every fd */
    int fds[64], n = 0;
    int fd;
    while (n < 64 && (fd = dup(0)) >= 0)
        fds[n++] = fd;
    ASSERT_LT(n, 64);
    uint64_t t0 = weft_now();
    weft_deadline((int64_t)(t0 + 150 * MS));
    ASSERT_EQ(weft_accept(l, NULL, NULL), -ETIMEDOUT);   /* backed off, did not spin out */
    weft_deadline(-1);
    /* free one: the next accept gets the connection */
    close(fds[--n]);
    int s = weft_accept(l, NULL, NULL);
    ASSERT_GE(s, 0);
    int fl = fcntl(s, F_GETFL), fdfl = fcntl(s, F_GETFD);
    ASSERT(fl & O_NONBLOCK);
    ASSERT(fdfl & FD_CLOEXEC);
    weft_close(s);
    while (n)
        close(fds[--n]);
    weft_close(c);
    weft_close(l);
    return arg;
}

IO_TEST(io_accept_emfile_backs_off)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = 48;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
    test_run(main_emfile, NULL);
}

/* ------------------------------------------------ 10,000 connections */

/* The clients run in a forked process with a runtime of their own: each
 * process then holds 10,000 fds, within the usual hard RLIMIT_NOFILE. */
/* 10,000; with WEFT_TEST_HEAVY=0 (valgrind, qemu, TSan: too slow or too
 * hungry for it) the same test with 500. */
static int MANY = 10000;
static _Atomic int many_up, many_open, many_peak;

static void *many_client(void *arg)
{
    uint16_t port = (uint16_t)(uintptr_t)arg;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT(fd >= 0);
    struct sockaddr_in a = io_addr(port);
    ASSERT_EQ(weft_connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    uint64_t v = (uint64_t)fd * 2654435761u, back = 0;
    write_full(fd, &v, sizeof v);
    read_full(fd, &back, sizeof back);
    ASSERT_EQ(back, v);
    atomic_fetch_add(&many_up, 1);
    /* hold the connection until main cancels us: all MANY are open at once */
    char c;
    ASSERT_EQ(weft_read(fd, &c, 1), -ECANCELED);
    struct linger lg = { 1, 0 };   /* no TIME_WAIT left behind on loopback */
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    ASSERT_EQ(weft_close(fd), 0);
    return NULL;
}

static void *main_many_clients(void *arg)
{
    static weft_fiber *f[10000];
    weft_attr at = { .stack_size = 32 * 1024 };
    for (int i = 0; i < MANY; i++)
        ASSERT_EQ(weft_spawn(&f[i], &at, many_client, arg), 0);
    for (int i = 0; i < 60000 && atomic_load(&many_up) < MANY; i++)
        weft_sleep(MS);
    ASSERT_EQ(atomic_load(&many_up), MANY);
    for (int i = 0; i < MANY; i++)
        weft_cancel(f[i]);
    for (int i = 0; i < MANY; i++)
        ASSERT_EQ(weft_join(f[i], NULL), 0);
    return NULL;
}

static void *counted_echo(void *arg)
{
    int n = atomic_fetch_add(&many_open, 1) + 1;
    int p = atomic_load(&many_peak);
    while (n > p && !atomic_compare_exchange_weak(&many_peak, &p, n))
        ;
    echo_conn(arg);
    atomic_fetch_sub(&many_open, 1);
    return NULL;
}

static void *wait_child(void *arg)
{
    int st;
    pid_t pid = (pid_t)(intptr_t)arg;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return (void *)(intptr_t)st;
}

static void *counting_acceptor(void *arg);

static void *main_many_server(void *arg)
{
    struct server *s = arg;
    pid_t pid = (pid_t)(intptr_t)s->acceptor;
    weft_fiber *acc;
    ASSERT_EQ(weft_spawn(&acc, NULL, counting_acceptor, s), 0);
    void *st;
    ASSERT_EQ(weft_blocking(wait_child, (void *)(intptr_t)pid, &st), 0);   /* parks, not the worker */
    ASSERT(WIFEXITED((intptr_t)st) && WEXITSTATUS((intptr_t)st) == 0);
    for (int i = 0; i < 10000 && atomic_load(&many_open) > 0; i++)
        weft_sleep(MS);
    ASSERT_EQ(atomic_load(&many_open), 0);
    ASSERT_EQ(atomic_load(&many_peak), MANY);
    weft_cancel(acc);
    weft_join(acc, NULL);
    weft_close(s->lfd);
    return NULL;
}

static _Atomic int counted;

static void *counting_acceptor(void *arg)
{
    struct server *s = arg;
    for (;;) {
        int fd = weft_accept(s->lfd, NULL, NULL);
        if (fd < 0)
            break;
        atomic_fetch_add(&counted, 1);
        ASSERT_EQ(weft_spawn(NULL, &(weft_attr){ .stack_size = 32 * 1024, .flags = WEFT_DETACHED },
                             counted_echo, (void *)(intptr_t)fd), 0);
    }
    return NULL;
}

IO_TEST_TIMEOUT(io_ten_thousand_connections, 120)
{
    const char *heavy = getenv("WEFT_TEST_HEAVY");
    if (heavy && strcmp(heavy, "0") == 0)
        MANY = 500;
    ASSERT_EQ(io_raise_nofile((unsigned long)MANY + 500), 0);
    struct server s;
    s.lfd = io_listen(4096, &s.port);
    fflush(stdout);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        die_with_parent();
        close(s.lfd);
        test_run(main_many_clients, (void *)(uintptr_t)s.port);
        _exit(0);
    }
    s.acceptor = (weft_fiber *)(intptr_t)pid;   /* smuggled to main */
    test_run(main_many_server, &s);
}

/* ------------------------------------------- io_uring forbidden: fallback */

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

/* Make io_uring_setup fail with EPERM, as a container's seccomp profile does. */
static void forbid_io_uring(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { .len = sizeof f / sizeof f[0], .filter = f };
    ASSERT_EQ(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
    ASSERT_EQ(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), 0);
}

TEST(io_uring_forbidden_falls_back_to_epoll)
{
    /* Under qemu-user the filter sees the host's system calls, not the
     * guest's: it cannot forbid the guest's io_uring_setup. */
    if (test_under_qemu())
        test_skip("under qemu-user");
    forbid_io_uring();
    unsetenv("WEFT_IO");
    ASSERT_STR_EQ((const char *)test_run(main_backend_name, NULL), "epoll");
    test_run(main_half_close, NULL);   /* and works */
    setenv("WEFT_IO", "uring", 1);     /* asked for by name: the error is reported */
    ASSERT_EQ(weft_run(NULL, main_backend_name, NULL, NULL), -EPERM);
}
