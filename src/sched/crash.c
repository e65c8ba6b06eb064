/*
 * Faults in fibers are never anonymous.
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
 * the message is assembled by hand and written with write(2).
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

struct msg { char buf[512]; size_t len; };

static void put(struct msg *m, const char *s)
{
    while (*s && m->len < sizeof m->buf - 1)
        m->buf[m->len++] = *s++;
}

static void put_u(struct msg *m, unsigned long long v)
{
    char tmp[24];
    int i = 0;
    do {
        tmp[i++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (i && m->len < sizeof m->buf - 1)
        m->buf[m->len++] = tmp[--i];
}

static void put_x(struct msg *m, unsigned long long v)
{
    char tmp[20];
    int i = 0;
    do {
        tmp[i++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    put(m, "0x");
    while (i && m->len < sizeof m->buf - 1)
        m->buf[m->len++] = tmp[--i];
}

/* Hook for richer reports (backtraces), set by the diagnostics layer. */
void (*weft__crash_report_hook)(weft_fiber *f, int sig, void *uctx);

static void on_fault(int sig, siginfo_t *info, void *uctx)
{
    weft_fiber *f = weft__cur_fiber();
    if (f && f->magic == WEFT_FIBER_MAGIC) {
        struct msg m = { .len = 0 };
        put(&m, "weft: fiber ");
        put_u(&m, f->id);
        put(&m, " \"");
        put(&m, f->name);
        put(&m, "\"");
        if (weft__stack_in_guard(f->stack, info->si_addr)) {
            put(&m, " overflowed its stack of ");
            put_u(&m, (unsigned long long)(f->stack->hi - f->stack->lo));
            put(&m, " bytes (guard page hit at ");
        } else {
            put(&m, sig == SIGBUS ? " crashed: SIGBUS at " : " crashed: SIGSEGV at ");
        }
        put_x(&m, (unsigned long long)(uintptr_t)info->si_addr);
        if (weft__stack_in_guard(f->stack, info->si_addr))
            put(&m, ")");
        put(&m, "\n");
        ssize_t wr = write(2, m.buf, m.len);
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
