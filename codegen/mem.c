/*
 * mem.c - the allocator scope and the headed blocks of cg_mem.h.
 *
 * Layout of a block: [pad][header][user bytes], the header directly before
 * the pointer handed out.  For plain blocks the pad is empty and the header
 * keeps the user bytes 16-byte aligned, as malloc's are; for aligned ones
 * the pad moves the user bytes to the boundary asked for.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cg_mem.h"

typedef struct header {
    const cg_allocator *a; /* who made the block, and frees it */
    void *raw;             /* what a->fn returned */
    size_t rawsize;        /* what it was asked for: the osize it gets back */
    size_t aligned;        /* nonzero: from cg_aligned_alloc, not resizable */
} header;

_Static_assert(sizeof(header) % 16 == 0, "the header keeps 16-byte alignment");

static void *libc_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, nsize);
}

const cg_allocator cg_mem_libc = {libc_alloc, NULL};

static _Thread_local const cg_allocator *current;
static _Thread_local unsigned long failures;

unsigned long cg_mem_failures(void)
{
    return failures;
}

void *cg_mem_call(const cg_allocator *a, void *ptr, size_t osize, size_t nsize)
{
    void *p = a->fn(a->ud, ptr, osize, nsize);
    if (!p && nsize)
        failures++;
    return p;
}

const cg_allocator *cg_mem_current(void)
{
    return current ? current : &cg_mem_libc;
}

const cg_allocator *cg_mem_enter(const cg_allocator *a)
{
    const cg_allocator *prev = current;
    current = a;
    return prev;
}

void cg_mem_leave(const cg_allocator *const *prev)
{
    current = *prev;
}

static header *head_of(void *p)
{
    return (header *)p - 1;
}

void *cg_malloc(size_t n)
{
    const cg_allocator *a = cg_mem_current();
    if (n > SIZE_MAX - sizeof(header))
        return NULL;
    size_t raw = n + sizeof(header);
    header *h = cg_mem_call(a, NULL, 0, raw);
    if (!h)
        return NULL;
    *h = (header){a, h, raw, 0};
    return h + 1;
}

void *cg_calloc(size_t count, size_t n)
{
    if (n && count > SIZE_MAX / n)
        return NULL;
    void *p = cg_malloc(count * n);
    if (p)
        memset(p, 0, count * n);
    return p;
}

void *cg_realloc(void *p, size_t n)
{
    if (!p)
        return cg_malloc(n);
    if (n == 0) {
        /* C17 leaves realloc(p, 0) to the implementation; keep a block */
        n = 1;
    }
    if (n > SIZE_MAX - sizeof(header))
        return NULL;
    header h = *head_of(p);
    if (h.aligned) /* cg_mem.h: aligned blocks are never resized */
        return NULL;
    size_t raw = n + sizeof(header);
    header *nh = cg_mem_call(h.a, h.raw, h.rawsize, raw);
    if (!nh)
        return NULL; /* the old block stays valid, as realloc's does */
    *nh = (header){h.a, nh, raw, 0};
    return nh + 1;
}

void cg_free(void *p)
{
    if (!p)
        return;
    header h = *head_of(p);
    cg_mem_call(h.a, h.raw, h.rawsize, 0);
}

char *cg_strdup(const char *s)
{
    return cg_strndup(s, strlen(s));
}

char *cg_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *d = cg_malloc(len + 1);
    if (d) {
        memcpy(d, s, len);
        d[len] = 0;
    }
    return d;
}

void *cg_aligned_alloc_at(size_t align, size_t n, size_t period, uintptr_t phase)
{
    const cg_allocator *a = cg_mem_current();
    if (align < 16 || (align & (align - 1)) || align > period || (period & (period - 1)))
        return NULL;
    if (n > SIZE_MAX - sizeof(header) - period)
        return NULL;
    size_t raw = n + sizeof(header) + period;
    char *r = cg_mem_call(a, NULL, 0, raw);
    if (!r)
        return NULL;
    /* the first address from r + header on that is phase modulo period */
    uintptr_t lo = (uintptr_t)(r + sizeof(header));
    uintptr_t want = phase & (period - 1) & ~(uintptr_t)(align - 1);
    uintptr_t u = (lo & ~(uintptr_t)(period - 1)) + want;
    if (u < lo)
        u += period;
    header *h = (header *)u - 1;
    *h = (header){a, r, raw, 1};
    return (void *)u;
}

void *cg_aligned_alloc(size_t align, size_t n)
{
    if (align > 4096)
        return NULL;
    return cg_aligned_alloc_at(align, n, align, 0);
}
