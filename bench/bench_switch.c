/*
 * The cost of a context switch, ours against Boost.Context's jump_fcontext
 * in the same process, and the costs around it: spawn + join of an empty
 * fiber on one worker (warm stack cache) and a stack allocate + free.
 *
 *   bench_switch [switch | fcontext | handoff | fcontext_handoff |
 *                 spawn_join_1w | stack_alloc_free | mmap_stack]...
 *
 * switch and fcontext bounce between two loops that each call the switch
 * from their own place; handoff and fcontext_handoff bounce through one
 * shared helper, the shape in which the scheduler uses weft__ctx_handoff
 * (arch.h). With no argument it runs them all and prints the ratio of the
 * first two. The peers: Boost's switch for ours (in both shapes); the budget of
 * 100 ns for spawn + join (spawn_join_budget); for the stack allocator,
 * what a guarded stack costs without one: mmap, an mprotect guard, munmap
 * (mmap_stack_alloc_free). Each case is the best of 5 runs (the least disturbed by the
 * rest of the machine). Output: "RESULT <case> <value> <unit>".
 */
#define _GNU_SOURCE
#include "weft.h"

#include "arch/arch.h"

#include <limits.h>
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

/* ------------------------------------------- the hand-off, from one place */

/* The scheduler's shape: both contexts switch through the same code (here
 * bounce -> hop, there weft__switch_out), so each resumes at the return
 * address the other one just left from. That is the case the hand-off's
 * `ret` is for (arch.h); Boost's jump is measured in the same shape. */
static weft__ctx hand_main, hand_fiber;

__attribute__((noinline)) static void hop(weft__ctx *self, weft__ctx *other)
{
    weft__ctx_handoff(self, other, NULL);
    __asm__ volatile("" ::: "memory");   /* a real return, not a tail call */
}

__attribute__((noinline)) static void bounce(weft__ctx *self, weft__ctx *other, long n)
{
    for (long i = 0; i < n; i++)
        hop(self, other);
}

static void hand_entry(void *arg)
{
    bounce(&hand_fiber, &hand_main, LONG_MAX);   /* never ends: freed suspended */
}

static double run_handoff(void)
{
    weft__stack *s;
    if (weft__stack_alloc(64 << 10, &s) < 0)
        abort();
    weft__ctx_make(&hand_fiber, s->lo, (size_t)(s->hi - s->lo), hand_entry);
    weft__ctx_handoff(&hand_main, &hand_fiber, NULL);   /* start it: it comes back through hop */
    double t0 = now_ns();
    bounce(&hand_main, &hand_fiber, SWITCHES / 2);
    double t1 = now_ns();
    weft__stack_free(s);
    return (t1 - t0) / SWITCHES;
}

static fcontext_t fhand_other;

__attribute__((noinline)) static void fhop(void)
{
    fhand_other = jump_fcontext(fhand_other, NULL).fctx;
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void fbounce(long n)
{
    for (long i = 0; i < n; i++)
        fhop();
}

static void fhand_entry(transfer_t t)
{
    fhand_other = t.fctx;
    fbounce(LONG_MAX);
}

static double run_boost_handoff(void)
{
    weft__stack *s;
    if (weft__stack_alloc(64 << 10, &s) < 0)
        abort();
    fhand_other = make_fcontext(s->hi, (size_t)(s->hi - s->lo), fhand_entry);
    fhop();   /* start it: it comes back through fhop */
    double t0 = now_ns();
    fbounce(SWITCHES / 2);
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
    if (want(argc, argv, "handoff"))
        printf("RESULT handoff %.2f ns/op\n", best(run_handoff));
    if (want(argc, argv, "fcontext_handoff"))
        printf("RESULT fcontext_handoff %.2f ns/op\n", best(run_boost_handoff));
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
