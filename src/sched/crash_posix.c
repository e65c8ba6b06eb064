/*
 * Faults in fibers are never anonymous (POSIX: signals on an alternate
 * stack; crash_win32.c does the same with a vectored exception handler).
 *
 * A stack overflow hits the guard below the fiber's stack and raises
 * SIGSEGV. The handler cannot run on the overflowed stack (it has no room
 * left: the fault is precisely that), so every worker thread gets an
 * alternate signal stack and the handler is installed with SA_ONSTACK.
 * It names the fiber (id, name, stack size), then restores the previous
 * disposition and returns: the faulting instruction runs again and the
 * default action (a core dump, if enabled) or the program's own handler
 * takes it from there.
 *
 * NOT EVERY SIGSEGV IS A CRASH. A garbage collector's write barrier, a
 * JIT's guard pages or a sandbox catch their own faults: their handler
 * fixes the cause (an mprotect) and returns, and the program goes on. If
 * the program had such a handler when the runtime started, every fault
 * that is not a fiber's stack overflow goes straight to it, as often as
 * it happens, with no report of ours, and our handler stays installed
 * for the next overflow. Only an overflow, or a fault with nobody else to
 * take it (SIG_DFL, SIG_IGN), gets the report and the previous
 * disposition back: those are the end of the process anyway.
 *
 * Everything in the handler is async-signal-safe: no stdio, no malloc;
 * the message is assembled by hand (crash.c) and written with write(2).
 */
#define _GNU_SOURCE
#include "worker.h"

#include "san.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ALTSTACK_SIZE ((size_t)64 << 10)

/* Under a sanitizer the handler before ours is normally the sanitizer's,
 * which reports the fault and exits rather than return: a fault in a fiber
 * gets our report first, then goes to that handler (and ours stays). */
#if defined(WEFT_ASAN) || defined(WEFT_TSAN) || defined(WEFT_SAN_UBSAN)
#define PREV_IS_SANITIZER 1
#else
#define PREV_IS_SANITIZER 0
#endif

static struct sigaction old_segv, old_bus;
static int installed;

int weft__sig_chain(const struct sigaction *old, int sig, siginfo_t *info, void *uctx)
{
    bool info_style = old->sa_flags & SA_SIGINFO;
    if (info_style ? !old->sa_sigaction
                   : old->sa_handler == SIG_DFL || old->sa_handler == SIG_IGN)
        return 0;
    /* As the kernel would call it: with its own mask blocked, and the
     * signal itself unless it asked for SA_NODEFER. (A one-shot handler,
     * SA_RESETHAND, is the caller's to restore instead.) */
    sigset_t mask = old->sa_mask, was;
    if (!(old->sa_flags & SA_NODEFER))
        sigaddset(&mask, sig);
    pthread_sigmask(SIG_BLOCK, &mask, &was);
    if (info_style)
        old->sa_sigaction(sig, info, uctx);
    else
        old->sa_handler(sig);
    pthread_sigmask(SIG_SETMASK, &was, NULL);
    return 1;
}

static void on_fault(int sig, siginfo_t *info, void *uctx)
{
    int saved = errno;
    struct sigaction *old = sig == SIGBUS ? &old_bus : &old_segv;
    weft_fiber *f = weft__cur_fiber();
    bool fiber = f && f->magic == WEFT_FIBER_MAGIC;
    bool overflow = fiber && info->si_code > 0 && weft__stack_in_guard(f->stack, info->si_addr);
    /* Not an overflow: the program's own handler, every time, and ours
     * stays (see the top); under a sanitizer, after our report. */
    bool chain = !overflow && !(old->sa_flags & SA_RESETHAND);
    if (chain && !PREV_IS_SANITIZER && weft__sig_chain(old, sig, info, uctx)) {
        errno = saved;
        return;
    }
    if (fiber) {
        char buf[512];
        size_t len = weft__crash_message(buf, sizeof buf, f, info->si_addr, false,
                                         sig == SIGBUS ? "SIGBUS" : "SIGSEGV");
        ssize_t wr = write(2, buf, len);
        (void)wr;
        if (weft__crash_report_hook)
            weft__crash_report_hook(f, sig, uctx);
    }
    if (chain && PREV_IS_SANITIZER && weft__sig_chain(old, sig, info, uctx)) {
        errno = saved;
        return;
    }
    /* Hand it to whoever had it before: a fault re-triggers on return; a
     * sent signal is raised again. */
    sigaction(sig, old, NULL);
    if (info->si_code <= 0)
        raise(sig);
    errno = saved;
}

void weft__crash_install(void)
{
    if (installed++)
        return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
}

void weft__crash_uninstall(void)
{
    if (!installed || --installed)
        return;
    sigaction(SIGSEGV, &old_segv, NULL);
    sigaction(SIGBUS, &old_bus, NULL);
}

void weft__crash_atfork_child(void)
{
    if (!installed)
        return;
    installed = 1;
    weft__crash_uninstall();
}

void weft__crash_thread_init(weft__worker *w)
{
    stack_t old;
    /* Keep a thread's own alternate stack if it has one (worker 0 is the
     * caller's thread). */
    if (sigaltstack(NULL, &old) == 0 && !(old.ss_flags & SS_DISABLE)) {
        w->altstack = NULL;
        return;
    }
    void *p = mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        w->altstack = NULL;
        return;
    }
    stack_t ss = { .ss_sp = p, .ss_size = ALTSTACK_SIZE, .ss_flags = 0 };
    if (sigaltstack(&ss, NULL) < 0) {
        munmap(p, ALTSTACK_SIZE);
        p = NULL;
    }
    w->altstack = p;
}

void weft__crash_thread_fini(weft__worker *w)
{
    if (!w->altstack)
        return;
    stack_t ss = { .ss_sp = NULL, .ss_size = 0, .ss_flags = SS_DISABLE };
    sigaltstack(&ss, NULL);
    munmap(w->altstack, ALTSTACK_SIZE);
    w->altstack = NULL;
}
