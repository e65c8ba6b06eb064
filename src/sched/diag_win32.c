/*
 * The Windows side of the diagnostics layer (see diag_posix.c for what it
 * does on POSIX): not written yet. A dump on a console event, crash reports
 * from a vectored exception handler and SuspendThread/GetThreadContext for
 * the watchdog's backtrace would go here. Until then: the dump, the stats,
 * the trace and the watchdog's reports (without a backtrace) work, driven
 * from diag.c, trace.c and watchdog.c.
 */
#include "diag.h"

#include <errno.h>

void weft__diag_thread_init(weft__worker *w) { (void)w; }
int  weft__diag_os_start(void) { return 0; }
void weft__diag_os_stop(void) {}

int weft__diag_capture_running(weft__worker *w, weft_fiber *f, void **pcs, int max)
{
    (void)w; (void)f; (void)pcs; (void)max;
    return -ENOTSUP;
}

const char *weft__diag_blocked_call(weft__worker *w) { (void)w; return NULL; }
int64_t weft__diag_thread_cpu(weft__worker *w) { (void)w; return -1; }
int     weft__diag_thread_preempted(weft__worker *w) { (void)w; return -1; }
