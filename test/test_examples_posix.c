/*
 * The example servers, driven from outside as a user would: the test starts
 * the built program (build/examples/, beside this binary's build/test/),
 * talks to it over loopback with plain blocking sockets, and stops it.
 *
 * Under qemu-user a guest's execve of another guest binary needs binfmt_misc,
 * which the emulated test cannot count on: skipped there.
 */
#define _GNU_SOURCE
#include "test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* build/examples/NAME, found from this test binary's own path (test.h). */
void example_path(const char *name, char *out, size_t cap)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ASSERT_GT(n, 0);
    self[n] = 0;
    char *slash = strrchr(self, '/');
    ASSERT(slash != NULL);
    *slash = 0;   /* build/test */
    int r = snprintf(out, cap, "%.*s/../examples/%s", (int)(sizeof self - 64), self, name);
    ASSERT(r > 0 && (size_t)r < cap);
    ASSERT_EQ(access(out, X_OK), 0);
}

/* A port nobody listens on right now. */
static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    ASSERT_EQ(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
    ASSERT_EQ(getsockname(s, (struct sockaddr *)&sa, &len), 0);
    close(s);
    return ntohs(sa.sin_port);
}

static pid_t start_example(const char *name, int port)
{
    char path[PATH_MAX + 64], arg[16];
    example_path(name, path, sizeof path);
    snprintf(arg, sizeof arg, "%d", port);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        execl(path, name, arg, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Connect, retrying while the server starts (up to ~5 s, scaled). */
static int connect_to(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    for (int tries = 0; tries < (int)(500 * test_time_scale()); tries++) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT(s >= 0);
        if (connect(s, (struct sockaddr *)&sa, sizeof sa) == 0)
            return s;
        close(s);
        usleep(10000);
    }
    test_fail(__FILE__, __LINE__, "nothing listens on port %d", port);
}

/* Read from s until the text received ends with want; fail after ~5 s.
 * A byte at a time, so that what follows stays for the next expect. */
static void expect(int s, const char *want)
{
    char buf[4096];
    size_t have = 0, wl = strlen(want);
    for (;;) {
        if (have >= wl && memcmp(buf + have - wl, want, wl) == 0)
            return;
        struct pollfd p = { .fd = s, .events = POLLIN };
        if (poll(&p, 1, (int)(5000 * test_time_scale())) <= 0) {
            buf[have] = 0;
            test_fail(__FILE__, __LINE__, "waited in vain for \"%s\"; got \"%s\"", want, buf);
        }
        if (read(s, buf + have, 1) != 1) {
            buf[have] = 0;
            test_fail(__FILE__, __LINE__, "connection ended before \"%s\"; got \"%s\"", want, buf);
        }
        if (++have == sizeof buf - 1)
            test_fail(__FILE__, __LINE__, "no \"%s\" in %zu bytes", want, have);
    }
}

/* The first of two sockets to have something to read (~5 s). */
static int first_readable(int a, int b)
{
    struct pollfd p[2] = { { .fd = a, .events = POLLIN }, { .fd = b, .events = POLLIN } };
    ASSERT_GT(poll(p, 2, (int)(5000 * test_time_scale())), 0);
    return p[0].revents ? 0 : 1;
}

/* Nothing more arrives on s within ~200 ms. */
static void expect_quiet(int s)
{
    struct pollfd p = { .fd = s, .events = POLLIN };
    char buf[256];
    if (poll(&p, 1, 200) > 0) {
        ssize_t n = read(s, buf, sizeof buf - 1);
        buf[n > 0 ? n : 0] = 0;
        test_fail(__FILE__, __LINE__, "unexpected \"%s\"", buf);
    }
}

static void say(int s, const char *line)
{
    ASSERT_EQ(write(s, line, strlen(line)), (ssize_t)strlen(line));
}

TEST(example_chat_server_broadcasts)
{
    if (test_under_qemu()) {
        test_skip("under qemu-user");
    }
    int port = free_port();
    pid_t pid = start_example("chat_server", port);
    /* Guests are numbered in the order they connect, but two readers on
     * two workers may announce themselves in either order: whoever joins
     * second is announced to the first. */
    int a = connect_to(port);   /* guest1 */
    int b = connect_to(port);   /* guest2 */
    if (first_readable(a, b) == 0)
        expect(a, "* guest2 joined\n");
    else
        expect(b, "* guest1 joined\n");
    int c = connect_to(port);   /* guest3, with both already in */
    expect(a, "* guest3 joined\n");
    expect(b, "* guest3 joined\n");

    /* a line goes to everybody else, not back to its sender */
    say(a, "hello from a\n");
    expect(b, "guest1: hello from a\n");
    expect(c, "guest1: hello from a\n");
    expect_quiet(a);

    /* two lines in one write, and a line in two writes */
    say(b, "one\ntwo\n");
    expect(a, "guest2: one\n");
    expect(a, "guest2: two\n");
    expect(c, "guest2: one\nguest2: two\n");
    say(c, "split ");
    usleep(20000);
    say(c, "line\n");
    expect(a, "guest3: split line\n");
    expect(b, "guest3: split line\n");

    /* a client leaving is announced, and the room goes on without it */
    close(b);
    expect(a, "* guest2 left\n");
    expect(c, "* guest2 left\n");
    say(c, "still here\n");
    expect(a, "guest3: still here\n");

    close(a);
    close(c);
    ASSERT_EQ(kill(pid, SIGTERM), 0);
    int st;
    ASSERT_EQ(waitpid(pid, &st, 0), pid);
    ASSERT(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);   /* it was serving until then */
}
