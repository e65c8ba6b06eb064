/*
 * What the example servers share, kept out of their way: the command line
 * ([port] [bind-address]), a listening socket, room for one fd per
 * connection, and weft_run with its error reported. Not part of weft.
 */
#ifndef WEFT_EXAMPLE_H
#define WEFT_EXAMPLE_H

#include <weft.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

struct example_opts {
    const char *name;
    int port;
    const char *addr;
    void *arg;           /* the server's own */
};

/* Parse [port] [bind-address]; 0, or 2 after printing the usage. */
static inline int example_args(struct example_opts *o, const char *name, int port, int argc, char **argv)
{
    o->name = name;
    o->port = argc > 1 ? atoi(argv[1]) : port;
    o->addr = argc > 2 ? argv[2] : "127.0.0.1";
    if (o->port <= 0 || o->port > 65535 || argc > 3) {
        fprintf(stderr, "usage: %s [port] [bind-address]   (default %d 127.0.0.1)\n", argv[0], port);
        return 2;
    }
    return 0;
}

/* One fd per connection: allow as many as the hard limit does. */
static inline void example_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* A listening TCP socket on o->addr:o->port, announced on stdout; -1 on error. */
static inline int example_listen(const struct example_opts *o, int backlog)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)o->port) };
    if (fd < 0 || inet_pton(AF_INET, o->addr, &sa.sin_addr) != 1 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, backlog) < 0) {
        fprintf(stderr, "%s: %s:%d: ", o->name, o->addr, o->port);
        perror("bind/listen");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    printf("%s: listening on %s:%d (io: %s)\n", o->name, o->addr, o->port, weft_io_backend());
    fflush(stdout);
    return fd;
}

/* weft_run(server, o): the process's exit status. */
static inline int example_run(struct example_opts *o, void *(*server)(void *))
{
    example_raise_nofile();
    void *ret = NULL;
    int r = weft_run(NULL, server, o, &ret);
    if (r < 0) {
        fprintf(stderr, "%s: weft_run: %s\n", o->name, strerror(-r));
        return 1;
    }
    return ret ? 1 : 0;
}

#endif
