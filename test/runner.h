/*
 * Between the test runner's portable half (runner.c: registry, selection,
 * the report) and its per-platform half, which starts each test in a child
 * process with a time limit and collects the outcome: runner_posix.c with
 * fork, runner_win32.c by re-running the test binary with CreateProcess.
 */
#ifndef WEFT_TEST_RUNNER_H
#define WEFT_TEST_RUNNER_H

#include "test.h"

#include <stdint.h>

struct test {
    const char *name;
    test_fn fn;
    int timeout_s;
    const char *file;
};

extern struct test *tests;
extern size_t ntests;

/* How a child ended. */
struct outcome {
    size_t idx;          /* which test */
    int ok;              /* exited with status 0 */
    int skipped;         /* exited with TEST_SKIP_STATUS (test_skip): output holds why */
    uint64_t ms;         /* how long it ran */
    char why[160];       /* when not ok: "timed out after ...", "exit status 1", ... */
    char *output;        /* its stdout and stderr, malloc'ed, NUL-terminated */
};

/* Called first with the command line: a platform whose children re-run the
 * binary handles its hidden arguments here (and exits). */
void runner_child_main(int argc, char **argv);
long runner_cpus(void);
uint64_t runner_now_ms(void);
/* Start test idx in a child process that is killed after timeout_s. */
void runner_start(size_t idx, double timeout_s);
/* Wait for any started child to end. */
void runner_reap(struct outcome *o);

#endif
