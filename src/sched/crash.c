/*
 * The words of a crash report, shared by crash_posix.c (signals) and
 * crash_win32.c (a vectored exception handler). They run where almost
 * nothing is allowed: in a signal handler, or on the last few pages of an
 * overflowed stack. So no stdio and no malloc: the message is assembled
 * by hand into the caller's buffer, which the caller writes with the one
 * system call it may use.
 */
#include "worker.h"

struct msg { char *buf; size_t cap, len; };

static void put(struct msg *m, const char *s)
{
    while (*s && m->len < m->cap - 1)
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
    while (i && m->len < m->cap - 1)
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
    while (i && m->len < m->cap - 1)
        m->buf[m->len++] = tmp[--i];
}

/* Hook for richer reports (backtraces), set by the diagnostics layer. */
void (*weft__crash_report_hook)(weft_fiber *f, int sig, void *uctx);

size_t weft__crash_message(char *buf, size_t cap, weft_fiber *f, const void *addr,
                           bool overflow, const char *fault)
{
    struct msg m = { buf, cap, 0 };
    overflow = overflow || weft__stack_in_guard(f->stack, addr);
    put(&m, "weft: fiber ");
    put_u(&m, f->id);
    put(&m, " \"");
    put(&m, f->name);
    put(&m, "\"");
    if (overflow) {
        put(&m, " overflowed its stack of ");
        put_u(&m, (unsigned long long)(f->stack->hi - f->stack->lo));
        put(&m, " bytes (guard page hit at ");
    } else {
        put(&m, " crashed: ");
        put(&m, fault);
        put(&m, " at ");
    }
    put_x(&m, (unsigned long long)(uintptr_t)addr);
    if (overflow)
        put(&m, ")");
    put(&m, "\n");
    m.buf[m.len] = 0;
    return m.len;
}
