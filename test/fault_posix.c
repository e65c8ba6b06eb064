/*
 * The wrappers of fault.h. Each wrapped call asks fault_take() whether this
 * call must fail; the answer is a few atomics, so that a wrapper may run on
 * any thread, in a signal handler or on a fiber's stack, and so that the
 * disarmed state every other test runs in costs one relaxed load.
 *
 * An armed entry counts calls down: `skip` calls pass, then `fail` calls
 * fail. Both counters are decremented with compare-and-swap, never below
 * zero, so concurrent callers each take exactly one turn.
 */
#define _GNU_SOURCE
#include "fault.h"

#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>

enum {
    F_MMAP, F_MADVISE, F_PTHREAD_CREATE, F_EPOLL_CTL, F_EVENTFD, F_ACCEPT, F_ACCEPT4,
    F_URING_INIT, F_URING_SUBMIT, F_URING_WAIT, F_URING_GET_EVENTS, F_COUNT
};

static const char *const names[F_COUNT] = {
    [F_MMAP] = "mmap", [F_MADVISE] = "madvise", [F_PTHREAD_CREATE] = "pthread_create",
    [F_EPOLL_CTL] = "epoll_ctl", [F_EVENTFD] = "eventfd", [F_ACCEPT] = "accept",
    [F_ACCEPT4] = "accept4", [F_URING_INIT] = "io_uring_queue_init_params",
    [F_URING_SUBMIT] = "io_uring_submit", [F_URING_WAIT] = "io_uring_wait_cqe_timeout",
    [F_URING_GET_EVENTS] = "io_uring_get_events",
};

static struct {
    _Atomic unsigned skip;   /* calls still to pass before failing */
    _Atomic unsigned fail;   /* calls still to fail (FAULT_ALWAYS: forever) */
    _Atomic int err;
    _Atomic unsigned hits;
} faults[F_COUNT];
static _Atomic unsigned armed;   /* entries with fail > 0: the fast path's one load */

static int find(const char *name)
{
    for (int i = 0; i < F_COUNT; i++)
        if (!strcmp(names[i], name))
            return i;
    return -1;
}

int fault_arm(const char *name, int err, unsigned nth, unsigned count)
{
    int i = find(name);
    if (i < 0 || nth == 0 || count == 0 || err <= 0)
        return -EINVAL;
    fault_disarm(name);
    atomic_store(&faults[i].err, err);
    atomic_store(&faults[i].skip, nth - 1);
    atomic_store(&faults[i].fail, count);
    atomic_fetch_add(&armed, 1);
    return 0;
}

void fault_disarm(const char *name)
{
    int i = find(name);
    if (i < 0)
        return;
    if (atomic_exchange(&faults[i].fail, 0) != 0)
        atomic_fetch_sub(&armed, 1);
}

void fault_disarm_all(void)
{
    for (int i = 0; i < F_COUNT; i++)
        fault_disarm(names[i]);
}

unsigned fault_hits(const char *name)
{
    int i = find(name);
    return i < 0 ? 0 : atomic_load(&faults[i].hits);
}

/* Take one unit from *c if it is above zero; the value it had, 0 if none
 * was taken. Exactly one caller sees 1: the one that spent the entry. */
static unsigned take(_Atomic unsigned *c)
{
    unsigned v = atomic_load_explicit(c, memory_order_relaxed);
    while (v > 0)
        if (atomic_compare_exchange_weak_explicit(c, &v, v == FAULT_ALWAYS ? v : v - 1,
                                                  memory_order_acq_rel, memory_order_relaxed))
            return v;
    return 0;
}

/* 0: make the real call; else the errno this call fails with. */
static int fault_take(int i)
{
    if (__builtin_expect(atomic_load_explicit(&armed, memory_order_relaxed) == 0, 1))
        return 0;
    if (atomic_load_explicit(&faults[i].fail, memory_order_acquire) == 0 || take(&faults[i].skip))
        return 0;
    unsigned left = take(&faults[i].fail);
    if (left == 0)
        return 0;
    if (left == 1)
        atomic_fetch_sub(&armed, 1);   /* spent: back to the fast path */
    atomic_fetch_add(&faults[i].hits, 1);
    return atomic_load(&faults[i].err);
}

/* ---------------------------------------------------------------- libc */

void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    int e = fault_take(F_MMAP);
    if (e) {
        errno = e;
        return MAP_FAILED;
    }
    return __real_mmap(addr, len, prot, flags, fd, off);
}

int __real_madvise(void *addr, size_t len, int advice);
int __wrap_madvise(void *addr, size_t len, int advice)
{
    int e = fault_take(F_MADVISE);
    if (e) {
        errno = e;
        return -1;
    }
    return __real_madvise(addr, len, advice);
}

int __real_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg);
int __wrap_pthread_create(pthread_t *t, const pthread_attr_t *a, void *(*fn)(void *), void *arg)
{
    int e = fault_take(F_PTHREAD_CREATE);
    if (e)
        return e;   /* pthreads report by value */
    return __real_pthread_create(t, a, fn, arg);
}

int __real_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);
int __wrap_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    int e = fault_take(F_EPOLL_CTL);
    if (e) {
        errno = e;
        return -1;
    }
    return __real_epoll_ctl(epfd, op, fd, ev);
}

int __real_eventfd(unsigned int initval, int flags);
int __wrap_eventfd(unsigned int initval, int flags)
{
    int e = fault_take(F_EVENTFD);
    if (e) {
        errno = e;
        return -1;
    }
    return __real_eventfd(initval, flags);
}

int __real_accept(int fd, struct sockaddr *addr, socklen_t *len);
int __wrap_accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    int e = fault_take(F_ACCEPT);
    if (e) {
        errno = e;
        return -1;
    }
    return __real_accept(fd, addr, len);
}

int __real_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
int __wrap_accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    int e = fault_take(F_ACCEPT4);
    if (e) {
        errno = e;
        return -1;
    }
    return __real_accept4(fd, addr, len, flags);
}

/* ------------------------------------------------------------- liburing */

int __real_io_uring_queue_init_params(unsigned entries, struct io_uring *ring, struct io_uring_params *p);
int __wrap_io_uring_queue_init_params(unsigned entries, struct io_uring *ring, struct io_uring_params *p)
{
    int e = fault_take(F_URING_INIT);
    return e ? -e : __real_io_uring_queue_init_params(entries, ring, p);
}

int __real_io_uring_submit(struct io_uring *ring);
int __wrap_io_uring_submit(struct io_uring *ring)
{
    int e = fault_take(F_URING_SUBMIT);
    return e ? -e : __real_io_uring_submit(ring);
}

int __real_io_uring_wait_cqe_timeout(struct io_uring *ring, struct io_uring_cqe **cqe,
                                     struct __kernel_timespec *ts);
int __wrap_io_uring_wait_cqe_timeout(struct io_uring *ring, struct io_uring_cqe **cqe,
                                     struct __kernel_timespec *ts)
{
    int e = fault_take(F_URING_WAIT);
    return e ? -e : __real_io_uring_wait_cqe_timeout(ring, cqe, ts);
}

int __real_io_uring_get_events(struct io_uring *ring);
int __wrap_io_uring_get_events(struct io_uring *ring)
{
    int e = fault_take(F_URING_GET_EVENTS);
    return e ? -e : __real_io_uring_get_events(ring);
}
