/*
 * The I/O layer's entry points for the runtime: choosing a backend when
 * weft_run starts, handing the scheduler its poller, and tearing it all
 * down when weft_run ends.
 *
 * Selection: weft_config.io ("epoll", "uring", "iocp"), overridden by env
 * WEFT_IO. Without either, the fastest backend that works, in the order of
 * `backends` below: epoll first, then io_uring. Measured with `make bench`
 * on an idle machine (wrk, 100 keep-alive connections, examples/http_hello):
 * 111,600 req/s on epoll against 67,400 on io_uring, whose single ring
 * costs one io_uring_enter per park under its submission lock; echo at
 * 1,000 connections 87,300 against 62,000 msg/s. io_uring remains one name
 * away (WEFT_IO=uring), and falls back to nothing: a backend asked for by
 * name that fails (EPERM under seccomp or kernel.io_uring_disabled, ENOSYS
 * on old kernels) is an error, weft_run returns its -errno.
 */
#include "io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifndef _WIN32
#include <signal.h>
#endif
#if defined(__has_include)
#  if __has_include(<valgrind/valgrind.h>)
#    include <valgrind/valgrind.h>
#  endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

const struct weft__io_backend *_Atomic weft__io;

static struct weft__poller poller;

#ifdef _WIN32
static const struct weft__io_backend *const backends[] = { &weft__io_iocp, NULL };
#else
/* In order of preference. */
static const struct weft__io_backend *const backends[] = { &weft__io_epoll, &weft__io_uring, NULL };
static sigset_t saved_mask;
#endif

static int start_one(const struct weft__io_backend *b)
{
    int err = b->init();
    if (err < 0)
        return err;
    weft__io = b;
    return 0;
}

/* The fd of a parked fiber's wait object: every FD_READ, FD_WRITE and IO
 * wait passes its weft__io_op (epoll.c, uring.c). */
static int op_fd(const void *wobj)
{
    return ((const weft__io_op *)wobj)->fd;
}

int weft__io_start(const weft_config *cfg, const struct weft__poller **out)
{
    *out = NULL;
    const char *want = getenv("WEFT_IO");
    if (!want || !*want)
        want = cfg ? cfg->io : NULL;
    int err = -ENOSYS;
    if (want && *want) {
        const struct weft__io_backend *b = NULL;
        for (int i = 0; backends[i]; i++)
            if (strcmp(backends[i]->name, want) == 0)
                b = backends[i];
        if (!b)
            return -EINVAL;   /* unknown, or not built on this system */
        err = start_one(b);
    } else {
        for (int i = 0; backends[i] && err < 0; i++) {
            /* valgrind 3.19 sets up a ring but loses the completion of an
             * async cancel (the fiber waits for it forever): not by default */
            if (RUNNING_ON_VALGRIND && strcmp(backends[i]->name, "uring") == 0)
                continue;
            err = start_one(backends[i]);
        }
    }
    if (err < 0)
        return err;
    weft__wait_fd = op_fd;   /* weft_dump names the fd a fiber waits on */
#ifndef _WIN32
    /* Writes to a pipe whose reader is gone raise SIGPIPE, which would kill
     * the process by default. Sockets avoid it with MSG_NOSIGNAL; pipes and
     * ttys have no such flag, so SIGPIPE is blocked on every worker: the
     * workers are created by this thread and inherit its mask. A write that
     * gets EPIPE consumes the signal it queued (weft__io_sigpipe_drain), and
     * weft__io_stop drains this thread before restoring its mask. */
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe, &saved_mask);
#endif
    poller.name = weft__io->name;
    poller.poll = weft__io->poll;
    poller.wake = weft__io->wake;
    *out = &poller;
    return 0;
}

void weft__fd_table_free(void);

void weft__io_stop(void)
{
    if (!weft__io)
        return;
    weft__pool_stop();
    weft__io->fini();
    weft__io = NULL;
    weft__fd_table_free();
#ifndef _WIN32
    weft__io_sigpipe_drain();
    pthread_sigmask(SIG_SETMASK, &saved_mask, NULL);
#endif
}

void weft__io_atfork_child(bool was_worker)
{
    const struct weft__io_backend *b = weft__io;
    if (b && b->fork_child)
        b->fork_child();
    weft__io = NULL;
    weft__fd_atfork_child();
    weft__pool_atfork_child();
#ifndef _WIN32
    /* A worker's thread had SIGPIPE blocked for the runtime's sake; the
     * child's one thread gets back the mask weft_run found. */
    if (was_worker)
        pthread_sigmask(SIG_SETMASK, &saved_mask, NULL);
#else
    (void)was_worker;
#endif
}

const char *weft_io_backend(void)
{
    const struct weft__io_backend *b = weft__io;
    return b ? b->name : "none";
}
