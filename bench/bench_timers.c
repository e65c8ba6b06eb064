/*
 * Timers and idling, measured against their budgets (printed as the "peer"
 * of their bench/run.sh rows):
 *
 *   timers    100,000 fibers park at a gate; when it opens, each sleeps until
 *             a time spread over one second, starting LEAD_MS later, and
 *             records how late it woke. Prints p50/p99/max lateness, how
 *             many woke out of order, and RESULT timer_late_p99 against a
 *             budget of 2 ms; no result if some fiber armed its timer only
 *             after the first was due (the lateness would be the arming's).
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

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#define NFIBERS 100000
#define MS 1000000ull

static uint64_t start;
static uint64_t offset[NFIBERS];
static uint64_t woke[NFIBERS];
static int64_t late[NFIBERS];
static weft_wg gate;
static _Atomic size_t at_gate, armed;
static _Atomic uint64_t all_armed_at;

static uint64_t target(size_t i) { return start + offset[i]; }

/* Parks twice: at the gate, then on its timer. The gate makes the fibers'
 * first run (stack pages faulted in, records warmed) happen before the
 * clock starts, so what is measured is the timers and nothing else. */
static void *sleeper(void *arg)
{
    size_t i = (size_t)arg;
    atomic_fetch_add(&at_gate, 1);
    if (weft_wg_wait(&gate) != 0)
        exit(1);
    /* The last to get here is the last to arm: every timer is in a heap
     * once this fiber has called weft_sleep, a moment later. */
    if (atomic_fetch_add(&armed, 1) + 1 == NFIBERS)
        atomic_store(&all_armed_at, weft_now());
    uint64_t now = weft_now();
    if (target(i) > now)
        weft_sleep(target(i) - now);
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
    uint64_t x = offset[*(const size_t *)a], y = offset[*(const size_t *)b];
    return x < y ? -1 : x > y;
}

/* How long after the gate opens the first timer is due. Opening it readies
 * 100,000 parked fibers, each of which runs a few microseconds to arm its
 * timer; the bench checks that they all made it in time (below). */
#define LEAD_MS 1000

static void *timers_main(void *arg)
{
    weft_attr a = { .stack_size = 16 << 10 };
    static weft_fiber *f[NFIBERS];
    srand(1);
    if (weft_wg_add(&gate, 1) != 0)
        exit(1);
    uint64_t t0 = weft_now();
    for (size_t i = 0; i < NFIBERS; i++) {
        offset[i] = (uint64_t)rand() % (1000 * MS);
        if (weft_spawn(&f[i], &a, sleeper, (void *)i) < 0) {
            fprintf(stderr, "spawn failed at %zu\n", i);
            exit(1);
        }
    }
    while (atomic_load(&at_gate) < NFIBERS)
        weft_sleep(MS);
    uint64_t t1 = weft_now();
    printf("timers: %d fibers spawned and parked at the gate in %.1f ms\n", NFIBERS,
           (t1 - t0) / 1e6);
    start = t1 + LEAD_MS * MS;
    weft_wg_done(&gate);
    for (size_t i = 0; i < NFIBERS; i++)
        weft_join(f[i], NULL);
    /* The premise: every fiber was parked on its timer before the first
     * was due. On a machine too slow for that, a late wake-up would measure
     * the arming, not the timer: say so and report no number. */
    double margin_ms = ((double)start - (double)atomic_load(&all_armed_at)) / 1e6;
    printf("timers: all armed %.1f ms after the gate opened, %.1f ms before the first was due\n",
           LEAD_MS - margin_ms, margin_ms);
    if (margin_ms <= 0) {
        fprintf(stderr, "timers: the last timer was armed after the first was due: "
                "this machine is too slow for a %d ms lead; no result\n", LEAD_MS);
        exit(1);
    }

    static size_t by_target[NFIBERS];
    for (size_t i = 0; i < NFIBERS; i++) {
        late[i] = (int64_t)(woke[i] - target(i));
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
