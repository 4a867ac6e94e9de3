/*
 * closure.c - what the closure optimizers' drivers stand on: the group's
 * tensors as one flat vector, the spec's vector kernels run over it, the
 * user's closure, and a step that changes nothing when it fails.
 *
 * A vector kernel runs as one call of the batch (codegen/batch.c) over
 * every tensor of the group: its per-call values (the prologue), pass 0
 * over the tensors cut into tasks on the thread pool, the sums and maxima
 * taken in 16 lanes per task and the tasks merged in order, the epilogue,
 * pass 1.  The cut does not depend
 * on the thread count, so neither do the results.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "closure.h"

struct rt_closure {
    jopt_optim *opt;
    rt_group *gr;               /* the optimizer's one group */
    const rt_driver *d;
    void *state;
    cg_kernel **k;              /* the driver's kernels, by its index */
    int64_t n;                  /* elements of the flat vector */
    int64_t *offset;            /* where each tensor starts in it */
    float *zeros;               /* an absent gradient: the largest tensor */
    float *snapshot;            /* the parameters before the step */
    /* the current step */
    jopt_closure closure;
    void *user;
    int64_t evals, steps;
    int bug;                    /* a driver or spec broke rt_vk's contract */
    /* rt_vk's space: each tensor's operands as a part of one call */
    float **arrays;             /* gr->n rows of CG_MAX_SLOTS */
    cg_part *parts;
    cg_batch *batch;
    double *u;
    size_t ucap;
};

static const rt_driver *const drivers[] = {&rt_lbfgs_driver, &rt_conjgrad_driver};

const rt_driver *rt_driver_find(const char *method)
{
    for (size_t i = 0; i < sizeof drivers / sizeof drivers[0]; i++)
        if (!strcmp(drivers[i]->method, method))
            return drivers[i];
    return NULL;
}

int64_t rt_closure_numel(const rt_closure *c) { return c->n; }

float *rt_closure_alloc(const rt_closure *c)
{
    size_t bytes = ((size_t)c->n * sizeof(float) + 63) & ~(size_t)63;
    return cg_aligned_alloc(64, bytes ? bytes : 64);
}

double rt_closure_value(const rt_closure *c, const char *name)
{
    const cg_hyper *h = cg_spec_find_hyper(c->opt->spec, name);
    return h ? c->gr->values[h->offset] : NAN;
}

void rt_closure_set_value(rt_closure *c, const char *name, double v)
{
    const cg_hyper *h = cg_spec_find_hyper(c->opt->spec, name);
    if (h)
        c->gr->values[h->offset] = v;
}

int rt_closure_eval(rt_closure *c, double *loss)
{
    double l = NAN;
    RT_GUARD_CALL(c->opt);
    int rc = c->closure(c->user, &l);
    c->evals++;
    if (c->opt->free_pending)
        return rt_fail(c->opt->ctx, JOPT_EINVAL, "jopt_step: the closure freed "
                       "its optimizer");
    if (rc != 0)
        return rt_fail(c->opt->ctx, JOPT_ECLOSURE, "jopt_step: the closure "
                       "returned %d at evaluation %lld of the step; the "
                       "parameters and the optimizer are as they were before "
                       "the step", rc, (long long)c->evals);
    *loss = l;
    return JOPT_OK;
}

/* ---- vector kernels ------------------------------------------------------ */

static int operands_distinct(const rt_vec *a, int n)
{
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (a[i].kind == a[j].kind && (a[i].kind != RT_VEC_BUF || a[i].buf == a[j].buf))
                return 0;
    return 1;
}

void rt_vk(rt_closure *c, int k, const rt_vec *arrays, const double *scalars,
           double *results)
{
    const cg_kernel *kern = c->k[k];
    const cg_layout *l = cg_kernel_layout(kern);
    /* the user's gradients (or the shared zeros standing for absent ones)
     * are read-only: a spec kernel that writes the array a driver binds to
     * them is refused */
    int writes_grads = 0;
    for (int a = 0; a < l->narrays; a++)
        writes_grads |= arrays[a].kind == RT_VEC_GRADS && (l->written >> a & 1);
    if (writes_grads || !operands_distinct(arrays, l->narrays)) {
        c->bug = 1; /* reported by rt_closure_step */
        for (int r = 0; r < l->nresults; r++)
            results[r] = NAN;
        return;
    }
    size_t np = 0;
    for (size_t i = 0; i < c->gr->n; i++) {
        const rt_param *p = &c->gr->params[i];
        if (!p->n)
            continue;
        float **row = c->arrays + i * CG_MAX_SLOTS;
        for (int a = 0; a < l->narrays; a++)
            row[a] = arrays[a].kind == RT_VEC_PARAMS ? p->p
                     : arrays[a].kind == RT_VEC_GRADS ? (p->g ? p->g : c->zeros)
                                                      : arrays[a].buf + c->offset[i];
        c->parts[np++] = (cg_part){row, p->n};
    }
    cg_call call = {.k = kern, .parts = c->parts, .nparts = np,
                    .values = scalars, .u = c->u, .results = results};
    rt_par par;
    cg_parallel run = rt_ctx_parallel(c->opt->ctx, c->n, &par);
    char err[CG_ERRLEN];
    if (cg_batch_run(c->batch, &call, 1, &run, err)) {
        c->bug = 1; /* cannot happen: the batch has room for the group */
        for (int r = 0; r < l->nresults; r++)
            results[r] = NAN;
    }
}

/* ---- construction ---------------------------------------------------------- */

int rt_driver_kernel_fits(const rt_driver *d, int i, const cg_spec *spec,
                          const cg_layout *l, char *err)
{
    const rt_kernel_sig *want = &d->kernels[i];
    if (!l || l->narrays != want->narrays || l->nscalars != want->nscalars ||
        l->nresults != want->nresults) {
        char have[96] = "it has none";
        if (l)
            snprintf(have, sizeof have, "it has %d, %d and %d", l->narrays,
                     l->nscalars, l->nresults);
        snprintf(err, CG_ERRLEN, "spec %s: method '%s' (%s) needs a kernel "
                 "'%s' with %d arrays, %d scalars and %d results (%s)",
                 cg_spec_path(spec), d->method, d->source, want->name,
                 want->narrays, want->nscalars, want->nresults, have);
        return JOPT_ESPEC;
    }
    uint64_t bad = l->written & want->grads;
    if (bad) {
        int a = 0;
        while (!(bad >> a & 1))
            a++;
        snprintf(err, CG_ERRLEN, "spec %s: kernel '%s' writes its array '%s', "
                 "which method '%s' binds to the user's gradients (read-only)",
                 cg_spec_path(spec), want->name,
                 cg_spec_find_vkernel(spec, want->name)->arrays[a], d->method);
        return JOPT_ESPEC;
    }
    return JOPT_OK;
}

/* the driver's kernels from the spec, each as the driver expects it */
static int get_kernels(rt_closure *c)
{
    jopt_optim *opt = c->opt;
    char err[CG_ERRLEN];
    for (int i = 0; i < c->d->nkernels; i++) {
        const rt_kernel_sig *want = &c->d->kernels[i];
        cg_request req = {.spec = opt->spec, .vkernel = want->name,
                          .reference = opt->engine == JOPT_ENGINE_REFERENCE};
        const cg_vkernel_sig *have = cg_spec_find_vkernel(opt->spec, want->name);
        int rc = have ? cg_kernel_get(opt->ctx->jit, &req, &c->k[i], err) : JOPT_ESPEC;
        if (rc && have)
            return rt_fail_cg(opt->ctx, rc, "jopt_optim_new", err);
        const cg_layout *l = have ? cg_kernel_layout(c->k[i]) : NULL;
        if ((rc = rt_driver_kernel_fits(c->d, i, opt->spec, l, err)))
            return rt_fail_cg(opt->ctx, rc, "jopt_optim_new", err);
        if ((size_t)l->nuniform + 1 > c->ucap)
            c->ucap = (size_t)l->nuniform + 1;
    }
    return JOPT_OK;
}

static int make_space(rt_closure *c)
{
    int64_t largest = 0;
    size_t nt = 0;
    char err[CG_ERRLEN];
    c->offset = cg_calloc(c->gr->n + 1, sizeof *c->offset);
    if (!c->offset)
        return JOPT_ENOMEM;
    for (size_t i = 0; i < c->gr->n; i++) {
        int64_t n = c->gr->params[i].n;
        c->offset[i] = c->n;
        c->n += n;
        largest = n > largest ? n : largest;
        nt += cg_batch_tasks(n, NULL, 0);
    }
    c->arrays = cg_calloc(c->gr->n * CG_MAX_SLOTS + 1, sizeof *c->arrays);
    c->parts = cg_calloc(c->gr->n + 1, sizeof *c->parts);
    c->u = cg_calloc(c->ucap + 1, sizeof *c->u);
    c->zeros = cg_calloc((size_t)largest + 1, sizeof *c->zeros);
    c->snapshot = cg_malloc(((size_t)c->n + 1) * sizeof *c->snapshot);
    if (!c->arrays || !c->parts || !c->u || !c->zeros || !c->snapshot ||
        cg_batch_new(&c->batch, err) || cg_batch_reserve(c->batch, nt, 1, err))
        return JOPT_ENOMEM;
    return JOPT_OK;
}

int rt_closure_new(jopt_optim *opt, const rt_driver *d, rt_closure **out)
{
    static const char fn[] = "jopt_optim_new";
    rt_closure *c = cg_calloc(1, sizeof *c);
    if (!c)
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    c->opt = opt;
    c->d = d;
    c->gr = &opt->groups[0];
    int rc;
    if (opt->ngroups != 1) {
        rc = rt_fail(opt->ctx, JOPT_EINVAL, "%s: %s doesn't support "
                     "per-parameter options (parameter groups)", fn,
                     c->d->name);
        goto fail;
    }
    if (c->gr->n == 0) {
        rc = rt_fail(opt->ctx, JOPT_EINVAL, "%s: optimizer got an empty "
                     "parameter list", fn);
        goto fail;
    }
    if (!(c->k = cg_calloc((size_t)d->nkernels + 1, sizeof *c->k))) {
        rc = rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
        goto fail;
    }
    if ((rc = get_kernels(c)))
        goto fail;
    if (make_space(c) || !(c->state = d->state_new(c))) {
        rc = rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
        goto fail;
    }
    if (d->prepare)
        d->prepare(c);
    *out = c;
    return JOPT_OK;
fail:
    rt_closure_free(c);
    return rc;
}

void rt_closure_free(rt_closure *c)
{
    if (!c)
        return;
    if (c->state)
        c->d->state_free(c->state);
    for (int i = 0; c->k && i < c->d->nkernels; i++)
        cg_kernel_release(c->k[i]);
    cg_free(c->k);
    cg_free(c->offset);
    cg_free(c->arrays);
    cg_free(c->parts);
    cg_batch_free(c->batch);
    cg_free(c->u);
    cg_free(c->zeros);
    cg_free(c->snapshot);
    cg_free(c);
}

int rt_closure_one_group(const rt_closure *c)
{
    return rt_fail(c->opt->ctx, JOPT_EINVAL, "jopt_add_param_group: %s doesn't "
                   "support per-parameter options (parameter groups)",
                   c->d->name);
}

/* ---- the step ---------------------------------------------------------------- */

static void copy_params(rt_closure *c, int restore)
{
    for (size_t i = 0; i < c->gr->n; i++) {
        rt_param *p = &c->gr->params[i];
        float *flat = c->snapshot + c->offset[i];
        size_t bytes = (size_t)p->n * sizeof(float);
        if (bytes)
            memcpy(restore ? p->p : flat, restore ? flat : p->p, bytes);
    }
}

int rt_closure_step(rt_closure *c, jopt_closure closure, void *user,
                    double *loss)
{
    if (!closure)
        return rt_fail(c->opt->ctx, JOPT_EINVAL, "jopt_step: %s needs a closure: "
                       "it evaluates the function several times per step",
                       c->d->name);
    int rc;
    c->closure = closure;
    c->user = user;
    c->evals = 0;
    c->bug = 0;
    copy_params(c, 0);
    double l = NAN;
    c->opt->ctx->err[0] = 0;
    rc = c->d->step(c, c->state, &l);
    if (rc == JOPT_ENOMEM && !c->opt->ctx->err[0]) /* the driver's own buffers */
        rt_fail(c->opt->ctx, rc, "jopt_step: %s: out of memory", c->d->name);
    if (rc == JOPT_OK && c->bug)
        rc = rt_fail(c->opt->ctx, JOPT_EINVAL, "jopt_step: spec %s: a kernel of "
                     "method '%s' writes the gradients, or the driver passed one "
                     "buffer twice to a kernel", cg_spec_path(c->opt->spec),
                     c->d->method);
    c->closure = NULL;
    c->user = NULL;
    if (rc) {
        copy_params(c, 1);
        return rc;
    }
    c->steps++;
    if (loss)
        *loss = l;
    return JOPT_OK;
}

void rt_closure_abandon(rt_closure *c)
{
    if (c) {
        c->closure = NULL;
        c->user = NULL;
    }
}

int rt_closure_state_get(const rt_closure *c, size_t index, const char *name,
                         const float **data, int64_t *numel, int64_t *step)
{
    const float *d = NULL;
    int flat = 0;
    if (!c->d->state_get || !c->d->state_get(c->state, name, &d, &flat))
        return rt_fail(c->opt->ctx, JOPT_EINVAL, "jopt_state_get: %s has no state "
                       "'%s'", c->d->name, name);
    *data = d && flat ? d + c->offset[index] : d;
    if (numel)
        *numel = !d ? 0 : flat ? c->gr->params[index].n : 1;
    if (step)
        *step = c->steps;
    return JOPT_OK;
}

/* ---- checkpoints --------------------------------------------------------------- */

void rt_closure_save(const rt_closure *c, rt_out *o)
{
    rt_put_u64(o, (uint64_t)c->steps);
    rt_out count = {NULL, 0, 0};
    if (c->d->save)
        c->d->save(c->state, &count);
    rt_put_u64(o, count.len);
    if (c->d->save)
        c->d->save(c->state, o);
}

int rt_closure_savable(const rt_closure *c, const char *fn)
{
    char err[CG_ERRLEN];
    if (!c || !c->d->savable || c->d->savable(c->state, err) == JOPT_OK)
        return JOPT_OK;
    return rt_fail(c->opt->ctx, JOPT_EINVAL, "%s: the %s state cannot be "
                   "saved: %s", fn, c->d->name, err);
}

int rt_closure_load(rt_closure *c, const void *buf, size_t len, const char *fn,
                    void **state, int64_t *steps)
{
    rt_in r = {buf, len, 0, 0};
    *steps = (int64_t)rt_get_u64(&r);
    uint64_t n = rt_get_u64(&r);
    const void *blob = rt_take(&r, n);
    if (r.bad || r.pos != r.len || *steps < 0 || *steps > (int64_t)1 << 53)
        return rt_fail(c->opt->ctx, JOPT_EINVAL, "%s: the %s state in the "
                       "checkpoint is malformed", fn, c->d->name);
    if (!c->d->load) { /* nothing saved: the state is scratch, kept */
        *state = NULL;
        return n ? rt_fail(c->opt->ctx, JOPT_EINVAL, "%s: the checkpoint has "
                           "%s state this jopt does not expect", fn, c->d->name)
                 : JOPT_OK;
    }
    char err[CG_ERRLEN] = "";
    rt_in br = {blob, n, 0, 0};
    int rc = c->d->load(c, &br, state, err);
    if (rc == JOPT_OK && (br.bad || br.pos != br.len)) {
        c->d->state_free(*state);
        rc = JOPT_EINVAL;
        snprintf(err, sizeof err, "its length does not match its contents");
    }
    if (rc)
        return rt_fail(c->opt->ctx, rc, "%s: the %s state in the checkpoint: %s",
                       fn, c->d->name, err);
    return JOPT_OK;
}

void rt_closure_adopt(rt_closure *c, void *state, int64_t steps)
{
    c->steps = steps;
    if (!state)
        return;
    if (c->d->adopt) { /* the buffers jopt_state_get handed out stay */
        c->d->adopt(c->state, state);
        return;
    }
    c->d->state_free(c->state);
    c->state = state;
}

const void *rt_closure_state(const rt_closure *c) { return c->state; }

void rt_closure_discard(const rt_closure *c, void *state)
{
    if (state)
        c->d->state_free(state);
}
