/*
 * http_hello: an HTTP/1.1 keep-alive server that answers every request with
 * the same 14-byte body. One fiber per connection, plain blocking code;
 * pipelined requests are answered in one write, partial reads are kept.
 *
 *   http_hello [port] [bind-address]       default 8080 127.0.0.1
 *
 * SIGUSR1 prints a line of statistics (connections, live fibers, requests);
 * SIGINT / SIGTERM stop it cleanly. Signals arrive through a signalfd read
 * by a fiber: weft_read parks on it like on a socket.
 */
#define _GNU_SOURCE
#include "example.h"

#include <netinet/tcp.h>
#include <signal.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/signalfd.h>
#include <sys/uio.h>

static const char RESPONSE[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, World!\n";
#define RESPONSE_LEN (sizeof RESPONSE - 1)
#define PIPELINE_MAX 32   /* responses per writev */

static _Atomic long conns, requests, fibers = 1;   /* main */
static int lfd = -1;

/* Body length and keep-alive of the request whose header ends at end. */
static void header_info(const char *h, const char *end, size_t *body, int *close_after)
{
    *body = 0;
    *close_after = 0;
    for (const char *line = h; line < end;) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            break;
        size_t len = (size_t)(eol - line);
        if (len > 15 && strncasecmp(line, "Content-Length:", 15) == 0)
            *body = strtoul(line + 15, NULL, 10);
        else if (len > 11 && strncasecmp(line, "Connection:", 11) == 0 &&
                 memmem(line, len, "close", 5))
            *close_after = 1;
        line = eol + 1;
    }
}

/* Write n copies of the response in one writev: the iovecs all point at the
 * same static bytes, so a pipeline costs no buffer. */
static int respond(int fd, int n)
{
    struct iovec iov[PIPELINE_MAX];
    for (int i = 0; i < n; i++)
        iov[i] = (struct iovec){ (void *)RESPONSE, RESPONSE_LEN };
    size_t left = (size_t)n * RESPONSE_LEN;
    struct iovec *v = iov;
    while (left) {
        ssize_t w = weft_writev(fd, v, n);
        if (w < 0)
            return -1;
        left -= (size_t)w;
        while (n && (size_t)w >= v->iov_len) {   /* a short write: skip what went */
            w -= (ssize_t)v->iov_len;
            v++;
            n--;
        }
        if (n) {
            v->iov_base = (char *)v->iov_base + w;
            v->iov_len -= (size_t)w;
        }
    }
    return 0;
}

/* One connection. The buffer is small on purpose: a fiber's memory is the
 * stack pages it touches, and 10,000 connections touch 10,000 of them. */
static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[2048];
    size_t have = 0, skip = 0;   /* skip: body bytes still to discard */
    int done = 0;
    atomic_fetch_add(&conns, 1);
    while (!done) {
        ssize_t n = weft_read(fd, buf + have, sizeof buf - have);
        if (n <= 0)
            break;
        have += (size_t)n;
        size_t pos = 0;
        int nout = 0;
        for (;;) {
            if (skip) {
                size_t k = skip < have - pos ? skip : have - pos;
                pos += k;
                skip -= k;
                if (skip)
                    break;
            }
            char *end = memmem(buf + pos, have - pos, "\r\n\r\n", 4);
            if (!end)
                break;
            size_t body;
            int close_after;
            header_info(buf + pos, end + 2, &body, &close_after);   /* with the last CRLF */
            pos = (size_t)(end + 4 - buf);
            skip = body;
            if (nout == PIPELINE_MAX) {   /* flush a long pipeline */
                if (respond(fd, nout) < 0)
                    goto out;
                nout = 0;
            }
            nout++;
            atomic_fetch_add_explicit(&requests, 1, memory_order_relaxed);
            if (close_after) {
                done = 1;
                break;
            }
        }
        if (nout && respond(fd, nout) < 0)
            break;
        memmove(buf, buf + pos, have - pos);
        have -= pos;
        if (have == sizeof buf)
            break;   /* a header larger than our buffer: not for this server */
    }
out:
    weft_close(fd);
    atomic_fetch_sub(&conns, 1);
    atomic_fetch_sub(&fibers, 1);
    return NULL;
}

static void *signals(void *arg)
{
    int sfd = (int)(intptr_t)arg;
    struct signalfd_siginfo si;
    while (weft_read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGUSR1) {
            printf("stats conns=%ld fibers=%ld requests=%ld\n", atomic_load(&conns),
                   atomic_load(&fibers), atomic_load(&requests));
            fflush(stdout);
            continue;
        }
        weft_close(lfd);   /* SIGINT/SIGTERM: the acceptor wakes with -EBADF */
        break;
    }
    weft_close(sfd);
    atomic_fetch_sub(&fibers, 1);
    return NULL;
}

static void *server(void *arg)
{
    struct example_opts *o = arg;
    int one = 1;
    if ((lfd = example_listen(o, 4096)) < 0)
        return (void *)1;
    atomic_fetch_add(&fibers, 1);
    weft_spawn(NULL, &(weft_attr){ .name = "signals", .flags = WEFT_DETACHED }, signals,
               o->arg);
    for (;;) {
        int fd = weft_accept(lfd, NULL, NULL);
        if (fd < 0)
            break;   /* closed by the signal fiber, or cancelled */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        atomic_fetch_add(&fibers, 1);
        weft_attr a = { .stack_size = 32 * 1024, .flags = WEFT_DETACHED };
        if (weft_spawn(NULL, &a, serve, (void *)(intptr_t)fd) < 0) {
            atomic_fetch_sub(&fibers, 1);
            weft_close(fd);
        }
    }
    printf("http_hello: stopping after %ld requests\n", atomic_load(&requests));
    return NULL;   /* weft_run cancels the connections still open */
}

int main(int argc, char **argv)
{
    struct example_opts o;
    if (example_args(&o, "http_hello", 8080, argc, argv))
        return 2;
    /* Blocked here, the signals are inherited by the workers and read
     * from the signalfd only. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    o.arg = (void *)(intptr_t)signalfd(-1, &set, SFD_CLOEXEC);
    return example_run(&o, server);
}
