/*
 * The test runner: every TEST() registers itself at startup; the runner runs
 * each in its own child process, so that a crash, a hang or leaked state in
 * one test cannot take others down, and prints one line per test and the
 * total:  "N passed, N failed, N skipped". A test that calls test_skip ends
 * with TEST_SKIP_STATUS and counts as skipped, neither passed nor failed.
 *
 *   weft-test [-l] [-j N] [NAME...]   NAME: run tests whose name contains it
 *
 * Env: WEFT_TEST_JOBS (parallel children, default: CPUs),
 *      WEFT_TEST_TIME_SCALE (multiply timeouts: valgrind, qemu, wine).
 *
 * This file is the portable half; how a child is started, timed out and
 * reaped is in runner_posix.c (fork) and runner_win32.c (CreateProcess).
 */
#define _GNU_SOURCE
#include "runner.h"

#include <stdarg.h>
#include <stdint.h>
#include <unistd.h>

struct test *tests;
size_t ntests;
static size_t captests;

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

int test_under_qemu(void)
{
    const char *q = getenv("WEFT_TEST_QEMU");
    return q && strcmp(q, "0") != 0;
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

void test_skip(const char *fmt, ...)
{
    va_list ap;
    fputs("skipped: ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
    fflush(stderr);
    _exit(TEST_SKIP_STATUS);
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

/* File-scope so that they stay reachable in the children, whose exit()
 * runs the leak checkers over everything the test itself allocated. */
static char **names;
static size_t *sel;

int main(int argc, char **argv)
{
    runner_child_main(argc, argv);
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
        jobs = runner_cpus();
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
    size_t next = 0, done = 0, passed = 0, failed = 0, skipped = 0;
    long active = 0;
    while (done < nsel) {
        while (active < jobs && next < nsel) {
            size_t idx = sel[next++];
            fflush(stdout);
            double t = tests[idx].timeout_s * scale;
            runner_start(idx, t >= 1 ? t : 1);
            active++;
        }
        struct outcome o;
        runner_reap(&o);
        const struct test *t = &tests[o.idx];
        if (o.ok) {
            printf("ok     %-40s %6llu ms\n", t->name, (unsigned long long)o.ms);
            passed++;
        } else if (o.skipped) {
            /* the reason: the line test_skip printed */
            const char *why = o.output ? strstr(o.output, "skipped: ") : NULL;
            int len = why ? (int)strcspn(why + 9, "\r\n") : 0;
            printf("skip   %-40s %.*s\n", t->name, len, why ? why + 9 : "");
            skipped++;
        } else {
            printf("FAIL   %-40s %s\n", t->name, o.why);
            fputs(o.output ? o.output : "", stdout);
            failed++;
        }
        free(o.output);
        active--;
        done++;
    }
    printf("%zu passed, %zu failed, %zu skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
