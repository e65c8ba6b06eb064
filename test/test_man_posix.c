/*
 * The manual pages (man/man3, man/man7) are the reference a C programmer
 * reads first: tools/check_man.sh checks that every public function has a
 * page, that every page renders without a groff warning, and that the
 * pages name only pages and files that exist. This test runs it as part of
 * `make check`, so a call added to include/weft.h without a page fails
 * here. The script also checks build/libweft.so's exports when that has
 * been built.
 */
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <unistd.h>

TEST(man_pages_cover_the_api)
{
    test_tool("bash tools/check_man.sh . 2>&1", " 0 problems");
}

/* ------------------------------------------------------------------------
 * The CONTEXT sections, checked: what each call does with no runtime, and
 * from a plain thread while one runs (a pool thread of weft_blocking is
 * one). A change of behaviour there must come with a change of its page.
 */
static void *twice(void *arg) { return (void *)((intptr_t)arg * 2); }

/* The calls that act the same with no runtime and from a plain thread. */
static void check_plain_common(void)
{
    ASSERT_PTR_EQ(weft_self(), NULL);
    ASSERT_EQ(weft_worker_id(), -1);
    ASSERT_EQ(weft_cancelled(), 0);
    ASSERT_EQ(weft_id(NULL), 0);
    ASSERT_STR_EQ(weft_name(NULL), "");
    weft_yield();
    ASSERT_EQ(weft_sleep(1000), 0);
    ASSERT_EQ(weft_deadline(weft_now() + 1000000000), -EPERM);

    weft_key key;
    ASSERT_EQ(weft_key_create(&key, NULL), 0);
    ASSERT_EQ(weft_setspecific(key, &key), -EPERM);
    ASSERT_PTR_EQ(weft_getspecific(key), NULL);
    ASSERT_EQ(weft_key_delete(key), 0);
    ASSERT_EQ(weft_key_delete(key), -EINVAL);

    weft_mutex m;
    ASSERT_EQ(weft_mutex_init(&m), 0);
    ASSERT_EQ(weft_mutex_lock(&m), -EPERM);
    ASSERT_EQ(weft_mutex_trylock(&m), -EPERM);
    ASSERT_EQ(weft_mutex_unlock(&m), -EPERM);
    ASSERT_EQ(weft_mutex_destroy(&m), 0);

    weft_cond c;
    ASSERT_EQ(weft_cond_init(&c), 0);
    ASSERT_EQ(weft_cond_wait(&c, &m), -EPERM);
    ASSERT_EQ(weft_cond_signal(&c), 0);
    ASSERT_EQ(weft_cond_broadcast(&c), 0);
    ASSERT_EQ(weft_cond_destroy(&c), 0);

    weft_sem s = WEFT_SEM_INIT(0);
    ASSERT_EQ(weft_sem_wait(&s), -EPERM);
    ASSERT_EQ(weft_sem_trywait(&s), -EAGAIN);
    ASSERT_EQ(weft_sem_post(&s), 0);
    ASSERT_EQ(weft_sem_trywait(&s), 0);

    weft_wg g = WEFT_WG_INIT;
    ASSERT_EQ(weft_wg_wait(&g), -EPERM);
    ASSERT_EQ(weft_wg_add(&g, 1), 0);
    ASSERT_EQ(weft_wg_done(&g), 0);
    ASSERT_EQ(weft_wg_done(&g), -EINVAL);

    weft_chan *ch = weft_chan_make(sizeof(int), 1);
    ASSERT(ch != NULL);
    int v = 7, got = 0;
    ASSERT_EQ(weft_chan_send(ch, &v), -EPERM);
    ASSERT_EQ(weft_chan_recv(ch, &got), -EPERM);
    ASSERT_EQ(weft_chan_trysend(ch, &v), 0);
    ASSERT_EQ(weft_chan_trysend(ch, &v), -EAGAIN);
    weft_case cs = { .chan = ch, .op = WEFT_RECV, .elem = &got };
    ASSERT_EQ(weft_select(&cs, 1), -EPERM);
    ASSERT_EQ(weft_tryselect(&cs, 1), 0);
    ASSERT_EQ(got, 7);
    ASSERT_EQ(weft_tryselect(NULL, 0), -EAGAIN);
    ASSERT_EQ(weft_chan_tryrecv(ch, &got), -EAGAIN);
    ASSERT_EQ(weft_chan_close(ch), 0);
    ASSERT_EQ(weft_chan_close(ch), -EPIPE);
    ASSERT_EQ(weft_chan_tryrecv(ch, &got), -EPIPE);
    weft_chan_free(ch);
    ASSERT_PTR_EQ(weft_chan_make(1 << 20, 1), NULL);   /* elements above 64 KiB */

    void *ret = NULL;
    ASSERT_EQ(weft_blocking(twice, (void *)21, &ret), 0);   /* in place */
    ASSERT_PTR_EQ(ret, (void *)42);

    int p[2];
    ASSERT_EQ(pipe(p), 0);
    ASSERT_EQ(weft_write(p[1], "x", 1), 1);
    ASSERT_EQ(weft_wait_fd(p[0], POLLIN) & POLLIN, POLLIN);
    char b;
    ASSERT_EQ(weft_read(p[0], &b, 1), 1);
    ASSERT_EQ(weft_close(p[0]), 0);
    ASSERT_EQ(weft_close(p[1]), 0);
    ASSERT_EQ(weft_close(-1), -EBADF);

    void *pcs[8];
    int n = weft_backtrace(NULL, pcs, 8);
    ASSERT(n > 0 || n == -ENOTSUP);
}

TEST(man_context_outside_weft_run)
{
    check_plain_common();
    ASSERT_STR_EQ(weft_io_backend(), "none");
    ASSERT_EQ(weft_spawn(NULL, &(weft_attr){ .flags = WEFT_DETACHED }, twice, NULL), -EPERM);
    ASSERT_EQ(weft_dump(1), -EPERM);
    weft_stats_t st;
    ASSERT_EQ(weft_stats(&st), -EPERM);
    ASSERT_EQ(weft_run(&(weft_config){ .flags = 1 }, twice, NULL, NULL), -EINVAL);
    ASSERT_EQ(weft_run(NULL, NULL, NULL, NULL), -EINVAL);
}

static weft_sem spawned_ran = WEFT_SEM_INIT(0);

static void *post_spawned(void *arg)
{
    (void)arg;
    weft_sem_post(&spawned_ran);
    return NULL;
}

/* On a thread of the blocking pool: a plain thread while the runtime runs. */
static void *plain_thread_checks(void *arg)
{
    check_plain_common();
    ASSERT(strcmp(weft_io_backend(), "none") != 0);
    weft_fiber *f = NULL;
    ASSERT_EQ(weft_spawn(&f, NULL, post_spawned, NULL), 0);
    ASSERT_EQ(weft_join(f, NULL), -EPERM);
    ASSERT_EQ(weft_detach(f), 0);
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    ASSERT_GE(null, 0);
    ASSERT_EQ(weft_dump(null), 0);
    close(null);
    weft_stats_t st;
    ASSERT_EQ(weft_stats(&st), 0);
    ASSERT_GE(st.workers, 1);
    ASSERT_EQ(weft_run(NULL, twice, NULL, NULL), -EBUSY);
    return arg;
}

static void *plain_thread_main(void *arg)
{
    void *ret = NULL;
    ASSERT_EQ(weft_blocking(plain_thread_checks, (void *)1, &ret), 0);
    ASSERT_PTR_EQ(ret, (void *)1);
    ASSERT_EQ(weft_sem_wait(&spawned_ran), 0);   /* the plain thread's spawn ran */
    ASSERT_EQ(weft_run(NULL, twice, NULL, NULL), -EBUSY);
    return arg;
}

TEST(man_context_plain_thread)
{
    test_run(plain_thread_main, NULL);
}
