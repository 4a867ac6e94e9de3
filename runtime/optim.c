/*
 * optim.c - the optimizer object: construction and validation of groups,
 * hyperparameters read and changed after construction, state inspection.
 * step() and zero_grad() live in step.c.
 *
 *   jopt_optim_new: spec --rt_spec_get (cached per context)--> schema
 *                   defaults + group options --check()--> values per group
 *                   values --cg_kernel_get--> kernels (cached, shared)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "closure.h"
#include "shard.h"

/* ---- buffers: present, aligned, and no two overlapping ------------------ */

typedef struct span {
    uintptr_t lo, hi; /* [lo, hi) in bytes */
    size_t group, index;
    int is_grad;
} span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static void describe(char *buf, size_t len, const span *s)
{
    snprintf(buf, len, "group %zu parameter %zu (%s)", s->group, s->index,
             s->is_grad ? "grad" : "param");
}

int rt_check_buffers(jopt_ctx *ctx, const char *fn, const rt_group *groups,
                     size_t ngroups, size_t skip_g, size_t skip_i, float *grad)
{
    size_t total = 0;
    for (size_t g = 0; g < ngroups; g++)
        total += 2 * groups[g].n;
    span *s = cg_malloc((total + 1) * sizeof *s);
    if (!s)
        return rt_fail(ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    size_t k = 0;
    for (size_t g = 0; g < ngroups; g++) {
        for (size_t i = 0; i < groups[g].n; i++) {
            const rt_param *p = &groups[g].params[i];
            uintptr_t bytes = (uintptr_t)p->n * rt_psize(p);
            uintptr_t gbytes = (uintptr_t)p->n * rt_gsize(p);
            float *gr = g == skip_g && i == skip_i ? grad : p->g;
            if (p->n == 0)
                continue;
            s[k++] = (span){(uintptr_t)p->p, (uintptr_t)p->p + bytes, g, i, 0};
            if (gr)
                s[k++] = (span){(uintptr_t)gr, (uintptr_t)gr + gbytes, g, i, 1};
        }
    }
    qsort(s, k, sizeof *s, cmp_span);
    int rc = JOPT_OK;
    size_t widest = 0;
    for (size_t j = 1; j < k && rc == JOPT_OK; j++) {
        if (s[j].lo < s[widest].hi) {
            const span *a = &s[widest], *b = &s[j];
            char da[96], db[96];
            describe(da, sizeof da, a);
            describe(db, sizeof db, b);
            if (!a->is_grad && !b->is_grad && a->lo == b->lo && a->hi == b->hi &&
                a->group != b->group)
                rc = rt_fail(ctx, JOPT_EINVAL,
                             "%s: some parameters appear in more than one "
                             "parameter group (%s and %s)", fn, da, db);
            else
                rc = rt_fail(ctx, JOPT_EINVAL,
                             "%s: buffers overlap: %s and %s (no two buffers "
                             "of an optimizer may share memory)", fn, da, db);
        }
        if (s[j].hi > s[widest].hi)
            widest = j;
    }
    cg_free(s);
    return rc;
}

int rt_buffer_overlaps(jopt_optim *opt, const char *what, const float *buf, int64_t n,
                       float *const *replaced)
{
    uintptr_t lo = (uintptr_t)buf, hi = lo + (uintptr_t)n * sizeof(float);
    size_t ns = cg_spec_nstate(opt->spec);
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++) {
            rt_param *p = &opt->groups[g].params[i];
            size_t nk = 2 + CG_MAX_INPUTS + (p->state ? ns : 0);
            for (size_t k = 0; k < nk; k++) {
                /* the parameter, its gradient, its inputs, its states (which
                 * jopt_state_get hands out) */
                float *const *at = k == 0 ? &p->p : k == 1 ? &p->g
                                   : k < 2 + CG_MAX_INPUTS ? &p->input[k - 2]
                                   : p->state ? &p->state[k - 2 - CG_MAX_INPUTS] : NULL;
                if (!at || !*at || at == replaced || !n)
                    continue;
                int64_t cnt = k < 2 + CG_MAX_INPUTS ? p->n : p->state_n[k - 2 - CG_MAX_INPUTS];
                if (!cnt) /* an empty buffer overlaps nothing */
                    continue;
                size_t es = k == 0 ? rt_psize(p) : k == 1 ? rt_gsize(p)
                            : k < 2 + CG_MAX_INPUTS ? sizeof(float)
                            : (size_t)cg_dt_size(p->state_dt[k - 2 - CG_MAX_INPUTS]);
                uintptr_t a = (uintptr_t)*at, b = a + (uintptr_t)cnt * es;
                if (a < hi && lo < b)
                    return rt_fail(opt->ctx, JOPT_EINVAL, "%s overlaps group %zu "
                                   "parameter %zu's %s%s (no two buffers of an "
                                   "optimizer may share memory)", what, g, i,
                                   k == 0 ? "param" : k == 1 ? "grad"
                                   : k < 2 + CG_MAX_INPUTS ? "input" : "state ",
                                   k < 2 + CG_MAX_INPUTS ? "" : cg_spec_state_name(
                                       opt->spec, k - 2 - CG_MAX_INPUTS));
            }
        }
    return 0;
}

/* a buffer of rt_inputs_overlap's sweep: whose, and what */
typedef struct ispan {
    uintptr_t lo, hi;
    size_t group, index;
    int what;  /* 0 param, 1 grad, 2 an input, 3 the new input, 4 + s state s */
    int input; /* for an input: its index in the spec */
} ispan;

static int cmp_ispan(const void *a, const void *b)
{
    const ispan *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static void describe_ispan(const jopt_optim *opt, char *buf, size_t len, const ispan *s)
{
    snprintf(buf, len, "group %zu parameter %zu's %s%s%s", s->group, s->index,
             s->what == 0 ? "param" : s->what == 1 ? "grad"
             : s->what < 4 ? "input '" : "state ",
             s->what == 2 || s->what == 3 ? cg_spec_input(opt->spec, (size_t)s->input)
             : s->what >= 4 ? cg_spec_state_name(opt->spec, (size_t)(s->what - 4)) : "",
             s->what == 2 || s->what == 3 ? "'" : "");
}

int rt_inputs_overlap(jopt_optim *opt, const char *fn, int input, float *const *data)
{
    size_t ns = cg_spec_nstate(opt->spec), total = 0;
    for (size_t g = 0; g < opt->ngroups; g++)
        total += opt->groups[g].n * (3 + CG_MAX_INPUTS + ns);
    ispan *s = cg_malloc((total + 1) * sizeof *s);
    if (!s)
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    size_t k = 0, j = 0;
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++, j++) {
            const rt_param *p = &opt->groups[g].params[i];
            if (!p->n)
                continue;
#define ADD(ptr, bytes, w, in) \
    if (ptr) s[k++] = (ispan){(uintptr_t)(ptr), (uintptr_t)(ptr) + (bytes), g, i, w, in}
            ADD(p->p, (uintptr_t)p->n * rt_psize(p), 0, 0);
            ADD(p->g, (uintptr_t)p->n * rt_gsize(p), 1, 0);
            for (int x = 0; x < CG_MAX_INPUTS; x++)
                if (x != input)
                    ADD(p->input[x], (uintptr_t)p->n * sizeof(float), 2, x);
            ADD(data[j], (uintptr_t)p->n * sizeof(float), 3, input);
            for (size_t st = 0; p->state && st < ns; st++)
                if (p->state_n[st])
                    ADD(p->state[st], (uintptr_t)p->state_n[st] *
                        (uintptr_t)cg_dt_size(p->state_dt[st]), 4 + (int)st, 0);
#undef ADD
        }
    qsort(s, k, sizeof *s, cmp_ispan);
    /* each buffer against the one reaching furthest before it: an overlap
     * with any earlier one is an overlap with that one */
    int rc = JOPT_OK;
    for (size_t x = 1, widest = 0; x < k && rc == JOPT_OK; x++) {
        if (s[x].lo < s[widest].hi && (s[x].what == 3 || s[widest].what == 3)) {
            const ispan *a = s[x].what == 3 ? &s[x] : &s[widest];
            const ispan *b = a == &s[x] ? &s[widest] : &s[x];
            char da[160], db[160];
            describe_ispan(opt, da, sizeof da, a);
            describe_ispan(opt, db, sizeof db, b);
            rc = rt_fail(opt->ctx, JOPT_EINVAL, "%s: %s overlaps %s (no two buffers "
                         "of an optimizer may share memory)", fn, da, db);
        }
        if (s[x].hi > s[widest].hi)
            widest = x;
    }
    cg_free(s);
    return rc;
}

static int check_param(jopt_ctx *ctx, const char *fn, size_t g, size_t i,
                       const jopt_param *p, const rt_prec *prec)
{
    if (p->numel < 0)
        return rt_fail(ctx, JOPT_EINVAL, "%s: group %zu parameter %zu: numel is "
                       "negative (%lld)", fn, g, i, (long long)p->numel);
    if (p->numel > 0 && !p->param)
        return rt_fail(ctx, JOPT_EINVAL, "%s: group %zu parameter %zu: param "
                       "is NULL", fn, g, i);
    if ((uintptr_t)p->param % (size_t)cg_dt_size(prec->dtype) ||
        (uintptr_t)p->grad % (size_t)cg_dt_size(prec->grad_dtype))
        return rt_fail(ctx, JOPT_EINVAL, "%s: group %zu parameter %zu: buffer "
                       "is not aligned to %d bytes", fn, g, i,
                       (uintptr_t)p->param % (size_t)cg_dt_size(prec->dtype)
                       ? cg_dt_size(prec->dtype) : cg_dt_size(prec->grad_dtype));
    if ((uint64_t)p->numel > (uint64_t)(INTPTR_MAX / 8))
        return rt_fail(ctx, JOPT_EINVAL, "%s: group %zu parameter %zu: numel "
                       "%lld is too large", fn, g, i, (long long)p->numel);
    return JOPT_OK;
}

/* ---- kernels for a value vector ----------------------------------------- */

/* Checks `values` with the spec. */
int rt_check_values(jopt_optim *opt, const char *where, const double *values)
{
    /* what the options parser guarantees, for values that come from
     * elsewhere (jopt_option_set, a checkpoint) */
    char err[CG_ERRLEN];
    int rc = JOPT_OK;
    /* booleans and choices first: the spec sees them as Lua values; then
     * the spec's check, so that a NaN lr gets torch's message; then the
     * numbers must be finite (unless the spec lists them as `infinite`),
     * where torch would take an inf lr and fill the parameters with NaN */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < cg_spec_nhyper(opt->spec) && rc == JOPT_OK; i++) {
            const cg_hyper *h = cg_spec_hyper(opt->spec, i);
            if ((h->kind == CG_HYPER_NUMBER) != pass)
                continue;
            for (int k = 0; k < h->len && rc == JOPT_OK; k++)
                rc = cg_hyper_check(h, values[h->offset + k], where, err);
        }
        if (rc)
            return rt_fail(opt->ctx, rc, "%s", err);
        if (pass == 0 && (rc = cg_spec_check(opt->spec, values, err)))
            return rt_fail_cg(opt->ctx, rc, where, err);
    }
    return JOPT_OK;
}

/* ---- step()'s work space ------------------------------------------------ */

int rt_reserve_uniforms(jopt_optim *opt, size_t need)
{
    if (need <= opt->ucap)
        return JOPT_OK;
    size_t np = 0;
    for (size_t g = 0; g < opt->ngroups; g++)
        np += opt->groups[g].n;
    double *buf = cg_calloc(np * need + 1, sizeof *buf);
    if (!buf)
        return JOPT_ENOMEM;
    size_t k = 0;
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++)
            opt->groups[g].params[i].u = buf + need * k++;
    cg_free(opt->ubuf);
    opt->ubuf = buf;
    opt->ucap = need;
    return JOPT_OK;
}

/* room for every parameter cut into tasks, its call and its uniforms */
static int plan_space(jopt_optim *opt)
{
    size_t nt = 0, np = 0, need = 0;
    char err[CG_ERRLEN];
    for (size_t g = 0; g < opt->ngroups; g++) {
        const rt_group *gr = &opt->groups[g];
        size_t u = rt_kset_uniforms(&gr->ks);
        need = u > need ? u : need;
        np += gr->n;
        for (size_t i = 0; i < gr->n; i++) {
            const rt_param *p = &gr->params[i];
            nt += cg_batch_tasks(p->n, p->shape, p->rank);
        }
    }
    opt->calls = cg_calloc(np + 1, sizeof *opt->calls);
    opt->parts = cg_calloc(np + 1, sizeof *opt->parts);
    if (!opt->calls || !opt->parts || cg_batch_new(&opt->batch, err) ||
        cg_batch_reserve(opt->batch, nt, np, err) || rt_reserve_uniforms(opt, need))
        return JOPT_ENOMEM;
    return JOPT_OK;
}

/* ---- construction ------------------------------------------------------- */

const char *const rt_key_names[RT_NKEYS] = {
    "initial_lr", "max_lr", "min_lr", "max_momentum", "base_momentum"};

/* Where a large state array starts.  A fused loop reads a cache line of
 * each of its arrays at nearly the same time, so whether those lines share
 * DRAM banks decides its speed.  glibc puts same-sized allocations a page
 * apart beyond their size (a parameter, its gradient, then the states
 * made at the first step), and on this machine that layout ran Adam's step
 * on one 16M tensor at 0.6x the speed of the same arrays spread apart
 * (bench/RESULTS.md, "State arrays placed apart").  So state k starts (k + 1) * 20 KiB past its parameter, modulo
 * 256 KiB, off the one-page strides glibc's layout puts between them (steps
 * of 12 to 28 KiB measured alike; 12 states fit before the phases wrap).
 * Below 4 MiB (the arrays of a step that stays in cache) the 256 KiB of
 * slack is not worth asking for. */
#define RT_STAGGER_MIN ((size_t)4 << 20)
#define RT_STAGGER_STEP ((size_t)20 << 10)
#define RT_STAGGER_PERIOD ((size_t)256 << 10)

float *rt_state_alloc(const rt_param *p, size_t k, size_t bytes)
{
    bytes = bytes ? (bytes + 63) & ~(size_t)63 : 64;
    if (bytes < RT_STAGGER_MIN || !p->p)
        return cg_aligned_alloc(64, bytes);
    uintptr_t phase = (uintptr_t)p->p + (uintptr_t)(k + 1) * RT_STAGGER_STEP;
    return cg_aligned_alloc_at(64, bytes, RT_STAGGER_PERIOD, phase);
}

float *rt_spare_take(rt_param *p, size_t k, int64_t bytes)
{
    for (size_t j = 2 * k; j < 2 * k + 2; j++)
        if (p->spare[j] && p->spare_n[j] == bytes) {
            float *buf = p->spare[j];
            p->spare[j] = NULL;
            return buf;
        }
    return NULL;
}

void rt_spare_keep(jopt_optim *opt, rt_param *p, size_t k, float *buf, int64_t bytes)
{
    for (size_t j = 2 * k; j < 2 * k + 2; j++)
        if (!p->spare[j]) {
            p->spare[j] = buf;
            p->spare_n[j] = bytes;
            return;
        }
    /* a state's size changes only with its kind (an array or a scalar)
     * or its element type, so two slots usually suffice; a third size goes to the optimizer's list, or,
     * out of memory, stays allocated until exit rather than freed under a
     * pointer the caller may hold */
    float **r = cg_realloc(opt->retired, (opt->nretired + 1) * sizeof *r);
    if (r) {
        opt->retired = r;
        r[opt->nretired++] = buf;
    }
}

static void free_group(const jopt_optim *opt, rt_group *gr)
{
    size_t ns = opt->spec ? cg_spec_nstate(opt->spec) : 0;
    for (size_t i = 0; i < gr->n; i++) {
        for (size_t s = 0; gr->params[i].state && s < ns; s++)
            rt_state_free(opt, gr->params[i].state[s]);
        for (size_t s = 0; gr->params[i].spare && s < 2 * ns; s++)
            cg_free(gr->params[i].spare[s]);
        cg_free(gr->params[i].state);
        cg_free(gr->params[i].state_n);
        cg_free(gr->params[i].spare);
        cg_free(gr->params[i].spare_n);
        cg_free(gr->params[i].state_dt);
        cg_free(gr->params[i].work);
    }
    cg_free(gr->params);
    cg_free(gr->values);
    cg_free(gr->runtime);
    cg_free(gr->keys);
    cg_free(gr->gstate);
    rt_kset_free(&gr->ks);
}

static void free_groups(jopt_optim *opt)
{
    for (size_t g = 0; g < opt->ngroups; g++)
        free_group(opt, &opt->groups[g]);
    cg_free(opt->groups);
}

JOPT_API void jopt_optim_free(jopt_optim *opt)
{
    RT_API_SCOPE(opt);
    if (!opt || rt_free_deferred(opt)) /* from its own closure: the step frees it */
        return;
    rt_gpu_drain(opt); /* nothing of it may still run when it goes */
    free_groups(opt);
    rt_gopt_free(opt);
    cg_free(opt->defaults);
    cg_free(opt->ubuf);
    cg_batch_free(opt->batch);
    cg_free(opt->calls);
    cg_free(opt->parts);
    rt_closure_free(opt->closure);
    for (size_t i = 0; i < opt->nretired; i++)
        cg_free(opt->retired[i]);
    cg_free(opt->retired);
    rt_shard_free(opt->shard);
    if (opt->spec)
        rt_spec_put(opt->ctx, opt->spec);
    cg_free(opt);
}

/* The group's states start at their spec values (NaN: not kept). */
static int init_group_state(jopt_optim *opt, rt_group *gr, const char *where)
{
    size_t ns = cg_spec_nstate(opt->spec);
    for (size_t k = 0; k < ns; k++)
        gr->gstate[k] = NAN;
    (void)where;
    /* none when the spec refuses every tensor's shape so far (Muon's, before
     * jopt_set_shape): the step that builds the group's first kernel sets
     * them then */
    if (!gr->ks.n)
        return JOPT_OK;
    const cg_layout *l = cg_kernel_layout(gr->ks.e[0].k);
    for (int s = 0; s < l->ngstate; s++)
        gr->gstate[l->gstate[s]] = l->ginit[s];
    return JOPT_OK;
}

static int check_prec(jopt_optim *opt, const char *where, const rt_group *gr,
                      const rt_prec *prec);

/* Builds group `g` from the user's description: its parameters, its
 * values (the optimizer's defaults under its own options), checked, and
 * its kernels.  On failure the caller frees what was built (free_group). */
static int group_init(jopt_optim *opt, const char *fn, size_t g,
                      const jopt_group *ug, rt_group *gr)
{
    jopt_ctx *ctx = opt->ctx;
    size_t nv = cg_spec_nvalues(opt->spec), ns = cg_spec_nstate(opt->spec);
    char err[CG_ERRLEN], where[96];
    int rc;
    if (ug->nparams && !ug->params)
        return rt_fail(ctx, JOPT_EINVAL, "%s: group %zu: params is NULL", fn, g);
    if (ug->nparams > (SIZE_MAX >> 8) / sizeof(rt_param))
        return rt_fail(ctx, JOPT_EINVAL, "%s: group %zu: nparams %zu is too "
                       "large", fn, g, ug->nparams);
    gr->params = cg_calloc(ug->nparams + 1, sizeof *gr->params);
    gr->values = cg_malloc((nv + 1) * sizeof(double));
    gr->runtime = cg_calloc(cg_spec_nhyper(opt->spec) + 1, 1);
    gr->keys = cg_malloc(RT_NKEYS * sizeof(double));
    gr->gstate = cg_malloc((ns + 1) * sizeof(double));
    if (!gr->params || !gr->values || !gr->runtime || !gr->keys || !gr->gstate)
        return rt_fail(ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    for (size_t k = 0; k < RT_NKEYS; k++)
        gr->keys[k] = NAN; /* no scheduler has set them */
    snprintf(where, sizeof where, "%s: group %zu", fn, g);
    gr->prec = opt->prec_defaults;
    if ((rc = rt_prec_parse(ctx, where, ug->options, &gr->prec, NULL)))
        return rc;
    if ((rc = check_prec(opt, where, NULL, &gr->prec)))
        return rc;
    for (size_t i = 0; i < ug->nparams; i++) {
        const jopt_param *p = &ug->params[i];
        if ((rc = check_param(ctx, fn, g, i, p, &gr->prec)))
            return rc;
        rt_param *rp = &gr->params[i];
        *rp = (rt_param){.p = p->param, .g = p->grad, .n = p->numel, .rank = 1,
                         .dtype = gr->prec.dtype, .grad_dtype = gr->prec.grad_dtype};
        rp->shape[0] = p->numel;
        gr->n = i + 1;
        if (!(rp->state = cg_calloc(ns + 1, sizeof(float *))) ||
            !(rp->state_n = cg_calloc(ns + 1, sizeof(int64_t))) ||
            !(rp->spare = cg_calloc(2 * ns + 1, sizeof(float *))) ||
            !(rp->spare_n = cg_calloc(2 * ns + 1, sizeof(int64_t))) ||
            !(rp->state_dt = cg_calloc(ns + 1, 1)))
            return rt_fail(ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    }
    memcpy(gr->values, opt->defaults, nv * sizeof(double));
    if ((rc = cg_options_parse_skip(opt->spec, ug->options, gr->values, cg_prec_options, err)))
        return rt_fail(ctx, rc, "%s: group %zu: %s", fn, g, err);
    if ((rc = rt_check_values(opt, where, gr->values)))
        return rc;
    if (cg_spec_method(opt->spec)) /* vector kernels: closure.c */
        return JOPT_OK;
    rt_kset empty = {NULL, 0, 0, 0, 0};
    if ((rc = rt_kset_rebuild(opt, gr, where, gr->values, gr->runtime, &gr->prec, &empty,
                              0, &gr->ks)))
        return rc;
    return init_group_state(opt, gr, where);
}

/* a spec with a method: the driver that runs it */
static int closure_init(jopt_optim *opt, const char *fn)
{
    const char *method = cg_spec_method(opt->spec);
    const rt_driver *d = rt_driver_find(method);
    if (!d)
        return rt_fail(opt->ctx, JOPT_ESPEC, "%s: spec %s: unknown method '%s' "
                       "(jopt has lbfgs and cg)", fn, cg_spec_path(opt->spec),
                       method);
    return rt_closure_new(opt, d, &opt->closure);
}

JOPT_API int jopt_optim_new(jopt_ctx *ctx, const char *spec,
                            const jopt_group *groups, size_t ngroups,
                            const char *defaults, jopt_optim **out)
{
    RT_API_SCOPE(ctx);
    static const char fn[] = "jopt_optim_new";
    if (!ctx)
        return JOPT_EINVAL;
    if (!spec || !out)
        return rt_fail(ctx, JOPT_EINVAL, "%s: %s is NULL", fn, !spec ? "spec" : "out");
    if (ngroups == 0)
        return rt_fail(ctx, JOPT_EINVAL, "%s: optimizer got an empty parameter "
                       "list", fn);
    if (!groups)
        return rt_fail(ctx, JOPT_EINVAL, "%s: groups is NULL (ngroups is %zu)",
                       fn, ngroups);
    char err[CG_ERRLEN];
    jopt_optim *opt = cg_calloc(1, sizeof *opt);
    if (!opt)
        return rt_fail(ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    opt->ctx = ctx;
    opt->engine = ctx->engine; /* fixed for the optimizer's life */
    int rc = rt_spec_get(ctx, spec, &opt->spec, err);
    if (rc) {
        rt_fail_cg(ctx, rc, fn, err);
        goto fail;
    }
    if (ctx->gpu && (rc = rt_gopt_new(opt, fn))) /* kernels for the device */
        goto fail;
    size_t nv = cg_spec_nvalues(opt->spec);
    opt->defaults = cg_malloc((nv + 1) * sizeof(double));
    opt->groups = cg_calloc(ngroups, sizeof *opt->groups);
    if (!opt->defaults || !opt->groups) {
        rc = rt_fail(ctx, JOPT_ENOMEM, "%s: out of memory", fn);
        goto fail;
    }
    memcpy(opt->defaults, cg_spec_defaults(opt->spec), nv * sizeof(double));
    opt->grad_scale = 1.0;
    if ((rc = rt_prec_parse(ctx, "jopt_optim_new: defaults", defaults,
                            &opt->prec_defaults, NULL)))
        goto fail;
    if ((rc = cg_options_parse_skip(opt->spec, defaults, opt->defaults, cg_prec_options,
                                    err))) {
        rt_fail(ctx, rc, "%s: defaults: %s", fn, err);
        goto fail;
    }
    for (size_t g = 0; g < ngroups; g++) {
        opt->ngroups = g + 1;
        if ((rc = group_init(opt, fn, g, &groups[g], &opt->groups[g])))
            goto fail;
    }
    if ((rc = rt_check_buffers(ctx, fn, opt->groups, opt->ngroups, SIZE_MAX, 0, NULL)))
        goto fail;
    if (opt->gpu && (rc = rt_gpu_check_groups(opt, fn, 0)))
        goto fail;
    if (plan_space(opt) || rt_ctx_pool(ctx)) {
        rc = rt_fail(ctx, JOPT_ENOMEM, "%s: out of memory", fn);
        goto fail;
    }
    if (cg_spec_method(opt->spec) && (rc = closure_init(opt, fn)))
        goto fail;
    *out = opt;
    return JOPT_OK;
fail:
    jopt_optim_free(opt);
    return rc;
}

JOPT_API int jopt_add_param_group(jopt_optim *opt, const jopt_group *group)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_add_param_group";
    if (!opt)
        return JOPT_EINVAL;
    if (!group)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: group is NULL", fn);
    if (rt_busy(opt, fn))
        return JOPT_EINVAL;
    if (opt->closure)
        return rt_closure_one_group(opt->closure);
    if (opt->shard)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: a sharded optimizer's tensors "
                       "are spread over its processes at construction: build it "
                       "with every group", fn);
    size_t n = opt->ngroups;
    rt_group *groups = cg_calloc(n + 1, sizeof *groups);
    if (!groups)
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    memcpy(groups, opt->groups, n * sizeof *groups);
    int rc = group_init(opt, fn, n, group, &groups[n]);
    if (rc == JOPT_OK)
        rc = rt_check_buffers(opt->ctx, fn, groups, n + 1, SIZE_MAX, 0, NULL);
    for (size_t i = 0; opt->gpu && rc == JOPT_OK && i < groups[n].n; i++) {
        const rt_param *p = &groups[n].params[i];
        if (p->n && !(rc = rt_gpu_check_buffer(opt, fn, p->p, n, i, "param")))
            rc = rt_gpu_check_buffer(opt, fn, p->g, n, i, "grad");
    }
    if (rc) {
        free_group(opt, &groups[n]);
        cg_free(groups);
        return rc;
    }
    /* step()'s space for the bigger optimizer, or everything as it was */
    rt_group *old_groups = opt->groups;
    cg_batch *old_batch = opt->batch;
    cg_call *old_calls = opt->calls;
    cg_part *old_parts = opt->parts;
    double *old_ubuf = opt->ubuf;
    size_t old_ucap = opt->ucap;
    opt->groups = groups;
    opt->ngroups = n + 1;
    opt->batch = NULL;
    opt->calls = NULL;
    opt->parts = NULL;
    opt->ubuf = NULL;
    opt->ucap = 0;
    if (plan_space(opt)) {
        cg_batch_free(opt->batch);
        cg_free(opt->calls);
        cg_free(opt->parts);
        cg_free(opt->ubuf);
        free_group(opt, &groups[n]);
        cg_free(groups);
        opt->groups = old_groups;
        opt->ngroups = n;
        opt->batch = old_batch;
        opt->calls = old_calls;
        opt->parts = old_parts;
        opt->ubuf = old_ubuf;
        opt->ucap = old_ucap;
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    }
    cg_free(old_groups);
    cg_batch_free(old_batch);
    cg_free(old_calls);
    cg_free(old_parts);
    cg_free(old_ubuf);
    return JOPT_OK;
}

/* ---- groups, options and state after construction ----------------------- */

static int check_group(const jopt_optim *opt, const char *fn, size_t group)
{
    if (group >= opt->ngroups)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: group %zu does not exist "
                       "(the optimizer has %zu)", fn, group, opt->ngroups);
    return JOPT_OK;
}

static int check_index(const jopt_optim *opt, const char *fn, size_t group,
                       size_t index)
{
    int rc = check_group(opt, fn, group);
    if (rc == JOPT_OK && index >= opt->groups[group].n)
        rc = rt_fail(opt->ctx, JOPT_EINVAL, "%s: group %zu has no parameter "
                     "%zu (it has %zu)", fn, group, index, opt->groups[group].n);
    return rc;
}

JOPT_API size_t jopt_group_count(const jopt_optim *opt)
{
    RT_API_SCOPE(opt);
    return opt ? opt->ngroups : 0;
}

JOPT_API int jopt_option_get(const jopt_optim *opt, size_t group,
                             const char *name, double *value)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_option_get";
    if (!opt)
        return JOPT_EINVAL;
    if (!name || !value)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: %s is NULL", fn,
                       !name ? "name" : "value");
    int rc = check_group(opt, fn, group);
    if (rc)
        return rc;
    char err[CG_ERRLEN];
    if (rt_prec_get(&opt->groups[group].prec, name, value) == 0)
        return JOPT_OK;
    const cg_hyper *h;
    int off = cg_option_offset(opt->spec, name, &h, err);
    if (off < 0)
        return rt_fail_cg(opt->ctx, JOPT_EINVAL, fn, err);
    *value = opt->groups[group].values[off];
    return JOPT_OK;
}

/* A group's tensors take the element types of new precision options
 * (those `given`: dtype sets both, grad_dtype the gradients'); returns
 * the old ones, for undo_types. */
static uint8_t *retype(rt_group *gr, const rt_prec *prec, unsigned given)
{
    uint8_t *old = cg_malloc(2 * gr->n + 1);
    if (!old)
        return NULL;
    for (size_t i = 0; i < gr->n; i++) {
        rt_param *p = &gr->params[i];
        old[2 * i] = p->dtype;
        old[2 * i + 1] = p->grad_dtype;
        if (given & RT_GIVEN_DTYPE)
            p->dtype = prec->dtype;
        if (given & (RT_GIVEN_DTYPE | RT_GIVEN_GRAD_DTYPE))
            p->grad_dtype = prec->grad_dtype;
    }
    return old;
}

static void undo_types(rt_group *gr, const uint8_t *old)
{
    for (size_t i = 0; i < gr->n; i++) {
        gr->params[i].dtype = old[2 * i];
        gr->params[i].grad_dtype = old[2 * i + 1];
    }
}

static int has_state(const jopt_optim *opt, const rt_group *gr)
{
    for (size_t i = 0; i < gr->n; i++)
        for (size_t k = 0; k < cg_spec_nstate(opt->spec); k++)
            if (gr->params[i].state[k])
                return 1;
    return 0;
}

/* Whether a group may take precision options `prec`. */
static int check_prec(jopt_optim *opt, const char *where, const rt_group *gr,
                      const rt_prec *prec)
{
    if (opt->closure || cg_spec_method(opt->spec)) {
        if (prec->dtype || prec->grad_dtype || prec->state_dtype || prec->stochastic)
            return rt_fail(opt->ctx, JOPT_EINVAL, "%s: spec '%s' is a closure "
                           "optimizer: it takes float32 parameters, gradients and "
                           "state only", where, cg_spec_name(opt->spec));
    } else if (gr && prec->state_dtype != gr->prec.state_dtype && has_state(opt, gr)) {
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: state_dtype cannot change from %s "
                       "to %s: the group's parameters have state already", where,
                       cg_dt_name(gr->prec.state_dtype), cg_dt_name(prec->state_dtype));
    }
    return JOPT_OK;
}

/* Installs `values` (and precision options `prec`, those `given`; NULL:
 * unchanged) into the group if the spec accepts them, with hyper
 * `make_runtime` (or -1) passed per step from now on.  A value the spec
 * lets pass per step stops being folded the first time it changes, so a
 * scheduled lr costs one compile, not one per step; a change that only
 * touches such values needs no kernel at all. */
static int set_values(jopt_optim *opt, const char *fn, size_t group,
                      const double *values, int make_runtime,
                      const rt_prec *prec, unsigned given)
{
    rt_group *gr = &opt->groups[group];
    size_t nh = cg_spec_nhyper(opt->spec);
    char where[96];
    snprintf(where, sizeof where, "%s: group %zu", fn, group);
    rt_prec np = prec ? *prec : gr->prec;
    int rc = rt_busy(opt, fn);
    if (rc == JOPT_OK)
        rc = rt_check_values(opt, where, values);
    if (rc == JOPT_OK)
        rc = check_prec(opt, where, gr, &np);
    if (rc)
        return rc;
    uint8_t *runtime = cg_malloc(nh + 1), *types = retype(gr, &np, given);
    if (!runtime || !types) {
        if (types)
            undo_types(gr, types);
        cg_free(runtime);
        cg_free(types);
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    }
    int rebuild = given != 0 || memcmp(&np, &gr->prec, sizeof np) != 0;
    for (size_t i = 0; i < nh; i++) {
        const cg_hyper *h = cg_spec_hyper(opt->spec, i);
        int changed = memcmp(values + h->offset, gr->values + h->offset,
                             (size_t)h->len * sizeof(double)) != 0;
        runtime[i] = gr->runtime[i] ||
                     (h->runtime_ok && (changed || (int)i == make_runtime));
        rebuild |= runtime[i] != gr->runtime[i] || (changed && !runtime[i]);
    }
    if (given & (RT_GIVEN_DTYPE | RT_GIVEN_GRAD_DTYPE))
        rc = rt_check_buffers(opt->ctx, fn, opt->groups, opt->ngroups, SIZE_MAX, 0, NULL);
    if (rc == JOPT_OK && rebuild && !opt->closure) {
        rt_kset ks;
        rc = rt_kset_rebuild(opt, gr, where, values, runtime, &np, &gr->ks, 1, &ks);
        if (rc == JOPT_OK && rt_reserve_uniforms(opt, rt_kset_uniforms(&ks))) {
            rt_kset_free(&ks);
            rc = rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
        }
        if (rc == JOPT_OK) {
            rt_kset_free(&gr->ks);
            gr->ks = ks;
        }
    }
    if (rc) {
        undo_types(gr, types);
    } else {
        memcpy(gr->values, values, cg_spec_nvalues(opt->spec) * sizeof(double));
        memcpy(gr->runtime, runtime, nh);
        gr->prec = np;
    }
    cg_free(runtime);
    cg_free(types);
    return rc;
}

static double *copy_values(jopt_optim *opt, size_t group)
{
    size_t nv = cg_spec_nvalues(opt->spec);
    double *v = cg_malloc((nv + 1) * sizeof *v);
    if (v)
        memcpy(v, opt->groups[group].values, nv * sizeof *v);
    return v;
}

JOPT_API int jopt_option_set(jopt_optim *opt, size_t group, const char *name,
                             double value)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_option_set";
    if (!opt)
        return JOPT_EINVAL;
    if (!name)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: name is NULL", fn);
    int rc = check_group(opt, fn, group);
    if (rc)
        return rc;
    char err[CG_ERRLEN];
    rt_prec prec = opt->groups[group].prec;
    unsigned given;
    if ((rc = rt_prec_set(opt->ctx, fn, name, value, &prec, &given)) <= 0) {
        if (rc == JOPT_OK) /* a precision option: the values stay */
            rc = set_values(opt, fn, group, opt->groups[group].values, -1, &prec, given);
        return rc;
    }
    const cg_hyper *h;
    int off = cg_option_offset(opt->spec, name, &h, err);
    if (off < 0)
        return rt_fail_cg(opt->ctx, JOPT_EINVAL, fn, err);
    /* a number is checked with the spec's check() (set_values) */
    if (h->kind != CG_HYPER_NUMBER && (rc = cg_hyper_check(h, value, fn, err)))
        return rt_fail(opt->ctx, rc, "%s", err);
    double *v = copy_values(opt, group);
    if (!v)
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    v[off] = value;
    rc = set_values(opt, fn, group, v, -1, NULL, 0);
    cg_free(v);
    return rc;
}

JOPT_API int jopt_options_set(jopt_optim *opt, size_t group,
                              const char *options)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_options_set";
    if (!opt)
        return JOPT_EINVAL;
    int rc = check_group(opt, fn, group);
    if (rc)
        return rc;
    double *v = copy_values(opt, group);
    if (!v)
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    char err[CG_ERRLEN], where[64];
    snprintf(where, sizeof where, "%s: group %zu", fn, group);
    rt_prec prec = opt->groups[group].prec;
    unsigned given;
    rc = rt_prec_parse(opt->ctx, where, options, &prec, &given);
    if (rc == JOPT_OK && (rc = cg_options_parse_skip(opt->spec, options, v, cg_prec_options,
                                                     err)))
        rt_fail_cg(opt->ctx, rc, fn, err);
    else if (rc == JOPT_OK)
        rc = set_values(opt, fn, group, v, -1, &prec, given);
    cg_free(v);
    return rc;
}

JOPT_API int jopt_option_runtime(jopt_optim *opt, size_t group,
                                 const char *name)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_option_runtime";
    if (!opt)
        return JOPT_EINVAL;
    if (!name)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: name is NULL", fn);
    int rc = check_group(opt, fn, group);
    if (rc)
        return rc;
    const cg_hyper *h = cg_spec_find_hyper(opt->spec, name);
    if (!h) {
        char err[CG_ERRLEN];
        if (cg_option_offset(opt->spec, name, &h, err) >= 0) /* "betas[0]" */
            return rt_fail(opt->ctx, JOPT_EINVAL, "%s: '%s' is an element of '%s': "
                           "an option is passed per step whole", fn, name, h->name);
        return rt_fail_cg(opt->ctx, JOPT_EINVAL, fn, err);
    }
    if (!h->runtime_ok)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: spec '%s' does not list '%s' "
                       "in its runtime hyperparameters (it may steer the "
                       "spec's code, so it is folded into the kernel)", fn,
                       cg_spec_name(opt->spec), name);
    double *v = copy_values(opt, group);
    if (!v)
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    rc = set_values(opt, fn, group, v, (int)(h - cg_spec_hyper(opt->spec, 0)), NULL, 0);
    cg_free(v);
    return rc;
}

JOPT_API int jopt_option_is_runtime(const jopt_optim *opt, size_t group,
                                    const char *name)
{
    RT_API_SCOPE(opt);
    if (!opt || group >= opt->ngroups || !name)
        return 0;
    const cg_hyper *h = cg_spec_find_hyper(opt->spec, name);
    return h ? opt->groups[group].runtime[h - cg_spec_hyper(opt->spec, 0)] : 0;
}

JOPT_API int jopt_set_shape(jopt_optim *opt, size_t group, size_t index,
                            int ndim, const int64_t *shape)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_set_shape";
    if (!opt || rt_busy(opt, fn))
        return JOPT_EINVAL;
    int rc = check_index(opt, fn, group, index);
    if (rc)
        return rc;
    rt_param *p = &opt->groups[group].params[index];
    if (ndim < 1 || ndim > CG_MAX_RANK || !shape)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: group %zu parameter %zu: "
                       "%s", fn, group, index, !shape ? "shape is NULL"
                       : "ndim must be 1 to 8");
    int64_t prod = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return rt_fail(opt->ctx, JOPT_EINVAL, "%s: group %zu parameter %zu: "
                           "size %d is negative (%lld)", fn, group, index, d,
                           (long long)shape[d]);
        prod = shape[d] && prod > INT64_MAX / shape[d] ? -1 : prod * shape[d];
    }
    if (prod != p->n)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: group %zu parameter %zu: a "
                       "shape of %lld elements for a parameter of %lld", fn,
                       group, index, (long long)prod, (long long)p->n);
    for (size_t k = 0; k < cg_spec_nstate(opt->spec); k++)
        if (p->state[k])
            return rt_fail(opt->ctx, JOPT_EINVAL, "%s: group %zu parameter %zu "
                           "has stepped already: its state is made for its "
                           "old shape", fn, group, index);
    /* room for the shape's tasks, before anything changes */
    rt_param old = *p;
    p->rank = ndim;
    for (int d = 0; d < ndim; d++) /* kept last first, as codegen reads it */
        p->shape[d] = shape[ndim - 1 - d];
    char err[CG_ERRLEN];
    if ((rc = cg_spec_check_shape(opt->spec, p->shape, ndim, err))) {
        *p = old; /* a shape the spec refuses (Muon: not 2-D) */
        return rt_fail(opt->ctx, rc, "%s: group %zu parameter %zu: %s", fn,
                       group, index, err);
    }
    p->shape_ok = cg_spec_has_shape_check(opt->spec);
    size_t nt = 0, np = 0;
    for (size_t g = 0; g < opt->ngroups; g++)
        for (size_t i = 0; i < opt->groups[g].n; i++, np++) {
            const rt_param *q = &opt->groups[g].params[i];
            nt += cg_batch_tasks(q->n, q->shape, q->rank);
        }
    if ((rc = cg_batch_reserve(opt->batch, nt, np, err))) {
        *p = old;
        return rt_fail_cg(opt->ctx, rc, fn, err);
    }
    return JOPT_OK;
}

JOPT_API int jopt_set_grad(jopt_optim *opt, size_t group, size_t index,
                           float *grad)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_set_grad";
    if (!opt)
        return JOPT_EINVAL;
    int rc = check_index(opt, fn, group, index);
    if (rc)
        return rc;
    rt_group *gr = &opt->groups[group];
    size_t align = rt_gsize(&gr->params[index]);
    if ((uintptr_t)grad % align)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: group %zu parameter %zu: "
                       "grad is not aligned to %zu bytes", fn, group, index, align);
    if ((rc = rt_check_buffers(opt->ctx, fn, opt->groups, opt->ngroups, group,
                            index, grad)))
        return rc;
    if (opt->gpu && gr->params[index].n &&
        (rc = rt_gpu_check_buffer(opt, fn, grad, group, index, "grad")))
        return rc;
    gr->params[index].g = grad;
    return JOPT_OK;
}

JOPT_API int jopt_state_get(const jopt_optim *opt, size_t group, size_t index,
                            const char *name, const float **data,
                            int64_t *step)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_state_get";
    if (!opt)
        return JOPT_EINVAL;
    if (!name || !data)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: %s is NULL", fn,
                       !name ? "name" : "data");
    int rc = check_index(opt, fn, group, index);
    if (rc)
        return rc;
    if (opt->closure)
        return rt_closure_state_get(opt->closure, index, name, data, NULL, step);
    const rt_group *gr = &opt->groups[group];
    for (size_t s = 0; s < cg_spec_nstate(opt->spec); s++) {
        if (strcmp(cg_spec_state_name(opt->spec, s), name) == 0) {
            *data = gr->params[index].state[s];
            if (step)
                *step = gr->params[index].step;
            return JOPT_OK;
        }
    }
    return rt_fail(opt->ctx, JOPT_EINVAL, "%s: spec '%s' has no state '%s'", fn,
                   cg_spec_name(opt->spec), name);
}

JOPT_API int jopt_state_numel(const jopt_optim *opt, size_t group,
                              size_t index, const char *name, int64_t *numel)
{
    RT_API_SCOPE(opt);
    if (!opt)
        return JOPT_EINVAL;
    if (!numel)
        return rt_fail(opt->ctx, JOPT_EINVAL, "jopt_state_numel: numel is NULL");
    const float *data;
    int rc = jopt_state_get(opt, group, index, name, &data, NULL);
    if (rc)
        return rc;
    if (opt->closure)
        return rt_closure_state_get(opt->closure, index, name, &data, numel, NULL);
    const rt_param *p = &opt->groups[group].params[index];
    size_t k = 0;
    while (strcmp(cg_spec_state_name(opt->spec, k), name) != 0)
        k++; /* found: jopt_state_get accepted the name */
    *numel = !data ? 0 : p->state_n[k];
    return JOPT_OK;
}

JOPT_API int jopt_state_scalar(const jopt_optim *opt, size_t group,
                               size_t index, const char *name, double *value)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_state_scalar";
    if (!opt)
        return JOPT_EINVAL;
    if (!value)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: value is NULL", fn);
    const float *data;
    int64_t n;
    int rc = jopt_state_get(opt, group, index, name, &data, NULL);
    if (rc == JOPT_OK)
        rc = jopt_state_numel(opt, group, index, name, &n);
    if (rc)
        return rc;
    if (data && n > 2)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: state '%s' holds %lld values, "
                       "not one (jopt_state_get reads it)", fn, name, (long long)n);
    float host[2];
    if (data && opt->gpu) { /* on the device: after the steps before */
        if ((rc = rt_gpu_read(opt, fn, host, data, (size_t)n * sizeof(float))))
            return rc;
        data = host;
    }
    *value = !data ? NAN : n == 2 ? *(const double *)(const void *)data : data[0];
    return JOPT_OK;
}

JOPT_API int jopt_group_state(const jopt_optim *opt, size_t group,
                              const char *name, double *value)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_group_state";
    if (!opt)
        return JOPT_EINVAL;
    if (!name || !value)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: %s is NULL", fn,
                       !name ? "name" : "value");
    int rc = check_group(opt, fn, group);
    if (rc == JOPT_OK && opt->gpu)
        rc = rt_gpu_pull(opt, fn);
    if (rc)
        return rc;
    for (size_t k = 0; !opt->closure && k < cg_spec_nstate(opt->spec); k++)
        if (!strcmp(cg_spec_state_name(opt->spec, k), name)) {
            *value = opt->groups[group].gstate[k];
            return JOPT_OK;
        }
    return rt_fail(opt->ctx, JOPT_EINVAL, "%s: spec '%s' has no state '%s'", fn,
                   cg_spec_name(opt->spec), name);
}
