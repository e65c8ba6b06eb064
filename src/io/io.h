/*
 * Internal interface between the runtime and the I/O layer (src/io).
 * The I/O layer depends on the scheduler (sched.h), never the reverse:
 * it hands the scheduler a poller (struct weft__poller) when the runtime
 * starts, and takes it back when the runtime stops.
 */
#ifndef WEFT_IO_H
#define WEFT_IO_H

#include "../sched/sched.h"

/* Choose and start a backend for this runtime (cfg->io, env WEFT_IO).
 * *out receives the poller the scheduler's idle workers wait in, or NULL. */
int  weft__io_start(const weft_config *cfg, const struct weft__poller **out);
/* After every fiber has finished and every worker has stopped. */
void weft__io_stop(void);

#endif
