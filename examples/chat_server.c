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
#include "example.h"

#include <errno.h>

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

static void *server(void *arg)
{
    int lfd = example_listen(arg, 1024);
    if (lfd < 0)
        return (void *)1;
    hub_chan = weft_chan_make(sizeof(struct event), 256);
    weft_fiber *h;
    weft_spawn(&h, &(weft_attr){ .name = "hub" }, hub, NULL);
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
    struct example_opts o;
    return example_args(&o, "chat_server", 7001, argc, argv) ?: example_run(&o, server);
}
