/*
 * The test runner's Windows half. Windows has no fork, so a child is this
 * same binary run again with a hidden first argument saying what to do:
 *
 *   weft-test --run NAME             run test NAME, exit 0 if it passed
 *   weft-test --child RVA ARG        run the function at image offset RVA
 *                                    with ARG (test_child)
 *
 * Its stdout and stderr are an inherited handle on a temporary file that
 * deletes itself when the last handle closes. The parent waits on the
 * process handles with the earliest time limit as timeout, and kills a
 * child that overruns it with TerminateProcess.
 *
 * test_child's function is named by its offset from the image base (the
 * child may be loaded elsewhere: ASLR), and so is its argument when it
 * points into the image (a string literal, a static); any other argument is
 * passed as its value, which is right for integers and NULL but not for a
 * pointer into the parent's heap or stack: Windows crash tests pass static
 * data or nothing.
 *
 * Crash exit codes are exception codes (0xC00000FD for a stack overflow);
 * test_child maps the ones that are signals on POSIX to -SIGSEGV, -SIGILL,
 * -SIGFPE and -SIGABRT (msvcrt's abort() exits with status 3), so that
 * crash tests read the same on both systems.
 */
#include "runner.h"

#include <fcntl.h>
#include <io.h>
#include <signal.h>
#include <windows.h>

#define MAX_JOBS 32   /* WaitForMultipleObjects takes at most 64 handles */

static char *argv0;

static char *image_base(void) { return (char *)GetModuleHandleW(NULL); }

static size_t image_size(void)
{
    const IMAGE_DOS_HEADER *dos = (const IMAGE_DOS_HEADER *)image_base();
    const IMAGE_NT_HEADERS *nt = (const IMAGE_NT_HEADERS *)(image_base() + dos->e_lfanew);
    return nt->OptionalHeader.SizeOfImage;
}

/* A temporary file the child can inherit as its stdout and stderr. */
static HANDLE temp_output(void)
{
    char dir[MAX_PATH], path[MAX_PATH];
    if (!GetTempPathA(sizeof dir, dir) || !GetTempFileNameA(dir, "wft", 0, path))
        return INVALID_HANDLE_VALUE;
    SECURITY_ATTRIBUTES sa = { sizeof sa, NULL, TRUE };
    return CreateFileA(path, GENERIC_READ | GENERIC_WRITE,
                       FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE, &sa,
                       CREATE_ALWAYS, FILE_ATTRIBUTE_TEMPORARY | FILE_FLAG_DELETE_ON_CLOSE, NULL);
}

static char *slurp(HANDLE h)
{
    LARGE_INTEGER size = { .QuadPart = 0 };
    GetFileSizeEx(h, &size);
    char *s = malloc((size_t)size.QuadPart + 1);
    if (!s)
        return NULL;
    LARGE_INTEGER zero = { .QuadPart = 0 };
    SetFilePointerEx(h, zero, NULL, FILE_BEGIN);
    DWORD got = 0;
    if (!ReadFile(h, s, (DWORD)size.QuadPart, &got, NULL))
        got = 0;
    s[got] = 0;
    return s;
}

/* Run this binary with args, its output going to out. */
static HANDLE spawn_self(const char *args, HANDLE out)
{
    size_t len = strlen(argv0) + strlen(args) + 4;
    char *cmd = malloc(len);
    if (!cmd)
        return NULL;
    snprintf(cmd, len, "\"%s\" %s", argv0, args);
    STARTUPINFOA si;
    memset(&si, 0, sizeof si);
    si.cb = sizeof si;
    si.dwFlags = STARTF_USESTDHANDLES;
    si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
    si.hStdOutput = out;
    si.hStdError = out;
    PROCESS_INFORMATION pi;
    BOOL ok = CreateProcessA(NULL, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi);
    free(cmd);
    if (!ok)
        return NULL;
    CloseHandle(pi.hThread);
    return pi.hProcess;
}

static int exit_to_status(DWORD code)
{
    switch (code) {
    case EXCEPTION_ACCESS_VIOLATION:
    case EXCEPTION_STACK_OVERFLOW:
    case EXCEPTION_GUARD_PAGE:
    case EXCEPTION_IN_PAGE_ERROR:
        return -SIGSEGV;
    case EXCEPTION_ILLEGAL_INSTRUCTION:
    case EXCEPTION_PRIV_INSTRUCTION:
        return -SIGILL;
    case EXCEPTION_INT_DIVIDE_BY_ZERO:
    case EXCEPTION_FLT_DIVIDE_BY_ZERO:
    case EXCEPTION_FLT_INVALID_OPERATION:
        return -SIGFPE;
    case 3:            /* msvcrt's abort() */
    case 0xC0000409:   /* STATUS_STACK_BUFFER_OVERRUN: __fastfail, the UCRT's abort() */
        return -SIGABRT;
    }
    return (int)(code & 0x7fffffff);
}

int test_child(void (*fn)(void *), void *arg, char *out, size_t outsz)
{
    fflush(stdout);
    fflush(stderr);
    HANDLE tmp = temp_output();
    if (tmp == INVALID_HANDLE_VALUE)
        test_fail(__FILE__, __LINE__, "temporary file: error %lu", GetLastError());
    char *base = image_base();
    char args[96];
    if ((char *)arg >= base && (char *)arg < base + image_size())
        snprintf(args, sizeof args, "--child %llx i%llx", (unsigned long long)((char *)fn - base),
                 (unsigned long long)((char *)arg - base));
    else
        snprintf(args, sizeof args, "--child %llx v%llx", (unsigned long long)((char *)fn - base),
                 (unsigned long long)(uintptr_t)arg);
    HANDLE h = spawn_self(args, tmp);
    if (!h)
        test_fail(__FILE__, __LINE__, "CreateProcess: error %lu", GetLastError());
    /* The test's own time limit ends this process and this wait with it;
     * the child is bounded too, so that it cannot outlive us. */
    DWORD limit = (DWORD)(60000 * test_time_scale());
    if (WaitForSingleObject(h, limit) == WAIT_TIMEOUT) {
        TerminateProcess(h, 0x7ffffffe);
        WaitForSingleObject(h, INFINITE);
    }
    DWORD code = 0;
    GetExitCodeProcess(h, &code);
    CloseHandle(h);
    if (out && outsz) {
        char *s = slurp(tmp);
        snprintf(out, outsz, "%s", s ? s : "");
        free(s);
    }
    CloseHandle(tmp);
    return exit_to_status(code);
}

/* In a child, an unhandled exception ends the process with its code:
 * no dialog, no just-in-time debugger (Wine starts winedbg whatever the
 * error mode says). */
static LONG WINAPI die_quietly(EXCEPTION_POINTERS *ep)
{
    (void)ep;
    return EXCEPTION_EXECUTE_HANDLER;
}

void runner_child_main(int argc, char **argv)
{
    argv0 = argv[0];
    /* No error dialogs for crashing children (inherited by them): a crash
     * must be an exit code, not a hang. */
    SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX | SEM_NOOPENFILEERRORBOX);
    if (argc >= 2 && (!strcmp(argv[1], "--run") || !strcmp(argv[1], "--child"))) {
        SetUnhandledExceptionFilter(die_quietly);
        /* Output exactly as written (no \r added before \n), as on POSIX:
         * tests compare what children print. */
        _setmode(_fileno(stdout), _O_BINARY);
        _setmode(_fileno(stderr), _O_BINARY);
    }
    if (argc >= 3 && !strcmp(argv[1], "--run")) {
        setvbuf(stdout, NULL, _IONBF, 0);
        for (size_t i = 0; i < ntests; i++) {
            if (!strcmp(tests[i].name, argv[2])) {
                tests[i].fn();
                fflush(stdout);
                exit(0);
            }
        }
        fprintf(stderr, "no test named %s\n", argv[2]);
        exit(2);
    }
    if (argc >= 4 && !strcmp(argv[1], "--child")) {
        setvbuf(stdout, NULL, _IONBF, 0);
        char *base = image_base();
        void (*fn)(void *) = (void (*)(void *))(base + strtoull(argv[2], NULL, 16));
        unsigned long long a = strtoull(argv[3] + 1, NULL, 16);
        void *arg = argv[3][0] == 'i' ? base + a : (void *)(uintptr_t)a;
        fn(arg);
        fflush(stdout);
        fflush(stderr);
        exit(0);
    }
}

long runner_cpus(void)
{
    DWORD n = GetActiveProcessorCount(ALL_PROCESSOR_GROUPS);
    return n ? (long)(n < MAX_JOBS ? n : MAX_JOBS) : 1;
}

uint64_t runner_now_ms(void) { return GetTickCount64(); }

unsigned long long test_cpu_time_us(void)
{
    FILETIME c, e, k, u;   /* 100 ns units */
    GetProcessTimes(GetCurrentProcess(), &c, &e, &k, &u);
    unsigned long long kt = ((unsigned long long)k.dwHighDateTime << 32) | k.dwLowDateTime;
    unsigned long long ut = ((unsigned long long)u.dwHighDateTime << 32) | u.dwLowDateTime;
    return (kt + ut) / 10;
}

struct running {
    HANDLE proc;
    HANDLE out;
    size_t idx;
    uint64_t start, deadline;
};

static struct running run[MAX_JOBS];
static int nrun;

void runner_start(size_t idx, double timeout_s)
{
    if (nrun == MAX_JOBS) {
        fprintf(stderr, "runner: at most %d parallel tests on Windows\n", MAX_JOBS);
        exit(2);
    }
    struct running *r = &run[nrun];
    r->idx = idx;
    r->out = temp_output();
    if (r->out == INVALID_HANDLE_VALUE) {
        fprintf(stderr, "runner: temporary file: error %lu\n", GetLastError());
        exit(2);
    }
    char args[256];
    snprintf(args, sizeof args, "--run %s", tests[idx].name);
    r->start = runner_now_ms();
    r->deadline = r->start + (uint64_t)(timeout_s * 1000);
    r->proc = spawn_self(args, r->out);
    if (!r->proc) {
        fprintf(stderr, "runner: CreateProcess: error %lu\n", GetLastError());
        exit(2);
    }
    nrun++;
}

void runner_reap(struct outcome *o)
{
    HANDLE hs[MAX_JOBS];
    for (;;) {
        uint64_t now = runner_now_ms(), first = UINT64_MAX;
        for (int i = 0; i < nrun; i++) {
            hs[i] = run[i].proc;
            if (run[i].deadline < first)
                first = run[i].deadline;
        }
        DWORD wait = first <= now ? 0 : (DWORD)(first - now);
        DWORD w = WaitForMultipleObjects((DWORD)nrun, hs, FALSE, wait);
        int k = -1, timed_out = 0;
        if (w < WAIT_OBJECT_0 + (DWORD)nrun) {
            k = (int)(w - WAIT_OBJECT_0);
        } else if (w == WAIT_TIMEOUT) {
            now = runner_now_ms();
            for (int i = 0; i < nrun && k < 0; i++)
                if (run[i].deadline <= now)
                    k = i;
            if (k < 0)
                continue;
            TerminateProcess(run[k].proc, 0x7fffffff);
            WaitForSingleObject(run[k].proc, INFINITE);
            timed_out = 1;
        } else {
            fprintf(stderr, "runner: WaitForMultipleObjects: error %lu\n", GetLastError());
            exit(2);
        }
        struct running *r = &run[k];
        DWORD code = 0;
        GetExitCodeProcess(r->proc, &code);
        memset(o, 0, sizeof *o);
        o->idx = r->idx;
        o->ms = runner_now_ms() - r->start;
        o->ok = !timed_out && code == 0;
        o->skipped = !timed_out && code == TEST_SKIP_STATUS;
        if (timed_out)
            snprintf(o->why, sizeof o->why, "timed out after %llu ms", (unsigned long long)o->ms);
        else if (code >= 0xC0000000u)
            snprintf(o->why, sizeof o->why, "crashed with exception 0x%08lx", (unsigned long)code);
        else
            snprintf(o->why, sizeof o->why, "exit status %lu", (unsigned long)code);
        if (!o->ok)
            o->output = slurp(r->out);
        CloseHandle(r->proc);
        CloseHandle(r->out);
        run[k] = run[--nrun];
        return;
    }
}
