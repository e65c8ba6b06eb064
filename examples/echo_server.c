/*
 * echo_server: every byte a client sends comes back. One fiber per
 * connection, written as plain blocking code.
 *
 *   echo_server [port] [bind-address]      default 7000 127.0.0.1
 *
 * Try it:  echo_server 7000 & printf 'hello\n' | nc -q1 127.0.0.1 7000
 */
#include "example.h"

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

static void *server(void *arg)
{
    int lfd = example_listen(arg, 4096);
    if (lfd < 0)
        return (void *)1;
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
    struct example_opts o;
    return example_args(&o, "echo_server", 7000, argc, argv) ?: example_run(&o, server);
}
