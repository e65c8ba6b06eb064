/*
 * Tutorial step 4 (docs/tutorial.md): fibers that talk over channels.
 *
 *   tutorial_4_channels
 *
 * A pipeline: one fiber generates the numbers 1..10 on an unbuffered
 * channel, three fibers square them onto a buffered one, and the main fiber
 * adds up the squares. Closing a channel is how a stage says "no more":
 * the receivers' weft_chan_recv then returns -EPIPE once it is drained.
 */
#include <weft.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define SQUARERS 3

struct pipeline {
    weft_chan *numbers;   /* int:  generator -> squarers, unbuffered */
    weft_chan *squares;   /* long: squarers -> main, room for 4 */
    weft_wg squarers;     /* squarers still running */
};

static void *generate(void *arg)
{
    struct pipeline *p = arg;
    for (int i = 1; i <= 10; i++)
        weft_chan_send(p->numbers, &i);   /* waits until a squarer takes it */
    weft_chan_close(p->numbers);          /* the squarers' receives end with -EPIPE */
    return NULL;
}

static void *square(void *arg)
{
    struct pipeline *p = arg;
    int x;
    while (weft_chan_recv(p->numbers, &x) == 0) {
        long sq = (long)x * x;
        weft_chan_send(p->squares, &sq);   /* waits only when 4 are queued already */
    }
    weft_wg_done(&p->squarers);
    return NULL;
}

/* The last squarer to finish cannot know it is the last: a wait group
 * counts them, and one more fiber closes squares when the count is 0. */
static void *close_when_done(void *arg)
{
    struct pipeline *p = arg;
    weft_wg_wait(&p->squarers);
    weft_chan_close(p->squares);
    return NULL;
}

static void *main_fiber(void *arg)
{
    struct pipeline p;
    int r = weft_chan_new(&p.numbers, sizeof(int), 0);
    if (r == 0)
        r = weft_chan_new(&p.squares, sizeof(long), 4);
    if (r < 0) {
        fprintf(stderr, "weft_chan_new: %s\n", strerror(-r));
        return (void *)1;
    }
    weft_wg_init(&p.squarers);
    weft_wg_add(&p.squarers, SQUARERS);

    weft_fiber *f[SQUARERS + 2];
    weft_spawn(&f[0], NULL, generate, &p);
    for (int i = 1; i <= SQUARERS; i++)
        weft_spawn(&f[i], NULL, square, &p);
    weft_spawn(&f[SQUARERS + 1], NULL, close_when_done, &p);

    long sq, sum = 0;
    int count = 0;
    while ((r = weft_chan_recv(p.squares, &sq)) == 0) {
        sum += sq;
        count++;
    }
    printf("main: %d squares, sum %ld; the last receive said %s\n", count, sum,
           r == -EPIPE ? "-EPIPE (closed and drained)" : strerror(-r));

    /* A channel is freed only when no fiber can be inside a call on it:
     * a fiber that is returned is out of every call. */
    for (int i = 0; i < SQUARERS + 2; i++)
        weft_join(f[i], NULL);
    weft_chan_free(p.numbers);
    weft_chan_free(p.squares);
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
