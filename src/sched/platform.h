/*
 * The few OS services the scheduler needs, behind one small interface so
 * that the scheduler itself has no #ifdef: threads, a lock, a futex-like
 * wait on a 32-bit word, a monotonic clock and a plain sleep.
 * platform_posix.c implements it with pthreads and Linux futexes;
 * platform_win32.c with Windows threads, SRW locks and WaitOnAddress.
 */
#ifndef WEFT_PLATFORM_H
#define WEFT_PLATFORM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#ifdef _WIN32
#include <winsock2.h>   /* before windows.h, which would pull in the old winsock.h */
#include <windows.h>
typedef SRWLOCK weft__lock;
#define WEFT__LOCK_INIT SRWLOCK_INIT
typedef HANDLE weft__thread;
#else
#include <pthread.h>
#include <time.h>
typedef pthread_mutex_t weft__lock;
#define WEFT__LOCK_INIT PTHREAD_MUTEX_INITIALIZER
typedef pthread_t weft__thread;
#endif

void weft__lock_init(weft__lock *l);
void weft__lock_acquire(weft__lock *l);
int  weft__lock_try(weft__lock *l);       /* 1 if acquired */
void weft__lock_release(weft__lock *l);
void weft__lock_destroy(weft__lock *l);

/* Sleep while *addr == val, at most timeout_ns (-1: no limit). Spurious
 * returns are allowed; callers loop on their own condition. */
void weft__futex_wait(uint32_t *addr, uint32_t val, int64_t timeout_ns);
void weft__futex_wake(uint32_t *addr, int n);

/* An asymmetric barrier: a full memory barrier split between a side that
 * runs often and pays almost nothing, and a side that runs rarely and pays
 * a system call. It serves Dekker-style pairs, where each side stores to
 * one word and then loads the other, and at least one side must see the
 * other's store: the word lock's unlock against a sleeper (waitq.h), a
 * fiber going to wait against weft_cancel (sched.h).
 *
 * On Linux the heavy side is membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED):
 * when it returns, every CPU that was running one of our threads has
 * executed a full barrier, and a thread not running passed through one
 * when it was switched out. So a light side whose store is still buffered
 * when the heavy side's system call runs has it drained by that barrier
 * before the heavy side loads; and a light side that loads after the
 * barrier sees the heavy side's store. The light side then needs only to
 * keep the compiler from moving its load above its store. This is the
 * scheme of liburcu's and folly's asymmetric barriers; C11 has no words
 * for it, so it rests on the system call's documented guarantee.
 *
 * The library registers for it once, when it is loaded, before any of its
 * code can run (platform_posix.c); weft__membarrier never changes after.
 * Where it is missing (older kernels, some sandboxes, WEFT_MEMBARRIER=0,
 * and Windows, where we do not rely on FlushProcessWriteBuffers under
 * Wine) both sides execute a sequentially consistent fence. */
extern int weft__membarrier;
static inline void weft__barrier_light(void)
{
    if (__builtin_expect(weft__membarrier, 1))
        atomic_signal_fence(memory_order_seq_cst);
    else
        atomic_thread_fence(memory_order_seq_cst);
}
void weft__barrier_heavy(void);

int  weft__thread_start(weft__thread *t, void *(*fn)(void *), void *arg, const char *name);
void weft__thread_join(weft__thread t);
unsigned weft__cpu_count(void);
void weft__os_yield(void);
/* Block the calling OS thread for at least ns (weft_sleep outside a fiber). */
void weft__os_sleep_ns(uint64_t ns);

uint64_t weft__now(void);          /* monotonic ns */
/* monotonic ns, about 1-4 ms resolution, cheaper: on Linux one read of the
 * vDSO's page, inlined because every park takes one (weft_dump's "for"). */
#ifdef _WIN32
uint64_t weft__now_coarse(void);
#else
static inline uint64_t weft__now_coarse(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
#endif

/* The one thread-local the scheduler keeps: which worker runs on this
 * thread. A compiler's __thread is native TLS on Linux (one %fs-relative
 * load), but mingw only has it emulated (a call into libgcc's emutls, then
 * TlsGetValue: about 20 ns against 4 for the whole weft_self() on Linux).
 * Windows' own TLS slots sit in the TEB, one %gs-relative load away, so
 * each platform gives the fastest it has; the scheduler only calls
 * weft__tls_get/weft__tls_set, from non-inlined accessors (see sched.h). */
#ifdef _WIN32
extern DWORD weft__tls_index;          /* TlsAlloc'd when the library loads */
static inline void *weft__tls_get(void)
{
    if (weft__tls_index >= 64)         /* past the TEB's own 64 slots */
        return TlsGetValue(weft__tls_index);
    void *v;
    __asm__ volatile("movq %%gs:0x1480(,%1,8), %0" : "=r"(v) : "r"((uintptr_t)weft__tls_index));
    return v;
}
#else
extern __thread void *weft__tls_slot;
static inline void *weft__tls_get(void) { return weft__tls_slot; }
#endif
void weft__tls_set(void *v);

/* Memory aligned to align (a power of two), for records that must not share
 * cache lines; freed with weft__aligned_free. C11's aligned_alloc is not in
 * the Windows CRT. */
void *weft__aligned_alloc(size_t align, size_t size);
void  weft__aligned_free(void *p);

#endif
