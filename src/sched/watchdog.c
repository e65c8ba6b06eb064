/*
 * The watchdog: a monitor thread (Go's sysmon, one duty of it) that notices
 * a fiber holding its worker for longer than weft_config.watchdog_ms
 * (default 100 ms; env WEFT_WATCHDOG_MS, "0" or "off" to disable): a CPU
 * hog, or a raw blocking system call that should have gone through weft's
 * I/O layer or weft_blocking. Cooperative scheduling cannot take the worker
 * back, but it can keep the damage to that one fiber:
 *
 *   1. report it, once per episode: id, name, how long, and its backtrace,
 *      taken by the worker's own thread (weft__diag_capture_running)
 *      before anything is moved;
 *   2. move the fibers queued behind it — its worker's ring, spawn deque
 *      and next slot — to the global queue and wake an idle worker for
 *      them, and keep doing so for as long as the episode lasts. Fibers pinned to that worker
 *      (its inbox) have nowhere else to go and stay. With a single worker
 *      there is nobody to hand them to.
 *
 * HOW IT SEES A STUCK WORKER. Without touching the switch path: every
 * resume increments the worker's switch counter, so a worker that is not
 * idle, has a current fiber, and whose counter has not moved between two
 * samples N ms apart has been running that one fiber for at least N ms.
 * Samples are taken every N/4 ms, so a report comes between N and 1.25 N ms
 * into the episode. An episode ends when the counter moves. On a loaded
 * machine the OS may keep a worker thread off the CPU for that long: a
 * worker whose thread used less than N/2 ms of CPU in the episode and is
 * runnable (waiting for a CPU, not blocked in a system call) is given more
 * time rather than blamed.
 *
 * AN IDLE PROCESS USES NO CPU. When every worker is idle, the watchdog
 * sleeps on its futex without a timeout. The worker that leaves the idle
 * list first wakes it (weft__watchdog_kick, from the scheduler's
 * idle_remove_locked). The usual two-sided protocol prevents a lost
 * wake-up: the watchdog stores weft__wd_sleeping then reads nidle; a worker
 * decrements nidle then reads weft__wd_sleeping; both sequentially
 * consistent, so at least one of them sees the other.
 *
 * The thread starts with the runtime and is joined before weft_run
 * returns.
 */
#define _GNU_SOURCE
#include "diag.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MS 100u
#define REPORT_FRAMES 32

_Atomic uint32_t weft__wd_sleeping;
_Atomic uint64_t weft__wd_reports, weft__wd_moved;

static _Atomic uint32_t wd_word;     /* futex: bumped by kicks and by stop */
static _Atomic int wd_stop;
static weft__thread wd_thread;
static int wd_running;
static uint64_t wd_ns;

struct sample {
    uint64_t switches;   /* the worker's counter at the last change */
    uint64_t since;      /* when it was seen to change */
    int64_t cpu;         /* its thread's CPU time then (-1: unknown) */
    weft_fiber *f;
    int reported;
};
static struct sample *samples;

void weft__watchdog_kick(void)
{
    if (atomic_exchange(&weft__wd_sleeping, 0)) {
        atomic_fetch_add(&wd_word, 1);
        weft__futex_wake((uint32_t *)&wd_word, 1);
    }
}

/* Move w's queued fibers to the global queue. Returns how many. */
static uint32_t shed(weft__worker *w)
{
    weft_fiber *batch[RUNQ_SIZE / 2 + 1];
    uint32_t total = 0, n;
    while ((n = runq_grab(&w->rq, batch, true)) > 0) {
        weft__global_put(batch, n);
        total += n;
    }
    weft_fiber *f;
    while ((f = deque_steal(&w->dq))) {
        weft__global_put(&f, 1);
        total++;
    }
    if (total)
        atomic_fetch_add(&weft__wd_moved, total);
    return total;
}

/* Who the hog is, read from another thread while it may be returning,
 * and its record reused by a spawn: its id and name with atomic loads
 * (weft__fiber_ident), then the check of a seqlock whose sequence is the
 * worker's switch counter. Still f on w, with the counter unchanged since
 * the check that found it stuck, means f did not switch away, so it did
 * not return, and the words read are its own. Otherwise the hog let go a
 * moment ago: 0 (the report then says so instead of naming someone). */
struct ident { uint64_t id; char name[WEFT_NAME_MAX]; };

static int identify(weft__worker *w, weft_fiber *f, uint64_t sw, struct ident *who)
{
    weft__fiber_ident(f, &who->id, who->name);   /* ends with an acquire fence */
    return __atomic_load_n(&w->cur, __ATOMIC_RELAXED) == f &&
           atomic_load_explicit(&w->st.switches, memory_order_relaxed) == sw;
}

/* pcs[0..n): the hog's frames, captured before its queue moved (n == 0:
 * it had yielded by then; n < 0: no backtrace, -errno; blocked: the call
 * it was left alone in). who: NULL if it let go before it could be named. */
static void report(weft__worker *w, const struct ident *who, uint64_t held, uint32_t moved,
                   void *const *pcs, int n, const char *blocked)
{
    struct weft__text t = { 0 };
    if (who)
        weft__text_printf(&t, "weft: watchdog: fiber %llu \"%s\"", (unsigned long long)who->id,
                          who->name);
    else
        weft__text_printf(&t, "weft: watchdog: a fiber (it let go as it was being named)");
    weft__text_printf(&t, " has held worker %u for %llu ms "
                      "without yielding (a CPU hog, or a blocking call outside weft?)",
                      w->idx, (unsigned long long)(held / 1000000));
    if (weft__rt.n > 1)
        weft__text_printf(&t, "; %u queued fibers moved to other workers\n", moved);
    else
        weft__text_printf(&t, "; it is the only worker\n");
    if (n > 0)
        weft__text_backtrace(&t, pcs, n);
    else if (n == 0)
        weft__text_printf(&t, "    (it yielded before its backtrace was taken)\n");
    else if (blocked)
        weft__text_printf(&t, "    (no backtrace: it is blocked in %s(2), which the signal that "
                          "takes one would make fail with EINTR)\n", blocked);
    else
        weft__text_printf(&t, "    (no backtrace: %s)\n", strerror(-n));
    weft__text_write(&t, 2);
}

static bool all_idle(void)
{
    return atomic_load(&weft__rt.nidle) >= weft__rt.n;
}

static void check(uint64_t now)
{
    for (unsigned i = 0; i < weft__rt.n; i++) {
        weft__worker *w = &weft__rt.workers[i];
        struct sample *s = &samples[i];
        uint64_t sw = atomic_load_explicit(&w->st.switches, memory_order_acquire);
        weft_fiber *f = __atomic_load_n(&w->cur, __ATOMIC_ACQUIRE);   /* pairs with run_fiber */
        if (sw != s->switches || f != s->f || !f) {
            *s = (struct sample){ .switches = sw, .since = now, .f = f,
                                  .cpu = f ? weft__diag_thread_cpu(w) : -1 };
            continue;
        }
        if (now - s->since < wd_ns || weft__rt.n == 0)
            continue;
        if (!s->reported && s->cpu >= 0) {
            /* Not a hog if the OS kept the thread off the CPU: it ran less
             * than half the period and waits for a CPU (a thread blocked in
             * a system call is not runnable, and is reported). */
            int64_t cpu = weft__diag_thread_cpu(w);
            if (cpu >= 0 && (uint64_t)(cpu - s->cpu) < wd_ns / 2 &&
                weft__diag_thread_preempted(w) == 1)
                continue;
        }
        bool first = !s->reported;
        void *pcs[REPORT_FRAMES];
        int n = 0;
        struct ident who;
        int named = 0;
        const char *blocked = NULL;
        if (first) {
            s->reported = 1;
            named = identify(w, f, sw, &who);
            atomic_fetch_add(&weft__wd_reports, 1);   /* counted before anything moves */
            /* The backtrace first: once its queue has moved, the fibers it
             * held up run elsewhere, and the hog may be waiting for just
             * that and let go before a later capture reached it. Not from
             * a thread blocked in a call our signal would make fail with
             * EINTR (poll, nanosleep, ...): the report names the call. */
            blocked = weft__diag_blocked_call(w);
            n = blocked ? -EINTR : weft__diag_capture_running(w, f, pcs, REPORT_FRAMES);
        }
        uint32_t moved = weft__rt.n > 1 ? shed(w) : 0;
        if (first)
            report(w, named ? &who : NULL, now - s->since, moved, pcs, n, blocked);
    }
}

static void *wd_main(void *arg)
{
    (void)arg;
    uint64_t period = wd_ns / 4 > 1000000 ? wd_ns / 4 : 1000000;
    while (!atomic_load(&wd_stop)) {
        uint32_t seq = atomic_load(&wd_word);
        if (all_idle()) {
            atomic_store(&weft__wd_sleeping, 1);
            atomic_thread_fence(memory_order_seq_cst);   /* store, then load: see signal_worker */
            if (all_idle() && !atomic_load(&wd_stop))
                weft__futex_wait((uint32_t *)&wd_word, seq, -1);
            atomic_store(&weft__wd_sleeping, 0);
            /* Time asleep is nobody's episode. */
            memset(samples, 0, weft__rt.n * sizeof *samples);
            continue;
        }
        weft__futex_wait((uint32_t *)&wd_word, seq, (int64_t)period);
        check(weft__now());
    }
    return NULL;
}

static unsigned config_ms(const weft_config *cfg)
{
    unsigned ms = cfg && cfg->watchdog_ms ? cfg->watchdog_ms : DEFAULT_MS;
    const char *e = getenv("WEFT_WATCHDOG_MS");
    if (e && *e) {
        char *end;
        unsigned long v = strtoul(e, &end, 10);
        if (!strcmp(e, "off") || (!*end && v == 0))
            ms = -1u;
        else if (!*end && v < -1u)
            ms = (unsigned)v;
    }
    return ms;
}

int weft__watchdog_start(const weft_config *cfg)
{
    unsigned ms = config_ms(cfg);
    atomic_store(&weft__wd_reports, 0);
    atomic_store(&weft__wd_moved, 0);
    if (ms == -1u)
        return 0;
    samples = calloc(weft__rt.n, sizeof *samples);
    if (!samples)
        return -1;
    wd_ns = (uint64_t)ms * 1000000u;
    atomic_store(&wd_stop, 0);
    atomic_store(&weft__wd_sleeping, 0);
    if (weft__thread_start(&wd_thread, wd_main, NULL, "weft/watchdog") < 0) {
        free(samples);
        samples = NULL;
        return -1;
    }
    wd_running = 1;
    return 0;
}

void weft__watchdog_atfork_child(void)
{
    wd_running = 0;   /* its thread is not in the child */
    samples = NULL;
}

void weft__watchdog_stop(void)
{
    if (!wd_running)
        return;
    atomic_store(&wd_stop, 1);
    atomic_fetch_add(&wd_word, 1);
    weft__futex_wake((uint32_t *)&wd_word, 1);
    weft__thread_join(wd_thread);
    wd_running = 0;
    free(samples);
    samples = NULL;
}
