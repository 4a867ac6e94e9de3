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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "closure.h"

JOPT_API int jopt_zero_grad(jopt_optim *opt)
{
    if (!opt)
        return JOPT_EINVAL;
    if (opt->gpu)
        return rt_gpu_zero_grad(opt);
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++) {
            rt_param *p = &opt->groups[g].params[i];
            if (p->g && p->n)
                memset(p->g, 0, (size_t)p->n * sizeof(float));
        }
    return JOPT_OK;
}

static float *alloc_state(int64_t n)
{
    size_t bytes = ((size_t)n * sizeof(float) + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes ? bytes : 64);
}

/* the inputs given to a parameter for this step, a bit per spec input */
static unsigned inputs_of(const jopt_optim *opt, const rt_param *p)
{
    unsigned mask = 0;
    for (size_t i = 0; i < cg_spec_ninputs(opt->spec); i++)
        mask |= (unsigned)(p->input[i] != NULL) << i;
    return mask;
}

/* whether a parameter has state yet (a named kernel runs on those) */
static int has_state(const jopt_optim *opt, const rt_param *p)
{
    for (size_t k = 0; k < cg_spec_nstate(opt->spec); k++)
        if (p->state[k])
            return 1;
    return p->step > 0;
}

/* Chooses each parameter's kernel for this step (`named` < 0: the update,
 * for those with a gradient) or for a named kernel (those with state),
 * building a variant not built yet, and makes its workspace big enough.
 * Changes nothing the user can see: a failure leaves the optimizer as it
 * was. */
static int choose_kernels(jopt_optim *opt, const char *fn, int named)
{
    for (size_t g = 0; g < opt->ngroups; g++) {
        rt_group *gr = &opt->groups[g];
        for (size_t i = 0; i < gr->n; i++) {
            rt_param *p = &gr->params[i];
            p->k = NULL;
            if (!p->n || (named < 0 ? !p->g : !has_state(opt, p)))
                continue;
            char where[96];
            snprintf(where, sizeof where, "%s: group %zu parameter %zu", fn, g, i);
            unsigned inputs = named < 0 ? inputs_of(opt, p) : 0;
            const cg_kernel *k;
            int rc = rt_kset_get(opt, &gr->ks, where, gr->values, gr->runtime,
                                 p->rank, 0, inputs, named, &k);
            if (rc)
                return rc;
            const cg_layout *l = cg_kernel_layout(k);
            int fresh = 0; /* a state that starts unset is made this step */
            for (int s = 0; s < l->nstate; s++)
                fresh |= !p->state[l->state[s]] && l->init[s] == CG_INIT_UNSET;
            if (named >= 0 && fresh)
                return rt_fail(opt->ctx, JOPT_EINVAL, "%s: kernel '%s' reads "
                               "state the parameter does not have yet", where,
                               cg_spec_named(opt->spec, (size_t)named));
            if (fresh && (rc = rt_kset_get(opt, &gr->ks, where, gr->values,
                                           gr->runtime, p->rank, 1, inputs, -1, &k)))
                return rc;
            int bad = rt_state_misfit(k, p, p->state_n);
            if (bad >= 0)
                return rt_fail(opt->ctx, JOPT_EINVAL, "%s: state '%s' has the wrong "
                               "size for this kernel", where,
                               cg_spec_state_name(opt->spec, (size_t)bad));
            size_t work = cg_call_work(k, p->n, p->shape, p->rank);
            if (work > p->workcap) {
                double *w = realloc(p->work, work * sizeof *w);
                if (!w)
                    return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", where);
                p->work = w;
                p->workcap = work;
            }
            p->k = k;
        }
        if (rt_reserve_uniforms(opt, rt_kset_uniforms(&gr->ks)))
            return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    }
    return JOPT_OK;
}

/* Creates the states this step's kernels need; `created` records which, so
 * a failure can undo exactly those. */
static int create_state(jopt_optim *opt, unsigned char *created)
{
    size_t ns = cg_spec_nstate(opt->spec), k = 0;
    for (size_t g = 0; g < opt->ngroups; g++) {
        const rt_group *gr = &opt->groups[g];
        for (size_t i = 0; i < gr->n; i++, k += ns) {
            rt_param *p = &gr->params[i];
            if (!p->k)
                continue;
            const cg_layout *l = cg_kernel_layout(p->k);
            for (int s = 0; s < l->nstate; s++) {
                int si = l->state[s];
                if (p->state[si])
                    continue;
                int64_t n = cg_kind_numel(l->kind[s], p->n, p->shape, p->rank);
                double init = l->kind[s] == CG_KIND_SCALAR64 || l->init[s] == CG_INIT_CONST
                                  ? l->init_value[s] : 0.0;
                if (opt->gpu ? rt_gpu_state_new(opt, n, l->kind[s], init, &p->state[si]) != 0
                             : !(p->state[si] = alloc_state(n)))
                    return JOPT_ENOMEM;
                created[k + (size_t)si] = 1;
                p->state_n[si] = n;
                p->fresh |= l->init[s] == CG_INIT_UNSET;
                if (opt->gpu)
                    continue;
                if (l->kind[s] == CG_KIND_SCALAR64) {
                    *(double *)(void *)p->state[si] = l->init_value[s];
                    continue;
                }
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
                    rt_state_free(opt, p->state[s]);
                    p->state[s] = NULL;
                    p->state_n[s] = 0;
                    p->fresh = 0;
                }
}

/* Creating state allocates; a step where every state exists does not. */
static int needs_state(const jopt_optim *opt)
{
    for (size_t g = 0; g < opt->ngroups; g++) {
        const rt_group *gr = &opt->groups[g];
        for (size_t i = 0; i < gr->n; i++) {
            const rt_param *p = &gr->params[i];
            if (!p->k)
                continue;
            const cg_layout *l = cg_kernel_layout(p->k);
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

/* binds a parameter's arrays in its kernel's slot order */
static void bind(const jopt_optim *opt, rt_param *p, const cg_layout *lay)
{
    p->arrays[0] = p->p;
    p->arrays[1] = p->g;
    for (int s = 0; s < lay->nstate; s++)
        p->arrays[2 + s] = p->state[lay->state[s]];
    for (int s = 0; s < lay->ninput; s++)
        p->arrays[2 + lay->nstate + s] = p->input[lay->input[s]];
    (void)opt;
}

/* A call per parameter to run (`named` < 0: those with a gradient, with
 * the update; else those with state, with that named kernel), in group
 * order; returns the number of calls, and the elements in *total. */
static size_t plan(jopt_optim *opt, int64_t *total)
{
    size_t nc = 0;
    *total = 0;
    int group_steps = cg_spec_group_steps(opt->spec);
    for (size_t g = 0; g < opt->ngroups; g++) {
        rt_group *gr = &opt->groups[g];
        for (size_t i = 0; i < gr->n; i++) {
            rt_param *p = &gr->params[i];
            if (!p->k)
                continue;
            bind(opt, p, cg_kernel_layout(p->k));
            opt->parts[nc] = (cg_part){p->arrays, p->n};
            opt->calls[nc] = (cg_call){
                .k = p->k, .parts = &opt->parts[nc], .nparts = 1,
                .t = (double)((group_steps ? gr->step : p->step) + 1),
                .values = gr->values, .shape = p->shape, .rank = p->rank,
                .gstate = gr->gstate, .gred = gr->gred, .u = p->u,
                .work = p->work};
            nc++;
            *total += p->n;
        }
    }
    return nc;
}

JOPT_API int jopt_step(jopt_optim *opt, jopt_closure closure, void *user_data,
                       double *loss)
{
    if (!opt)
        return JOPT_EINVAL;
    if (opt->closure)
        return rt_closure_step(opt->closure, closure, user_data, loss);
    double l = NAN;
    if (closure) {
        int crc = closure(user_data, &l);
        if (crc != 0)
            return rt_fail(opt->ctx, JOPT_ECLOSURE, "jopt_step: the closure "
                           "returned %d; the step was not taken", crc);
    }
    int rc = choose_kernels(opt, "jopt_step", -1);
    if (rc == JOPT_OK && opt->gpu)
        rc = rt_gpu_prepare(opt, "jopt_step");
    if (rc == JOPT_OK)
        rc = ensure_state(opt);
    if (rc)
        return rc;
    if (opt->gpu) {
        if ((rc = rt_gpu_run(opt, "jopt_step")))
            return rc;
    } else {
        int64_t total;
        size_t nc = plan(opt, &total);
        rt_par par;
        cg_parallel run = rt_ctx_parallel(opt->ctx, total, &par);
        char err[CG_ERRLEN];
        if ((rc = cg_batch_run(opt->batch, opt->calls, nc, &run, err)))
            return rt_fail_cg(opt->ctx, rc, "jopt_step", err);
    }
    for (size_t g = 0; g < opt->ngroups; g++) {
        rt_group *gr = &opt->groups[g];
        gr->step++;
        for (size_t i = 0; i < gr->n; i++) {
            rt_param *p = &gr->params[i];
            if (p->k) {
                p->step++;
                p->fresh = 0;
            }
            memset(p->input, 0, sizeof p->input); /* given for one step */
        }
    }
    if (loss)
        *loss = l;
    return JOPT_OK;
}

JOPT_API int jopt_optim_call(jopt_optim *opt, const char *kernel)
{
    static const char fn[] = "jopt_optim_call";
    if (!opt)
        return JOPT_EINVAL;
    if (!kernel)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: kernel is NULL", fn);
    int named = opt->closure ? -1 : cg_spec_find_named(opt->spec, kernel);
    if (named < 0) {
        char names[512] = "";
        for (size_t i = 0; !opt->closure && i < cg_spec_nnamed(opt->spec); i++) {
            size_t l = strlen(names);
            snprintf(names + l, sizeof names - l, "%s%s", i ? ", " : "",
                     cg_spec_named(opt->spec, i));
        }
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: spec '%s' has no kernel '%s' "
                       "(its kernels: %s)", fn, cg_spec_name(opt->spec), kernel,
                       names[0] ? names : "none");
    }
    int rc = choose_kernels(opt, fn, named);
    if (rc == JOPT_OK && opt->gpu && (rc = rt_gpu_prepare(opt, fn)) == JOPT_OK)
        rc = rt_gpu_run(opt, fn);
    if (rc || opt->gpu)
        return rc;
    int64_t total;
    size_t nc = plan(opt, &total);
    rt_par par;
    cg_parallel run = rt_ctx_parallel(opt->ctx, total, &par);
    char err[CG_ERRLEN];
    if ((rc = cg_batch_run(opt->batch, opt->calls, nc, &run, err)))
        return rt_fail_cg(opt->ctx, rc, fn, err);
    return JOPT_OK;
}

JOPT_API int jopt_set_input(jopt_optim *opt, size_t group, size_t index,
                            const char *name, float *data)
{
    static const char fn[] = "jopt_set_input";
    if (!opt)
        return JOPT_EINVAL;
    if (!name)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: name is NULL", fn);
    if (group >= opt->ngroups || index >= opt->groups[group].n)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: group %zu has no parameter "
                       "%zu", fn, group, index);
    rt_param *p = &opt->groups[group].params[index];
    for (size_t i = 0; i < cg_spec_ninputs(opt->spec); i++) {
        if (strcmp(cg_spec_input(opt->spec, i), name))
            continue;
        if ((uintptr_t)data % sizeof(float))
            return rt_fail(opt->ctx, JOPT_EINVAL, "%s: group %zu parameter %zu: "
                           "'%s' is not aligned to 4 bytes", fn, group, index, name);
        if (data && rt_buffer_overlaps(opt, data, p->n))
            return JOPT_EINVAL;
        if (opt->gpu && rt_gpu_check_buffer(opt, fn, data, group, index, name))
            return JOPT_EINVAL;
        p->input[i] = data;
        return JOPT_OK;
    }
    return rt_fail(opt->ctx, JOPT_EINVAL, "%s: spec '%s' has no input '%s'",
                   fn, cg_spec_name(opt->spec), name);
}
