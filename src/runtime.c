/*
 * weft_run: the one place that ties the layers together. It starts the I/O
 * layer (which hands the scheduler its poller), runs the scheduler until the
 * main fiber and every other fiber are done, and stops the I/O layer again.
 * On POSIX it also makes the child of a fork() able to start a runtime of
 * its own (fork_child below).
 */
#include "io/io.h"
#include "sched/diag.h"
#include "sched/sched.h"
#include "sched/worker.h"

#include <errno.h>

#ifndef _WIN32
#include <pthread.h>

/* fork() while a runtime runs (from a fiber, or from a plain thread) gives
 * a child with one thread and a copy of a runtime whose workers, pool and
 * diagnostics threads are not there: weft_run would say -EBUSY forever and
 * the copied records can be mid-change, their locks held. Each layer
 * forgets its part, frees nothing (the forking thread may stand on a
 * fiber's stack; the parent's threads were using the rest) and closes only
 * the child's copies of the runtime's fds. The child is left with no
 * runtime, and the forking thread is a plain thread: see weft_run in
 * weft.h for what the child may do. */
static void fork_child(void)
{
    if (atomic_load_explicit(&weft__rt.phase, memory_order_relaxed) == WEFT_RT_STOPPED)
        return;
    weft__io_atfork_child(weft__cur_worker() != NULL);   /* before the worker is forgotten */
    weft__diag_os_atfork_child();
    weft__crash_atfork_child();
    weft__sched_atfork_child();
    weft__stack_atfork_child();
}

static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void fork_register(void) { pthread_atfork(NULL, NULL, fork_child); }
#endif

int weft_run(const weft_config *cfg, void *(*main_fn)(void *), void *arg, void **ret)
{
    if (!main_fn || (cfg && cfg->flags))
        return -EINVAL;
    if (weft__cur_fiber())
        return -EBUSY;
#ifndef _WIN32
    pthread_once(&fork_once, fork_register);
#endif
    /* The phases and the gates of plain threads: START-UP AND SHUTDOWN in
     * src/sched/sched.c. */
    uint32_t stopped = WEFT_RT_STOPPED;
    if (!atomic_compare_exchange_strong(&weft__rt.phase, &stopped, WEFT_RT_STARTING))
        return -EBUSY;
    const struct weft__poller *poller = NULL;
    int err = weft__io_start(cfg, &poller);
    if (err == 0) {
        err = weft__sched_run(cfg, poller, main_fn, arg, ret);
        weft__io_stop();
    }
    atomic_store(&weft__rt.phase, WEFT_RT_STOPPED);
    return err;
}
