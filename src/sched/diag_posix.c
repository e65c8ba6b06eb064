/*
 * The POSIX side of the diagnostics layer: the dump signal, backtraces in
 * crash reports, and asking a worker thread for the backtrace of the fiber
 * it is running.
 *
 * THE DUMP SIGNAL (WEFT_DUMP_SIGNAL, default SIGQUIT)
 *   A dump takes locks, allocates and formats: nothing a signal handler may
 *   do. The handler only writes one byte to a pipe; a dedicated thread,
 *   started with the runtime and joined at its end, reads the pipe and calls
 *   weft_dump(2). So a dump happens a moment after the signal, on a thread
 *   of its own, while every worker carries on (see diag.c for what it may
 *   get wrong). The process keeps running: the signal's default action
 *   (SIGQUIT's core dump) is replaced for the life of the runtime.
 *
 * CRASH REPORTS
 *   crash_posix.c names the fiber of a SIGSEGV/SIGBUS (the stack overflow
 *   message); through weft__crash_report_hook this file adds its backtrace,
 *   unwound from the signal's ucontext. SIGILL, SIGFPE and SIGABRT get the
 *   same treatment here. Then the previous disposition takes over: a
 *   handler of the program's own is called; the default action is restored
 *   and the signal happens again (a fault re-executes the instruction; a
 *   sent signal, abort()'s included, is raised again), so core dumps still
 *   happen and the exit status still says which signal.
 *
 *   Async-signal safety, and where it ends. The text is formatted by hand
 *   and written with write(2): no stdio, no malloc. Function names come
 *   from symbol tables mapped when the runtime started
 *   (weft__unwind_symbol_safe), not from libunwind's unw_get_proc_name,
 *   which mallocs (it reads the ELF file behind each pc) and would deadlock
 *   a report of a crash inside malloc. The walk itself is libunwind's local
 *   unwinder (unw_init_local2/unw_step), designed to be usable in a signal
 *   handler; a crash inside libunwind or the dynamic loader may still defeat
 *   it. Libraries loaded after the runtime started print as object+offset.
 *
 * THE RUNNING FIBER'S BACKTRACE (for the watchdog)
 *   A running fiber's registers are in its CPU, not in memory. The watchdog
 *   queues SIGURG to the worker's thread with a pointer of ours as the
 *   signal's value (pthread_sigqueue); the handler, on that thread, unwinds
 *   from its own ucontext into the watchdog's buffer if the fiber asked for
 *   is still the one running there. SIGURG, as Go's runtime chose for its
 *   preemption signal: ignored by default, so a stray one is harmless, and
 *   hardly ever used by programs (it means out-of-band data on a socket; one
 *   not ours is passed to the handler that was there before). The handler
 *   is installed with SA_RESTART, so a raw blocking read(2), write(2),
 *   accept(2)... the fiber is stuck in resumes as if nothing happened. Some
 *   calls fail with EINTR after any handler, SA_RESTART or not (poll,
 *   nanosleep, epoll_wait...: the table above weft__diag_blocked_call):
 *   the watchdog reads which call the thread is blocked in from /proc
 *   first, and leaves a thread blocked in one of those alone, without a
 *   backtrace. What is left: a thread that enters such a call in the
 *   microseconds between that look and the signal, and sockets with a
 *   receive or send timeout, which cannot be seen from outside.
 */
#define _GNU_SOURCE
#include "diag.h"

#include "../arch/unwind.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_WORKERS 1024
#define CRASH_HEAD 16       /* innermost frames printed */
#define CRASH_TAIL 8        /* outermost frames printed */
#define CRASH_LIMIT 100000  /* frames walked at most */

/* Each worker thread records itself as it starts, while the watchdog may
 * already be reading: the lwp id, stored last with release, says "set". */
static pthread_t worker_tid[MAX_WORKERS];
static pid_t worker_lwp[MAX_WORKERS];

void weft__diag_thread_init(weft__worker *w)
{
    if (w->idx < MAX_WORKERS) {
        worker_tid[w->idx] = pthread_self();
        __atomic_store_n(&worker_lwp[w->idx], gettid(), __ATOMIC_RELEASE);
    }
}

/* The worker's thread, or 0 if it has not started yet. */
static pid_t worker_thread(const weft__worker *w, pthread_t *tid)
{
    if (w->idx >= MAX_WORKERS)
        return 0;
    pid_t lwp = __atomic_load_n(&worker_lwp[w->idx], __ATOMIC_ACQUIRE);
    if (lwp)
        *tid = worker_tid[w->idx];
    return lwp;
}

int64_t weft__diag_thread_cpu(weft__worker *w)
{
    clockid_t cid;
    struct timespec ts;
    pthread_t tid;
    if (!worker_thread(w, &tid) || pthread_getcpuclockid(tid, &cid) != 0 ||
        clock_gettime(cid, &ts) != 0)
        return -1;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The state letter of /proc/self/task/TID/stat: R running or runnable. A
 * thread that is R but used little CPU was waiting for one. */
int weft__diag_thread_preempted(weft__worker *w)
{
    pthread_t tid;
    pid_t lwp = worker_thread(w, &tid);
    if (!lwp)
        return -1;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)lwp);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    const char *p = strrchr(buf, ')');   /* the name may hold spaces */
    return p && p[1] == ' ' && p[2] == 'R';
}

/* The system calls that fail with EINTR when a signal handler runs, even
 * one installed with SA_RESTART (signal(7), "Interruption of system calls
 * and library functions by signal handlers"): the waits with a timeout,
 * sleeps, signal waits and System V IPC. Sockets with SO_RCVTIMEO or
 * SO_SNDTIMEO set belong here too, but whether one is set cannot be seen
 * from outside: those are signalled, and may see EINTR. */
static const struct { long nr; const char *name; } unrestarted[] = {
#ifdef SYS_poll
    { SYS_poll, "poll" },
#endif
#ifdef SYS_select
    { SYS_select, "select" },
#endif
#ifdef SYS_epoll_wait
    { SYS_epoll_wait, "epoll_wait" },
#endif
#ifdef SYS_pause
    { SYS_pause, "pause" },
#endif
#ifdef SYS_epoll_pwait2
    { SYS_epoll_pwait2, "epoll_pwait2" },
#endif
    { SYS_ppoll, "ppoll" },
    { SYS_pselect6, "pselect6" },
    { SYS_epoll_pwait, "epoll_pwait" },
    { SYS_nanosleep, "nanosleep" },
    { SYS_clock_nanosleep, "clock_nanosleep" },
    { SYS_rt_sigtimedwait, "sigtimedwait" },
    { SYS_rt_sigsuspend, "sigsuspend" },
    { SYS_io_getevents, "io_getevents" },
#ifdef SYS_io_uring_enter
    { SYS_io_uring_enter, "io_uring_enter" },
#endif
    { SYS_msgrcv, "msgrcv" },
    { SYS_msgsnd, "msgsnd" },
    { SYS_semtimedop, "semtimedop" },
#ifdef SYS_semop
    { SYS_semop, "semop" },
#endif
};

const char *weft__diag_blocked_call(weft__worker *w)
{
    pthread_t tid;
    pid_t lwp = worker_thread(w, &tid);
    if (!lwp)
        return NULL;
    /* "NR args... sp pc" while blocked in a call, "running" or "-1 sp pc"
     * otherwise. A thread of our own process may always read it. */
    char path[64], buf[128];
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)lwp);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return NULL;
    buf[n] = 0;
    char *end;
    long nr = strtol(buf, &end, 10);
    if (end == buf || nr < 0)
        return NULL;
    for (size_t i = 0; i < sizeof unrestarted / sizeof unrestarted[0]; i++)
        if (unrestarted[i].nr == nr)
            return unrestarted[i].name;
    return NULL;
}

/* ------------------------------------------- async-signal-safe formatting */

struct line { char buf[512]; size_t len; };

static void put(struct line *l, const char *s)
{
    while (*s && l->len < sizeof l->buf - 1)
        l->buf[l->len++] = *s++;
}

static void put_num(struct line *l, unsigned long long v, unsigned base, const char *prefix)
{
    char tmp[24];
    int i = 0;
    do {
        tmp[i++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    put(l, prefix);
    while (i && l->len < sizeof l->buf - 1)
        l->buf[l->len++] = tmp[--i];
}

static void flush(struct line *l)
{
    size_t done = 0;
    while (done < l->len) {
        ssize_t r = write(2, l->buf + done, l->len - done);
        if (r <= 0)
            break;
        done += (size_t)r;
    }
    l->len = 0;
}

static void print_frame(struct line *l, int i, const char *pc, bool first)
{
    char name[200];
    uintptr_t off = 0, obj_off = 0;
    const char *obj = NULL;
    put(l, "    #");
    put_num(l, (unsigned)i, 10, "");
    put(l, i < 10 ? "  " : " ");
    put_num(l, (uintptr_t)pc, 16, "0x");
    put(l, " ");
    /* Return addresses point after the call: look the call itself up. */
    if (weft__unwind_symbol_safe(first ? pc : pc - 1, name, sizeof name, &off, &obj,
                                 &obj_off) == 0) {
        if (name[0]) {
            put(l, name);
            put_num(l, off + !first, 16, "+0x");
            put(l, " (");
            put(l, obj);
            put(l, ")");
        } else {
            put(l, obj);
            put_num(l, obj_off + !first, 16, "+0x");
        }
    } else {
        put(l, "??");
    }
    put(l, "\n");
    flush(l);
}

/* The frames of a signal's ucontext, one line each, to stderr: the
 * innermost ones, and for a deep stack (an overflow's recursion) the
 * outermost ones too, where the recursion began. */
static void print_signal_frames(void *uctx)
{
    void *head[CRASH_HEAD], *tail[CRASH_TAIL];
    int n = weft__unwind_signal_ends(uctx, head, CRASH_HEAD, tail, CRASH_TAIL, CRASH_LIMIT);
    struct line l = { .len = 0 };
    for (int i = 0; i < n && i < CRASH_HEAD; i++)
        print_frame(&l, i, head[i], i == 0);
    if (n <= CRASH_HEAD)
        return;
    int kept = n - CRASH_HEAD < CRASH_TAIL ? n - CRASH_HEAD : CRASH_TAIL;
    if (n - CRASH_HEAD > kept) {
        put(&l, "    ... ");
        put_num(&l, (unsigned)(n - CRASH_HEAD - kept), 10, "");
        put(&l, " more frames ...\n");
        flush(&l);
    }
    for (int i = 0; i < kept; i++)
        print_frame(&l, n - kept + i, tail[i], false);
    if (n == CRASH_LIMIT) {
        put(&l, "    ... (stopped after that many)\n");
        flush(&l);
    }
}

/* Set as crash_posix.c's hook: its message named the fiber, add the frames. */
static void crash_report(weft_fiber *f, int sig, void *uctx)
{
    (void)f;
    (void)sig;
    print_signal_frames(uctx);
}

/* ------------------------------------------------ SIGILL, SIGFPE, SIGABRT */

static const int fatal_sigs[] = { SIGILL, SIGFPE, SIGABRT };
#define NFATAL (sizeof fatal_sigs / sizeof fatal_sigs[0])
static struct sigaction old_fatal[NFATAL];
static int fatal_installed;

static const char *sig_name(int sig)
{
    switch (sig) {
    case SIGILL: return "SIGILL";
    case SIGFPE: return "SIGFPE";
    case SIGABRT: return "SIGABRT";
    default: return "signal";
    }
}

static void on_fatal(int sig, siginfo_t *info, void *uctx)
{
    int saved = errno;
    size_t k = 0;
    while (k < NFATAL && fatal_sigs[k] != sig)
        k++;
    if (k == NFATAL)
        return;
    weft_fiber *f = weft__cur_fiber();
    if (f && f->magic == WEFT_FIBER_MAGIC) {
        struct line l = { .len = 0 };
        put(&l, "weft: fiber ");
        put_num(&l, f->id, 10, "");
        put(&l, " \"");
        put(&l, f->name);
        put(&l, "\" crashed: ");
        put(&l, sig_name(sig));
        if (info->si_code > 0)
            put_num(&l, (uintptr_t)info->si_addr, 16, " at 0x");
        put(&l, "\n");
        flush(&l);
        print_signal_frames(uctx);
    }
    struct sigaction *old = &old_fatal[k];
    if (!weft__sig_chain(old, sig, info, uctx)) {   /* else the program's own handler ran */
        sigaction(sig, old, NULL);
        if (info->si_code <= 0)
            raise(sig);   /* sent, not a fault: pending until we return */
    }
    errno = saved;
}

/* --------------------------------------------------------- dump signal */

static int dump_sig;
static int dump_pipe[2] = { -1, -1 };
static struct sigaction old_dump;
static weft__thread dump_thread;
static int dump_running;

static void on_dump_signal(int sig)
{
    int saved = errno;
    (void)sig;
    ssize_t r = write(dump_pipe[1], "d", 1);   /* full pipe: a dump is pending anyway */
    (void)r;
    errno = saved;
}

static void *dump_main(void *arg)
{
    (void)arg;
    for (;;) {
        char c;
        ssize_t r = read(dump_pipe[0], &c, 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || c == 'q')
            return NULL;
        weft_dump(2);
    }
}

/* WEFT_DUMP_SIGNAL: a number, or a name with or without "SIG"; "0" or ""
 * for none. Unset: SIGQUIT. */
static int parse_dump_signal(void)
{
    const char *s = getenv("WEFT_DUMP_SIGNAL");
    if (!s)
        return SIGQUIT;
    if (!*s)
        return 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (!*end)
        return v > 0 && v < NSIG ? (int)v : 0;
    if (!strncmp(s, "SIG", 3))
        s += 3;
    for (int i = 1; i < NSIG; i++) {
        const char *n = sigabbrev_np(i);
        if (n && !strcmp(n, s))
            return i;
    }
    return 0;
}

static int dump_start(void)
{
    dump_sig = parse_dump_signal();
    if (!dump_sig || dump_sig == SIGKILL || dump_sig == SIGSTOP || dump_sig == SIGURG)
        return 0;
    if (pipe2(dump_pipe, O_CLOEXEC) < 0)
        return -errno;
    fcntl(dump_pipe[1], F_SETFL, O_NONBLOCK);
    int err = weft__thread_start(&dump_thread, dump_main, NULL, "weft/dump");
    if (err < 0) {
        close(dump_pipe[0]);
        close(dump_pipe[1]);
        dump_pipe[0] = dump_pipe[1] = -1;
        return err;
    }
    dump_running = 1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_dump_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(dump_sig, &sa, &old_dump);
    return 0;
}

static void dump_stop(void)
{
    if (!dump_running)
        return;
    sigaction(dump_sig, &old_dump, NULL);
    /* Blocking write for the last byte: the reader is alive and draining. */
    fcntl(dump_pipe[1], F_SETFL, 0);
    ssize_t r = write(dump_pipe[1], "q", 1);
    (void)r;
    weft__thread_join(dump_thread);
    close(dump_pipe[0]);
    close(dump_pipe[1]);
    dump_pipe[0] = dump_pipe[1] = -1;
    dump_running = 0;
}

/* ------------------------------------------------ capturing a running fiber */

enum { CAP_IDLE, CAP_POSTED, CAP_TAKING, CAP_DONE };
static struct {
    _Atomic int state;
    weft_fiber *f;
    void **pcs;
    int max, n;
} cap;
static struct sigaction old_urg;
static int urg_installed;

static void on_urg(int sig, siginfo_t *info, void *uctx)
{
    int saved = errno;
    if (info->si_code == SI_QUEUE && info->si_value.sival_ptr == (void *)&cap) {
        int posted = CAP_POSTED;
        if (atomic_compare_exchange_strong(&cap.state, &posted, CAP_TAKING)) {
            cap.n = weft__cur_fiber() == cap.f ? weft__unwind_signal(uctx, cap.pcs, cap.max) : 0;
            atomic_store(&cap.state, CAP_DONE);
        }
    } else {
        weft__sig_chain(&old_urg, sig, info, uctx);   /* not ours: the program's, if any */
    }
    errno = saved;
}

int weft__diag_capture_running(weft__worker *w, weft_fiber *f, void **pcs, int max)
{
    pthread_t tid;
    if (!urg_installed || !worker_thread(w, &tid))
        return -ENOTSUP;
    cap.f = f;
    cap.pcs = pcs;
    cap.max = max;
    cap.n = 0;
    atomic_store(&cap.state, CAP_POSTED);
    union sigval v = { .sival_ptr = (void *)&cap };
    int err = pthread_sigqueue(tid, SIGURG, v);
    if (err) {
        atomic_store(&cap.state, CAP_IDLE);
        return -err;
    }
    /* A worker thread answers within a scheduling quantum unless it is
     * blocked with signals masked (it never is) or descheduled for long. */
    for (int ms = 0; ms < 500; ms++) {
        if (atomic_load(&cap.state) == CAP_DONE)
            break;
        int posted = CAP_POSTED;
        if (ms == 499 && atomic_compare_exchange_strong(&cap.state, &posted, CAP_IDLE))
            return -ETIMEDOUT;
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
    while (atomic_load(&cap.state) != CAP_DONE)   /* taking: moments away */
        sched_yield();
    int n = cap.n;
    atomic_store(&cap.state, CAP_IDLE);
    return n;
}

/* ------------------------------------------------------------ start/stop */

/* Every worker has stopped (or, in a fork child, is not there): give the
 * signals back. The next runtime's threads record themselves afresh, and
 * until they have, nobody signals a thread that is gone (worker_thread). */
static void forget_workers(void)
{
    memset(worker_lwp, 0, sizeof worker_lwp);
    if (urg_installed) {
        sigaction(SIGURG, &old_urg, NULL);
        urg_installed = 0;
    }
    if (fatal_installed) {
        for (size_t k = 0; k < NFATAL; k++)
            sigaction(fatal_sigs[k], &old_fatal[k], NULL);
        fatal_installed = 0;
    }
    weft__crash_report_hook = NULL;
}

void weft__diag_os_atfork_child(void)
{
    /* The dump thread is gone: give the signal back, close our ends. */
    if (dump_running) {
        sigaction(dump_sig, &old_dump, NULL);
        close(dump_pipe[0]);
        close(dump_pipe[1]);
        dump_pipe[0] = dump_pipe[1] = -1;
        dump_running = 0;
    }
    atomic_store(&cap.state, CAP_IDLE);
    forget_workers();
}

int weft__diag_os_start(void)
{
    weft__unwind_prepare();   /* symbol tables for crash reports, mapped now */
    weft__crash_report_hook = crash_report;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fatal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    for (size_t k = 0; k < NFATAL; k++)
        sigaction(fatal_sigs[k], &sa, &old_fatal[k]);
    fatal_installed = 1;

    sa.sa_sigaction = on_urg;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    if (sigaction(SIGURG, &sa, &old_urg) == 0)
        urg_installed = 1;
    return dump_start();
}

void weft__diag_os_stop(void)
{
    dump_stop();
    forget_workers();
    weft__unwind_release();
}
