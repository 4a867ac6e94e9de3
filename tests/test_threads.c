/*
 * test_threads.c - step() on the thread pool: tensors cut into 65,536-element
 * ranges and shared among threads give the same bits for any thread count,
 * sums (LAMB's norms) included; FTZ/DAZ is opt-in and per step.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

/* big enough to be cut and run in parallel, with odd tails */
static const int64_t sizes[] = {1000007, 1, 70001, 65536}; /* over 1M: parallel */
#define NT (sizeof sizes / sizeof sizes[0])

typedef struct world {
    jopt_ctx *ctx;
    jopt_optim *opt;
    jopt_param params[NT];
} world;

static void world_new(world *w, const char *spec, const char *options, int threads)
{
    assert_int_equal(jopt_ctx_new(&w->ctx), JOPT_OK);
    T_OK(w->ctx, jopt_ctx_set_threads(w->ctx, threads));
    for (size_t t = 0; t < NT; t++) {
        w->params[t].numel = sizes[t];
        w->params[t].param = t_alloc(sizes[t]);
        w->params[t].grad = t_alloc(sizes[t]);
        t_fill(w->params[t].param, sizes[t], 10 + t, 0.01);
    }
    jopt_group group = {w->params, NT, options};
    T_OK(w->ctx, jopt_optim_new(w->ctx, spec, &group, 1, NULL, &w->opt));
}

static void world_step(world *w, int s)
{
    for (size_t t = 0; t < NT; t++)
        t_fill(w->params[t].grad, sizes[t], 100 * (uint64_t)s + t, 0.05);
    T_OK(w->ctx, jopt_step(w->opt, NULL, NULL, NULL));
}

static void world_free(world *w)
{
    jopt_optim_free(w->opt);
    jopt_ctx_free(w->ctx);
    for (size_t t = 0; t < NT; t++) {
        free(w->params[t].param);
        free(w->params[t].grad);
    }
}

static void same_for_any_thread_count(const char *spec, const char *options)
{
    world one, many[3];
    world_new(&one, spec, options, 1);
    assert_int_equal(jopt_ctx_threads(one.ctx), 1);
    for (int k = 0; k < 3; k++) {
        world_new(&many[k], spec, options, k + 2);
        assert_int_equal(jopt_ctx_threads(many[k].ctx), k + 2);
    }
    for (int s = 0; s < 4; s++) {
        world_step(&one, s);
        for (int k = 0; k < 3; k++) {
            world_step(&many[k], s);
            for (size_t t = 0; t < NT; t++)
                assert_memory_equal(one.params[t].param, many[k].params[t].param,
                                    (size_t)sizes[t] * sizeof(float));
        }
    }
    world_free(&one);
    for (int k = 0; k < 3; k++)
        world_free(&many[k]);
}

static void test_threads_same_bits_adam(void **state)
{
    (void)state;
    same_for_any_thread_count("adam", "lr=0.01 amsgrad=true");
}

static void test_threads_same_bits_with_sums(void **state)
{
    (void)state;
    same_for_any_thread_count("lamb", "lr=0.01 weight_decay=0.01");
}

static void test_threads_same_bits_scalar_state(void **state)
{
    (void)state;
    same_for_any_thread_count("asgd", "t0=1 lambd=0.01");
}

static void test_threads_flush_denormals_opt_in(void **state)
{
    (void)state;
    /* p + (-lr)·g with a subnormal gradient: kept unless flushing */
    float p[4] = {0, 0, 0, 0}, g[4] = {1e-40f, -1e-40f, 1e-39f, 1.0f};
    jopt_param param = {p, g, 4};
    jopt_group group = {&param, 1, NULL};
    jopt_ctx *ctx;
    jopt_optim *opt;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    T_OK(ctx, jopt_optim_new(ctx, "sgd", &group, 1, "lr=1", &opt));
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    assert_true(p[0] == -1e-40f && p[2] == -1e-39f); /* no flush by default */
    T_OK(ctx, jopt_ctx_set_flush_denormals(ctx, 1));
    memset(p, 0, sizeof p);
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    assert_true(p[0] == 0 && p[1] == 0 && p[2] == 0 && p[3] == -1.0f);
    T_OK(ctx, jopt_ctx_set_flush_denormals(ctx, 0));
    memset(p, 0, sizeof p);
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    assert_true(p[0] == -1e-40f); /* and restored after the step */
    volatile float tiny = 1e-40f;
    assert_true(tiny * 1.0f != 0); /* the caller's thread is not left flushing */
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
}

static void test_threads_bad_count(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    assert_int_equal(jopt_ctx_new(&ctx), JOPT_OK);
    assert_int_equal(jopt_ctx_set_threads(ctx, -1), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "-1 threads"));
    assert_int_equal(jopt_ctx_set_threads(NULL, 2), JOPT_EINVAL);
    jopt_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_same_bits_adam),
        cmocka_unit_test(test_threads_same_bits_with_sums),
        cmocka_unit_test(test_threads_same_bits_scalar_state),
        cmocka_unit_test(test_threads_flush_denormals_opt_in),
        cmocka_unit_test(test_threads_bad_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
