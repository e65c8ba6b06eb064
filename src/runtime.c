/*
 * weft_run: the one place that ties the layers together. It starts the I/O
 * layer (which hands the scheduler its poller), runs the scheduler until the
 * main fiber and every other fiber are done, and stops the I/O layer again.
 */
#include "io/io.h"
#include "sched/sched.h"
#include "sched/worker.h"

#include <errno.h>

int weft_run(const weft_config *cfg, void *(*main_fn)(void *), void *arg, void **ret)
{
    if (!main_fn || (cfg && cfg->flags))
        return -EINVAL;
    if (weft__cur_fiber())
        return -EBUSY;
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
