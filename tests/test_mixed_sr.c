/*
 * test_mixed_sr.c - stochastic rounding to bfloat16 (stochastic_rounding=
 * true): its statistics (unbiased over elements and over steps, for
 * parameters and state; neighbours uncorrelated) and its determinism (the
 * same bits for 1 and 2 threads, for both engines, across a checkpoint;
 * other bits for another seed or another tensor).
 *
 * The statistics use SGD with lr = 1 on bfloat16 parameters at 1.0 and
 * float32 gradients -x, so that each new value is 1 + x exactly in float32,
 * a fraction `frac` of bfloat16's spacing (2^-7) above 1: stochastic
 * rounding must give 1 + 2^-7 with probability frac.  Bounds are 5
 * standard errors, so a correct generator fails about once in 10^6 runs,
 * and the runs are seeded: the outcome is fixed.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cg.h"
#include "helpers.h"
#include "mixed_helpers.h"

#define ONE 0x3f80u     /* bfloat16 1.0 */
#define ONE_UP 0x3f81u  /* 1 + 2^-7 */

typedef struct sgd_rig {
    jopt_ctx *ctx;
    jopt_optim *opt;
    uint16_t *p;
    float *g;
    int64_t n;
} sgd_rig;

static void sgd_new(sgd_rig *r, int64_t n, const char *options, int threads)
{
    assert_int_equal(jopt_ctx_new(&r->ctx), JOPT_OK);
    T_OK(r->ctx, jopt_ctx_set_threads(r->ctx, threads));
    r->n = n;
    r->p = m_alloc(CG_DT_BF16, n);
    r->g = t_alloc(n);
    jopt_param par = {(float *)(void *)r->p, r->g, n};
    char opts[256];
    snprintf(opts, sizeof opts, "lr=1 dtype=bfloat16 grad_dtype=float32 %s", options);
    jopt_group grp = {&par, 1, opts};
    T_OK(r->ctx, jopt_optim_new(r->ctx, "sgd", &grp, 1, NULL, &r->opt));
}

static void sgd_free(sgd_rig *r)
{
    jopt_optim_free(r->opt);
    jopt_ctx_free(r->ctx);
    free(r->p), free(r->g);
}

/* every parameter at `sign` x 1.0, its new value sign x (1 + frac 2^-7) */
static void sgd_step(sgd_rig *r, double frac, int sign)
{
    uint16_t one = (uint16_t)(ONE | (sign < 0 ? 0x8000u : 0));
    float x = (float)(frac * 0x1p-7);
    for (int64_t i = 0; i < r->n; i++) {
        r->p[i] = one;
        r->g[i] = (float)-sign * x;
    }
    T_OK(r->ctx, jopt_step(r->opt, NULL, NULL, NULL));
}

/* the share stochastic rounding must round up: the bits of float32
 * 1 + frac 2^-7 below bfloat16's last, over 2^16 */
static double share_up(double frac)
{
    float v = 1.0f + (float)(frac * 0x1p-7);
    uint32_t bits;
    memcpy(&bits, &v, 4);
    return (double)(bits & 0xffff) / 65536;
}

static void within(double got, double want, double sigma, const char *what)
{
    print_message("%-48s %.6f (want %.6f, %+.2f sigma)\n", what, got, want,
                  (got - want) / sigma);
    if (fabs(got - want) > 5 * sigma)
        fail_msg("%s: %.6f is more than 5 sigma (%.2e) from %.6f", what, got, sigma, want);
}

/* Over 2^20 elements of one step, and for each sign: the share rounded up
 * is frac, neighbours are independent; round to nearest never goes up. */
static void test_sr_unbiased_over_elements(void **state)
{
    (void)state;
    static const double fracs[] = {0.1, 0.3, 0.5, 0.77, 0.999};
    const int64_t n = 1 << 20;
    sgd_rig r;
    sgd_new(&r, n, "stochastic_rounding=true seed=7", 0);
    for (size_t k = 0; k < sizeof fracs / sizeof fracs[0]; k++)
        for (int sign = 1; sign >= -1; sign -= 2) {
            sgd_step(&r, fracs[k], sign);
            uint16_t up = (uint16_t)(ONE_UP | (sign < 0 ? 0x8000u : 0));
            int64_t ups = 0, pairs = 0;
            for (int64_t i = 0; i < n; i++) {
                if ((r.p[i] & 0x7fff) != ONE && r.p[i] != up)
                    fail_msg("element %lld became %#x", (long long)i, r.p[i]);
                ups += r.p[i] == up;
                pairs += i && r.p[i] == up && r.p[i - 1] == up;
            }
            /* the exact share: the float32 value's bits below bfloat16's */
            double f = share_up(fracs[k]);
            char what[96];
            snprintf(what, sizeof what, "share rounded up, frac %.3f, sign %+d", fracs[k], sign);
            within((double)ups / (double)n, f, sqrt(f * (1 - f) / (double)n), what);
            snprintf(what, sizeof what, "neighbours both up, frac %.3f, sign %+d", fracs[k], sign);
            within((double)pairs / (double)(n - 1), f * f,
                   sqrt(f * f * (1 - f * f) / (double)(n - 1)), what);
        }
    sgd_free(&r);
    sgd_new(&r, n, "", 0); /* to nearest: 1 + 0.3 ulp is 1 */
    sgd_step(&r, 0.3, 1);
    for (int64_t i = 0; i < n; i++)
        assert_int_equal(r.p[i], ONE);
    sgd_free(&r);
}

/* Each element, step after step: its own share of ups is frac; and the
 * same element at consecutive steps is independent. */
static void test_sr_unbiased_over_steps(void **state)
{
    (void)state;
    const int64_t n = 64;
    const int steps = 8192;
    const double frac = 0.3;
    sgd_rig r;
    sgd_new(&r, n, "stochastic_rounding=true", 1);
    int64_t ups[64] = {0}, total = 0, both = 0;
    uint16_t last[64] = {0};
    for (int s = 0; s < steps; s++) {
        sgd_step(&r, frac, 1);
        for (int64_t i = 0; i < n; i++) {
            ups[i] += r.p[i] == ONE_UP;
            both += s && r.p[i] == ONE_UP && last[i] == ONE_UP;
            last[i] = r.p[i];
        }
    }
    double f = share_up(frac);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double share = (double)ups[i] / steps, z = fabs(share - f) / sqrt(f * (1 - f) / steps);
        worst = z > worst ? z : worst;
        total += ups[i];
    }
    print_message("worst element over %d steps: %.2f sigma\n", steps, worst);
    assert_true(worst < 5.5); /* the largest of 64 draws */
    within((double)total / (double)(n * steps), f, sqrt(f * (1 - f) / (double)(n * steps)),
           "share rounded up, all elements and steps");
    within((double)both / (double)(n * (steps - 1)), f * f,
           sqrt(f * f * (1 - f * f) / (double)(n * (steps - 1))),
           "up at two consecutive steps");
    sgd_free(&r);
}

/* The state rounds stochastically too: Adam's first moment after one step
 * is (1 - beta1) g; its mean over 2^20 elements is that, unbiased. */
static void test_sr_state_unbiased(void **state)
{
    (void)state;
    const int64_t n = 1 << 20;
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    uint16_t *p = m_alloc(CG_DT_BF16, n), *g = m_alloc(CG_DT_BF16, n);
    for (int64_t i = 0; i < n; i++)
        p[i] = ONE, g[i] = 0x3f9a; /* 1.203125 */
    jopt_param par = {(float *)(void *)p, (float *)(void *)g, n};
    jopt_group grp = {&par, 1, "dtype=bfloat16 state_dtype=bfloat16 stochastic_rounding=true"};
    jopt_optim *opt;
    T_OK(ctx, jopt_optim_new(ctx, "adam", &grp, 1, NULL, &opt));
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    const float *m;
    T_OK(ctx, jopt_state_get(opt, 0, 0, "exp_avg", &m, NULL));
    /* the float32 value: lerp(0, g, 1 - beta1) = fma(w, g, 0), one rounding */
    float exact = (float)(1 - 0.9) * 1.203125f;
    uint32_t bits;
    memcpy(&bits, &exact, 4);
    uint16_t below = (uint16_t)(bits >> 16), above = (uint16_t)(below + 1);
    double lo = cg_dt_get(&below, CG_DT_BF16, 0), hi = cg_dt_get(&above, CG_DT_BF16, 0);
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = cg_dt_get(m, CG_DT_BF16, i);
        assert_true(v == lo || v == hi);
        sum += v;
    }
    double f = ((double)exact - lo) / (hi - lo);
    within(sum / (double)n, exact, (hi - lo) * sqrt(f * (1 - f) / (double)n),
           "mean of exp_avg, stochastic");
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    free(p), free(g);
}

/* ---- determinism ------------------------------------------------------------ */

#define DT 3
static const int64_t dsizes[DT] = {1 << 20, 1000003, 37};

typedef struct adam_rig {
    jopt_ctx *ctx;
    jopt_optim *opt;
    uint16_t *p[DT], *g[DT];
} adam_rig;

static void adam_new(adam_rig *r, int threads, jopt_engine engine, const char *seed)
{
    assert_int_equal(jopt_ctx_new(&r->ctx), JOPT_OK);
    T_OK(r->ctx, jopt_ctx_set_threads(r->ctx, threads));
    T_OK(r->ctx, jopt_ctx_set_engine(r->ctx, engine));
    jopt_param ps[DT];
    for (int t = 0; t < DT; t++) {
        r->p[t] = m_alloc(CG_DT_BF16, dsizes[t]);
        r->g[t] = m_alloc(CG_DT_BF16, dsizes[t]);
        m_fill(r->p[t], CG_DT_BF16, dsizes[t], 11, 0); /* the same values in each */
        ps[t] = (jopt_param){(float *)(void *)r->p[t], (float *)(void *)r->g[t], dsizes[t]};
    }
    char opts[128];
    snprintf(opts, sizeof opts, "lr=0.01 dtype=bfloat16 state_dtype=bfloat16 "
             "stochastic_rounding=true seed=%s", seed);
    jopt_group grp = {ps, DT, opts};
    T_OK(r->ctx, jopt_optim_new(r->ctx, "adam", &grp, 1, NULL, &r->opt));
}

static void adam_steps(adam_rig *r, int from, int to)
{
    for (int s = from; s < to; s++) {
        for (int t = 0; t < DT; t++)
            m_fill(r->g[t], CG_DT_BF16, dsizes[t], 50 + (uint64_t)s, 0.01);
        T_OK(r->ctx, jopt_step(r->opt, NULL, NULL, NULL));
    }
}

static void adam_free(adam_rig *r)
{
    jopt_optim_free(r->opt);
    jopt_ctx_free(r->ctx);
    for (int t = 0; t < DT; t++)
        free(r->p[t]), free(r->g[t]);
}

static int64_t differing(const uint16_t *a, const uint16_t *b, int64_t n)
{
    int64_t d = 0;
    for (int64_t i = 0; i < n; i++)
        d += a[i] != b[i];
    return d;
}

static void same_model(const adam_rig *a, const adam_rig *b, const char *what)
{
    for (int t = 0; t < DT; t++) {
        if (differing(a->p[t], b->p[t], dsizes[t]))
            fail_msg("%s: tensor %d's parameters differ", what, t);
        for (int k = 0; k < 2; k++) {
            const char *name = k ? "exp_avg_sq" : "exp_avg";
            const float *x, *y;
            T_OK(a->ctx, jopt_state_get(a->opt, 0, (size_t)t, name, &x, NULL));
            T_OK(b->ctx, jopt_state_get(b->opt, 0, (size_t)t, name, &y, NULL));
            if (differing((const uint16_t *)(const void *)x, (const uint16_t *)(const void *)y,
                          dsizes[t]))
                fail_msg("%s: tensor %d's %s differs", what, t, name);
        }
    }
}

static void test_sr_same_bits_any_threads_and_engine(void **state)
{
    (void)state;
    adam_rig one, two, ref;
    adam_new(&one, 1, JOPT_ENGINE_JIT, "3");
    adam_new(&two, 2, JOPT_ENGINE_JIT, "3");
    adam_new(&ref, 2, JOPT_ENGINE_REFERENCE, "3");
    assert_int_equal(jopt_ctx_threads(two.ctx), 2);
    adam_steps(&one, 0, 3);
    adam_steps(&two, 0, 3);
    adam_steps(&ref, 0, 3);
    same_model(&one, &two, "1 and 2 threads");
    same_model(&one, &ref, "JIT and reference");
    /* tensors 0 and 1 start equal and get equal gradients on their first
     * 1000003 elements: other tensors, other bits */
    int64_t d = differing(one.p[0], one.p[1], dsizes[1]);
    print_message("tensors 0 and 1: %lld of %lld parameters differ\n", (long long)d,
                  (long long)dsizes[1]);
    assert_true(d > dsizes[1] / 20);
    adam_rig other;
    adam_new(&other, 2, JOPT_ENGINE_JIT, "4");
    adam_steps(&other, 0, 3);
    d = differing(one.p[0], other.p[0], dsizes[0]);
    print_message("seed 3 and seed 4: %lld of %lld parameters differ\n", (long long)d,
                  (long long)dsizes[0]);
    assert_true(d > dsizes[0] / 20);
    adam_free(&one), adam_free(&two), adam_free(&ref), adam_free(&other);
}

/* Saved after 2 steps and loaded into an optimizer made with another seed:
 * the next steps give the bits of a run that never stopped. */
static void test_sr_resumes_from_a_checkpoint(void **state)
{
    (void)state;
    adam_rig a, b, c;
    adam_new(&a, 2, JOPT_ENGINE_JIT, "9007199254740992");
    adam_new(&b, 2, JOPT_ENGINE_JIT, "9007199254740992");
    adam_new(&c, 2, JOPT_ENGINE_JIT, "0");
    adam_steps(&a, 0, 4);
    adam_steps(&b, 0, 2);
    size_t len;
    T_OK(b.ctx, jopt_state_size(b.opt, &len));
    unsigned char *buf = malloc(len);
    T_OK(b.ctx, jopt_state_save_mem(b.opt, buf, len, NULL));
    for (int t = 0; t < DT; t++) /* the parameters are the caller's to save */
        memcpy(c.p[t], b.p[t], (size_t)dsizes[t] * 2);
    T_OK(c.ctx, jopt_state_load_mem(c.opt, buf, len));
    adam_steps(&c, 2, 4);
    same_model(&a, &c, "resumed");
    free(buf);
    adam_free(&a), adam_free(&b), adam_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sr_unbiased_over_elements),
        cmocka_unit_test(test_sr_unbiased_over_steps),
        cmocka_unit_test(test_sr_state_unbiased),
        cmocka_unit_test(test_sr_same_bits_any_threads_and_engine),
        cmocka_unit_test(test_sr_resumes_from_a_checkpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
