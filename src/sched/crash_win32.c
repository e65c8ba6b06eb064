/*
 * Faults in fibers are never anonymous: the Windows half (crash_posix.c is
 * the signal half; crash.c words the report).
 *
 * Windows has no signals and no alternate signal stack. A fault becomes an
 * exception, dispatched on the stack that faulted: the system writes the
 * exception and context records below the faulting stack pointer and calls
 * the vectored handlers there, then the frame-based (SEH) handlers. For a
 * stack overflow that stack is, by definition, nearly gone. What makes the
 * report possible is the layout of stack_win32.c together with the TIB
 * fields the switch keeps current: running off a fiber's usable stack hits
 * its PAGE_GUARD pages, the memory manager grows the stack into the guard
 * region like a thread's, and when only the thread's guaranteed bytes are
 * left it raises EXCEPTION_STACK_OVERFLOW with those bytes committed. The
 * handler below then has the guaranteed bytes to run on: its frame is one
 * 512-byte buffer and one WriteFile. Each worker raises its guarantee to
 * GUARANTEE with SetThreadStackGuarantee, so that even the exception
 * dispatcher's records (a CONTEXT alone is 1232 bytes) and the write fit
 * with room to spare; a thread's guarantee can only grow, so doing it on
 * the caller's thread (worker 0) costs that thread nothing it would miss.
 *
 * The handler is the first vectored handler, so it sees the fault before
 * any SEH handler could swallow it. It names the fiber and returns
 * EXCEPTION_CONTINUE_SEARCH: the program's own handlers, or the unhandled
 * exception filter (Windows Error Reporting, a debugger), decide what
 * happens next, as the previous signal disposition does on POSIX. It does
 * not swallow anything.
 */
#include "worker.h"

#include <signal.h>

#define GUARANTEE ((ULONG)16 << 10)

static PVOID handler;
static int installed;

static LONG CALLBACK on_exception(EXCEPTION_POINTERS *ep)
{
    const EXCEPTION_RECORD *rec = ep->ExceptionRecord;
    DWORD code = rec->ExceptionCode;
    if (code != EXCEPTION_STACK_OVERFLOW && code != EXCEPTION_ACCESS_VIOLATION &&
        code != EXCEPTION_GUARD_PAGE)
        return EXCEPTION_CONTINUE_SEARCH;
    weft_fiber *f = weft__cur_fiber();
    if (!f || f->magic != WEFT_FIBER_MAGIC)
        return EXCEPTION_CONTINUE_SEARCH;
    /* Faults on memory carry (read/write, address) as their parameters. */
    const void *addr = rec->NumberParameters >= 2 ? (const void *)rec->ExceptionInformation[1]
                                                 : (const void *)(uintptr_t)ep->ContextRecord->Rsp;
    const char *what = code == EXCEPTION_GUARD_PAGE ? "guard page violation" : "access violation";
    char buf[512];
    size_t len = weft__crash_message(buf, sizeof buf, f, addr, code == EXCEPTION_STACK_OVERFLOW, what);
    DWORD wr;
    WriteFile(GetStdHandle(STD_ERROR_HANDLE), buf, (DWORD)len, &wr, NULL);
    if (weft__crash_report_hook)
        weft__crash_report_hook(f, SIGSEGV, ep->ContextRecord);
    return EXCEPTION_CONTINUE_SEARCH;
}

void weft__crash_install(void)
{
    if (installed++)
        return;
    handler = AddVectoredExceptionHandler(1, on_exception);
}

void weft__crash_uninstall(void)
{
    if (!installed || --installed)
        return;
    if (handler)
        RemoveVectoredExceptionHandler(handler);
    handler = NULL;
}

void weft__crash_thread_init(weft__worker *w)
{
    ULONG g = GUARANTEE;
    SetThreadStackGuarantee(&g);   /* best effort: the report is smaller than the default */
    w->altstack = NULL;
}

void weft__crash_thread_fini(weft__worker *w)
{
    (void)w;
}
