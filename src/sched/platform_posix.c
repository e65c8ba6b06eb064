/* platform.h on Linux: pthreads and futexes. */
#define _GNU_SOURCE
#include "platform.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

__thread void *weft__tls_slot;
void weft__tls_set(void *v) { weft__tls_slot = v; }

void weft__lock_init(weft__lock *l) { pthread_mutex_init(l, NULL); }
void weft__lock_acquire(weft__lock *l) { pthread_mutex_lock(l); }
int  weft__lock_try(weft__lock *l) { return pthread_mutex_trylock(l) == 0; }
void weft__lock_release(weft__lock *l) { pthread_mutex_unlock(l); }
void weft__lock_destroy(weft__lock *l) { pthread_mutex_destroy(l); }

void weft__futex_wait(uint32_t *addr, uint32_t val, int64_t timeout_ns)
{
    struct timespec ts, *tp = NULL;
    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        tp = &ts;
    }
    /* Private futex: the word is never shared with another process. A
     * relative timeout is what FUTEX_WAIT takes. */
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, tp, NULL, 0);
}

void weft__futex_wake(uint32_t *addr, int n)
{
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

/* The asymmetric barrier (platform.h). Registration is per process and
 * survives fork; it is made when the library is loaded, so that the flag
 * is fixed before any word lock or wait can run. */
int weft__membarrier;

static long membarrier(int cmd) { return syscall(SYS_membarrier, cmd, 0, 0); }

__attribute__((constructor)) static void membarrier_init(void)
{
    const char *e = getenv("WEFT_MEMBARRIER");
    if (e && e[0] == '0' && e[1] == 0)
        return;
    long cmds = membarrier(MEMBARRIER_CMD_QUERY);
    if (cmds < 0 || !(cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) ||
        membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) < 0)
        return;
    weft__membarrier = 1;
}

void weft__barrier_heavy(void)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (weft__membarrier) {
        while (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) < 0) {
            /* The light sides count on it now: there is no falling back. */
            if (errno == EPERM && membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0)
                continue;
            fprintf(stderr, "weft: membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED): %s\n",
                    strerror(errno));
            abort();
        }
        atomic_thread_fence(memory_order_seq_cst);
    }
}

int weft__thread_start(weft__thread *t, void *(*fn)(void *), void *arg, const char *name)
{
    int err = pthread_create(t, NULL, fn, arg);
    if (err)
        return -err;
    if (name)
        pthread_setname_np(*t, name);
    return 0;
}

void weft__thread_join(weft__thread t) { pthread_join(t, NULL); }

unsigned weft__cpu_count(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return (unsigned)n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

void weft__os_yield(void) { sched_yield(); }

void weft__os_sleep_ns(uint64_t ns)
{
    struct timespec ts = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

uint64_t weft__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void *weft__aligned_alloc(size_t align, size_t size)
{
    return aligned_alloc(align, (size + align - 1) & ~(align - 1));   /* C11: a multiple of align */
}

void weft__aligned_free(void *p) { free(p); }
