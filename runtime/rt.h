/*
 * rt.h - the runtime's private structures: the context, the optimizer, its
 * groups and per-parameter state.  The runtime sees codegen only through
 * codegen/cg.h.
 */
#ifndef RT_H
#define RT_H

#include "../codegen/cg.h"
#include "jopt.h"

struct jopt_ctx {
    char err[CG_ERRLEN];
    char **dirs; /* spec search path */
    size_t ndirs;
    cg_jit *jit;
    jopt_engine engine;
};

typedef struct rt_param {
    float *p, *g; /* borrowed */
    int64_t n;
    int64_t step;   /* steps taken */
    float **state;  /* one per spec state, NULL until created; owned */
    int fresh;      /* some state that starts unset was just created and
                       has not been written yet: run the fresh kernel */
} rt_param;

typedef struct rt_group {
    rt_param *params;
    size_t n;
    double *values;     /* hyperparameters, cg_spec_nvalues() of them */
    cg_kernel *steady;  /* the update */
    cg_kernel *fresh;   /* the update with unset states nil, or NULL */
} rt_group;

struct jopt_optim {
    jopt_ctx *ctx;
    cg_spec *spec;
    rt_group *groups;
    size_t ngroups;
    double *defaults; /* the spec's, overlaid by the optimizer's defaults */
};

/* ctx.c: sets ctx->err and returns `status` */
int rt_fail(jopt_ctx *ctx, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* copies codegen's message into ctx->err, prefixed by `where` */
int rt_fail_cg(jopt_ctx *ctx, int status, const char *where, const char *err);

/* options.c: overlays "name=value ..." onto `values` */
int rt_options_parse(const cg_spec *spec, const char *text, double *values,
                     char *err);
/* finds "name" or "name[i]": the offset in a value vector, or -1 */
int rt_option_offset(const cg_spec *spec, const char *name,
                     const cg_hyper **hyper, char *err);

#endif /* RT_H */
