/*
 * test_family.c - the two optimizers torch.optim does not ship, written only
 * as spec files, against plain C implementations written from their papers:
 * Lion (Chen et al., 2023) bit for bit, LAMB (You et al., 2020) against a
 * double-precision implementation, within float rounding.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define N 1003
#define STEPS 6

/* ATen's lerp with a float weight (see codegen/interp.c) */
static float lerpf(float a, float b, float w)
{
    float d = b - a;
    return fabsf(w) < 0.5f ? fmaf(w, d, a) : fmaf(w - 1.0f, d, b);
}

static float signf(float x) { return (float)(0 < x) - (float)(x < 0); }

static jopt_optim *make(jopt_ctx *ctx, const char *spec, const char *options,
                        float *p, float *g)
{
    jopt_param param = {p, g, N};
    jopt_group group = {&param, 1, NULL};
    jopt_optim *opt;
    T_OK(ctx, jopt_optim_new(ctx, spec, &group, 1, options, &opt));
    return opt;
}

static void test_family_lion_matches_paper(void **state)
{
    (void)state;
    const double lr = 3e-3, b1 = 0.9, b2 = 0.99, wd = 0.1;
    float *p = t_alloc(N), *g = t_alloc(N), *want = t_alloc(N), *m = t_alloc(N);
    t_fill(p, N, 1, 0.0);
    memcpy(want, p, N * sizeof(float));
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    jopt_optim *opt = make(ctx, "lion", "lr=3e-3 betas=0.9,0.99 weight_decay=0.1", p, g);
    for (int s = 0; s < STEPS; s++) {
        t_fill(g, N, 100 + (uint64_t)s, 0.1);
        T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
        for (int i = 0; i < N; i++) { /* Program 1 of the paper */
            want[i] = want[i] * (float)(1 - lr * wd);
            float c = lerpf(m[i], g[i], (float)(1 - b1));
            want[i] = fmaf(signf(c), (float)-lr, want[i]);
            m[i] = lerpf(m[i], g[i], (float)(1 - b2));
        }
        assert_memory_equal(p, want, N * sizeof(float));
    }
    const float *exp_avg;
    T_OK(ctx, jopt_state_get(opt, 0, 0, "exp_avg", &exp_avg, NULL));
    assert_memory_equal(exp_avg, m, N * sizeof(float));
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    free(p), free(g), free(want), free(m);
}

static void test_family_lamb_matches_paper(void **state)
{
    (void)state;
    const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-6, wd = 0.01;
    float *p = t_alloc(N), *g = t_alloc(N);
    double *want = calloc(N, sizeof *want), *m = calloc(N, sizeof *m),
           *v = calloc(N, sizeof *v), *r = calloc(N, sizeof *r);
    t_fill(p, N, 2, 0.0);
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    jopt_optim *opt = make(ctx, "lamb", "lr=1e-2 weight_decay=0.01", p, g);
    for (int t = 1; t <= STEPS; t++) {
        /* each step starts the double reference from jopt's float state, so
         * that the comparison sees one step's rounding, not a drift */
        const float *ma, *va;
        T_OK(ctx, jopt_state_get(opt, 0, 0, "exp_avg", &ma, NULL));
        T_OK(ctx, jopt_state_get(opt, 0, 0, "exp_avg_sq", &va, NULL));
        for (int i = 0; i < N; i++) {
            want[i] = p[i];
            m[i] = ma ? ma[i] : 0;
            v[i] = va ? va[i] : 0;
        }
        t_fill(g, N, 200 + (uint64_t)t, 0.1);
        T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
        double pn = 0, rn = 0;
        for (int i = 0; i < N; i++) { /* Algorithm 2 of the paper */
            m[i] = b1 * m[i] + (1 - b1) * g[i];
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
            double mh = m[i] / (1 - pow(b1, t)), vh = v[i] / (1 - pow(b2, t));
            r[i] = mh / (sqrt(vh) + eps) + wd * want[i];
            pn += want[i] * want[i];
            rn += r[i] * r[i];
        }
        double trust = sqrt(pn) / sqrt(rn);
        double worst = 0;
        for (int i = 0; i < N; i++) {
            want[i] -= lr * trust * r[i];
            worst = fmax(worst, fabs(p[i] - want[i]) / fmax(1e-2, fabs(want[i])));
        }
        print_message("LAMB step %d: trust ratio %.6f, worst relative "
                      "difference from double %.2e\n", t, trust, worst);
        assert_true(worst < 1e-6);
    }
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    free(p), free(g), free(want), free(m), free(v), free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_family_lion_matches_paper),
        cmocka_unit_test(test_family_lamb_matches_paper),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
