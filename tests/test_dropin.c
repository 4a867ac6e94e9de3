/*
 * test_dropin.c - the calls of jopt.h (runtime/dropin.c) that bindings use from another
 * framework's training loop: jopt_set_grads (every gradient in one call,
 * checked once, nothing changed on failure) and jopt_ctx_set_parallel
 * (step()'s tasks on another thread pool: every task run once, FTZ/DAZ
 * applied on the runner's threads, the same bits as jopt's own pool).
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

/* over 1M elements in all: step() shares them out */
static const int64_t sizes[] = {1000007, 3, 70001, 65536};
#define NT (sizeof sizes / sizeof sizes[0])

typedef struct world {
    jopt_ctx *ctx;
    jopt_optim *opt;
    jopt_param params[NT];
    float *grads2[NT]; /* a second set of gradient buffers */
} world;

static void world_new(world *w, const char *spec, const char *options)
{
    assert_int_equal(jopt_ctx_new(&w->ctx), JOPT_OK);
    jopt_param *ps = w->params;
    for (size_t t = 0; t < NT; t++) {
        ps[t].numel = sizes[t];
        ps[t].param = t_alloc(sizes[t]);
        ps[t].grad = t_alloc(sizes[t]);
        w->grads2[t] = t_alloc(sizes[t]);
        t_fill(ps[t].param, sizes[t], 10 + t, 0.01);
    }
    /* two groups: the first two tensors, then the other two */
    jopt_group groups[2] = {{ps, 2, options}, {ps + 2, NT - 2, NULL}};
    T_OK(w->ctx, jopt_optim_new(w->ctx, spec, groups, 2, NULL, &w->opt));
}

static void fill_grads(float *const *g, int s)
{
    for (size_t t = 0; t < NT; t++)
        if (g[t])
            t_fill(g[t], sizes[t], 100 * (uint64_t)s + t, 0.05);
}

static void world_free(world *w)
{
    jopt_optim_free(w->opt);
    jopt_ctx_free(w->ctx);
    for (size_t t = 0; t < NT; t++) {
        free(w->params[t].param);
        free(w->params[t].grad);
        free(w->grads2[t]);
    }
}

static void assert_same_params(const world *a, const world *b)
{
    for (size_t t = 0; t < NT; t++)
        assert_memory_equal(a->params[t].param, b->params[t].param,
                            (size_t)sizes[t] * sizeof(float));
}

/* set_grads over alternating buffer sets (one absent) against set_grad */
static void test_set_grads_as_set_grad(void **state)
{
    (void)state;
    world a, b;
    world_new(&a, "adam", "lr=0.01");
    world_new(&b, "adam", "lr=0.01");
    for (int s = 0; s < 6; s++) {
        float *ga[NT], *gb[NT];
        for (size_t t = 0; t < NT; t++) {
            ga[t] = s % 2 ? a.grads2[t] : a.params[t].grad;
            gb[t] = s % 2 ? b.grads2[t] : b.params[t].grad;
        }
        if (s == 3)
            ga[1] = gb[1] = NULL; /* no gradient this step */
        fill_grads(ga, s);
        fill_grads(gb, s);
        T_OK(a.ctx, jopt_set_grads(a.opt, ga, NT));
        for (size_t t = 0; t < NT; t++)
            T_OK(b.ctx, jopt_set_grad(b.opt, t < 2 ? 0 : 1, t < 2 ? t : t - 2, NULL));
        for (size_t t = 0; t < NT; t++)
            T_OK(b.ctx, jopt_set_grad(b.opt, t < 2 ? 0 : 1, t < 2 ? t : t - 2, gb[t]));
        T_OK(a.ctx, jopt_step(a.opt, NULL, NULL, NULL));
        T_OK(b.ctx, jopt_step(b.opt, NULL, NULL, NULL));
        assert_same_params(&a, &b);
    }
    int64_t step;
    const float *m;
    T_OK(a.ctx, jopt_state_get(a.opt, 0, 1, "exp_avg", &m, &step));
    assert_int_equal(step, 5); /* it had no gradient at step 3 */
    world_free(&a);
    world_free(&b);
}

/* refused with `msg`; then w steps as its twin `ref`, which was never
 * given other gradients: w still reads the gradients it had */
static void assert_refused(world *w, world *ref, float *const *g, size_t n,
                           const char *msg)
{
    static int s;
    assert_int_equal(jopt_set_grads(w->opt, g, n), JOPT_EINVAL);
    if (!strstr(jopt_errmsg(w->ctx), msg))
        fail_msg("expected \"%s\" in \"%s\"", msg, jopt_errmsg(w->ctx));
    float *gw[NT], *gr[NT];
    for (size_t t = 0; t < NT; t++) {
        gw[t] = w->params[t].grad;
        gr[t] = ref->params[t].grad;
    }
    fill_grads(gw, s);
    fill_grads(gr, s++);
    T_OK(w->ctx, jopt_step(w->opt, NULL, NULL, NULL));
    T_OK(ref->ctx, jopt_step(ref->opt, NULL, NULL, NULL));
    assert_same_params(w, ref);
}

static void test_set_grads_refusals(void **state)
{
    (void)state;
    world w, ref;
    world_new(&w, "adam", "lr=0.01");
    world_new(&ref, "adam", "lr=0.01");
    float *g[NT];
    for (size_t t = 0; t < NT; t++)
        g[t] = w.grads2[t];
    assert_refused(&w, &ref, g, NT - 1, "3 gradients for 4 parameters");
    assert_refused(&w, &ref, NULL, NT, "grads is NULL");
    g[2] = w.params[3].param; /* a parameter's buffer as a gradient */
    assert_refused(&w, &ref, g, NT, "buffers overlap");
    g[2] = w.grads2[3] + 1;   /* two gradients sharing memory */
    assert_refused(&w, &ref, g, NT, "buffers overlap");
    g[2] = (float *)((char *)w.grads2[2] + 2);
    assert_refused(&w, &ref, g, NT, "group 1 parameter 0: grad is not aligned");
    assert_int_equal(jopt_set_grads(NULL, g, NT), JOPT_EINVAL);
    world_free(&w);
    world_free(&ref);
}

/* ---- another pool: a runner that counts and splits as it likes ----------- */

typedef struct runner {
    int calls;             /* runs handed over */
    size_t tasks;          /* tasks they had */
} runner;

typedef struct thread_job {
    jopt_task_fn task;
    void *arg;
    size_t lo, hi;
} thread_job;

static void *thread_main(void *p)
{
    thread_job *j = p;
    j->task(j->arg, j->lo, j->hi);
    return NULL;
}

/* three uneven ranges, the first two on threads of its own */
static void run_three(void *user, size_t ntasks, jopt_task_fn task, void *arg)
{
    runner *r = user;
    r->calls++;
    r->tasks += ntasks;
    size_t cut[4] = {0, ntasks / 5, ntasks / 5 + (ntasks > 2), ntasks};
    pthread_t th[2];
    thread_job jobs[3];
    for (int k = 0; k < 3; k++)
        jobs[k] = (thread_job){task, arg, cut[k], cut[k + 1]};
    for (int k = 0; k < 2; k++)
        assert_int_equal(pthread_create(&th[k], NULL, thread_main, &jobs[k]), 0);
    thread_main(&jobs[2]);
    for (int k = 0; k < 2; k++)
        pthread_join(th[k], NULL);
}

static void same_bits_on_runner(const char *spec, const char *options)
{
    world own, ext;
    world_new(&own, spec, options);
    world_new(&ext, spec, options);
    T_OK(own.ctx, jopt_ctx_set_threads(own.ctx, 2));
    runner r = {0};
    T_OK(ext.ctx, jopt_ctx_set_parallel(ext.ctx, run_three, &r));
    assert_int_equal(jopt_ctx_threads(ext.ctx), 1); /* no threads of jopt's */
    for (int s = 0; s < 4; s++) {
        float *go[NT], *ge[NT];
        for (size_t t = 0; t < NT; t++) {
            go[t] = own.params[t].grad;
            ge[t] = ext.params[t].grad;
        }
        fill_grads(go, s);
        fill_grads(ge, s);
        T_OK(own.ctx, jopt_step(own.opt, NULL, NULL, NULL));
        T_OK(ext.ctx, jopt_step(ext.opt, NULL, NULL, NULL));
        assert_same_params(&own, &ext);
    }
    assert_true(r.calls >= 4);
    assert_true(r.tasks >= 4 * 19); /* 1000007 + 3 + 70001 + 65536 elements: 19 tasks */
    /* NULL: back to jopt's pool; set_threads: back to jopt's threads */
    int calls = r.calls;
    T_OK(ext.ctx, jopt_ctx_set_parallel(ext.ctx, NULL, NULL));
    T_OK(ext.ctx, jopt_step(ext.opt, NULL, NULL, NULL));
    assert_int_equal(r.calls, calls);
    T_OK(ext.ctx, jopt_ctx_set_parallel(ext.ctx, run_three, &r));
    T_OK(ext.ctx, jopt_ctx_set_threads(ext.ctx, 2));
    assert_int_equal(jopt_ctx_threads(ext.ctx), 2);
    T_OK(ext.ctx, jopt_step(ext.opt, NULL, NULL, NULL));
    assert_int_equal(r.calls, calls);
    world_free(&own);
    world_free(&ext);
}

static void test_runner_same_bits_adam(void **state)
{
    (void)state;
    same_bits_on_runner("adam", "lr=0.01 amsgrad=true");
}

static void test_runner_same_bits_lamb(void **state)
{
    (void)state;
    same_bits_on_runner("lamb", "lr=0.01"); /* sums: two passes */
}

/* FTZ/DAZ reaches the runner's threads: subnormal gradients read as zero
 * there too, as on jopt's own flushing pool, and not without flushing */
static void test_runner_flushes(void **state)
{
    (void)state;
    world own, ext, plain;
    world_new(&own, "sgd", "lr=0.5");
    world_new(&ext, "sgd", "lr=0.5");
    world_new(&plain, "sgd", "lr=0.5");
    T_OK(own.ctx, jopt_ctx_set_threads(own.ctx, 2));
    T_OK(own.ctx, jopt_ctx_set_flush_denormals(own.ctx, 1));
    runner r = {0};
    T_OK(ext.ctx, jopt_ctx_set_parallel(ext.ctx, run_three, &r));
    T_OK(ext.ctx, jopt_ctx_set_flush_denormals(ext.ctx, 1));
    T_OK(plain.ctx, jopt_ctx_set_parallel(plain.ctx, run_three, &r));
    world *ws[3] = {&own, &ext, &plain};
    for (int k = 0; k < 3; k++) {
        for (size_t t = 0; t < NT; t++) {
            float *g = ws[k]->params[t].grad;
            for (int64_t e = 0; e < sizes[t]; e++)
                g[e] = 1e-39f; /* subnormal */
        }
        T_OK(ws[k]->ctx, jopt_step(ws[k]->opt, NULL, NULL, NULL));
    }
    assert_same_params(&own, &ext);
    assert_true(memcmp(ext.params[0].param, plain.params[0].param,
                       (size_t)sizes[0] * sizeof(float)) != 0);
    assert_true(r.calls >= 2);
    for (int k = 0; k < 3; k++)
        world_free(ws[k]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_grads_as_set_grad),
        cmocka_unit_test(test_set_grads_refusals),
        cmocka_unit_test(test_runner_same_bits_adam),
        cmocka_unit_test(test_runner_same_bits_lamb),
        cmocka_unit_test(test_runner_flushes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
