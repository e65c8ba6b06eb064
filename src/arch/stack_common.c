/*
 * The parts of the stack contract (arch.h) that are arithmetic on a stack
 * already carved, the same on every system: stack.c (Linux) and
 * stack_win32.c (Windows) carve, protect and cache; this file measures.
 */
#include "arch.h"

size_t weft__stack_class(size_t size)
{
    size_t pg = weft__page_size();
    return (size + pg - 1) & ~(pg - 1);
}

int weft__stack_in_guard(const weft__stack *s, const void *addr)
{
    const char *a = addr;
    const char *g = s->lo - s->guard_len;
    return a >= g && a < s->lo;
}

size_t weft__stack_used(const weft__stack *s)
{
    /* Pages never touched read as zero: the first non-zero word from the
     * bottom marks the deepest use. */
    const uint64_t *w = (const uint64_t *)s->lo;
    const uint64_t *end = (const uint64_t *)s->hi;
    while (w < end && *w == 0)
        w++;
    return (size_t)((const char *)end - (const char *)w);
}
