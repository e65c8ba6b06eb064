/*
 * peer_thread_http: the same HTTP/1.1 keep-alive "hello" server as
 * peer_epoll_http, written thread-per-connection: a blocking accept loop and
 * one detached pthread per connection, each with a 64 KiB stack, doing
 * blocking reads and writes. This is the code weft lets you keep writing;
 * the benchmark compares its memory (VmRSS) at 10,000 connections with
 * weft's examples/http_hello, a fiber per connection.
 *
 * Request handling is as in peer_epoll_http: a request is everything up to
 * "\r\n\r\n"; pipelined and partial requests are handled; every request gets
 * RESPONSE, byte-identical to weft's example.
 *
 * Usage: peer_thread_http PORT     (runs until killed)
 */
#define _GNU_SOURCE
#define RESPONSE "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, World!\n"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STACK_SIZE (64 * 1024)
#define RBUF 4096                 /* largest request head accepted */
#define MAX_BATCH 32              /* responses written with one write() */

static const char response[] = RESPONSE;
#define RESPONSE_LEN (sizeof response - 1)

static char responses[MAX_BATCH * RESPONSE_LEN];   /* RESPONSE, MAX_BATCH times */

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char rbuf[RBUF];
    size_t rlen = 0;
    for (;;) {
        ssize_t r = read(fd, rbuf + rlen, sizeof rbuf - rlen);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        rlen += (size_t)r;

        size_t off = 0, n = 0;
        for (;;) {
            char *end = memmem(rbuf + off, rlen - off, "\r\n\r\n", 4);
            if (!end) break;
            off = (size_t)(end - rbuf) + 4;
            n++;
        }
        memmove(rbuf, rbuf + off, rlen - off);
        rlen -= off;
        if (rlen == sizeof rbuf) break;             /* request head too large */

        int err = 0;
        while (n && !err) {
            size_t k = n < MAX_BATCH ? n : MAX_BATCH;
            err = write_all(fd, responses, k * RESPONSE_LEN);
            n -= k;
        }
        if (err) break;
    }
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    int port;
    if (argc != 2 || (port = atoi(argv[1])) <= 0 || port > 65535) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    for (int i = 0; i < MAX_BATCH; i++)
        memcpy(responses + i * RESPONSE_LEN, response, RESPONSE_LEN);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0) { perror("socket"); return 1; }
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((unsigned short)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); return 1; }
    if (listen(lfd, 65535) < 0) { perror("listen"); return 1; }   /* capped at somaxconn */

    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, STACK_SIZE);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);

    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            perror("accept4");
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
                continue;
            }
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_t t;
        int e = pthread_create(&t, &attr, serve, (void *)(intptr_t)fd);
        if (e != 0) {
            fprintf(stderr, "pthread_create: %s\n", strerror(e));
            close(fd);
            nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
        }
    }
}
