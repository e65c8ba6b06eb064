/*
 * The test runner's POSIX half: each test runs in a forked child whose
 * stdout and stderr go to a temporary file, killed by SIGALRM at its time
 * limit; test_child forks the same way.
 */
#define _GNU_SOURCE
#include "runner.h"

#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

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

void test_tool(const char *cmd, const char *expect)
{
    char out[16384] = "";
    FILE *p = popen(cmd, "r");
    if (!p)
        test_fail(__FILE__, __LINE__, "popen %s: %s", cmd, strerror(errno));
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int st = pclose(p);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || !strstr(out, expect))
        test_fail(__FILE__, __LINE__, "%s found problems:\n%s", cmd, out);
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

void runner_child_main(int argc, char **argv)
{
    (void)argc;
    (void)argv;   /* children are forked, not re-run */
}

long runner_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? n : 1;
}

unsigned long long test_cpu_time_us(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (unsigned long long)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1000000u +
           (unsigned long long)(r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

uint64_t runner_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct running {
    pid_t pid;
    size_t idx;
    FILE *out;
    uint64_t start;
    struct running *next;
};

static struct running *run;

void runner_start(size_t idx, double timeout_s)
{
    struct running *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->idx = idx;
    r->out = tmpfile();
    r->start = runner_now_ms();
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fileno(r->out), 1);
        dup2(fileno(r->out), 2);
        setvbuf(stdout, NULL, _IONBF, 0);
        alarm((unsigned)timeout_s);
        tests[idx].fn();
        fflush(stdout);
        exit(0);
    }
    if (pid < 0) {
        perror("fork");
        exit(2);
    }
    r->pid = pid;
    r->next = run;
    run = r;
}

static char *slurp(FILE *f)
{
    long len;
    fflush(f);
    if (fseek(f, 0, SEEK_END) < 0 || (len = ftell(f)) < 0)
        len = 0;
    rewind(f);
    char *s = malloc((size_t)len + 1);
    if (!s)
        return NULL;
    size_t n = fread(s, 1, (size_t)len, f);
    s[n] = 0;
    return s;
}

void runner_reap(struct outcome *o)
{
    for (;;) {
        int st;
        pid_t pid = waitpid(-1, &st, 0);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            perror("waitpid");
            exit(2);
        }
        struct running **pp = &run;
        while (*pp && (*pp)->pid != pid)
            pp = &(*pp)->next;
        struct running *r = *pp;
        if (!r)
            continue;
        *pp = r->next;
        memset(o, 0, sizeof *o);
        o->idx = r->idx;
        o->ms = runner_now_ms() - r->start;
        o->ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
        o->skipped = WIFEXITED(st) && WEXITSTATUS(st) == TEST_SKIP_STATUS;
        if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
            snprintf(o->why, sizeof o->why, "timed out after %llu ms", (unsigned long long)o->ms);
        else if (WIFSIGNALED(st))
            snprintf(o->why, sizeof o->why, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
        else
            snprintf(o->why, sizeof o->why, "exit status %d", WEXITSTATUS(st));
        if (!o->ok)
            o->output = slurp(r->out);
        fclose(r->out);
        free(r);
        return;
    }
}
