/*
 * inspect — a small program to look into with weft's diagnostics
 * (docs/debugging.md): a few fibers parked in different ways, and
 * optionally one that misbehaves.
 *
 *   inspect dump     print weft_dump() and the counters, then exit
 *   inspect wait     park everything and wait: kill -QUIT it for a dump,
 *                    or attach gdb (source tools/gdb/weft.py; info fibers)
 *   inspect hog      a fiber spins for 300 ms without yielding (watchdog)
 *   inspect crash    a fiber dereferences NULL (crash report, core dump)
 *   inspect overflow a fiber recurses through its 64 KiB stack (guard page)
 *   inspect trace    a short ping-pong; run with WEFT_TRACE=out.json
 */
#include "weft.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile int sink;

__attribute__((noinline)) static int fetch_page(int n)
{
    int r = weft_sleep(3600ull * 1000000000);   /* stands in for slow I/O */
    sink += r;
    return r + n;
}

__attribute__((noinline)) static int handle_request(int n)
{
    int r = fetch_page(n);
    sink += r;
    return r + 1;
}

static void *server(void *arg)
{
    handle_request((int)(intptr_t)arg);
    return NULL;
}

static weft_mutex cache_lock = WEFT_MUTEX_INIT;
static weft_chan *jobs;

static void *cache_user(void *arg)
{
    (void)arg;
    if (weft_mutex_lock(&cache_lock) == 0)   /* main holds it */
        weft_mutex_unlock(&cache_lock);
    return NULL;
}

static void *consumer(void *arg)
{
    (void)arg;
    int job;
    while (weft_chan_recv(jobs, &job) == 0)
        ;
    return NULL;
}

static void *waiter(void *arg)
{
    weft_join(arg, NULL);
    return NULL;
}

__attribute__((noinline)) static void checksum(uint64_t ms)
{
    uint64_t end = weft_now() + ms * 1000000;
    while (weft_now() < end)
        sink++;
}

static void *hog(void *arg)
{
    (void)arg;
    checksum(300);
    return NULL;
}

__attribute__((noinline)) static void parse_header(const char *p)
{
    sink += p[3];   /* p is NULL */
}

static void *crasher(void *arg)
{
    (void)arg;
    parse_header(getenv("WEFT_NO_SUCH_VARIABLE"));
    return NULL;
}

/* Recursion without end: each frame takes ~500 bytes of the stack. */
__attribute__((noinline)) static int descend(volatile char *parent)
{
    volatile char frame[480];
    frame[0] = parent ? parent[0] : 1;
    if (frame[0] == 0)
        return 0;   /* never: frame[0] is always 1 */
    return descend(frame) + frame[1];
}

static void *walker(void *arg)
{
    (void)arg;
    sink += descend(NULL);
    return NULL;
}

/* Work in slices of 40 us, then yield or sleep: a timeline worth looking at. */
static void *pinger(void *arg)
{
    for (int i = 0; i < 12; i++) {
        uint64_t end = weft_now() + 40000;
        while (weft_now() < end)
            sink++;
        if (i % 3 == 2)
            weft_sleep(60000);
        else
            weft_yield();
    }
    return arg;
}

static void *main_fiber(void *arg)
{
    const char *mode = arg;
    weft_fiber *s1, *s2, *w;
    weft_attr a1 = { .name = "server-1" }, a2 = { .name = "server-2" }, aw = { .name = "waiter" };
    if (!strcmp(mode, "trace")) {
        weft_fiber *p[5];
        static const char *names[5] = { "parse", "render", "compress", "index", "upload" };
        for (int i = 0; i < 5; i++) {
            weft_attr ap = { .name = names[i] };
            weft_spawn(&p[i], &ap, pinger, NULL);
        }
        for (int i = 0; i < 5; i++)
            weft_join(p[i], NULL);
        return NULL;
    }
    weft_spawn(&s1, &a1, server, (void *)1);
    weft_spawn(&s2, &a2, server, (void *)2);
    weft_spawn(&w, &aw, waiter, s1);
    jobs = weft_chan_make(sizeof(int), 0);
    weft_mutex_lock(&cache_lock);
    weft_attr ac = { .name = "cache-user", .flags = WEFT_DETACHED };
    weft_attr an = { .name = "consumer", .flags = WEFT_DETACHED };
    weft_spawn(NULL, &ac, cache_user, NULL);
    weft_spawn(NULL, &an, consumer, NULL);
    weft_sleep(10 * 1000000);   /* let them all park */
    if (!strcmp(mode, "dump")) {
        weft_dump(1);
        weft_stats_t st;
        weft_stats(&st);
        printf("stats: %u workers, %llu alive, %llu switches, %llu parks, %llu steals\n",
               st.workers, (unsigned long long)st.alive, (unsigned long long)st.total.switches,
               (unsigned long long)st.total.parks, (unsigned long long)st.total.steals);
    } else if (!strcmp(mode, "wait")) {
        printf("pid %d: fibers parked; kill -QUIT %d for a dump\n", (int)getpid(), (int)getpid());
        fflush(stdout);
        weft_sleep(3600ull * 1000000000);
    } else if (!strcmp(mode, "hog")) {
        weft_fiber *h;
        weft_attr ah = { .name = "checksummer" };
        weft_spawn(&h, &ah, hog, NULL);
        weft_join(h, NULL);
    } else if (!strcmp(mode, "overflow")) {
        weft_fiber *c;
        weft_attr ac = { .name = "walker", .stack_size = 64 << 10 };
        weft_spawn(&c, &ac, walker, NULL);
        weft_join(c, NULL);
    } else if (!strcmp(mode, "crash")) {
        weft_fiber *c;
        weft_attr ac = { .name = "parser" };
        weft_spawn(&c, &ac, crasher, NULL);
        weft_join(c, NULL);
    }
    weft_mutex_unlock(&cache_lock);
    weft_chan_close(jobs);
    return NULL;   /* the rest are cancelled and joined by weft_run */
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "dump";
    int r = weft_run(NULL, main_fiber, (void *)mode, NULL);
    if (r < 0) {
        fprintf(stderr, "weft_run: %s\n", strerror(-r));
        return 1;
    }
    return 0;
}
