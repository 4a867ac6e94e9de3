/*
 * test_optim.c - the optimizer object through the public API: group options
 * and their defaults, per-group updates, step() with and without a closure,
 * hyperparameter changes and the kernel cache, parameters without a
 * gradient, state, zero_grad, JIT vs reference engine, specs given by path.
 *
 * Expected values are computed here in plain C from the update rules of
 * torch.optim (shared/reference/torch-optim.md, section 1) with the rounding
 * jopt documents: per-step scalars in double, rounded to float where a
 * per-element float32 operation uses them; fma is one rounding.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

/* ---- helpers ------------------------------------------------------------ */

static int setup_ctx(void **state)
{
    jopt_ctx *ctx = NULL;
    if (jopt_ctx_new(&ctx) != JOPT_OK)
        return -1;
    *state = ctx;
    return 0;
}

static int teardown_ctx(void **state)
{
    jopt_ctx_free(*state);
    *state = NULL;
    return 0;
}

/* bit-for-bit equality of two float arrays */
static void assert_bits(const float *got, const float *want, int64_t n,
                        const char *what)
{
    assert_non_null(got);
    assert_non_null(want);
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0)
            fail_msg("%s[%lld]: got %a (%.9g), want %a (%.9g)", what,
                     (long long)i, (double)got[i], (double)got[i],
                     (double)want[i], (double)want[i]);
}

static float *t_copy(const float *x, int64_t n)
{
    float *c = t_alloc(n);
    memcpy(c, x, (size_t)n * sizeof(float));
    return c;
}

static double opt_get(jopt_ctx *ctx, const jopt_optim *opt, size_t group,
                      const char *name)
{
    double v = NAN;
    T_OK(ctx, jopt_option_get(opt, group, name, &v));
    return v;
}

static const float *state_of(jopt_ctx *ctx, const jopt_optim *opt, size_t group,
                             size_t index, const char *name, int64_t *step)
{
    const float *data = (const float *)(uintptr_t)1; /* must be overwritten */
    T_OK(ctx, jopt_state_get(opt, group, index, name, &data, step));
    return data;
}

static int64_t step_of(jopt_ctx *ctx, const jopt_optim *opt, size_t group,
                       size_t index, const char *state_name)
{
    int64_t step = -1;
    (void)state_of(ctx, opt, group, index, state_name, &step);
    return step;
}

static void stats(const jopt_ctx *ctx, size_t *compiles, size_t *hits)
{
    *compiles = (size_t)-1;
    *hits = (size_t)-1;
    jopt_ctx_stats(ctx, compiles, hits);
}

/* torch.optim.SGD without momentum or weight decay: p.add_(g, alpha=-lr) */
static void sgd_expect(float *want, const float *p, const float *g, int64_t n,
                       double lr)
{
    for (int64_t i = 0; i < n; i++)
        want[i] = fmaf(g[i], (float)-lr, p[i]);
}

/* torch.optim.Adam's first step (t = 1, no weight decay, no amsgrad):
 * m = lerp(0, g, 1-β1), v = fma((1-β2)·g, g, 0·β2),
 * p += (-lr/bc1)·m / (sqrt(v)/sqrt(bc2) + eps) */
static void adam_step1_expect(float *want, float *m, float *v, const float *p,
                              const float *g, int64_t n, double lr, double b1,
                              double b2, double eps)
{
    const float w1 = (float)(1 - b1), w2 = (float)(1 - b2);
    const double bc1 = 1 - pow(b1, 1.0), bc2 = 1 - pow(b2, 1.0);
    const float neg_step = (float)(-(lr / bc1)), sbc2 = (float)pow(bc2, 0.5);
    for (int64_t i = 0; i < n; i++) {
        m[i] = fmaf(w1, g[i] - 0.0f, 0.0f);
        v[i] = fmaf(w2 * g[i], g[i], 0.0f * (float)b2);
        float denom = sqrtf(v[i]) / sbc2 + (float)eps;
        want[i] = p[i] + neg_step * m[i] / denom;
    }
}

/* ---- 1. group defaults --------------------------------------------------- */

static void test_options_group_defaults_fill_missing(void **state)
{
    jopt_ctx *ctx = *state;
    float *p1 = t_alloc(4), *g1 = t_alloc(4), *p2 = t_alloc(4), *g2 = t_alloc(4);
    jopt_param a = {p1, g1, 4}, b = {p2, g2, 4};

    /* torch: SGD([{'params': model1}, {'params': model2, 'lr': 1e-3}],
     *            lr=1e-2, momentum=0.9) */
    jopt_group sg[2] = {{&a, 1, NULL}, {&b, 1, "lr=1e-3"}};
    jopt_optim *sgd = NULL;
    T_OK(ctx, jopt_optim_new(ctx, "sgd", sg, 2, "lr=1e-2 momentum=0.9", &sgd));
    assert_int_equal(jopt_group_count(sgd), 2);
    assert_true(opt_get(ctx, sgd, 0, "lr") == 0.01);
    assert_true(opt_get(ctx, sgd, 1, "lr") == 0.001);
    for (size_t gi = 0; gi < 2; gi++) {
        assert_true(opt_get(ctx, sgd, gi, "momentum") == 0.9);
        assert_true(opt_get(ctx, sgd, gi, "dampening") == 0.0);    /* spec */
        assert_true(opt_get(ctx, sgd, gi, "weight_decay") == 0.0); /* spec */
        assert_true(opt_get(ctx, sgd, gi, "nesterov") == 0.0);     /* bool */
        assert_true(opt_get(ctx, sgd, gi, "maximize") == 0.0);
    }
    double v = 42;
    assert_int_equal(jopt_option_get(sgd, 2, "lr", &v), JOPT_EINVAL);
    assert_int_equal(jopt_option_get(sgd, 0, "no_such_option", &v), JOPT_EINVAL);
    assert_true(v == 42);
    jopt_optim_free(sgd);

    /* Adam: a tuple and booleans, three layers (spec < defaults < group) */
    jopt_group ag[2] = {{&a, 1, "betas=(0.5, 0.75) amsgrad=false"},
                        {&b, 1, "eps=1e-6"}};
    jopt_optim *adam = NULL;
    T_OK(ctx, jopt_optim_new(ctx, "adam", ag, 2,
                             "betas=0.8,0.99 amsgrad=true lr=0.01", &adam));
    assert_true(opt_get(ctx, adam, 0, "betas[0]") == 0.5);
    assert_true(opt_get(ctx, adam, 0, "betas[1]") == 0.75);
    assert_true(opt_get(ctx, adam, 0, "amsgrad") == 0.0);
    assert_true(opt_get(ctx, adam, 0, "eps") == 1e-8);      /* spec */
    assert_true(opt_get(ctx, adam, 0, "lr") == 0.01);       /* defaults */
    assert_true(opt_get(ctx, adam, 1, "betas[0]") == 0.8);  /* defaults */
    assert_true(opt_get(ctx, adam, 1, "betas[1]") == 0.99);
    assert_true(opt_get(ctx, adam, 1, "amsgrad") == 1.0);
    assert_true(opt_get(ctx, adam, 1, "eps") == 1e-6);      /* group */
    assert_true(opt_get(ctx, adam, 1, "lr") == 0.01);
    assert_true(opt_get(ctx, adam, 1, "weight_decay") == 0.0);
    assert_true(opt_get(ctx, adam, 1, "maximize") == 0.0);
    /* a tuple is read one element at a time, 0-based */
    assert_int_equal(jopt_option_get(adam, 0, "betas", &v), JOPT_EINVAL);
    assert_int_equal(jopt_option_get(adam, 0, "betas[2]", &v), JOPT_EINVAL);
    jopt_optim_free(adam);

    /* AdamW's own spec default for weight_decay is 1e-2 */
    jopt_optim *adamw = NULL;
    T_OK(ctx, jopt_optim_new(ctx, "adamw", ag, 2, NULL, &adamw));
    assert_true(opt_get(ctx, adamw, 0, "weight_decay") == 1e-2);
    assert_true(opt_get(ctx, adamw, 1, "lr") == 1e-3);
    assert_true(opt_get(ctx, adamw, 1, "betas[0]") == 0.9);
    assert_true(opt_get(ctx, adamw, 1, "betas[1]") == 0.999);
    jopt_optim_free(adamw);

    free(p1), free(g1), free(p2), free(g2);
}

/* One options syntax for optimizers and schedulers: a tuple as a,b, (a, b)
 * or [a, b], in defaults, group options, option changes and schedulers. */
static void test_options_tuples_in_every_syntax(void **state)
{
    jopt_ctx *ctx = *state;
    float *p = t_alloc(4), *g = t_alloc(4);
    jopt_param a = {p, g, 4};
    static const char *const forms[] = {
        "betas=0.5,0.75", "betas=(0.5,0.75)", "betas=(0.5, 0.75)",
        "betas=[0.5,0.75]", "betas=[ 0.5 , 0.75 ]"};
    for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++) {
        jopt_group grp = {&a, 1, forms[f]};
        jopt_optim *opt = NULL;
        /* in the group's options, then in the defaults, then changed */
        T_OK(ctx, jopt_optim_new(ctx, "adam", &grp, 1, NULL, &opt));
        assert_true(opt_get(ctx, opt, 0, "betas[0]") == 0.5);
        assert_true(opt_get(ctx, opt, 0, "betas[1]") == 0.75);
        jopt_optim_free(opt);
        grp.options = NULL;
        T_OK(ctx, jopt_optim_new(ctx, "adam", &grp, 1, forms[f], &opt));
        assert_true(opt_get(ctx, opt, 0, "betas[1]") == 0.75);
        T_OK(ctx, jopt_options_set(opt, 0, "betas=[0.25, 0.5]"));
        assert_true(opt_get(ctx, opt, 0, "betas[0]") == 0.25);
        T_OK(ctx, jopt_options_set(opt, 0, "betas=(0.3,0.6)"));
        assert_true(opt_get(ctx, opt, 0, "betas[1]") == 0.6);
        jopt_optim_free(opt);
    }
    /* the example, and a list that does not close */
    jopt_group grp = {&a, 1, NULL};
    jopt_optim *opt = NULL;
    T_OK(ctx, jopt_optim_new(ctx, "adam", &grp, 1, "betas=[0.9,0.99]", &opt));
    assert_true(opt_get(ctx, opt, 0, "betas[1]") == 0.99);
    assert_int_equal(jopt_options_set(opt, 0, "betas=[0.9,0.99"), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "option 'betas': missing ']'"));
    assert_true(opt_get(ctx, opt, 0, "betas[1]") == 0.99);
    /* schedulers read tuples the same way */
    static const char *const milestones[] = {"milestones=2,4", "milestones=(2,4)",
                                             "milestones=[2, 4]"};
    double lr[3][6];
    for (size_t f = 0; f < 3; f++) {
        T_OK(ctx, jopt_option_set(opt, 0, "lr", 1.0));
        jopt_sched *s = NULL;
        T_OK(ctx, jopt_sched_new(opt, "multistep", milestones[f], &s));
        for (int e = 0; e < 6; e++) {
            T_OK(ctx, jopt_sched_step(s));
            T_OK(ctx, jopt_sched_last_lr(s, 0, &lr[f][e]));
        }
        jopt_sched_free(s);
    }
    assert_memory_equal(lr[0], lr[1], sizeof lr[0]);
    assert_memory_equal(lr[0], lr[2], sizeof lr[0]);
    assert_true(lr[0][0] == 1.0 && lr[0][1] == 0.1 && lr[0][3] == 0.1 * 0.1);
    jopt_optim_free(opt);
    free(p), free(g);
}

/* ---- 2. per-group values drive the update -------------------------------- */

static void test_step_each_group_uses_its_own_lr(void **state)
{
    jopt_ctx *ctx = *state;
    const int64_t n[3] = {33, 7, 100};
    float *p[3], *g[3], *p0[3], *want[3];
    jopt_param prm[3];
    for (int i = 0; i < 3; i++) {
        p[i] = t_alloc(n[i]);
        g[i] = t_alloc(n[i]);
        want[i] = t_alloc(n[i]);
        t_fill(p[i], n[i], 10 + (uint64_t)i, 0.0);
        t_fill(g[i], n[i], 20 + (uint64_t)i, 0.1);
        p0[i] = t_copy(p[i], n[i]);
        prm[i] = (jopt_param){p[i], g[i], n[i]};
    }
    jopt_group groups[2] = {{&prm[0], 2, "lr=0.1"}, {&prm[2], 1, "lr=0.003"}};
    jopt_optim *opt = NULL;
    T_OK(ctx, jopt_optim_new(ctx, "sgd", groups, 2, NULL, &opt));
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    const double lr[3] = {0.1, 0.1, 0.003};
    for (int i = 0; i < 3; i++) {
        sgd_expect(want[i], p0[i], g[i], n[i], lr[i]);
        assert_bits(p[i], want[i], n[i], "param");
        assert_int_equal(step_of(ctx, opt, i < 2 ? 0 : 1, i < 2 ? (size_t)i : 0,
                                 "momentum_buffer"), 1);
    }
    jopt_optim_free(opt);
    for (int i = 0; i < 3; i++)
        free(p[i]), free(g[i]), free(p0[i]), free(want[i]);
}

/* ---- 3. step(closure) ---------------------------------------------------- */

typedef struct closure_data {
    jopt_optim *opt;
    float *g;    /* the gradient it writes (even elements only) */
    int64_t n;
    int calls;
    int fail;    /* non-zero: return it at once, touching nothing */
    double loss; /* the loss it reports */
    float scale;
} closure_data;

static int closure_fn(void *user_data, double *loss)
{
    closure_data *c = user_data;
    c->calls++;
    if (c->fail)
        return c->fail;
    if (jopt_zero_grad(c->opt) != JOPT_OK)
        return 99;
    for (int64_t i = 0; i < c->n; i += 2)
        c->g[i] = c->scale * (float)(i + 1);
    *loss = c->loss;
    return 0;
}

static void test_step_closure_loss_returned_and_called_once(void **state)
{
    jopt_ctx *ctx = *state;
    const int64_t na = 21, nb = 8;
    float *pa = t_alloc(na), *ga = t_alloc(na), *pb = t_alloc(nb), *gb = t_alloc(nb);
    float *want = t_alloc(na), *gexp = t_alloc(na);
    t_fill(pa, na, 1, 0.0);
    t_fill(ga, na, 2, 0.0); /* stale gradients: the closure's zero_grad clears them */
    t_fill(pb, nb, 3, 0.0);
    t_fill(gb, nb, 4, 0.0);
    float *pa0 = t_copy(pa, na), *pb0 = t_copy(pb, nb);
    jopt_param prm[2] = {{pa, ga, na}, {pb, gb, nb}};
    jopt_group grp = {prm, 2, "lr=0.1"};
    jopt_optim *opt = NULL;
    T_OK(ctx, jopt_optim_new(ctx, "sgd", &grp, 1, NULL, &opt));

    closure_data cd = {opt, ga, na, 0, 0, 1.25, 0.5f};
    double loss = NAN;
    T_OK(ctx, jopt_step(opt, closure_fn, &cd, &loss));
    assert_int_equal(cd.calls, 1);
    assert_true(loss == 1.25);
    for (int64_t i = 0; i < na; i++)
        gexp[i] = i % 2 == 0 ? 0.5f * (float)(i + 1) : 0.0f;
    assert_bits(ga, gexp, na, "grad written by the closure");
    sgd_expect(want, pa0, gexp, na, 0.1); /* the step used the closure's grads */
    assert_bits(pa, want, na, "param a");
    for (int64_t i = 0; i < nb; i++)
        assert_true(gb[i] == 0.0f);
    sgd_expect(want, pb0, gb, nb, 0.1); /* zero grad: p - lr*0 == p */
    assert_bits(pb, want, nb, "param b");
    assert_bits(pb, pb0, nb, "param b unchanged by a zero gradient");

    /* a second step: called once more, its own loss; loss pointer optional */
    memcpy(pa0, pa, (size_t)na * sizeof(float));
    cd.loss = -3.5;
    cd.scale = -0.25f;
    T_OK(ctx, jopt_step(opt, closure_fn, &cd, &loss));
    assert_int_equal(cd.calls, 2);
    assert_true(loss == -3.5);
    for (int64_t i = 0; i < na; i++)
        gexp[i] = i % 2 == 0 ? -0.25f * (float)(i + 1) : 0.0f;
    sgd_expect(want, pa0, gexp, na, 0.1);
    assert_bits(pa, want, na, "param a after step 2");
    T_OK(ctx, jopt_step(opt, closure_fn, &cd, NULL));
    assert_int_equal(cd.calls, 3);
    assert_int_equal(step_of(ctx, opt, 0, 0, "momentum_buffer"), 3);

    jopt_optim_free(opt);
    free(pa), free(ga), free(pb), free(gb), free(want), free(gexp);
    free(pa0), free(pb0);
}

static void test_step_without_closure_loss_is_nan(void **state)
{
    jopt_ctx *ctx = *state;
    float *p = t_alloc(5), *g = t_alloc(5), *want = t_alloc(5);
    t_fill(p, 5, 7, 0.0);
    t_fill(g, 5, 8, 0.0);
    float *p0 = t_copy(p, 5);
    jopt_param prm = {p, g, 5};
    jopt_group grp = {&prm, 1, "lr=0.5"};
    jopt_optim *opt = NULL;
    T_OK(ctx, jopt_optim_new(ctx, "sgd", &grp, 1, NULL, &opt));
    double loss = 7.0;
    T_OK(ctx, jopt_step(opt, NULL, NULL, &loss));
    assert_true(isnan(loss));
    sgd_expect(want, p0, g, 5, 0.5);
    assert_bits(p, want, 5, "param");
    jopt_optim_free(opt);
    free(p), free(g), free(want), free(p0);
}

typedef struct snapshot {
    float *p[2], *m[2], *v[2];
    int64_t step[2];
} snapshot;

static void snap_take(snapshot *s, jopt_ctx *ctx, const jopt_optim *opt,
                      float *const *p, const int64_t *n)
{
    for (int i = 0; i < 2; i++) {
        s->p[i] = t_copy(p[i], n[i]);
        const float *m = state_of(ctx, opt, 0, (size_t)i, "exp_avg", &s->step[i]);
        const float *v = state_of(ctx, opt, 0, (size_t)i, "exp_avg_sq", NULL);
        s->m[i] = m ? t_copy(m, n[i]) : NULL;
        s->v[i] = v ? t_copy(v, n[i]) : NULL;
    }
}

static void snap_check(const snapshot *s, jopt_ctx *ctx, const jopt_optim *opt,
                       float *const *p, const int64_t *n)
{
    for (int i = 0; i < 2; i++) {
        int64_t step = -1;
        assert_bits(p[i], s->p[i], n[i], "param");
        const float *m = state_of(ctx, opt, 0, (size_t)i, "exp_avg", &step);
        const float *v = state_of(ctx, opt, 0, (size_t)i, "exp_avg_sq", NULL);
        assert_int_equal(step, s->step[i]);
        if (s->m[i]) {
            assert_bits(m, s->m[i], n[i], "exp_avg");
            assert_bits(v, s->v[i], n[i], "exp_avg_sq");
        } else {
            assert_null(m);
            assert_null(v);
        }
    }
}

static void snap_free(snapshot *s)
{
    for (int i = 0; i < 2; i++)
        free(s->p[i]), free(s->m[i]), free(s->v[i]);
}

static void test_step_closure_error_changes_nothing(void **state)
{
    jopt_ctx *ctx = *state;
    const int64_t n[2] = {17, 3};
    float *p[2], *g[2], *tp[2];
    jopt_param prm[2], tprm[2];
    for (int i = 0; i < 2; i++) {
        p[i] = t_alloc(n[i]);
        g[i] = t_alloc(n[i]);
        t_fill(p[i], n[i], 30 + (uint64_t)i, 0.0);
        tp[i] = t_copy(p[i], n[i]);
        prm[i] = (jopt_param){p[i], g[i], n[i]};
        tprm[i] = (jopt_param){tp[i], g[i], n[i]}; /* the twin shares grads */
    }
    jopt_group grp = {prm, 2, NULL}, tgrp = {tprm, 2, NULL};
    jopt_optim *opt = NULL, *twin = NULL;
    T_OK(ctx, jopt_optim_new(ctx, "adam", &grp, 1, "lr=0.01", &opt));
    T_OK(ctx, jopt_optim_new(ctx, "adam", &tgrp, 1, "lr=0.01", &twin));
    closure_data bad = {opt, g[0], n[0], 0, 7, 1.0, 1.0f};
    snapshot s;

    /* failing before the first step: no state is created */
    snap_take(&s, ctx, opt, p, n);
    double loss = 0;
    assert_int_equal(jopt_step(opt, closure_fn, &bad, &loss), JOPT_ECLOSURE);
    assert_int_equal(bad.calls, 1);
    assert_non_null(strstr(jopt_errmsg(ctx), "closure"));
    snap_check(&s, ctx, opt, p, n);
    snap_free(&s);

    /* two good steps on both */
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < 2; i++)
            t_fill(g[i], n[i], 40 + (uint64_t)(10 * k + i), 0.1);
        T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
        T_OK(ctx, jopt_step(twin, NULL, NULL, NULL));
    }

    /* failing with state present: params, state and step counts stay */
    snap_take(&s, ctx, opt, p, n);
    assert_int_equal(s.step[0], 2);
    assert_int_equal(s.step[1], 2);
    assert_int_equal(jopt_step(opt, closure_fn, &bad, &loss), JOPT_ECLOSURE);
    assert_int_equal(bad.calls, 2);
    assert_true(strlen(jopt_errmsg(ctx)) > 0);
    snap_check(&s, ctx, opt, p, n);
    snap_free(&s);

    /* the next good step is step 3, as on a twin that never failed */
    for (int i = 0; i < 2; i++)
        t_fill(g[i], n[i], 77 + (uint64_t)i, 0.1);
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    T_OK(ctx, jopt_step(twin, NULL, NULL, NULL));
    snap_take(&s, ctx, twin, tp, n);
    snap_check(&s, ctx, opt, p, n);
    assert_int_equal(s.step[0], 3);
    snap_free(&s);

    jopt_optim_free(opt);
    jopt_optim_free(twin);
    for (int i = 0; i < 2; i++)
        free(p[i]), free(g[i]), free(tp[i]);
}

/* ---- 4. hyperparameter changes ------------------------------------------- */

static void test_options_set_takes_effect_next_step(void **state)
{
    jopt_ctx *ctx = *state;
    const int64_t n = 19;
    float *p = t_alloc(n), *g = t_alloc(n), *want = t_alloc(n), *p0 = t_alloc(n);
    float *b = t_alloc(n);
    t_fill(p, n, 50, 0.0);
    jopt_param prm = {p, g, n};
    jopt_group grp = {&prm, 1, NULL};
    jopt_optim *opt = NULL;
    size_t c, h, c1, h1;
    T_OK(ctx, jopt_optim_new(ctx, "sgd", &grp, 1, "lr=0.1", &opt));
    stats(ctx, &c1, &h1);
    assert_int_equal(c1, 1);

#define STEP_AND_CHECK(seed, lr_)                                              \
    do {                                                                       \
        t_fill(g, n, (seed), 0.1);                                             \
        memcpy(p0, p, (size_t)n * sizeof(float));                             \
        T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));                           \
        sgd_expect(want, p0, g, n, (lr_));                                     \
        assert_bits(p, want, n, "param");                                      \
    } while (0)

    STEP_AND_CHECK(51, 0.1);

    /* option_set: a new value, a new kernel, used by the next step */
    T_OK(ctx, jopt_option_set(opt, 0, "lr", 0.05));
    assert_true(opt_get(ctx, opt, 0, "lr") == 0.05);
    stats(ctx, &c, &h);
    assert_int_equal(c, c1 + 1);
    STEP_AND_CHECK(52, 0.05);

    /* lr changed once, so it is now passed per step (the spec lists it
     * as runtime): further changes compile nothing */
    assert_int_equal(jopt_option_is_runtime(opt, 0, "lr"), 1);
    assert_int_equal(jopt_option_is_runtime(opt, 0, "momentum"), 0);
    T_OK(ctx, jopt_options_set(opt, 0, "lr=0.1"));
    size_t c2, h2;
    stats(ctx, &c2, &h2);
    assert_int_equal(c2, c1 + 1);
    assert_true(opt_get(ctx, opt, 0, "lr") == 0.1);
    STEP_AND_CHECK(53, 0.1);

    /* a folded option back at an earlier value: the cached kernel */
    T_OK(ctx, jopt_option_set(opt, 0, "weight_decay", 0.5));
    T_OK(ctx, jopt_option_set(opt, 0, "weight_decay", 0.0));
    stats(ctx, &c2, &h2);
    assert_int_equal(c2, c1 + 2);
    assert_true(h2 > h);
    STEP_AND_CHECK(55, 0.1);

    /* an invalid value is refused; the old value and kernel stay */
    assert_int_equal(jopt_option_set(opt, 0, "lr", -1.0), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "Invalid learning rate"));
    assert_true(opt_get(ctx, opt, 0, "lr") == 0.1);
    stats(ctx, &c, &h);
    assert_int_equal(c, c2);
    STEP_AND_CHECK(54, 0.1);

    /* a refused options string changes none of its options */
    assert_int_equal(jopt_options_set(opt, 0, "momentum=0.5 lr=-1"), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "Invalid learning rate"));
    assert_true(opt_get(ctx, opt, 0, "momentum") == 0.0);
    assert_true(opt_get(ctx, opt, 0, "lr") == 0.1);
    assert_int_equal(jopt_option_set(opt, 0, "nesterov", 1), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "Nesterov"));
    assert_true(opt_get(ctx, opt, 0, "nesterov") == 0.0);
    assert_int_equal(jopt_option_set(opt, 0, "nesterov", 2), JOPT_EINVAL);
    assert_int_equal(jopt_option_set(opt, 0, "no_such_option", 1), JOPT_EINVAL);
    assert_int_equal(jopt_option_set(opt, 1, "lr", 0.2), JOPT_EINVAL);
    const float *buf = state_of(ctx, opt, 0, 0, "momentum_buffer", NULL);
    assert_null(buf);
    STEP_AND_CHECK(55, 0.1);

    /* options_set with two values: lr and momentum, from the next step */
    T_OK(ctx, jopt_options_set(opt, 0, "lr=0.02 momentum=0.5"));
    assert_true(opt_get(ctx, opt, 0, "lr") == 0.02);
    assert_true(opt_get(ctx, opt, 0, "momentum") == 0.5);
    assert_true(opt_get(ctx, opt, 0, "dampening") == 0.0);
    STEP_AND_CHECK(56, 0.02); /* first momentum step: buf = clone(g) */
    buf = state_of(ctx, opt, 0, 0, "momentum_buffer", NULL);
    assert_bits(buf, g, n, "momentum_buffer");
    memcpy(b, buf, (size_t)n * sizeof(float));
    t_fill(g, n, 57, 0.1);
    memcpy(p0, p, (size_t)n * sizeof(float));
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    for (int64_t i = 0; i < n; i++) {
        b[i] = fmaf(g[i], (float)(1.0 - 0.0), b[i] * 0.5f); /* b·μ + (1-τ)·g */
        want[i] = fmaf(b[i], (float)-0.02, p0[i]);
    }
    assert_bits(state_of(ctx, opt, 0, 0, "momentum_buffer", NULL), b, n,
                "momentum_buffer step 2");
    assert_bits(p, want, n, "param with momentum");
#undef STEP_AND_CHECK
    assert_int_equal(jopt_option_set(opt, 0, "lr", NAN), JOPT_EINVAL);
    assert_true(opt_get(ctx, opt, 0, "lr") == 0.02);
    jopt_optim_free(opt);

    /* Adam: tuple elements are set one at a time, and checked */
    float *m = t_alloc(n), *v = t_alloc(n);
    t_fill(p, n, 58, 0.0);
    t_fill(g, n, 59, 0.1);
    memcpy(p0, p, (size_t)n * sizeof(float));
    T_OK(ctx, jopt_optim_new(ctx, "adam", &grp, 1, "lr=0.02", &opt));
    T_OK(ctx, jopt_option_set(opt, 0, "betas[0]", 0.5));
    T_OK(ctx, jopt_option_set(opt, 0, "betas[1]", 0.75));
    T_OK(ctx, jopt_options_set(opt, 0, "eps=1e-3"));
    assert_true(opt_get(ctx, opt, 0, "betas[0]") == 0.5);
    assert_true(opt_get(ctx, opt, 0, "betas[1]") == 0.75);
    assert_int_equal(jopt_option_set(opt, 0, "betas[1]", 1.0), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "Invalid beta parameter at index 1"));
    assert_int_equal(jopt_option_set(opt, 0, "betas", 0.5), JOPT_EINVAL);
    assert_int_equal(jopt_options_set(opt, 0, "betas=0.5"), JOPT_EINVAL);
    assert_true(opt_get(ctx, opt, 0, "betas[1]") == 0.75);
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    adam_step1_expect(want, m, v, p0, g, n, 0.02, 0.5, 0.75, 1e-3);
    assert_bits(state_of(ctx, opt, 0, 0, "exp_avg", NULL), m, n, "exp_avg");
    assert_bits(state_of(ctx, opt, 0, 0, "exp_avg_sq", NULL), v, n, "exp_avg_sq");
    assert_bits(p, want, n, "adam param with changed betas");
    jopt_optim_free(opt);
    free(p), free(g), free(want), free(p0), free(b), free(m), free(v);
}

/* ---- 5. parameters without a gradient ------------------------------------ */

static void test_step_param_without_grad_untouched(void **state)
{
    jopt_ctx *ctx = *state;
    const int64_t n[3] = {17, 5, 9};
    float *p[3], *g[3], *p0[3];
    jopt_param prm[3];
    for (int i = 0; i < 3; i++) {
        p[i] = t_alloc(n[i]);
        g[i] = t_alloc(n[i]);
        t_fill(p[i], n[i], 60 + (uint64_t)i, 0.0);
        p0[i] = t_copy(p[i], n[i]);
        prm[i] = (jopt_param){p[i], i == 1 ? NULL : g[i], n[i]};
    }
    jopt_group grp = {prm, 3, NULL};
    jopt_optim *opt = NULL;
    T_OK(ctx, jopt_optim_new(ctx, "adam", &grp, 1, "lr=0.05", &opt));
    for (int k = 0; k < 3; k++) {
        for (int i = 0; i < 3; i++)
            t_fill(g[i], n[i], 70 + (uint64_t)(10 * k + i), 0.05);
        T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    }
    int64_t step = -1;
    assert_bits(p[1], p0[1], n[1], "param without grad");
    assert_null(state_of(ctx, opt, 0, 1, "exp_avg", &step));
    assert_int_equal(step, 0);
    assert_null(state_of(ctx, opt, 0, 1, "exp_avg_sq", NULL));
    for (int i = 0; i < 3; i += 2) {
        assert_non_null(state_of(ctx, opt, 0, (size_t)i, "exp_avg", &step));
        assert_int_equal(step, 3);
        assert_true(memcmp(p[i], p0[i], (size_t)n[i] * sizeof(float)) != 0);
    }

    /* the gradient comes back for 1, goes away for 0 */
    T_OK(ctx, jopt_set_grad(opt, 0, 1, g[1]));
    T_OK(ctx, jopt_set_grad(opt, 0, 0, NULL));
    float *keep0 = t_copy(p[0], n[0]);
    float *m0 = t_copy(state_of(ctx, opt, 0, 0, "exp_avg", NULL), n[0]);
    float *v0 = t_copy(state_of(ctx, opt, 0, 0, "exp_avg_sq", NULL), n[0]);
    float *p2 = t_copy(p[2], n[2]);
    for (int i = 1; i < 3; i++)
        t_fill(g[i], n[i], 90 + (uint64_t)i, 0.05);
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));

    /* 0: untouched, state and count kept */
    assert_bits(p[0], keep0, n[0], "param whose grad was removed");
    assert_bits(state_of(ctx, opt, 0, 0, "exp_avg", &step), m0, n[0], "exp_avg");
    assert_int_equal(step, 3);
    assert_bits(state_of(ctx, opt, 0, 0, "exp_avg_sq", NULL), v0, n[0], "exp_avg_sq");
    /* 2: its fourth step */
    assert_int_equal(step_of(ctx, opt, 0, 2, "exp_avg"), 4);
    assert_true(memcmp(p[2], p2, (size_t)n[2] * sizeof(float)) != 0);
    /* 1: its first step, bias-corrected for t = 1: a fresh optimizer agrees */
    assert_int_equal(step_of(ctx, opt, 0, 1, "exp_avg"), 1);
    float *fp = t_copy(p0[1], n[1]);
    jopt_param fprm = {fp, g[1], n[1]};
    jopt_group fgrp = {&fprm, 1, NULL};
    jopt_optim *fresh = NULL;
    T_OK(ctx, jopt_optim_new(ctx, "adam", &fgrp, 1, "lr=0.05", &fresh));
    T_OK(ctx, jopt_step(fresh, NULL, NULL, NULL));
    assert_true(memcmp(fp, p0[1], (size_t)n[1] * sizeof(float)) != 0);
    assert_bits(p[1], fp, n[1], "late param vs fresh optimizer");
    assert_bits(state_of(ctx, opt, 0, 1, "exp_avg", NULL),
                state_of(ctx, fresh, 0, 0, "exp_avg", NULL), n[1], "exp_avg");
    assert_bits(state_of(ctx, opt, 0, 1, "exp_avg_sq", NULL),
                state_of(ctx, fresh, 0, 0, "exp_avg_sq", NULL), n[1], "exp_avg_sq");

    /* set_grad checks its arguments and changes nothing when it refuses */
    assert_int_equal(jopt_set_grad(opt, 0, 3, g[0]), JOPT_EINVAL);
    assert_int_equal(jopt_set_grad(opt, 1, 0, g[0]), JOPT_EINVAL);
    assert_int_equal(jopt_set_grad(opt, 0, 0, p[2]), JOPT_EINVAL); /* overlaps */
    memcpy(keep0, p[0], (size_t)n[0] * sizeof(float));
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    assert_bits(p[0], keep0, n[0], "param 0 still without grad");
    assert_int_equal(step_of(ctx, opt, 0, 0, "exp_avg"), 3);

    jopt_optim_free(fresh);
    jopt_optim_free(opt);
    for (int i = 0; i < 3; i++)
        free(p[i]), free(g[i]), free(p0[i]);
    free(keep0), free(m0), free(v0), free(p2), free(fp);
}

/* ---- 6. state ------------------------------------------------------------ */

static void test_state_adam_created_at_first_step(void **state)
{
    jopt_ctx *ctx = *state;
    const int64_t n = 37;
    const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    float *p = t_alloc(n), *g = t_alloc(n), *q = t_alloc(n), *want = t_alloc(n);
    float *m = t_alloc(n), *v = t_alloc(n);
    t_fill(p, n, 100, 0.0);
    t_fill(g, n, 101, 0.1);
    memcpy(q, p, (size_t)n * sizeof(float));
    float *p0 = t_copy(p, n);
    jopt_param a = {p, g, n}, b = {q, g, n};
    jopt_group ga = {&a, 1, NULL}, gb = {&b, 1, "amsgrad=true"};
    jopt_optim *adam = NULL, *ams = NULL;
    T_OK(ctx, jopt_optim_new(ctx, "adam", &ga, 1, "lr=0.01", &adam));
    T_OK(ctx, jopt_optim_new(ctx, "adam", &gb, 1, "lr=0.01", &ams));
    int64_t step = -1;
    assert_null(state_of(ctx, adam, 0, 0, "exp_avg", &step));
    assert_int_equal(step, 0);
    assert_null(state_of(ctx, adam, 0, 0, "exp_avg_sq", NULL));
    assert_null(state_of(ctx, ams, 0, 0, "max_exp_avg_sq", NULL));

    T_OK(ctx, jopt_step(adam, NULL, NULL, NULL));
    T_OK(ctx, jopt_step(ams, NULL, NULL, NULL));

    adam_step1_expect(want, m, v, p0, g, n, lr, b1, b2, eps);
    const char *names[2] = {"exp_avg", "exp_avg_sq"};
    const float *expect[2] = {m, v};
    for (int k = 0; k < 2; k++) {
        const jopt_optim *o[2] = {adam, ams};
        for (int j = 0; j < 2; j++) {
            const float *d = state_of(ctx, o[j], 0, 0, names[k], &step);
            assert_non_null(d);
            assert_int_equal((uintptr_t)d % 64, 0);
            assert_int_equal(step, 1);
            assert_bits(d, expect[k], n, names[k]);
        }
    }
    assert_bits(p, want, n, "adam param after step 1");
    assert_bits(q, want, n, "amsgrad param after step 1");
    /* max_exp_avg_sq: only with amsgrad, = max(0, v) = v after step 1 */
    assert_null(state_of(ctx, adam, 0, 0, "max_exp_avg_sq", &step));
    assert_int_equal(step, 1);
    const float *mx = state_of(ctx, ams, 0, 0, "max_exp_avg_sq", NULL);
    assert_non_null(mx);
    assert_int_equal((uintptr_t)mx % 64, 0);
    assert_bits(mx, v, n, "max_exp_avg_sq");

    jopt_optim_free(adam);
    jopt_optim_free(ams);
    free(p), free(g), free(q), free(want), free(m), free(v), free(p0);
}

/* (d - p) modulo 256 KiB, where runtime/optim.c's rt_state_alloc puts a
 * large state k: (k + 1) * 20 KiB past its parameter, rounded down to 64 B */
static size_t phase_from(const float *p, const float *d)
{
    return (size_t)(((uintptr_t)d - ((uintptr_t)p & ~(uintptr_t)63)) & ((256u << 10) - 1));
}

static void assert_placed_apart(jopt_ctx *ctx, const jopt_optim *opt, const float *p)
{
    const char *names[3] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    size_t seen[3];
    for (int k = 0; k < 3; k++) {
        const float *d = state_of(ctx, opt, 0, 0, names[k], NULL);
        assert_non_null(d);
        assert_int_equal((uintptr_t)d % 64, 0);
        seen[k] = phase_from(p, d);
        /* one of 20, 40, 60 KiB: the spec's three states, in its order */
        assert_true(seen[k] % (20u << 10) == 0 && seen[k] >= (20u << 10) &&
                    seen[k] <= (60u << 10));
        for (int j = 0; j < k; j++)
            assert_true(seen[j] != seen[k]);
    }
}

/* Large state arrays start apart from their parameter and from each other
 * (bench/RESULTS.md, "State arrays placed apart"), made at a step or by a
 * load; the numbers are the same as anywhere else. */
static void test_state_large_arrays_placed_apart(void **state)
{
    jopt_ctx *ctx = *state;
    const int64_t n = (int64_t)1 << 20; /* 4 MiB a state: the threshold */
    float *p = t_alloc(n), *g = t_alloc(n), *q = t_alloc(n);
    t_fill(p, n, 200, 0.0);
    t_fill(g, n, 201, 0.1);
    memcpy(q, p, (size_t)n * sizeof(float));
    jopt_param a = {p, g, n}, b = {q, g, n};
    jopt_group ga = {&a, 1, NULL}, gb = {&b, 1, NULL};
    jopt_optim *o = NULL, *ref = NULL, *back = NULL;
    T_OK(ctx, jopt_optim_new(ctx, "adam", &ga, 1, "lr=0.01 amsgrad=true", &o));
    T_OK(ctx, jopt_ctx_set_engine(ctx, JOPT_ENGINE_REFERENCE));
    T_OK(ctx, jopt_optim_new(ctx, "adam", &gb, 1, "lr=0.01 amsgrad=true", &ref));
    T_OK(ctx, jopt_ctx_set_engine(ctx, JOPT_ENGINE_JIT));
    for (int t = 0; t < 2; t++) {
        T_OK(ctx, jopt_step(o, NULL, NULL, NULL));
        T_OK(ctx, jopt_step(ref, NULL, NULL, NULL));
    }
    assert_placed_apart(ctx, o, p);
    assert_bits(p, q, n, "placed state: param after 2 steps");

    size_t need = 0;
    T_OK(ctx, jopt_state_size(o, &need));
    void *buf = malloc(need);
    assert_non_null(buf);
    T_OK(ctx, jopt_state_save_mem(o, buf, need, &need));
    T_OK(ctx, jopt_optim_new(ctx, "adam", &ga, 1, "lr=0.01 amsgrad=true", &back));
    T_OK(ctx, jopt_state_load_mem(back, buf, need));
    assert_placed_apart(ctx, back, p);
    T_OK(ctx, jopt_step(back, NULL, NULL, NULL)); /* on from the loaded state */
    T_OK(ctx, jopt_step(ref, NULL, NULL, NULL));
    assert_bits(p, q, n, "loaded placed state: param after step 3");

    free(buf);
    jopt_optim_free(o);
    jopt_optim_free(ref);
    jopt_optim_free(back);
    free(p), free(g), free(q);
}

static void test_state_sgd_momentum_buffer_clones_first_grad(void **state)
{
    jopt_ctx *ctx = *state;
    const int64_t n = 29;
    float *p = t_alloc(n), *g = t_alloc(n), *q = t_alloc(n), *want = t_alloc(n);
    t_fill(p, n, 110, 0.0);
    t_fill(g, n, 111, 0.2);
    memcpy(q, p, (size_t)n * sizeof(float));
    float *p0 = t_copy(p, n);
    jopt_param a = {p, g, n}, b = {q, g, n};
    jopt_group ga = {&a, 1, "momentum=0.9 dampening=0.5"}, gb = {&b, 1, NULL};
    jopt_optim *mom = NULL, *plain = NULL;
    T_OK(ctx, jopt_optim_new(ctx, "sgd", &ga, 1, "lr=0.1", &mom));
    T_OK(ctx, jopt_optim_new(ctx, "sgd", &gb, 1, "lr=0.1", &plain));
    int64_t step = -1;
    assert_null(state_of(ctx, mom, 0, 0, "momentum_buffer", &step));
    assert_int_equal(step, 0);
    T_OK(ctx, jopt_step(mom, NULL, NULL, NULL));
    T_OK(ctx, jopt_step(plain, NULL, NULL, NULL));

    /* first step: buf = clone(g), no dampening; p = p - lr·buf */
    const float *buf = state_of(ctx, mom, 0, 0, "momentum_buffer", &step);
    assert_non_null(buf);
    assert_int_equal((uintptr_t)buf % 64, 0);
    assert_int_equal(step, 1);
    assert_true(buf != g);
    assert_bits(buf, g, n, "momentum_buffer");
    sgd_expect(want, p0, g, n, 0.1);
    assert_bits(p, want, n, "param with momentum");
    assert_bits(q, want, n, "param without momentum");
    /* momentum = 0: no buffer, but the step count advances */
    assert_null(state_of(ctx, plain, 0, 0, "momentum_buffer", &step));
    assert_int_equal(step, 1);

    /* second step: dampening applies now */
    float *bb = t_copy(buf, n);
    memcpy(p0, p, (size_t)n * sizeof(float));
    t_fill(g, n, 112, 0.2);
    T_OK(ctx, jopt_step(mom, NULL, NULL, NULL));
    for (int64_t i = 0; i < n; i++) {
        bb[i] = fmaf(g[i], (float)(1 - 0.5), bb[i] * (float)0.9);
        want[i] = fmaf(bb[i], (float)-0.1, p0[i]);
    }
    assert_bits(state_of(ctx, mom, 0, 0, "momentum_buffer", NULL), bb, n,
                "momentum_buffer step 2");
    assert_bits(p, want, n, "param step 2");

    jopt_optim_free(mom);
    jopt_optim_free(plain);
    free(p), free(g), free(q), free(want), free(p0), free(bb);
}

static void test_state_unknown_name_is_einval(void **state)
{
    jopt_ctx *ctx = *state;
    float *p = t_alloc(3), *g = t_alloc(3);
    jopt_param prm = {p, g, 3};
    jopt_group grp = {&prm, 1, NULL};
    jopt_optim *sgd = NULL, *adam = NULL;
    T_OK(ctx, jopt_optim_new(ctx, "sgd", &grp, 1, "momentum=0.9", &sgd));
    T_OK(ctx, jopt_optim_new(ctx, "adam", &grp, 1, NULL, &adam));
    T_OK(ctx, jopt_step(sgd, NULL, NULL, NULL));
    T_OK(ctx, jopt_step(adam, NULL, NULL, NULL));
    const float *d = (const float *)(uintptr_t)64;
    int64_t step = 12345;
    assert_int_equal(jopt_state_get(sgd, 0, 0, "exp_avg", &d, &step), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "exp_avg"));
    assert_int_equal(jopt_state_get(adam, 0, 0, "momentum_buffer", &d, &step),
                     JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "momentum_buffer"));
    assert_int_equal(jopt_state_get(adam, 0, 0, "", &d, &step), JOPT_EINVAL);
    assert_int_equal(jopt_state_get(adam, 0, 1, "exp_avg", &d, &step), JOPT_EINVAL);
    assert_int_equal(jopt_state_get(adam, 1, 0, "exp_avg", &d, &step), JOPT_EINVAL);
    assert_int_equal(jopt_state_get(adam, 0, 0, NULL, &d, &step), JOPT_EINVAL);
    assert_int_equal(jopt_state_get(adam, 0, 0, "exp_avg", NULL, &step), JOPT_EINVAL);
    /* a failed call leaves the outputs alone */
    assert_ptr_equal(d, (const float *)(uintptr_t)64);
    assert_int_equal(step, 12345);
    /* while the real names work */
    assert_non_null(state_of(ctx, sgd, 0, 0, "momentum_buffer", &step));
    assert_int_equal(step, 1);
    assert_non_null(state_of(ctx, adam, 0, 0, "exp_avg_sq", NULL));
    jopt_optim_free(sgd);
    jopt_optim_free(adam);
    free(p), free(g);
}

/* ---- 7. kernel sharing --------------------------------------------------- */

static void test_kernel_equal_groups_share_one(void **state)
{
    jopt_ctx *ctx = *state;
    float *buf[8];
    for (int i = 0; i < 8; i++) {
        buf[i] = t_alloc(11);
        t_fill(buf[i], 11, 120 + (uint64_t)i, 0.0);
    }
    size_t c, h;
    stats(ctx, &c, &h);
    assert_int_equal(c, 0);
    assert_int_equal(h, 0);

    jopt_param a = {buf[0], buf[1], 11}, b = {buf[2], buf[3], 11};
    jopt_group two[2] = {{&a, 1, "lr=0.05"}, {&b, 1, "lr=0.05"}};
    jopt_optim *o1 = NULL, *o2 = NULL, *o3 = NULL, *o4 = NULL;
    T_OK(ctx, jopt_optim_new(ctx, "sgd", two, 2, NULL, &o1));
    stats(ctx, &c, &h);
    assert_int_equal(c, 1); /* one kernel for both groups */
    assert_int_equal(h, 1);

    /* the same options again, spelled through the defaults: nothing new */
    jopt_param a2 = {buf[4], buf[5], 11}, b2 = {buf[6], buf[7], 11};
    jopt_group two2[2] = {{&a2, 1, NULL}, {&b2, 1, "lr=5e-2"}};
    T_OK(ctx, jopt_optim_new(ctx, "sgd", two2, 2, "lr=0.05", &o2));
    stats(ctx, &c, &h);
    assert_int_equal(c, 1);
    assert_int_equal(h, 3);

    /* the shared kernel still updates each group's own buffers */
    float *pa = t_copy(buf[0], 11), *pb = t_copy(buf[2], 11), *want = t_alloc(11);
    T_OK(ctx, jopt_step(o1, NULL, NULL, NULL));
    sgd_expect(want, pa, buf[1], 11, 0.05);
    assert_bits(buf[0], want, 11, "group 0");
    sgd_expect(want, pb, buf[3], 11, 0.05);
    assert_bits(buf[2], want, 11, "group 1");
    jopt_optim_free(o1);
    jopt_optim_free(o2);

    /* with momentum (the kernel has a first-step variant): the second equal
     * group compiles nothing; a group with a different value does */
    jopt_group one = {&a, 1, "momentum=0.9"};
    T_OK(ctx, jopt_optim_new(ctx, "sgd", &one, 1, NULL, &o3));
    size_t c3, h3;
    stats(ctx, &c3, &h3);
    assert_true(c3 > 1);
    jopt_group mom2[2] = {{&a2, 1, "momentum=0.9"}, {&b2, 1, "momentum=0.9"}};
    T_OK(ctx, jopt_optim_new(ctx, "sgd", mom2, 2, NULL, &o4));
    stats(ctx, &c, &h);
    assert_int_equal(c, c3);
    assert_true(h > h3);
    jopt_optim_free(o4);
    o4 = NULL;
    jopt_group diff[2] = {{&a2, 1, "momentum=0.9"}, {&b2, 1, "momentum=0.8"}};
    T_OK(ctx, jopt_optim_new(ctx, "sgd", diff, 2, NULL, &o4));
    stats(ctx, &c, &h);
    assert_true(c > c3);

    jopt_optim_free(o3);
    jopt_optim_free(o4);
    for (int i = 0; i < 8; i++)
        free(buf[i]);
    free(pa), free(pb), free(want);
}

/* ---- 8. zero_grad -------------------------------------------------------- */

static void test_zero_grad_zeroes_present_grads_only(void **state)
{
    jopt_ctx *ctx = *state;
    const int64_t n[3] = {13, 1, 40};
    float *p[3], *g[3], *p0[3];
    jopt_param prm[4];
    for (int i = 0; i < 3; i++) {
        p[i] = t_alloc(n[i]);
        g[i] = t_alloc(n[i]);
        t_fill(p[i], n[i], 130 + (uint64_t)i, 0.0);
        t_fill(g[i], n[i], 140 + (uint64_t)i, 0.0);
        p0[i] = t_copy(p[i], n[i]);
        prm[i] = (jopt_param){p[i], g[i], n[i]};
    }
    prm[3] = (jopt_param){NULL, NULL, 0}; /* an empty parameter */
    jopt_group groups[2] = {{prm, 2, NULL}, {&prm[2], 2, "lr=0.5"}};
    jopt_optim *opt = NULL;
    T_OK(ctx, jopt_optim_new(ctx, "adam", groups, 2, NULL, &opt));
    /* gradient 2 is detached: its buffer is no longer the optimizer's */
    T_OK(ctx, jopt_set_grad(opt, 1, 0, NULL));
    float *g2 = t_copy(g[2], n[2]);
    T_OK(ctx, jopt_zero_grad(opt));
    float *zero = t_alloc(40);
    assert_bits(g[0], zero, n[0], "grad 0");
    assert_bits(g[1], zero, n[1], "grad 1");
    assert_bits(g[2], g2, n[2], "detached grad");
    for (int i = 0; i < 3; i++)
        assert_bits(p[i], p0[i], n[i], "param");
    /* zero_grad makes no state and takes no step */
    assert_int_equal(step_of(ctx, opt, 0, 0, "exp_avg"), 0);
    assert_null(state_of(ctx, opt, 0, 0, "exp_avg", NULL));
    assert_int_equal(jopt_zero_grad(NULL), JOPT_EINVAL);
    jopt_optim_free(opt);
    for (int i = 0; i < 3; i++)
        free(p[i]), free(g[i]), free(p0[i]);
    free(g2), free(zero);
}

/* ---- 9. JIT == reference interpreter ------------------------------------- */

static void run_engines(jopt_ctx *ctx, const char *spec, const char *options)
{
    enum { NP = 3, STEPS = 10 };
    static const int64_t n[NP] = {1, 17, 1000};
    static const char *const names[3] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    float *p[2][NP], *g[NP];
    jopt_param prm[2][NP];
    jopt_optim *opt[2] = {NULL, NULL};
    for (int i = 0; i < NP; i++) {
        g[i] = t_alloc(n[i]);
        p[0][i] = t_alloc(n[i]);
        t_fill(p[0][i], n[i], 150 + (uint64_t)i, 0.0);
        p[1][i] = t_copy(p[0][i], n[i]);
        for (int e = 0; e < 2; e++)
            prm[e][i] = (jopt_param){p[e][i], g[i], n[i]};
    }
    for (int e = 0; e < 2; e++) {
        jopt_group grp = {prm[e], NP, NULL};
        T_OK(ctx, jopt_ctx_set_engine(ctx, e ? JOPT_ENGINE_REFERENCE : JOPT_ENGINE_JIT));
        T_OK(ctx, jopt_optim_new(ctx, spec, &grp, 1, options, &opt[e]));
    }
    T_OK(ctx, jopt_ctx_set_engine(ctx, JOPT_ENGINE_JIT));
    float *init = t_copy(p[0][2], n[2]);
    for (int s = 0; s < STEPS; s++) {
        for (int i = 0; i < NP; i++)
            t_fill(g[i], n[i], 1000 + (uint64_t)(NP * s + i), 0.05);
        for (int e = 0; e < 2; e++)
            T_OK(ctx, jopt_step(opt[e], NULL, NULL, NULL));
        for (int i = 0; i < NP; i++) {
            assert_bits(p[0][i], p[1][i], n[i], "param: JIT vs reference");
            for (int k = 0; k < 3; k++) {
                int64_t st[2];
                const float *d[2];
                for (int e = 0; e < 2; e++)
                    d[e] = state_of(ctx, opt[e], 0, (size_t)i, names[k], &st[e]);
                assert_int_equal(st[0], s + 1);
                assert_int_equal(st[1], s + 1);
                assert_non_null(d[0]);
                assert_non_null(d[1]);
                assert_bits(d[0], d[1], n[i], names[k]);
            }
        }
    }
    /* and the run did move the parameters */
    assert_true(memcmp(init, p[0][2], (size_t)n[2] * sizeof(float)) != 0);
    for (int e = 0; e < 2; e++)
        jopt_optim_free(opt[e]);
    for (int i = 0; i < NP; i++)
        free(g[i]), free(p[0][i]), free(p[1][i]);
    free(init);
}

static void test_engine_jit_equals_reference_adam(void **state)
{
    jopt_ctx *ctx = *state;
    run_engines(ctx, "adam", "lr=0.01 amsgrad=true weight_decay=0.01");
    run_engines(ctx, "adamw", "lr=0.003 amsgrad=true maximize=true");
}

/* ---- 10. specs by path --------------------------------------------------- */

static const char SIGNSGD[] =
    "return { hyper = { lr = 0.01 },\n"
    "         update = function (p, g, s, h) return p - h.lr * sign(g) end }\n";

static void signsgd_expect(float *want, const float *p, const float *g,
                           int64_t n, double lr)
{
    for (int64_t i = 0; i < n; i++) {
        float s = (float)((g[i] > 0) - (g[i] < 0));
        want[i] = p[i] - (float)lr * s;
    }
}

static void test_spec_by_path_and_search_path(void **state)
{
    jopt_ctx *ctx = *state;
    const int64_t n = 23;
    float *p = t_alloc(n), *g = t_alloc(n), *want = t_alloc(n);
    t_fill(p, n, 160, 0.0);
    t_fill(g, n, 161, 0.2);
    float *p0 = t_copy(p, n);
    jopt_param prm = {p, g, n};
    jopt_group grp = {&prm, 1, NULL};
    jopt_optim *opt = NULL;

    /* a shipped spec by its path */
    T_OK(ctx, jopt_optim_new(ctx, JOPT_SOURCE_DIR "/specs/sgd.lua", &grp, 1,
                             "lr=0.25", &opt));
    assert_true(opt_get(ctx, opt, 0, "lr") == 0.25);
    assert_true(opt_get(ctx, opt, 0, "momentum") == 0.0);
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    sgd_expect(want, p0, g, n, 0.25);
    assert_bits(p, want, n, "sgd.lua by path");
    jopt_optim_free(opt);
    opt = NULL;

    /* a user spec in a temp folder */
    char dir[] = "/tmp/jopt_test_optim_XXXXXX", file[128], path[512];
    assert_non_null(mkdtemp(dir));
    snprintf(file, sizeof file, "%s/signsgd.lua", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(SIGNSGD, 1, sizeof SIGNSGD - 1, f), sizeof SIGNSGD - 1);
    assert_int_equal(fclose(f), 0);

    memcpy(p0, p, (size_t)n * sizeof(float));
    T_OK(ctx, jopt_optim_new(ctx, file, &grp, 1, NULL, &opt));
    assert_true(opt_get(ctx, opt, 0, "lr") == 0.01);
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    signsgd_expect(want, p0, g, n, 0.01);
    assert_bits(p, want, n, "signsgd by path");
    /* it has options like any spec */
    T_OK(ctx, jopt_option_set(opt, 0, "lr", 0.125));
    memcpy(p0, p, (size_t)n * sizeof(float));
    t_fill(g, n, 162, 0.2);
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    signsgd_expect(want, p0, g, n, 0.125);
    assert_bits(p, want, n, "signsgd lr=0.125");
    double v;
    assert_int_equal(jopt_option_get(opt, 0, "momentum", &v), JOPT_EINVAL);
    jopt_optim_free(opt);
    opt = NULL;

    /* by name, through the search path (which replaces the built-in one) */
    T_OK(ctx, jopt_ctx_set_spec_path(ctx, dir));
    memcpy(p0, p, (size_t)n * sizeof(float));
    T_OK(ctx, jopt_optim_new(ctx, "signsgd", &grp, 1, "lr=0.5", &opt));
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    signsgd_expect(want, p0, g, n, 0.5);
    assert_bits(p, want, n, "signsgd by name");
    jopt_optim_free(opt);
    opt = NULL;
    assert_int_equal(jopt_optim_new(ctx, "sgd", &grp, 1, NULL, &opt), JOPT_ESPEC);
    assert_null(opt);
    assert_true(strlen(jopt_errmsg(ctx)) > 0);
    /* several folders, searched in order */
    snprintf(path, sizeof path, "%s:%s/specs", dir, JOPT_SOURCE_DIR);
    T_OK(ctx, jopt_ctx_set_spec_path(ctx, path));
    T_OK(ctx, jopt_optim_new(ctx, "sgd", &grp, 1, NULL, &opt));
    assert_true(opt_get(ctx, opt, 0, "lr") == 1e-3);
    jopt_optim_free(opt);
    opt = NULL;
    T_OK(ctx, jopt_optim_new(ctx, "signsgd", &grp, 1, NULL, &opt));
    assert_true(opt_get(ctx, opt, 0, "lr") == 0.01);
    jopt_optim_free(opt);

    assert_int_equal(unlink(file), 0);
    assert_int_equal(rmdir(dir), 0);
    free(p), free(g), free(want), free(p0);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup_ctx, teardown_ctx)
    const struct CMUnitTest tests[] = {
        T(test_options_group_defaults_fill_missing),
        T(test_options_tuples_in_every_syntax),
        T(test_step_each_group_uses_its_own_lr),
        T(test_step_closure_loss_returned_and_called_once),
        T(test_step_without_closure_loss_is_nan),
        T(test_step_closure_error_changes_nothing),
        T(test_options_set_takes_effect_next_step),
        T(test_step_param_without_grad_untouched),
        T(test_state_adam_created_at_first_step),
        T(test_state_large_arrays_placed_apart),
        T(test_state_sgd_momentum_buffer_clones_first_grad),
        T(test_state_unknown_name_is_einval),
        T(test_kernel_equal_groups_share_one),
        T(test_zero_grad_zeroes_present_grads_only),
        T(test_engine_jit_equals_reference_adam),
        T(test_spec_by_path_and_search_path),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
