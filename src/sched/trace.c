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

#include <stdbool.h>
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

/* Events are formatted by hand into a line buffer and written with one
 * fwrite: printf's double formatting cost more than the rest of the trace
 * together. */
struct out { char b[512]; size_t n; };

static void o_str(struct out *o, const char *s)
{
    while (*s && o->n < sizeof o->b - 8)
        o->b[o->n++] = *s++;
}

static void o_u(struct out *o, unsigned long long v)
{
    char t[24];
    int i = 0;
    do {
        t[i++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (i)
        o->b[o->n++] = t[--i];
}

/* ns as microseconds with three decimals: Chrome's unit, exactly. */
static void o_us(struct out *o, uint64_t ns)
{
    o_u(o, ns / 1000);
    unsigned r = (unsigned)(ns % 1000);
    o->b[o->n++] = '.';
    o->b[o->n++] = (char)('0' + r / 100);
    o->b[o->n++] = (char)('0' + r / 10 % 10);
    o->b[o->n++] = (char)('0' + r % 10);
}

/* A JSON string (fiber names are the user's: escape them). */
static void o_json(struct out *o, const char *s)
{
    o->b[o->n++] = '"';
    for (; *s && o->n < sizeof o->b - 16; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            o->b[o->n++] = '\\';
            o->b[o->n++] = (char)c;
        } else if (c < 0x20) {
            o_str(o, "\\u00");
            o->b[o->n++] = "0123456789abcdef"[c >> 4];
            o->b[o->n++] = "0123456789abcdef"[c & 15];
        } else {
            o->b[o->n++] = (char)c;
        }
    }
    o->b[o->n++] = '"';
}

static const char *wait_name(int k)
{
    return k > 0 && k < WEFT_W_KINDS && weft__wait_names[k] ? weft__wait_names[k] : "?";
}

static void o_tail(struct out *o, uint64_t ts, unsigned widx)
{
    o_str(o, ",\"ts\":");
    o_us(o, ts);
    o_str(o, ",\"pid\":1,\"tid\":");
    o_u(o, widx);
}

/* Called with out_lock held. */
static void format(unsigned widx, const struct ev *e)
{
    struct out o = { .n = 0 };
    if (e->kind == EV_STEAL) {
        o_str(&o, ",\n{\"name\":\"steal\",\"cat\":\"steal\",\"ph\":\"i\",\"s\":\"t\"");
        o_tail(&o, e->t0, widx);
        o_str(&o, ",\"args\":{\"from\":");
        o_u(&o, (unsigned)e->post);
        o_str(&o, ",\"fibers\":");
        o_u(&o, e->id);
        o_str(&o, "}}");
        fwrite(o.b, 1, o.n, out);
        return;
    }
    bool park = e->post == WEFT_POST_PARK;
    o_str(&o, ",\n{\"name\":");
    if (e->name[0]) {
        o_json(&o, e->name);
    } else {
        o_str(&o, "\"fiber ");
        o_u(&o, e->id);
        o_str(&o, "\"");
    }
    o_str(&o, ",\"cat\":\"run\",\"ph\":\"X\"");
    o_tail(&o, e->t0, widx);
    o_str(&o, ",\"dur\":");
    o_us(&o, e->t1 - e->t0);
    o_str(&o, ",\"args\":{\"fiber\":");
    o_u(&o, e->id);
    o_str(&o, ",\"end\":\"");
    o_str(&o, e->post == WEFT_POST_YIELD ? "yield" : e->post == WEFT_POST_EXIT ? "exit" : "park: ");
    if (park)
        o_str(&o, wait_name(e->wkind));
    o_str(&o, "\"}}");
    if (park) {
        bool io = e->wkind == WEFT_W_FD_READ || e->wkind == WEFT_W_FD_WRITE || e->wkind == WEFT_W_IO;
        o_str(&o, ",\n{\"name\":\"park: ");
        o_str(&o, wait_name(e->wkind));
        o_str(&o, io ? "\",\"cat\":\"io\"" : "\",\"cat\":\"park\"");
        o_str(&o, ",\"ph\":\"i\",\"s\":\"t\"");
        o_tail(&o, e->t1, widx);
        o_str(&o, ",\"args\":{\"fiber\":");
        o_u(&o, e->id);
        char p[24];
        snprintf(p, sizeof p, "%p", e->obj);
        o_str(&o, ",\"on\":\"");
        o_str(&o, p);
        o_str(&o, "\"}}");
    }
    fwrite(o.b, 1, o.n, out);
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
    /* aligned like the type (a line per worker): calloc's 16 bytes are not */
    bufs = weft__aligned_alloc(_Alignof(struct tbuf), n * sizeof *bufs);
    if (!bufs)
        return -1;
    memset(bufs, 0, n * sizeof *bufs);
    for (unsigned i = 0; i < n; i++) {
        bufs[i].ev = malloc(TRACE_BUF * sizeof(struct ev));
        if (!bufs[i].ev) {
            while (i--)
                free(bufs[i].ev);
            weft__aligned_free(bufs);
            bufs = NULL;
            return -1;
        }
    }
    out = fopen(path, "w");
    if (!out) {
        fprintf(stderr, "weft: WEFT_TRACE: cannot open %s; tracing is off\n", path);
        for (unsigned i = 0; i < n; i++)
            free(bufs[i].ev);
        weft__aligned_free(bufs);
        bufs = NULL;
        return -1;
    }
    setvbuf(out, NULL, _IOFBF, (size_t)1 << 20);
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
    weft__aligned_free(bufs);
    bufs = NULL;
    nbufs = 0;
}
