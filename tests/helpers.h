/*
 * helpers.h - what the cmocka tests share: float comparison in ulps, seeded
 * data, 64-byte aligned buffers, the torch fixture reader, and a jopt call
 * that fails the test with jopt's message.
 */
#ifndef TEST_HELPERS_H
#define TEST_HELPERS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "jopt.h"

/* distance in units in the last place; NaNs of any payload are equal */
uint32_t t_ulp(float a, float b);
/* max ulp distance over n elements; `where` gets the first index at it */
uint32_t t_max_ulp(const float *a, const float *b, int64_t n, int64_t *where);

/* seeded xorshift: uniform in [-1, 1), with a share of exact zeros */
void t_fill(float *x, int64_t n, uint64_t seed, double zero_share);
float *t_alloc(int64_t n); /* 64-byte aligned, zeroed; free with free() */

/* asserts a jopt call is JOPT_OK, printing jopt_errmsg otherwise */
#define T_OK(ctx, call)                                                        \
    do {                                                                       \
        int t_rc_ = (call);                                                    \
        if (t_rc_ != JOPT_OK)                                                  \
            fail_msg("%s -> %d: %s", #call, t_rc_, jopt_errmsg(ctx));          \
    } while (0)

/* rewrites the FNV-1a checksum that ends a jopt checkpoint of `len`
 * bytes, so that an edit reaches the checks behind the checksum */
void t_reseal(unsigned char *buf, size_t len);

/* a recorded torch.optim run (tests/fixtures/README.md) */
typedef struct t_fixture {
    char spec[64];
    char options[512];
    int ntensors, steps;
    int64_t sizes[16], total;
    float *init;         /* total */
    unsigned char *mask; /* steps x ntensors: gradient present */
    float *grads;        /* steps x total; absent gradients zero */
    float *params;       /* steps x total: parameters after each step, or
                            the state named by `record` */
    char record[64];     /* "" for the parameters, else a state ("ax") */
    char torch[128];     /* the header's torch line */
} t_fixture;

/* reads JOPT_SOURCE_DIR/tests/fixtures/<name>; fails the test if it can't */
void t_fixture_load(t_fixture *f, const char *name);
void t_fixture_free(t_fixture *f);

/* a recorded run in the `jopt-fixture 2` format (tests/fixtures/spec2/
 * README.md): shapes, per-element inputs, named-kernel events, final state */
#define T_FIX2_MAXT 16
#define T_FIX2_MAXIN 4
#define T_FIX2_MAXEV 64
#define T_FIX2_MAXFINAL 128
typedef struct t_final {
    char owner[16];   /* "t0".."tN" or "group" */
    char name[48];
    char dtype[8];    /* f32 f64 i64 u8 */
    int64_t count;
    double *v;        /* count values, as doubles */
} t_final;

typedef struct t_fixture2 {
    char spec[64], options[512], variant[64], reference[512];
    int ntensors, steps;
    int64_t sizes[T_FIX2_MAXT], total;
    int ndim[T_FIX2_MAXT];
    int64_t shape[T_FIX2_MAXT][8];
    int ninputs;
    char inputs[T_FIX2_MAXIN][32];
    int nevents;
    int ev_step[T_FIX2_MAXEV];
    char ev_kernel[T_FIX2_MAXEV][32];
    float *init;          /* total */
    unsigned char *mask;  /* steps x ntensors: gradient present */
    float *grads;         /* steps x total (absent: zeros) */
    unsigned char *imask; /* steps x ninputs x ntensors: input given */
    float *ivals;         /* steps x ninputs x total (absent: zeros) */
    float *params;        /* steps x total: after each step */
    float *evparams;      /* nevents x total: after each event */
    int nfinal;
    t_final final[T_FIX2_MAXFINAL];
} t_fixture2;

/* reads <dir>/<name> (dir relative to JOPT_SOURCE_DIR); fails the test if
 * it can't */
void t_fixture2_load(t_fixture2 *f, const char *dir, const char *name);
void t_fixture2_free(t_fixture2 *f);

#endif
