/*
 * The test runner: every TEST() registers itself at startup; the runner runs
 * each in its own child process, so that a crash, a hang or leaked state in
 * one test cannot take others down, and prints one line per test and the
 * total:  "N passed, N failed".
 *
 *   weft-test [-l] [-j N] [NAME...]   NAME: run tests whose name contains it
 *
 * Env: WEFT_TEST_JOBS (parallel children, default: CPUs),
 *      WEFT_TEST_TIME_SCALE (multiply timeouts: valgrind, qemu, wine).
 */
#define _GNU_SOURCE
#include "test.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <time.h>

#ifdef _WIN32
#include <windows.h>
#else
#include <signal.h>
#include <sys/wait.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <unistd.h>
#endif

struct test {
    const char *name;
    test_fn fn;
    int timeout_s;
    const char *file;
};

static struct test *tests;
static size_t ntests, captests;

void test_register(const char *name, test_fn fn, int timeout_s, const char *file)
{
    if (ntests == captests) {
        captests = captests ? captests * 2 : 64;
        tests = realloc(tests, captests * sizeof *tests);
        if (!tests)
            abort();
    }
    tests[ntests++] = (struct test){ name, fn, timeout_s, file };
}

double test_time_scale(void)
{
    const char *s = getenv("WEFT_TEST_TIME_SCALE");
    double v = s ? atof(s) : 1.0;
    return v > 0 ? v : 1.0;
}

void test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    _exit(1);
}

void *test_run_cfg(const weft_config *cfg, void *(*fn)(void *), void *arg)
{
    void *ret = NULL;
    int r = weft_run(cfg, fn, arg, &ret);
    if (r != 0)
        test_fail(__FILE__, __LINE__, "weft_run returned %d", r);
    return ret;
}

void *test_run(void *(*fn)(void *), void *arg)
{
    return test_run_cfg(NULL, fn, arg);
}

static int cmp_test(const void *a, const void *b)
{
    const struct test *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    return c ? c : strcmp(x->name, y->name);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

#ifndef _WIN32

/* A forked helper process does not inherit the test's alarm: if it hung
 * and the test was killed for its time, it would live on (and spin) as an
 * orphan. It dies with its parent instead. */
void die_with_parent(void)
{
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        _exit(1);   /* the parent died before we asked */
#endif
}

int test_child(void (*fn)(void *), void *arg, char *out, size_t outsz)
{
    fflush(stdout);
    fflush(stderr);
    FILE *tmp = tmpfile();
    if (!tmp)
        test_fail(__FILE__, __LINE__, "tmpfile: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        test_fail(__FILE__, __LINE__, "fork: %s", strerror(errno));
    if (pid == 0) {
        die_with_parent();
        dup2(fileno(tmp), 1);
        dup2(fileno(tmp), 2);
        fn(arg);
        fflush(stdout);
        fflush(stderr);
        _exit(0);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (out && outsz) {
        rewind(tmp);
        size_t n = fread(out, 1, outsz - 1, tmp);
        out[n] = 0;
    }
    fclose(tmp);
    return WIFSIGNALED(st) ? -WTERMSIG(st) : WEXITSTATUS(st);
}

struct running {
    pid_t pid;
    size_t idx;
    FILE *out;
    uint64_t start;
};

static void print_output(FILE *f)
{
    char buf[4096];
    size_t n;
    rewind(f);
    while ((n = fread(buf, 1, sizeof buf, f)) > 0)
        fwrite(buf, 1, n, stdout);
}

/* File-scope so that they stay reachable in the children, whose exit()
 * runs the leak checkers over everything the test itself allocated. */
static char **names;
static size_t *sel;
static struct running *run;

int main(int argc, char **argv)
{
    int list = 0;
    long jobs = 0;
    const char *env_jobs = getenv("WEFT_TEST_JOBS");
    if (env_jobs)
        jobs = atol(env_jobs);
    names = calloc((size_t)argc + 1, sizeof *names);
    int nnames = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-l"))
            list = 1;
        else if (!strcmp(argv[i], "-j") && i + 1 < argc)
            jobs = atol(argv[++i]);
        else
            names[nnames++] = argv[i];
    }
    if (jobs <= 0)
        jobs = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1;
    qsort(tests, ntests, sizeof *tests, cmp_test);

    sel = calloc(ntests + 1, sizeof *sel);
    size_t nsel = 0;
    for (size_t i = 0; i < ntests; i++) {
        int want = nnames == 0;
        for (int k = 0; k < nnames; k++)
            if (strstr(tests[i].name, names[k]))
                want = 1;
        if (want)
            sel[nsel++] = i;
    }
    if (list) {
        for (size_t i = 0; i < nsel; i++)
            printf("%s\n", tests[sel[i]].name);
        return 0;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    double scale = test_time_scale();
    run = calloc((size_t)jobs, sizeof *run);
    size_t next = 0, done = 0, passed = 0, failed = 0;
    long active = 0;
    while (done < nsel) {
        while (active < jobs && next < nsel) {
            struct running *r = NULL;
            for (long k = 0; k < jobs; k++)
                if (!run[k].pid) { r = &run[k]; break; }
            r->idx = sel[next++];
            r->out = tmpfile();
            r->start = now_ms();
            fflush(stdout);
            pid_t pid = fork();
            if (pid == 0) {
                dup2(fileno(r->out), 1);
                dup2(fileno(r->out), 2);
                setvbuf(stdout, NULL, _IONBF, 0);
                unsigned t = (unsigned)(tests[r->idx].timeout_s * scale);
                alarm(t ? t : 1);
                tests[r->idx].fn();
                fflush(stdout);
                exit(0);
            }
            r->pid = pid;
            active++;
        }
        int st;
        pid_t pid = waitpid(-1, &st, 0);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            perror("waitpid");
            return 2;
        }
        struct running *r = NULL;
        for (long k = 0; k < jobs; k++)
            if (run[k].pid == pid) { r = &run[k]; break; }
        if (!r)
            continue;
        const struct test *t = &tests[r->idx];
        uint64_t ms = now_ms() - r->start;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            printf("ok     %-40s %6llu ms\n", t->name, (unsigned long long)ms);
            passed++;
        } else {
            if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
                printf("FAIL   %-40s timed out after %llu ms\n", t->name, (unsigned long long)ms);
            else if (WIFSIGNALED(st))
                printf("FAIL   %-40s killed by signal %d (%s)\n", t->name, WTERMSIG(st), strsignal(WTERMSIG(st)));
            else
                printf("FAIL   %-40s exit status %d\n", t->name, WEXITSTATUS(st));
            print_output(r->out);
            failed++;
        }
        fclose(r->out);
        r->pid = 0;
        active--;
        done++;
    }
    printf("%zu passed, %zu failed\n", passed, failed);
    return failed ? 1 : 0;
}

#endif /* !_WIN32 */
