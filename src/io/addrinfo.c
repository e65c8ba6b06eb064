/*
 * weft_getaddrinfo, on every system: the resolver blocks, so it runs on
 * the blocking pool (pool.c), and a caller that gives up (cancel,
 * deadline) returns at once while the lookup finishes on the pool.
 */
#include "io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#ifndef _WIN32
#include <netdb.h>
#endif


struct gai {
    char *node, *service;
    struct addrinfo hints;
    bool has_hints;
    struct addrinfo *res;
    int err, sys_errno;
};

static void *gai_job(void *arg)
{
    struct gai *g = arg;
    g->err = getaddrinfo(g->node, g->service, g->has_hints ? &g->hints : NULL, &g->res);
    g->sys_errno = errno;
    return g;
}

static void gai_free(struct gai *g)
{
    free(g->node);
    free(g->service);
    free(g);
}

/* The pool calls this when the caller gave up (cancel, deadline). */
static void gai_drop(void *ret, void *arg)
{
    struct gai *g = arg;
    if (ret && g->err == 0)
        freeaddrinfo(g->res);
    gai_free(g);
}

int weft_getaddrinfo(const char *node, const char *service,
                     const struct addrinfo *hints, struct addrinfo **res)
{
    if (!res)
        return -EINVAL;
    *res = NULL;
    /* The job owns copies of everything: a cancelled caller returns at
     * once while getaddrinfo may still run on the pool. */
    struct gai *g = calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    g->node = node ? strdup(node) : NULL;
    g->service = service ? strdup(service) : NULL;
    if ((node && !g->node) || (service && !g->service)) {
        gai_free(g);
        return -ENOMEM;
    }
    if (hints) {
        g->hints = *hints;
        g->hints.ai_addr = NULL;
        g->hints.ai_canonname = NULL;
        g->hints.ai_next = NULL;
        g->has_hints = true;
    }
    void *ret;
    int r = weft__pool_run(gai_job, g, &ret, true, gai_drop);
    if (r < 0)
        return r;   /* the pool frees g through gai_drop */
    int err = g->err;
    if (err == 0)
        *res = g->res;
#ifdef EAI_SYSTEM
    else if (err == EAI_SYSTEM)
        err = g->sys_errno ? -g->sys_errno : -EIO;
#endif
    else if (err > 0)
        err = -err;   /* Windows' EAI_* are positive (WSA error codes) */
    gai_free(g);
    return err;
}
