/*
 * The few OS services the scheduler needs, behind one small interface so
 * that the scheduler itself has no #ifdef: threads, a lock, a futex-like
 * wait on a 32-bit word, and a monotonic clock.
 * platform_posix.c implements it with pthreads and Linux futexes;
 * platform_win32.c with Windows threads, SRW locks and WaitOnAddress.
 */
#ifndef WEFT_PLATFORM_H
#define WEFT_PLATFORM_H

#include <stdint.h>

#ifdef _WIN32
#include <windows.h>
typedef SRWLOCK weft__lock;
#define WEFT__LOCK_INIT SRWLOCK_INIT
typedef HANDLE weft__thread;
#else
#include <pthread.h>
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

int  weft__thread_start(weft__thread *t, void *(*fn)(void *), void *arg, const char *name);
void weft__thread_join(weft__thread t);
unsigned weft__cpu_count(void);
void weft__os_yield(void);

uint64_t weft__now(void);          /* monotonic ns */
uint64_t weft__now_coarse(void);   /* monotonic ns, about 1-4 ms resolution, cheaper */

#endif
