/*
 * weft_getaddrinfo and weft_resolve, on every system: the resolver blocks, so it runs on
 * the blocking pool (pool.c), and a caller that gives up (cancel,
 * deadline) returns at once while the lookup finishes on the pool.
 *
 * Two calls share it. weft_getaddrinfo returns the EAI_* code itself,
 * negated where it is positive (Windows); in glibc those are small
 * negative numbers that collide with negative errnos (EAI_AGAIN is -3,
 * -ESRCH). weft_resolve returns only errnos, the exact code beside them.
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

/* Run getaddrinfo on the pool. Returns weft's own failure (-errno), or 0
 * with the resolver's code in *eai (0: success, *res is the list) and
 * errno of EAI_SYSTEM in *sys_errno. */
static int gai_run(const char *node, const char *service, const struct addrinfo *hints,
                   struct addrinfo **res, int *eai, int *sys_errno)
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
    *eai = g->err;
    *sys_errno = g->sys_errno;
    if (g->err == 0)
        *res = g->res;
    gai_free(g);
    return 0;
}

int weft_getaddrinfo(const char *node, const char *service,
                     const struct addrinfo *hints, struct addrinfo **res)
{
    int err, sys_errno;
    int r = gai_run(node, service, hints, res, &err, &sys_errno);
    if (r < 0 || err == 0)
        return r;
#ifdef EAI_SYSTEM
    if (err == EAI_SYSTEM)
        return sys_errno ? -sys_errno : -EIO;
#endif
    return err > 0 ? -err : err;   /* Windows' EAI_* are positive (WSA error codes) */
}

/* The resolver's code as the nearest errno (the table in weft.h). Not a
 * switch: some systems give two names one value (EAI_NODATA is EAI_NONAME
 * on Windows), and some lack a name altogether. */
static int eai_errno(int eai, int sys_errno)
{
#ifdef EAI_SYSTEM
    if (eai == EAI_SYSTEM)
        return sys_errno ? -sys_errno : -EIO;
#endif
    (void)sys_errno;
    if (eai == EAI_AGAIN)
        return -EAGAIN;
    if (eai == EAI_MEMORY)
        return -ENOMEM;
    if (eai == EAI_BADFLAGS)
        return -EINVAL;
    if (eai == EAI_FAMILY)
        return -EAFNOSUPPORT;
    if (eai == EAI_SOCKTYPE)
        return -EPROTOTYPE;
#ifdef EAI_OVERFLOW
    if (eai == EAI_OVERFLOW)
        return -EOVERFLOW;
#endif
    if (eai == EAI_NONAME || eai == EAI_SERVICE)
        return -ENOENT;
#ifdef EAI_NODATA
    if (eai == EAI_NODATA)
        return -ENOENT;
#endif
#ifdef EAI_ADDRFAMILY
    if (eai == EAI_ADDRFAMILY)
        return -ENOENT;
#endif
    return -EIO;
}

int weft_resolve(const char *node, const char *service, const struct addrinfo *hints,
                 struct addrinfo **res, int *eai)
{
    int err = 0, sys_errno = 0;
    int r = gai_run(node, service, hints, res, &err, &sys_errno);
    if (eai)
        *eai = r < 0 ? 0 : err;
    if (r < 0 || err == 0)
        return r;
    return eai_errno(err, sys_errno);
}
