/*
 * The tutorial's programs (docs/tutorial.md, examples/tutorial_*.c), run as
 * the chapter runs them, with what they print checked against what the
 * chapter says they print: a change that breaks a step, or changes what it
 * teaches, fails here instead of leaving the chapter wrong.
 *
 * Each program runs in a child process with its stdout and stderr on a
 * pipe, for a bounded time: a step that hangs is killed and fails. The
 * children die with the test's process (die_with_parent), so a failed
 * assertion leaves no server behind. The steps that do I/O run once per
 * backend (IO_TEST: WEFT_IO, inherited by the child).
 *
 * The chapter's quotes are checked too (tutorial_quotes_its_programs):
 * every line of code it shows is in the program of its step.
 *
 * Under qemu-user a guest's execve of another guest binary needs
 * binfmt_misc, which the emulated test cannot count on: skipped there.
 */
#define _GNU_SOURCE
#include "test_io.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void skip_under_qemu(void)
{
    if (test_under_qemu())
        test_skip("under qemu-user");
}

/* A running step: its pid, and everything it has printed so far. */
struct step {
    pid_t pid;
    int out;            /* read end of its stdout+stderr; -1 at EOF */
    char text[16384];
    size_t len;
};

static void step_start(struct step *s, const char *name, const char *arg)
{
    char path[PATH_MAX + 64];
    example_path(name, path, sizeof path);
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        die_with_parent();
        dup2(p[1], 1);
        dup2(p[1], 2);
        execl(path, name, arg, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    s->pid = pid;
    s->out = p[0];
    s->len = 0;
    s->text[0] = 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* Read what s prints until needle has appeared n times (needle NULL: until
 * EOF); fail after ~10 s, killing it. */
static void step_read(struct step *s, const char *needle, int n)
{
    double end = now_s() + 10 * test_time_scale();
    while (needle ? count(s->text, needle) < n : s->out >= 0) {
        double left = end - now_s();
        struct pollfd p = { .fd = s->out, .events = POLLIN };
        if (s->out < 0 || left <= 0 || poll(&p, 1, (int)(left * 1000) + 1) == 0) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, NULL, 0);
            test_fail(__FILE__, __LINE__, "waited in vain for %s; it printed:\n%s",
                      needle ? needle : "its end", s->text);
        }
        ssize_t r = read(s->out, s->text + s->len, sizeof s->text - 1 - s->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            close(s->out);
            s->out = -1;
            continue;
        }
        s->len += (size_t)r;
        s->text[s->len] = 0;
        ASSERT(s->len < sizeof s->text - 1);
    }
}

/* Read s to its end and reap it; its exit status, or 128 + the signal. */
static int step_finish(struct step *s)
{
    step_read(s, NULL, 0);
    int st;
    while (waitpid(s->pid, &st, 0) < 0)
        ASSERT_EQ(errno, EINTR);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Run a step to its end: it must exit with 0 within ~10 s. */
static void step_run(struct step *s, const char *name, const char *arg)
{
    step_start(s, name, arg);
    int st = step_finish(s);
    if (st != 0)
        test_fail(__FILE__, __LINE__, "%s exited with %d; it printed:\n%s", name, st, s->text);
}

/* The lines of want appear in s's output, each after the one before. */
static void expect_in_order(const struct step *s, const char *const *want, int n)
{
    const char *at = s->text;
    for (int i = 0; i < n; i++) {
        const char *p = strstr(at, want[i]);
        if (!p)
            test_fail(__FILE__, __LINE__, "no \"%s\" after what came before; it printed:\n%s",
                      want[i], s->text);
        at = p + strlen(want[i]);
    }
}

TEST(tutorial_1_hello)
{
    skip_under_qemu();
    struct step s;
    step_run(&s, "tutorial_1_hello", NULL);
    /* the wake-ups come in the order of their sleeps, but the chapter does
     * not promise it against a loaded machine: each is there once */
    ASSERT_EQ(count(s.text, "main: spawned 3 fibers\n"), 1);
    ASSERT_EQ(count(s.text, "quick woke after 10 ms\n"), 1);
    ASSERT_EQ(count(s.text, "middle woke after 20 ms\n"), 1);
    ASSERT_EQ(count(s.text, "slow woke after 30 ms\n"), 1);
    static const char *const joins[] = {
        "main: joined slow, it returned 60\n",
        "main: joined quick, it returned 20\n",
        "main: joined middle, it returned 40\n",
    };
    expect_in_order(&s, joins, 3);
}

/* Step 2's server and step 3's client together, on a free loopback port. */
IO_TEST(tutorial_2_3_echo_server_and_client)
{
    skip_under_qemu();
    uint16_t port;
    close(io_listen(1, &port));   /* a port nobody listens on now */
    char arg[16];
    snprintf(arg, sizeof arg, "%u", port);

    struct step srv;
    step_start(&srv, "tutorial_2_echo_server", arg);
    char listening[64];
    snprintf(listening, sizeof listening, "listening on 127.0.0.1:%u (io: %s)\n", port,
             getenv("WEFT_IO"));
    step_read(&srv, listening, 1);

    struct step cli;
    step_run(&cli, "tutorial_3_echo_client", arg);
    static const char *const replies[] = {
        "client 1 got back: hello from client 1\n",
        "client 2 got back: hello from client 2\n",
        "client 3 got back: hello from client 3\n",
    };
    expect_in_order(&cli, replies, 3);
    ASSERT_EQ(count(cli.text, "\n"), 3);

    /* the server saw three connections and echoed each one's 20 bytes */
    step_read(&srv, "connection closed after 20 bytes\n", 3);
    ASSERT_EQ(count(srv.text, "accepted a connection from 127.0.0.1:"), 3);

    /* it serves until it is stopped */
    ASSERT_EQ(kill(srv.pid, SIGTERM), 0);
    ASSERT_EQ(step_finish(&srv), 128 + SIGTERM);
}

TEST(tutorial_4_channels)
{
    skip_under_qemu();
    struct step s;
    step_run(&s, "tutorial_4_channels", NULL);
    ASSERT_STR_EQ(s.text, "main: 10 squares, sum 385; the last receive said -EPIPE "
                          "(closed and drained)\n");
}

IO_TEST(tutorial_5_cancel_deadline)
{
    skip_under_qemu();
    struct step s;
    step_run(&s, "tutorial_5_cancel_deadline", NULL);
    static const char *const lines[] = {
        "main: cancelling the reader\n",
        "reader: weft_read returned -ECANCELED\n",
        "reader: then weft_sleep returned -ECANCELED, weft_cancelled() = 1\n",
        "deadline: weft_chan_recv returned -ETIMEDOUT after ",
        "deadline: past it, weft_sleep returned -ETIMEDOUT at once\n",
        "deadline: cleared, weft_sleep returned 0\n",
        "main: returning, one fiber still asleep\n",
        "forgotten: weft_sleep returned -ECANCELED\n",
        "weft_run returned 0: no fiber is left\n",
    };
    expect_in_order(&s, lines, 9);
    ASSERT_EQ(count(s.text, "\n"), 9);
    /* the receive gave up at the deadline, not before */
    unsigned ms = 0;
    const char *p = strstr(s.text, "-ETIMEDOUT after ");
    ASSERT_EQ(sscanf(p, "-ETIMEDOUT after %u ms", &ms), 1);
    ASSERT_GE(ms, 100);
}

/* The dump's block for one fiber: its line, then its backtrace, up to the
 * next fiber's line or the end; in out. */
static void fiber_block(const char *dump, const char *head, char *out, size_t cap)
{
    const char *p = strstr(dump, head);
    if (!p)
        test_fail(__FILE__, __LINE__, "no \"%s\" in the dump:\n%s", head, dump);
    const char *end = strstr(p + 1, "\nfiber ");
    if (!end)
        end = strstr(p, "\nweft: end of dump");
    ASSERT(end != NULL);
    size_t n = (size_t)(end - p);
    ASSERT_LT(n, cap);
    memcpy(out, p, n);
    out[n] = 0;
}

IO_TEST(tutorial_6_dump)
{
    skip_under_qemu();
    struct step s;
    step_run(&s, "tutorial_6_dump", NULL);
    static const char *const frame[] = {
        "weft: dump of 5 fibers on ",
        "weft: end of dump\n",
        "main: all four fibers let go and joined\n",
    };
    expect_in_order(&s, frame, 3);
    /* each fiber, in whatever order the dump walks the stacks: its state,
     * and in its backtrace the call it waits in, down to the root frame */
    static const struct { const char *head, *state, *call; } fibers[] = {
        { "\"main\" (main): ", "running on worker ", "main_fiber+" },
        { "\"sleeper\": ", "parked on sleep until now+", "weft_sleep+" },
        { "\"receiver\": ", "parked on channel receive 0x", "chan_op+" },
        { "\"locker\": ", "parked on mutex 0x", "mutex_lock_slow+" },
        { "\"reader\": ", "parked on fd ", "weft_read+" },
    };
    for (size_t i = 0; i < sizeof fibers / sizeof *fibers; i++) {
        char b[4096];
        fiber_block(s.text, fibers[i].head, b, sizeof b);
        /* the root frame: our switch's trampoline, or Boost's make_fcontext
         * in a CTX=fcontext build */
        const char *root = strstr(b, "make_fcontext+") ? "make_fcontext+" : "weft__ctx_trampoline+";
        const char *want[] = { fibers[i].head, fibers[i].state, "; stack ", " KiB, high-water ",
                               fibers[i].call, "fiber_entry+", root };
        struct step one = { .len = strlen(b) };
        memcpy(one.text, b, one.len + 1);
        expect_in_order(&one, want, 7);
    }
    ASSERT_CONTAINS(s.text, "running on worker ");
    ASSERT_CONTAINS(s.text, " (the caller); stack ");
    /* the fd in the reader's line is the pipe's read end, and it is a read */
    int fd = -1;
    const char *p = strstr(s.text, "parked on fd ");
    ASSERT_EQ(sscanf(p, "parked on fd %d read, for ", &fd), 1);
    ASSERT_GT(fd, 2);
    ASSERT_CONTAINS(p, " read, for ");
}

/* Read a whole file into a malloc'd string; fails the test if it cannot. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        test_fail(__FILE__, __LINE__, "%s: %s", path, strerror(errno));
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ASSERT(buf != NULL);
    size_t n;
    while ((n = fread(buf + len, 1, cap - 1 - len, f)) > 0) {
        len += n;
        if (len == cap - 1) {
            cap *= 2;
            buf = realloc(buf, cap);
            ASSERT(buf != NULL);
        }
    }
    fclose(f);
    buf[len] = 0;
    return buf;
}

/* Does text have a line that, leading and trailing blanks aside, is line? */
static int has_line(const char *text, const char *line, size_t len)
{
    for (const char *p = text; *p;) {
        const char *end = strchr(p, '\n');
        if (!end)
            end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && isspace((unsigned char)*a))
            a++;
        while (b > a && isspace((unsigned char)b[-1]))
            b--;
        if ((size_t)(b - a) == len && memcmp(a, line, len) == 0)
            return 1;
        p = *end ? end + 1 : end;
    }
    return 0;
}

/* The code docs/tutorial.md quotes under "## Step N" is the code of
 * examples/tutorial_N_*.c, line for line: a line may be left out (the
 * chapter elides with "..."), never changed. The tests run from the top of
 * the tree (make check). */
TEST(tutorial_quotes_its_programs)
{
    char *doc = slurp("docs/tutorial.md");
    char *prog = NULL;
    int step = 0, in_c = 0, lineno = 0, checked = 0;
    for (char *p = doc, *next; *p; p = next) {
        char *end = strchr(p, '\n');
        next = end ? end + 1 : p + strlen(p);
        if (end)
            *end = 0;
        lineno++;
        if (!in_c && sscanf(p, "## Step %d", &step) == 1) {
            char pat[64];
            glob_t g;
            snprintf(pat, sizeof pat, "examples/tutorial_%d_*.c", step);
            ASSERT_EQ(glob(pat, 0, NULL, &g), 0);
            ASSERT_EQ(g.gl_pathc, 1);
            free(prog);
            prog = slurp(g.gl_pathv[0]);
            globfree(&g);
        } else if (strncmp(p, "```", 3) == 0) {
            in_c = !in_c && strcmp(p, "```c") == 0;
        } else if (in_c) {
            const char *a = p, *b = p + strlen(p);
            while (a < b && isspace((unsigned char)*a))
                a++;
            while (b > a && isspace((unsigned char)b[-1]))
                b--;
            if (a == b || strstr(a, "..."))
                continue;   /* blank, or elided */
            if (!prog)
                test_fail(__FILE__, __LINE__, "docs/tutorial.md:%d: code before the first step", lineno);
            if (!has_line(prog, a, (size_t)(b - a)))
                test_fail(__FILE__, __LINE__, "docs/tutorial.md:%d: step %d's program has no line \"%.*s\"",
                          lineno, step, (int)(b - a), a);
            checked++;
        }
    }
    ASSERT_GT(checked, 150);   /* the chapter does quote its programs */
    free(prog);
    free(doc);
}
