/*
 * chat_server: a line-based chat room. Every line a client sends is
 * broadcast to every other client. Plain blocking code on fibers, the
 * shared state owned by one fiber and reached through channels (no locks):
 *
 *   reader fiber (one per client)  --hub channel-->  hub fiber
 *   hub fiber  --each client's out channel-->  writer fiber (one per client)
 *
 * The hub alone owns the list of clients. It never blocks on a slow client:
 * it offers each message with weft_chan_trysend and a client whose queue is
 * full misses that line (and is told so). A client leaving closes its out
 * channel; its writer drains it, closes the socket and frees the client.
 *
 *   chat_server [port] [bind-address]      default 7001 127.0.0.1
 *
 * Try it:  chat_server & (in two terminals) nc 127.0.0.1 7001
 */
#define _GNU_SOURCE
#include <weft.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define LINE_MAX_ 512
#define OUT_QUEUE 64

enum { JOIN, LEAVE, SAY };

struct client {
    int fd;
    unsigned id;
    weft_chan *out;            /* struct line, hub -> writer */
    struct client *next;       /* the hub's list */
};

struct line {                  /* what travels to a writer */
    size_t len;
    char text[LINE_MAX_ + 32];
};

struct event {                 /* what travels to the hub */
    int kind;
    struct client *c;
    struct line line;
};

static weft_chan *hub_chan;

static void *hub(void *arg)
{
    struct client *clients = NULL;
    struct event ev;
    while (weft_chan_recv(hub_chan, &ev) == 0) {
        struct line *l = &ev.line;
        if (ev.kind == JOIN) {
            ev.c->next = clients;
            clients = ev.c;
            l->len = (size_t)snprintf(l->text, sizeof l->text, "* guest%u joined\n", ev.c->id);
        } else if (ev.kind == LEAVE) {
            for (struct client **pp = &clients; *pp; pp = &(*pp)->next)
                if (*pp == ev.c) {
                    *pp = ev.c->next;
                    break;
                }
            weft_chan_close(ev.c->out);   /* its writer finishes and frees it */
            l->len = (size_t)snprintf(l->text, sizeof l->text, "* guest%u left\n", ev.c->id);
        }
        for (struct client *c = clients; c; c = c->next)
            if (c != ev.c && weft_chan_trysend(c->out, l) == -EAGAIN)
                fprintf(stderr, "chat_server: guest%u is slow: a line was dropped\n", c->id);
    }
    /* shutting down: release the writers */
    for (struct client *c = clients; c; c = c->next)
        weft_chan_close(c->out);
    return arg;
}

static void *writer(void *arg)
{
    struct client *c = arg;
    struct line l;
    int broken = 0;
    while (weft_chan_recv(c->out, &l) == 0) {
        for (size_t off = 0; !broken && off < l.len;) {
            ssize_t w = weft_write(c->fd, l.text + off, l.len - off);
            if (w < 0)
                broken = 1;   /* keep draining: the hub must never wait for us */
            else
                off += (size_t)w;
        }
    }
    weft_close(c->fd);
    weft_chan_free(c->out);
    free(c);
    return NULL;
}

/* The client's own fiber: reads lines and hands them to the hub. */
static void *reader(void *arg)
{
    struct client *c = arg;
    struct event ev = { .kind = JOIN, .c = c };
    weft_fiber *w;
    if (weft_spawn(&w, &(weft_attr){ .stack_size = 64 * 1024 }, writer, c) < 0) {
        weft_close(c->fd);
        weft_chan_free(c->out);
        free(c);
        return NULL;
    }
    weft_chan_send(hub_chan, &ev);
    char buf[LINE_MAX_];
    size_t have = 0;
    for (;;) {
        ssize_t n = weft_read(c->fd, buf + have, sizeof buf - have);
        if (n <= 0)
            break;
        have += (size_t)n;
        char *nl;
        while ((nl = memchr(buf, '\n', have)) || have == sizeof buf) {
            size_t len = nl ? (size_t)(nl - buf) + 1 : have;   /* an over-long line is cut */
            ev.kind = SAY;
            ev.line.len = (size_t)snprintf(ev.line.text, sizeof ev.line.text, "guest%u: %.*s%s",
                                           c->id, (int)len, buf, nl ? "" : "\n");
            if (weft_chan_send(hub_chan, &ev) < 0)
                goto out;
            memmove(buf, buf + len, have - len);
            have -= len;
        }
    }
out:
    ev.kind = LEAVE;
    weft_chan_send(hub_chan, &ev);   /* the hub closes c->out; the writer frees c */
    weft_join(w, NULL);
    return NULL;
}

struct opts { int port; const char *addr; };

static void *server(void *arg)
{
    struct opts *o = arg;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)o->port) };
    if (inet_pton(AF_INET, o->addr, &sa.sin_addr) != 1 ||
        bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 1024) < 0) {
        perror("chat_server: bind/listen");
        return (void *)1;
    }
    hub_chan = weft_chan_make(sizeof(struct event), 256);
    weft_fiber *h;
    weft_spawn(&h, &(weft_attr){ .name = "hub" }, hub, NULL);
    printf("chat_server: listening on %s:%d (io: %s)\n", o->addr, o->port, weft_io_backend());
    fflush(stdout);
    for (unsigned id = 1;; id++) {
        int fd = weft_accept(lfd, NULL, NULL);
        if (fd < 0)
            break;
        struct client *c = calloc(1, sizeof *c);
        if (!c || !(c->out = weft_chan_make(sizeof(struct line), OUT_QUEUE))) {
            free(c);
            weft_close(fd);
            continue;
        }
        c->fd = fd;
        c->id = id;
        if (weft_spawn(NULL, &(weft_attr){ .stack_size = 64 * 1024, .flags = WEFT_DETACHED },
                       reader, c) < 0) {
            weft_chan_free(c->out);
            free(c);
            weft_close(fd);
        }
    }
    weft_chan_close(hub_chan);
    weft_join(h, NULL);
    weft_close(lfd);
    return NULL;
}

int main(int argc, char **argv)
{
    struct opts o = { argc > 1 ? atoi(argv[1]) : 7001, argc > 2 ? argv[2] : "127.0.0.1" };
    if (o.port <= 0 || o.port > 65535) {
        fprintf(stderr, "usage: %s [port] [bind-address]\n", argv[0]);
        return 2;
    }
    struct rlimit rl;   /* one fd per client */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    void *ret = NULL;
    int r = weft_run(NULL, server, &o, &ret);
    if (r < 0) {
        fprintf(stderr, "chat_server: weft_run: %s\n", strerror(-r));
        return 1;
    }
    return ret ? 1 : 0;
}
