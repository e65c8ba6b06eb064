/*
 * Timers and idling, measured against their budgets (printed as the "peer"
 * of their bench/run.sh rows):
 *
 *   timers    100,000 fibers sleep until times spread over one second; each
 *             records how late it woke. Prints p50/p99/max lateness, how
 *             many woke out of order, and RESULT timer_late_p99 against a
 *             budget of 2 ms.
 *   idle      2 workers, 10,000 fibers parked; CPU time the process uses
 *             over 2 s of nothing to do, as % of one CPU, against a budget
 *             of 1 %.
 *   beside    2 workers, one fiber computing for 2 s without parking: the
 *             CPU the rest of the process uses meanwhile (the idle worker
 *             watching the busy one's next slot, see sched.c), as % of one
 *             CPU, against a budget of 1 %.
 *
 *   bench_timers [timers|idle|beside]
 */
#define _GNU_SOURCE
#include "weft.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define NFIBERS 100000
#define MS 1000000ull

static uint64_t start;
static uint64_t target[NFIBERS];
static uint64_t woke[NFIBERS];
static int64_t late[NFIBERS];

static void *sleeper(void *arg)
{
    size_t i = (size_t)arg;
    uint64_t now = weft_now();
    if (target[i] > now)
        weft_sleep(target[i] - now);
    woke[i] = weft_now();
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_idx(const void *a, const void *b)
{
    uint64_t x = target[*(const size_t *)a], y = target[*(const size_t *)b];
    return x < y ? -1 : x > y;
}

static void *timers_main(void *arg)
{
    weft_attr a = { .stack_size = 16 << 10 };
    static weft_fiber *f[NFIBERS];
    srand(1);
    /* Every fiber must be parked before the first is due, so the lead time
     * is longer than spawning 100,000 fibers takes (printed below). */
    uint64_t t0 = weft_now();
    start = t0 + 1500 * MS;
    for (size_t i = 0; i < NFIBERS; i++) {
        target[i] = start + (uint64_t)rand() % (1000 * MS);
        if (weft_spawn(&f[i], &a, sleeper, (void *)i) < 0) {
            fprintf(stderr, "spawn failed at %zu\n", i);
            exit(1);
        }
    }
    weft_yield();
    printf("timers: spawned %d fibers in %.1f ms\n", NFIBERS, (weft_now() - t0) / 1e6);
    for (size_t i = 0; i < NFIBERS; i++)
        weft_join(f[i], NULL);

    static size_t by_target[NFIBERS];
    for (size_t i = 0; i < NFIBERS; i++) {
        late[i] = (int64_t)(woke[i] - target[i]);
        by_target[i] = i;
    }
    /* out of order: woke before a fiber whose time came earlier (beyond
     * the clock's resolution between two workers) */
    qsort(by_target, NFIBERS, sizeof *by_target, cmp_idx);
    /* Each worker fires its own heap, so two fibers due within a few tens
     * of microseconds on different workers may wake either way round. */
    size_t disorder = 0, disorder_ms = 0;
    uint64_t maxwoke = 0;
    for (size_t k = 0; k < NFIBERS; k++) {
        uint64_t w = woke[by_target[k]];
        disorder += w + 50000 < maxwoke;
        disorder_ms += w + 1000000 < maxwoke;
        if (w > maxwoke)
            maxwoke = w;
    }
    qsort(late, NFIBERS, sizeof *late, cmp_i64);
    printf("timers: %d fibers, lateness p50 %.1f us, p99 %.1f us, max %.1f us, early %s, out of order by >50 us %zu, by >1 ms %zu\n",
           NFIBERS, late[NFIBERS / 2] / 1e3, late[NFIBERS * 99 / 100] / 1e3, late[NFIBERS - 1] / 1e3,
           late[0] < 0 ? "YES (bug)" : "none", disorder, disorder_ms);
    printf("RESULT timer_late_p99 %.1f us\n", late[NFIBERS * 99 / 100] / 1e3);
    printf("RESULT timer_budget 2000 us\n");
    return NULL;
}

static void *park_forever(void *arg)
{
    weft_sleep(UINT64_MAX / 2);
    return arg;
}

static double cpu_seconds(void)
{
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_utime.tv_usec / 1e6 + r.ru_stime.tv_sec + r.ru_stime.tv_usec / 1e6;
}

static void *idle_main(void *arg)
{
    weft_attr a = { .stack_size = 16 << 10, .flags = WEFT_DETACHED };
    for (int i = 0; i < 10000; i++)
        weft_spawn(NULL, &a, park_forever, NULL);
    weft_sleep(100 * MS);
    double c0 = cpu_seconds();
    uint64_t t0 = weft_now();
    weft_sleep(2000 * MS);
    double pct = (cpu_seconds() - c0) / ((weft_now() - t0) / 1e9) * 100;
    printf("idle: 2 workers, 10000 parked fibers: %.3f%% of one CPU over 2 s\n", pct);
    printf("RESULT idle_cpu %.3f %%\n", pct);
    printf("RESULT idle_budget 1 %%\n");
    return NULL;   /* the parked fibers are cancelled as main returns */
}

static void *compute(void *arg)
{
    uint64_t t0 = weft_now();
    while (weft_now() - t0 < 2000 * MS)
        ;   /* never parks */
    return arg;
}

static void *beside_main(void *arg)
{
    weft_fiber *f;
    weft_sleep(100 * MS);   /* both workers settled */
    double c0 = cpu_seconds();
    uint64_t t0 = weft_now();
    if (weft_spawn(&f, NULL, compute, NULL) != 0 || weft_join(f, NULL) != 0)
        exit(1);
    double secs = (weft_now() - t0) / 1e9;
    double pct = (cpu_seconds() - c0 - secs) / secs * 100;   /* all but the busy worker */
    if (pct < 0)
        pct = 0;
    printf("beside: 2 workers, one computing for 2 s: the rest used %.3f%% of one CPU\n", pct);
    printf("RESULT beside_cpu %.3f %%\n", pct);
    printf("RESULT beside_budget 1 %%\n");
    return NULL;
}

int main(int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "all";
    if (!strcmp(which, "timers") || !strcmp(which, "all")) {
        weft_config c = { .workers = 2 };
        if (weft_run(&c, timers_main, NULL, NULL) != 0)
            return 1;
    }
    if (!strcmp(which, "idle") || !strcmp(which, "all")) {
        weft_config c = { .workers = 2 };
        if (weft_run(&c, idle_main, NULL, NULL) != 0)
            return 1;
    }
    if (!strcmp(which, "beside") || !strcmp(which, "all")) {
        /* the watchdog would report the computing fiber: not the point */
        weft_config c = { .workers = 2, .watchdog_ms = -1u };
        if (weft_run(&c, beside_main, NULL, NULL) != 0)
            return 1;
    }
    return 0;
}
