/*
 * peer_epoll_http: a hand-written epoll HTTP/1.1 keep-alive "hello" server,
 * the event-loop peer that weft's examples/http_hello is measured against.
 *
 * One thread per online CPU, each with its own epoll instance and its own
 * SO_REUSEPORT listener on 127.0.0.1:PORT (the kernel spreads connections
 * over them), edge-triggered, non-blocking. No locks, no shared state.
 *
 * Parsing is minimal on purpose: a request is everything up to "\r\n\r\n"
 * (GET has no body), and every complete request gets RESPONSE. Pipelined and
 * partial requests are handled: a read may hold several requests or part of
 * one. The response is byte-identical to what weft's example sends; Go's
 * net/http peer adds a Date header on top, a few dozen bytes more per reply.
 *
 * Usage: peer_epoll_http PORT     (runs until killed)
 */
#define _GNU_SOURCE
#define RESPONSE "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, World!\n"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define RBUF 4096            /* largest request head accepted */
#define WMAX (256 * 1024)    /* stop reading while this much output is queued */

static const char response[] = RESPONSE;
#define RESPONSE_LEN (sizeof response - 1)

static int port;

struct conn {
    int fd;
    size_t rlen;             /* bytes in rbuf */
    char *wbuf;              /* queued output not yet written, or NULL */
    size_t wlen, woff, wcap;
    char rbuf[RBUF];
};

static int listener_tag;     /* its address marks the listener in epoll data */

static int make_listener(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { perror("socket"); exit(1); }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
        perror("SO_REUSEPORT"); exit(1);
    }
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((unsigned short)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror("bind"); exit(1); }
    if (listen(fd, 65535) < 0) { perror("listen"); exit(1); }  /* capped at somaxconn */
    return fd;
}

static void conn_close(struct conn *c)
{
    close(c->fd);            /* also removes it from the epoll set */
    free(c->wbuf);
    free(c);
}

/* Append n copies of RESPONSE to the output queue. 0, or -1 on no memory. */
static int queue_responses(struct conn *c, size_t n)
{
    size_t need = c->wlen + n * RESPONSE_LEN;
    if (need > c->wcap) {
        size_t cap = c->wcap ? c->wcap : 1024;
        while (cap < need) cap *= 2;
        char *p = realloc(c->wbuf, cap);
        if (!p) return -1;
        c->wbuf = p;
        c->wcap = cap;
    }
    for (size_t i = 0; i < n; i++, c->wlen += RESPONSE_LEN)
        memcpy(c->wbuf + c->wlen, response, RESPONSE_LEN);
    return 0;
}

/* Write queued output. 1: all written, 0: would block, -1: connection gone. */
static int flush(struct conn *c)
{
    while (c->woff < c->wlen) {
        ssize_t w = write(c->fd, c->wbuf + c->woff, c->wlen - c->woff);
        if (w > 0) { c->woff += (size_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) return 0;
        return -1;
    }
    c->woff = c->wlen = 0;
    if (c->wcap > 64 * 1024) {   /* give back the memory a pipelining burst took */
        free(c->wbuf);
        c->wbuf = NULL;
        c->wcap = 0;
    }
    return 1;
}

/* Consume every complete request in rbuf; queue one response per request. */
static int parse(struct conn *c)
{
    size_t off = 0, n = 0;
    for (;;) {
        char *end = memmem(c->rbuf + off, c->rlen - off, "\r\n\r\n", 4);
        if (!end) break;
        off = (size_t)(end - c->rbuf) + 4;
        n++;
    }
    if (off) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
    if (c->rlen == RBUF) return -1;     /* request head too large */
    return n ? queue_responses(c, n) : 0;
}

/*
 * Edge-triggered: on any event, write what is queued, then read until the
 * socket is drained (EAGAIN), answering as we go. Reading pauses while more
 * than WMAX bytes are queued; the next EPOLLOUT edge flushes and resumes it.
 */
static void on_conn(struct conn *c)
{
    for (;;) {
        int f = flush(c);
        if (f < 0) { conn_close(c); return; }
        if (c->wlen - c->woff > WMAX) return;       /* wait for EPOLLOUT */
        ssize_t r = read(c->fd, c->rbuf + c->rlen, RBUF - c->rlen);
        if (r > 0) {
            c->rlen += (size_t)r;
            if (parse(c) < 0) { conn_close(c); return; }
            continue;
        }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == EAGAIN) {
            if (flush(c) < 0) conn_close(c);
            return;
        }
        conn_close(c);                               /* EOF or error */
        return;
    }
}

/* Accept until the backlog is empty. Returns 1 if it stopped early on an
   error such as EMFILE: with edge triggering no new edge will come for the
   connections left in the backlog, so the caller must retry by itself. */
static int on_accept(int lfd, int ep)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EAGAIN) return 0;
            static int warned;           /* once: this may repeat every 10 ms */
            if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED)) perror("accept4");
            return 1;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = malloc(sizeof *c);
        if (!c) { close(fd); return 1; }
        c->fd = fd;
        c->rlen = 0;
        c->wbuf = NULL;
        c->wlen = c->woff = c->wcap = 0;
        struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) { perror("epoll_ctl"); conn_close(c); return 1; }
    }
}

static void *worker(void *arg)
{
    (void)arg;
    int lfd = make_listener();
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) { perror("epoll_create1"); exit(1); }
    struct epoll_event ev = { .events = EPOLLIN | EPOLLET, .data.ptr = &listener_tag };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0) { perror("epoll_ctl"); exit(1); }

    struct epoll_event evs[256];
    int accept_pending = 0;   /* backlog left behind by an accept error */
    for (;;) {
        int n = epoll_wait(ep, evs, 256, accept_pending ? 10 : -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            exit(1);
        }
        if (n == 0 && accept_pending)
            accept_pending = on_accept(lfd, ep);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == &listener_tag)
                accept_pending = on_accept(lfd, ep);
            else
                on_conn(evs[i].data.ptr);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2 || (port = atoi(argv[1])) <= 0 || port > 65535) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1) ncpu = 1;
    if (ncpu > 256) ncpu = 256;

    pthread_t t;
    for (long i = 1; i < ncpu; i++)
        if (pthread_create(&t, NULL, worker, NULL) != 0) { perror("pthread_create"); return 1; }
    worker(NULL);
    return 0;
}
