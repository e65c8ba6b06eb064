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
 * Everything in the handler is async-signal-safe: no stdio, no malloc;
 * the message is assembled by hand (crash.c) and written with write(2).
 */
#define _GNU_SOURCE
#include "worker.h"

#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ALTSTACK_SIZE ((size_t)64 << 10)

static struct sigaction old_segv, old_bus;
static int installed;

static void on_fault(int sig, siginfo_t *info, void *uctx)
{
    weft_fiber *f = weft__cur_fiber();
    if (f && f->magic == WEFT_FIBER_MAGIC) {
        char buf[512];
        size_t len = weft__crash_message(buf, sizeof buf, f, info->si_addr, false,
                                         sig == SIGBUS ? "SIGBUS" : "SIGSEGV");
        ssize_t wr = write(2, buf, len);
        (void)wr;
        if (weft__crash_report_hook)
            weft__crash_report_hook(f, sig, uctx);
    }
    /* Hand the fault to whoever had it before; it re-triggers on return. */
    sigaction(sig, sig == SIGBUS ? &old_bus : &old_segv, NULL);
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
