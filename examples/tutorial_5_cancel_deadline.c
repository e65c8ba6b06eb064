/*
 * Tutorial step 5 (docs/tutorial.md): stopping a fiber that waits.
 *
 *   tutorial_5_cancel_deadline
 *
 * weft_cancel makes a fiber's current or next blocking call return
 * -ECANCELED, and every one after it: the fiber unwinds through its own
 * error paths. A deadline makes every blocking call past it return
 * -ETIMEDOUT: one budget for a whole sequence of calls. And when the main
 * fiber returns, weft_run cancels every fiber still alive and waits for it.
 */
#include <weft.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MS 1000000ull

static const char *err_name(long r)
{
    return r == -ECANCELED ? "-ECANCELED" : r == -ETIMEDOUT ? "-ETIMEDOUT" : r == 0 ? "0" : strerror((int)-r);
}

/* Waits for a byte on a pipe nobody writes to. */
static void *reader(void *arg)
{
    int fd = *(int *)arg;
    char c;
    ssize_t n = weft_read(fd, &c, 1);
    printf("reader: weft_read returned %s\n", err_name(n));
    int r = weft_sleep(1 * MS);
    printf("reader: then weft_sleep returned %s, weft_cancelled() = %d\n", err_name(r),
           weft_cancelled());
    return NULL;
}

/* Gives itself 100 ms for everything it waits on from now. */
static void *with_deadline(void *arg)
{
    weft_chan *c = arg;
    uint64_t t0 = weft_now();
    weft_deadline_set((int64_t)(t0 + 100 * MS), NULL);
    int v;
    int r = weft_chan_recv(c, &v);   /* nobody sends */
    printf("deadline: weft_chan_recv returned %s after %llu ms\n", err_name(r),
           (unsigned long long)((weft_now() - t0) / MS));
    r = weft_sleep(1 * MS);
    printf("deadline: past it, weft_sleep returned %s at once\n", err_name(r));
    weft_deadline_set(-1, NULL);     /* no deadline any more */
    r = weft_sleep(1 * MS);
    printf("deadline: cleared, weft_sleep returned %s\n", err_name(r));
    return NULL;
}

/* Sleeps for an hour; nobody joins it. */
static void *forgotten(void *arg)
{
    int r = weft_sleep(3600 * 1000 * MS);
    printf("forgotten: weft_sleep returned %s\n", err_name(r));
    return NULL;
}

static void *main_fiber(void *arg)
{
    /* 1. cancel */
    int p[2];
    if (pipe(p) < 0)
        return (void *)1;
    weft_fiber *f;
    weft_spawn(&f, NULL, reader, &p[0]);
    weft_sleep(50 * MS);   /* let it park in its read */
    printf("main: cancelling the reader\n");
    weft_cancel(f);
    weft_join(f, NULL);
    weft_close(p[0]);
    weft_close(p[1]);

    /* 2. deadline */
    weft_chan *c;
    if (weft_chan_new(&c, sizeof(int), 0) < 0)
        return (void *)1;
    weft_spawn(&f, NULL, with_deadline, c);
    weft_join(f, NULL);
    weft_chan_free(c);

    /* 3. what is left when main returns */
    weft_attr a = { .flags = WEFT_DETACHED };
    weft_spawn(NULL, &a, forgotten, NULL);
    weft_sleep(10 * MS);
    printf("main: returning, one fiber still asleep\n");
    return NULL;
}

int main(void)
{
    int r = weft_run(NULL, main_fiber, NULL, NULL);
    printf("weft_run returned %d: no fiber is left\n", r);
    return r < 0;
}
