/*
 * cg_mem.h - every allocation of libjopt goes through here, to the
 * allocator of the context it is made for (jopt_ctx_new_ex).
 *
 * A public entry point names its context with CG_MEM_SCOPE(allocator); the
 * scope is per thread and restored when the function returns, so a closure
 * that calls into another context gets that context's allocator and leaves
 * ours in place.  Outside any scope the C library's allocator is used.
 *
 * Each block carries a header naming the allocator that made it and the
 * size it asked for, so cg_free and cg_realloc need neither a scope nor a
 * size (and a block made in one scope may be freed in another), and the
 * allocator always gets lua_Alloc's osize.  Lua states call the allocator
 * directly (codegen/sandbox.c), with the sizes Lua passes.
 */
#ifndef CG_MEM_H
#define CG_MEM_H

#include <stddef.h>
#include <stdint.h>

#include "jopt.h"

typedef struct cg_allocator {
    jopt_alloc_fn fn;
    void *ud;
} cg_allocator;

/* the C library's, as a lua_Alloc */
extern const cg_allocator cg_mem_libc;

/* the allocator new blocks go to on this thread (never NULL) */
const cg_allocator *cg_mem_current(void);
/* makes `a` current (NULL: the C library's); returns the one it replaces */
const cg_allocator *cg_mem_enter(const cg_allocator *a);
void cg_mem_leave(const cg_allocator *const *prev);
#define CG_MEM_SCOPE(a)                                                        \
    const cg_allocator *cg_mem_prev_ __attribute__((cleanup(cg_mem_leave))) = \
        cg_mem_enter(a)

/* a->fn(a->ud, ptr, osize, nsize), counting its failures on this thread:
 * a caller that sees an error can tell an allocation failure under it (a
 * spec's Lua code turns one into any error it likes) */
void *cg_mem_call(const cg_allocator *a, void *ptr, size_t osize, size_t nsize);
unsigned long cg_mem_failures(void);

void *cg_malloc(size_t n);
void *cg_calloc(size_t count, size_t n);
void *cg_realloc(void *p, size_t n);
void cg_free(void *p);
char *cg_strdup(const char *s);
char *cg_strndup(const char *s, size_t n);
/* `align` a power of two, at most 4096; freed with cg_free; cg_realloc
 * refuses it (NULL) */
void *cg_aligned_alloc(size_t align, size_t n);
/* the same, at an address that is `phase` modulo `period` (a power of two
 * from `align` up), `phase` rounded down to `align`: asks the allocator
 * for `period` bytes more, which it need not touch */
void *cg_aligned_alloc_at(size_t align, size_t n, size_t period, uintptr_t phase);

#endif
