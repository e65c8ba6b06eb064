/*
 * platform.h on Windows: SRW locks, WaitOnAddress, CRT threads and the
 * performance counter.
 *
 * WaitOnAddress/WakeByAddress (Windows 8+, in the synchronization API set)
 * are the futex: they compare the word and sleep in one step as seen by
 * wakers, so the scheduler's permit protocol carries over unchanged.
 * Timeouts are in milliseconds there; we round up, never down, so a wait
 * never ends before the time the scheduler asked for (a spurious early
 * return would be allowed, but it would cost a pointless trip round the
 * run loop). Windows' default timer tick is 15.6 ms, which is the real
 * resolution of such a wait unless the application raises it with
 * timeBeginPeriod; weft__os_sleep_ns uses a high-resolution waitable timer
 * where the system has one.
 */
#include "platform.h"

#include <errno.h>
#include <process.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

DWORD weft__tls_index = TLS_OUT_OF_INDEXES;

/* Before main (or DllMain's attach, for weft.dll): weft__tls_get may be
 * called by any thread at any time, even before the first weft_run. */
__attribute__((constructor)) static void tls_alloc(void)
{
    weft__tls_index = TlsAlloc();
    if (weft__tls_index == TLS_OUT_OF_INDEXES) {
        fputs("weft: no TLS index left\n", stderr);
        abort();
    }
}

void weft__tls_set(void *v) { TlsSetValue(weft__tls_index, v); }

void weft__lock_init(weft__lock *l) { InitializeSRWLock(l); }
void weft__lock_acquire(weft__lock *l) { AcquireSRWLockExclusive(l); }
int  weft__lock_try(weft__lock *l) { return TryAcquireSRWLockExclusive(l) != 0; }
void weft__lock_release(weft__lock *l) { ReleaseSRWLockExclusive(l); }
void weft__lock_destroy(weft__lock *l) { (void)l; }   /* SRW locks own no resources */

void weft__futex_wait(uint32_t *addr, uint32_t val, int64_t timeout_ns)
{
    DWORD ms = INFINITE;
    if (timeout_ns >= 0) {
        uint64_t r = ((uint64_t)timeout_ns + 999999) / 1000000;
        ms = r >= INFINITE ? INFINITE - 1 : (DWORD)r;
    }
    WaitOnAddress(addr, &val, sizeof val, ms);
}

void weft__futex_wake(uint32_t *addr, int n)
{
    if (n == 1)
        WakeByAddressSingle(addr);
    else
        WakeByAddressAll(addr);
}

struct start {
    void *(*fn)(void *);
    void *arg;
};

static unsigned __stdcall thread_entry(void *p)
{
    struct start st = *(struct start *)p;
    free(p);
    st.fn(st.arg);
    return 0;
}

/* SetThreadDescription appeared in Windows 10 1607: look it up, so that
 * the library still loads on older systems. */
typedef HRESULT (WINAPI *set_desc_fn)(HANDLE, PCWSTR);

static void name_thread(HANDLE h, const char *name)
{
    HMODULE k = GetModuleHandleW(L"kernel32.dll");
    set_desc_fn set = k ? (set_desc_fn)(void (*)(void))GetProcAddress(k, "SetThreadDescription") : NULL;
    if (!set)
        return;
    wchar_t w[32];
    int i = 0;
    for (; name[i] && i < 31; i++)
        w[i] = (wchar_t)(unsigned char)name[i];
    w[i] = 0;
    set(h, w);
}

/* The asymmetric barrier (platform.h) degrades to a fence on both sides:
 * FlushProcessWriteBuffers would be the heavy side, but the Wine we test
 * under does not promise to implement it. */
int weft__membarrier = 0;
void weft__barrier_heavy(void) { atomic_thread_fence(memory_order_seq_cst); }

int weft__thread_start(weft__thread *t, void *(*fn)(void *), void *arg, const char *name)
{
    struct start *st = malloc(sizeof *st);
    if (!st)
        return -ENOMEM;
    st->fn = fn;
    st->arg = arg;
    /* _beginthreadex, not CreateThread: the CRT sets up its per-thread
     * state (errno, strtok, locale) for threads it starts. */
    uintptr_t h = _beginthreadex(NULL, 0, thread_entry, st, 0, NULL);
    if (!h) {
        free(st);
        return -EAGAIN;
    }
    *t = (HANDLE)h;
    if (name)
        name_thread(*t, name);
    return 0;
}

void weft__thread_join(weft__thread t)
{
    WaitForSingleObject(t, INFINITE);
    CloseHandle(t);
}

unsigned weft__cpu_count(void)
{
    /* The process affinity mask, when the machine has one processor group
     * (it covers at most 64 CPUs); otherwise every active processor. */
    DWORD_PTR proc, sys;
    if (GetActiveProcessorGroupCount() == 1 && GetProcessAffinityMask(GetCurrentProcess(), &proc, &sys)) {
        unsigned n = (unsigned)__builtin_popcountll((unsigned long long)proc);
        if (n > 0)
            return n;
    }
    DWORD n = GetActiveProcessorCount(ALL_PROCESSOR_GROUPS);
    return n > 0 ? (unsigned)n : 1;
}

void weft__os_yield(void) { SwitchToThread(); }

uint64_t weft__now(void)
{
    static uint64_t freq;   /* fixed at boot: a racy first store is harmless */
    LARGE_INTEGER c;
    if (!freq) {
        LARGE_INTEGER f;
        QueryPerformanceFrequency(&f);
        freq = (uint64_t)f.QuadPart;
    }
    QueryPerformanceCounter(&c);
    uint64_t v = (uint64_t)c.QuadPart;
    /* split so that v * 1e9 cannot overflow */
    return v / freq * 1000000000u + v % freq * 1000000000u / freq;
}

/* QueryPerformanceCounter reads the TSC in user mode on current systems:
 * already cheap, and a coarse clock must share weft__now's epoch. */
uint64_t weft__now_coarse(void) { return weft__now(); }

#ifndef CREATE_WAITABLE_TIMER_HIGH_RESOLUTION
#define CREATE_WAITABLE_TIMER_HIGH_RESOLUTION 0x00000002
#endif

void weft__os_sleep_ns(uint64_t ns)
{
    if (ns == 0) {
        SwitchToThread();
        return;
    }
    /* Relative due times are negative, in 100 ns units. */
    uint64_t units = ns / 100 + (ns % 100 != 0);
    LARGE_INTEGER due;
    due.QuadPart = units > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)units;
    HANDLE t = CreateWaitableTimerExW(NULL, NULL, CREATE_WAITABLE_TIMER_HIGH_RESOLUTION, TIMER_ALL_ACCESS);
    if (!t)
        t = CreateWaitableTimerExW(NULL, NULL, 0, TIMER_ALL_ACCESS);
    if (t && SetWaitableTimer(t, &due, 0, NULL, NULL, FALSE)) {
        WaitForSingleObject(t, INFINITE);
        CloseHandle(t);
        return;
    }
    if (t)
        CloseHandle(t);
    uint64_t ms = (ns + 999999) / 1000000;
    Sleep(ms >= INFINITE ? INFINITE - 1 : (DWORD)ms);
}

void *weft__aligned_alloc(size_t align, size_t size) { return _aligned_malloc(size, align); }
void  weft__aligned_free(void *p) { _aligned_free(p); }
