/*
 * test_kernels.c - the JIT kernel against the reference interpreter, bit for
 * bit, for every option combination of SGD, Adam and AdamW; on lengths that
 * leave vector tails, one tensor and many, with zeros, subnormals, infinities
 * and NaNs in the data.  Also: the optimised kernel is vectorized, and
 * options that are off leave no trace in it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

/* lengths around the vector width (16 floats with AVX-512) and its unroll */
static const int64_t lengths[] = {1, 3, 15, 16, 17, 31, 33, 63, 65, 1000, 4099};
#define NLEN (sizeof lengths / sizeof lengths[0])
#define STEPS 4

/* equal bits, or both NaN (payloads are not specified across code paths) */
static void assert_same_bits(const float *a, const float *b, int64_t n,
                             const char *what, const char *options)
{
    for (int64_t i = 0; i < n; i++) {
        if (isnan(a[i]) && isnan(b[i]))
            continue;
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
            fail_msg("%s [%lld] differs under \"%s\": jit %.9g, reference %.9g",
                     what, (long long)i, options, (double)a[i], (double)b[i]);
    }
}

/* gradients with the awkward values sprinkled in */
static void fill_grad(float *g, int64_t n, uint64_t seed)
{
    t_fill(g, n, seed, 0.05);
    static const float special[] = {0.0f, -0.0f, 1e-40f, -1e-42f, INFINITY,
                                    -INFINITY, NAN, 3e38f, -3e38f, 1e-30f};
    for (int64_t i = (int64_t)(seed % 7); i < n; i += 97)
        g[i] = special[(size_t)(i / 97 + seed) % (sizeof special / sizeof special[0])];
}

typedef struct run {
    jopt_ctx *ctx;
    jopt_optim *opt;
    jopt_param params[NLEN];
} run;

static void run_new(run *r, jopt_engine engine, const char *spec,
                    const char *options, size_t ntensors)
{
    assert_int_equal(jopt_ctx_new(&r->ctx), JOPT_OK);
    T_OK(r->ctx, jopt_ctx_set_engine(r->ctx, engine));
    for (size_t t = 0; t < ntensors; t++) {
        int64_t n = lengths[NLEN - ntensors + t];
        r->params[t].numel = n;
        r->params[t].param = t_alloc(n);
        r->params[t].grad = t_alloc(n);
        t_fill(r->params[t].param, n, 1000 + t, 0.02);
    }
    jopt_group group = {r->params, ntensors, options};
    T_OK(r->ctx, jopt_optim_new(r->ctx, spec, &group, 1, NULL, &r->opt));
}

static void run_free(run *r, size_t ntensors)
{
    jopt_optim_free(r->opt);
    jopt_ctx_free(r->ctx);
    for (size_t t = 0; t < ntensors; t++) {
        free(r->params[t].param);
        free(r->params[t].grad);
    }
}

/* Runs `options` with both engines over `ntensors` tensors (the longest
 * lengths last) and compares parameters and every state after each step. */
static void compare(const char *spec, const char *options, size_t ntensors)
{
    run jit, ref;
    run_new(&jit, JOPT_ENGINE_JIT, spec, options, ntensors);
    run_new(&ref, JOPT_ENGINE_REFERENCE, spec, options, ntensors);
    jopt_spec *sp;
    T_OK(jit.ctx, jopt_spec_open(jit.ctx, spec, options, &sp));
    for (int s = 0; s < STEPS; s++) {
        for (size_t t = 0; t < ntensors; t++) {
            fill_grad(jit.params[t].grad, jit.params[t].numel, 77 * (uint64_t)s + t);
            memcpy(ref.params[t].grad, jit.params[t].grad,
                   (size_t)jit.params[t].numel * sizeof(float));
        }
        T_OK(jit.ctx, jopt_step(jit.opt, NULL, NULL, NULL));
        T_OK(ref.ctx, jopt_step(ref.opt, NULL, NULL, NULL));
        for (size_t t = 0; t < ntensors; t++) {
            int64_t n = jit.params[t].numel;
            assert_same_bits(jit.params[t].param, ref.params[t].param, n, "param", options);
            for (size_t k = 0; k < jopt_spec_nstate(sp); k++) {
                jopt_state_info info;
                T_OK(jit.ctx, jopt_spec_state(sp, k, &info));
                const char *name = info.name;
                const float *a, *b;
                T_OK(jit.ctx, jopt_state_get(jit.opt, 0, t, name, &a, NULL));
                T_OK(ref.ctx, jopt_state_get(ref.opt, 0, t, name, &b, NULL));
                assert_true((a == NULL) == (b == NULL));
                int64_t count;
                T_OK(jit.ctx, jopt_state_numel(jit.opt, 0, t, name, &count));
                assert_true(a ? count == 1 || count == n : count == 0);
                if (a)
                    assert_same_bits(a, b, count, name, options);
            }
        }
    }
    jopt_spec_free(sp);
    run_free(&jit, ntensors);
    run_free(&ref, ntensors);
}

static void compare_all_lengths(const char *spec, const char *options)
{
    compare(spec, options, NLEN); /* every length in one group */
    compare(spec, options, 1);    /* one odd-length tensor alone */
}

static void test_kernels_sgd_matches_reference(void **state)
{
    (void)state;
    static const char *const momentum[] = {"momentum=0", "momentum=0.9 dampening=0",
                                           "momentum=0.9 dampening=0.1",
                                           "momentum=0.9 nesterov=true"};
    char options[256];
    for (size_t m = 0; m < 4; m++)
        for (int wd = 0; wd < 2; wd++)
            for (int max = 0; max < 2; max++) {
                snprintf(options, sizeof options, "lr=0.05 %s weight_decay=%s maximize=%s",
                         momentum[m], wd ? "0.01" : "0", max ? "true" : "false");
                compare_all_lengths("sgd", options);
            }
}

static void test_kernels_adam_matches_reference(void **state)
{
    (void)state;
    char options[256];
    for (int wd = 0; wd < 2; wd++)
        for (int ams = 0; ams < 2; ams++)
            for (int max = 0; max < 2; max++)
                for (int dec = 0; dec < 2; dec++) {
                    snprintf(options, sizeof options,
                             "lr=0.01 betas=0.8,0.99 weight_decay=%s amsgrad=%s "
                             "maximize=%s decoupled_weight_decay=%s",
                             wd ? "0.1" : "0", ams ? "true" : "false",
                             max ? "true" : "false", dec ? "true" : "false");
                    compare_all_lengths("adam", options);
                }
}

static void test_kernels_adamw_matches_reference(void **state)
{
    (void)state;
    char options[256];
    for (int wd = 0; wd < 2; wd++)
        for (int ams = 0; ams < 2; ams++)
            for (int max = 0; max < 2; max++) {
                snprintf(options, sizeof options,
                         "weight_decay=%s amsgrad=%s maximize=%s",
                         wd ? "0.05" : "0", ams ? "true" : "false",
                         max ? "true" : "false");
                compare_all_lengths("adamw", options);
            }
}

/* every option switch of the rest of the family, one at a time and mixed */
static void test_kernels_family_matches_reference(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"adadelta", ""}, {"adadelta", "rho=0.5 eps=1e-4 weight_decay=0.1 maximize=true"},
        {"adagrad", ""}, {"adagrad", "lr_decay=0.01 initial_accumulator_value=0.5"},
        {"adagrad", "eps=1e-3 weight_decay=0.1 maximize=true"},
        {"adamax", ""}, {"adamax", "betas=0.8,0.99 weight_decay=0.1 maximize=true"},
        {"asgd", ""}, {"asgd", "lambd=1e-2 alpha=0.5 t0=2"},
        {"asgd", "weight_decay=0.1 maximize=true t0=1"},
        {"nadam", ""}, {"nadam", "momentum_decay=1e-2 weight_decay=0.1"},
        {"nadam", "decoupled_weight_decay=true weight_decay=0.1 maximize=true"},
        {"radam", "lr=0.01"}, {"radam", "betas=0.8,0.9 weight_decay=0.1"},
        {"radam", "decoupled_weight_decay=true weight_decay=0.1 maximize=true"},
        {"rmsprop", ""}, {"rmsprop", "centered=true"}, {"rmsprop", "momentum=0.9"},
        {"rmsprop", "centered=true momentum=0.5 weight_decay=0.1 maximize=true"},
        {"rprop", ""}, {"rprop", "etas=0.3,1.5 step_sizes=1e-4,0.1 maximize=true"},
        {"lion", ""}, {"lion", "betas=0.8,0.95 weight_decay=0.1 maximize=true"},
        {"lamb", ""}, {"lamb", "weight_decay=0.01 maximize=true"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        compare_all_lengths(cases[i][0], cases[i][1]);
}

/* ---- what the optimised kernel looks like ------------------------------- */

static char *kernel_text(const char *spec_name, const char *options,
                         const char *what)
{
    jopt_ctx *ctx;
    jopt_spec *spec;
    const char *text;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    T_OK(ctx, jopt_ctx_set_spec_path(ctx, JOPT_SOURCE_DIR "/specs"));
    T_OK(ctx, jopt_spec_open(ctx, spec_name, options, &spec));
    T_OK(ctx, jopt_spec_emit(spec, NULL, what, &text));
    char *copy = strdup(text);
    jopt_spec_free(spec);
    jopt_ctx_free(ctx);
    return copy;
}

static int count(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static void test_kernels_are_vectorized(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"sgd", "momentum=0.9"}, {"adam", "amsgrad=true"}, {"adamw", ""}};
    for (size_t i = 0; i < 3; i++) {
        char *ir = kernel_text(cases[i][0], cases[i][1], "ir");
        /* the loop vectorizer widened the loop (16 lanes with AVX-512, 8 with
         * AVX2) and needed no runtime overlap checks thanks to noalias */
        int wide = count(ir, "<16 x float>") + count(ir, "<8 x float>");
        print_message("%s: %d vector float values in the optimised IR\n",
                      cases[i][0], wide);
        assert_true(wide > 0);
        assert_null(strstr(ir, "vector.memcheck"));
        char *as = kernel_text(cases[i][0], cases[i][1], "asm");
        assert_true(count(as, "%zmm") + count(as, "%ymm") > 0);
        free(ir);
        free(as);
    }
}

static void test_kernels_fold_disabled_options(void **state)
{
    (void)state;
    /* weight decay off: one fma (θ - lr·g); on: a second (g + wd·θ) */
    char *plain = kernel_text("sgd", "lr=0.1", "ir");
    char *wd = kernel_text("sgd", "lr=0.1 weight_decay=0.01", "ir");
    assert_true(count(wd, "@llvm.fma") > count(plain, "@llvm.fma"));
    /* momentum off: the kernel reads p and g only, and loads no state */
    assert_int_equal(count(plain, "load <16 x float>") + count(plain, "load <8 x float>") > 0, 1);
    /* amsgrad off: no maximum; on: llvm.maximum */
    char *adam = kernel_text("adam", "", "ir");
    char *ams = kernel_text("adam", "amsgrad=true", "ir");
    assert_int_equal(count(adam, "llvm.maximum"), 0);
    assert_true(count(ams, "llvm.maximum") > 0);
    /* the hyperparameters are constants in the code: lr=0.1 is -0.1 folded */
    assert_non_null(strstr(plain, "0xBFB99999A0000000"));
    free(plain);
    free(wd);
    free(adam);
    free(ams);
}

static void test_kernels_layout_follows_options(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    float *p = t_alloc(8), *g = t_alloc(8);
    jopt_param param = {p, g, 8};
    jopt_group group = {&param, 1, NULL};
    jopt_optim *opt;
    const float *data;
    /* momentum 0: no momentum buffer after a step */
    T_OK(ctx, jopt_optim_new(ctx, "sgd", &group, 1, "lr=0.1", &opt));
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    T_OK(ctx, jopt_state_get(opt, 0, 0, "momentum_buffer", &data, NULL));
    assert_null(data);
    jopt_optim_free(opt);
    /* amsgrad off: no max_exp_avg_sq */
    T_OK(ctx, jopt_optim_new(ctx, "adam", &group, 1, NULL, &opt));
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    T_OK(ctx, jopt_state_get(opt, 0, 0, "max_exp_avg_sq", &data, NULL));
    assert_null(data);
    T_OK(ctx, jopt_state_get(opt, 0, 0, "exp_avg", &data, NULL));
    assert_non_null(data);
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    free(p);
    free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernels_sgd_matches_reference),
        cmocka_unit_test(test_kernels_adam_matches_reference),
        cmocka_unit_test(test_kernels_adamw_matches_reference),
        cmocka_unit_test(test_kernels_family_matches_reference),
        cmocka_unit_test(test_kernels_are_vectorized),
        cmocka_unit_test(test_kernels_fold_disabled_options),
        cmocka_unit_test(test_kernels_layout_follows_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
