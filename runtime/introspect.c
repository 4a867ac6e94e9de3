/*
 * introspect.c - specs seen from outside: jopt_spec_* (what a spec declares,
 * its kernels as graph, IR or machine code) and jopt_kernel_* (a vector
 * kernel run on the caller's arrays).  The jopt command, the benchmarks and
 * the Python package learn everything about a spec here.
 *
 * Kernels are traced on the reference engine (no LLVM) when only their
 * layout is asked for, and lazily: a spec whose kernel does not trace can
 * still say what its hyperparameters are.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "closure.h"

struct jopt_spec {
    jopt_ctx *ctx;
    cg_spec *spec;
    double *values;       /* the defaults under the options */
    cg_kernel **kernels;  /* traced on demand: the update, or each vector
                             kernel (by index) */
    size_t nkernels;
    const char **update_arrays; /* "param", "grad", the kept states, inputs */
    int rank;             /* the variant shown: the tensors' rank */
    unsigned inputs;      /* and the inputs given */
    int has_shape;        /* and their sizes (jopt_spec_set_shape): */
    int64_t shape[CG_MAX_RANK]; /* last first */
    rt_prec prec;         /* and the element types (options dtype=, ...) */
    char *text;           /* the last jopt_spec_emit's */
};

JOPT_API const char *jopt_ctx_spec_path(const jopt_ctx *ctx)
{
    RT_API_SCOPE(ctx);
    return ctx ? ctx->path : "";
}

JOPT_API int jopt_spec_open(jopt_ctx *ctx, const char *name,
                            const char *options, jopt_spec **out)
{
    RT_API_SCOPE(ctx);
    static const char fn[] = "jopt_spec_open";
    if (!ctx)
        return JOPT_EINVAL;
    if (!name || !out)
        return rt_fail(ctx, JOPT_EINVAL, "%s: %s is NULL", fn,
                       !name ? "name" : "out");
    char err[CG_ERRLEN];
    jopt_spec *s = cg_calloc(1, sizeof *s);
    if (!s)
        return rt_fail(ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    s->ctx = ctx;
    int rc = rt_spec_get(ctx, name, &s->spec, err);
    if (rc) {
        cg_free(s);
        return rt_fail_cg(ctx, rc, fn, err);
    }
    size_t nv = cg_spec_nvalues(s->spec);
    s->nkernels = cg_spec_method(s->spec) ? cg_spec_nvkernels(s->spec)
                                          : 1 + cg_spec_nnamed(s->spec);
    s->rank = 1;
    s->values = cg_malloc((nv + 1) * sizeof *s->values);
    s->kernels = cg_calloc(s->nkernels + 1, sizeof *s->kernels);
    s->update_arrays = cg_calloc(CG_MAX_SLOTS, sizeof *s->update_arrays);
    if (!s->values || !s->kernels || !s->update_arrays) {
        rc = rt_fail(ctx, JOPT_ENOMEM, "%s: out of memory", fn);
        goto fail;
    }
    memcpy(s->values, cg_spec_defaults(s->spec), nv * sizeof *s->values);
    if ((rc = rt_prec_parse(ctx, fn, options, &s->prec, NULL)))
        goto fail;
    if ((rc = cg_options_parse_skip(s->spec, options, s->values, cg_prec_options, err))) {
        rt_fail(ctx, rc, "%s: %s: %s", fn, cg_spec_name(s->spec), err);
        goto fail;
    }
    if ((rc = cg_spec_check(s->spec, s->values, err))) {
        rt_fail(ctx, rc, "%s: %s: %s", fn, cg_spec_name(s->spec), err);
        goto fail;
    }
    for (size_t i = 0; i < cg_spec_nhyper(s->spec); i++) { /* finite */
        const cg_hyper *h = cg_spec_hyper(s->spec, i);
        for (int k = 0; k < h->len; k++)
            if ((rc = cg_hyper_check(h, s->values[h->offset + k], fn, err))) {
                rt_fail(ctx, rc, "%s", err);
                goto fail;
            }
    }
    *out = s;
    return JOPT_OK;
fail:
    jopt_spec_free(s);
    return rc;
}

JOPT_API void jopt_spec_free(jopt_spec *s)
{
    RT_API_SCOPE(s);
    if (!s)
        return;
    for (size_t i = 0; s->kernels && i < s->nkernels; i++)
        cg_kernel_release(s->kernels[i]);
    cg_free(s->kernels);
    cg_free(s->update_arrays);
    cg_free(s->values);
    cg_free(s->text);
    rt_spec_put(s->ctx, s->spec);
    cg_free(s);
}

JOPT_API const char *jopt_spec_name(const jopt_spec *s) { return s ? cg_spec_name(s->spec) : NULL; }
JOPT_API const char *jopt_spec_path(const jopt_spec *s) { return s ? cg_spec_path(s->spec) : NULL; }
JOPT_API const char *jopt_spec_doc(const jopt_spec *s) { return s ? cg_spec_doc(s->spec) : NULL; }
JOPT_API const char *jopt_spec_method(const jopt_spec *s) { return s ? cg_spec_method(s->spec) : NULL; }

JOPT_API const char *jopt_spec_method_source(const jopt_spec *s)
{
    RT_API_SCOPE(s);
    const char *m = jopt_spec_method(s);
    const rt_driver *d = m ? rt_driver_find(m) : NULL;
    return d ? d->source : NULL;
}

/* ---- hyperparameters and states ------------------------------------------ */

JOPT_API size_t jopt_spec_nhyper(const jopt_spec *s) { return s ? cg_spec_nhyper(s->spec) : 0; }

static int check_index(const jopt_spec *s, const char *fn, size_t i, size_t n,
                       const char *what, const void *out)
{
    if (!out)
        return rt_fail(s->ctx, JOPT_EINVAL, "%s: out is NULL", fn);
    if (i >= n)
        return rt_fail(s->ctx, JOPT_EINVAL, "%s: spec '%s' has no %s %zu (it "
                       "has %zu)", fn, cg_spec_name(s->spec), what, i, n);
    return JOPT_OK;
}

JOPT_API int jopt_spec_hyper(const jopt_spec *s, size_t i, jopt_hyper_info *out)
{
    RT_API_SCOPE(s);
    if (!s)
        return JOPT_EINVAL;
    int rc = check_index(s, "jopt_spec_hyper", i, cg_spec_nhyper(s->spec),
                         "hyperparameter", out);
    if (rc)
        return rc;
    const cg_hyper *h = cg_spec_hyper(s->spec, i);
    *out = (jopt_hyper_info){
        .name = h->name,
        .kind = h->kind == CG_HYPER_BOOL     ? JOPT_KIND_BOOL
                : h->kind == CG_HYPER_CHOICE ? JOPT_KIND_CHOICE
                                             : JOPT_KIND_NUMBER,
        .len = h->len, .tuple = h->tuple, .integer = h->integer,
        .optional = h->optional, .runtime = h->runtime_ok,
        .value = s->values + h->offset,
        .spec_default = cg_spec_defaults(s->spec) + h->offset,
        .choices = h->choices, .nchoices = h->nchoices};
    return JOPT_OK;
}

JOPT_API int jopt_spec_format(const jopt_spec *s, size_t i, char *buf, size_t cap)
{
    RT_API_SCOPE(s);
    if (!s)
        return JOPT_EINVAL;
    int rc = check_index(s, "jopt_spec_format", i, cg_spec_nhyper(s->spec),
                         "hyperparameter", buf);
    if (rc)
        return rc;
    if (cap)
        cg_hyper_format(cg_spec_hyper(s->spec, i),
                        s->values + cg_spec_hyper(s->spec, i)->offset, buf, cap);
    return JOPT_OK;
}

/* kernel i traced on the reference engine, once */
static int traced(jopt_spec *s, const char *fn, size_t i, const cg_kernel **out)
{
    if (!s->kernels[i]) {
        char err[CG_ERRLEN];
        const char *method = cg_spec_method(s->spec);
        cg_request req = {.spec = s->spec, .values = s->values, .reference = 1,
                          .vkernel = method ? cg_spec_vkernel(s->spec, i)->name : NULL,
                          .named = !method && i ? cg_spec_named(s->spec, i - 1) : NULL,
                          .rank = s->rank, .inputs = i ? 0 : s->inputs,
                          .shape = s->has_shape ? s->shape : NULL};
        if (!method) {
            req.dtype = s->prec.dtype;
            req.grad_dtype = s->prec.grad_dtype;
            req.state_dtype = s->prec.state_dtype;
            req.stochastic = s->prec.stochastic;
        }
        int rc = cg_kernel_get(s->ctx->jit, &req, &s->kernels[i], err);
        const char *kname = req.vkernel ? req.vkernel : req.named;
        if (rc)
            return rt_fail(s->ctx, rc, "%s: %s%s%s: %s", fn, cg_spec_name(s->spec),
                           kname ? ": kernel " : "", kname ? kname : "", err);
    }
    *out = s->kernels[i];
    return JOPT_OK;
}

JOPT_API size_t jopt_spec_nstate(const jopt_spec *s)
{
    RT_API_SCOPE(s);
    return s && !cg_spec_method(s->spec) ? cg_spec_nstate(s->spec) : 0;
}

JOPT_API int jopt_spec_state(jopt_spec *s, size_t i, jopt_state_info *out)
{
    RT_API_SCOPE(s);
    static const char fn[] = "jopt_spec_state";
    if (!s)
        return JOPT_EINVAL;
    const cg_kernel *k;
    int rc = check_index(s, fn, i, jopt_spec_nstate(s), "state", out);
    if (rc || (rc = traced(s, fn, 0, &k)))
        return rc;
    const cg_layout *l = cg_kernel_layout(k);
    *out = (jopt_state_info){.name = cg_spec_state_name(s->spec, i)};
    static const jopt_state_kind kinds[] = {
        [CG_KIND_ELEM] = JOPT_STATE_ELEM, [CG_KIND_ROW] = JOPT_STATE_ROW,
        [CG_KIND_COL] = JOPT_STATE_COL, [CG_KIND_SCALAR] = JOPT_STATE_TENSOR,
        [CG_KIND_SCALAR64] = JOPT_STATE_TENSOR};
    for (int k2 = 0; k2 < l->nstate; k2++)
        if (l->state[k2] == (int)i) {
            out->kept = 1;
            out->kind = kinds[l->kind[k2]];
            out->scalar = out->kind == JOPT_STATE_TENSOR;
            out->f64 = l->kind[k2] == CG_KIND_SCALAR64;
            out->unset = l->init[k2] == CG_INIT_UNSET;
            out->init = out->unset ? 0 : l->init_value[k2];
        }
    for (int k2 = 0; k2 < l->ngstate; k2++)
        if (l->gstate[k2] == (int)i) {
            out->kept = 1;
            out->kind = JOPT_STATE_GROUP;
            out->f64 = !l->gstate_f32[k2];
            out->init = l->ginit[k2];
        }
    return JOPT_OK;
}

/* ---- kernels -------------------------------------------------------------- */

JOPT_API size_t jopt_spec_nkernels(const jopt_spec *s) { return s ? s->nkernels : 0; }

JOPT_API const char *jopt_spec_kernel_name(const jopt_spec *s, size_t i)
{
    RT_API_SCOPE(s);
    if (!s || i >= s->nkernels)
        return NULL;
    return cg_spec_method(s->spec) ? cg_spec_vkernel(s->spec, i)->name
           : i ? cg_spec_named(s->spec, i - 1) : "update";
}

JOPT_API int jopt_spec_kernel(jopt_spec *s, size_t i, jopt_kernel_info *out)
{
    RT_API_SCOPE(s);
    static const char fn[] = "jopt_spec_kernel";
    if (!s)
        return JOPT_EINVAL;
    const cg_kernel *k;
    int rc = check_index(s, fn, i, s->nkernels, "kernel", out);
    if (rc || (rc = traced(s, fn, i, &k)))
        return rc;
    const cg_layout *l = cg_kernel_layout(k);
    const cg_vkernel_sig *vk = cg_spec_method(s->spec) ? cg_spec_vkernel(s->spec, i) : NULL;
    *out = (jopt_kernel_info){.nscalars = l->nscalars, .nresults = l->nresults,
                              .nsums = l->nsums, .nmaxima = l->nmaxima,
                              .npasses = l->npasses, .read = l->read,
                              .written = l->written};
    for (int p = 0; p < l->npass && p < 16; p++) {
        out->pass_read[p] = l->pass_read[p];
        out->pass_written[p] = l->pass_written[p];
    }
    if (vk) {
        out->name = vk->name;
        out->narrays = vk->narrays;
        out->arrays = vk->arrays;
    } else {
        s->update_arrays[0] = "param";
        s->update_arrays[1] = "grad";
        for (int k2 = 0; k2 < l->nstate; k2++) {
            s->update_arrays[2 + k2] = cg_spec_state_name(s->spec, (size_t)l->state[k2]);
            out->scalar |= (uint64_t)(l->kind[k2] == CG_KIND_SCALAR ||
                                      l->kind[k2] == CG_KIND_SCALAR64) << (2 + k2);
            out->axis |= (uint64_t)(l->kind[k2] == CG_KIND_ROW ||
                                    l->kind[k2] == CG_KIND_COL) << (2 + k2);
        }
        for (int k2 = 0; k2 < l->ninput; k2++)
            s->update_arrays[2 + l->nstate + k2] =
                cg_spec_input(s->spec, (size_t)l->input[k2]);
        out->name = jopt_spec_kernel_name(s, i);
        out->narrays = 2 + l->nstate + l->ninput;
        out->arrays = s->update_arrays;
    }
    return JOPT_OK;
}

JOPT_API size_t jopt_spec_ninputs(const jopt_spec *s)
{
    RT_API_SCOPE(s);
    return s ? cg_spec_ninputs(s->spec) : 0;
}

JOPT_API const char *jopt_spec_input(const jopt_spec *s, size_t i)
{
    RT_API_SCOPE(s);
    return s && i < cg_spec_ninputs(s->spec) ? cg_spec_input(s->spec, i) : NULL;
}

JOPT_API int jopt_spec_steps_per_group(const jopt_spec *s)
{
    RT_API_SCOPE(s);
    return s ? cg_spec_group_steps(s->spec) : 0;
}

JOPT_API int jopt_spec_set_variant(jopt_spec *s, int rank, const char *inputs)
{
    RT_API_SCOPE(s);
    static const char fn[] = "jopt_spec_set_variant";
    if (!s)
        return JOPT_EINVAL;
    if (rank < 1 || rank > CG_MAX_RANK)
        return rt_fail(s->ctx, JOPT_EINVAL, "%s: rank %d (give 1 to %d)", fn,
                       rank, CG_MAX_RANK);
    unsigned mask = 0;
    for (const char *c = inputs ? inputs : ""; *c;) {
        while (*c == ' ')
            c++;
        size_t len = strcspn(c, " ");
        if (!len)
            break;
        size_t i = 0;
        while (i < cg_spec_ninputs(s->spec) &&
               (strlen(cg_spec_input(s->spec, i)) != len ||
                strncmp(cg_spec_input(s->spec, i), c, len)))
            i++;
        if (i == cg_spec_ninputs(s->spec))
            return rt_fail(s->ctx, JOPT_EINVAL, "%s: spec '%s' has no input "
                           "'%.*s'", fn, cg_spec_name(s->spec), (int)len, c);
        mask |= 1u << i;
        c += len;
    }
    s->rank = rank;
    s->inputs = mask;
    s->has_shape = 0;
    for (size_t i = 0; i < s->nkernels; i++) { /* traced again on demand */
        cg_kernel_release(s->kernels[i]);
        s->kernels[i] = NULL;
    }
    return JOPT_OK;
}

JOPT_API int jopt_spec_set_shape(jopt_spec *s, int ndim, const int64_t *shape)
{
    RT_API_SCOPE(s);
    static const char fn[] = "jopt_spec_set_shape";
    if (!s)
        return JOPT_EINVAL;
    if (ndim < 1 || ndim > CG_MAX_RANK || !shape)
        return rt_fail(s->ctx, JOPT_EINVAL, "%s: %s", fn, !shape ? "shape is NULL"
                       : "ndim must be 1 to 8");
    int64_t last_first[CG_MAX_RANK];
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 1)
            return rt_fail(s->ctx, JOPT_EINVAL, "%s: size %d is %lld (give 1 or "
                           "more)", fn, d, (long long)shape[d]);
        last_first[d] = shape[ndim - 1 - d];
    }
    char err[CG_ERRLEN];
    int rc = cg_spec_check_shape(s->spec, last_first, ndim, err);
    if (rc)
        return rt_fail(s->ctx, rc, "%s: %s", fn, err);
    if ((rc = jopt_spec_set_variant(s, ndim, NULL)))
        return rc;
    memcpy(s->shape, last_first, sizeof last_first);
    s->has_shape = 1;
    return JOPT_OK;
}

JOPT_API int jopt_spec_validate(jopt_spec *s)
{
    RT_API_SCOPE(s);
    static const char fn[] = "jopt_spec_validate";
    if (!s)
        return JOPT_EINVAL;
    const char *method = cg_spec_method(s->spec);
    if (!method) {
        const cg_kernel *k;
        return traced(s, fn, 0, &k);
    }
    const rt_driver *d = rt_driver_find(method);
    if (!d)
        return rt_fail(s->ctx, JOPT_ESPEC, "%s: spec %s: unknown method '%s' "
                       "(jopt has lbfgs and cg)", fn, cg_spec_path(s->spec), method);
    char err[CG_ERRLEN];
    for (int i = 0; i < d->nkernels; i++) {
        const cg_layout *l = NULL;
        for (size_t j = 0; j < s->nkernels; j++) {
            const cg_kernel *k;
            if (strcmp(cg_spec_vkernel(s->spec, j)->name, d->kernels[i].name))
                continue;
            int rc = traced(s, fn, j, &k);
            if (rc)
                return rc;
            l = cg_kernel_layout(k);
        }
        int rc = rt_driver_kernel_fits(d, i, s->spec, l, err);
        if (rc)
            return rt_fail_cg(s->ctx, rc, fn, err);
    }
    return JOPT_OK;
}

JOPT_API int jopt_spec_emit(jopt_spec *s, const char *kernel, const char *what,
                            const char **text)
{
    RT_API_SCOPE(s);
    static const char fn[] = "jopt_spec_emit";
    if (!s)
        return JOPT_EINVAL;
    if (!what || !text)
        return rt_fail(s->ctx, JOPT_EINVAL, "%s: %s is NULL", fn,
                       !what ? "what" : "text");
    const char *method = cg_spec_method(s->spec);
    if (kernel && !strcmp(kernel, "update"))
        kernel = NULL;
    if (method && !kernel)
        return rt_fail(s->ctx, JOPT_EINVAL, "%s: %s is a closure optimizer "
                       "(method '%s'): it has vector kernels, not an update",
                       fn, cg_spec_name(s->spec), method);
    if (kernel && !(method ? cg_spec_find_vkernel(s->spec, kernel) != NULL
                           : cg_spec_find_named(s->spec, kernel) >= 0))
        return rt_fail(s->ctx, JOPT_EINVAL, "%s: %s has no kernel '%s'", fn,
                       cg_spec_name(s->spec), kernel);
    cg_request req = {.spec = s->spec, .values = s->values,
                      .vkernel = method ? kernel : NULL,
                      .named = method ? NULL : kernel, .rank = s->rank,
                      .shape = s->has_shape ? s->shape : NULL,
                      .inputs = kernel ? 0 : s->inputs};
    if (!method) {
        req.dtype = s->prec.dtype;
        req.grad_dtype = s->prec.grad_dtype;
        req.state_dtype = s->prec.state_dtype;
        req.stochastic = s->prec.stochastic;
    }
    char err[CG_ERRLEN], *t = NULL;
    int rc = cg_emit_text(s->ctx->jit, &req, what, &t, err);
    if (rc)
        return rt_fail(s->ctx, rc, "%s: %s%s%s: %s", fn, cg_spec_name(s->spec),
                       kernel ? ": kernel " : "", kernel ? kernel : "", err);
    cg_free(s->text);
    s->text = t;
    *text = t;
    return JOPT_OK;
}

/* ---- a vector kernel on the caller's arrays -------------------------------- */

struct jopt_kernel {
    jopt_ctx *ctx;
    cg_spec *spec;
    cg_kernel *k;
    cg_batch *batch;
    double *u;
};

const cg_allocator *rt_alloc_of_spec(const jopt_spec *s)
{
    return s ? &s->ctx->alloc : NULL;
}

const cg_allocator *rt_alloc_of_kernel(const jopt_kernel *k)
{
    return k ? &k->ctx->alloc : NULL;
}

JOPT_API int jopt_kernel_new(jopt_ctx *ctx, const char *spec, const char *name,
                             jopt_kernel **out)
{
    RT_API_SCOPE(ctx);
    static const char fn[] = "jopt_kernel_new";
    if (!ctx)
        return JOPT_EINVAL;
    if (!spec || !name || !out)
        return rt_fail(ctx, JOPT_EINVAL, "%s: %s is NULL", fn,
                       !spec ? "spec" : !name ? "name" : "out");
    char err[CG_ERRLEN];
    jopt_kernel *k = cg_calloc(1, sizeof *k);
    if (!k)
        return rt_fail(ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    k->ctx = ctx;
    int rc = rt_spec_get(ctx, spec, &k->spec, err);
    if (rc) {
        cg_free(k);
        return rt_fail_cg(ctx, rc, fn, err);
    }
    if (!cg_spec_find_vkernel(k->spec, name)) {
        rc = rt_fail(ctx, JOPT_EINVAL, "%s: spec %s has no vector kernel '%s'",
                     fn, cg_spec_name(k->spec), name);
        goto fail;
    }
    cg_request req = {.spec = k->spec, .vkernel = name,
                      .reference = ctx->engine == JOPT_ENGINE_REFERENCE};
    if ((rc = cg_kernel_get(ctx->jit, &req, &k->k, err))) {
        rt_fail(ctx, rc, "%s: %s: kernel %s: %s", fn, cg_spec_name(k->spec),
                name, err);
        goto fail;
    }
    k->u = cg_calloc((size_t)cg_kernel_layout(k->k)->nuniform + 1, sizeof *k->u);
    if (!k->u || cg_batch_new(&k->batch, err) || rt_ctx_pool(ctx)) {
        rc = rt_fail(ctx, JOPT_ENOMEM, "%s: out of memory", fn);
        goto fail;
    }
    *out = k;
    return JOPT_OK;
fail:
    jopt_kernel_free(k);
    return rc;
}

JOPT_API void jopt_kernel_free(jopt_kernel *k)
{
    RT_API_SCOPE(k);
    if (!k)
        return;
    cg_kernel_release(k->k);
    cg_batch_free(k->batch);
    cg_free(k->u);
    rt_spec_put(k->ctx, k->spec);
    cg_free(k);
}

JOPT_API int jopt_kernel_run(jopt_kernel *k, float *const *arrays, int64_t n,
                             const double *scalars, double *results)
{
    RT_API_SCOPE(k);
    static const char fn[] = "jopt_kernel_run";
    if (!k)
        return JOPT_EINVAL;
    const cg_layout *l = cg_kernel_layout(k->k);
    if (n < 0 || (n > 0 && !arrays) || (l->nscalars && !scalars) ||
        (l->nresults && !results))
        return rt_fail(k->ctx, JOPT_EINVAL, "%s: %s", fn,
                       n < 0 ? "n is negative" : !arrays ? "arrays is NULL"
                       : l->nscalars && !scalars ? "scalars is NULL"
                                                 : "results is NULL");
    if ((uint64_t)n > (uint64_t)(INTPTR_MAX / 8))
        return rt_fail(k->ctx, JOPT_EINVAL, "%s: n %lld is too large", fn,
                       (long long)n);
    for (int a = 0; n > 0 && a < l->narrays; a++) {
        if (!arrays[a])
            return rt_fail(k->ctx, JOPT_EINVAL, "%s: array %d is NULL", fn, a);
        /* the kernel takes each array as noalias: no two may overlap */
        uintptr_t lo = (uintptr_t)arrays[a], hi = lo + (uintptr_t)n * sizeof(float);
        for (int b = 0; b < a; b++) {
            uintptr_t lo2 = (uintptr_t)arrays[b], hi2 = lo2 + (uintptr_t)n * sizeof(float);
            if (lo < hi2 && lo2 < hi)
                return rt_fail(k->ctx, JOPT_EINVAL, "%s: arrays %d and %d "
                               "overlap (no two arrays of a kernel may share "
                               "memory)", fn, b, a);
        }
    }
    char err[CG_ERRLEN];
    int rc = cg_batch_reserve(k->batch, cg_batch_tasks(n, NULL, 0), 1, err);
    if (rc)
        return rt_fail_cg(k->ctx, rc, fn, err);
    cg_part part = {arrays, n};
    cg_call call = {.k = k->k, .parts = &part, .nparts = 1, .values = scalars,
                    .u = k->u, .results = results};
    rt_par par;
    cg_parallel run = rt_ctx_parallel(k->ctx, n, &par);
    if ((rc = cg_batch_run(k->batch, &call, 1, &run, err)))
        return rt_fail_cg(k->ctx, rc, fn, err);
    return JOPT_OK;
}
