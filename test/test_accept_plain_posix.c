/*
 * weft_accept from a plain thread runs accept4 on that thread, like the
 * other I/O calls (calls_posix.c). It used to read the listener's fd record
 * afterwards, which only a fiber's call looks up: a plain thread's accept
 * that succeeded dereferenced NULL. The accepted socket must also work
 * from a fiber afterwards (weft__fd_fresh reset its record).
 */
#define _GNU_SOURCE
#include "test_io.h"

#include <pthread.h>
#include <unistd.h>

/* Outside weft_run: a blocking accept of a connection already queued. */
TEST(accept_plain_outside_runtime)
{
    uint16_t port;
    int l = io_listen(4, &port);
    ASSERT_GE(l, 0);
    int c = io_connect_plain(port);
    ASSERT_GE(c, 0);
    int s = weft_accept(l, NULL, NULL);
    ASSERT_GE(s, 0);
    ASSERT_EQ(weft_write(c, "x", 1), 1);
    char b = 0;
    ASSERT_EQ(weft_read(s, &b, 1), 1);
    ASSERT_EQ(b, 'x');
    ASSERT_EQ(weft_close(s), 0);
    ASSERT_EQ(weft_close(c), 0);
    ASSERT_EQ(weft_close(l), 0);
}

struct plain {
    int listener;
    int accepted;
};

static void *plain_accept(void *arg)
{
    struct plain *p = arg;
    p->accepted = weft_accept(p->listener, NULL, NULL);
    return NULL;
}

/* While a runtime runs: a pthread accepts, then a fiber reads the socket
 * through the backend (its record was reset as a stream socket). */
static void *accept_from_thread_main(void *arg)
{
    (void)arg;
    uint16_t port;
    struct plain p = { .listener = io_listen(4, &port), .accepted = -1 };
    ASSERT_GE(p.listener, 0);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, plain_accept, &p), 0);
    int c = io_connect_plain(port);
    ASSERT_GE(c, 0);
    ASSERT_EQ(pthread_join(t, NULL), 0);
    ASSERT_GE(p.accepted, 0);
    ASSERT_EQ(weft_write(c, "hi", 2), 2);
    char b[2] = { 0 };
    ASSERT_EQ(weft_read(p.accepted, b, 2), 2);
    ASSERT_EQ(memcmp(b, "hi", 2), 0);
    ASSERT_EQ(weft_close(c), 0);
    ASSERT_EQ(weft_read(p.accepted, b, 2), 0);   /* the peer closed */
    ASSERT_EQ(weft_close(p.accepted), 0);
    ASSERT_EQ(weft_close(p.listener), 0);
    return NULL;
}

IO_TEST(accept_plain_thread_in_runtime)
{
    test_run(accept_from_thread_main, NULL);
}
