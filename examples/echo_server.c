/*
 * echo_server: every byte a client sends comes back. One fiber per
 * connection, written as plain blocking code.
 *
 *   echo_server [port] [bind-address]      default 7000 127.0.0.1
 *
 * Try it:  echo_server 7000 & printf 'hello\n' | nc -q1 127.0.0.1 7000
 */
#include <weft.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <string.h>

static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[16384];
    for (;;) {
        ssize_t n = weft_read(fd, buf, sizeof buf);
        if (n <= 0)
            break;   /* 0: the client is done; < 0: an error, or we are shutting down */
        for (ssize_t off = 0; off < n;) {
            ssize_t w = weft_write(fd, buf + off, (size_t)(n - off));
            if (w < 0)
                goto out;
            off += w;
        }
    }
out:
    weft_close(fd);
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
        bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 4096) < 0) {
        perror("echo_server: bind/listen");
        return (void *)1;
    }
    printf("echo_server: listening on %s:%d (io: %s)\n", o->addr, o->port, weft_io_backend());
    fflush(stdout);
    for (;;) {
        int fd = weft_accept(lfd, NULL, NULL);
        if (fd < 0) {
            fprintf(stderr, "echo_server: accept: %s\n", strerror(-fd));
            break;
        }
        weft_attr a = { .stack_size = 64 * 1024, .flags = WEFT_DETACHED };
        if (weft_spawn(NULL, &a, serve, (void *)(intptr_t)fd) < 0)
            weft_close(fd);
    }
    weft_close(lfd);
    return NULL;
}

int main(int argc, char **argv)
{
    struct opts o = { argc > 1 ? atoi(argv[1]) : 7000, argc > 2 ? argv[2] : "127.0.0.1" };
    if (o.port <= 0 || o.port > 65535) {
        fprintf(stderr, "usage: %s [port] [bind-address]\n", argv[0]);
        return 2;
    }
    /* one fd per connection: allow as many as the hard limit does */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    void *ret = NULL;
    int r = weft_run(NULL, server, &o, &ret);
    if (r < 0) {
        fprintf(stderr, "echo_server: weft_run: %s\n", strerror(-r));
        return 1;
    }
    return ret ? 1 : 0;
}
