/*
 * fibers — 100,000 fibers that each sleep a while, on every core.
 *
 * Each fiber is plain blocking code: it sleeps, then adds to a counter.
 * weft parks the sleeping fibers on timers and runs them on a worker per
 * CPU; the process never has more threads than workers.
 *
 *   fibers [N]
 */
#include "weft.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

static _Atomic long done;
static _Atomic long on_worker[64];

static void *sleeper(void *arg)
{
    uint64_t ms = 1 + (uintptr_t)arg % 500;
    weft_sleep(ms * 1000000);
    int w = weft_worker_id();
    if (w >= 0 && w < 64)
        atomic_fetch_add(&on_worker[w], 1);
    atomic_fetch_add(&done, 1);
    return NULL;
}

static void *main_fiber(void *arg)
{
    long n = (long)(intptr_t)arg;
    weft_attr a = { .stack_size = 16 << 10 };
    weft_fiber **f = calloc((size_t)n, sizeof *f);
    uint64_t t0 = weft_now();
    for (long i = 0; i < n; i++) {
        int r = weft_spawn(&f[i], &a, sleeper, (void *)(uintptr_t)(i * 2654435761u));
        if (r < 0) {
            fprintf(stderr, "spawn: %d\n", r);
            return NULL;
        }
    }
    uint64_t t1 = weft_now();
    for (long i = 0; i < n; i++)
        weft_join(f[i], NULL);
    uint64_t t2 = weft_now();
    free(f);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("spawned %ld fibers in %.1f ms (%.0f ns each)\n", n, (t1 - t0) / 1e6, (double)(t1 - t0) / n);
    printf("all %ld slept 1..500 ms and finished %.1f ms after the first spawn\n",
           atomic_load(&done), (t2 - t0) / 1e6);
    for (int w = 0; w < 64; w++)
        if (atomic_load(&on_worker[w]))
            printf("  worker %d woke %ld of them\n", w, atomic_load(&on_worker[w]));
    printf("peak RSS %.1f MiB (%.1f KiB per fiber, stacks included)\n",
           ru.ru_maxrss / 1024.0, (double)ru.ru_maxrss / n);
    return NULL;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 100000;
    if (n <= 0)
        n = 100000;
    int r = weft_run(NULL, main_fiber, (void *)(intptr_t)n, NULL);
    if (r < 0) {
        fprintf(stderr, "weft_run: %d\n", r);
        return 1;
    }
    return 0;
}
