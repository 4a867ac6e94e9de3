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
    free(ks->e);
    memset(ks, 0, sizeof *ks);
}

int rt_kset_get(jopt_optim *opt, rt_kset *ks, const char *where,
                const double *values, const uint8_t *runtime, int rank,
                int fresh, unsigned inputs, int named, const cg_kernel **out)
{
    for (size_t i = 0; i < ks->n; i++) {
        const rt_kentry *e = &ks->e[i];
        if ((e->rank == rank || cg_kernel_layout(e->k)->rank < 0) &&
            e->fresh == fresh && e->inputs == inputs && e->named == named) {
            *out = e->k;
            return JOPT_OK;
        }
    }
    if (ks->n == ks->cap) {
        size_t cap = ks->cap ? 2 * ks->cap : 4;
        rt_kentry *e = realloc(ks->e, cap * sizeof *e);
        if (!e)
            return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", where);
        ks->e = e;
        ks->cap = cap;
    }
    char err[CG_ERRLEN];
    cg_request req = {.spec = opt->spec, .values = values, .runtime = runtime,
                      .fresh = fresh, .rank = rank, .inputs = inputs,
                      .named = named >= 0 ? cg_spec_named(opt->spec, (size_t)named) : NULL,
                      .reference = opt->engine == JOPT_ENGINE_REFERENCE,
                      .arch = rt_gpu_arch(opt)};
    cg_kernel *k;
    int rc = cg_kernel_get(opt->ctx->jit, &req, &k, err);
    if (rc)
        return rt_fail_cg(opt->ctx, rc, where, err);
    ks->e[ks->n++] = (rt_kentry){rank, fresh, named, inputs, k, NULL};
    *out = k;
    return JOPT_OK;
}

int rt_state_misfit(const cg_kernel *k, const rt_param *p, const int64_t *state_n)
{
    const cg_layout *l = cg_kernel_layout(k);
    for (int s = 0; s < l->nstate; s++) {
        int si = l->state[s];
        if (state_n[si] &&
            state_n[si] != cg_kind_numel(l->kind[s], p->n, p->shape, p->rank))
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
                    const rt_kset *old, int check_state, rt_kset *out)
{
    rt_kset ks = {NULL, 0, 0};
    const cg_kernel *k;
    int rc = JOPT_OK;
    for (size_t i = 0; i < old->n && rc == JOPT_OK; i++) {
        const rt_kentry *e = &old->e[i];
        rc = rt_kset_get(opt, &ks, where, values, runtime, e->rank, e->fresh,
                         e->inputs, e->named, &k);
    }
    /* the steady update of every rank the group has (1 for a group with
     * none), and the fresh one where the spec has states that start unset */
    for (size_t i = 0; i < (gr->n ? gr->n : 1) && rc == JOPT_OK; i++) {
        const rt_param *p = gr->n ? &gr->params[i] : NULL;
        int rank = p ? p->rank : 1;
        rc = rt_kset_get(opt, &ks, where, values, runtime, rank, 0, 0, -1, &k);
        if (rc == JOPT_OK && cg_kernel_layout(k)->has_unset)
            rc = rt_kset_get(opt, &ks, where, values, runtime, rank, 1, 0, -1, &k);
        if (!p)
            break;
        int bad = rc == JOPT_OK && check_state ? rt_state_misfit(k, p, p->state_n) : -1;
        if (bad >= 0)
            rc = rt_fail(opt->ctx, JOPT_EINVAL, "%s: state '%s' of parameter "
                         "%zu would change its size or kind with these values",
                         where, cg_spec_state_name(opt->spec, (size_t)bad), i);
    }
    if (rc) {
        rt_kset_free(&ks);
        return rc;
    }
    *out = ks;
    return JOPT_OK;
}
