/* Helpers of test_io.h: backend selection per test, loopback sockets. */
#define _GNU_SOURCE
#include "test_io.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <unistd.h>

static void *nothing(void *arg) { return arg; }

int io_use_backend(const char *name)
{
    if (strcmp(name, "uring") == 0 && RUNNING_ON_VALGRIND) {
        /* valgrind 3.19 loses async-cancel completions (see src/io/io.c) */
        test_skip("io_uring under valgrind");
    }
    setenv("WEFT_IO", name, 1);
    int r = weft_run(NULL, nothing, NULL, NULL);
    if (r < 0) {
        if (strcmp(name, "epoll") == 0)
            test_fail(__FILE__, __LINE__, "the epoll backend failed to start: %d", r);
        test_skip("the %s backend is unavailable here (%s)", name, strerror(-r));
    }
    return 1;
}

struct sockaddr_in io_addr(uint16_t port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

int io_listen(int backlog, uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT(fd >= 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = io_addr(0);
    ASSERT_EQ(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    ASSERT_EQ(listen(fd, backlog), 0);
    socklen_t len = sizeof a;
    ASSERT_EQ(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

int io_connect_plain(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT(fd >= 0);
    struct sockaddr_in a = io_addr(port);
    ASSERT_EQ(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

void io_tcp_pair(int *a, int *b)
{
    uint16_t port;
    int l = io_listen(1, &port);
    *a = io_connect_plain(port);
    *b = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    ASSERT(*b >= 0);
    close(l);
}

/* Threads of this process named name exactly, or starting with it if
 * prefix (NULL: all of them). */
static int count_threads(const char *name, bool prefix)
{
    DIR *d = opendir("/proc/self/task");
    ASSERT(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (!name) {
            n++;
            continue;
        }
        char path[300], comm[64] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (fgets(comm, sizeof comm, f))
            comm[strcspn(comm, "\n")] = 0;
        fclose(f);
        n += prefix ? strncmp(comm, name, strlen(name)) == 0 : strcmp(comm, name) == 0;
    }
    closedir(d);
    return n;
}

int io_count_threads(const char *comm) { return count_threads(comm, false); }
int io_count_threads_named(const char *prefix) { return count_threads(prefix, true); }

/* No thread outlives the runtime: the process has as many threads as
 * before. pthread_join returns when the kernel clears the thread's tid, a
 * moment before its /proc/self/task entry goes (a longer moment under
 * qemu-user): the count is given a bounded time to settle. Under qemu-user
 * /proc/self/task also lists the emulator's own threads, which come and go
 * on their own (runs saw 3 before and 2 after, and the reverse): there, the
 * runtime's threads are counted instead, all named "weft/..."
 * (weft__thread_start). */
void *io_run_leaving_no_thread(void *(*main_fn)(void *), void *arg)
{
    bool qemu = test_under_qemu();
    int before = qemu ? 0 : io_count_threads(NULL);   /* 1, or 2 with a sanitizer's own thread */
    void *r = test_run(main_fn, arg);
    int n = -1;
    for (int i = 0; i < 200; i++) {
        n = qemu ? io_count_threads_named("weft/") : io_count_threads(NULL);
        if (n == before)
            break;
        usleep(10000);
    }
    ASSERT_EQ(n, before);
    return r;
}

int io_raise_nofile(unsigned long n)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -errno;
    if (rl.rlim_cur >= n)
        return 0;
    if (rl.rlim_max < n)
        rl.rlim_max = n;
    rl.rlim_cur = n;
    return setrlimit(RLIMIT_NOFILE, &rl) < 0 ? -errno : 0;
}
