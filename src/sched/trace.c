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
 * own — no locks, no formatting, one clock read per switch (the instant
 * one run ends is the instant the next begins). The clock is the CPU's
 * counter where it has one every core agrees on (x86-64's invariant TSC,
 * AArch64's virtual counter): 8 ns a read here against clock_gettime's
 * 20. Raw counts are turned into nanoseconds only when a worker's buffer
 * is formatted, along the line through two (count, weft__now()) pairs
 * read at its previous flush (or the trace's start) and at this one: every
 * event in the buffer lies between the two, so a worker's track stays in
 * order and joins up from one buffer to the next. A full buffer
 * is formatted by that worker into text of its own and written under the
 * file's lock, 64 KiB at a time; the
 * rest are flushed when the runtime ends, after every worker stopped, and
 * the closing bracket is written then: the file is valid JSON whenever
 * weft_run returns. A process that exits without returning from weft_run
 * leaves a truncated file (Perfetto still reads the complete events).
 */
#define _GNU_SOURCE
#include "diag.h"

#include <stdbool.h>
#include <stdio.h>
#if defined(__x86_64__)
#include <x86intrin.h>
#endif
#include <stdlib.h>
#include <string.h>

int weft__trace_on;

enum { EV_RUN = 1, EV_STEAL };
#define TRACE_BUF 8192

struct ev {
    uint64_t t0, t1;        /* tclock() counts; ns since the trace began once flushed */
    uint64_t id;            /* fiber id, or the steal's count */
    const void *obj;        /* what the fiber parked on */
    int kind;               /* EV_RUN, EV_STEAL */
    int post;               /* EV_RUN: WEFT_POST_*; EV_STEAL: victim index */
    int wkind;              /* EV_RUN parks: enum weft__wait_kind */
    char name[WEFT_NAME_MAX];
};

struct tbuf {
    uint64_t t0;            /* start of the run in progress */
    uint64_t cal_tick, cal_ns;   /* tclock() and weft__now() - epoch at the last flush */
    char *text;             /* formatted, not yet written (TEXT_BUF bytes) */
    size_t tn;
    size_t n;
    struct ev *ev;
} __attribute__((aligned(64)));

static FILE *out;
static weft__lock out_lock = WEFT__LOCK_INIT;
static struct tbuf *bufs;
static unsigned nbufs;
static uint64_t epoch;          /* weft__now() when the trace began */

static inline uint64_t tclock(void)
{
#if defined(__x86_64__)
    return __rdtsc();
#elif defined(__aarch64__)
    uint64_t v;
    __asm__ volatile("isb; mrs %0, cntvct_el0" : "=r"(v));
    return v;
#else
    return weft__now();
#endif
}

/* The counts in b, since its last flush, as ns since the trace began. */
static void to_ns(struct tbuf *b)
{
    uint64_t t1 = tclock(), ns1 = weft__now() - epoch;
    double rate = t1 > b->cal_tick ? (double)(ns1 - b->cal_ns) / (double)(t1 - b->cal_tick) : 1.0;
    /* Signed: the one event made just after a flush may start (and end)
     * a little before it. */
    for (size_t i = 0; i < b->n; i++) {
        struct ev *e = &b->ev[i];
        e->t0 = b->cal_ns + (uint64_t)(int64_t)((double)(int64_t)(e->t0 - b->cal_tick) * rate);
        e->t1 = b->cal_ns + (uint64_t)(int64_t)((double)(int64_t)(e->t1 - b->cal_tick) * rate);
    }
    b->cal_tick = t1;
    b->cal_ns = ns1;
}

/* Events are formatted by hand into a line buffer and written with one
 * fwrite: printf's double formatting cost more than the rest of the trace
 * together. */
struct out { char b[512]; size_t n; };

static void o_str(struct out *o, const char *s)
{
    while (*s && o->n < sizeof o->b - 8)
        o->b[o->n++] = *s++;
}

/* A string literal: its length is known, so one copy. The buffer has room
 * for the longest event format() builds (names are cut at WEFT_NAME_MAX). */
#define o_lit(o, lit) (memcpy((o)->b + (o)->n, (lit), sizeof(lit) - 1), (o)->n += sizeof(lit) - 1)

/* Decimal, two digits per division (the numbers here are timestamps, ids
 * and durations: formatting them was a tenth of the trace's cost). */
static const char digit_pairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

static void o_u(struct out *o, unsigned long long v)
{
    /* Count the digits first and write them in place, right to left: a
     * scratch buffer copied afterwards stalled on store forwarding (the
     * copy's wide loads over the two-byte stores just made). */
    unsigned n = 1;
    for (unsigned long long p = 10; n < 20 && v >= p; p *= 10)
        n++;
    char *end = o->b + o->n + n;
    o->n += n;
    while (v >= 100) {
        unsigned r = (unsigned)(v % 100);
        v /= 100;
        *--end = digit_pairs[2 * r + 1];
        *--end = digit_pairs[2 * r];
    }
    if (v >= 10) {
        *--end = digit_pairs[2 * v + 1];
        *--end = digit_pairs[2 * v];
    } else {
        *--end = (char)('0' + v);
    }
}

/* A pointer as glibc's %p prints it, without snprintf's cost. */
static void o_hex(struct out *o, uintptr_t v)
{
    if (!v) {
        o_lit(o, "(nil)");
        return;
    }
    char t[2 * sizeof v];
    int i = 0;
    do {
        t[i++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    o->b[o->n++] = '0';
    o->b[o->n++] = 'x';
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
            o_lit(o, "\\u00");
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
    o_lit(o, ",\"ts\":");
    o_us(o, ts);
    o_lit(o, ",\"pid\":1,\"tid\":");
    o_u(o, widx);
}

/* Formatted events gather in their worker's text buffer, which goes to
 * the file in one write under out_lock: an fwrite per event cost as much
 * as formatting it, and formatting under the lock kept the other workers
 * waiting for it. */
#define TEXT_BUF (1 << 16)

static void o_flush(struct tbuf *b)
{
    weft__lock_acquire(&out_lock);
    fwrite(b->text, 1, b->tn, out);
    weft__lock_release(&out_lock);
    b->tn = 0;
}

static void o_emit(struct tbuf *b, const struct out *o)
{
    if (b->tn + o->n > TEXT_BUF)
        o_flush(b);
    memcpy(b->text + b->tn, o->b, o->n);
    b->tn += o->n;
}

static void format(struct tbuf *b, unsigned widx, const struct ev *e)
{
    struct out o;   /* not zeroed: 512 bytes a memset per event, for nothing */
    o.n = 0;
    if (e->kind == EV_STEAL) {
        o_lit(&o, ",\n{\"name\":\"steal\",\"cat\":\"steal\",\"ph\":\"i\",\"s\":\"t\"");
        o_tail(&o, e->t0, widx);
        o_lit(&o, ",\"args\":{\"from\":");
        o_u(&o, (unsigned)e->post);
        o_lit(&o, ",\"fibers\":");
        o_u(&o, e->id);
        o_lit(&o, "}}");
        o_emit(b, &o);
        return;
    }
    bool park = e->post == WEFT_POST_PARK;
    o_lit(&o, ",\n{\"name\":");
    if (e->name[0]) {
        o_json(&o, e->name);
    } else {
        o_lit(&o, "\"fiber ");
        o_u(&o, e->id);
        o_lit(&o, "\"");
    }
    o_lit(&o, ",\"cat\":\"run\",\"ph\":\"X\"");
    o_tail(&o, e->t0, widx);
    o_lit(&o, ",\"dur\":");
    o_us(&o, e->t1 - e->t0);
    o_lit(&o, ",\"args\":{\"fiber\":");
    o_u(&o, e->id);
    o_lit(&o, ",\"end\":\"");
    o_str(&o, e->post == WEFT_POST_YIELD ? "yield" : e->post == WEFT_POST_EXIT ? "exit" : "park: ");
    if (park)
        o_str(&o, wait_name(e->wkind));
    o_lit(&o, "\"}}");
    if (park) {
        bool io = e->wkind == WEFT_W_FD_READ || e->wkind == WEFT_W_FD_WRITE || e->wkind == WEFT_W_IO;
        o_lit(&o, ",\n{\"name\":\"park: ");
        o_str(&o, wait_name(e->wkind));
        o_str(&o, io ? "\",\"cat\":\"io\"" : "\",\"cat\":\"park\"");
        o_lit(&o, ",\"ph\":\"i\",\"s\":\"t\"");
        o_tail(&o, e->t1, widx);
        o_lit(&o, ",\"args\":{\"fiber\":");
        o_u(&o, e->id);
        o_lit(&o, ",\"on\":\"");
        o_hex(&o, (uintptr_t)e->obj);
        o_lit(&o, "\"}}");
    }
    o_emit(b, &o);
}

static void flush_buf(unsigned widx)
{
    struct tbuf *b = &bufs[widx];
    to_ns(b);
    for (size_t i = 0; i < b->n; i++)
        format(b, widx, &b->ev[i]);
    o_flush(b);
    b->n = 0;
}

static struct ev *next_ev(weft__worker *w)
{
    struct tbuf *b = &bufs[w->idx];
    if (WEFT_UNLIKELY(b->n == TRACE_BUF))
        flush_buf(w->idx);
    return &b->ev[b->n++];
}

void weft__trace_switch(weft__worker *w, weft_fiber *prev, weft_fiber *next)
{
    uint64_t t = tclock();
    struct tbuf *b = &bufs[w->idx];
    if (prev) {
        struct ev *e = next_ev(w);
        e->kind = EV_RUN;
        e->t0 = b->t0;
        e->t1 = t;
        e->id = prev->id;
        e->post = w->post;
        e->wkind = w->post == WEFT_POST_PARK ? prev->wkind : 0;
        e->obj = w->post == WEFT_POST_PARK ? prev->wobj : NULL;
        memcpy(e->name, prev->name, sizeof e->name);
    }
    if (next)
        b->t0 = t;
}

void weft__trace_steal(weft__worker *w, weft__worker *victim, uint32_t n)
{
    struct ev *e = next_ev(w);
    e->kind = EV_STEAL;
    e->t0 = e->t1 = tclock();
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
        /* the events, then the text they become */
        bufs[i].ev = malloc(TRACE_BUF * sizeof(struct ev) + TEXT_BUF);
        if (!bufs[i].ev) {
            while (i--)
                free(bufs[i].ev);
            weft__aligned_free(bufs);
            bufs = NULL;
            return -1;
        }
        bufs[i].text = (char *)(bufs[i].ev + TRACE_BUF);
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
    uint64_t tick0 = tclock();
    for (unsigned i = 0; i < n; i++)
        bufs[i].cal_tick = tick0;   /* cal_ns = 0: the epoch */
    fputs("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n"
          "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"args\":{\"name\":\"weft\"}}", out);
    for (unsigned i = 0; i < n; i++)
        fprintf(out, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":%u,"
                "\"args\":{\"name\":\"worker %u\"}}", i, i);
    weft__trace_on = 1;   /* before the other workers start: they see it */
    return 0;
}

void weft__trace_atfork_child(void)
{
    /* the parent's events stay the parent's: nothing is flushed here */
    weft__trace_on = 0;
    weft__lock_init(&out_lock);
    out = NULL;
    bufs = NULL;
    nbufs = 0;
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
