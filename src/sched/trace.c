/*
 * The scheduling trace: WEFT_TRACE=out.json writes Chrome's trace-event
 * JSON, which Perfetto (ui.perfetto.dev) and chrome://tracing open as a
 * timeline with one track per worker:
 *
 *   - a slice for every run of a fiber on the worker, named by the fiber's
 *     name (or "fiber N"), its arguments saying how the run ended ("yield",
 *     "exit", or "park: <what it waits on>");
 *   - an instant event at each park, named by the reason ("park: mutex",
 *     "park: sleep", ...; waits on file descriptors are in category "io");
 *   - an instant event at each steal, with the victim and the count.
 *
 * COST WHEN OFF. The scheduler tests weft__trace_on, a plain int that is
 * written only while no worker thread runs (at the start and the end of a
 * runtime), under __builtin_expect: two predictable, not-taken branches per
 * fiber switch and one per steal. bench/bench_trace.c measures it.
 *
 * COST WHEN ON. Each worker appends fixed-size records to a buffer of its
 * own — no locks, no formatting, one clock read per switch. A full buffer
 * is formatted and written by that worker under the file's lock; the
 * rest are flushed when the runtime ends, after every worker stopped, and
 * the closing bracket is written then: the file is valid JSON whenever
 * weft_run returns. A process that exits without returning from weft_run
 * leaves a truncated file (Perfetto still reads the complete events).
 */
#define _GNU_SOURCE
#include "diag.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int weft__trace_on;

enum { EV_RUN = 1, EV_STEAL };
#define TRACE_BUF 8192

struct ev {
    uint64_t t0, t1;        /* ns since the trace began */
    uint64_t id;            /* fiber id, or the steal's count */
    const void *obj;        /* what the fiber parked on */
    int kind;               /* EV_RUN, EV_STEAL */
    int post;               /* EV_RUN: WEFT_POST_*; EV_STEAL: victim index */
    int wkind;              /* EV_RUN parks: enum weft__wait_kind */
    char name[WEFT_NAME_MAX];
};

struct tbuf {
    uint64_t t0;            /* start of the run in progress */
    size_t n;
    struct ev *ev;
} __attribute__((aligned(64)));

static FILE *out;
static weft__lock out_lock = WEFT__LOCK_INIT;
static struct tbuf *bufs;
static unsigned nbufs;
static uint64_t epoch;

static void put_str(const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

static void put_fiber_name(const struct ev *e)
{
    if (e->name[0]) {
        put_str(e->name);
    } else {
        char tmp[32];
        snprintf(tmp, sizeof tmp, "fiber %llu", (unsigned long long)e->id);
        put_str(tmp);
    }
}

static const char *wait_name(int k)
{
    return k > 0 && k < WEFT_W_KINDS && weft__wait_names[k] ? weft__wait_names[k] : "?";
}

/* Called with out_lock held. */
static void format(unsigned widx, const struct ev *e)
{
    double t0 = (double)e->t0 / 1e3, t1 = (double)e->t1 / 1e3;
    if (e->kind == EV_STEAL) {
        fprintf(out, ",\n{\"name\":\"steal\",\"cat\":\"steal\",\"ph\":\"i\",\"s\":\"t\",\"ts\":%.3f,"
                "\"pid\":1,\"tid\":%u,\"args\":{\"from\":%d,\"fibers\":%llu}}",
                t0, widx, e->post, (unsigned long long)e->id);
        return;
    }
    const char *end = e->post == WEFT_POST_YIELD ? "yield" : e->post == WEFT_POST_EXIT ? "exit" : "park";
    fputs(",\n{\"name\":", out);
    put_fiber_name(e);
    fprintf(out, ",\"cat\":\"run\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,\"pid\":1,\"tid\":%u,"
            "\"args\":{\"fiber\":%llu,\"end\":\"%s%s%s\"}}",
            t0, t1 - t0, widx, (unsigned long long)e->id, end,
            e->post == WEFT_POST_PARK ? ": " : "", e->post == WEFT_POST_PARK ? wait_name(e->wkind) : "");
    if (e->post == WEFT_POST_PARK) {
        bool io = e->wkind == WEFT_W_FD_READ || e->wkind == WEFT_W_FD_WRITE || e->wkind == WEFT_W_IO;
        fprintf(out, ",\n{\"name\":\"park: %s\",\"cat\":\"%s\",\"ph\":\"i\",\"s\":\"t\",\"ts\":%.3f,"
                "\"pid\":1,\"tid\":%u,\"args\":{\"fiber\":%llu,\"on\":\"%p\"}}",
                wait_name(e->wkind), io ? "io" : "park", t1, widx,
                (unsigned long long)e->id, e->obj);
    }
}

static void flush_buf(unsigned widx)
{
    struct tbuf *b = &bufs[widx];
    weft__lock_acquire(&out_lock);
    for (size_t i = 0; i < b->n; i++)
        format(widx, &b->ev[i]);
    weft__lock_release(&out_lock);
    b->n = 0;
}

static struct ev *next_ev(weft__worker *w)
{
    struct tbuf *b = &bufs[w->idx];
    if (WEFT_UNLIKELY(b->n == TRACE_BUF))
        flush_buf(w->idx);
    return &b->ev[b->n++];
}

void weft__trace_resume(weft__worker *w, weft_fiber *f)
{
    (void)f;
    bufs[w->idx].t0 = weft__now() - epoch;
}

void weft__trace_switched(weft__worker *w, weft_fiber *f)
{
    uint64_t t1 = weft__now() - epoch;
    struct ev *e = next_ev(w);
    e->kind = EV_RUN;
    e->t0 = bufs[w->idx].t0;
    e->t1 = t1;
    e->id = f->id;
    e->post = w->post;
    e->wkind = w->post == WEFT_POST_PARK ? f->wkind : 0;
    e->obj = w->post == WEFT_POST_PARK ? f->wobj : NULL;
    memcpy(e->name, f->name, sizeof e->name);
}

void weft__trace_steal(weft__worker *w, weft__worker *victim, uint32_t n)
{
    struct ev *e = next_ev(w);
    e->kind = EV_STEAL;
    e->t0 = e->t1 = weft__now() - epoch;
    e->id = n;
    e->post = (int)victim->idx;
    e->name[0] = 0;
}

int weft__trace_start(void)
{
    const char *path = getenv("WEFT_TRACE");
    if (!path || !*path)
        return 0;
    unsigned n = weft__nworkers();
    bufs = calloc(n, sizeof *bufs);
    if (!bufs)
        return -1;
    for (unsigned i = 0; i < n; i++) {
        bufs[i].ev = malloc(TRACE_BUF * sizeof(struct ev));
        if (!bufs[i].ev) {
            while (i--)
                free(bufs[i].ev);
            free(bufs);
            bufs = NULL;
            return -1;
        }
    }
    out = fopen(path, "w");
    if (!out) {
        fprintf(stderr, "weft: WEFT_TRACE: cannot open %s; tracing is off\n", path);
        for (unsigned i = 0; i < n; i++)
            free(bufs[i].ev);
        free(bufs);
        bufs = NULL;
        return -1;
    }
    nbufs = n;
    epoch = weft__now();
    fputs("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n"
          "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"args\":{\"name\":\"weft\"}}", out);
    for (unsigned i = 0; i < n; i++)
        fprintf(out, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":%u,"
                "\"args\":{\"name\":\"worker %u\"}}", i, i);
    weft__trace_on = 1;   /* before the other workers start: they see it */
    return 0;
}

void weft__trace_stop(void)
{
    if (!weft__trace_on)
        return;
    weft__trace_on = 0;   /* every worker has stopped */
    for (unsigned i = 0; i < nbufs; i++) {
        flush_buf(i);
        free(bufs[i].ev);
    }
    fputs("\n]}\n", out);
    fclose(out);
    out = NULL;
    free(bufs);
    bufs = NULL;
    nbufs = 0;
}
