/*
 * The cost of a context switch, ours against Boost.Context's jump_fcontext
 * in the same process, and the costs around it: spawn + join of an empty
 * fiber on one worker (warm stack cache) and a stack allocate + free.
 *
 *   bench_switch [switch | fcontext | spawn_join_1w | stack_alloc_free | mmap_stack]...
 *
 * With no argument it runs them all and prints the ratio of the two
 * switches. The peers: Boost's switch for ours; the budget of
 * 100 ns for spawn + join (spawn_join_budget); for the stack allocator,
 * what a guarded stack costs without one: mmap, an mprotect guard, munmap
 * (mmap_stack_alloc_free). Each case is the best of 5 runs (the least disturbed by the
 * rest of the machine). Output: "RESULT <case> <value> <unit>".
 */
#define _GNU_SOURCE
#include "weft.h"

#include "arch/arch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

/* Boost.Context's assembly fcontext, declared as in switch_fcontext.c. */
typedef void *fcontext_t;
typedef struct { fcontext_t fctx; void *data; } transfer_t;
transfer_t jump_fcontext(fcontext_t to, void *data);
fcontext_t make_fcontext(void *sp_top, size_t size, void (*fn)(transfer_t));

#define SWITCHES 10000000L     /* switches per run: 5M round trips */
#define SPAWNS 1000000L
#define ALLOCS 1000000L
#define RUNS 5

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* ------------------------------------------------------------ our switch */

static weft__ctx main_ctx, fiber_ctx;

static void ours_entry(void *arg)
{
    for (;;)
        weft__ctx_switch(&fiber_ctx, &main_ctx, NULL);
}

static double run_ours(void)
{
    weft__stack *s;
    if (weft__stack_alloc(64 << 10, &s) < 0)
        abort();
    weft__ctx_make(&fiber_ctx, s->lo, (size_t)(s->hi - s->lo), ours_entry);
    double t0 = now_ns();
    for (long i = 0; i < SWITCHES / 2; i++)
        weft__ctx_switch(&main_ctx, &fiber_ctx, NULL);
    double t1 = now_ns();
    weft__stack_free(s);   /* the fiber is suspended for good: never resumed */
    return (t1 - t0) / SWITCHES;
}

/* --------------------------------------------------------- Boost's switch */

static void boost_entry(transfer_t t)
{
    for (;;)
        t = jump_fcontext(t.fctx, NULL);
}

static double run_boost(void)
{
    weft__stack *s;
    if (weft__stack_alloc(64 << 10, &s) < 0)
        abort();
    fcontext_t c = make_fcontext(s->hi, (size_t)(s->hi - s->lo), boost_entry);
    double t0 = now_ns();
    for (long i = 0; i < SWITCHES / 2; i++)
        c = jump_fcontext(c, NULL).fctx;
    double t1 = now_ns();
    weft__stack_free(s);
    return (t1 - t0) / SWITCHES;
}

/* ---------------------------------------------------- spawn + join, 1 worker */

static void *empty(void *arg) { return arg; }

static void *spawn_join_main(void *arg)
{
    double *out = arg;
    weft_fiber *f;
    weft_attr a = { 0 };
    for (long i = 0; i < 1000; i++) {   /* warm the stack cache */
        weft_spawn(&f, &a, empty, NULL);
        weft_join(f, NULL);
    }
    double t0 = now_ns();
    for (long i = 0; i < SPAWNS; i++) {
        if (weft_spawn(&f, &a, empty, NULL) < 0 || weft_join(f, NULL) < 0)
            abort();
    }
    *out = (now_ns() - t0) / SPAWNS;
    return NULL;
}

static double run_spawn_join(void)
{
    double ns = 0;
    weft_config cfg = { .workers = 1 };
    if (weft_run(&cfg, spawn_join_main, &ns, NULL) < 0)
        abort();
    return ns;
}

/* ------------------------------------------------------ stack alloc + free */

static double run_stack(void)
{
    weft__stack *s;
    double t0 = now_ns();
    for (long i = 0; i < ALLOCS; i++) {
        if (weft__stack_alloc(WEFT_STACK_DEFAULT, &s) < 0)
            abort();
        weft__stack_free(s);
    }
    return (now_ns() - t0) / ALLOCS;
}

/* The peer of the allocator: a guarded stack made and unmade by hand. */
static double run_mmap_stack(void)
{
    size_t guard = 16 << 10, len = WEFT_STACK_DEFAULT + guard;
    double t0 = now_ns();
    for (long i = 0; i < ALLOCS / 10; i++) {
        char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED || mprotect(p, guard, PROT_NONE) < 0)
            abort();
        munmap(p, len);
    }
    return (now_ns() - t0) / (ALLOCS / 10);
}

static double best(double (*fn)(void))
{
    double b = 1e30;
    for (int i = 0; i < RUNS; i++) {
        double v = fn();
        if (v < b)
            b = v;
    }
    return b;
}

static int want(int argc, char **argv, const char *name)
{
    if (argc < 2)
        return 1;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], name))
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    double ours = 0, boost = 0;
    printf("# switch implementation: %s\n", weft__ctx_impl);
    if (want(argc, argv, "switch")) {
        ours = best(run_ours);
        printf("RESULT switch %.2f ns/op\n", ours);
    }
    if (want(argc, argv, "fcontext")) {
        boost = best(run_boost);
        printf("RESULT fcontext %.2f ns/op\n", boost);
    }
    if (ours > 0 && boost > 0)
        printf("RESULT switch_vs_fcontext %.3f ratio\n", ours / boost);
    if (want(argc, argv, "spawn_join_1w")) {
        printf("RESULT spawn_join_1w %.1f ns/op\n", best(run_spawn_join));
        printf("RESULT spawn_join_budget 100 ns/op\n");
    }
    if (want(argc, argv, "stack_alloc_free"))
        printf("RESULT stack_alloc_free %.1f ns/op\n", best(run_stack));
    if (want(argc, argv, "mmap_stack"))
        printf("RESULT mmap_stack_alloc_free %.1f ns/op\n", best(run_mmap_stack));
    return 0;
}
