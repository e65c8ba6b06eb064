/*
 * echo_server: every byte a client sends comes back. One fiber per
 * connection, written as plain blocking code.
 *
 *   echo_server [port] [bind-address]      default 7000 127.0.0.1
 *
 * Try it:  echo_server 7000 & printf 'hello\n' | nc -q1 127.0.0.1 7000
 */
#include "example.h"

/* weft_socket: an int on POSIX, a SOCKET on Windows; the same code serves both. */
static void *serve(void *arg)
{
    weft_socket fd = (weft_socket)(uintptr_t)arg;
    char buf[16384];
    for (;;) {
        ssize_t n = weft_recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;   /* 0: the client is done; < 0: an error, or we are shutting down */
        for (ssize_t off = 0; off < n;) {
            ssize_t w = weft_send(fd, buf + off, (size_t)(n - off), 0);
            if (w < 0)
                goto out;
            off += w;
        }
    }
out:
    weft_close((int)fd);
    return NULL;
}

static void *server(void *arg)
{
    weft_socket lfd = example_listen(arg, 4096);
    if (lfd == (weft_socket)-1)
        return (void *)1;
    for (;;) {
        weft_socket fd = weft_accept(lfd, NULL, NULL);
        if ((intptr_t)fd < 0) {   /* a negative errno, in the socket type */
            fprintf(stderr, "echo_server: accept: %s\n", strerror((int)-(intptr_t)fd));
            break;
        }
        weft_attr a = { .stack_size = 64 * 1024, .flags = WEFT_DETACHED };
        if (weft_spawn(NULL, &a, serve, (void *)(uintptr_t)fd) < 0)
            weft_close((int)fd);
    }
    weft_close((int)lfd);
    return NULL;
}

int main(int argc, char **argv)
{
    struct example_opts o;
    return example_args(&o, "echo_server", 7000, argc, argv) ?: example_run(&o, server);
}
