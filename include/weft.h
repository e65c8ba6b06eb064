/*
 * weft — stackful fibers on an M:N work-stealing scheduler.
 *
 * Write plain blocking code (read, write, accept, sleep, lock); weft runs it
 * on a few OS threads, parking each fiber on the poller while it waits.
 *
 * Conventions of this header:
 *   - every call returns >= 0 on success and a negative errno value on failure
 *     (-EINVAL, -ECANCELED, -ETIMEDOUT, ...); nothing reports through errno,
 *     because a fiber may resume on another OS thread;
 *   - bad arguments give -EINVAL, never a crash;
 *   - synchronisation objects live in caller-owned storage and have static
 *     initialisers, like pthreads.
 *
 * Not allowed:
 *   - calling any weft function from a signal handler. None is
 *     async-signal-safe: they take locks and read the calling thread's
 *     current fiber, so a handler that interrupted the runtime deadlocks on
 *     a lock its own thread holds, or aborts on a broken invariant (such as
 *     "g != self" in the scheduler). Take signals in a fiber instead: block
 *     them before weft_run (the workers inherit the mask) and read a
 *     signalfd with weft_read, as examples/http_hello.c does; or let the
 *     handler write a byte to a pipe that a fiber reads. For a dump on a
 *     signal, WEFT_DUMP_SIGNAL does it safely (see weft_dump).
 *
 * CONTEXTS: what each call does from where it is called. "fiber": from any
 * fiber; "thread": from a plain thread (not a fiber) while weft_run runs;
 * "outside": while no weft_run is active. While weft_run is starting or
 * stopping, a call from a plain thread gives the thread result or the
 * outside result, never a crash or a hang (weft_spawn: 0 and the fiber
 * runs, or a negative errno). test/test_contexts_posix.c checks every
 * cell, with bad input too (docs/testing.md).
 *
 *   call                          fiber          thread             outside
 *   weft_run                      -EBUSY         -EBUSY             runs
 *   weft_spawn                    0              0 (global queue)   -EPERM
 *   weft_join                     0 / waits      -EPERM             -EPERM
 *   weft_detach, weft_cancel      0              0                  -EINVAL (no fiber)
 *   weft_cancelled                0 or 1         0                  0
 *   weft_yield                    yields         sched_yield        sched_yield
 *   weft_self                     the fiber      NULL               NULL
 *   weft_id, weft_name (NULL)     0, ""          0, ""              0, ""
 *   weft_worker_id                >= 0           -1                 -1
 *   weft_now                      ns             ns                 ns
 *   weft_sleep                    parks          nanosleep          nanosleep
 *   weft_deadline                 old deadline   -EPERM             -EPERM
 *   weft_deadline_set/_get        0              -EPERM             -EPERM
 *   weft_key_create/_delete       0              0                  0
 *   weft_setspecific              0              -EPERM             -EPERM
 *   weft_getspecific              the value      NULL               NULL
 *   weft_*_init/_destroy, weft_cond_signal/_broadcast, weft_sem_post,
 *   weft_sem_trywait, weft_wg_add/_done, weft_chan_make/_new/_free/_close/_len/_cap,
 *   weft_chan_trysend/_tryrecv, weft_tryselect
 *                                 works          works, wakes fibers  works
 *   weft_mutex_lock/_trylock/_unlock, weft_cond_wait, weft_sem_wait,
 *   weft_wg_wait, weft_chan_send/_recv, weft_select
 *                                 parks          -EPERM             -EPERM
 *   I/O calls (weft_read ... weft_wait_fd, weft_close)
 *                                 parks          the syscall's way  the syscall's way
 *   weft_blocking                 on the pool    fn in place        fn in place
 *   weft_getaddrinfo, _resolve    on the pool    in place           in place
 *   weft_io_backend               its name       its name           "none"
 *   weft_backtrace (NULL)         own stack      own stack          own stack
 *   weft_backtrace_print          works          works              works
 *   weft_dump, weft_stats         0              0                  -EPERM
 *
 * Bad input is an error in every context, never a crash: -EINVAL for a
 * NULL pointer, a bad size or flag, -EBADF for a negative or closed fd.
 * Two calls say first that they cannot run where they are called, whatever
 * their arguments: weft_spawn outside weft_run and weft_select (its cases)
 * from a plain thread are -EPERM.
 */
#ifndef WEFT_H
#define WEFT_H

#include <stddef.h>
#include <stdint.h>

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#include <sys/types.h>   /* mingw-w64 provides ssize_t */
/* On Windows the socket calls take a SOCKET. */
typedef SOCKET weft_socket;
struct iovec;
#else
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netdb.h>
#include <poll.h>          /* POLLIN, POLLOUT... for weft_wait_fd */
typedef int weft_socket;
#endif
/* getaddrinfo's hints and results. Declared here so the prototypes below
 * name the same type in a strict ISO C build, where <netdb.h> defines it
 * only with _POSIX_C_SOURCE (which a caller of weft_resolve sets anyway). */
struct addrinfo;

#ifdef __cplusplus
extern "C" {
#endif

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 1
#define WEFT_VERSION_PATCH 0
#define WEFT_VERSION_STRING "0.1.0"

#if defined(_WIN32)
#  if defined(WEFT_BUILDING)
#    define WEFT_API __declspec(dllexport)
#  else
#    define WEFT_API
#  endif
#else
#  define WEFT_API __attribute__((visibility("default")))
#endif

/* ---------------------------------------------------------------- runtime */

typedef struct weft_config {
    unsigned workers;      /* 0: one per online CPU; env WEFT_WORKERS overrides */
    size_t stack_size;     /* default stack of a fiber; 0: 256 KiB */
    const char *io;        /* "epoll", "uring", "iocp" or NULL for the best that works;
                              env WEFT_IO overrides */
    unsigned watchdog_ms;  /* report a fiber holding its worker longer than this;
                              0: default (100 ms); env WEFT_WATCHDOG_MS; -1u: off.
                              Its backtrace is taken with SIGURG to the worker's
                              thread (SA_RESTART): a raw blocking read, write,
                              accept, connect... the fiber is stuck in restarts.
                              Calls that fail with EINTR after any handler (poll,
                              ppoll, select, pselect, epoll_wait, epoll_pwait,
                              nanosleep, clock_nanosleep, sigtimedwait, sigsuspend,
                              pause, io_getevents, io_uring_enter, msgrcv, msgsnd,
                              semop, semtimedop) are seen in /proc and not
                              signalled. Still EINTR: a socket call with
                              SO_RCVTIMEO or SO_SNDTIMEO set, and any of those
                              entered in the microseconds between the look and
                              the signal. See docs/debugging.md. */
    unsigned flags;        /* reserved, must be 0 */
} weft_config;

/* Run main_fn(arg) as the first fiber. Returns after main_fn returned and
 * every other fiber finished: fibers still alive then are cancelled and
 * joined. No thread, fiber, stack or fd of the runtime outlives the call; it
 * may be called again afterwards. From inside a fiber, or while another
 * runtime is running (or starting, or stopping): -EBUSY. *ret receives
 * main_fn's result.
 *
 * Plain threads (not fibers) may call weft_spawn, weft_stats and weft_dump
 * at any moment, also while weft_run starts or ends: each call is either
 * admitted to a runtime that cannot end under it, or refused with -EPERM
 * (spawns: from the moment main_fn returns; stats and dump: once every
 * fiber is gone). See docs/scheduler.md, "Start-up and shutdown".
 *
 * fork(): the child has one thread, the caller's, and no runtime, even if
 * the parent had one running (its workers, pool and diagnostics threads are
 * not in the child; what they held is leaked there, not freed). The child
 * may call weft_run again, including from the code of a fiber that called
 * fork(), which in the child runs as a plain thread: weft_self() is NULL,
 * the weft calls behave as from a plain thread outside any runtime, and
 * that function must not return (end the child with _exit or exec, as after
 * any fork of a threaded program). Fiber handles, and sync objects and
 * channels that the parent's fibers were waiting on, are the parent's: do
 * not use them in the child. fds that the parent's runtime used are as
 * fork() shares them (O_NONBLOCK set by weft stays set on both sides). */
WEFT_API int weft_run(const weft_config *cfg, void *(*main_fn)(void *), void *arg, void **ret);

/* ----------------------------------------------------------------- fibers */

typedef struct weft_fiber weft_fiber;

typedef struct weft_attr {
    size_t stack_size;     /* 0: the runtime's default; 16 KiB .. 1 GiB */
    const char *name;      /* copied; at most 31 bytes are kept */
    unsigned flags;        /* WEFT_DETACHED, WEFT_PINNED */
} weft_attr;

enum {
    WEFT_DETACHED = 1u << 0,   /* no join; resources go when it returns */
    WEFT_PINNED   = 1u << 1    /* never migrates from the worker that spawned it */
};

/* A weft_fiber* is a handle, not an address to dereference: one fiber has
 * one handle value for its whole life (weft_self returns the one spawn gave
 * out), and two fibers never share one. A handle goes stale when its fiber
 * is joined, or, detached, returns; and when its runtime's weft_run
 * returns. A stale handle is safe to pass: weft_join, weft_detach and
 * weft_cancel answer -EINVAL, weft_id 0, weft_name "", weft_backtrace
 * -ESRCH, and none of them reaches a fiber spawned later. (Strictly: unless
 * 2^22 fibers reused its memory in between, on 64-bit machines.) */

/* pthread_create's shape. f may be NULL only with WEFT_DETACHED.
 * -EPERM outside a running runtime, -EINVAL on a bad attr, -ENOMEM.
 * From a plain thread: accepted only while the runtime runs main_fn (such a
 * fiber runs, and is cancelled and joined with the others before weft_run
 * returns, like any fiber), -EPERM while weft_run starts up and once main_fn
 * has returned. From a fiber it is never refused for that reason. Never from
 * a signal handler (see the top). */
WEFT_API int  weft_spawn(weft_fiber **f, const weft_attr *attr, void *(*fn)(void *), void *arg);
/* -EDEADLK on self, -EINVAL if detached or already joined (stale), -EPERM
 * outside a fiber, -ECANCELED if the caller was cancelled (f stays
 * joinable), -ETIMEDOUT past the deadline. */
WEFT_API int  weft_join(weft_fiber *f, void **ret);
/* -EINVAL if already detached, or joined (stale). A returned fiber is freed now. */
WEFT_API int  weft_detach(weft_fiber *f);
/* Its current or next blocking call returns -ECANCELED (sticky). 0 for a
 * returned fiber not yet joined; -EINVAL once the handle is stale. From any
 * thread, never from a signal handler (see the top). */
WEFT_API int  weft_cancel(weft_fiber *f);
WEFT_API int  weft_cancelled(void);       /* 1 if the calling fiber was cancelled */
WEFT_API void weft_yield(void);
WEFT_API weft_fiber *weft_self(void);     /* NULL outside a fiber */
WEFT_API uint64_t    weft_id(const weft_fiber *f);     /* 0 for NULL or stale */
/* "" when unnamed, NULL or stale; the string lives as long as the handle. */
WEFT_API const char *weft_name(const weft_fiber *f);
WEFT_API int         weft_worker_id(void);             /* worker running the caller, -1 outside */

WEFT_API uint64_t weft_now(void);                 /* monotonic ns */
WEFT_API int      weft_sleep(uint64_t ns);        /* 0, -ECANCELED, -ETIMEDOUT (deadline) */
/* Set this fiber's absolute deadline in weft_now() ns (-1: none); returns the
 * old one. Every blocking call past it returns -ETIMEDOUT. Any negative
 * abs_ns means none. Outside a fiber it returns -EPERM, which is -1 and so
 * reads as "none": code that must tell the two apart uses weft_deadline_set. */
WEFT_API int64_t  weft_deadline(int64_t abs_ns);
/* weft_deadline with an error it can report: set the calling fiber's
 * deadline to abs_ns (-1: none) and store the previous one (-1: none) in
 * *old unless old is NULL. 0; -EINVAL for abs_ns below -1 (nothing
 * changed); -EPERM outside a fiber. weft_deadline_get reads it without
 * changing it. Prefer these two in new code. */
WEFT_API int      weft_deadline_set(int64_t abs_ns, int64_t *old);
WEFT_API int      weft_deadline_get(int64_t *abs_ns);   /* 0; -EINVAL for NULL; -EPERM */

/* Fiber-local storage, pthread_key_* semantics: destructors run when the
 * fiber returns, for non-NULL values, up to 4 rounds. */
typedef unsigned weft_key;
WEFT_API int   weft_key_create(weft_key *key, void (*destructor)(void *));
WEFT_API int   weft_key_delete(weft_key key);
WEFT_API void *weft_getspecific(weft_key key);
WEFT_API int   weft_setspecific(weft_key key, const void *value);

/* -------------------------------------------------------- synchronisation */
/* Caller-owned storage. Never blocks the worker thread; correct across
 * workers; every wait honours cancellation and the deadline. From a plain
 * thread (outside any fiber) waits are -EPERM. */

typedef struct weft_mutex { uintptr_t _w[6]; } weft_mutex;
typedef struct weft_cond  { uintptr_t _w[6]; } weft_cond;
typedef struct weft_sem   { uintptr_t _w[6]; } weft_sem;
typedef struct weft_wg    { uintptr_t _w[6]; } weft_wg;
#define WEFT_MUTEX_INIT { { 0 } }
#define WEFT_COND_INIT  { { 0 } }
#define WEFT_SEM_INIT(v) { { (uintptr_t)(v) } }
#define WEFT_WG_INIT    { { 0 } }

/* A mutex is owned by a fiber: lock, trylock and unlock from a plain thread
 * are -EPERM. No waiter starves: one that has waited more than 1 ms is
 * handed the lock directly (see docs/sync-and-channels.md). lock returns
 * -ECANCELED/-ETIMEDOUT only when it had to wait (the mutex is then not
 * held) and -EDEADLK when the caller already holds it. */
WEFT_API int weft_mutex_init(weft_mutex *m);
WEFT_API int weft_mutex_lock(weft_mutex *m);
WEFT_API int weft_mutex_trylock(weft_mutex *m);    /* -EBUSY */
WEFT_API int weft_mutex_unlock(weft_mutex *m);     /* -EPERM if not the owner */
WEFT_API int weft_mutex_destroy(weft_mutex *m);    /* -EBUSY if locked or waited on */

WEFT_API int weft_cond_init(weft_cond *c);
/* -EPERM if the caller does not hold m; re-locks m even on -ECANCELED/-ETIMEDOUT. */
WEFT_API int weft_cond_wait(weft_cond *c, weft_mutex *m);
WEFT_API int weft_cond_signal(weft_cond *c);
WEFT_API int weft_cond_broadcast(weft_cond *c);
WEFT_API int weft_cond_destroy(weft_cond *c);

WEFT_API int weft_sem_init(weft_sem *s, unsigned value);
WEFT_API int weft_sem_wait(weft_sem *s);
WEFT_API int weft_sem_trywait(weft_sem *s);        /* -EAGAIN */
/* Works from any thread (a plain thread may post to wake a fiber), but not
 * from a signal handler (see the top of this header). */
WEFT_API int weft_sem_post(weft_sem *s);           /* -EOVERFLOW past UINT_MAX */
/* -EBUSY while fibers wait on it (nothing changes); 0 otherwise. Like the
 * other destroys it frees nothing: the storage is the caller's. */
WEFT_API int weft_sem_destroy(weft_sem *s);

WEFT_API int weft_wg_init(weft_wg *w);
/* Reusable once the count is back at zero, like Go's sync.WaitGroup. */
WEFT_API int weft_wg_add(weft_wg *w, int delta);   /* -EINVAL if the count would go negative */
WEFT_API int weft_wg_done(weft_wg *w);
WEFT_API int weft_wg_wait(weft_wg *w);
/* -EBUSY while fibers wait on it (nothing changes); 0 otherwise, whatever
 * the count. */
WEFT_API int weft_wg_destroy(weft_wg *w);

/* --------------------------------------------------------------- channels */

typedef struct weft_chan weft_chan;
enum { WEFT_SEND = 1, WEFT_RECV = 2 };

/* capacity 0: unbuffered (rendezvous). NULL on bad args (elem_size above
 * 64 KiB, a ring that would not fit in memory) or no memory; to know which,
 * use weft_chan_new.
 * elem_size 0 makes Go's chan struct{}: values carry no data (a signal, or
 * a count up to capacity), any capacity takes no memory, and elem may be
 * NULL in every call, select's cases included.
 * A receive may pass a NULL elem to discard the value. Blocking calls from a
 * plain thread are -EPERM; the try calls, close, len and cap work from any
 * thread, but not from a signal handler (see the top).
 * weft_chan_free with fibers still waiting on the channel is a caller bug:
 * it aborts with a message. */
WEFT_API weft_chan *weft_chan_make(size_t elem_size, size_t capacity);
/* weft_chan_make that says why it failed: 0 and the channel in *c, or
 * -EINVAL (c NULL, or what weft_chan_make calls bad args) or -ENOMEM, with
 * *c set to NULL. Prefer it in new code. */
WEFT_API int  weft_chan_new(weft_chan **c, size_t elem_size, size_t capacity);
WEFT_API int  weft_chan_send(weft_chan *c, const void *elem);   /* -EPIPE if closed */
WEFT_API int  weft_chan_recv(weft_chan *c, void *elem);         /* -EPIPE when closed and drained */
WEFT_API int  weft_chan_trysend(weft_chan *c, const void *elem);/* -EAGAIN when it would block */
WEFT_API int  weft_chan_tryrecv(weft_chan *c, void *elem);      /* -EAGAIN when it would block */
WEFT_API int  weft_chan_close(weft_chan *c);                    /* -EPIPE if already closed */
WEFT_API void weft_chan_free(weft_chan *c);
/* Go's len(c): elements buffered now (0 for an unbuffered channel, even
 * with senders waiting; after close, those not yet received). 0 for NULL. */
WEFT_API size_t weft_chan_len(const weft_chan *c);
/* Go's cap(c): the capacity it was made with. 0 for NULL. */
WEFT_API size_t weft_chan_cap(const weft_chan *c);

typedef struct weft_case {
    weft_chan *chan;   /* NULL: case ignored */
    int op;            /* WEFT_SEND or WEFT_RECV */
    void *elem;        /* element to send, or buffer to receive into (NULL: discard) */
    int err;           /* out, for the case that fired: 0, or -EPIPE when the channel
                          was closed (a receive then got a zeroed element; a send sent
                          nothing), like pollfd.revents */
} weft_case;
/* Block until one case can proceed; fair among ready cases (random order).
 * Returns the index of the case that fired, its outcome in cases[i].err.
 * A closed channel makes its cases fire (like Go's receive from a closed
 * channel; a send on one is an error Go would panic on). Cases with a NULL
 * chan are ignored; with none left (n == 0 included) it waits for a cancel
 * or the deadline, like Go's empty select. At most WEFT_SELECT_MAX (65,536)
 * cases, NULL ones included. -EINVAL on a bad op, a send with a NULL elem
 * (on a channel of non-zero elements), or n above WEFT_SELECT_MAX (nothing
 * is sent or received then); -EPERM outside a fiber, -ENOMEM, -ECANCELED,
 * -ETIMEDOUT. */
#define WEFT_SELECT_MAX 65536
WEFT_API int weft_select(weft_case *cases, size_t n);
/* Like weft_select but returns -EAGAIN instead of blocking; works from any thread. */
WEFT_API int weft_tryselect(weft_case *cases, size_t n);

/* -------------------------------------------------------------------- I/O */
/* From a fiber they park the fiber, not the worker; from a plain thread they
 * behave like the blocking call. Each honours cancellation and the deadline.
 * Writes never raise SIGPIPE: a broken pipe is -EPIPE (SIGPIPE is blocked on
 * the runtime's threads while weft_run runs).
 * The first use from a fiber sets O_NONBLOCK on a pollable fd (socket, pipe,
 * tty...). weft keeps per-fd state: close fds used with these calls with
 * weft_close. Regular files go through io_uring, or the blocking pool. */

WEFT_API ssize_t weft_read(int fd, void *buf, size_t n);
WEFT_API ssize_t weft_write(int fd, const void *buf, size_t n);
WEFT_API ssize_t weft_readv(int fd, const struct iovec *iov, int iovcnt);
WEFT_API ssize_t weft_writev(int fd, const struct iovec *iov, int iovcnt);
WEFT_API ssize_t weft_recv(weft_socket fd, void *buf, size_t n, int flags);
WEFT_API ssize_t weft_send(weft_socket fd, const void *buf, size_t n, int flags);
WEFT_API ssize_t weft_recvfrom(weft_socket fd, void *buf, size_t n, int flags,
                               struct sockaddr *from, socklen_t *fromlen);
WEFT_API ssize_t weft_sendto(weft_socket fd, const void *buf, size_t n, int flags,
                             const struct sockaddr *to, socklen_t tolen);
/* Returns the new socket, non-blocking and close-on-exec. */
WEFT_API weft_socket weft_accept(weft_socket fd, struct sockaddr *addr, socklen_t *addrlen);
WEFT_API int  weft_connect(weft_socket fd, const struct sockaddr *addr, socklen_t addrlen);
WEFT_API int  weft_wait_fd(int fd, int events /* POLLIN|POLLOUT */);   /* returns revents */
/* Fibers parked on fd wake with -EBADF; then the fd is closed. */
WEFT_API int  weft_close(int fd);

/* Run fn(arg) on a bounded pool of threads, parking the calling fiber
 * (env WEFT_POOL_MAX threads, default 64; idle ones exit after
 * WEFT_POOL_IDLE_MS, default 10000). Cancelled or past the deadline while
 * fn runs, the call returns at once and fn's result is dropped; fn keeps
 * running, so arg must outlive it. From a plain thread fn runs in place.
 * When no pool thread is running and none can be started (a pid or thread
 * limit, RLIMIT_NPROC, RLIMIT_AS): the thread start's error, -EAGAIN as
 * pthread_create reports it (or -ENOMEM), at once, and fn does not run;
 * the call works again once a thread can start. With some pool threads
 * running, the call waits its turn instead. The same holds for
 * weft_getaddrinfo, weft_resolve, and weft_read/weft_write on a regular
 * file where the backend sends those to the pool (epoll; Windows' CRT
 * descriptors). */
WEFT_API int  weft_blocking(void *(*fn)(void *), void *arg, void **ret);
/* getaddrinfo on the pool. Returns 0 or a negative EAI_* code (EAI_* values
 * are negative in glibc already; EAI_SYSTEM is mapped to -errno), or
 * weft's own -errno (-EINVAL, -ENOMEM, -EAGAIN, -ECANCELED, -ETIMEDOUT).
 * The two can collide: glibc's EAI_AGAIN is -3, which is also -ESRCH, and
 * EAI_OVERFLOW is -12, also -ENOMEM. Kept for existing code; new code
 * uses weft_resolve. */
WEFT_API int  weft_getaddrinfo(const char *node, const char *service,
                               const struct addrinfo *hints, struct addrinfo **res);
/* getaddrinfo on the pool, every failure a negative errno: 0 and the list
 * in *res (free it with freeaddrinfo); or weft's own -EINVAL, -ENOMEM,
 * -EAGAIN (no pool thread, see weft_blocking), -ECANCELED, -ETIMEDOUT, with
 * *eai = 0; or the resolver's failure as the nearest errno, with the exact
 * code getaddrinfo returned in *eai (for gai_strerror):
 *     EAI_AGAIN -EAGAIN          EAI_MEMORY -ENOMEM       EAI_BADFLAGS -EINVAL
 *     EAI_FAMILY -EAFNOSUPPORT   EAI_SOCKTYPE -EPROTOTYPE EAI_OVERFLOW -EOVERFLOW
 *     EAI_NONAME, EAI_NODATA, EAI_ADDRFAMILY, EAI_SERVICE -ENOENT
 *     EAI_SYSTEM the resolver's -errno    any other code (EAI_FAIL...) -EIO
 * eai may be NULL. */
WEFT_API int  weft_resolve(const char *node, const char *service,
                           const struct addrinfo *hints, struct addrinfo **res, int *eai);

/* Name of the I/O backend the running runtime chose ("epoll", "uring", "iocp"). */
WEFT_API const char *weft_io_backend(void);

/* ------------------------------------------------------------ diagnostics */
/* See docs/debugging.md. None of these needs the fibers' cooperation. */

/* Program counters of f's stack, innermost first (return addresses, except
 * a signal frame's first). f == NULL or weft_self(): the caller's own stack
 * (outside a fiber: the calling thread's). Another fiber is walked without
 * resuming it, and held still for the walk: a worker that picks it up
 * meanwhile waits the few microseconds it takes. Returns the count;
 * -EBUSY if f is running on a worker now, -ESRCH if it has returned
 * (its handle may be stale then),
 * -ENOTSUP where no unwinder is built in or the switch's frame layout is
 * unknown (docs/debugging.md), -EINVAL on bad arguments. */
WEFT_API int weft_backtrace(weft_fiber *f, void **pcs, int max);
/* Write pcs as "  #i 0xpc function+0xoff (object)" lines to fd. */
WEFT_API int weft_backtrace_print(int fd, void *const *pcs, int n);
/* Write every live fiber to fd: id, name, state (running on worker N,
 * runnable, or parked on what and since when), stack size and high-water
 * mark, and the backtrace of each one not running. Also on a signal:
 * env WEFT_DUMP_SIGNAL (number or name, default SIGQUIT, "0" none) makes
 * the runtime dump to stderr and carry on (the handler only notes the
 * signal; a thread of the runtime writes the dump): use that rather than
 * calling weft_dump from a handler of your own, which is not allowed (see
 * the top). -EPERM outside a runtime: from a plain thread, before weft_run
 * has started its workers and after its fibers are all gone (a dump in
 * progress holds the teardown back).
 * The runtime keeps running meanwhile: each fiber is held only for its
 * own walk (tens of microseconds), no lock the scheduler or stack
 * allocation needs is held while frames are named or text formatted. The
 * calling thread is busy for the whole dump (a few hundred ms for 10,000
 * fibers): from a fiber, that is its worker; prefer a plain thread.
 * Env WEFT_DEADLOCK=1: when every fiber waits on another fiber (a join,
 * lock, condvar, semaphore, wait group, channel or select; no timer, no
 * I/O, no blocking-pool work), the runtime writes one line and this dump to
 * stderr, once per weft_run. Off by default: a plain thread may still
 * signal those objects, so the report cannot be exact (docs/debugging.md). */
WEFT_API int weft_dump(int fd);

/* Counters since weft_run began. Per-worker entries for the first
 * WEFT_STATS_WORKERS workers; totals always cover all of them. */
#define WEFT_STATS_WORKERS 64
typedef struct weft_worker_stats {
    uint64_t switches;      /* fibers resumed */
    uint64_t steals;        /* successful steals by this worker ... */
    uint64_t stolen;        /* ... and the fibers they moved */
    uint64_t parks;         /* waits that parked a fiber */
    uint64_t polls;         /* blocking calls into the I/O poller */
    uint64_t spawned;       /* fibers spawned on this worker */
    uint64_t exited;        /* fibers that returned on this worker */
    uint64_t timers_fired;  /* sleeps, timeouts and deadlines that expired */
} weft_worker_stats;
typedef struct weft_stats {
    unsigned workers;             /* workers of the running runtime */
    unsigned reported;            /* entries filled in worker[] */
    uint64_t alive;               /* fibers spawned and not yet returned */
    uint64_t pool_threads;        /* threads of the blocking pool (weft_blocking) */
    uint64_t watchdog_reports;    /* fibers the watchdog reported */
    uint64_t watchdog_moved;      /* queued fibers it moved off a hogged worker */
    weft_worker_stats total;
    weft_worker_stats worker[WEFT_STATS_WORKERS];
} weft_stats_t;
/* Fill *st. -EINVAL for NULL, -EPERM outside a runtime (for a plain
 * thread: the same moments as weft_dump). Safe from any thread at any
 * time. */
WEFT_API int weft_stats(weft_stats_t *st);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_H */
