/*
 * Raw contexts for the switch tests (test_arch.c, test_arch_unwind_posix.c):
 * a context on a weft stack, switched by hand, announced to the sanitizers
 * as the scheduler does (see src/sched/san.h).
 */
#ifndef WEFT_TEST_ARCH_H
#define WEFT_TEST_ARCH_H

#include "test.h"

#include "arch/arch.h"
#include "sched/san.h"

#include <stdint.h>

/* ------------------------------------------------ a context, announced */

/* The raw tests switch by hand, so they tell the sanitizers themselves,
 * as the scheduler does (see src/sched/san.h). */
struct rctx {
    weft__ctx c;
    weft__stack *st;
    const void *lo;
    size_t size;
    void *fake;
    void *tsan;
};

static struct rctx main_ctx;
static struct rctx *prev;   /* the context that switched last */

static inline void announce(struct rctx *from, struct rctx *to, int last)
{
    prev = from;
    san_asan_start(last ? NULL : &from->fake, to->lo, to->size);
    san_tsan_switch(to->tsan);
}

static inline void arrived(struct rctx *self)
{
    san_asan_finish(self->fake, &prev->lo, &prev->size);
}

static inline void *rswitch(struct rctx *from, struct rctx *to, void *arg)
{
    announce(from, to, 0);
    void *r = weft__ctx_switch(&from->c, &to->c, arg);
    arrived(from);
    return r;
}

/* First thing a fresh context does. */
static inline void rentry(struct rctx *self)
{
    (void)self;
    san_asan_finish(NULL, &prev->lo, &prev->size);
}

/* Last switch out of a context that will never run again. */
static inline _Noreturn void rexit(struct rctx *from, struct rctx *to, void *arg)
{
    announce(from, to, 1);
    weft__ctx_switch(&from->c, &to->c, arg);
    abort();
}

static inline void rmake(struct rctx *r, void (*fn)(void *))
{
    memset(r, 0, sizeof *r);
    ASSERT_EQ(weft__stack_alloc(64 << 10, &r->st), 0);
    r->lo = r->st->lo;
    r->size = (size_t)(r->st->hi - r->st->lo);
    weft__ctx_make(&r->c, r->st->lo, r->size, fn);
    r->tsan = san_tsan_create();
    if (!main_ctx.tsan)
        main_ctx.tsan = san_tsan_current();
}

static inline void rfree(struct rctx *r)
{
    san_tsan_destroy(r->tsan);
    weft__stack_free(r->st);
}

#endif
