/*
 * bench_sched: the scheduler's micro-benchmarks, each the twin of a Go
 * program in bench/go/ (same algorithm, same counts, best of 3).
 *
 *   bench_sched [CASE]      no CASE: all of them
 *
 *   skynet           1,000,000 leaf fibers: every node spawns 10 children
 *                    that send their sum to the parent's unbuffered channel
 *                    (go/skynet.go); prints the sum, then ms
 *   spawn_join       spawn an empty fiber, join it; sequential; ns/op
 *   spawn_join_batch spawn 1000 detached fibers, wait for all on a wait group;
 *                    repeat 1000 times; ns per fiber
 *   chan_pingpong    two fibers bounce an int over two unbuffered channels;
 *                    ns per round trip
 *   yield_pingpong   two fibers yielding to each other on ONE worker;
 *                    ns per switch
 *   mutex_contended  8 fibers x 1,000,000 lock/++/unlock of one mutex; ns/op
 *   fanout_1, fanout_2
 *                    64 CPU-bound tasks (~20 ms each: go/fanout.go's xorshift
 *                    chain) on 1 and on 2 workers; ms
 *
 * Workers: the default (one per CPU) unless the case says otherwise.
 * Output: `RESULT <case> <value> <unit>` lines (bench/run.sh reads them).
 */
#include "weft.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RUNS 3

static void die(const char *what, int err)
{
    fprintf(stderr, "bench_sched: %s: %s\n", what, strerror(-err));
    exit(1);
}

static void check(int r, const char *what)
{
    if (r < 0)
        die(what, r);
}

static void run(unsigned workers, void *(*fn)(void *), void *arg)
{
    weft_config cfg = { .workers = workers };
    check(weft_run(&cfg, fn, arg, NULL), "weft_run");
}

/* ---------------------------------------------------------------- skynet */

struct sky {
    weft_chan *out;
    int64_t num, size;
};

static const weft_attr sky_attr = { .stack_size = 16 << 10, .flags = WEFT_DETACHED };

static void *skynet(void *arg)
{
    struct sky *me = arg;
    weft_chan *out = me->out;
    int64_t num = me->num, size = me->size;   /* copied: the parent's frame holds *me */
    if (size == 1) {
        check(weft_chan_send(out, &num), "send");
        return NULL;
    }
    weft_chan *rc = weft_chan_make(sizeof(int64_t), 0);
    if (!rc)
        die("weft_chan_make", -ENOMEM);
    struct sky kids[10];
    int64_t step = size / 10;
    for (int i = 0; i < 10; i++) {
        kids[i] = (struct sky){ rc, num + i * step, step };
        check(weft_spawn(NULL, &sky_attr, skynet, &kids[i]), "spawn");
    }
    int64_t sum = 0, v;
    for (int i = 0; i < 10; i++) {
        check(weft_chan_recv(rc, &v), "recv");
        sum += v;
    }
    /* every child has sent, so none reads kids[] any more */
    weft_chan_free(rc);
    check(weft_chan_send(out, &sum), "send");
    return NULL;
}

static double best_ns = 0;

static void *main_skynet(void *arg)
{
    for (int r = 0; r < RUNS; r++) {
        weft_chan *c = weft_chan_make(sizeof(int64_t), 0);
        struct sky root = { c, 0, 1000000 };
        uint64_t t0 = weft_now();
        check(weft_spawn(NULL, &sky_attr, skynet, &root), "spawn");
        int64_t sum;
        check(weft_chan_recv(c, &sum), "recv");
        double ns = (double)(weft_now() - t0);
        weft_chan_free(c);
        printf("run %d: sum %lld in %.1f ms\n", r + 1, (long long)sum, ns / 1e6);
        if (sum != 499999500000LL) {
            fprintf(stderr, "skynet: wrong sum %lld\n", (long long)sum);
            exit(1);
        }
        if (r == 0 || ns < best_ns)
            best_ns = ns;
    }
    return NULL;
}

static void bench_skynet(void)
{
    run(0, main_skynet, NULL);
    printf("RESULT skynet %.1f ms\n", best_ns / 1e6);
}

/* ------------------------------------------------------------ spawn_join */

static void *empty(void *arg) { return arg; }

static void *main_spawn_join(void *arg)
{
    const long n = 1000000;
    for (int r = 0; r < RUNS; r++) {
        uint64_t t0 = weft_now();
        for (long i = 0; i < n; i++) {
            weft_fiber *f;
            check(weft_spawn(&f, NULL, empty, NULL), "spawn");
            check(weft_join(f, NULL), "join");
        }
        double ns = (double)(weft_now() - t0) / (double)n;
        if (r == 0 || ns < best_ns)
            best_ns = ns;
    }
    return NULL;
}

static void bench_spawn_join(void)
{
    run(0, main_spawn_join, NULL);
    printf("RESULT spawn_join %.1f ns/op\n", best_ns);
}

static weft_wg batch_wg;

static void *empty_done(void *arg)
{
    weft_wg_done(&batch_wg);
    return NULL;
}

static void *main_spawn_batch(void *arg)
{
    const long n = 1000000, batch = 1000;
    const weft_attr detached = { .flags = WEFT_DETACHED };
    for (int r = 0; r < RUNS; r++) {
        uint64_t t0 = weft_now();
        for (long k = 0; k < n / batch; k++) {
            check(weft_wg_add(&batch_wg, (int)batch), "wg_add");
            for (long i = 0; i < batch; i++)
                check(weft_spawn(NULL, &detached, empty_done, NULL), "spawn");
            check(weft_wg_wait(&batch_wg), "wg_wait");
        }
        double ns = (double)(weft_now() - t0) / (double)n;
        if (r == 0 || ns < best_ns)
            best_ns = ns;
    }
    return NULL;
}

static void bench_spawn_join_batch(void)
{
    run(0, main_spawn_batch, NULL);
    printf("RESULT spawn_join_batch %.1f ns/op\n", best_ns);
}

/* --------------------------------------------------------- chan_pingpong */

struct pp { weft_chan *ping, *pong; };

static void *ponger(void *arg)
{
    struct pp *p = arg;
    long v;
    while (weft_chan_recv(p->ping, &v) == 0) {
        v++;
        check(weft_chan_send(p->pong, &v), "send");
    }
    return NULL;
}

static void *main_chan_pingpong(void *arg)
{
    const long rounds = 1000000;
    for (int r = 0; r < RUNS; r++) {
        struct pp p = { weft_chan_make(sizeof(long), 0), weft_chan_make(sizeof(long), 0) };
        weft_fiber *f;
        check(weft_spawn(&f, NULL, ponger, &p), "spawn");
        long v = 0;
        uint64_t t0 = weft_now();
        for (long i = 0; i < rounds; i++) {
            check(weft_chan_send(p.ping, &v), "send");
            check(weft_chan_recv(p.pong, &v), "recv");
        }
        double ns = (double)(weft_now() - t0) / (double)rounds;
        check(weft_chan_close(p.ping), "close");
        check(weft_join(f, NULL), "join");
        if (v != rounds) {
            fprintf(stderr, "chan_pingpong: got %ld, want %ld\n", v, rounds);
            exit(1);
        }
        weft_chan_free(p.ping);
        weft_chan_free(p.pong);
        if (r == 0 || ns < best_ns)
            best_ns = ns;
    }
    return NULL;
}

static void bench_chan_pingpong(void)
{
    run(0, main_chan_pingpong, NULL);
    printf("RESULT chan_pingpong %.1f ns/op\n", best_ns);
}

/* -------------------------------------------------------- yield_pingpong */

#define PER_FIBER 1000000
static atomic_int gate;

static void *yielder(void *arg)
{
    while (!atomic_load(&gate))
        weft_yield();
    for (long i = 0; i < PER_FIBER; i++)
        weft_yield();
    return NULL;
}

static void *main_yield(void *arg)
{
    for (int r = 0; r < RUNS; r++) {
        weft_fiber *a, *b;
        atomic_store(&gate, 0);
        check(weft_spawn(&a, NULL, yielder, NULL), "spawn");
        check(weft_spawn(&b, NULL, yielder, NULL), "spawn");
        weft_yield();   /* both are running, spinning on the gate */
        uint64_t t0 = weft_now();
        atomic_store(&gate, 1);
        check(weft_join(a, NULL), "join");
        check(weft_join(b, NULL), "join");
        double ns = (double)(weft_now() - t0) / (2.0 * PER_FIBER);
        if (r == 0 || ns < best_ns)
            best_ns = ns;
    }
    return NULL;
}

static void bench_yield_pingpong(void)
{
    run(1, main_yield, NULL);
    printf("RESULT yield_pingpong %.1f ns/op\n", best_ns);
}

/* ------------------------------------------------------- mutex_contended */

#define MUTEX_FIBERS 8
#define MUTEX_ITERS 1000000
static weft_mutex mu = WEFT_MUTEX_INIT;
static long counter;
static weft_wg start_wg;

static void *locker(void *arg)
{
    check(weft_wg_wait(&start_wg), "wg_wait");
    for (long i = 0; i < MUTEX_ITERS; i++) {
        weft_mutex_lock(&mu);
        counter++;
        weft_mutex_unlock(&mu);
    }
    return NULL;
}

static void *main_mutex(void *arg)
{
    for (int r = 0; r < RUNS; r++) {
        weft_fiber *f[MUTEX_FIBERS];
        counter = 0;
        check(weft_wg_add(&start_wg, 1), "wg_add");
        for (int i = 0; i < MUTEX_FIBERS; i++)
            check(weft_spawn(&f[i], NULL, locker, NULL), "spawn");
        uint64_t t0 = weft_now();
        check(weft_wg_done(&start_wg), "wg_done");
        for (int i = 0; i < MUTEX_FIBERS; i++)
            check(weft_join(f[i], NULL), "join");
        double ns = (double)(weft_now() - t0) / ((double)MUTEX_FIBERS * MUTEX_ITERS);
        if (counter != (long)MUTEX_FIBERS * MUTEX_ITERS) {
            fprintf(stderr, "mutex_contended: counter %ld\n", counter);
            exit(1);
        }
        if (r == 0 || ns < best_ns)
            best_ns = ns;
    }
    return NULL;
}

static void bench_mutex_contended(void)
{
    run(0, main_mutex, NULL);
    printf("RESULT mutex_contended %.1f ns/op\n", best_ns);
}

/* ---------------------------------------------------------------- fanout */

#define TASKS 64
#define ITERS 12000000
#define FANOUT_SUM 0xe25f5a7133c97888ull   /* go/fanout.go's checksum */
static uint64_t results[TASKS];

__attribute__((noinline)) static uint64_t work(uint64_t x, long n)
{
    for (long i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    return x;
}

static void *task(void *arg)
{
    uintptr_t i = (uintptr_t)arg;
    results[i] = work(i + 1, ITERS);
    return NULL;
}

static void *main_fanout(void *arg)
{
    for (int r = 0; r < RUNS; r++) {
        weft_fiber *f[TASKS];
        uint64_t t0 = weft_now();
        for (uintptr_t i = 0; i < TASKS; i++)
            check(weft_spawn(&f[i], NULL, task, (void *)i), "spawn");
        for (int i = 0; i < TASKS; i++)
            check(weft_join(f[i], NULL), "join");
        double ns = (double)(weft_now() - t0);
        uint64_t x = 0;
        for (int i = 0; i < TASKS; i++)
            x ^= results[i];
        if (x != FANOUT_SUM) {
            fprintf(stderr, "fanout: checksum %#llx\n", (unsigned long long)x);
            exit(1);
        }
        if (r == 0 || ns < best_ns)
            best_ns = ns;
    }
    return NULL;
}

static void bench_fanout(unsigned workers)
{
    /* A fiber computing for 20 ms holds its worker that long; the watchdog
     * would report it, and here that is the point: turn it off. */
    weft_config cfg = { .workers = workers, .watchdog_ms = -1u };
    check(weft_run(&cfg, main_fanout, NULL, NULL), "weft_run");
    printf("RESULT fanout_%u %.1f ms\n", workers, best_ns / 1e6);
}

static void bench_fanout_1(void) { bench_fanout(1); }
static void bench_fanout_2(void) { bench_fanout(2); }

/* ------------------------------------------------------------------ main */

static const struct { const char *name; void (*fn)(void); } cases[] = {
    { "skynet", bench_skynet },
    { "spawn_join", bench_spawn_join },
    { "spawn_join_batch", bench_spawn_join_batch },
    { "chan_pingpong", bench_chan_pingpong },
    { "yield_pingpong", bench_yield_pingpong },
    { "mutex_contended", bench_mutex_contended },
    { "fanout_1", bench_fanout_1 },
    { "fanout_2", bench_fanout_2 },
};

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    size_t n = sizeof cases / sizeof cases[0];
    if (argc < 2) {
        for (size_t i = 0; i < n; i++)
            cases[i].fn();
        return 0;
    }
    for (int a = 1; a < argc; a++) {
        size_t i;
        for (i = 0; i < n; i++)
            if (!strcmp(argv[a], cases[i].name))
                break;
        if (i == n) {
            fprintf(stderr, "bench_sched: unknown case \"%s\"; cases:", argv[a]);
            for (i = 0; i < n; i++)
                fprintf(stderr, " %s", cases[i].name);
            fputc('\n', stderr);
            return 2;
        }
        cases[i].fn();
    }
    return 0;
}
