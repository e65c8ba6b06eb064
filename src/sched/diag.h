/*
 * Private to src/sched: the diagnostics layer (diag.c, diag_posix.c,
 * trace.c, watchdog.c) and the few hooks the scheduler calls into it.
 *
 * The scheduler's side is deliberately thin: one pair of calls around the
 * life of a runtime (weft__diag_start/stop), one on each worker thread
 * (weft__diag_thread_init), the trace hooks guarded by one predictable
 * branch on weft__trace_on, and the watchdog's wake-up when a worker leaves
 * the idle list. Everything else reads the scheduler's records from outside.
 */
#ifndef WEFT_DIAG_H
#define WEFT_DIAG_H

#include "worker.h"

/* diag.c: once the workers exist and the main fiber is queued, and after
 * every worker has stopped (before the worker records are freed). */
void weft__diag_start(const weft_config *cfg);
void weft__diag_stop(void);

/* Hold f still: succeeds (1) only if f is not on a CPU, and keeps any
 * worker from resuming it until weft__fiber_release. See diag.c. */
int  weft__fiber_hold(weft_fiber *f);
void weft__fiber_release(weft_fiber *f);

/* f's id and name, read so that a record being reused by a new spawn at
 * the same moment gives old or new values rather than a data race. The
 * caller that cannot hold f checks afterwards, by its own sequence, that
 * f was still the fiber it meant. See diag.c. */
void weft__fiber_ident(const weft_fiber *f, uint64_t *id, char name[WEFT_NAME_MAX]);

/* Append text to a growing buffer (dump and watchdog reports are built in
 * memory, then written once: never block on an fd with locks held). */
struct weft__text { char *buf; size_t len, cap; int oom; };
void weft__text_printf(struct weft__text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void weft__text_backtrace(struct weft__text *t, void *const *pcs, int n);
void weft__text_write(struct weft__text *t, int fd);   /* writes and frees */

/* diag_posix.c (diag_win32.c): the OS side. */
void weft__diag_thread_init(weft__worker *w);          /* on each worker thread */
int  weft__diag_os_start(void);                        /* dump signal, crash hooks */
void weft__diag_os_stop(void);
/* POSIX, in the child of a fork(): the dump thread is gone; restore the
 * signals' dispositions without joining it. */
void weft__diag_os_atfork_child(void);
/* Backtrace of whatever fiber runs on worker w right now, taken by w's own
 * thread (a signal on POSIX). Returns the count, 0 if f no longer runs
 * there, or -errno (-ETIMEDOUT if the thread did not answer). */
int  weft__diag_capture_running(weft__worker *w, weft_fiber *f, void **pcs, int max);
/* The name of the system call w's thread is blocked in if a signal would
 * make it fail with EINTR even under SA_RESTART (poll, nanosleep, ...),
 * else NULL. The watchdog does not signal such a thread. */
const char *weft__diag_blocked_call(weft__worker *w);

/* CPU time used by w's thread (ns), and whether it is runnable but not
 * running (preempted), from the OS; -1 when unknown. The watchdog uses them
 * to tell a hog from a worker the OS did not let run. */
int64_t weft__diag_thread_cpu(weft__worker *w);
int     weft__diag_thread_preempted(weft__worker *w);

/* trace.c: WEFT_TRACE=file.json */
extern int weft__trace_on;
int  weft__trace_start(void);
void weft__trace_stop(void);
void weft__trace_atfork_child(void);
/* w is about to switch from prev to next (either may be NULL: the loop);
 * w->post says why prev stops. */
void weft__trace_switch(weft__worker *w, weft_fiber *prev, weft_fiber *next);
void weft__trace_steal(weft__worker *w, weft__worker *victim, uint32_t n);

/* watchdog.c */
extern _Atomic uint32_t weft__wd_sleeping;
void weft__watchdog_kick(void);    /* a worker left the idle list */
int  weft__watchdog_start(const weft_config *cfg);
void weft__watchdog_stop(void);
void weft__watchdog_atfork_child(void);
extern _Atomic uint64_t weft__wd_reports, weft__wd_moved;

/* deadlock.c: WEFT_DEADLOCK=1. The last worker to go idle, with no timer
 * armed anywhere, calls weft__deadlock_check when weft__deadlock_on. */
extern int weft__deadlock_on;
void weft__deadlock_start(void);
void weft__deadlock_check(void);

/* sched.c: queue fibers on the global queue and wake a worker for them. */
void weft__global_put(weft_fiber *const *fs, uint32_t n);

#endif
