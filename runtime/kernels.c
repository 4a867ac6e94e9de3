/*
 * kernels.c - a group's kernels.  One value vector of a group can need
 * several kernels: the update for each rank of its tensors when the spec
 * looks at shapes, the fresh variant on the step that creates a state that
 * starts unset, one per set of inputs given, and its named kernels.  The
 * group keeps them in a small set (rt_kset), built at construction for
 * what is known then and completed at the step that first needs a variant
 * (which the kernel cache usually has already).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

void rt_kset_free(rt_kset *ks)
{
    for (size_t i = 0; i < ks->n; i++) {
        rt_gmod_put(ks->e[i].mod);
        cg_kernel_release(ks->e[i].k);
    }
    cg_free(ks->e);
    memset(ks, 0, sizeof *ks);
}

static int same_variant(const rt_variant *a, const rt_variant *b, const cg_kernel *k)
{
    return (a->rank == b->rank || cg_kernel_layout(k)->rank < 0) &&
           a->fresh == b->fresh && a->inputs == b->inputs && a->named == b->named &&
           a->dtype == b->dtype && a->grad_dtype == b->grad_dtype && a->scaled == b->scaled;
}

rt_variant rt_update_variant(const rt_param *p)
{
    return (rt_variant){.rank = p->rank, .named = -1, .dtype = p->dtype,
                        .grad_dtype = p->grad_dtype};
}

/* shape: the tensor's sizes (v->rank of them, last first), or NULL */
static int kset_get(jopt_optim *opt, rt_kset *ks, const char *where,
                    const double *values, const uint8_t *runtime,
                    const rt_variant *v, const int64_t *shape, const cg_kernel **out)
{
    size_t sl = (size_t)v->rank * sizeof *shape;
    for (size_t i = 0; i < ks->n; i++) {
        const rt_kentry *e = &ks->e[i];
        const cg_layout *l = cg_kernel_layout(e->k);
        if (same_variant(&e->v, v, e->k) &&
            (!l->shaped || !shape || !memcmp(e->shape, shape, sl)) &&
            (!shape || cg_kernel_serves(e->k, shape, v->rank))) {
            *out = e->k;
            return JOPT_OK;
        }
    }
    if (ks->n == ks->cap) {
        size_t cap = ks->cap ? 2 * ks->cap : 4;
        rt_kentry *e = cg_realloc(ks->e, cap * sizeof *e);
        if (!e)
            return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", where);
        ks->e = e;
        ks->cap = cap;
    }
    char err[CG_ERRLEN];
    cg_request req = {.spec = opt->spec, .values = values, .runtime = runtime,
                      .fresh = v->fresh, .rank = v->rank, .inputs = v->inputs,
                      .named = v->named >= 0 ? cg_spec_named(opt->spec, (size_t)v->named)
                                             : NULL,
                      .reference = opt->engine == JOPT_ENGINE_REFERENCE,
                      .dtype = v->dtype, .grad_dtype = v->grad_dtype,
                      .state_dtype = ks->state_dtype, .stochastic = ks->stochastic,
                      .grad_scale = v->scaled, .shape = shape,
                      .arch = rt_gpu_arch(opt)};
    cg_kernel *k;
    int rc = cg_kernel_get(opt->ctx->jit, &req, &k, err);
    if (rc)
        return rt_fail_cg(opt->ctx, rc, where, err);
    rt_kentry *e = &ks->e[ks->n++];
    *e = (rt_kentry){*v, k, shape != NULL, {0}, NULL};
    if (shape)
        memcpy(e->shape, shape, sl);
    *out = k;
    return JOPT_OK;
}

int rt_kset_get(jopt_optim *opt, rt_kset *ks, const char *where,
                const double *values, const uint8_t *runtime,
                const rt_variant *v, const cg_kernel **out)
{
    return kset_get(opt, ks, where, values, runtime, v, NULL, out);
}

int rt_kset_param(jopt_optim *opt, rt_kset *ks, const char *where,
                  const double *values, const uint8_t *runtime,
                  const rt_param *p, const rt_variant *v, const cg_kernel **out)
{
    return kset_get(opt, ks, where, values, runtime, v, p->shape, out);
}

int rt_check_shape(jopt_optim *opt, rt_param *p, const char *where)
{
    if (p->shape_ok || !cg_spec_has_shape_check(opt->spec))
        return JOPT_OK;
    char err[CG_ERRLEN];
    int rc = cg_spec_check_shape(opt->spec, p->shape, p->rank, err);
    if (rc == JOPT_EINVAL && p->rank == 1) /* maybe a matrix seen flat */
        return rt_fail(opt->ctx, rc, "%s: %s (a parameter without a shape is "
                       "flat: give it one with jopt_set_shape)", where, err);
    if (rc)
        return rt_fail_cg(opt->ctx, rc, where, err);
    p->shape_ok = 1;
    return JOPT_OK;
}

int rt_state_misfit(const cg_kernel *k, const rt_param *p, const int64_t *state_n,
                    const uint8_t *state_dt)
{
    const cg_layout *l = cg_kernel_layout(k);
    for (int s = 0; s < l->nstate; s++) {
        int si = l->state[s];
        if (state_n[si] &&
            (state_n[si] != cg_kind_numel(l->kind[s], p->n, p->shape, p->rank) ||
             state_dt[si] != l->dtype[2 + s]))
            return si;
    }
    for (int s = 0; s < l->ngstate; s++) /* a group state is not per tensor */
        if (state_n[l->gstate[s]])
            return l->gstate[s];
    return -1;
}

size_t rt_kset_uniforms(const rt_kset *ks)
{
    size_t most = 0;
    for (size_t i = 0; i < ks->n; i++) {
        size_t u = (size_t)cg_kernel_layout(ks->e[i].k)->nuniform;
        most = u > most ? u : most;
    }
    return most + 1;
}

int rt_kset_rebuild(jopt_optim *opt, const rt_group *gr, const char *where,
                    const double *values, const uint8_t *runtime,
                    const rt_prec *prec, const rt_kset *old, int check_state,
                    rt_kset *out)
{
    rt_kset ks = {NULL, 0, 0, prec->state_dtype, prec->stochastic};
    const cg_kernel *k;
    int rc = JOPT_OK;
    for (size_t i = 0; i < old->n && rc == JOPT_OK; i++) {
        const rt_kentry *e = &old->e[i];
        rc = kset_get(opt, &ks, where, values, runtime, &e->v,
                      e->has_shape ? e->shape : NULL, &k);
    }
    /* the steady update of every rank (or shape) and element types the
     * group has (of a float32 one for a group with none), and the fresh
     * one where the spec has states that start unset; not for a shape the
     * spec refuses (the step will say) */
    char err[CG_ERRLEN];
    int checks = cg_spec_has_shape_check(opt->spec);
    for (size_t i = 0; i < (gr->n ? gr->n : 1) && rc == JOPT_OK; i++) {
        const rt_param *p = gr->n ? &gr->params[i] : NULL;
        if (p && !p->n && gr->n > 1) /* never steps */
            continue;
        if (checks && (!p || (!p->shape_ok &&
                              cg_spec_check_shape(opt->spec, p->shape, p->rank, err))))
            continue;
        rt_variant v = p ? rt_update_variant(p)
                         : (rt_variant){.rank = 1, .named = -1, .dtype = prec->dtype,
                                        .grad_dtype = prec->grad_dtype};
        const int64_t *shape = p ? p->shape : NULL;
        rc = kset_get(opt, &ks, where, values, runtime, &v, shape, &k);
        v.fresh = 1;
        if (rc == JOPT_OK && cg_kernel_layout(k)->has_unset)
            rc = kset_get(opt, &ks, where, values, runtime, &v, shape, &k);
        if (!p)
            break;
        int bad = rc == JOPT_OK && check_state
                  ? rt_state_misfit(k, p, p->state_n, p->state_dt) : -1;
        if (bad >= 0)
            rc = rt_fail(opt->ctx, JOPT_EINVAL, "%s: state '%s' of parameter "
                         "%zu would change its size, kind or element type with "
                         "these values", where,
                         cg_spec_state_name(opt->spec, (size_t)bad), i);
    }
    if (rc) {
        rt_kset_free(&ks);
        return rc;
    }
    *out = ks;
    return JOPT_OK;
}
