/*
 * test_runtime.c - hyperparameters passed per step instead of folded: the
 * same bits as folding, one compile for a schedule of any length, and
 * refusal where the spec does not allow it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define N 1031

typedef struct twin {
    jopt_ctx *ctx;
    jopt_optim *opt;
    float *p, *g;
} twin;

static void twin_new(twin *t, const char *spec, const char *options)
{
    assert_int_equal(jopt_ctx_new(&t->ctx), JOPT_OK);
    t->p = t_alloc(N);
    t->g = t_alloc(N);
    t_fill(t->p, N, 7, 0.0);
    jopt_param param = {t->p, t->g, N};
    jopt_group group = {&param, 1, options};
    T_OK(t->ctx, jopt_optim_new(t->ctx, spec, &group, 1, NULL, &t->opt));
}

static void twin_free(twin *t)
{
    jopt_optim_free(t->opt);
    jopt_ctx_free(t->ctx);
    free(t->p);
    free(t->g);
}

/* every spec: its runtime hyperparameters passed per step give the same
 * bits as folded ones, step after step */
static void test_runtime_same_bits_as_folded(void **state)
{
    (void)state;
    static const char *const cases[][3] = {
        {"sgd", "lr=0.05 momentum=0.9 dampening=0.1", "lr dampening"},
        {"adam", "lr=0.01 amsgrad=true", "lr betas eps"},
        {"adamw", "lr=0.01", "lr betas eps"},
        {"adadelta", "lr=0.5", "lr rho eps"},
        {"adagrad", "lr=0.05 lr_decay=0.01", "lr lr_decay eps"},
        {"adamax", "", "lr betas eps"},
        {"asgd", "t0=2 lambd=0.01", "lambd alpha t0"},
        {"nadam", "", "lr betas eps momentum_decay"},
        {"radam", "lr=0.01", "lr betas eps"},
        {"rmsprop", "centered=true", "lr alpha eps"},
        {"rprop", "", "etas step_sizes"},
        {"lion", "lr=0.001", "lr betas"},
        {"lamb", "", "lr betas eps"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        twin folded, passed;
        twin_new(&folded, cases[c][0], cases[c][1]);
        twin_new(&passed, cases[c][0], cases[c][1]);
        char names[64];
        snprintf(names, sizeof names, "%s", cases[c][2]);
        for (char *save, *n = strtok_r(names, " ", &save); n; n = strtok_r(NULL, " ", &save)) {
            T_OK(passed.ctx, jopt_option_runtime(passed.opt, 0, n));
            assert_int_equal(jopt_option_is_runtime(passed.opt, 0, n), 1);
            assert_int_equal(jopt_option_is_runtime(folded.opt, 0, n), 0);
        }
        for (int s = 0; s < 8; s++) {
            t_fill(folded.g, N, 300 + (uint64_t)s, 0.05);
            memcpy(passed.g, folded.g, N * sizeof(float));
            T_OK(folded.ctx, jopt_step(folded.opt, NULL, NULL, NULL));
            T_OK(passed.ctx, jopt_step(passed.opt, NULL, NULL, NULL));
            if (memcmp(folded.p, passed.p, N * sizeof(float)) != 0)
                fail_msg("%s: per-step hyperparameters differ from folded ones "
                         "at step %d", cases[c][0], s + 1);
        }
        twin_free(&folded);
        twin_free(&passed);
    }
}

/* torch's CosineAnnealingLR, closed form, over 1000 steps: jopt compiles
 * once at construction and once when lr first changes; with SGD, every
 * step is checked to use that step's lr */
static void test_runtime_schedule_compiles_twice(void **state)
{
    (void)state;
    twin t;
    twin_new(&t, "adam", "lr=0.01");
    size_t c0, c;
    jopt_ctx_stats(t.ctx, &c0, NULL);
    assert_int_equal(c0, 1);
    for (int s = 0; s < 1000; s++) {
        double lr = 0.001 + 0.5 * (0.01 - 0.001) * (1 + cos(M_PI * s / 1000));
        T_OK(t.ctx, jopt_option_set(t.opt, 0, "lr", lr));
        t_fill(t.g, N, 900 + (uint64_t)s, 0.05);
        T_OK(t.ctx, jopt_step(t.opt, NULL, NULL, NULL));
    }
    jopt_ctx_stats(t.ctx, &c, NULL);
    print_message("cosine schedule, 1000 steps: %zu kernels compiled\n", c);
    assert_int_equal(c, 2);
    twin_free(&t);

    /* SGD: the step is exactly θ - lr·g with each step's lr */
    twin s;
    twin_new(&s, "sgd", "lr=0.1");
    float *want = t_alloc(N);
    for (int k = 0; k < 200; k++) {
        double lr = 0.1 * pow(0.97, k);
        T_OK(s.ctx, jopt_option_set(s.opt, 0, "lr", lr));
        t_fill(s.g, N, 1200 + (uint64_t)k, 0.05);
        for (int i = 0; i < N; i++)
            want[i] = fmaf(s.g[i], (float)-lr, s.p[i]);
        T_OK(s.ctx, jopt_step(s.opt, NULL, NULL, NULL));
        assert_memory_equal(s.p, want, N * sizeof(float));
    }
    jopt_ctx_stats(s.ctx, &c, NULL);
    assert_int_equal(c, 2);
    free(want);
    twin_free(&s);
}

static void test_runtime_refused_for_structural_options(void **state)
{
    (void)state;
    twin t;
    twin_new(&t, "sgd", "lr=0.1 momentum=0.9");
    assert_int_equal(jopt_option_runtime(t.opt, 0, "momentum"), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(t.ctx), "'momentum'"));
    assert_int_equal(jopt_option_runtime(t.opt, 0, "nope"), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(t.ctx), "unknown option 'nope'"));
    assert_int_equal(jopt_option_runtime(t.opt, 3, "lr"), JOPT_EINVAL);
    /* momentum still changes, by recompiling */
    size_t c0, c;
    jopt_ctx_stats(t.ctx, &c0, NULL);
    T_OK(t.ctx, jopt_option_set(t.opt, 0, "momentum", 0.5));
    jopt_ctx_stats(t.ctx, &c, NULL);
    assert_true(c > c0);
    assert_int_equal(jopt_option_is_runtime(t.opt, 0, "momentum"), 0);
    /* a refused value leaves lr folded */
    assert_int_equal(jopt_option_set(t.opt, 0, "lr", -1), JOPT_EINVAL);
    assert_int_equal(jopt_option_is_runtime(t.opt, 0, "lr"), 0);
    twin_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_runtime_same_bits_as_folded),
        cmocka_unit_test(test_runtime_schedule_compiles_twice),
        cmocka_unit_test(test_runtime_refused_for_structural_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
