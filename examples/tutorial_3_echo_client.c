/*
 * Tutorial step 3 (docs/tutorial.md): clients for the echo server of step 2,
 * three at once, each on its own fiber.
 *
 *   tutorial_3_echo_client [port]      default 7007, on 127.0.0.1
 */
#include <weft.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct client {
    int port;
    int n;              /* which client */
    char reply[128];    /* what came back */
    int err;            /* 0, or the negative errno of the call that failed */
};

/* Connect, send one line, read until all of it has come back. */
static void *client(void *arg)
{
    struct client *c = arg;
    char line[64];
    int len = snprintf(line, sizeof line, "hello from client %d\n", c->n);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        c->err = -1;
        return NULL;
    }
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)c->port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int r = weft_connect(fd, (struct sockaddr *)&sa, sizeof sa);   /* parks until connected */
    if (r < 0) {
        c->err = r;
        goto out;
    }
    ssize_t w = weft_write(fd, line, (size_t)len);
    if (w < 0) {
        c->err = (int)w;
        goto out;
    }
    /* TCP is a stream: the echo may come back in more than one piece. */
    size_t got = 0;
    while (got < (size_t)len) {
        ssize_t n = weft_read(fd, c->reply + got, (size_t)len - got);
        if (n <= 0) {
            c->err = n < 0 ? (int)n : -ECONNRESET;
            goto out;
        }
        got += (size_t)n;
    }
    c->reply[got] = 0;
out:
    weft_close(fd);
    return NULL;
}

static void *main_fiber(void *arg)
{
    int port = *(int *)arg;
    struct client c[3];
    weft_fiber *f[3];
    for (int i = 0; i < 3; i++) {
        c[i] = (struct client){ .port = port, .n = i + 1 };
        if (weft_spawn(&f[i], NULL, client, &c[i]) < 0)
            return (void *)1;
    }
    int failed = 0;
    for (int i = 0; i < 3; i++) {
        weft_join(f[i], NULL);
        if (c[i].err) {
            printf("client %d: %s\n", c[i].n, strerror(-c[i].err));
            failed = 1;
        } else {
            printf("client %d got back: %s", c[i].n, c[i].reply);
        }
    }
    return (void *)(intptr_t)failed;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 7007;
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "usage: %s [port]\n", argv[0]);
        return 2;
    }
    void *ret;
    int r = weft_run(NULL, main_fiber, &port, &ret);
    if (r < 0) {
        fprintf(stderr, "weft_run: %s\n", strerror(-r));
        return 1;
    }
    return ret ? 1 : 0;
}
