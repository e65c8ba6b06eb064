/*
 * The edges of the fd layer, on both backends (IO_TEST): accept from a
 * plain thread.
 *
 * Each read that could hang runs under a deadline, so a lost wake-up is a
 * failed assertion (-ETIMEDOUT), not a hung test.
 */
#define _GNU_SOURCE
#include "test_io.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
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
