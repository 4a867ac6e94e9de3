/*
 * mixed_helpers.h - what the mixed-precision tests share: buffers of a
 * jopt_dtype, seeded values rounded to it, and comparisons bit for bit or
 * against float32 rounded once.  Header-only (the tests link helpers.c
 * alone); uses cg.h's conversions, which are the kernels' own.
 */
#ifndef T_MIXED_HELPERS_H
#define T_MIXED_HELPERS_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cg.h"
#include "helpers.h"

/* n elements of type dt, 64-byte aligned, zeroed */
static inline void *m_alloc(int dt, int64_t n)
{
    size_t bytes = ((size_t)(n ? n : 1) * (size_t)cg_dt_size(dt) + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, bytes);
    memset(p, 0, bytes);
    return p;
}

/* t_fill's values, rounded to dt as a store rounds */
static inline void m_fill(void *x, int dt, int64_t n, uint64_t seed, double zero_share)
{
    float *f = t_alloc(n);
    t_fill(f, n, seed, zero_share);
    for (int64_t i = 0; i < n; i++)
        cg_dt_fill((char *)x + (size_t)i * (size_t)cg_dt_size(dt), dt, 1, f[i]);
    free(f);
}

static inline void m_widen(float *dst, const void *src, int dt, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = (float)cg_dt_get(src, dt, i);
}

/* dst = src * s, rounded to dt */
static inline void m_scale(void *dst, const void *src, int dt, int64_t n, double s)
{
    for (int64_t i = 0; i < n; i++)
        cg_dt_fill((char *)dst + (size_t)i * (size_t)cg_dt_size(dt), dt, 1,
                   (float)cg_dt_get(src, dt, i) * (float)s);
}

static inline int m_same(const void *a, const void *b, int dt, int64_t i)
{
    double x = cg_dt_get(a, dt, i), y = cg_dt_get(b, dt, i);
    size_t es = (size_t)cg_dt_size(dt);
    return (isnan(x) && isnan(y)) ||
           !memcmp((const char *)a + (size_t)i * es, (const char *)b + (size_t)i * es, es);
}

/* equal bits, or both NaN */
static inline void m_assert_same(const void *a, const void *b, int dt, int64_t n,
                                 const char *what, const char *options)
{
    for (int64_t i = 0; i < n; i++)
        if (!m_same(a, b, dt, i))
            fail_msg("%s [%lld] differs under \"%s\": %.9g, want %.9g", what, (long long)i,
                     options, cg_dt_get(a, dt, i), cg_dt_get(b, dt, i));
}

/* a (of type dt) is float32 f rounded to nearest even */
static inline void m_assert_rounded(const void *a, const float *f, int dt, int64_t n,
                                    const char *what, const char *options)
{
    unsigned char want[4];
    for (int64_t i = 0; i < n; i++) {
        cg_dt_fill(want, dt, 1, f[i]);
        if (!m_same((const char *)a + (size_t)i * (size_t)cg_dt_size(dt), want, dt, 0))
            fail_msg("%s [%lld] under \"%s\": %.9g is not float32 %.9g rounded", what,
                     (long long)i, options, cg_dt_get(a, dt, i), (double)f[i]);
    }
}

#endif
