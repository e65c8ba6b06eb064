/*
 * What the scheduling trace costs: each workload runs with WEFT_TRACE unset
 * (the scheduler's trace hooks are then one not-taken branch each) and with
 * WEFT_TRACE=/dev/null (every switch recorded and formatted, the file
 * discarded), and the on/off ratio is printed.
 *
 *   yield    two fibers on one worker yielding to each other (a switch each)
 *   spawn    spawn and join a fiber, one at a time
 *   skynet   a tree of fibers, 10 children each, 5 levels deep (111111
 *            fibers), each returning the sum of its subtree's leaf numbers
 *
 * The "off" rows are the ones to compare between builds: they must not move
 * by more than noise when tracing support changes.
 */
#include "weft.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define YIELDS 1000000
#define SPAWNS 100000
#define SKYNET_DEPTH 5

static void *yielder(void *arg)
{
    for (int i = 0; i < YIELDS; i++)
        weft_yield();
    return arg;
}

static void *main_yield(void *arg)
{
    weft_fiber *a, *b;
    weft_spawn(&a, NULL, yielder, NULL);
    weft_spawn(&b, NULL, yielder, NULL);
    weft_join(a, NULL);
    weft_join(b, NULL);
    return arg;
}

static void *nothing(void *arg) { return arg; }

static void *main_spawn(void *arg)
{
    weft_attr at = { .stack_size = 16 << 10 };
    for (int i = 0; i < SPAWNS; i++) {
        weft_fiber *f;
        if (weft_spawn(&f, &at, nothing, NULL) == 0)
            weft_join(f, NULL);
    }
    return arg;
}

struct sky { uint64_t num, size; };

static void *skynet(void *arg)
{
    struct sky *s = arg;
    if (s->size == 1)
        return (void *)(uintptr_t)s->num;
    weft_attr at = { .stack_size = 16 << 10 };
    weft_fiber *kids[10];
    struct sky sub[10];
    uint64_t sum = 0, step = s->size / 10;
    for (int i = 0; i < 10; i++) {
        sub[i] = (struct sky){ s->num + (uint64_t)i * step, step };
        if (weft_spawn(&kids[i], &at, skynet, &sub[i]) < 0)
            kids[i] = NULL;
    }
    for (int i = 0; i < 10; i++) {
        void *r = NULL;
        if (kids[i] && weft_join(kids[i], &r) == 0)
            sum += (uint64_t)(uintptr_t)r;
    }
    return (void *)(uintptr_t)sum;
}

static void *main_skynet(void *arg)
{
    uint64_t size = 1;
    for (int i = 0; i < SKYNET_DEPTH; i++)
        size *= 10;
    struct sky s = { 0, size };
    void *r = skynet(&s);
    if ((uint64_t)(uintptr_t)r != size * (size - 1) / 2)
        fprintf(stderr, "skynet: wrong sum %llu\n", (unsigned long long)(uintptr_t)r);
    return arg;
}

/* Best of a few runs: the least disturbed one. */
static double run_ns(void *(*fn)(void *), unsigned workers, int reps)
{
    weft_config cfg = { .workers = workers };
    double best = 0;
    for (int r = 0; r < reps; r++) {
        uint64_t t0 = weft_now();
        if (weft_run(&cfg, fn, NULL, NULL) != 0) {
            fprintf(stderr, "weft_run failed\n");
            exit(1);
        }
        double ns = (double)(weft_now() - t0);
        if (r == 0 || ns < best)
            best = ns;
    }
    return best;
}

static void bench(const char *name, void *(*fn)(void *), unsigned workers, double per,
                  const char *unit)
{
    unsetenv("WEFT_TRACE");
    double off = run_ns(fn, workers, 5) / per;
    setenv("WEFT_TRACE", "/dev/null", 1);
    double on = run_ns(fn, workers, 3) / per;
    unsetenv("WEFT_TRACE");
    printf("RESULT %s_trace_off %.1f %s\n", name, off, unit);
    printf("RESULT %s_trace_on %.1f %s\n", name, on, unit);
    printf("RESULT %s_trace_ratio_on_off %.2f x\n", name, on / off);
}

int main(void)
{
    bench("yield", main_yield, 1, 2.0 * YIELDS, "ns/switch");
    bench("spawn_join", main_spawn, 1, SPAWNS, "ns/fiber");
    bench("skynet", main_skynet, 0, 1e6, "ms");
    return 0;
}
