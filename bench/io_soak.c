/*
 * io_soak: a stress run, not a unit test. 10,000 TCP connections through
 * a weft echo server for SOAK_SECONDS (default 60), each client fiber
 * sending 64-byte messages with a pause between them. Every echo is
 * checked; any error fails the run. The server's and the clients' RSS is
 * sampled every second and printed: after warm-up it should stay flat.
 *
 *   SOAK_SECONDS=60 SOAK_CONNS=10000 build/bench/io_soak
 *
 * The clients run in a forked process with their own runtime, so each
 * process holds 10,000 fds within the usual hard RLIMIT_NOFILE.
 * Prints RESULT io_soak_errors / io_soak_msgs / io_soak_rss_growth lines.
 */
#define _GNU_SOURCE
#include <weft.h>

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define MSG 64

static unsigned conns = 10000;
static unsigned secs = 60;
static uint16_t port;
static _Atomic uint64_t msgs, errors, up;
static int64_t soak_end;   /* clients' deadline */

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static int full(int fd, char *buf, size_t n, int wr)
{
    for (size_t off = 0; off < n;) {
        ssize_t r = wr ? weft_write(fd, buf + off, n - off) : weft_read(fd, buf + off, n - off);
        if (r <= 0)
            return r == 0 ? -ECONNRESET : (int)r;
        off += (size_t)r;
    }
    return 0;
}

/* ----------------------------------------------------------- server */

static void *echo(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[MSG * 4];
    ssize_t n;
    while ((n = weft_read(fd, buf, sizeof buf)) > 0)
        if (full(fd, buf, (size_t)n, 1) < 0)
            break;
    weft_close(fd);
    return NULL;
}

static void *server(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    for (;;) {
        int fd = weft_accept(lfd, NULL, NULL);
        if (fd < 0)
            break;
        weft_spawn(NULL, &(weft_attr){ .stack_size = 32 * 1024, .flags = WEFT_DETACHED }, echo,
                   (void *)(intptr_t)fd);
    }
    return NULL;
}

/* ----------------------------------------------------------- clients */

static void *client(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ull + 1;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int r = weft_connect(fd, (struct sockaddr *)&a, sizeof a);
    if (r < 0) {
        fprintf(stderr, "io_soak: connect: %s\n", strerror(-r));
        atomic_fetch_add(&errors, 1);
        weft_close(fd);
        return NULL;
    }
    atomic_fetch_add(&up, 1);
    weft_deadline(soak_end);   /* every call past it returns -ETIMEDOUT: the end */
    char out[MSG], in[MSG];
    for (uint64_t i = 0;; i++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        memset(out, (int)(seed & 0xff), sizeof out);
        memcpy(out, &i, sizeof i);
        if ((r = full(fd, out, MSG, 1)) < 0 || (r = full(fd, in, MSG, 0)) < 0)
            break;
        if (memcmp(in, out, MSG) != 0) {
            r = -EPROTO;
            break;
        }
        atomic_fetch_add_explicit(&msgs, 1, memory_order_relaxed);
        /* 10k connections, each a message every ~50 ms on average */
        if ((r = weft_sleep((seed % 100) * 1000000ull)) < 0)
            break;
    }
    if (r != -ETIMEDOUT) {
        fprintf(stderr, "io_soak: client: %s\n", strerror(-r));
        atomic_fetch_add(&errors, 1);
    }
    struct linger lg = { 1, 0 };
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    weft_close(fd);
    return NULL;
}

static void *clients(void *arg)
{
    soak_end = (int64_t)(weft_now() + (uint64_t)secs * 1000000000ull);
    weft_fiber **fs = calloc(conns, sizeof *fs);
    for (unsigned i = 0; i < conns; i++)
        if (weft_spawn(&fs[i], &(weft_attr){ .stack_size = 32 * 1024 }, client,
                       (void *)(uintptr_t)i) < 0)
            atomic_fetch_add(&errors, 1);
    for (unsigned i = 0; i < conns; i++)
        if (fs[i])
            weft_join(fs[i], NULL);
    free(fs);
    return NULL;
}

/* The server's runtime runs on a thread of its own (the main thread
 * samples RSS); it stops when the listener is closed under it. */
static int server_lfd = -1;

static void *server_thread(void *arg)
{
    weft_run(NULL, server, (void *)(intptr_t)server_lfd, NULL);
    return arg;
}

int main(void)
{
    const char *s = getenv("SOAK_SECONDS");
    if (s && atoi(s) > 0)
        secs = (unsigned)atoi(s);
    if ((s = getenv("SOAK_CONNS")) && atoi(s) > 0)
        conns = (unsigned)atoi(s);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < conns + 100) {
        fprintf(stderr, "io_soak: RLIMIT_NOFILE %llu is too low for %u connections\n",
                (unsigned long long)rl.rlim_cur, conns);
        return 1;
    }

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &len) < 0) {
        perror("io_soak: listen");
        return 1;
    }
    port = ntohs(a.sin_port);

    /* The client process reports through a pipe: msgs, errors. */
    int rep[2];
    if (pipe(rep) < 0)
        return 1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(lfd);
        close(rep[0]);
        int r = weft_run(NULL, clients, NULL, NULL);
        uint64_t v[3] = { atomic_load(&msgs), atomic_load(&errors) + (r < 0), atomic_load(&up) };
        if (write(rep[1], v, sizeof v) != sizeof v)
            _exit(2);
        _exit(0);
    }
    close(rep[1]);

    /* The server runs on a thread of its own runtime; this thread samples. */
    pid_t self = getpid();
    printf("io_soak: %u connections for %u s on 127.0.0.1:%u\n", conns, secs, port);
    printf("   t  server RSS KiB  clients RSS KiB\n");
    fflush(stdout);
    server_lfd = lfd;
    pthread_t th;
    pthread_create(&th, NULL, server_thread, NULL);

    long warm = -1, last = -1, cwarm = -1, clast = -1;
    unsigned warmup = secs >= 20 ? 10 : secs / 2;
    for (unsigned t = 1; t <= secs + 30; t++) {
        sleep(1);
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            pid = -1;
            break;
        }
        long r1 = rss_kib(self), r2 = rss_kib(pid);
        printf("%4u  %14ld  %15ld\n", t, r1, r2);
        fflush(stdout);
        if (t == warmup)
            warm = r1, cwarm = r2;
        if (t <= secs)
            last = r1, clast = r2;
    }
    uint64_t v[3] = { 0, 1, 0 };
    if (read(rep[0], v, sizeof v) != sizeof v)
        v[1] = 1;
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        v[1]++;
    }
    weft_close(server_lfd);   /* from a plain thread: the parked acceptor gets -EBADF */
    pthread_join(th, NULL);
    printf("io_soak: %llu messages, %llu errors, %llu connections up; RSS after warm-up: "
           "server %ld -> %ld KiB, clients %ld -> %ld KiB\n",
           (unsigned long long)v[0], (unsigned long long)v[1], (unsigned long long)v[2],
           warm, last, cwarm, clast);
    printf("RESULT io_soak_errors %llu count\n", (unsigned long long)v[1]);
    printf("RESULT io_soak_msgs_per_s %.0f msg/s\n", (double)v[0] / secs);
    printf("RESULT io_soak_rss_growth %ld KiB\n", last - warm);
    return v[1] || v[2] != conns ? 1 : 0;
}
