/*
 * Tutorial step 6 (docs/tutorial.md): what is every fiber doing?
 *
 *   tutorial_6_dump
 *
 * Parks four fibers in four kinds of wait (a sleep, a channel receive, a
 * mutex, a read on a pipe), writes weft_dump to stdout, then lets each one
 * go and joins it. `kill -QUIT` on a running weft program prints the same
 * dump to stderr (WEFT_DUMP_SIGNAL).
 */
#include <weft.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MS 1000000ull

static weft_mutex lock = WEFT_MUTEX_INIT;
static weft_chan *mailbox;
static int pipefd[2];

static void *sleeper(void *arg)
{
    weft_sleep(3600 * 1000 * MS);   /* cancelled below */
    return NULL;
}

static void *receiver(void *arg)
{
    int v;
    weft_chan_recv(mailbox, &v);
    return NULL;
}

static void *locker(void *arg)
{
    if (weft_mutex_lock(&lock) == 0)
        weft_mutex_unlock(&lock);
    return NULL;
}

static void *reader(void *arg)
{
    char c;
    weft_read(pipefd[0], &c, 1);
    return NULL;
}

static void *main_fiber(void *arg)
{
    if (pipe(pipefd) < 0 || weft_chan_new(&mailbox, sizeof(int), 0) < 0)
        return (void *)1;
    weft_mutex_lock(&lock);   /* held by main: locker will wait */

    void *(*fn[])(void *) = { sleeper, receiver, locker, reader };
    const char *names[] = { "sleeper", "receiver", "locker", "reader" };
    weft_fiber *f[4];
    for (int i = 0; i < 4; i++) {
        weft_attr a = { .name = names[i] };
        weft_spawn(&f[i], &a, fn[i], NULL);
    }
    weft_sleep(50 * MS);   /* long enough for each to reach its wait */

    fflush(stdout);        /* the dump writes to fd 1 directly */
    weft_dump(1);

    weft_cancel(f[0]);                 /* the sleep returns -ECANCELED */
    int v = 42;
    weft_chan_send(mailbox, &v);       /* the receive gets 42 */
    weft_mutex_unlock(&lock);          /* locker gets the lock */
    weft_write(pipefd[1], "x", 1);     /* the read gets a byte */
    for (int i = 0; i < 4; i++)
        weft_join(f[i], NULL);
    printf("main: all four fibers let go and joined\n");
    weft_chan_free(mailbox);
    weft_close(pipefd[0]);
    weft_close(pipefd[1]);
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
