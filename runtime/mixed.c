/*
 * mixed.c - mixed precision in the runtime: the options every spec takes
 * (dtype, grad_dtype, state_dtype, stochastic_rounding, seed), element
 * types per tensor, and loss scaling's finiteness check.
 *
 * The kernels do the arithmetic (codegen: loads widen to float32, stores
 * round once); the runtime says which types each tensor and state has,
 * sizes buffers by them, and decides whether a step runs at all.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

enum { P_DTYPE, P_GRAD_DTYPE, P_STATE_DTYPE, P_STOCHASTIC, P_SEED };

static int prec_index(const char *name)
{
    for (int k = 0; cg_prec_options[k]; k++)
        if (!strcmp(cg_prec_options[k], name))
            return k;
    return -1;
}

static int read_dtype(const char *s)
{
    for (int dt = 0; dt < CG_NDT; dt++)
        if (!strcmp(s, cg_dt_name(dt)))
            return dt;
    return -1;
}

/* one precision option's value from a number (jopt_option_set) */
static int set_number(jopt_ctx *ctx, const char *where, int k, double v, rt_prec *p)
{
    const char *name = cg_prec_options[k];
    switch (k) {
    case P_DTYPE: case P_GRAD_DTYPE: case P_STATE_DTYPE:
        if (!(v == 0 || v == 1 || v == 2))
            return rt_fail(ctx, JOPT_EINVAL, "%s: option '%s': %g is not a jopt_dtype "
                           "(float32 0, bfloat16 1, float16 2)", where, name, v);
        if (k == P_DTYPE)
            p->dtype = p->grad_dtype = (uint8_t)v; /* the gradients follow */
        else if (k == P_GRAD_DTYPE)
            p->grad_dtype = (uint8_t)v;
        else
            p->state_dtype = (uint8_t)v;
        return JOPT_OK;
    case P_STOCHASTIC:
        if (!(v == 0 || v == 1))
            return rt_fail(ctx, JOPT_EINVAL, "%s: option '%s': %g is not a boolean "
                           "(0 or 1)", where, name, v);
        p->stochastic = (uint8_t)v;
        return JOPT_OK;
    default:
        if (!(v >= 0 && v <= 9007199254740992.0 && v == floor(v)))
            return rt_fail(ctx, JOPT_EINVAL, "%s: option 'seed': %.17g is not a "
                           "whole number from 0 to 2^53", where, v);
        p->seed = (uint64_t)v;
        return JOPT_OK;
    }
}

int rt_prec_parse(jopt_ctx *ctx, const char *where, const char *text, rt_prec *prec,
                  unsigned *given)
{
    if (given)
        *given = 0;
    if (!text)
        return JOPT_OK;
    cg_opt_item *it = cg_malloc(sizeof *it);
    if (!it)
        return rt_fail(ctx, JOPT_ENOMEM, "%s: out of memory", where);
    rt_prec p = *prec;
    int seen = 0, rc, grad = -1, own = 0;
    char err[CG_ERRLEN];
    const char *c = text;
    while ((rc = cg_opt_next(&c, it, err)) == 1) {
        int k = prec_index(it->name);
        if (k < 0)
            continue; /* the spec's: cg_options_parse_skip reads it */
        const char *v = it->val[0];
        if (seen >> k & 1)
            rc = rt_fail(ctx, JOPT_EINVAL, "%s: option '%s' given twice", where, it->name);
        else if (it->nval != 1)
            rc = rt_fail(ctx, JOPT_EINVAL, "%s: option '%s' takes 1 value, got %d",
                         where, it->name, it->nval);
        else if (k <= P_STATE_DTYPE) {
            int dt = read_dtype(v);
            if (dt < 0)
                rc = rt_fail(ctx, JOPT_EINVAL, "%s: option '%s': '%s' is not one of "
                             "float32, bfloat16, float16", where, it->name, v);
            else if (k == P_GRAD_DTYPE)
                grad = dt; /* after dtype=, which sets both, whatever the order */
            else
                rc = set_number(ctx, where, k, dt, &p);
        } else if (k == P_STOCHASTIC) {
            int b = !strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "1") ? 1
                    : !strcmp(v, "false") || !strcmp(v, "False") || !strcmp(v, "0") ? 0 : -1;
            if (b < 0)
                rc = rt_fail(ctx, JOPT_EINVAL, "%s: option '%s': cannot read '%s' as a "
                             "boolean (true or false)", where, it->name, v);
            else
                p.stochastic = (uint8_t)b;
        } else {
            char *end;
            double d = strtod(v, &end);
            const char *digits = v + strspn(v, "0"); /* 2^53 has 16 */
            int whole = *v && strspn(v, "0123456789") == strlen(v);
            if (whole && (strlen(digits) > 16 || strtoull(digits, NULL, 10) > (1ull << 53)))
                rc = rt_fail(ctx, JOPT_EINVAL, "%s: option 'seed': %s is more than 2^53",
                             where, v);
            else if (!whole && *v && !*end && d >= 9007199254740992.0)
                /* read as a double, it may have been rounded to 2^53 */
                rc = rt_fail(ctx, JOPT_EINVAL, "%s: option 'seed': '%s' is not below "
                             "2^53 (write a seed this large in digits)", where, v);
            else
                rc = *v && !*end ? set_number(ctx, where, k, d, &p)
                             : rt_fail(ctx, JOPT_EINVAL, "%s: option 'seed': cannot "
                                       "read '%s' as a number", where, v);
        }
        if (rc < 0) {
            own = 1; /* the message is set */
            break;
        }
        seen |= 1 << k;
    }
    cg_free(it);
    if (rc < 0)
        return own ? rc : rt_fail_cg(ctx, rc, where, err);
    if (grad >= 0)
        p.grad_dtype = (uint8_t)grad;
    *prec = p;
    if (given)
        *given = (unsigned)seen;
    return JOPT_OK;
}

int rt_prec_set(jopt_ctx *ctx, const char *where, const char *name, double value,
                rt_prec *prec, unsigned *given)
{
    int k = prec_index(name);
    if (k < 0)
        return 1;
    rt_prec p = *prec;
    int rc = set_number(ctx, where, k, value, &p);
    if (rc == JOPT_OK) {
        *prec = p;
        *given = 1u << k;
    }
    return rc;
}

int rt_prec_get(const rt_prec *prec, const char *name, double *value)
{
    switch (prec_index(name)) {
    case P_DTYPE: *value = prec->dtype; return 0;
    case P_GRAD_DTYPE: *value = prec->grad_dtype; return 0;
    case P_STATE_DTYPE: *value = prec->state_dtype; return 0;
    case P_STOCHASTIC: *value = prec->stochastic; return 0;
    case P_SEED: *value = (double)prec->seed; return 0;
    default: return -1;
    }
}

/* ---- element types after construction -------------------------------------- */

static int check_dtype(jopt_optim *opt, const char *fn, const char *what, int dt)
{
    if (dt < 0 || dt >= CG_NDT)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: %s %d is not a jopt_dtype "
                       "(JOPT_FLOAT32, JOPT_BFLOAT16, JOPT_FLOAT16)", fn, what, dt);
    return JOPT_OK;
}

JOPT_API int jopt_set_dtype(jopt_optim *opt, size_t group, size_t index,
                            jopt_dtype dtype, jopt_dtype grad_dtype)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_set_dtype";
    if (!opt)
        return JOPT_EINVAL;
    int rc = check_dtype(opt, fn, "dtype", (int)dtype);
    if (rc == JOPT_OK)
        rc = check_dtype(opt, fn, "grad_dtype", (int)grad_dtype);
    if (rc)
        return rc;
    if (group >= opt->ngroups || index >= opt->groups[group].n)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: group %zu has no parameter %zu",
                       fn, group, index);
    if (opt->closure && (dtype || grad_dtype))
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: spec '%s' is a closure optimizer: "
                       "it takes float32 parameters and gradients only", fn,
                       cg_spec_name(opt->spec));
    if (opt->shard && (dtype || grad_dtype)) /* the exchange moves float32 */
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: a sharded optimizer takes float32 "
                       "parameters and gradients only", fn);
    rt_group *gr = &opt->groups[group];
    rt_param *p = &gr->params[index];
    uint8_t od = p->dtype, og = p->grad_dtype;
    if (((uintptr_t)p->p % (size_t)cg_dt_size(dtype)) ||
        ((uintptr_t)p->g % (size_t)cg_dt_size(grad_dtype)))
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: group %zu parameter %zu: a buffer "
                       "is not aligned to its element size", fn, group, index);
    p->dtype = (uint8_t)dtype;
    p->grad_dtype = (uint8_t)grad_dtype;
    char where[96];
    snprintf(where, sizeof where, "%s: group %zu parameter %zu", fn, group, index);
    const cg_kernel *k;
    rt_variant v = rt_update_variant(p);
    rc = rt_check_buffers(opt->ctx, fn, opt->groups, opt->ngroups, SIZE_MAX, 0, NULL);
    if (rc == JOPT_OK && !opt->closure &&
        (rc = rt_kset_get(opt, &gr->ks, where, gr->values, gr->runtime, &v, &k)) == JOPT_OK &&
        rt_reserve_uniforms(opt, rt_kset_uniforms(&gr->ks)))
        rc = rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    if (rc) {
        p->dtype = od;
        p->grad_dtype = og;
    }
    return rc;
}

JOPT_API int jopt_state_dtype(const jopt_optim *opt, size_t group, size_t index,
                              const char *name, jopt_dtype *dtype)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_state_dtype";
    if (!opt)
        return JOPT_EINVAL;
    if (!dtype)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: dtype is NULL", fn);
    const float *data;
    int rc = jopt_state_get(opt, group, index, name, &data, NULL);
    if (rc)
        return rc;
    *dtype = JOPT_FLOAT32;
    if (opt->closure)
        return JOPT_OK;
    const rt_group *gr = &opt->groups[group];
    const rt_param *p = &gr->params[index];
    size_t k = 0;
    while (strcmp(cg_spec_state_name(opt->spec, k), name) != 0)
        k++; /* found: jopt_state_get accepted the name */
    if (p->state[k]) {
        *dtype = (jopt_dtype)p->state_dt[k];
        return JOPT_OK;
    }
    for (size_t e = 0; e < gr->ks.n; e++) { /* not made yet: as a kernel would */
        const cg_layout *l = cg_kernel_layout(gr->ks.e[e].k);
        for (int s = 0; s < l->nstate; s++)
            if (l->state[s] == (int)k) {
                *dtype = (jopt_dtype)l->dtype[2 + s];
                return JOPT_OK;
            }
    }
    return JOPT_OK;
}

/* ---- loss scaling ------------------------------------------------------------- */

JOPT_API int jopt_set_grad_scale(jopt_optim *opt, double scale, int found_inf)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_set_grad_scale";
    if (!opt)
        return JOPT_EINVAL;
    if (opt->closure)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: spec '%s' is a closure optimizer: "
                       "it takes no loss scaling (torch's GradScaler refuses closures "
                       "too)", fn, cg_spec_name(opt->spec));
    if (opt->gpu) /* the gradients are on the device */
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: a GPU optimizer takes no loss "
                       "scaling yet (docs/gpu.md)", fn);
    if (opt->shard) /* the processes would have to agree on a skip */
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: a sharded optimizer takes no "
                       "loss scaling", fn);
    if (!(isfinite(scale) && scale > 0))
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: scale %g is not a finite number "
                       "above 0", fn, scale);
    if (found_inf != 0 && found_inf != 1 && found_inf != JOPT_CHECK_FINITE)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: found_inf %d is not 0, 1 or "
                       "JOPT_CHECK_FINITE", fn, found_inf);
    opt->grad_scale = scale;
    opt->found_inf = found_inf;
    return JOPT_OK;
}

/* Whether any element is NaN or infinite: its exponent bits all set.  Eight
 * bytes at a time: (x & E) + (E's lowest bit) carries into each lane's top
 * bit exactly when x's exponent is all ones, and never into the next lane. */
static int nonfinite(const void *buf, int dt, int64_t lo, int64_t hi)
{
    const unsigned char *b = buf;
    size_t es = (size_t)cg_dt_size(dt);
    uint64_t e = dt == CG_DT_F32 ? 0x7f8000007f800000ull
                 : dt == CG_DT_BF16 ? 0x7f807f807f807f80ull : 0x7c007c007c007c00ull;
    uint64_t low = e & (~e << 1), top = dt == CG_DT_F32 ? 0x8000000080000000ull
                                                        : 0x8000800080008000ull;
    uint64_t acc = 0;
    size_t at = (size_t)lo * es, end = (size_t)hi * es;
    for (; at + 8 <= end; at += 8) {
        uint64_t w;
        memcpy(&w, b + at, 8);
        acc |= (w & e) + low;
    }
    for (; at < end; at += es) /* the last elements, one by one */
        if (!isfinite(cg_dt_get(b + at, dt, 0)))
            return 1;
    return (acc & top) != 0;
}

typedef struct finite_job {
    jopt_optim *opt;
    atomic_int found;
} finite_job;

static int64_t nchunks(const rt_param *p)
{
    return p->k && p->g && p->n ? (p->n + CG_CHUNK - 1) / CG_CHUNK : 0;
}

/* chunks [lo, hi) of the step's gradients, in parameter order */
static void check_range(void *arg, size_t lo, size_t hi)
{
    finite_job *job = arg;
    const jopt_optim *opt = job->opt;
    size_t at = 0;
    for (size_t g = 0; g < opt->ngroups && at < hi; g++)
        for (size_t i = 0; i < opt->groups[g].n && at < hi; i++) {
            const rt_param *p = &opt->groups[g].params[i];
            size_t c = (size_t)nchunks(p);
            for (size_t k = 0; k < c; k++, at++) {
                if (at < lo)
                    continue;
                if (at >= hi || atomic_load_explicit(&job->found, memory_order_relaxed))
                    return;
                int64_t b = (int64_t)k * CG_CHUNK, e = b + CG_CHUNK < p->n ? b + CG_CHUNK : p->n;
                if (nonfinite(p->g, p->grad_dtype, b, e))
                    atomic_store(&job->found, 1);
            }
        }
}

int64_t rt_grads_finite(jopt_optim *opt, int64_t *elem)
{
    size_t total = 0;
    int64_t elems = 0;
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++) {
            total += (size_t)nchunks(&opt->groups[g].params[i]);
            elems += opt->groups[g].params[i].n;
        }
    finite_job job = {opt, 0};
    rt_par par;
    cg_parallel run = rt_ctx_parallel(opt->ctx, elems, &par);
    run.run(run.pool, total, check_range, &job);
    if (!atomic_load(&job.found))
        return -1;
    int64_t ordinal = 0; /* which: the first, for the message */
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++, ordinal++) {
            const rt_param *p = &opt->groups[g].params[i];
            for (int64_t e = 0; nchunks(p) && e < p->n; e++)
                if (!isfinite(cg_dt_get(p->g, p->grad_dtype, e))) {
                    *elem = e;
                    return ordinal;
                }
        }
    return -1;
}
