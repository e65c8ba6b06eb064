/* The gdb extension (tools/gdb/weft.py) driven by `gdb -batch`: `info
 * fibers` and `fiber bt` on a live process stopped with a fiber parked three
 * calls deep, then on the core file of the same process. */
#define _GNU_SOURCE
#include "diag_test.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static int ready_fd = -1, go_fd = -1;

static void *gdb_main(void *arg)
{
    (void)arg;
    weft_fiber *f;
    weft_attr a = { .name = "gdbdeep" };
    if (weft_spawn(&f, &a, deep_fiber, NULL) < 0)
        _exit(20);
    void *pcs[8];
    if (backtrace_parked(f, pcs, 8) < 4)
        _exit(23);   /* CTX=fcontext: gdb would not know the frame either */
    dprintf(ready_fd, "ready %llu\n", (unsigned long long)weft_id(f));
    char c;
    while (read(go_fd, &c, 1) < 0 && errno == EINTR)   /* blocks this worker: fine here */
        ;
    abort();   /* a core file with the fiber still parked */
}

/* Run cmd, return its output (stdout and stderr) in a static buffer. */
static char *run(const char *cmd)
{
    static char out[1 << 16];
    char full[PATH_MAX * 4];
    snprintf(full, sizeof full, "%s 2>&1", cmd);
    FILE *p = popen(full, "r");
    ASSERT(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    pclose(p);
    return out;
}

static void check_output(const char *out, unsigned long long id)
{
    char want[96];
    snprintf(want, sizeof want, "%llu", id);
    ASSERT_CONTAINS(out, "\"gdbdeep\"");
    ASSERT_CONTAINS(out, "parked on sleep");
    ASSERT_CONTAINS(out, "in deep_level3 at");
    ASSERT_CONTAINS(out, "in deep_level2 at");
    ASSERT_CONTAINS(out, "in deep_level1 at");
    ASSERT_CONTAINS(out, "in deep_fiber at");
    ASSERT_CONTAINS(out, "weft_sleep");
    /* innermost first */
    ASSERT(strstr(out, "in deep_level3 at") < strstr(out, "in deep_level1 at"));
}

TEST_TIMEOUT(gdb_info_fibers_and_fiber_bt, 120)
{
    if (RUNNING_ON_VALGRIND) {   /* gdb cannot attach to a process valgrind runs */
        test_skip("under valgrind");
    }
#if !defined(__x86_64__)
    test_skip("tools/gdb/weft.py knows the x86-64 switch frame only");
#endif
    if (system("command -v gdb >/dev/null 2>&1") != 0) {   /* not root: deps.sh named it */
        test_skip("gdb is not installed");
    }
    char script[PATH_MAX], exe[PATH_MAX];
    ASSERT(realpath("tools/gdb/weft.py", script));   /* make check runs at the top */
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    ASSERT_GT(n, 0);
    exe[n] = 0;
    char dir[] = "/tmp/weft-gdb-XXXXXX";
    ASSERT(mkdtemp(dir));

    int rp[2], gp[2];
    ASSERT_EQ(pipe(rp), 0);
    ASSERT_EQ(pipe(gp), 0);
    fflush(stdout);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        die_with_parent();
        close(rp[0]);
        close(gp[1]);
        ready_fd = rp[1];
        go_fd = gp[0];
        struct rlimit rl = { RLIM_INFINITY, RLIM_INFINITY };
        setrlimit(RLIMIT_CORE, &rl);
        if (chdir(dir) < 0)
            _exit(21);
        weft_config cfg = { .workers = 2, .watchdog_ms = -1u };
        weft_run(&cfg, gdb_main, NULL, NULL);
        _exit(22);
    }
    close(rp[1]);
    close(gp[0]);
    FILE *rf = fdopen(rp[0], "r");
    unsigned long long id = 0;
    if (fscanf(rf, "ready %llu", &id) != 1) {
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        fclose(rf);
        close(gp[1]);
        rmdir(dir);
        /* 23: this build cannot unwind a suspended fiber, nor can gdb */
        ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 23);
        test_skip("no unwinding of suspended fibers in this build");
    }

    /* live: attach, look, detach */
    char cmd[PATH_MAX * 4];
    snprintf(cmd, sizeof cmd,
             "gdb -batch -nx -p %d -x %s -ex 'info fibers' -ex 'fiber bt %llu' "
             "-ex 'fiber bt 999999'", (int)pid, script, id);
    char *out = run(cmd);
    printf("---- live\n%s", out);
    check_output(out, id);
    ASSERT_CONTAINS(out, "no live fiber with id 999999");
    ASSERT_CONTAINS(out, "\"main\"");

    /* the process carried on unharmed: let it dump core */
    ASSERT_EQ(write(gp[1], "g", 1), 1);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    fclose(rf);
    close(gp[1]);
    ASSERT(WIFSIGNALED(st));
    ASSERT_EQ(WTERMSIG(st), SIGABRT);

    /* Where the kernel put the core: "core" or "core.PID" in the child's
     * cwd unless core_pattern pipes it elsewhere (systemd-coredump). */
    char pattern[256] = "";
    FILE *cp = fopen("/proc/sys/kernel/core_pattern", "r");
    if (cp) {
        if (!fgets(pattern, sizeof pattern, cp))
            pattern[0] = 0;
        fclose(cp);
    }
    char core[PATH_MAX + 32];
    snprintf(core, sizeof core, "%s/core", dir);
    if (access(core, R_OK) != 0)
        snprintf(core, sizeof core, "%s/core.%d", dir, (int)pid);
    if (pattern[0] == '|' || strchr(pattern, '/')) {
        printf("core_pattern is %s: the core part is skipped\n", pattern);
    } else {
        ASSERT_EQ(access(core, R_OK), 0);
        snprintf(cmd, sizeof cmd, "gdb -batch -nx %s %s -x %s -ex 'info fibers' -ex 'fiber bt %llu'",
                 exe, core, script, id);
        out = run(cmd);
        printf("---- core\n%s", out);
        check_output(out, id);
        ASSERT_CONTAINS(out, "Program terminated with signal SIGABRT");
    }
    unlink(core);
    rmdir(dir);
}
