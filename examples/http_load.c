/*
 * http_load: a load-generating HTTP/1.1 client on fibers. Each connection
 * is one fiber that sends a GET, reads the whole response, and repeats
 * until the run's deadline (weft_deadline: the call in progress when time
 * is up returns -ETIMEDOUT, which is how a fiber learns it is done).
 *
 *   http_load [-c connections] [-d seconds] [-p path] host port
 *             defaults: -c 100 -d 5 -p /
 *
 * Prints requests/s and latency percentiles, then RESULT lines for
 * scripts: RESULT http_load_rps <v> req/s, ..._p50 / _p99 <v> us,
 * ..._errors <n> count.
 */
#define _GNU_SOURCE
#include "example.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <strings.h>
#include <unistd.h>

/* Latency histogram: 16 linear sub-buckets per power of two of ns, so
 * every percentile is within ~6% of the truth, at a fixed 1 KiB per fiber. */
#define SUB 16
#define NB (64 * SUB)

struct conn {
    uint64_t hist[NB];
    uint64_t ok, errors;
};

static struct {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char request[512];
    size_t reqlen;
    int64_t end;
} cfg;

static unsigned bucket(uint64_t ns)
{
    if (ns < SUB)
        return (unsigned)ns;
    unsigned e = 63u - (unsigned)__builtin_clzll(ns);   /* ns in [2^e, 2^(e+1)) */
    unsigned sub = (unsigned)(ns >> (e - 4)) & (SUB - 1);
    return (e - 3) * SUB + sub;
}

static uint64_t bucket_value(unsigned b)
{
    if (b < SUB)
        return b;
    unsigned e = b / SUB + 3, sub = b % SUB;
    return ((uint64_t)(SUB + sub) << (e - 4)) + ((uint64_t)1 << (e - 4)) / 2;
}

/* Read one response: headers, then Content-Length bytes of body. Bytes of
 * the next response that came along stay in buf. 1: ok, 0/-errno: not. */
static int read_response(int fd, char *buf, size_t cap, size_t *have)
{
    for (;;) {
        char *end = memmem(buf, *have, "\r\n\r\n", 4);
        if (end) {
            size_t hlen = (size_t)(end + 4 - buf), body = 0;
            if (*have < 12 || memcmp(buf, "HTTP/1.1 200", 12) != 0)
                return -EPROTO;
            char *cl = memmem(buf, hlen, "Content-Length:", 15);
            if (!cl)
                cl = memmem(buf, hlen, "content-length:", 15);
            if (cl)
                body = strtoul(cl + 15, NULL, 10);
            while (*have < hlen + body) {
                if (hlen + body > cap)
                    return -EMSGSIZE;
                ssize_t n = weft_read(fd, buf + *have, cap - *have);
                if (n <= 0)
                    return n == 0 ? -ECONNRESET : (int)n;
                *have += (size_t)n;
            }
            memmove(buf, buf + hlen + body, *have - hlen - body);
            *have -= hlen + body;
            return 1;
        }
        if (*have == cap)
            return -EMSGSIZE;
        ssize_t n = weft_read(fd, buf + *have, cap - *have);
        if (n <= 0)
            return n == 0 ? -ECONNRESET : (int)n;
        *have += (size_t)n;
    }
}

static void *client(void *arg)
{
    struct conn *c = arg;
    weft_deadline(cfg.end);
    char buf[16384];
    while ((int64_t)weft_now() < cfg.end) {
        int fd = socket(cfg.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int r = weft_connect(fd, (struct sockaddr *)&cfg.addr, cfg.addrlen);
        size_t have = 0;
        while (r == 0) {
            uint64_t t0 = weft_now();
            ssize_t w = weft_write(fd, cfg.request, cfg.reqlen);
            if (w != (ssize_t)cfg.reqlen) {
                r = w < 0 ? (int)w : -EIO;
                break;
            }
            r = read_response(fd, buf, sizeof buf, &have);
            if (r != 1)
                break;
            c->hist[bucket(weft_now() - t0)]++;
            c->ok++;
            r = 0;
        }
        weft_close(fd);
        if (r == -ETIMEDOUT || r == -ECANCELED)
            break;   /* time is up: the request in flight does not count */
        c->errors++;
        weft_sleep(10000000);   /* the server went away: retry the connection shortly */
    }
    return NULL;
}

struct run { unsigned nconn; double secs; };

static void *load(void *arg)
{
    struct run *run = arg;
    struct conn *cs = calloc(run->nconn, sizeof *cs);
    weft_fiber **fs = calloc(run->nconn, sizeof *fs);
    if (!cs || !fs)
        return (void *)1;
    uint64_t t0 = weft_now();
    cfg.end = (int64_t)(t0 + (uint64_t)(run->secs * 1e9));
    unsigned started = 0;
    for (; started < run->nconn; started++) {
        weft_attr a = { .stack_size = 64 * 1024 };
        if (weft_spawn(&fs[started], &a, client, &cs[started]) < 0)
            break;
    }
    for (unsigned i = 0; i < started; i++)
        weft_join(fs[i], NULL);
    double el = (double)(weft_now() - t0) / 1e9;

    static uint64_t hist[NB];
    uint64_t ok = 0, errors = 0;
    for (unsigned i = 0; i < started; i++) {
        ok += cs[i].ok;
        errors += cs[i].errors;
        for (unsigned b = 0; b < NB; b++)
            hist[b] += cs[i].hist[b];
    }
    double pct[2] = { 0.50, 0.99 };
    double us[2] = { 0, 0 };
    for (int k = 0; k < 2; k++) {
        uint64_t want = (uint64_t)((double)ok * pct[k]), seen = 0;
        for (unsigned b = 0; b < NB; b++) {
            seen += hist[b];
            if (seen > want) {
                us[k] = (double)bucket_value(b) / 1000.0;
                break;
            }
        }
    }
    double rps = (double)ok / el;
    printf("http_load: %u connections, %.1f s: %llu requests, %llu errors, %.0f req/s, "
           "latency p50 %.0f us, p99 %.0f us (io: %s)\n",
           started, el, (unsigned long long)ok, (unsigned long long)errors, rps, us[0], us[1],
           weft_io_backend());
    printf("RESULT http_load_rps %.0f req/s\n", rps);
    printf("RESULT http_load_p50 %.1f us\n", us[0]);
    printf("RESULT http_load_p99 %.1f us\n", us[1]);
    printf("RESULT http_load_errors %llu count\n", (unsigned long long)errors);
    free(cs);
    free(fs);
    return errors ? (void *)1 : NULL;
}

static void usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [-c connections] [-d seconds] [-p path] host port\n", argv0);
    exit(2);
}

int main(int argc, char **argv)
{
    struct run run = { 100, 5 };
    const char *path = "/";
    int opt;
    while ((opt = getopt(argc, argv, "c:d:p:")) != -1) {
        switch (opt) {
        case 'c': run.nconn = (unsigned)atoi(optarg); break;
        case 'd': run.secs = atof(optarg); break;
        case 'p': path = optarg; break;
        default: usage(argv[0]);
        }
    }
    if (argc - optind != 2 || run.nconn == 0 || run.secs <= 0)
        usage(argv[0]);
    const char *host = argv[optind], *port = argv[optind + 1];
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
    int r = getaddrinfo(host, port, &hints, &res);
    if (r != 0) {
        fprintf(stderr, "http_load: %s:%s: %s\n", host, port, gai_strerror(r));
        return 1;
    }
    memcpy(&cfg.addr, res->ai_addr, res->ai_addrlen);
    cfg.addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    int n = snprintf(cfg.request, sizeof cfg.request, "GET %s HTTP/1.1\r\nHost: %s:%s\r\n\r\n",
                     path, host, port);
    if (n < 0 || (size_t)n >= sizeof cfg.request)
        usage(argv[0]);
    cfg.reqlen = (size_t)n;
    example_raise_nofile();
    void *ret = NULL;
    r = weft_run(NULL, load, &run, &ret);
    if (r < 0) {
        fprintf(stderr, "http_load: weft_run: %s\n", strerror(-r));
        return 1;
    }
    return ret ? 1 : 0;
}
