/*
 * Tutorial step 2 (docs/tutorial.md): an echo server, one fiber per
 * connection, written as plain blocking code.
 *
 *   tutorial_2_echo_server [port]      default 7007, on 127.0.0.1
 *
 * Try it:  tutorial_2_echo_server & printf 'hi\n' | nc -q1 127.0.0.1 7007
 */
#include <weft.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* One connection: read what comes, write it back, until the client is done. */
static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[4096];
    size_t total = 0;
    ssize_t n;
    while ((n = weft_read(fd, buf, sizeof buf)) > 0) {   /* parks until data comes */
        for (ssize_t off = 0; off < n;) {
            ssize_t w = weft_write(fd, buf + off, (size_t)(n - off));
            if (w < 0)
                goto out;
            off += w;
        }
        total += (size_t)n;
    }
out:
    printf("fiber %llu: connection closed after %zu bytes\n",
           (unsigned long long)weft_id(weft_self()), total);
    fflush(stdout);
    weft_close(fd);   /* not close(2): weft keeps state per fd */
    return NULL;
}

static void *server(void *arg)
{
    int port = *(int *)arg;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 128) < 0) {
        perror("bind/listen");
        return (void *)1;
    }
    printf("listening on 127.0.0.1:%d (io: %s)\n", port, weft_io_backend());
    fflush(stdout);
    for (;;) {
        struct sockaddr_in peer;
        socklen_t len = sizeof peer;
        int fd = weft_accept(lfd, (struct sockaddr *)&peer, &len);   /* parks until a client comes */
        if (fd < 0) {
            fprintf(stderr, "weft_accept: %s\n", strerror(-fd));
            break;
        }
        printf("accepted a connection from 127.0.0.1:%u\n", ntohs(peer.sin_port));
        fflush(stdout);
        weft_attr a = { .stack_size = 64 * 1024, .flags = WEFT_DETACHED };
        if (weft_spawn(NULL, &a, serve, (void *)(intptr_t)fd) < 0)
            weft_close(fd);
    }
    weft_close(lfd);
    return NULL;
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 7007;
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "usage: %s [port]\n", argv[0]);
        return 2;
    }
    void *ret;
    int r = weft_run(NULL, server, &port, &ret);
    if (r < 0) {
        fprintf(stderr, "weft_run: %s\n", strerror(-r));
        return 1;
    }
    return ret ? 1 : 0;
}
