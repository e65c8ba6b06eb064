/*
 * Helpers shared by the I/O tests: run a test body once per backend, and
 * make loopback sockets.
 *
 *   IO_TEST(name) { ... }   registers name_epoll and name_uring; the body
 *                           runs with WEFT_IO set to that backend (the
 *                           uring one is skipped when the ring cannot be
 *                           set up on this machine)
 */
#ifndef WEFT_TEST_IO_H
#define WEFT_TEST_IO_H

#include "test.h"

#include <netinet/in.h>

/* Set WEFT_IO for the test and check weft_run starts with it; a backend
 * this machine cannot run (io_uring disabled, under valgrind) ends the test
 * as skipped (test_skip). Returns 1. */
int io_use_backend(const char *name);

#define IO_TEST_TIMEOUT(name, secs)                                                 \
    static void io_body_##name(void);                                               \
    TEST_TIMEOUT(name##_epoll, secs) { if (io_use_backend("epoll")) io_body_##name(); } \
    TEST_TIMEOUT(name##_uring, secs) { if (io_use_backend("uring")) io_body_##name(); } \
    static void io_body_##name(void)
#define IO_TEST(name) IO_TEST_TIMEOUT(name, 30)

/* A listening TCP socket on 127.0.0.1, an ephemeral port; *port gets it. */
int io_listen(int backlog, uint16_t *port);
/* A blocking connect to 127.0.0.1:port from a plain thread (no weft). */
int io_connect_plain(uint16_t port);
struct sockaddr_in io_addr(uint16_t port);
/* A connected TCP pair over loopback (a: the connecting side). */
void io_tcp_pair(int *a, int *b);
/* Threads in this process whose name is `comm` (NULL: all). */
int io_count_threads(const char *comm);
int io_count_threads_named(const char *prefix);   /* names starting with prefix */
/* test_run(main_fn, arg), and check that no thread outlives the runtime;
 * returns what main_fn returned. */
void *io_run_leaving_no_thread(void *(*main_fn)(void *), void *arg);
/* Raise RLIMIT_NOFILE to at least n (soft and hard); 0 or -errno. */
int io_raise_nofile(unsigned long n);

#endif
