/*
 * sched.c - learning-rate schedulers: torch.optim.lr_scheduler in C.  This
 * file makes them: the public constructors, LRScheduler.__init__ and each
 * class's writes before it, the composites, and freeing.
 *
 * Each kind mirrors its torch 2.13 class: the constructor's checks and
 * messages (sched_opts.c), its initial step, and get_lr()'s recursive
 * ("chainable") formula (sched_lr.c), so the lrs are torch's bit for bit.
 * A scheduler's state is saved and loaded by sched_io.c.
 *
 *   jopt_sched_new: options --parse--> checks (torch's order) --> keys
 *                   (initial_lr ...) --> initial step (last_epoch 0)
 *   jopt_sched_step: step --> get_lr (current group lrs) --> lrs written
 *                    with jopt_option_set, logged so a failure undoes them
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sched_int.h"

const cg_allocator *rt_alloc_of_sched(const jopt_sched *s)
{
    return s ? &s->opt->ctx->alloc : NULL;
}

const char *const rt_sched_class_names[] = {
    "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts", "LinearLR", "ConstantLR", "PolynomialLR",
    "OneCycleLR", "CyclicLR", "ReduceLROnPlateau", "LambdaLR",
    "MultiplicativeLR", "SequentialLR", "ChainedScheduler"};

/* ---- construction ------------------------------------------------------- */

static void sched_free(jopt_sched *s)
{
    for (size_t i = 0; i < s->nchildren; i++)
        sched_free(s->children[i]);
    cg_free(s->children);
    cg_free(s->last_lr);
    cg_free(s->base_lrs);
    cg_free(s->milestones);
    cg_free(s->max_lrs);
    cg_free(s->base_moms);
    cg_free(s->max_moms);
    cg_free(s->min_lrs);
    cg_free(s);
}

JOPT_API void jopt_sched_free(jopt_sched *s)
{
    RT_API_SCOPE(s);
    if (s)
        sched_free(s);
}

static jopt_sched *sched_alloc(jopt_optim *opt, sched_kind k)
{
    jopt_sched *s = cg_calloc(1, sizeof *s);
    if (!s)
        return NULL;
    size_t n = jopt_group_count(opt);
    s->opt = opt;
    s->kind = k;
    s->ngroups = n;
    s->st.last_epoch = -1;
    s->last_lr = cg_calloc(n + 1, sizeof(double));
    s->base_lrs = cg_calloc(n + 1, sizeof(double));
    if (!s->last_lr || !s->base_lrs) {
        sched_free(s);
        return NULL;
    }
    return s;
}

static int alloc_per_group(jopt_sched *s)
{
    size_t n = s->ngroups + 1;
    if (s->kind == K_CYCLIC && !(s->max_lrs = cg_calloc(n, sizeof(double))))
        return JOPT_ENOMEM;
    if ((s->kind == K_CYCLIC || s->kind == K_ONECYCLE) &&
        (!(s->base_moms = cg_calloc(n, sizeof(double))) ||
         !(s->max_moms = cg_calloc(n, sizeof(double)))))
        return JOPT_ENOMEM;
    if (s->kind == K_PLATEAU && !(s->min_lrs = cg_calloc(n, sizeof(double))))
        return JOPT_ENOMEM;
    return JOPT_OK;
}

/* LRScheduler.__init__ (last_epoch=-1): initial_lr, base_lrs, initial step */
static int lr_scheduler_init(txn *t, jopt_sched *s)
{
    for (size_t g = 0; g < s->ngroups; g++) {
        if (!key_has(s, g, RT_KEY_INITIAL_LR))
            key_set(s, g, RT_KEY_INITIAL_LR,
                    rt_sched_get_param(s->opt, g, P_LR));
        s->base_lrs[g] = key_get(s, g, RT_KEY_INITIAL_LR);
    }
    s->st.last_epoch = -1;
    return rt_sched_initial_step(t, s);
}

/* what the kind's constructor does after its checks */
static int construct(txn *t, jopt_sched *s, const double *pre)
{
    int rc;
    size_t n = s->ngroups;
    switch (s->kind) {
    case K_PLATEAU:
        s->st.last_epoch = 0;
        s->st.best = s->mode_max ? -INFINITY : INFINITY;
        rt_sched_read_lrs(s, s->last_lr);
        return JOPT_OK;
    case K_WARM:
        s->st.T_i = s->T_0;
        s->st.T_cur = -1;
        return lr_scheduler_init(t, s);
    case K_CYCLIC:
        for (size_t g = 0; g < n; g++)
            if ((rc = rt_sched_set_param(t, s, g, P_LR, pre[g])))
                return rc;
        break;
    case K_ONECYCLE: /* group["initial_lr"], ["max_lr"], ["min_lr"] */
        for (size_t g = 0; g < n; g++) {
            double initial = pre[g] / s->div_factor;
            key_set(s, g, RT_KEY_INITIAL_LR, initial);
            key_set(s, g, RT_KEY_MAX_LR, pre[g]);
            key_set(s, g, RT_KEY_MIN_LR, initial / s->final_div_factor);
        }
        break;
    default:
        break;
    }
    if (s->cycle_momentum) {
        for (size_t g = 0; g < n; g++) {
            if ((rc = rt_sched_set_momentum(t, s, g, s->max_moms[g])))
                return rc;
            key_set(s, g, RT_KEY_MAX_MOMENTUM, s->max_moms[g]);
            key_set(s, g, RT_KEY_BASE_MOMENTUM, s->base_moms[g]);
        }
    }
    if ((rc = lr_scheduler_init(t, s)))
        return rc;
    if (s->kind == K_CYCLIC) /* self.base_lrs = base_lrs, after __init__ */
        memcpy(s->base_lrs, pre, n * sizeof *pre);
    return JOPT_OK;
}

/* runs the constructor's writes and initial step; on failure undoes them,
 * the optimizer's scheduler keys included */
static int construct_all(txn *t, jopt_sched *s, const double *pre)
{
    size_t n = s->ngroups * RT_NKEYS;
    double *keys = cg_malloc((n + 1) * sizeof *keys);
    if (!keys)
        return rt_sched_fail(t, s, JOPT_ENOMEM, "out of memory");
    for (size_t g = 0; g < s->ngroups; g++)
        memcpy(keys + g * RT_NKEYS, s->opt->groups[g].keys,
               RT_NKEYS * sizeof *keys);
    int rc = construct(t, s, pre);
    if (rc) {
        rt_sched_txn_rollback(t);
        for (size_t g = 0; g < s->ngroups; g++)
            memcpy(s->opt->groups[g].keys, keys + g * RT_NKEYS,
                   RT_NKEYS * sizeof *keys);
    }
    cg_free(keys);
    rt_sched_txn_done(t);
    return rc;
}

static int check_opt(jopt_optim *opt, const char *fn)
{
    if (!cg_spec_find_hyper(opt->spec, "lr"))
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: spec '%s' has no option "
                       "'lr' to schedule", fn, cg_spec_name(opt->spec));
    return JOPT_OK;
}

JOPT_API int jopt_sched_new(jopt_optim *opt, const char *kind,
                            const char *options, jopt_sched **out)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_sched_new";
    if (!opt)
        return JOPT_EINVAL;
    if (!kind || !out)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: %s is NULL", fn,
                       !kind ? "kind" : "out");
    int rc = check_opt(opt, fn);
    if (rc)
        return rc;
    char known[512];
    int k = rt_sched_kind(kind, known, sizeof known);
    if (k < 0)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: unknown scheduler kind "
                       "'%s' (known: %s; LambdaLR, MultiplicativeLR, "
                       "SequentialLR and ChainedScheduler have their own "
                       "constructors)", fn, kind, known);
    jopt_sched *s = sched_alloc(opt, (sched_kind)k);
    double *pre = cg_calloc(jopt_group_count(opt) + 1, sizeof *pre);
    txn t = {opt, fn, NULL, 0, 0};
    if (!s || !pre || alloc_per_group(s)) {
        rc = rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
        goto done;
    }
    if ((rc = rt_sched_options(&t, s, options, pre)) ||
        (rc = construct_all(&t, s, pre)))
        goto done;
    s->hash = rt_sched_options_hash(s, pre);
    *out = s;
    s = NULL;
done:
    jopt_sched_free(s);
    cg_free(pre);
    return rc;
}

JOPT_API int jopt_sched_new_lambda(jopt_optim *opt, jopt_lr_lambda lr_lambda,
                                   void *user, int multiplicative,
                                   jopt_sched **out)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_sched_new_lambda";
    if (!opt)
        return JOPT_EINVAL;
    if (!out)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: out is NULL", fn);
    if (!lr_lambda)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: %s: lr_lambda should be a "
                       "function, but got NULL", fn,
                       multiplicative ? "MultiplicativeLR" : "LambdaLR");
    int rc = check_opt(opt, fn);
    if (rc)
        return rc;
    jopt_sched *s = sched_alloc(opt, multiplicative ? K_MULT : K_LAMBDA);
    if (!s)
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    s->fn = lr_lambda;
    s->user = user;
    txn t = {opt, fn, NULL, 0, 0};
    if ((rc = construct_all(&t, s, NULL))) {
        jopt_sched_free(s);
        return rc;
    }
    s->hash = rt_sched_options_hash(s, NULL);
    *out = s;
    return JOPT_OK;
}

static int is_composite(const jopt_sched *s)
{
    return s->kind == K_SEQUENTIAL || s->kind == K_CHAINED;
}

/* torch's checks on a composite's children, and jopt's on ownership */
static int check_children(txn *t, const jopt_sched *proto,
                          jopt_sched *const *scheds, size_t n)
{
    const char *cls = rt_sched_class_names[proto->kind];
    if (n == 0)
        return rt_sched_fail(t, proto, JOPT_EINVAL, "%s expects at least one "
                    "scheduler%s, but got no scheduler.", cls,
                    proto->kind == K_CHAINED ? " to be chained" : "");
    if (!scheds)
        return rt_sched_fail(t, proto, JOPT_EINVAL, "scheds is NULL (n is %zu)",
                             n);
    for (size_t i = 0; i < n; i++) {
        const jopt_sched *c = scheds[i];
        if (!c)
            return rt_sched_fail(t, proto, JOPT_EINVAL, "the scheduler at "
                                 "index %zu is NULL", i);
        if (c->kind == K_PLATEAU)
            return rt_sched_fail(t, proto, JOPT_EINVAL, "%s does not support "
                        "`ReduceLROnPlateau` scheduler as it requires "
                        "additional kwargs to be specified when calling "
                        "`step`, but got one at index %zu in the given "
                        "schedulers sequence.", cls, i);
        if (c->opt != t->opt)
            return rt_sched_fail(t, proto, JOPT_EINVAL, "%s expects all "
                                 "schedulers to belong to the same optimizer, "
                                 "but got scheduler %s at index %zu, which "
                                 "belongs to another optimizer", cls,
                                 rt_sched_class_names[c->kind], i);
        if (c->ngroups != jopt_group_count(t->opt))
            return rt_sched_fail(t, proto, JOPT_EINVAL, "the scheduler at "
                                 "index %zu was made for %zu groups; the "
                                 "optimizer has %zu now", i, c->ngroups,
                                 jopt_group_count(t->opt));
        if (c->owned)
            return rt_sched_fail(t, proto, JOPT_EINVAL, "the scheduler at "
                                 "index %zu (%s) already belongs to a "
                                 "SequentialLR or ChainedScheduler", i,
                                 rt_sched_class_names[c->kind]);
        for (size_t j = 0; j < i; j++)
            if (scheds[j] == c)
                return rt_sched_fail(t, proto, JOPT_EINVAL, "the same "
                                     "scheduler is at index %zu and %zu (a "
                                     "composite owns each child once)", j, i);
        /* torch calls _update_lr(0) on the child at a milestone, which a
         * composite does not have: NotImplementedError */
        if (proto->kind == K_SEQUENTIAL && i > 0 && is_composite(c))
            return rt_sched_fail(t, proto, JOPT_EINVAL, "the scheduler at "
                                 "index %zu is a %s: only the first child of a "
                                 "SequentialLR may be a composite (torch "
                                 "raises NotImplementedError at its milestone)",
                                 i, rt_sched_class_names[c->kind]);
    }
    return JOPT_OK;
}

static jopt_sched *composite_alloc(jopt_optim *opt, sched_kind k,
                                   jopt_sched *const *scheds, size_t n)
{
    jopt_sched *s = sched_alloc(opt, k);
    if (!s)
        return NULL;
    if (!(s->children = cg_malloc(n * sizeof *s->children))) {
        sched_free(s);
        return NULL;
    }
    memcpy(s->children, scheds, n * sizeof *s->children);
    s->nchildren = n;
    return s;
}

/* frees a composite that does not own its children (yet) */
static void composite_discard(jopt_sched *s)
{
    if (s)
        s->nchildren = 0;
    jopt_sched_free(s);
}

static void recursive_undo(jopt_sched *s)
{
    if (is_composite(s))
        for (size_t i = 0; i < s->nchildren; i++)
            recursive_undo(s->children[i]);
    else
        s->st.last_epoch--;
}

JOPT_API int jopt_sched_new_sequential(jopt_optim *opt,
                                       jopt_sched *const *scheds, size_t n,
                                       const int64_t *milestones,
                                       jopt_sched **out)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_sched_new_sequential";
    if (!opt)
        return JOPT_EINVAL;
    if (!out)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: out is NULL", fn);
    txn t = {opt, fn, NULL, 0, 0};
    jopt_sched proto = {.kind = K_SEQUENTIAL};
    int rc = check_children(&t, &proto, scheds, n);
    if (rc)
        return rc;
    if (n > 1 && !milestones)
        return rt_sched_fail(&t, &proto, JOPT_EINVAL, "milestones is NULL (%zu "
                    "schedulers need %zu)", n, n - 1);
    jopt_sched *s = composite_alloc(opt, K_SEQUENTIAL, scheds, n);
    if (s && !(s->milestones = cg_malloc(n * sizeof *s->milestones))) {
        composite_discard(s);
        s = NULL;
    }
    snapshot sn;
    if (!s || rt_sched_snapshot_take(scheds, n, &sn)) {
        composite_discard(s);
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    }
    if (n > 1)
        memcpy(s->milestones, milestones, (n - 1) * sizeof *milestones);
    s->nmilestones = n - 1;
    /* reset the lrs to initial_lr, undo the children's initial steps, and
     * take the initial step of the scheduler for epoch 0 */
    for (size_t g = 0; g < s->ngroups && rc == JOPT_OK; g++)
        rc = rt_sched_set_param(&t, s, g, P_LR,
                                key_get(s, g, RT_KEY_INITIAL_LR));
    if (rc == JOPT_OK) {
        recursive_undo(s);
        jopt_sched *first =
            s->children[bisect_right(s->milestones, s->nmilestones, 0)];
        if ((rc = rt_sched_initial_step(&t, first)) == JOPT_OK) {
            memcpy(s->last_lr, first->last_lr, s->ngroups * sizeof *s->last_lr);
            s->st.last_epoch = 0;
        }
    }
    if (rc) {
        rt_sched_txn_rollback(&t);
        rt_sched_snapshot_restore(scheds, n, &sn);
        composite_discard(s);
    } else {
        for (size_t i = 0; i < n; i++)
            scheds[i]->owned = 1;
        s->hash = rt_sched_options_hash(s, NULL);
        *out = s;
    }
    rt_sched_snapshot_free(&sn);
    rt_sched_txn_done(&t);
    return rc;
}

JOPT_API int jopt_sched_new_chained(jopt_optim *opt, jopt_sched *const *scheds,
                                    size_t n, jopt_sched **out)
{
    RT_API_SCOPE(opt);
    static const char fn[] = "jopt_sched_new_chained";
    if (!opt && n > 0 && scheds && scheds[0])
        opt = scheds[0]->opt; /* optimizer or schedulers[0].optimizer */
    if (!opt)
        return JOPT_EINVAL;
    if (!out)
        return rt_fail(opt->ctx, JOPT_EINVAL, "%s: out is NULL", fn);
    txn t = {opt, fn, NULL, 0, 0};
    jopt_sched proto = {.kind = K_CHAINED};
    int rc = check_children(&t, &proto, scheds, n);
    if (rc)
        return rc;
    jopt_sched *s = composite_alloc(opt, K_CHAINED, scheds, n);
    if (!s)
        return rt_fail(opt->ctx, JOPT_ENOMEM, "%s: out of memory", fn);
    s->st.last_epoch = 0;
    rt_sched_read_lrs(s, s->last_lr);
    for (size_t i = 0; i < n; i++)
        scheds[i]->owned = 1;
    s->hash = rt_sched_options_hash(s, NULL);
    *out = s;
    return JOPT_OK;
}

JOPT_API int jopt_sched_last_lr(const jopt_sched *s, size_t group, double *lr)
{
    RT_API_SCOPE(s);
    static const char fn[] = "jopt_sched_last_lr";
    if (!s)
        return JOPT_EINVAL;
    if (!lr)
        return rt_fail(s->opt->ctx, JOPT_EINVAL, "%s: lr is NULL", fn);
    if (group >= s->ngroups)
        return rt_fail(s->opt->ctx, JOPT_EINVAL, "%s: group %zu does not exist "
                       "(the scheduler has %zu)", fn, group, s->ngroups);
    *lr = s->last_lr[group];
    return JOPT_OK;
}

JOPT_API int64_t jopt_sched_epoch(const jopt_sched *s)
{
    RT_API_SCOPE(s);
    return s ? s->st.last_epoch : -1;
}

