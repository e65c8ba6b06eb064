/* Fiber life cycle: spawn, join, detach, yield, ids, names, bad input. */
#include "test.h"

#include <errno.h>

static void *ret_arg(void *arg) { return arg; }

static void *main_spawn_join(void *arg)
{
    weft_fiber *f;
    ASSERT_EQ(weft_spawn(&f, NULL, ret_arg, (void *)0x1234), 0);
    void *r = NULL;
    ASSERT_EQ(weft_join(f, &r), 0);
    ASSERT_PTR_EQ(r, (void *)0x1234);
    return arg;
}

TEST(fiber_spawn_join)
{
    ASSERT_PTR_EQ(test_run(main_spawn_join, (void *)7), (void *)7);
}
