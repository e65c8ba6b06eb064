/*
 * Tutorial step 1 (docs/tutorial.md): a runtime, three fibers, a join.
 *
 *   tutorial_1_hello
 *
 * weft_run turns the calling thread into the first worker and runs
 * main_fiber on a fiber of its own; each weft_spawn makes another fiber,
 * and weft_join waits for one and takes its result, like pthread_join.
 */
#include <weft.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static void *nap(void *arg)
{
    uint64_t ms = (uint64_t)(uintptr_t)arg;
    weft_sleep(ms * 1000000);   /* parks this fiber; the worker runs others */
    printf("%s woke after %llu ms\n", weft_name(weft_self()), (unsigned long long)ms);
    return (void *)(uintptr_t)(ms * 2);
}

static void *main_fiber(void *arg)
{
    static const char *names[] = { "slow", "quick", "middle" };
    static const unsigned ms[] = { 30, 10, 20 };
    weft_fiber *f[3];
    for (int i = 0; i < 3; i++) {
        weft_attr a = { .name = names[i] };
        int r = weft_spawn(&f[i], &a, nap, (void *)(uintptr_t)ms[i]);
        if (r < 0) {
            fprintf(stderr, "weft_spawn: %s\n", strerror(-r));
            return (void *)1;
        }
    }
    printf("main: spawned 3 fibers\n");
    for (int i = 0; i < 3; i++) {
        void *ret;
        weft_join(f[i], &ret);   /* waits for it; its stack goes back to the pool */
        printf("main: joined %s, it returned %llu\n", names[i],
               (unsigned long long)(uintptr_t)ret);
    }
    return NULL;
}

int main(void)
{
    void *ret;
    int r = weft_run(NULL, main_fiber, NULL, &ret);
    if (r < 0) {
        fprintf(stderr, "weft_run: %s\n", strerror(-r));
        return 1;
    }
    return ret ? 1 : 0;
}
