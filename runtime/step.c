/*
 * step.c - zero_grad and step: the hot path.
 *
 *   step(closure): closure (may fail: nothing changed yet)
 *               -> create missing state for every parameter with a gradient
 *                  (may fail: what was created is freed, nothing changed)
 *               -> per stepping parameter, a call of its group's kernel on
 *                  its arrays at its step count
 *               -> cg_batch_run: prologues, passes on the thread pool,
 *                  sums merged in order, epilogues (codegen/batch.c)
 * Nothing after the state is created can fail, and nothing allocates.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "closure.h"

JOPT_API int jopt_zero_grad(jopt_optim *opt)
{
    if (!opt)
        return JOPT_EINVAL;
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++) {
            rt_param *p = &opt->groups[g].params[i];
            if (p->g && p->n)
                memset(p->g, 0, (size_t)p->n * sizeof(float));
        }
    return JOPT_OK;
}

/* The kernel a parameter runs: the fresh variant (unset states read as
 * nil) on the step that creates its unset states. */
static const cg_kernel *kernel_for(const rt_group *gr, const rt_param *p)
{
    return p->fresh && gr->fresh ? gr->fresh : gr->steady;
}

static float *alloc_state(int64_t n)
{
    size_t bytes = ((size_t)n * sizeof(float) + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes);
}

/* Creates the states the kernels need; `created` records which, so a
 * failure can undo exactly those. */
static int create_state(jopt_optim *opt, unsigned char *created)
{
    size_t ns = cg_spec_nstate(opt->spec), k = 0;
    for (size_t g = 0; g < opt->ngroups; g++) {
        const rt_group *gr = &opt->groups[g];
        const cg_layout *l = cg_kernel_layout(gr->steady);
        for (size_t i = 0; i < gr->n; i++, k += ns) {
            rt_param *p = &gr->params[i];
            if (!p->g || !p->n)
                continue;
            for (int s = 0; s < l->nstate; s++) {
                int si = l->state[s];
                if (p->state[si])
                    continue;
                int64_t n = l->scalar[s] ? 1 : p->n;
                float **spare = &p->spare[2 * si + (l->scalar[s] != 0)];
                if (*spare) { /* a buffer a load kept: same kind, same size */
                    p->state[si] = *spare;
                    *spare = NULL;
                    created[k + (size_t)si] = 2;
                } else if (!(p->state[si] = alloc_state(n))) {
                    return JOPT_ENOMEM;
                } else {
                    created[k + (size_t)si] = 1;
                }
                p->fresh |= l->init[s] == CG_INIT_UNSET;
                p->scalar_mask = (p->scalar_mask & ~(1ull << si)) |
                                 (uint64_t)(l->scalar[s] != 0) << si;
                float v = l->init[s] == CG_INIT_CONST ? (float)l->init_value[s] : 0.0f;
                for (int64_t e = 0; e < n; e++)
                    p->state[si][e] = v;
            }
        }
    }
    return JOPT_OK;
}

static void undo_state(jopt_optim *opt, const unsigned char *created)
{
    size_t ns = cg_spec_nstate(opt->spec), k = 0;
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++, k += ns)
            for (size_t s = 0; s < ns; s++)
                if (created[k + s]) {
                    rt_param *p = &opt->groups[g].params[i];
                    if (created[k + s] == 2) /* back where it came from */
                        p->spare[2 * s + (p->scalar_mask >> s & 1)] = p->state[s];
                    else
                        free(p->state[s]);
                    p->state[s] = NULL;
                    p->fresh = 0;
                }
}

/* Creating state allocates; a step where every state exists does not. */
static int needs_state(const jopt_optim *opt)
{
    for (size_t g = 0; g < opt->ngroups; g++) {
        const rt_group *gr = &opt->groups[g];
        const cg_layout *l = cg_kernel_layout(gr->steady);
        for (size_t i = 0; i < gr->n; i++) {
            const rt_param *p = &gr->params[i];
            if (!p->g || !p->n)
                continue;
            for (int s = 0; s < l->nstate; s++)
                if (!p->state[l->state[s]])
                    return 1;
        }
    }
    return 0;
}

static int ensure_state(jopt_optim *opt)
{
    if (!needs_state(opt))
        return JOPT_OK;
    size_t total = 0;
    for (size_t g = 0; g < opt->ngroups; g++)
        total += opt->groups[g].n * cg_spec_nstate(opt->spec);
    unsigned char *created = calloc(total + 1, 1);
    if (!created)
        return rt_fail(opt->ctx, JOPT_ENOMEM, "jopt_step: out of memory");
    if (create_state(opt, created) != JOPT_OK) {
        undo_state(opt, created);
        free(created);
        return rt_fail(opt->ctx, JOPT_ENOMEM, "jopt_step: out of memory "
                       "creating optimizer state");
    }
    free(created);
    return JOPT_OK;
}

/* A call per stepping parameter, in group order; returns the number of
 * calls, and the elements in *total. */
static size_t plan(jopt_optim *opt, int64_t *total)
{
    size_t nc = 0;
    *total = 0;
    for (size_t g = 0; g < opt->ngroups; g++) {
        rt_group *gr = &opt->groups[g];
        for (size_t i = 0; i < gr->n; i++) {
            rt_param *p = &gr->params[i];
            if (!p->g || !p->n)
                continue;
            const cg_kernel *k = kernel_for(gr, p);
            const cg_layout *lay = cg_kernel_layout(k);
            p->arrays[0] = p->p;
            p->arrays[1] = p->g;
            for (int s = 0; s < lay->nstate; s++)
                p->arrays[2 + s] = p->state[lay->state[s]];
            opt->parts[nc] = (cg_part){p->arrays, p->n};
            opt->calls[nc] = (cg_call){k, &opt->parts[nc], 1,
                                       (double)(p->step + 1), gr->values,
                                       p->u, NULL};
            nc++;
            *total += p->n;
        }
    }
    return nc;
}

JOPT_API int jopt_step(jopt_optim *opt, jopt_closure closure, void *user_data,
                       double *loss)
{
    /* the user's code runs between enter and leave (guard.c); the slot is
     * zeroed first, in case an abandoned step left its token here */
    volatile uint64_t token = 0;
    if (!opt)
        return JOPT_EINVAL;
    if (rt_busy(opt, "jopt_step"))
        return JOPT_EINVAL;
    double l = NAN;
    int rc = JOPT_OK, crc = 0;
    if (opt->closure || closure) {
        rt_guard_enter(opt, &token);
        if (opt->closure)
            rc = rt_closure_step(opt->closure, closure, user_data, loss);
        else
            crc = (RT_GUARD_CALL(opt), closure(user_data, &l));
        rt_guard_leave(opt);
        if (opt->free_pending) {
            jopt_ctx *ctx = opt->ctx;
            opt->free_pending = 0;
            jopt_optim_free(opt);
            return rt_fail(ctx, JOPT_EINVAL, "jopt_step: the closure freed its "
                           "optimizer (jopt_optim_free): it is freed now that the "
                           "step has returned, and the step was not taken");
        }
        if (opt->closure)
            return rc;
    }
    if (crc != 0)
        return rt_fail(opt->ctx, JOPT_ECLOSURE, "jopt_step: the closure "
                       "returned %d; the step was not taken", crc);
    rc = ensure_state(opt);
    if (rc)
        return rc;
    int64_t total;
    size_t nc = plan(opt, &total);
    rt_par par;
    cg_parallel run = rt_ctx_parallel(opt->ctx, total, &par);
    char err[CG_ERRLEN];
    if ((rc = cg_batch_run(opt->batch, opt->calls, nc, &run, err)))
        return rt_fail_cg(opt->ctx, rc, "jopt_step", err);
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++) {
            rt_param *p = &opt->groups[g].params[i];
            if (p->g && p->n) {
                p->step++;
                p->fresh = 0;
            }
        }
    if (loss)
        *loss = l;
    return JOPT_OK;
}
