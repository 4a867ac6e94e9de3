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
#include "shard.h"

JOPT_API int jopt_zero_grad(jopt_optim *opt)
{
    RT_API_SCOPE(opt);
    if (!opt)
        return JOPT_EINVAL;
    if (opt->gpu)
        return rt_gpu_zero_grad(opt);
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++) {
            rt_param *p = &opt->groups[g].params[i];
            if (p->g && p->n)
                memset(p->g, 0, (size_t)p->n * rt_gsize(p));
        }
    return JOPT_OK;
}

/* the inputs given to a parameter for this step, a bit per spec input */
static unsigned inputs_of(const jopt_optim *opt, const rt_param *p)
{
    unsigned mask = 0;
    size_t n = cg_spec_ninputs(opt->spec);
    for (size_t i = 0; i < n && i < CG_MAX_INPUTS; i++)
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

static char *put_str(char *d, const char *s)
{
    size_t n = strlen(s);
    memcpy(d, s, n);
    return d + n;
}

static char *put_uint(char *d, size_t v)
{
    char digits[24];
    int n = 0;
    do
        digits[n++] = (char)('0' + v % 10);
    while (v /= 10);
    while (n)
        *d++ = digits[--n];
    return d;
}

/* "fn: group g parameter i", for messages: made for every parameter at
 * every step, where snprintf took a quarter of a step over small tensors */
static void rt_where(char *buf, size_t cap, const char *fn, size_t g, size_t i)
{
    if (strlen(fn) + 2 * 20 + 20 >= cap) { /* not expected: fn is a function's name */
        snprintf(buf, cap, "%s: group %zu parameter %zu", fn, g, i);
        return;
    }
    char *d = put_uint(put_str(put_uint(put_str(put_str(buf, fn), ": group "), g),
                               " parameter "), i);
    *d = 0;
}

/* Chooses each parameter's kernel for this step (`named` < 0: the update,
 * for those with a gradient) or for a named kernel (those with state),
 * building a variant not built yet, and makes its workspace big enough.
 * Changes nothing the user can see: a failure leaves the optimizer as it
 * was. */
int rt_step_choose(jopt_optim *opt, const char *fn, int named)
{
    int64_t scratch = 0; /* the matrix kernels' workspace, one call at a time */
    size_t mtasks = 0;
    for (size_t g = 0; g < opt->ngroups; g++) {
        rt_group *gr = &opt->groups[g];
        for (size_t i = 0; i < gr->n; i++) {
            rt_param *p = &gr->params[i];
            p->k = NULL;
            if (!p->n || p->foreign || (named < 0 ? !p->g : !has_state(opt, p)))
                continue;
            char where[96];
            rt_where(where, sizeof where, fn, g, i);
            rt_variant v = rt_update_variant(p);
            v.inputs = named < 0 ? inputs_of(opt, p) : 0;
            v.named = named;
            v.scaled = named < 0 && opt->grad_scale != 1.0;
            const cg_kernel *k;
            int rc = rt_check_shape(opt, p, where);
            if (rc == JOPT_OK)
                rc = rt_kset_param(opt, &gr->ks, where, gr->values, gr->runtime,
                                   p, &v, &k);
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
            v.fresh = 1;
            v.named = -1;
            if (fresh && (rc = rt_kset_param(opt, &gr->ks, where, gr->values,
                                             gr->runtime, p, &v, &k)))
                return rc;
            int bad = rt_state_misfit(k, p, p->state_n, p->state_dt);
            if (bad >= 0)
                return rt_fail(opt->ctx, JOPT_EINVAL, "%s: state '%s' has the wrong "
                               "size for this kernel", where,
                               cg_spec_state_name(opt->spec, (size_t)bad));
            char err[CG_ERRLEN]; /* what the spec requires of this step */
            double t = (double)((cg_spec_group_steps(opt->spec) ? gr->step : p->step) + 1);
            if (cg_kernel_guard(k, t, gr->values, p->shape, p->rank, p->n, gr->gstate, err))
                return rt_fail(opt->ctx, JOPT_EINVAL, "%s: %s", where, err);
            size_t work = cg_call_work(k, p->n, p->shape, p->rank);
            if (work > p->workcap) {
                double *w = cg_realloc(p->work, work * sizeof *w);
                if (!w)
                    return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", where);
                p->work = w;
                p->workcap = work;
            }
            const cg_layout *kl = cg_kernel_layout(k);
            scratch = kl->scratch > scratch ? kl->scratch : scratch;
            mtasks = kl->mtasks > mtasks ? kl->mtasks : mtasks;
            /* a group whose states start with its first kernel (optim.c) */
            for (int s = 0; gr->step == 0 && s < kl->ngstate; s++)
                if (isnan(gr->gstate[kl->gstate[s]]))
                    gr->gstate[kl->gstate[s]] = kl->ginit[s];
            p->k = k;
        }
        if (rt_reserve_uniforms(opt, rt_kset_uniforms(&gr->ks)))
            return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    }
    char err[CG_ERRLEN];
    int rc = mtasks ? cg_batch_reserve_matrix(opt->batch, scratch, mtasks, err) : JOPT_OK;
    return rc ? rt_fail_cg(opt->ctx, rc, fn, err) : JOPT_OK;
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
                int dt = l->dtype[2 + s];
                int64_t bytes = n * cg_dt_size(dt);
                double init = l->kind[s] == CG_KIND_SCALAR64 || l->init[s] == CG_INIT_CONST
                                  ? l->init_value[s] : 0.0;
                if (opt->gpu) { /* on the device, float32 only (gpu.c) */
                    if (rt_gpu_state_new(opt, n, l->kind[s], init, &p->state[si]) != 0)
                        return JOPT_ENOMEM;
                    created[k + (size_t)si] = 1;
                } else if ((p->state[si] = rt_spare_take(p, (size_t)si, bytes)))
                    created[k + (size_t)si] = 2; /* a buffer a load kept */
                else if ((p->state[si] = rt_state_alloc(p, (size_t)si, (size_t)bytes)))
                    created[k + (size_t)si] = 1;
                else
                    return JOPT_ENOMEM;
                p->state_n[si] = n;
                p->state_dt[si] = (uint8_t)dt;
                p->fresh |= l->init[s] == CG_INIT_UNSET;
                if (opt->gpu)
                    continue;
                if (l->kind[s] == CG_KIND_SCALAR64) {
                    *(double *)(void *)p->state[si] = l->init_value[s];
                    continue;
                }
                /* rounded to the state's type as a store would (torch's
                 * full_like(p, v) on a bfloat16 p) */
                cg_dt_fill(p->state[si], dt, n,
                           l->init[s] == CG_INIT_CONST ? l->init_value[s] : 0.0);
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
                        rt_spare_keep(opt, p, s, p->state[s],
                                      p->state_n[s] * cg_dt_size(p->state_dt[s]));
                    else
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

int rt_step_state(jopt_optim *opt, unsigned char **created)
{
    *created = NULL;
    if (!needs_state(opt))
        return JOPT_OK;
    size_t total = 0;
    for (size_t g = 0; g < opt->ngroups; g++)
        total += opt->groups[g].n * cg_spec_nstate(opt->spec);
    unsigned char *made = cg_calloc(total + 1, 1);
    if (!made)
        return rt_fail(opt->ctx, JOPT_ENOMEM, "jopt_step: out of memory");
    if (create_state(opt, made) != JOPT_OK) {
        undo_state(opt, made);
        cg_free(made);
        return rt_fail(opt->ctx, JOPT_ENOMEM, "jopt_step: out of memory "
                       "creating optimizer state");
    }
    *created = made;
    return JOPT_OK;
}

void rt_step_unstate(jopt_optim *opt, unsigned char *created)
{
    if (created)
        undo_state(opt, created);
    cg_free(created);
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
size_t rt_step_plan(jopt_optim *opt, int64_t *total)
{
    size_t nc = 0;
    uint64_t ordinal = 0; /* the tensor's place in the optimizer */
    *total = 0;
    int group_steps = cg_spec_group_steps(opt->spec);
    for (size_t g = 0; g < opt->ngroups; g++) {
        rt_group *gr = &opt->groups[g];
        for (size_t i = 0; i < gr->n; i++, ordinal++) {
            rt_param *p = &gr->params[i];
            if (!p->k)
                continue;
            bind(opt, p, cg_kernel_layout(p->k));
            opt->parts[nc] = (cg_part){p->arrays, p->n};
            int64_t t = (group_steps ? gr->step : p->step) + 1;
            opt->calls[nc] = (cg_call){
                .k = p->k, .parts = &opt->parts[nc], .nparts = 1,
                .t = (double)t,
                .values = gr->values, .shape = p->shape, .rank = p->rank,
                .gstate = gr->gstate, .gred = gr->gred, .u = p->u,
                .work = p->work, .grad_scale = opt->grad_scale,
                .srkey = cg_sr_key(gr->prec.seed, (uint64_t)t, ordinal)};
            nc++;
            /* a matrix kernel's products count as work too: the pool
             * takes a step of 2^20 elements, or of ~2^26 flops */
            double flops = cg_kernel_layout(p->k)->gemm_flops;
            *total += flops / 64 > (double)p->n ? (int64_t)(flops / 64) : p->n;
        }
    }
    return nc;
}

int rt_step_run(jopt_optim *opt, const char *fn, size_t ncalls, int64_t total)
{
    rt_par par;
    cg_parallel run = rt_ctx_parallel(opt->ctx, total, &par);
    char err[CG_ERRLEN];
    int rc = cg_batch_run(opt->batch, opt->calls, ncalls, &run, err);
    return rc ? rt_fail_cg(opt->ctx, rc, fn, err) : JOPT_OK;
}

/* A step, taken or skipped, takes what was given for one step: the loss
 * scale and the inputs (borrowed: the caller may free them once the step
 * returns). */
static void given_for_one_step(jopt_optim *opt)
{
    opt->grad_scale = 1.0;
    opt->found_inf = 0;
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++)
            memset(opt->groups[g].params[i].input, 0,
                   sizeof opt->groups[g].params[i].input);
}

void rt_step_count(jopt_optim *opt)
{
    for (size_t g = 0; g < opt->ngroups; g++) {
        rt_group *gr = &opt->groups[g];
        gr->step++;
        for (size_t i = 0; i < gr->n; i++) {
            rt_param *p = &gr->params[i];
            if (p->k) {
                p->step++;
                p->fresh = 0;
            }
        }
    }
    given_for_one_step(opt);
}

/* Loss scaling's skip (jopt_set_grad_scale): JOPT_SKIPPED, with nothing
 * else changed, when the caller found an infinite gradient or, asked to
 * check, one is not finite; JOPT_OK to go on.  After the kernels are
 * chosen. */
static int scaled_skip(jopt_optim *opt, double l, double *loss)
{
    if (opt->found_inf == 1) { /* the caller's check (GradScaler's) */
        if (loss)
            *loss = l;
        given_for_one_step(opt);
        return rt_fail(opt->ctx, JOPT_SKIPPED, "jopt_step: found_inf was set: "
                       "the step was skipped and nothing changed");
    }
    if (opt->found_inf != JOPT_CHECK_FINITE)
        return JOPT_OK;
    int64_t elem, bad = rt_grads_finite(opt, &elem);
    if (bad < 0)
        return JOPT_OK;
    size_t g = 0, i = (size_t)bad;
    while (i >= opt->groups[g].n)
        i -= opt->groups[g++].n;
    const rt_param *p = &opt->groups[g].params[i];
    double v = cg_dt_get(p->g, p->grad_dtype, elem);
    if (loss)
        *loss = l;
    given_for_one_step(opt);
    return rt_fail(opt->ctx, JOPT_SKIPPED, "jopt_step: group %zu parameter "
                   "%zu: gradient element %lld is %s; the step was skipped "
                   "and nothing changed", g, i, (long long)elem,
                   isnan(v) ? "NaN" : v > 0 ? "inf" : "-inf");
}

JOPT_API int jopt_step(jopt_optim *opt, jopt_closure closure, void *user_data,
                       double *loss)
{
    RT_API_SCOPE(opt);
    /* the user's code runs between enter and leave (guard.c); the slot is
     * zeroed first, in case an abandoned step left its token here */
    volatile uint64_t token = 0;
    if (!opt)
        return JOPT_EINVAL;
    if (rt_busy(opt, "jopt_step"))
        return JOPT_EINVAL;
    if (opt->shard)
        return rt_shard_step(opt, closure, user_data, loss);
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
    unsigned char *created = NULL;
    rc = rt_step_choose(opt, "jopt_step", -1);
    if (rc == JOPT_OK && opt->gpu)
        rc = rt_gpu_prepare(opt, "jopt_step");
    if (rc == JOPT_OK)
        rc = scaled_skip(opt, l, loss);
    if (rc == JOPT_OK)
        rc = rt_step_state(opt, &created);
    cg_free(created); /* nothing below can fail */
    if (rc)
        return rc;
    if (opt->gpu) {
        if ((rc = rt_gpu_run(opt, "jopt_step")))
            return rc;
    } else {
        int64_t total;
        size_t nc = rt_step_plan(opt, &total);
        if ((rc = rt_step_run(opt, "jopt_step", nc, total)))
            return rc;
    }
    rt_step_count(opt);
    if (loss)
        *loss = l;
    return JOPT_OK;
}

JOPT_API int jopt_optim_call(jopt_optim *opt, const char *kernel)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_optim_call";
    if (!opt || rt_busy(opt, fn))
        return JOPT_EINVAL;
    int rc = JOPT_OK, named = -1;
    if (!kernel)
        rc = rt_fail(opt->ctx, JOPT_EINVAL, "%s: kernel is NULL", fn);
    else if (!opt->closure)
        named = cg_spec_find_named(opt->spec, kernel);
    if (rc == JOPT_OK && named < 0) {
        char names[512] = "";
        for (size_t i = 0; !opt->closure && i < cg_spec_nnamed(opt->spec); i++) {
            size_t l = strlen(names);
            snprintf(names + l, sizeof names - l, "%s%s", i ? ", " : "",
                     cg_spec_named(opt->spec, i));
        }
        rc = rt_fail(opt->ctx, JOPT_EINVAL, "%s: spec '%s' has no kernel '%s' "
                     "(its kernels: %s)", fn, cg_spec_name(opt->spec), kernel,
                     names[0] ? names : "none");
    }
    if (opt->shard) /* the others learn of a failure too */
        return rt_shard_call(opt, kernel, named, rc);
    if (rc)
        return rc;
    if ((rc = rt_step_choose(opt, fn, named)))
        return rc;
    if (opt->gpu) {
        if ((rc = rt_gpu_prepare(opt, fn)) == JOPT_OK)
            rc = rt_gpu_run(opt, fn);
        return rc;
    }
    int64_t total;
    size_t nc = rt_step_plan(opt, &total);
    return rt_step_run(opt, fn, nc, total);
}

JOPT_API int jopt_set_input(jopt_optim *opt, size_t group, size_t index,
                            const char *name, float *data)
{
    RT_API_SCOPE(opt);
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
        char what[160];
        snprintf(what, sizeof what, "%s: group %zu parameter %zu: input '%s'", fn,
                 group, index, name);
        if (data && rt_buffer_overlaps(opt, what, data, p->n, &p->input[i]))
            return JOPT_EINVAL;
        if (opt->gpu && rt_gpu_check_buffer(opt, fn, data, group, index, name))
            return JOPT_EINVAL;
        p->input[i] = data;
        return JOPT_OK;
    }
    return rt_fail(opt->ctx, JOPT_EINVAL, "%s: spec '%s' has no input '%s'",
                   fn, cg_spec_name(opt->spec), name);
}

JOPT_API int jopt_set_inputs(jopt_optim *opt, const char *name, float *const *data,
                             size_t n)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_set_inputs";
    if (!opt)
        return JOPT_EINVAL;
    if (!name || (!data && n))
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: %s is NULL", fn,
                       !name ? "name" : "data");
    size_t total = 0;
    for (size_t g = 0; g < opt->ngroups; g++)
        total += opt->groups[g].n;
    if (n != total)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: %zu buffers for %zu parameters", fn,
                       n, total);
    int in = -1;
    for (size_t i = 0; i < cg_spec_ninputs(opt->spec) && in < 0; i++)
        if (!strcmp(cg_spec_input(opt->spec, i), name))
            in = (int)i;
    if (in < 0)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: spec '%s' has no input '%s'",
                       fn, cg_spec_name(opt->spec), name);
    size_t j = 0;
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++, j++) {
            if ((uintptr_t)data[j] % sizeof(float))
                return rt_fail(opt->ctx, JOPT_EINVAL, "%s: group %zu parameter %zu: "
                               "'%s' is not aligned to 4 bytes", fn, g, i, name);
            if (opt->gpu && rt_gpu_check_buffer(opt, fn, data[j], g, i, name))
                return JOPT_EINVAL;
        }
    int rc = rt_inputs_overlap(opt, fn, in, data);
    if (rc)
        return rc;
    j = 0;
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++, j++)
            opt->groups[g].params[i].input[in] = data[j];
    return JOPT_OK;
}
