/*
 * test_shapes.c - tensors with shapes: state per row and per column,
 * reductions over the last two axes and over a group, checked the way
 * every kernel is: the JIT against the reference interpreter, bit for bit,
 * and one thread against two; and the bad shapes refused.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

#define MAXT 8

typedef struct shaped {
    int ndim;
    int64_t shape[4];
} shaped;

static int64_t numel_of(const shaped *s)
{
    int64_t n = 1;
    for (int d = 0; d < s->ndim; d++)
        n *= s->shape[d];
    return n;
}

typedef struct run {
    jopt_ctx *ctx;
    jopt_optim *opt;
    jopt_param params[MAXT];
} run;

static void run_new(run *r, jopt_engine engine, int threads, const char *spec,
                    const char *options, const shaped *shapes, size_t nt)
{
    T_OK(NULL, jopt_ctx_new(&r->ctx));
    T_OK(r->ctx, jopt_ctx_set_engine(r->ctx, engine));
    T_OK(r->ctx, jopt_ctx_set_threads(r->ctx, threads));
    for (size_t t = 0; t < nt; t++) {
        int64_t n = numel_of(&shapes[t]);
        r->params[t] = (jopt_param){t_alloc(n), t_alloc(n), n};
        t_fill(r->params[t].param, n, 100 + t, 0.5);
    }
    jopt_group group = {r->params, nt, options};
    T_OK(r->ctx, jopt_optim_new(r->ctx, spec, &group, 1, NULL, &r->opt));
    for (size_t t = 0; t < nt; t++)
        if (shapes[t].ndim)
            T_OK(r->ctx, jopt_set_shape(r->opt, 0, t, shapes[t].ndim, shapes[t].shape));
}

static void run_free(run *r, size_t nt)
{
    jopt_optim_free(r->opt);
    jopt_ctx_free(r->ctx);
    for (size_t t = 0; t < nt; t++) {
        free(r->params[t].param);
        free(r->params[t].grad);
    }
}

/* bits equal, NaN equal to NaN */
static void same(const float *a, const float *b, int64_t n, const char *what,
                 const char *spec)
{
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof a[i]) && !(isnan(a[i]) && isnan(b[i])))
            fail_msg("%s: %s element %lld: %a against %a", spec, what,
                     (long long)i, a[i], b[i]);
}

/* `spec` on `shapes` with two configurations (engine, threads) a and b,
 * the same gradients, compared after every step */
static void compare(const char *spec, const char *options, const shaped *shapes,
                    size_t nt, jopt_engine ea, int ta, jopt_engine eb, int tb,
                    int steps)
{
    run a, b;
    run_new(&a, ea, ta, spec, options, shapes, nt);
    run_new(&b, eb, tb, spec, options, shapes, nt);
    jopt_spec *sp;
    T_OK(a.ctx, jopt_spec_open(a.ctx, spec, options, &sp));
    for (int s = 0; s < steps; s++) {
        for (size_t t = 0; t < nt; t++) {
            int64_t n = a.params[t].numel;
            t_fill(a.params[t].grad, n, 7000 + 31 * (uint64_t)s + t, 1.0);
            if (s == 2 && n > 3) /* zeros and an infinity or two */
                a.params[t].grad[n / 3] = 0, a.params[t].grad[n / 2] = INFINITY;
            memcpy(b.params[t].grad, a.params[t].grad, (size_t)n * sizeof(float));
        }
        T_OK(a.ctx, jopt_step(a.opt, NULL, NULL, NULL));
        T_OK(b.ctx, jopt_step(b.opt, NULL, NULL, NULL));
        for (size_t t = 0; t < nt; t++) {
            same(a.params[t].param, b.params[t].param, a.params[t].numel, "param", spec);
            for (size_t k = 0; k < jopt_spec_nstate(sp); k++) {
                jopt_state_info st;
                T_OK(a.ctx, jopt_spec_state(sp, k, &st));
                const float *da, *db;
                int64_t na, nb;
                T_OK(a.ctx, jopt_state_get(a.opt, 0, t, st.name, &da, NULL));
                T_OK(b.ctx, jopt_state_get(b.opt, 0, t, st.name, &db, NULL));
                T_OK(a.ctx, jopt_state_numel(a.opt, 0, t, st.name, &na));
                T_OK(b.ctx, jopt_state_numel(b.opt, 0, t, st.name, &nb));
                assert_int_equal(na, nb);
                if (da)
                    same(da, db, na, st.name, spec);
            }
        }
    }
    jopt_spec_free(sp);
    run_free(&a, nt);
    run_free(&b, nt);
}

static const shaped small[] = {
    {2, {7, 9}}, {1, {13}}, {3, {3, 5, 3}}, {1, {1}}, {2, {6, 1}}, {2, {1, 5}},
    {0, {0}},
};

static void test_shapes_adafactor_jit_equals_reference(void **state)
{
    (void)state;
    static const char *const options[] = {
        "", "weight_decay=0.1 maximize=true", "eps=1e-20,1e-3 d=1.5 lr=0.5"};
    for (size_t o = 0; o < 3; o++)
        compare("adafactor", options[o], small, 7, JOPT_ENGINE_JIT, 1,
                JOPT_ENGINE_REFERENCE, 1, 5);
    static const shaped big[] = {
        {2, {300, 257}}, {2, {3, 70000}}, {2, {70000, 3}}, {3, {4, 100, 33}},
        {1, {70001}},
    };
    compare("adafactor", "", big, 5, JOPT_ENGINE_JIT, 1, JOPT_ENGINE_REFERENCE, 1, 3);
    /* conv weights: many small matrices (column sums of several whole
     * matrices per task), rows shorter than the 16 lanes, and longer */
    static const shaped conv[] = {
        {4, {64, 32, 3, 3}}, {4, {300, 20, 1, 1}}, {4, {8, 4, 5, 17}}, {4, {2, 3, 7, 40}},
    };
    compare("adafactor", "", conv, 4, JOPT_ENGINE_JIT, 1, JOPT_ENGINE_REFERENCE, 1, 3);
}

/* Short rows get kernels of their own last two sizes (kernel.c,
 * short_axes): one per pair of sizes, shared by tensors that have it, and
 * the kernel of any size for the rest of the rank, whichever comes first;
 * each equal to the interpreter bit for bit. */
static void test_shapes_short_rows_kernels(void **state)
{
    (void)state;
    static const shaped conv[] = {
        {4, {8, 4, 5, 17}},  /* long rows first: the kernel for any size */
        {4, {64, 32, 3, 3}}, {4, {16, 8, 3, 3}}, /* one 3x3 kernel */
        {4, {300, 20, 1, 1}}, {4, {5, 40, 20, 3}},
        {2, {70000, 3}}, {2, {7, 9}}, {2, {300, 257}},
    };
    size_t nt = sizeof conv / sizeof conv[0];
    run r;
    run_new(&r, JOPT_ENGINE_JIT, 1, "adafactor", "", conv, nt);
    for (size_t t = 0; t < nt; t++)
        t_fill(r.params[t].grad, r.params[t].numel, 900 + t, 1.0);
    size_t before, after;
    jopt_ctx_stats(r.ctx, &before, NULL);
    T_OK(r.ctx, jopt_step(r.opt, NULL, NULL, NULL));
    jopt_ctx_stats(r.ctx, &after, NULL);
    /* built at the first step, where the shapes are known: for rank 4
     * any size, 3x3 (both tensors), 1x1, last size 3 (20 rows are not
     * short); for rank 2 last size 3 (70000 rows), 7x9, and any size */
    assert_int_equal(after - before, 7);
    run_free(&r, nt);
    compare("adafactor", "weight_decay=0.1", conv, nt, JOPT_ENGINE_JIT, 1,
            JOPT_ENGINE_REFERENCE, 1, 3);
}

/* the cut into tasks depends on the shapes, not the threads */
static void test_shapes_threads_same_bits(void **state)
{
    (void)state;
    static const shaped big[] = {
        {2, {1024, 1100}}, {2, {3, 400000}}, {2, {400000, 3}}, {1, {1200000}},
        {4, {512, 256, 3, 3}},
    };
    compare("adafactor", "", big, 5, JOPT_ENGINE_JIT, 1, JOPT_ENGINE_JIT, 2, 3);
}

/* Column sums and maxima of per-element values run in the element pass,
 * a tall matrix in blocks of rows whose partial sums are added in block
 * order (batch.c); column sums of row values in the column pass.  Tall
 * matrices of a stack (blocks restart at each matrix), wide ones (blocks
 * of at least 16 rows), short rows: the JIT equals the interpreter, and
 * one thread equals two and three. */
static const char colstats_spec[] =
    "return { hyper = { lr = 0.01 },\n"
    "  state = { cmax = function (h) return dim() > 1 and cols(0) end,\n"
    "            csum = function (h) return dim() > 1 and cols(0) end,\n"
    "            rsum = function (h) return dim() > 1 and rows(0) end },\n"
    "  update = function (p, g, s, h)\n"
    "    if dim() <= 1 then return p - h.lr * g end\n"
    "    s.rsum = sum(g, -1)\n"
    "    s.cmax = amax(abs(g), -2)\n"
    "    s.csum = sum(p * g, -2) + mean(s.rsum, -2)\n"
    "    return p - h.lr * g * s.cmax / (1 + abs(s.csum) + sum(g * g))\n"
    "  end }\n";

/* a spec file of `text` in a fresh temporary path */
static void temp_spec(char *path, const char *text)
{
    int fd = mkstemps(path, 4);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_shapes_column_sums_in_blocks(void **state)
{
    (void)state;
    char path[] = "/tmp/jopt_colstats_XXXXXX.lua";
    temp_spec(path, colstats_spec);
    static const shaped shapes[] = {
        {3, {3, 200, 700}}, {2, {40, 5000}}, {2, {300, 257}}, {4, {2, 3, 7, 40}},
        {4, {64, 32, 3, 3}}, {2, {1000, 3}}, {2, {30000, 3}}, {2, {6000, 15}},
    };
    compare(path, "", shapes, 8, JOPT_ENGINE_JIT, 1, JOPT_ENGINE_REFERENCE, 1, 3);
    /* over 1M elements in all, so that the pool runs the tasks */
    static const shaped big[] = {
        {3, {3, 600, 700}}, {2, {40, 5000}}, {2, {30000, 3}}, {2, {6000, 15}},
    };
    compare(path, "", big, 4, JOPT_ENGINE_JIT, 1, JOPT_ENGINE_JIT, 2, 3);
    compare(path, "", big, 4, JOPT_ENGINE_JIT, 3, JOPT_ENGINE_REFERENCE, 2, 2);
    remove(path);
}

/* The cut and the merge of the column partial sums, which both engines
 * share, against plain loops: with small whole-number gradients every
 * order gives the exact sum, so each row must be counted once, in its
 * own matrix's columns. */
static void test_shapes_column_sums_exact(void **state)
{
    (void)state;
    char path[] = "/tmp/jopt_colsum_XXXXXX.lua";
    temp_spec(path, "return { hyper = { lr = 0.0 },\n"
              "  state = { csum = function (h) return dim() > 1 and cols(0) end,\n"
              "            cmax = function (h) return dim() > 1 and cols(0) end },\n"
              "  update = function (p, g, s, h)\n"
              "    if dim() > 1 then s.csum = sum(g, -2); s.cmax = amax(g, -2) end\n"
              "    return p - h.lr * g\n  end }\n");
    static const shaped shapes[] = {
        {3, {3, 2000, 100}}, {4, {2, 2, 300, 300}}, {2, {40, 5000}}, {2, {30000, 3}},
    };
    for (int e = 0; e < 2; e++) {
        run r;
        run_new(&r, e ? JOPT_ENGINE_REFERENCE : JOPT_ENGINE_JIT, 2, path, "", shapes, 4);
        for (size_t t = 0; t < 4; t++) {
            float *g = r.params[t].grad;
            for (int64_t i = 0; i < r.params[t].numel; i++)
                g[i] = (float)((i * 7919 + (int64_t)t) % 13) - 6.0f;
        }
        T_OK(r.ctx, jopt_step(r.opt, NULL, NULL, NULL));
        for (size_t t = 0; t < 4; t++) {
            const shaped *sh = &shapes[t];
            int64_t cols = sh->shape[sh->ndim - 1], rows = sh->shape[sh->ndim - 2];
            int64_t nmat = r.params[t].numel / (rows * cols);
            const float *csum, *cmax, *g = r.params[t].grad;
            T_OK(r.ctx, jopt_state_get(r.opt, 0, t, "csum", &csum, NULL));
            T_OK(r.ctx, jopt_state_get(r.opt, 0, t, "cmax", &cmax, NULL));
            for (int64_t m = 0; m < nmat; m++)
                for (int64_t c = 0; c < cols; c++) {
                    double sum = 0, max = -INFINITY;
                    for (int64_t i = 0; i < rows; i++) {
                        double v = g[(m * rows + i) * cols + c];
                        sum += v;
                        max = v > max ? v : max;
                    }
                    if (csum[m * cols + c] != (float)sum || cmax[m * cols + c] != (float)max)
                        fail_msg("engine %d, tensor %zu, matrix %lld, column %lld: "
                                 "sum %g max %g, expected %g and %g", e, t, (long long)m,
                                 (long long)c, csum[m * cols + c], cmax[m * cols + c],
                                 sum, max);
                }
        }
        run_free(&r, 4);
    }
    remove(path);
}

static void test_shapes_bad_shape_refused(void **state)
{
    (void)state;
    jopt_ctx *ctx;
    T_OK(NULL, jopt_ctx_new(&ctx));
    float *p = t_alloc(12), *g = t_alloc(12);
    jopt_param param = {p, g, 12};
    jopt_group group = {&param, 1, NULL};
    jopt_optim *opt;
    T_OK(ctx, jopt_optim_new(ctx, "adafactor", &group, 1, NULL, &opt));
    int64_t bad[] = {5, 3}, neg[] = {-3, -4}, good[] = {3, 4};
    assert_int_equal(jopt_set_shape(opt, 0, 0, 2, bad), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "a shape of 15 elements for a parameter of 12"));
    assert_int_equal(jopt_set_shape(opt, 0, 0, 2, neg), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "negative"));
    assert_int_equal(jopt_set_shape(opt, 0, 0, 9, good), JOPT_EINVAL);
    assert_int_equal(jopt_set_shape(opt, 0, 1, 2, good), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "group 0 has no parameter 1"));
    T_OK(ctx, jopt_set_shape(opt, 0, 0, 2, good));
    t_fill(g, 12, 3, 1.0);
    T_OK(ctx, jopt_step(opt, NULL, NULL, NULL));
    int64_t n;
    T_OK(ctx, jopt_state_numel(opt, 0, 0, "row_var", &n));
    assert_int_equal(n, 3);
    T_OK(ctx, jopt_state_numel(opt, 0, 0, "col_var", &n));
    assert_int_equal(n, 4);
    T_OK(ctx, jopt_state_numel(opt, 0, 0, "variance", &n));
    assert_int_equal(n, 0);
    assert_int_equal(jopt_set_shape(opt, 0, 0, 1, (int64_t[]){12}), JOPT_EINVAL);
    assert_non_null(strstr(jopt_errmsg(ctx), "has stepped already"));
    jopt_optim_free(opt);
    jopt_ctx_free(ctx);
    free(p);
    free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes_adafactor_jit_equals_reference),
        cmocka_unit_test(test_shapes_threads_same_bits),
        cmocka_unit_test(test_shapes_column_sums_in_blocks),
        cmocka_unit_test(test_shapes_column_sums_exact),
        cmocka_unit_test(test_shapes_short_rows_kernels),
        cmocka_unit_test(test_shapes_bad_shape_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
