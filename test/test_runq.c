/*
 * The run queues alone (src/sched/runq.h, src/sched/deque.h), driven
 * deterministically and under concurrent theft, like Go's export_test.go
 * does for runqput/runqsteal.
 * Fibers here are just distinct addresses: the ring never dereferences them.
 */
#include "test.h"

#include "sched/deque.h"
#include "sched/runq.h"

#include <pthread.h>
#include <stdatomic.h>

#define NITEMS 200000

static struct weft__runq q;
static char items[NITEMS];
static _Atomic int seen[NITEMS];
static _Atomic int done_pushing;
static _Atomic long stolen_total;

#define ITEM(i) ((struct weft_fiber *)(void *)&items[i])
#define INDEX(f) ((size_t)((char *)(void *)(f) - items))

TEST(runq_fifo_and_next)
{
    memset(&q, 0, sizeof q);
    bool nx;
    ASSERT(runq_get(&q, false, &nx) == NULL);
    for (int i = 0; i < 10; i++)
        ASSERT(runq_push(&q, ITEM(i)));
    ASSERT_EQ(runq_len(&q), 10);
    ASSERT(runq_put_next(&q, ITEM(100)) == NULL);
    /* the next slot goes first, displacing puts the old one back to the caller */
    ASSERT_PTR_EQ(runq_put_next(&q, ITEM(101)), ITEM(100));
    ASSERT_PTR_EQ(runq_get(&q, false, &nx), ITEM(101));
    ASSERT(nx);
    for (int i = 0; i < 10; i++) {
        ASSERT_PTR_EQ(runq_get(&q, false, &nx), ITEM(i));
        ASSERT(!nx);
    }
    ASSERT(runq_empty(&q));
}

TEST(runq_skip_next_takes_ring_first)
{
    memset(&q, 0, sizeof q);
    bool nx;
    runq_push(&q, ITEM(1));
    runq_put_next(&q, ITEM(2));
    ASSERT_PTR_EQ(runq_get(&q, true, &nx), ITEM(1));
    ASSERT_PTR_EQ(runq_get(&q, true, &nx), ITEM(2));   /* ring empty: next after all */
    ASSERT(nx);
    ASSERT(runq_get(&q, true, &nx) == NULL);
}

TEST(runq_full_and_grab_half)
{
    memset(&q, 0, sizeof q);
    for (unsigned i = 0; i < RUNQ_SIZE; i++)
        ASSERT(runq_push(&q, ITEM(i)));
    ASSERT(!runq_push(&q, ITEM(RUNQ_SIZE)));
    struct weft_fiber *batch[RUNQ_SIZE];
    uint32_t n = runq_grab_half(&q, batch);
    ASSERT_EQ(n, RUNQ_SIZE / 2);
    for (uint32_t i = 0; i < n; i++)
        ASSERT_PTR_EQ(batch[i], ITEM(i));   /* the older half */
    ASSERT(runq_push(&q, ITEM(RUNQ_SIZE)));
    ASSERT_EQ(runq_len(&q), RUNQ_SIZE / 2 + 1);
}

TEST(runq_grab_takes_half_rounded_up)
{
    memset(&q, 0, sizeof q);
    for (int i = 0; i < 7; i++)
        runq_push(&q, ITEM(i));
    struct weft_fiber *batch[RUNQ_SIZE];
    ASSERT_EQ(runq_grab(&q, batch, false), 4);
    ASSERT_PTR_EQ(batch[0], ITEM(0));
    ASSERT_EQ(runq_len(&q), 3);
    /* empty ring: the next slot only when asked */
    memset(&q, 0, sizeof q);
    runq_put_next(&q, ITEM(9));
    ASSERT_EQ(runq_grab(&q, batch, false), 0);
    ASSERT_EQ(runq_grab(&q, batch, true), 1);
    ASSERT_PTR_EQ(batch[0], ITEM(9));
}

/* The owner took g (NULL: nothing there). */
static void owner_took(struct weft_fiber *g, long *owner)
{
    if (g) {
        atomic_fetch_add(&seen[INDEX(g)], 1);
        (*owner)++;
    }
}

/* After a concurrent run: every item was taken exactly once, by the owner
 * or by a thief. */
static void check_taken_once(long owner, long stolen)
{
    for (size_t i = 0; i < NITEMS; i++)
        if (atomic_load(&seen[i]) != 1)
            test_fail(__FILE__, __LINE__, "item %zu taken %d times", i, atomic_load(&seen[i]));
    ASSERT_EQ(owner + stolen, NITEMS);
    printf("owner took %ld, thieves %ld\n", owner, stolen);
}

static void *thief(void *arg)
{
    struct weft__runq *mine = arg;
    struct weft_fiber *batch[RUNQ_SIZE];
    long got = 0;
    for (;;) {
        uint32_t n = runq_grab(&q, batch, true);
        for (uint32_t i = 0; i < n; i++)
            atomic_fetch_add(&seen[INDEX(batch[i])], 1);
        got += n;
        if (n == 0 && atomic_load(&done_pushing) && runq_empty(&q))
            break;
    }
    (void)mine;
    atomic_fetch_add(&stolen_total, got);
    return NULL;
}

/* One owner pushes and pops, three thieves steal: every item is taken
 * exactly once, and a fair share of them is stolen. */
TEST(runq_concurrent_steal_exactly_once)
{
    memset(&q, 0, sizeof q);
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, thief, NULL);
    long owner = 0;
    bool nx;
    for (size_t i = 0; i < NITEMS; i++) {
        struct weft_fiber *f = ITEM(i);
        if (i % 3 == 0) {
            struct weft_fiber *old = runq_put_next(&q, f);
            if (!old)
                continue;
            f = old;
        }
        while (!runq_push(&q, f))
            owner_took(runq_get(&q, false, &nx), &owner);   /* full: the owner drains one itself */
        if (i % 2 == 0)
            owner_took(runq_get(&q, false, &nx), &owner);
    }
    struct weft_fiber *g;
    while ((g = runq_get(&q, false, &nx)))
        owner_took(g, &owner);
    atomic_store(&done_pushing, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    check_taken_once(owner, atomic_load(&stolen_total));
}

/* Owner only pushes; one thief: about half of everything gets stolen when
 * the thief keeps up (grab takes half of what is there). Deterministic:
 * alternate push bursts and single grabs on one thread. */
TEST(runq_steal_takes_about_half)
{
    memset(&q, 0, sizeof q);
    struct weft_fiber *batch[RUNQ_SIZE];
    long stolen = 0, owned = 0;
    bool nx;
    for (int round = 0; round < 1000; round++) {
        for (int i = 0; i < 64; i++)
            ASSERT(runq_push(&q, ITEM(round * 64 + i)));
        stolen += runq_grab(&q, batch, false);
        while (runq_get(&q, false, &nx))
            owned++;
    }
    ASSERT_EQ(stolen + owned, 64000);
    ASSERT_EQ(stolen, 32000);
}

/* ------------------------------------------------------ the spawn deque */

static struct weft__deque dq;

TEST(deque_owner_lifo_thief_fifo)
{
    memset(&dq, 0, sizeof dq);
    ASSERT(deque_pop(&dq) == NULL);
    ASSERT(deque_steal(&dq) == NULL);
    for (int i = 0; i < 5; i++)
        ASSERT(deque_push(&dq, ITEM(i)));
    ASSERT_EQ(deque_len(&dq), 5);
    ASSERT_PTR_EQ(deque_pop(&dq), ITEM(4));     /* the owner: youngest first */
    ASSERT_PTR_EQ(deque_steal(&dq), ITEM(0));   /* a thief: oldest first */
    ASSERT_PTR_EQ(deque_steal(&dq), ITEM(1));
    ASSERT_PTR_EQ(deque_pop(&dq), ITEM(3));
    ASSERT_PTR_EQ(deque_pop(&dq), ITEM(2));     /* the last one, taken by the owner */
    ASSERT(deque_pop(&dq) == NULL);
    ASSERT(deque_steal(&dq) == NULL);
    ASSERT_EQ(deque_len(&dq), 0);
    /* and usable again after being emptied from both ends */
    ASSERT(deque_push(&dq, ITEM(7)));
    ASSERT_PTR_EQ(deque_steal(&dq), ITEM(7));
    ASSERT(deque_pop(&dq) == NULL);
}

TEST(deque_full_refuses_and_wraps)
{
    memset(&dq, 0, sizeof dq);
    for (int round = 0; round < 3; round++) {   /* indices run past the buffer size */
        for (int i = 0; i < DEQUE_SIZE; i++)
            ASSERT(deque_push(&dq, ITEM(i)));
        ASSERT(!deque_push(&dq, ITEM(DEQUE_SIZE)));
        ASSERT_EQ(deque_len(&dq), DEQUE_SIZE);
        ASSERT_PTR_EQ(deque_steal(&dq), ITEM(0));
        ASSERT(deque_push(&dq, ITEM(DEQUE_SIZE)));   /* a steal made room */
        for (int i = DEQUE_SIZE; i >= 1; i--)
            ASSERT_PTR_EQ(deque_pop(&dq), ITEM(i));
        ASSERT(deque_pop(&dq) == NULL);
    }
}

static _Atomic long dq_stolen;

static void *deque_thief(void *arg)
{
    (void)arg;
    long got = 0;
    for (;;) {
        struct weft_fiber *f = deque_steal(&dq);
        if (f) {
            atomic_fetch_add(&seen[INDEX(f)], 1);
            got++;
        } else if (atomic_load(&done_pushing) && deque_len(&dq) == 0) {
            break;
        }
    }
    atomic_fetch_add(&dq_stolen, got);
    return NULL;
}

/* One owner pushes and pops (often down to the last item, the one race
 * the deque has), three thieves steal: every item is taken exactly once,
 * and both sides get some. */
TEST(deque_concurrent_steal_exactly_once)
{
    memset(&dq, 0, sizeof dq);
    for (size_t i = 0; i < NITEMS; i++)
        atomic_store(&seen[i], 0);
    atomic_store(&done_pushing, 0);
    atomic_store(&dq_stolen, 0);
    pthread_t th[3];
    for (int i = 0; i < 3; i++)
        pthread_create(&th[i], NULL, deque_thief, NULL);
    long owner = 0;
    for (size_t i = 0; i < NITEMS; i++) {
        while (!deque_push(&dq, ITEM(i)))
            owner_took(deque_pop(&dq), &owner);
        if (i % 3 != 0)   /* pop often, so the deque is often one item deep */
            owner_took(deque_pop(&dq), &owner);
    }
    struct weft_fiber *g;
    while ((g = deque_pop(&dq)))
        owner_took(g, &owner);
    atomic_store(&done_pushing, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    check_taken_once(owner, atomic_load(&dq_stolen));
    ASSERT_GT(owner, 0);
}
